"""Reading and writing image files for the command line.

Arrays are HWC numpy, colour order RGB (never BGR), in one of these layouts:
uint8 or uint16, (H,W) grey, (H,W,3) RGB or (H,W,4) RGBA -- the layouts `restore_faces` accepts.
Files are read upright: the EXIF orientation tag is applied, so pixel coordinates are those of the image
as a viewer shows it. Writing never replaces a file the caller marks as protected (the inputs of a run).

Metadata travels with the pixels (`ImageMeta`): the ICC profile and EXIF (orientation reset to 1, since the
pixels are stored upright) are written back to JPEG, PNG, WebP and TIFF; a lossless WebP stays lossless;
the frames of an animated GIF/PNG/WebP and the pages of a TIFF are all read and written back with their
timing. Every file written carries a "written by gpen_core" marker (PNG text chunk, JPEG/GIF comment, WebP
XMP, TIFF Software tag; BMP has no place for one) that `written_by_gpen_core` recognises.
"""

from __future__ import annotations

import contextlib
import os
import struct
import threading
import warnings
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from .errors import ImageError
from .files import unreadable_reason, write_atomic

# Refuse images above this many pixels unless the caller raises the limit: a small compressed file can
# decode to gigabytes (decompression bomb). 150 MP is a 12000x12500 image, about 450 MB as RGB uint8.
# For animations and multi-page files the limit applies to all frames together.
DEFAULT_MAX_PIXELS = 150_000_000

# Extensions looked for when a folder is given; any readable file can still be named explicitly.
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".gif")

_PIL_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP",
                ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF"}
#: Formats whose extra frames are animation frames or pages (a JPEG's extra MPO frame is a preview: ignored).
_MULTI_FRAME_FORMATS = {"GIF", "PNG", "WEBP", "TIFF"}
_HOLDS_FRAMES = {".png", ".webp", ".tif", ".tiff", ".gif"}
_HOLDS_16BIT = {".png", ".tif", ".tiff"}
_HOLDS_ALPHA = {".png", ".webp", ".tif", ".tiff", ".gif"}
_HOLDS_ICC_EXIF = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff"}
_EXIF_ORIENTATION = 0x0112
_EXIF_SOFTWARE = 0x0131
#: TIFF tags about the stored pixels (size, samples, compression, strips/tiles, ICC, palette, sub-IFDs):
#: the writer sets them for the new pixels, so they are not copied from the input's EXIF.
_TIFF_LAYOUT_TAGS = {254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 320,
                     322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 530, 531, 532, 34675}
MARKER = "gpen_core"
_XMP_MARKER = (f'<?xpacket begin="" id="W5M0MpCehiHzreSzNTczkc9d"?><x:xmpmeta xmlns:x="adobe:ns:meta/">'
               f'<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
               f'xmlns:xmp="http://ns.adobe.com/xap/1.0/" xmp:CreatorTool="{MARKER}"/></rdf:RDF></x:xmpmeta>'
               f'<?xpacket end="r"?>').encode()
_PIL_LIMIT_LOCK = threading.Lock()
_LIMIT_HINT = ("if you trust the file, raise the limit with --max-pixels N (0 = no limit) "
               "or read_image(..., max_pixels=None)")


@dataclass
class ImageMeta:
    """What a file holds besides the pixels, to be written back with the result.

    icc_profile: the colour profile (bytes), None if none. exif: EXIF block (bytes, orientation already
    reset to 1), None if none. lossless: the file was a lossless WebP. durations: milliseconds per frame
    of an animation (None for stills and TIFF pages). loop: animation loop count (0 = forever).
    """
    icc_profile: bytes | None = None
    exif: bytes | None = None
    lossless: bool = False
    durations: list[int] | None = None
    loop: int | None = None


@dataclass
class ImageFile:
    """An image file's frames (each in a `read_image` layout, upright; one for a still image) and metadata."""
    frames: list[np.ndarray]
    meta: ImageMeta = field(default_factory=ImageMeta)


def read_image(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Read an image file upright (EXIF orientation applied); for animations the first frame.

    Returns uint8 or uint16 (16-bit PNG/TIFF stay 16-bit): (H,W) for grey, (H,W,3) RGB, (H,W,4) RGBA.
    Palette images become RGB or RGBA, grey+alpha becomes RGBA, CMYK/YCbCr become RGB.
    `max_pixels`: refuse larger images (None: no limit). Raises ImageError for missing, empty, unreadable,
    oversized or unsupported files.
    """
    return read_image_file(path, max_pixels=max_pixels, all_frames=False).frames[0]


def read_image_file(path: str | os.PathLike, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                    all_frames: bool = True) -> ImageFile:
    """Read every frame (GIF/PNG/WebP animations, TIFF pages) or only the first, plus the metadata.

    Frames: layouts of `read_image`, upright. `max_pixels` bounds all frames read together.
    Raises ImageError for missing, empty, unreadable, oversized or unsupported files.
    """
    path = Path(path)
    reason = unreadable_reason(path)
    if reason is not None:
        raise ImageError(f"{path}: no such file" if reason == "does not exist" else f"{path} {reason}")
    if path.stat().st_size == 0:
        raise ImageError(f"{path} is empty (0 bytes); it holds no image (an interrupted copy or download?)")
    try:
        with _pil_pixel_limit(max_pixels), Image.open(path) as im:
            n_frames = getattr(im, "n_frames", 1) if all_frames and im.format in _MULTI_FRAME_FORMATS else 1
            _check_pixels(path, im.size, max_pixels, n_frames)
            deep_colour = _is_16bit_colour(im)  # before getexif(), which may decode a PNG
            exif = im.getexif()
            stored_orientation = exif.get(_EXIF_ORIENTATION)
            orientation = stored_orientation or 1
            if deep_colour:
                frames, durations = [_read_with_opencv(path)], None
            else:
                frames, durations = _pil_frames(path, im, n_frames)
            if im.format == "TIFF" and _EXIF_ORIENTATION not in getattr(im, "tag_v2", {}):
                orientation = 1  # Pillow >= 11.3 turns TIFFs upright itself while loading
            # After decoding: _metadata edits the EXIF, which for a TIFF is its own tag table.
            meta = _metadata(path, im, exif, stored_orientation is not None)
            if n_frames > 1 and im.format != "TIFF":
                meta.durations, meta.loop = durations, int(im.info.get("loop", 0))
    except UnidentifiedImageError:
        frames = [_read_with_opencv(path)]
        _check_pixels(path, (frames[0].shape[1], frames[0].shape[0]), max_pixels)
        orientation, meta = 1, ImageMeta()
    except Image.DecompressionBombError as exc:
        raise ImageError(f"{path}: {exc}; {_LIMIT_HINT}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(f"{path}: cannot read image ({exc})") from exc
    return ImageFile([np.ascontiguousarray(apply_orientation(f, orientation)) for f in frames], meta)


def written_by_gpen_core(path: str | os.PathLike) -> bool:
    """True when `path` carries the marker `write_image` puts in every file (reads the header only)."""
    try:
        with Image.open(path) as im:
            if im.format == "PNG":
                return im.info.get("Software") == MARKER
            if im.format in ("JPEG", "GIF"):
                return im.info.get("comment") in (MARKER.encode(), MARKER)
            if im.format == "WEBP":
                return _XMP_MARKER in (im.info.get("xmp") or b"")
            if im.format == "TIFF":
                return im.tag_v2.get(_EXIF_SOFTWARE) == MARKER
    except (OSError, SyntaxError, ValueError, EOFError, Image.DecompressionBombError):
        return False
    return False


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


def write_image(path: str | os.PathLike, image: np.ndarray | Sequence[np.ndarray], *, quality: int = 95,
                protect: Iterable[str | os.PathLike] = (), meta: ImageMeta | None = None) -> Path:
    """Write `image` (a `read_image` layout, or a list of frames) in the format its extension names.

    PNG and TIFF keep 16-bit data; JPEG, WebP, GIF and BMP get it rounded to 8 bits. JPEG and BMP drop
    alpha. `quality` (1..100) applies to JPEG and lossy WebP. `meta`: ICC profile and EXIF written to
    JPEG/PNG/WebP/TIFF, lossless WebP kept lossless, frame timing of animations. Several frames need a
    format that holds them (PNG, WebP, TIFF, GIF). Written through a temp file and a rename (a failed write
    leaves no half file) with the mode a plain write gives. Raises ImageError if `path` is one of
    `protect` (an input) or the format cannot hold the image; OutputError if it cannot be written.
    """
    path = Path(path)
    ext = path.suffix.lower()
    meta = meta or ImageMeta()
    frames = [image] if isinstance(image, np.ndarray) else list(image)
    check_format(path, len(frames))
    if any(_same_file(path, Path(p)) for p in protect):
        raise ImageError(f"{path}: refusing to overwrite an input file")
    frames = [_fit_format(frame, ext) for frame in frames]
    if len(frames) == 1 and frames[0].dtype == np.uint16:
        data = _encode_16bit(frames[0], ext, meta)
    else:
        data = _encode_8bit([_to_8bit(f) for f in frames], ext, quality, meta)
    return write_atomic(path, data)


def check_format(path: str | os.PathLike, n_frames: int = 1) -> None:
    """Raise ImageError unless `path`'s extension names a format that can hold `n_frames` (>= 1) frames."""
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in _PIL_FORMATS:
        raise ImageError(f"{path}: cannot write '{ext or 'no extension'}' files; "
                         f"use one of {', '.join(sorted(_PIL_FORMATS))}")
    if n_frames < 1:
        raise ImageError(f"{path}: no frames to write")
    if n_frames > 1 and ext not in _HOLDS_FRAMES:
        raise ImageError(f"{path}: the image has {n_frames} frames and {ext} holds one; "
                         f"write it as .png, .webp, .tif or .gif (--ext)")


def output_path(source: Path, outdir: Path, *, ext: str | None = None, suffix: str = "") -> Path:
    """Where the result for `source` goes before any clash is resolved: `outdir/<stem><suffix><ext>`.

    `ext` defaults to the source's own; a GIF becomes .png (lossless, keeps every frame as an animated PNG),
    and so does a format that cannot be written.
    """
    if ext is None:
        own = source.suffix.lower()
        ext = own if own in _PIL_FORMATS and own != ".gif" else ".png"
    elif not ext.startswith("."):
        ext = "." + ext
    return outdir / f"{source.stem}{suffix}{ext.lower()}"


def _check_pixels(path: Path, size: tuple[int, int], max_pixels: int | None, n_frames: int = 1) -> None:
    width, height = size
    total = width * height * n_frames
    if max_pixels is not None and total > max_pixels:
        frames = f" x {n_frames} frames" if n_frames > 1 else ""
        raise ImageError(
            f"{path}: {width}x{height}{frames} is {total / 1e6:.0f} megapixels, above the limit of "
            f"{max_pixels / 1e6:.0f} MP that guards against decompression bombs; {_LIMIT_HINT}")


def _metadata(path: Path, im: Image.Image, exif: Image.Exif, had_orientation: bool) -> ImageMeta:
    """ICC profile, EXIF with orientation 1 when it had one (the pixels are turned upright), lossless-WebP flag."""
    exif_bytes = None
    for tag in _TIFF_LAYOUT_TAGS & set(exif):  # a TIFF's own layout tags describe the old pixel data
        del exif[tag]
    if len(exif):
        if had_orientation:
            exif[_EXIF_ORIENTATION] = 1
        try:
            exif_bytes = exif.tobytes()
        except (ValueError, TypeError, struct.error):  # damaged EXIF: the pixels still matter more
            exif_bytes = None
    return ImageMeta(icc_profile=im.info.get("icc_profile") or None, exif=exif_bytes,
                     lossless=im.format == "WEBP" and _is_lossless_webp(path))


def _is_lossless_webp(path: Path) -> bool:
    """True when every image chunk of a WebP file (also inside animation frames) is VP8L (lossless)."""
    data = path.read_bytes()
    kinds: set[bytes] = set()

    def walk(start: int, end: int) -> None:
        while start + 8 <= end:
            tag, size = data[start:start + 4], struct.unpack("<I", data[start + 4:start + 8])[0]
            if tag in (b"VP8 ", b"VP8L"):
                kinds.add(tag)
            elif tag == b"ANMF":
                walk(start + 8 + 16, start + 8 + size)
            start += 8 + size + (size & 1)

    walk(12, len(data))
    return kinds == {b"VP8L"}


def _pil_frames(path: Path, im: Image.Image, n_frames: int) -> tuple[list[np.ndarray], list[int]]:
    """The first `n_frames` frames as arrays (each composed as a viewer shows it) and their durations in ms."""
    frames, durations = [], []
    for i in range(n_frames):
        im.seek(i)
        frames.append(_pil_to_array(path, im))
        durations.append(int(im.info.get("duration") or 100))
    return frames, durations


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
    if im.format == "GIF" and im.tell() > 0:  # later GIF frames come as RGB(A) or P with a local palette
        return np.asarray(im.convert("RGBA" if im.mode in ("RGBA", "PA") or "transparency" in im.info else "RGB"))
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


def _fit_format(image: np.ndarray, ext: str) -> np.ndarray:
    """Drop what the format cannot hold: alpha (JPEG, BMP), 16 bits (all but PNG/TIFF, rounded)."""
    _check_layout(image)
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 3 and image.shape[2] == 4 and ext not in _HOLDS_ALPHA:
        image = image[..., :3]
    if image.dtype == np.uint16 and ext not in _HOLDS_16BIT:
        image = _to_8bit(image)
    return image


def _to_8bit(image: np.ndarray) -> np.ndarray:
    if image.dtype == np.uint8:
        return image
    return ((image.astype(np.uint32) + 128) // 257).astype(np.uint8)


def _encode_8bit(frames: list[np.ndarray], ext: str, quality: int, meta: ImageMeta) -> bytes:
    """Encode 8-bit frames (grey 16-bit single frames go through here too) with Pillow, with metadata."""
    images = [Image.fromarray(f) for f in frames]
    fmt = _PIL_FORMATS[ext]
    options: dict = {}
    if ext in _HOLDS_ICC_EXIF:
        if meta.icc_profile:
            options["icc_profile"] = meta.icc_profile
        if meta.exif and fmt != "TIFF":
            options["exif"] = meta.exif
    if fmt == "JPEG":
        options.update(quality=quality, subsampling=0, comment=MARKER.encode())
    elif fmt == "WEBP":
        options.update(lossless=True, quality=100) if meta.lossless else options.update(quality=quality)
        options["xmp"] = _XMP_MARKER
    elif fmt == "PNG":
        info = PngImagePlugin.PngInfo()
        info.add_text("Software", MARKER)
        options["pnginfo"] = info
    elif fmt == "TIFF":
        exif = Image.Exif()
        if meta.exif:
            exif.load(meta.exif)
        exif[_EXIF_SOFTWARE] = MARKER  # the TIFF tags are the EXIF main IFD; Software names the writer
        options["exif"] = exif
    elif fmt == "GIF":
        options["comment"] = MARKER.encode()
    if len(images) > 1:
        options.update(save_all=True, append_images=images[1:])
        if meta.durations and fmt != "TIFF":
            options.update(duration=meta.durations, loop=meta.loop or 0)
    buffer = BytesIO()
    images[0].save(buffer, format=fmt, **options)
    return buffer.getvalue()


def _encode_16bit(image: np.ndarray, ext: str, meta: ImageMeta) -> bytes:
    """16-bit PNG/TIFF. Grey goes through Pillow (with metadata); colour through OpenCV, whose PNGs get
    the ICC profile, EXIF and marker added as chunks (16-bit colour TIFF is written without them)."""
    if image.ndim == 2:
        return _encode_8bit([image], ext, 95, meta)
    image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR if image.shape[2] == 3 else cv2.COLOR_RGBA2BGRA)
    ok, encoded = cv2.imencode(ext, image)
    if not ok:
        raise ImageError(f"OpenCV could not encode a 16-bit {ext} image")
    data = encoded.tobytes()
    if ext != ".png":
        return data
    chunks = [_png_chunk(b"tEXt", b"Software\0" + MARKER.encode())]
    if meta.icc_profile:
        chunks.append(_png_chunk(b"iCCP", b"ICC profile\0\0" + zlib.compress(meta.icc_profile)))
    if meta.exif:
        chunks.append(_png_chunk(b"eXIf", meta.exif.removeprefix(b"Exif\0\0")))
    ihdr_end = 8 + 8 + 13 + 4  # signature, IHDR length+type, IHDR data, CRC
    return data[:ihdr_end] + b"".join(chunks) + data[ihdr_end:]


def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False

