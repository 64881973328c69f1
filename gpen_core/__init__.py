"""GPEN blind face restoration: network, checkpoint loading, face pipeline. Imports no host code."""

from .checkpoint import inspect_checkpoint, load_model
from .errors import CheckpointError, FaceDetectorError, GPENError, ImageError, ModelNotFoundError
from .faces import Face
from .model import GPENModel
from .network import GPENConfig
from .pipeline import RestoredFace, RestoreResult, release_face_models, restore_faces

__all__ = [
    "CheckpointError", "FaceDetectorError", "GPENConfig", "GPENError", "GPENModel", "ImageError",
    "ModelNotFoundError", "Face", "RestoredFace", "RestoreResult", "inspect_checkpoint", "load_model",
    "release_face_models", "restore_faces",
]
