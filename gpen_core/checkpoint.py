"""Reading GPEN checkpoints safely and inferring the network's hyper-parameters from tensor shapes."""

from __future__ import annotations

import errno
import os
import pickle
import re
from collections.abc import Mapping
from pathlib import Path

import torch

from .devices import resolve_device, resolve_dtype
from .errors import CheckpointError, ModelNotFoundError
from .model import GPENModel
from .network import GPEN, GPENConfig
from .onnx_file import is_onnx_file, is_onnx_header

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


#: Leading bytes of files people save under a checkpoint's name by mistake, and what each one is.
_FOREIGN_MAGIC = (
    (b"version https://git-lfs", "a Git LFS pointer (a text stub: the repository was cloned without `git lfs`)"),
    (b"\x89PNG", "a PNG image"), (b"\xff\xd8\xff", "a JPEG image"), (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "a gzip archive (extract it first)"), (b"7z\xbc\xaf", "a 7-Zip archive (extract it first)"),
    (b"Rar!", "a RAR archive (extract it first)"), (b"\xfd7zXZ", "an xz archive (extract it first)"),
)


def sniff_format(head: bytes) -> str:
    """What a file is, from its first bytes (at least 64 wanted): "zip" (torch's zip .pth/.pt), "pickle"
    (torch's legacy .pth), "safetensors", "onnx", or a phrase naming another kind of file ("an HTML page", ...)."""
    if head[:4] == b"PK\x03\x04":
        return "zip"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) >= 9 and head[8:9] == b"{":
        return "safetensors"
    if is_onnx_header(head):
        return "onnx"
    for magic, what in _FOREIGN_MAGIC:
        if head.startswith(magic):
            return what
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in text:
        return "an HTML page (a web page saved instead of the model: a login, error or download page)"
    printable = bool(text) and all(32 <= c < 127 or c in b"\t\r\n" for c in text[:64])
    if printable and text.startswith((b"{", b"[")):
        return "a JSON text (often a server's error answer saved instead of the model)"
    if printable:
        return f"a text file starting {head[:40].decode('ascii', 'replace').strip()!r}"
    return "unrecognised binary data"


def _short_reason(text: str) -> str:
    """The first line of a library's error message, whole sentences only (torch's lines can be paragraphs)."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if len(line) > 300:
        end = line.rfind(". ", 0, 300)
        line = line[:end + 1] if end > 0 else line
    return line


def _typical(fix: str) -> str:
    """The size note for GPEN checkpoints; other callers of read_state_dict (upscalers) pass their own fix."""
    return "; official GPEN checkpoints are 76-285 MB" if fix == DOWNLOAD_HINT else ""


def _corrupt(path: Path, detail: str, fix: str = DOWNLOAD_HINT) -> CheckpointError:
    size_mb = path.stat().st_size / 1e6
    return CheckpointError(
        f"{path} is truncated or corrupt ({size_mb:.1f} MB{_typical(fix)}): {detail}. "
        f"Delete it and download it again, or {fix}."
    )


def _not_a_checkpoint(path: Path, what: str, fix: str = DOWNLOAD_HINT) -> CheckpointError:
    if what == "onnx":
        return CheckpointError(
            f"{path} is an ONNX model, not a PyTorch or safetensors checkpoint. Load it with "
            f"gpen_core.load_model (ONNX Runtime runs it), or use the .pth/.safetensors GPEN file.")
    size_mb = path.stat().st_size / 1e6
    return CheckpointError(
        f"{path} is not a model checkpoint: it is {what} ({size_mb:.2f} MB). Checkpoints are PyTorch "
        f".pth/.pt or .safetensors files{_typical(fix)}. Delete it and download the model again: {fix}."
    )


#: torch names the global a pickle asked for as "GLOBAL module.name" (2.4+ wording and older alike).
_REFUSED_GLOBAL = re.compile(r"GLOBAL\s+([\w.]+)")


def _load_torch(path: Path, fmt: str, fix: str = DOWNLOAD_HINT) -> object:
    # torch.serialization.load, not torch.load: A1111 1.8-1.10 replaces torch.load with a checker that
    # rejects entries current torch writes; weights_only=True is the same protection.
    try:
        return torch.serialization.load(path, map_location="cpu", weights_only=True, mmap=fmt == "zip")
    except pickle.UnpicklingError as exc:
        message = str(exc)
        asked = _REFUSED_GLOBAL.search(message)
        if asked:
            raise CheckpointError(
                f"refused to load {path}: it contains pickled Python code that asks to import and call "
                f"`{asked.group(1)}` when loaded. Model checkpoints hold only tensors, so this file is not one "
                f"or has been tampered with; the code was not run. Delete it and use an official file: "
                f"{fix}."
            ) from None
        raise _corrupt(path, _short_reason(message.split("WeightsUnpickler error:")[-1]), fix) from None
    except Exception as exc:  # noqa: BLE001 - torch raises many types (even SafetensorError) on junk
        raise _corrupt(path, _short_reason(str(exc)) or type(exc).__name__, fix) from None


def _load_safetensors(path: Path, fix: str = DOWNLOAD_HINT) -> StateDict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, _short_reason(str(exc)), fix) from None


def _check_is_readable_file(path: Path) -> None:
    """ModelNotFoundError/CheckpointError saying what ``path`` really is when it is not a readable file."""
    try:
        path.stat()
    except OSError as exc:
        if path.is_symlink():
            target = os.readlink(path)
            problem = ("is a symbolic link that loops back on itself" if exc.errno == errno.ELOOP
                       else f"is a broken symbolic link (it points to {target}, which does not exist)")
            raise ModelNotFoundError(f"GPEN checkpoint {path} {problem}. Point it at a real GPEN-BFR-*.pth "
                                     f"file or replace it with the file itself.") from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise CheckpointError(f"cannot look into the folder of {path}: permission denied. Give your user "
                                  f"read access to it (chmod) or move the checkpoint elsewhere.") from None
        raise ModelNotFoundError(
            f"GPEN checkpoint {path} does not exist. Put GPEN-BFR-512.pth (or 256/1024/2048) in your models "
            f"folder, or {DOWNLOAD_HINT}.") from None
    if path.is_dir():
        raise ModelNotFoundError(f"GPEN checkpoint {path} is a folder, not a file. Name the checkpoint file "
                                 f"inside it (e.g. {path / 'GPEN-BFR-512.pth'}).")
    if not path.is_file():
        raise ModelNotFoundError(f"GPEN checkpoint {path} is not a regular file (a device, pipe or socket). "
                                 f"Name a GPEN-BFR-*.pth or .safetensors file.")


def _read_head(path: Path, n: int = 64) -> bytes:
    try:
        with path.open("rb") as f:
            return f.read(n)
    except PermissionError:
        raise CheckpointError(f"cannot read {path}: permission denied. Give your user read access "
                              f"(e.g. `chmod a+r \"{path}\"`) or copy the file somewhere you can read.") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read {path}: {exc.strerror or exc}. Check the disk or copy the file "
                              f"again.") from None


def read_state_dict(path: str | Path, *, fix: str = DOWNLOAD_HINT) -> StateDict:
    """Every tensor of a checkpoint file (``.pth``/``.pt`` zip or legacy pickle, ``.safetensors``),
    on CPU, unwrapped from training containers and ``module.`` prefixes. Never runs pickled code.
    ``fix``: how to get a good file, ending the messages about damaged or unsafe ones (default: the GPEN download)."""
    path = Path(path).expanduser()
    _check_is_readable_file(path)
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path} is empty (0 bytes), probably an interrupted download: "
                              f"delete it and {fix}.")
    fmt = sniff_format(_read_head(path))
    if fmt not in ("zip", "pickle", "safetensors"):
        raise _not_a_checkpoint(path, fmt, fix)
    raw = _load_safetensors(path, fix) if fmt == "safetensors" else _load_torch(path, fmt, fix)
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


def _discriminator_size(state: Mapping[str, torch.Tensor]) -> int | None:
    """Image size of a StyleGAN2/GPEN discriminator state dict (``convs.*`` down to 4 px, ``final_linear``), or
    None when ``state`` is not one: its convs are one 1x1 input conv plus one residual block per halving."""
    if "convs.0.0.weight" not in state or not any(k.startswith("final_linear.") for k in state):
        return None
    last = max(int(m.group(1)) for k in state if (m := re.match(r"convs\.(\d+)\.", k)))
    return 2 ** (last + 2)


def infer_config(state: Mapping[str, torch.Tensor], source: str | Path = "checkpoint") -> GPENConfig:
    """Size, channel multiplier, narrow, style_dim and n_mlp of a GPEN state dict, from shapes alone."""
    encoder = sorted(int(m.group(1)) for k in state if (m := re.match(r"ecd(\d+)\.", k)))
    required = ("generator.input.input", "generator.style.1.weight", "ecd0.0.0.weight")
    if not encoder or any(k not in state for k in required):
        discriminator = _discriminator_size(state)
        if discriminator:
            raise CheckpointError(
                f"{source} is a GPEN discriminator (GPEN-BFR-{discriminator}-D), the network that judges images "
                f"during training; it cannot restore faces. Use the generator of the same size, "
                f"GPEN-BFR-{discriminator}.pth (the name without -D), or {DOWNLOAD_HINT}."
            )
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
    """Load an official (or compatible) GPEN checkpoint, inferring every hyper-parameter; or a GPEN ONNX
    file (an :class:`~gpen_core.onnx_backend.ONNXModel`, run with ONNX Runtime).

    ``device`` None = best available (cuda, mps, cpu); ``dtype`` None = float32, or fp16/bf16.
    Raises :class:`ModelNotFoundError` or :class:`CheckpointError` with the file and the fix.
    """
    path = Path(path).expanduser()
    if is_onnx_file(path):  # by its bytes: ReActor/facefusion .onnx, run with ONNX Runtime
        from .onnx_backend import load_onnx_model
        return load_onnx_model(path, device, dtype)
    net = build_network(read_state_dict(path), path)
    return GPENModel(net.to(device=resolve_device(device), dtype=resolve_dtype(dtype)), path)


def inspect_checkpoint(path: str | Path) -> GPENConfig:
    """The :class:`GPENConfig` of a checkpoint file, read from its tensor shapes without building the network.

    Cheap for ``.safetensors`` (only the header is read) and zip ``.pth``/``.pt`` (memory-mapped); a legacy
    pickle ``.pth`` is read whole. Raises like :func:`read_state_dict` and :func:`infer_config`.
    """
    path = Path(path).expanduser()
    _check_is_readable_file(path)
    if path.stat().st_size and sniff_format(_read_head(path)) == "safetensors":
        return infer_config(unwrap_state_dict(_safetensors_shapes(path), path), path)
    return infer_config(read_state_dict(path), path)


def _safetensors_shapes(path: Path) -> StateDict:
    """Every tensor of a ``.safetensors`` file as an empty meta tensor of the right shape (header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _corrupt(path, _short_reason(str(exc))) from None
