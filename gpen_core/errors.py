"""Exceptions raised by gpen_core; every message names the problem and the fix."""


class GPENError(Exception):
    """Base class of every error gpen_core raises on purpose."""


class CheckpointError(GPENError, ValueError):
    """A file could not be used as a GPEN checkpoint (corrupt, unsafe, wrong model, wrong shapes)."""


class ModelNotFoundError(GPENError, FileNotFoundError):
    """No checkpoint file where one was expected."""


class FaceDetectorError(GPENError, RuntimeError):
    """A face detector could not be set up (missing weights or package)."""


class ImageError(GPENError, ValueError):
    """An input image has a layout or dtype gpen_core cannot handle."""


class DeviceError(GPENError, ValueError):
    """A torch device that this machine or torch build does not have (CUDA, a CUDA index, MPS)."""
