"""Reading GPEN checkpoints safely and inferring the network's hyper-parameters from tensor shapes."""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .devices import resolve_device, resolve_dtype
from .errors import CheckpointError, ModelNotFoundError
from .model import GPENModel
from .network import GPEN, GPENConfig

StateDict = dict[str, torch.Tensor]

#: Containers that training scripts wrap a generator's weights in, most specific first.
WRAPPER_KEYS = ("g_ema", "params_ema", "state_dict", "model", "params", "net", "g")
#: Prefixes added by DataParallel and torch.compile.
MODULE_PREFIXES = ("module.", "_orig_mod.")

DOWNLOAD_HINT = "download an official one with `python -m gpen_core download 512` (or 256/1024/2048)"

#: Key fragments of other face/upscale models people keep in the same folders.
OTHER_MODELS = {
    "GFPGAN": ("stylegan_decoder.", "conv_body_first."),
    "CodeFormer": ("quantize.embedding", "position_emb", "ft_layers."),
    "RetinaFace (face detector)": ("ClassHead.", "BboxHead.", "LandmarkHead."),
    "ParseNet (face parsing)": ("out_img_conv.", "out_mask_conv."),
    "BiSeNet (face parsing)": ("cp.resnet.", "ffm.convblk"),
    "RealESRGAN / ESRGAN (upscaler)": ("conv_first.", "rdb1.", "RRDB_trunk."),
}


def _sniff_format(path: Path) -> str:
    with path.open("rb") as f:
        head = f.read(9)
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if len(head) == 9 and head[8:9] == b"{":
        return "safetensors"
    return "pickle"


def _corrupt(path: Path, detail: str) -> CheckpointError:
    size_mb = path.stat().st_size / 1e6
    return CheckpointError(
        f"{path} is truncated or corrupt ({size_mb:.1f} MB; official GPEN checkpoints are 76-285 MB): {detail}. "
        f"Delete it and download it again, or {DOWNLOAD_HINT}."
    )


def _load_torch(path: Path, fmt: str) -> object:
    # torch.serialization.load, not torch.load: A1111 1.8-1.10 replaces torch.load with a checker that
    # rejects entries current torch writes; weights_only=True is the same protection.
    try:
        return torch.serialization.load(path, map_location="cpu", weights_only=True, mmap=fmt == "zip")
    except pickle.UnpicklingError as exc:
        message = str(exc)
        if "Unsupported global" in message or "GLOBAL" in message or "Unsupported operand" in message:
            raise CheckpointError(
                f"refused to load {path}: it contains pickled Python code, not just tensors "
                f"(first item refused: {message.splitlines()[-1].strip()[:200]}). GPEN checkpoints hold only "
                f"tensors, so this file is not one or has been tampered with; it was not run. Use an official "
                f"file: {DOWNLOAD_HINT}."
            ) from None
        raise _corrupt(path, message.splitlines()[0][:200]) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types (even SafetensorError) on junk
        raise _corrupt(path, (str(exc).splitlines() or [type(exc).__name__])[0][:200]) from None


def _load_safetensors(path: Path) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, str(exc)[:200]) from None


def read_state_dict(path: str | Path) -> StateDict:
    """Every tensor of a checkpoint file (``.pth``/``.pt`` zip or legacy pickle, ``.safetensors``),
    on CPU, unwrapped from training containers and ``module.`` prefixes. Never runs pickled code."""
    path = Path(path).expanduser()
    if not path.is_file():
        what = "is a folder, not a file" if path.exists() else "does not exist"
        raise ModelNotFoundError(
            f"GPEN checkpoint {path} {what}. Put GPEN-BFR-512.pth (or 256/1024/2048) in your models folder, "
            f"or {DOWNLOAD_HINT}."
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), probably an interrupted download: "
                              f"delete it and {DOWNLOAD_HINT}.")
    fmt = _sniff_format(path)
    raw = _load_safetensors(path) if fmt == "safetensors" else _load_torch(path, fmt)
    return unwrap_state_dict(raw, path)


def unwrap_state_dict(raw: object, source: str | Path = "checkpoint") -> StateDict:
    """The generator's tensors from a plain or wrapped state dict (nested or flattened wrappers)."""
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{source} holds a {type(raw).__name__}, not a state dict of tensors; "
                              f"it is not a GPEN checkpoint. {DOWNLOAD_HINT.capitalize()}.")
    found = True
    while found:
        found = False
        for key in WRAPPER_KEYS:
            if isinstance(raw.get(key), Mapping):
                raw, found = raw[key], True
                break
            prefix = key + "."
            if not any(k.startswith("generator.") for k in raw) and any(k.startswith(prefix) for k in raw):
                raw = {k[len(prefix):]: v for k, v in raw.items() if k.startswith(prefix)}
                found = True
                break
    state = {}
    for key, value in raw.items():
        if not isinstance(value, torch.Tensor):
            continue
        for prefix in MODULE_PREFIXES:
            if key.startswith(prefix):
                key = key[len(prefix):]
        state[key] = value
    return state


def _what_it_looks_like(state: Mapping[str, torch.Tensor]) -> str:
    for name, fragments in OTHER_MODELS.items():
        if any(fragment in key for key in state for fragment in fragments):
            return f"it looks like a {name} model"
    return "its tensor names match no GPEN layout"


def infer_config(state: Mapping[str, torch.Tensor], source: str | Path = "checkpoint") -> GPENConfig:
    """Size, channel multiplier, narrow, style_dim and n_mlp of a GPEN state dict, from shapes alone."""
    encoder = sorted(int(m.group(1)) for k in state if (m := re.match(r"ecd(\d+)\.", k)))
    required = ("generator.input.input", "generator.style.1.weight", "ecd0.0.0.weight")
    if not encoder or any(k not in state for k in required):
        raise CheckpointError(
            f"{source} is not a GPEN checkpoint: {_what_it_looks_like(state)} ({len(state)} tensors). "
            f"Choose a GPEN-BFR-*.pth file, or {DOWNLOAD_HINT}."
        )
    size = 2 ** (encoder[-1] + 2)
    channels = {size: state["ecd0.0.0.weight"].shape[0]}
    for i in range(1, encoder[-1] + 1):
        weight = state.get(f"ecd{i}.0.1.weight")
        if weight is not None:
            channels[size >> i] = weight.shape[0]
    narrow = state["generator.input.input"].shape[1] / 512
    style_dim = state["generator.style.1.weight"].shape[0]
    n_mlp = sum(1 for k in state if re.fullmatch(r"generator\.style\.\d+\.weight", k))
    for multiplier in range(1, 9):
        config = GPENConfig(size, multiplier, narrow, style_dim, n_mlp)
        if all(config.channels.get(res) == c for res, c in channels.items()):
            return config
    raise CheckpointError(
        f"{source} has a GPEN layout whose channel widths {dict(sorted(channels.items()))} fit no "
        f"channel multiplier; it cannot be loaded. Use an official GPEN-BFR checkpoint."
    )


def _check_keys(net: GPEN, state: Mapping[str, torch.Tensor], source: str | Path) -> None:
    expected = net.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
             for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    for label, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
        if items:
            shown = ", ".join(items[:5]) + (f" and {len(items) - 5} more" if len(items) > 5 else "")
            problems.append(f"{len(items)} {label}: {shown}")
    if problems:
        raise CheckpointError(
            f"{source} does not match the GPEN-{net.config.size} layout inferred from it "
            f"({'; '.join(problems)}). The file is damaged or from a different GPEN version: "
            f"{DOWNLOAD_HINT}."
        )


def build_network(state: Mapping[str, torch.Tensor], source: str | Path = "checkpoint") -> GPEN:
    """A GPEN network holding ``state``'s tensors (strict: every key, shape and blur buffer)."""
    config = infer_config(state, source)
    with torch.device("meta"):
        net = GPEN(config)
    _check_keys(net, state, source)
    broken = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if broken:
        raise CheckpointError(f"{source} has NaN or infinite values in {len(broken)} tensors ({broken[0]}, ...): "
                              f"the file is damaged or was saved from an uninitialised network; {DOWNLOAD_HINT}.")
    net.load_state_dict(state, strict=True, assign=True)
    return net.eval().requires_grad_(False)


def model_from_state_dict(state: Mapping[str, torch.Tensor], device=None, dtype=None,
                          path: Path | None = None) -> GPENModel:
    """A ready :class:`GPENModel` from an in-memory state dict (see :func:`load_model`)."""
    source = path or "state dict"
    net = build_network(unwrap_state_dict(state, source), source)
    return GPENModel(net.to(device=resolve_device(device), dtype=resolve_dtype(dtype)), path)


def load_model(path: str | Path, device: str | torch.device | None = None,
               dtype: str | torch.dtype | None = None) -> GPENModel:
    """Load an official (or compatible) GPEN checkpoint, inferring every hyper-parameter.

    ``device`` None = best available (cuda, mps, cpu); ``dtype`` None = float32, or fp16/bf16.
    Raises :class:`ModelNotFoundError` or :class:`CheckpointError` with the file and the fix.
    """
    path = Path(path).expanduser()
    net = build_network(read_state_dict(path), path)
    return GPENModel(net.to(device=resolve_device(device), dtype=resolve_dtype(dtype)), path)


def inspect_checkpoint(path: str | Path) -> GPENConfig:
    """The :class:`GPENConfig` of a checkpoint file without building the network."""
    path = Path(path).expanduser()
    return infer_config(read_state_dict(path), path)
