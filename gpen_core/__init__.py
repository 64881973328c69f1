"""GPEN blind face restoration: network, checkpoint loading, face pipeline. Imports no host code."""

from .aligned import process_aligned
from .checkpoint import inspect_checkpoint, load_model
from .errors import (CheckpointError, ExportError, FaceDetectorError, GPENError, ImageError, MissingDependencyError,
                     ModelNotFoundError, OptionError, TaskError, VideoError)
from .faces import Face
from .model import GPENModel
from .network import GPENConfig
from .pipeline import RestoredFace, RestoreResult, release_face_models, restore_faces
from .video import FrameResult, VideoRestorer, VideoResult, restore_frames, restore_video

__all__ = [
    "CheckpointError", "ExportError", "FaceDetectorError", "GPENConfig", "GPENError", "GPENModel", "ImageError",
    "MissingDependencyError", "ModelNotFoundError", "OptionError", "TaskError", "VideoError", "Face", "FrameResult",
    "RestoredFace", "RestoreResult", "VideoRestorer", "VideoResult", "inspect_checkpoint", "load_model",
    "process_aligned", "release_face_models", "restore_faces", "restore_frames", "restore_video",
]
