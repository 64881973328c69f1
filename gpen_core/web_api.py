"""The JSON restore API a host server exposes (the WebUI's ``POST /gpen/v1/restore``), without a web framework.

Request (a JSON object):
  image: str, required: a base64 image file (PNG, JPEG, WebP, ...), optionally as a ``data:image/...;base64,``
         URL. Colour images are restored as RGB (RGBA keeps its alpha); other modes are converted to RGB.
  model: str, optional: a file name under the model folder, or "auto" (the largest usable one).
  strength: number in [0, 1], optional: 1 = restored face only, 0 = original.
  detector: one of ``options.DETECTORS``, optional. color_correction: bool, optional.
Missing optional fields take the host's defaults (its settings).
Response: {"image": base64 PNG, "faces": faces restored, "found": faces detected, "model": file name or null,
  "strength", "info": one line (as in the infotext), "skipped": ["file: reason", ...], "warnings": [...]}.
Bad requests raise :class:`RequestError` (a host answers HTTP 422 with its message); a request that is valid
but cannot be served (no usable model, a failing restore) raises :class:`ServiceError` (HTTP 503).
"""

from __future__ import annotations

import base64
import binascii
import io
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import GPENError, OptionError
from .imageio import DEFAULT_MAX_PIXELS
from .options import DETECTORS, check_strength
from .restorer import AUTO, Outcome

FIELDS = ("image", "model", "strength", "detector", "color_correction")


class RequestError(OptionError):
    """A request field is missing, of the wrong type or out of range (HTTP 422)."""


class ServiceError(GPENError, RuntimeError):
    """A valid request that could not be served: no usable model, or the restore failed (HTTP 503)."""


@dataclass
class RestoreRequest:
    """A validated request: image (H, W, 3|4) uint8 RGB(A), and the options to restore it with."""
    image: np.ndarray
    model: str
    strength: float
    detector: str
    color_correction: bool


def decode_image(text: object, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """A base64 image file (or ``data:`` URL) as (H, W, 3) RGB or (H, W, 4) RGBA uint8. Raises RequestError."""
    if not isinstance(text, str) or not text.strip():
        raise RequestError("image must be a base64-encoded image file (PNG, JPEG, WebP...), got "
                           + ("an empty string" if isinstance(text, str) else type(text).__name__))
    if text.startswith("data:"):
        text = text.partition(",")[2]
    try:
        data = base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("image is not valid base64: send the file's bytes base64-encoded "
                           "(e.g. `base64 -w0 photo.png`)") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > max_pixels:
                    raise RequestError(f"image is {im.width}x{im.height}, above the limit of "
                                       f"{max_pixels / 1e6:.0f} megapixels; send a smaller image")
                im.load()
                keep_alpha = im.mode in ("RGBA", "LA", "PA") or "transparency" in im.info
                return np.asarray(im.convert("RGBA" if keep_alpha else "RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombWarning,
            Image.DecompressionBombError) as exc:
        if isinstance(exc, RequestError):
            raise
        raise RequestError(f"image decodes to {len(data)} bytes that are not a readable image "
                           f"({type(exc).__name__}); send a PNG, JPEG or WebP file") from None


def encode_png(image: np.ndarray) -> str:
    """(H, W, 3|4) uint8 RGB(A) as a base64 PNG file."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def parse_request(payload: object, defaults: Mapping[str, Any], models: list[str]) -> RestoreRequest:
    """Validate a request body. defaults: the host's model, strength, detector and color_correction.
    models: the names ``model`` may take besides ``AUTO``. Raises RequestError naming the field and the fix."""
    if not isinstance(payload, Mapping):
        raise RequestError(f"the request body must be a JSON object with the fields {', '.join(FIELDS)}")
    unknown = sorted(set(payload) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown field(s) {', '.join(unknown)}; the fields are {', '.join(FIELDS)}")
    options = {**defaults, **{k: v for k, v in payload.items() if v is not None}}
    model = options.get("model", AUTO)
    if model != AUTO and model not in models:
        raise RequestError(f"model {model!r} is not in the model folder; use \"{AUTO}\" or one of: "
                           + (", ".join(models) or "(none: the folder is empty)"))
    try:
        strength = check_strength(options.get("strength", 1.0))
    except OptionError as exc:
        raise RequestError(str(exc)) from None
    detector = options.get("detector", "auto")
    if detector not in DETECTORS:
        raise RequestError(f"detector must be one of {', '.join(DETECTORS)}, got {detector!r}")
    color_correction = options.get("color_correction", False)
    if not isinstance(color_correction, bool):
        raise RequestError(f"color_correction must be true or false, got {color_correction!r}")
    return RestoreRequest(decode_image(payload.get("image")), model, strength, detector, color_correction)


def handle_restore(payload: object, defaults: Mapping[str, Any], models: list[str],
                   restore: Callable[[RestoreRequest], Outcome]) -> dict[str, Any]:
    """Validate ``payload``, run ``restore`` (a host's call of ``FolderRestorer.restore``) and build the
    response. Raises RequestError for a bad request, ServiceError when nothing could be restored."""
    request = parse_request(payload, defaults, models)
    outcome = restore(request)
    if outcome.error is not None:
        raise ServiceError(outcome.error)
    return {"image": encode_png(outcome.image), "faces": outcome.faces, "found": outcome.found,
            "model": outcome.model.name if outcome.model else None, "strength": outcome.strength,
            "info": outcome.info, "skipped": outcome.skipped, "warnings": outcome.warnings,
            "interrupted": outcome.interrupted}
