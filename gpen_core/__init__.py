"""GPEN blind face restoration: network, checkpoint loading, face pipeline. Imports no host code."""

from .checkpoint import inspect_checkpoint, load_model
from .errors import CheckpointError, FaceDetectorError, GPENError, ImageError, ModelNotFoundError
from .model import GPENModel
from .network import GPENConfig

__all__ = [
    "CheckpointError", "FaceDetectorError", "GPENConfig", "GPENError", "GPENModel", "ImageError",
    "ModelNotFoundError", "inspect_checkpoint", "load_model",
]
