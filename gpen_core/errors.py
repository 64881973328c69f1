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


class MissingDependencyError(GPENError, ImportError):
    """An optional package a feature needs is not installed; the message says what to install."""


class ExportError(GPENError, RuntimeError):
    """A model could not be exported (target exists, exporter failed, or the result did not match)."""


class TaskError(GPENError, ValueError):
    """A GPEN task that the model file cannot do (e.g. colorization asked of a restoration model)."""


class OptionError(GPENError, ValueError):
    """An option has a value of the wrong type or outside its range."""


class VideoError(GPENError, ValueError):
    """A video file cannot be read or written (damaged, no video stream, unsupported format)."""
