"""The choices every front end offers (command line, ComfyUI, WebUI), defined once. Imports nothing heavy."""

from __future__ import annotations

import math

from .errors import OptionError

#: Face detectors: RetinaFace when its weights are found, else the built-in MTCNN; or either one.
DETECTORS = ("auto", "retinaface", "mtcnn")
#: Which faces to restore: all, only the largest, only the one nearest the image centre.
SELECT_MODES = ("all", "largest", "center")
#: Paste masks: face parsing when its weights are found, else GPEN's soft rectangle; or either one.
MASK_KINDS = ("auto", "parsing", "rectangle")
#: Network precisions; "auto" is float32.
DTYPE_CHOICES = ("auto", "fp32", "fp16", "bf16")
#: GPEN tasks on aligned crops; "auto" takes the task from the model's official file name (else restore).
TASK_CHOICES = ("auto", "restore", "colorize", "inpaint", "seg2face")


def check_strength(value: object, *, clamp: bool = False) -> float:
    """GPEN strength (the pipeline's ``alpha``) as a float in [0, 1]: 1 = restored face only, 0 = original.

    A number outside [0, 1] is clipped to it when ``clamp`` (a stored setting that must not stop every
    restore), else refused. Non-numbers, booleans, NaN and infinity are always refused. Raises OptionError.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise OptionError(f"strength must be a number from 0 to 1, got {value!r}")
    try:
        number = float(value)
    except ValueError:
        raise OptionError(f"strength must be a number from 0 to 1, got {value!r}") from None
    if not math.isfinite(number):
        raise OptionError(f"strength must be a number from 0 to 1, got {value!r}")
    if clamp:
        return min(1.0, max(0.0, number))
    if not 0.0 <= number <= 1.0:
        raise OptionError(f"strength must be from 0 to 1 (1 = restored face only, 0 = original), got {number:g}")
    return number
