"""Reading and writing image files for the command line.

Arrays are HWC numpy, colour order RGB (never BGR), in one of these layouts:
uint8 or uint16, (H,W) grey, (H,W,3) RGB or (H,W,4) RGBA -- the layouts `restore_faces` accepts.
Files are read upright: the EXIF orientation tag is applied, so pixel coordinates are those of the image
as a viewer shows it. Writing never replaces a file the caller marks as protected (the inputs of a run).
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
import warnings
from collections.abc import Iterable, Iterator
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import ImageError

# Refuse images above this many pixels unless the caller raises the limit: a small compressed file can
# decode to gigabytes (decompression bomb). 150 MP is a 12000x12500 image, about 450 MB as RGB uint8.
DEFAULT_MAX_PIXELS = 150_000_000

# Extensions looked for when a folder is given; any readable file can still be named explicitly.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")

_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
_HOLDS_16BIT = {".png", ".tif", ".tiff"}
_HOLDS_ALPHA = {".png", ".webp", ".tif", ".tiff"}
_EXIF_ORIENTATION = 0x0112
_PIL_LIMIT_LOCK = threading.Lock()
_LIMIT_HINT = ("if you trust the file, raise the limit with --max-pixels N (0 = no limit) "
               "or read_image(..., max_pixels=None)")


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file upright (EXIF orientation applied).

    Returns uint8 or uint16 (16-bit PNG/TIFF stay 16-bit): (H,W) for grey, (H,W,3) RGB, (H,W,4) RGBA.
    Palette images become RGB or RGBA, grey+alpha becomes RGBA, CMYK/YCbCr become RGB.
    `max_pixels`: refuse larger images (None: no limit). Raises ImageError for missing, unreadable,
    oversized or unsupported files.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageError(f"{path}: no such file")
    try:
        with _pil_pixel_limit(max_pixels), Image.open(path) as im:
            _check_pixels(path, im.size, max_pixels)
            deep_colour = _is_16bit_colour(im)  # before getexif(), which may decode a PNG
            orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            array = _read_with_opencv(path) if deep_colour else _pil_to_array(path, im)
    except UnidentifiedImageError:
        array = _read_with_opencv(path)
        _check_pixels(path, (array.shape[1], array.shape[0]), max_pixels)
        orientation = 1
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {exc}; {_LIMIT_HINT}") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    return np.ascontiguousarray(apply_orientation(array, orientation))


def apply_orientation(image: np.ndarray, orientation: int) -> np.ndarray:
    """Turn an image stored with EXIF orientation 1..8 upright (HWC or HW array, any dtype; 1 = as stored)."""
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].swapaxes(0, 1),
        8: lambda a: np.rot90(a, 1),
    }
    transform = transforms.get(orientation)
    return image if transform is None else transform(image)


def write_image(path: str | os.PathLike, image: np.ndarray, *, quality: int = 95,
                protect: Iterable[str | os.PathLike] = ()) -> Path:
    """Write `image` (layouts of `read_image`) in the format its extension names; return the path.

    PNG and TIFF keep 16-bit data; JPEG, WebP and BMP get it rounded to 8 bits. JPEG drops alpha.
    `quality` (1..100) applies to JPEG and WebP. The file is written to a temporary name and renamed,
    so a failed write leaves no half file. Raises ImageError if `path` is one of `protect` (an input).
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _PIL_FORMATS:
        raise ImageError(f"{path}: cannot write '{ext or 'no extension'}' files; "
                         f"use one of {', '.join(sorted(_PIL_FORMATS))}")
    if any(_same_file(path, Path(p)) for p in protect):
        raise ImageError(f"{path}: refusing to overwrite an input file")
    _check_layout(image)
    if image.ndim == 3 and image.shape[2] == 4 and ext not in _HOLDS_ALPHA:
        image = image[..., :3]
    if image.dtype == np.uint16 and ext not in _HOLDS_16BIT:
        image = ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)
    data = _encode_16bit(image, ext) if image.dtype == np.uint16 else _encode_8bit(image, ext, quality)
    _write_atomic(path, data)
    return path


def output_path(source: Path, outdir: Path, *, ext: str | None = None, suffix: str = "",
                taken: Iterable[Path] = ()) -> Path:
    """Where the result for `source` goes: `outdir/<stem><suffix><ext>`.

    `ext` defaults to the source's own, or .png when that format cannot be written (e.g. GIF).
    A name in `taken` (the run's inputs and outputs so far) gets `_1`, `_2`, ... appended, so an
    output never lands on an input or on another output of the same run.
    """
    if ext is None:
        ext = source.suffix if source.suffix.lower() in _PIL_FORMATS else ".png"
    elif not ext.startswith("."):
        ext = "." + ext
    taken_keys = {_path_key(p) for p in taken}
    candidate = outdir / f"{source.stem}{suffix}{ext.lower()}"
    n = 0
    while _path_key(candidate) in taken_keys:
        n += 1
        candidate = outdir / f"{source.stem}{suffix}_{n}{ext.lower()}"
    return candidate


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None) -> None:
    width, height = size
    if max_pixels is not None and width * height > max_pixels:
        raise ImageError(
            f"{path}: {width}x{height} is {width * height / 1e6:.0f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.0f} MP that guards against decompression bombs; {_LIMIT_HINT}")


@contextlib.contextmanager
def _pil_pixel_limit(max_pixels: int | None) -> Iterator[None]:
    """Let our own limit, not Pillow's global one, decide which images are too large."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        pil_limit = Image.MAX_IMAGE_PIXELS
        if max_pixels is not None and (pil_limit is None or max_pixels <= 2 * pil_limit):
            yield
            return
        with _PIL_LIMIT_LOCK:
            Image.MAX_IMAGE_PIXELS = None
            try:
                yield
            finally:
                Image.MAX_IMAGE_PIXELS = pil_limit


def _is_16bit_colour(im: Image.Image) -> bool:
    """Pillow silently reduces 16-bit RGB(A) to 8 bits; detect it from the decoder's raw mode."""
    if im.mode not in ("RGB", "RGBA") or not im.tile:
        return False
    args = im.tile[0][3]
    rawmode = args[0] if isinstance(args, tuple) and args else args
    return isinstance(rawmode, str) and ";16" in rawmode


def _pil_to_array(path: Path, im: Image.Image) -> np.ndarray:
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        return np.asarray(im.convert("I;16") if im.mode != "I;16" else im, dtype=np.uint16)
    if im.mode == "I":
        array = np.asarray(im)
        if array.min() < 0 or array.max() > 65535:
            raise ImageError(f"{path}: 32-bit integer images are not supported")
        return array.astype(np.uint16)
    if im.mode == "F":
        raise ImageError(f"{path}: floating-point images are not supported; convert to 8 or 16 bits")
    if im.mode in ("L", "RGB", "RGBA"):
        return np.asarray(im)
    if im.mode == "1":
        return np.asarray(im.convert("L"))
    if im.mode in ("LA", "La", "PA", "RGBa") or (im.mode == "P" and "transparency" in im.info):
        return np.asarray(im.convert("RGBA"))
    return np.asarray(im.convert("RGB"))


def _read_with_opencv(path: Path) -> np.ndarray:
    """Decode with OpenCV (16-bit colour, formats Pillow lacks); BGR(A) is turned into RGB(A)."""
    array = cv2.imdecode(np.fromfile(path, dtype=np.uint8), cv2.IMREAD_UNCHANGED)
    if array is None:
        raise ImageError(f"{path}: not an image file, or a damaged one")
    if array.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"{path}: {array.dtype} pixels are not supported; convert to 8 or 16 bits")
    if array.ndim == 3 and array.shape[2] == 3:
        return cv2.cvtColor(array, cv2.COLOR_BGR2RGB)
    if array.ndim == 3 and array.shape[2] == 4:
        return cv2.cvtColor(array, cv2.COLOR_BGRA2RGBA)
    return array


def _check_layout(image: np.ndarray) -> None:
    ok_shape = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if not ok_shape or image.dtype not in (np.uint8, np.uint16):
        raise ImageError(f"cannot write an array of shape {image.shape} and dtype {image.dtype}; "
                         "expected uint8/uint16 (H,W), (H,W,3) RGB or (H,W,4) RGBA")


def _encode_8bit(image: np.ndarray, ext: str, quality: int) -> bytes:
    im = Image.fromarray(image[..., 0] if image.ndim == 3 and image.shape[2] == 1 else image)
    options = {"quality": quality, "subsampling": 0} if ext in (".jpg", ".jpeg") else {}
    if ext == ".webp":
        options = {"quality": quality}
    buffer = BytesIO()
    im.save(buffer, format=_PIL_FORMATS[ext], **options)
    return buffer.getvalue()


def _encode_16bit(image: np.ndarray, ext: str) -> bytes:
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        raise ImageError(f"OpenCV could not encode a 16-bit {ext} image")
    return encoded.tobytes()


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def _path_key(path: Path) -> str:
    return os.path.normcase(str(Path(path).resolve()))
