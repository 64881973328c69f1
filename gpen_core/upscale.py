"""Background super-resolution, as the official GPEN ``--use_sr``: the whole photo is upscaled first, then its
faces are restored at the new resolution (the official recipe for GPEN-BFR-2048: x2, tile 400, alpha 0.8).

Upscalers are loaded with spandrel (optional: ``pip install spandrel``), the library ComfyUI and AUTOMATIC1111
>= 1.8 use, and are spandrel ``ImageModelDescriptor`` objects: the official ``realesrnet_x1/x2/x4.pth`` (Real-ESRGAN
RRDBNet, 32 features, 23 blocks, weights under ``params_ema``; x2 and x1 pixel-unshuffle their input by 2 and 4) and
any other single-image model spandrel reads (RealESRGAN_x4plus, 4x-UltraSharp, SwinIR, ...). The file is read by
gpen_core's weights-only reader (nothing pickled runs); spandrel only builds the network from the tensors.

The network runs over a grid of tiles of at most ``tile`` px, each with ``TILE_PAD`` px of context on every side
(clamped at the image border, where the whole image would be padded the same way); only each tile's centre is kept.
Memory is bounded by the tile, not by the photo, and tiles meet without seams.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from .checkpoint import _what_it_looks_like, infer_config, read_state_dict
from .devices import resolve_device, resolve_dtype
from .errors import CheckpointError, ImageError, MissingDependencyError, ModelNotFoundError, UpscalerError
from .faces import Face

DOWNLOAD_HINT = "download an official one with `python -m gpen_core download realesrnet_x2` (or x1/x4)"
#: Context in input px around each tile: more than the official 10, for margin with models that see further.
TILE_PAD = 32
#: Smallest tile the out-of-memory retry goes down to, in input px.
MIN_TILE = 64
#: Peak working memory of one tile per output pixel, in activation values, to choose a tile that fits: measured on
#: CPU (fp32, 128-256 px tiles), 96-113 for the realesrnet_x2/x4 layouts, 197 for x1, 207 for RealESRGAN_x4plus.
_WORK_VALUES_PER_OUTPUT_PIXEL = 200
#: Share of the free memory a tile may use, and the most it uses on a CPU.
_MEMORY_SHARE = 0.5
_CPU_TILE_BYTES = 2 << 30

#: Presets of the command line's restore settings. selfie-2048: the official run.sh line for GPEN-BFR-2048
#: (``--in_size 2048 --alpha 0.8 --use_sr --sr_scale 2 --tile_size 400``).
RECIPES = {"selfie-2048": {"model": "GPEN-BFR-2048", "alpha": 0.8, "upscaler": "realesrnet_x2", "tile": 400}}

_OOM_ERROR = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
_GRAY_WEIGHTS = torch.tensor([0.299, 0.587, 0.114])  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY


def _spandrel():
    try:
        import spandrel
    except ImportError:
        raise MissingDependencyError("upscaling needs the spandrel package: pip install spandrel "
                                     "(with the Python that runs gpen_core)") from None
    return spandrel


def load_upscaler(path: str | Path, device: str | torch.device | None = None,
                  dtype: str | torch.dtype | None = None):
    """Load an upscaling model file (``.pth``/``.safetensors``) as a spandrel ``ImageModelDescriptor``.

    ``device`` None = best available; ``dtype`` None = float32, or fp16/bf16 where the model supports it.
    Raises ModelNotFoundError for a missing file, CheckpointError for a damaged or unsafe one, UpscalerError
    for anything that is not an upscaler (a GPEN, GFPGAN or CodeFormer face model, a detector, ...), and
    MissingDependencyError without spandrel.
    """
    spandrel = _spandrel()
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.exists() else "does not exist"
        raise ModelNotFoundError(f"upscaler {path} {what}; give an upscaling model file, or {DOWNLOAD_HINT}.")
    state = read_state_dict(path, fix=DOWNLOAD_HINT)
    if _is_gpen(state):
        raise UpscalerError(f"{path} is a GPEN face-restoration checkpoint, not an upscaler: give it as the model "
                            f"(--model), and an upscaler such as realesrnet_x2.pth as the upscaler; {DOWNLOAD_HINT}.")
    try:
        descriptor = spandrel.ModelLoader(device="cpu").load_from_state_dict(state)
    except spandrel.UnsupportedModelError:
        raise UpscalerError(f"{path} is not an upscaling model spandrel {spandrel.__version__} knows: "
                            f"{_what_it_looks_like(state)} ({len(state)} tensors). Use an upscaler such as "
                            f"realesrnet_x2.pth or RealESRGAN_x4plus.pth, or {DOWNLOAD_HINT}.") from None
    except Exception as exc:  # noqa: BLE001 - spandrel raises KeyError, RuntimeError... on odd shapes
        raise UpscalerError(f"{path} looks like an upscaler but spandrel cannot build it "
                            f"({type(exc).__name__}: {str(exc)[:200]}); the file is damaged or of an unsupported "
                            f"variant. {DOWNLOAD_HINT.capitalize()}.") from None
    descriptor = check_upscaler(descriptor, path)
    torch_dtype = resolve_dtype(dtype)
    if (torch_dtype == torch.float16 and not descriptor.supports_half) or \
            (torch_dtype == torch.bfloat16 and not descriptor.supports_bfloat16):
        raise UpscalerError(f"{path} ({descriptor.architecture.name}) does not support {torch_dtype}; use fp32")
    return descriptor.to(device=resolve_device(device), dtype=torch_dtype).eval()


def resolve_upscaler(name: str, search_dirs: Sequence[str | Path] = (), *, download: bool = False,
                     quiet: bool = False) -> Path:
    """The upscaler file for ``name``: a path, or an official name (realesrnet_x2) looked up as ``<name>.pth`` or
    ``.safetensors`` in ``search_dirs`` then the model folders, and downloaded when ``download`` and not found.
    ModelNotFoundError says where it was looked for and how to download it."""
    from .download import UPSCALER_SOURCES, download_upscaler
    from .model_paths import default_model_dirs

    given = Path(name).expanduser()
    if given.is_file() or name not in UPSCALER_SOURCES:
        if not given.exists():
            raise ModelNotFoundError(f"upscaler {name}: no such file; give an upscaling model file, or one of "
                                     f"{', '.join(UPSCALER_SOURCES)} ({DOWNLOAD_HINT})")
        return given
    folders = [*map(Path, search_dirs), *default_model_dirs()]
    for folder in folders:
        for suffix in (".pth", ".safetensors"):
            if (folder / f"{name}{suffix}").is_file():
                return folder / f"{name}{suffix}"
    if download:
        return download_upscaler(name, progress=not quiet)
    where = "".join(f"\n  {folder}" for folder in folders)
    raise ModelNotFoundError(f"upscaler {name} not found; put {name}.pth in one of these folders:{where}\n"
                             f"or download it with `python -m gpen_core download {name}` (or add --download)")


def _is_gpen(state: Mapping[str, torch.Tensor]) -> bool:
    try:
        infer_config(state)
    except CheckpointError:
        return False
    return True


def check_upscaler(model, source: str | Path = "upscaler"):
    """``model`` itself if it is a spandrel ``ImageModelDescriptor`` that upscales or restores whole images with
    1 or 3 channels; UpscalerError otherwise (face models such as GFPGAN, inpainting models, anything else)."""
    spandrel = _spandrel()
    if not isinstance(model, spandrel.ImageModelDescriptor):
        kind = type(model).__name__
        raise UpscalerError(f"{source}: a {kind} is not an upscaler; give a single-image upscaling model "
                            f"loaded with spandrel (ComfyUI: Load Upscale Model), or {DOWNLOAD_HINT}.")
    if model.purpose == "FaceSR":
        raise UpscalerError(f"{source} is a {model.architecture.name} face-restoration model, not an upscaler: it "
                            f"works on aligned face crops, not whole photos. Use an upscaler such as "
                            f"realesrnet_x2.pth, or {DOWNLOAD_HINT}.")
    if model.input_channels not in (1, 3) or model.output_channels not in (1, 3):
        raise UpscalerError(f"{source} takes {model.input_channels} and gives {model.output_channels} channels; "
                            f"only gray (1) and RGB (3) upscalers are supported.")
    return model


def verify_upscaler(path: Path, scale: int) -> None:
    """Raise unless ``path`` loads (on CPU) as an upscaler of ``scale``."""
    model = load_upscaler(path, device="cpu")
    if model.scale != scale:
        raise UpscalerError(f"{path.name} is a x{model.scale} upscaler, not x{scale}")


def realesrnet_state_dict(scale: int = 2, num_blocks: int = 23, seed: int = 0) -> dict[str, dict[str, torch.Tensor]]:
    """A checkpoint in the layout of the official ``realesrnet_x{scale}.pth`` (RRDBNet, 32 features, 32 growth
    channels, ``num_blocks`` blocks; 23 in the official files), with seeded random weights: Real-ESRGAN's
    initialisation (He-normal, x0.1 inside the dense blocks), an output layer giving about 0.5 +- 0.2.
    For tests and memory measurements; ``{"params_ema": {name: float32 tensor}}`` as the official files."""
    if scale not in (1, 2, 4):
        raise ValueError(f"the official realesrnet upscalers are x1, x2 and x4, not x{scale}")
    generator = torch.Generator().manual_seed(seed)
    features = grow = 32
    state = {}

    def conv(name: str, out_channels: int, in_channels: int, gain: float = 1.0, bias: float = 0.0) -> None:
        std = gain * math.sqrt(2 / (1 + 0.2 ** 2) / (in_channels * 9))  # He-normal for LeakyReLU(0.2)
        state[f"{name}.weight"] = torch.randn(out_channels, in_channels, 3, 3, generator=generator) * std
        state[f"{name}.bias"] = torch.full((out_channels,), bias)

    conv("conv_first", features, 3 * (4 // scale if scale < 4 else 1) ** 2)
    for block in range(num_blocks):
        for rdb in (1, 2, 3):
            for i in range(1, 6):
                conv(f"body.{block}.rdb{rdb}.conv{i}", grow if i < 5 else features, features + (i - 1) * grow, 0.1)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        conv(name, features, features)
    conv("conv_last", 3, features, 0.05, 0.5)
    return {"params_ema": state}


def tile_grid(height: int, width: int, tile: int, multiple: int = 1) -> list[tuple[int, int, int, int]]:
    """Tiles (y0, y1, x0, x1), end-exclusive, covering a height x width image once, in rows.

    Tiles are at most ``tile`` px (a multiple of ``multiple``) on a side and about equal in size; every tile
    starts at a multiple of ``multiple``, so interior tiles meet a model's size rule without padding.
    """
    def cuts(n: int) -> list[tuple[int, int]]:
        count = math.ceil(n / tile)
        step = math.ceil(math.ceil(n / count) / multiple) * multiple
        return [(start, min(start + step, n)) for start in range(0, n, step)]

    return [(y0, y1, x0, x1) for y0, y1 in cuts(height) for x0, x1 in cuts(width)]


def tile_memory_bytes(model, tile: int) -> int:
    """Estimated peak working memory of one ``tile`` x ``tile`` px tile (with its context) through ``model``."""
    side = (tile + 2 * _pad(model)) * model.scale
    return side * side * _WORK_VALUES_PER_OUTPUT_PIXEL * torch.empty((), dtype=model.dtype).element_size()


def auto_tile(model, height: int, width: int) -> int:
    """The largest tile side (input px, a multiple of the model's size rule) whose working memory fits: a share of
    the free memory of a CUDA device, of the available RAM (at most 2 GiB) on CPU and MPS. At least ``MIN_TILE``,
    at most the image's longer side (no tiling when the whole image fits)."""
    device = model.device
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        budget = _MEMORY_SHARE * (free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device))
    else:
        budget = min(_MEMORY_SHARE * _available_ram(), _CPU_TILE_BYTES)
    per_value = _WORK_VALUES_PER_OUTPUT_PIXEL * torch.empty((), dtype=model.dtype).element_size()
    side = int(math.sqrt(budget / per_value)) // model.scale - 2 * _pad(model)
    multiple = model.size_requirements.multiple_of
    side = max(MIN_TILE, side // multiple * multiple)
    return min(side, math.ceil(max(height, width) / multiple) * multiple)


def _available_ram() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return 8 << 30


def _pad(model) -> int:
    multiple = model.size_requirements.multiple_of
    return math.ceil(TILE_PAD / multiple) * multiple


def upscale_image(image: np.ndarray, model, *, tile: int | None = None,
                  on_progress: Callable[[int, int], None] | None = None,
                  check_interrupt: Callable[[], None] | None = None,
                  on_oom: Callable[[], None] | None = None) -> np.ndarray:
    """Upscale a whole image with a spandrel upscaler, tile by tile.

    image: uint8 or uint16, (H, W) or (H, W, 1) gray, (H, W, 3) RGB or (H, W, 4) RGBA. Returns the same layout and
    dtype at (H * scale, W * scale); the alpha channel is resized bilinearly, not by the network. 16-bit images
    go through the network at full precision. tile: tile side in input px (None: ``auto_tile``); on CUDA
    out-of-memory it is halved (down to ``MIN_TILE``) after calling on_oom(). on_progress(done, total) after each
    tile; check_interrupt() before each tile (may raise). The model runs on its own device and dtype.
    """
    model = check_upscaler(model)
    layout_ok = image.ndim == 2 or (image.ndim == 3 and image.shape[2] in (1, 3, 4))
    if image.dtype not in (np.uint8, np.uint16) or not layout_ok:
        raise ImageError(f"upscaling needs a uint8/uint16 (H,W), (H,W,1|3|4) image, got {image.dtype} {image.shape}")
    colour = image[..., None] if image.ndim == 2 else image[..., :3]
    height, width = colour.shape[:2]
    scale = model.scale
    out = np.empty((height * scale, width * scale, colour.shape[2]), image.dtype)
    tile = tile or auto_tile(model, height, width)
    multiple = model.size_requirements.multiple_of
    tile = max(multiple, math.ceil(tile / multiple) * multiple)
    while True:
        try:
            _run_tiles(colour, model, out, tile, on_progress, check_interrupt)
            break
        except _OOM_ERROR:
            if tile <= MIN_TILE:
                raise
            tile = max(MIN_TILE, tile // 2 // multiple * multiple)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if on_oom is not None:
                on_oom()
    if image.ndim == 2:
        return out[..., 0]
    if image.shape[2] == 4:
        alpha = cv2.resize(image[..., 3], (width * scale, height * scale), interpolation=cv2.INTER_LINEAR)
        return np.concatenate([out, alpha[..., None]], axis=2)
    return out


@torch.inference_mode()
def _run_tiles(colour: np.ndarray, model, out: np.ndarray, tile: int,
               on_progress: Callable[[int, int], None] | None,
               check_interrupt: Callable[[], None] | None) -> None:
    """Fill ``out`` (H*s, W*s, C) from ``colour`` (H, W, C), one tile at a time."""
    height, width, channels = colour.shape
    scale, pad = model.scale, _pad(model)
    top = float(np.iinfo(colour.dtype).max)
    grid = tile_grid(height, width, tile, model.size_requirements.multiple_of)
    for done, (y0, y1, x0, x1) in enumerate(grid, 1):
        if check_interrupt is not None:
            check_interrupt()
        cy0, cy1, cx0, cx1 = max(y0 - pad, 0), min(y1 + pad, height), max(x0 - pad, 0), min(x1 + pad, width)
        x = torch.from_numpy(colour[cy0:cy1, cx0:cx1].astype(np.float32) / np.float32(top))
        x = x.permute(2, 0, 1)[None].to(device=model.device, dtype=model.dtype)
        if x.shape[1] != model.input_channels:  # gray image, RGB model (or the reverse)
            x = x.expand(-1, 3, -1, -1) if channels == 1 else (_GRAY_WEIGHTS.to(x)[:, None, None] * x).sum(1, True)
        y = model(x)
        expected = (1, model.output_channels, (cy1 - cy0) * scale, (cx1 - cx0) * scale)
        if tuple(y.shape) != expected:
            raise UpscalerError(f"the upscaler returned {tuple(y.shape)} for a {tuple(x.shape)} input, not "
                                f"{expected}: its declared scale x{scale} is wrong; it cannot be used")
        y = y[:, :, (y0 - cy0) * scale:(y1 - cy0) * scale, (x0 - cx0) * scale:(x1 - cx0) * scale].float()
        if y.shape[1] != channels:
            y = y.expand(-1, 3, -1, -1) if channels == 3 else (_GRAY_WEIGHTS.to(y)[:, None, None] * y).sum(1, True)
        values = y[0].permute(1, 2, 0).mul_(top).round_().clamp_(0, top).cpu().numpy()
        out[y0 * scale:y1 * scale, x0 * scale:x1 * scale] = values.astype(out.dtype)
        del x, y
        if on_progress is not None:
            on_progress(done, len(grid))


def scale_face(face: Face, scale: int) -> Face:
    """``face`` in the pixels of the image resized by ``scale``: box edges times scale, landmark pixel centres
    mapped as a bilinear resize maps them ((x + 0.5) * scale - 0.5)."""
    return Face(box=(face.box * scale).astype(np.float32), score=face.score,
                landmarks=((face.landmarks + 0.5) * scale - 0.5).astype(np.float32))


def resize_plainly(colour: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(H, W, C) uint8/uint16 resized bilinearly to ``shape`` (H', W'), keeping the channel axis; what the official
    code cuts the faces from after upscaling (``cv2.resize`` of the input to the upscaled size)."""
    resized = cv2.resize(colour, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)
    return resized[..., None] if resized.ndim == 2 else resized
