"""Where weights already on disk are found. Nothing here downloads or loads a file.

facexlib weights (RetinaFace detection, face parsing) are looked for, first hit wins, in:
  1. an explicit path (file, or folder to search);
  2. the file named by ``GPEN_DETECTION_WEIGHTS`` / ``GPEN_PARSING_WEIGHTS``;
  3. the folder(s) in ``GPEN_FACEXLIB_DIR`` (``os.pathsep``-separated);
  4. the folders the host passes (ComfyUI ``models/facedetection``, ``models/facexlib``,
     A1111 ``models/GFPGAN``, ...);
  5. facexlib's own package ``weights/`` folder (where facexlib itself downloads to);
  6. the GPEN checkpoint folders (``default_model_dirs()``) and ``./weights`` (GPEN's repository layout).
Within a folder the better network wins (ResNet-50 RetinaFace before MobileNet; ParseNet before BiSeNet).

GPEN checkpoints are looked for in ``default_model_dirs()`` plus host folders; a host with one model folder
lists it with ``list_checkpoints`` and picks the default with ``largest_checkpoint``.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from .errors import GPENError, ModelNotFoundError
from .identify import MODEL_SUFFIXES, is_gpen_model

FACEXLIB_FILES = {
    "detection": ("detection_Resnet50_Final.pth", "RetinaFace-R50.pth", "detection_mobilenet0.25_Final.pth"),
    "parsing": ("parsing_parsenet.pth", "parsing_bisenet.pth"),
}
FILE_ENV = {"detection": "GPEN_DETECTION_WEIGHTS", "parsing": "GPEN_PARSING_WEIGHTS"}
DIR_ENV = "GPEN_FACEXLIB_DIR"
MODELS_ENV = "GPEN_MODELS_DIR"
CHECKPOINT_SUFFIXES = MODEL_SUFFIXES

PathLike = str | os.PathLike


def env_dirs(name: str) -> list[Path]:
    """The folders an ``os.pathsep``-separated environment variable names, in order."""
    return [Path(p).expanduser() for p in os.environ.get(name, "").split(os.pathsep) if p.strip()]


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(Path(p).expanduser().absolute() for p in paths))


def _facexlib_package_weights() -> list[Path]:
    """facexlib's ``weights/`` folder, found without importing facexlib (and torch with it)."""
    try:
        spec = importlib.util.find_spec("facexlib")
    except (ImportError, ValueError):
        return []
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) / "weights" for p in spec.submodule_search_locations]


def cache_dir() -> Path:
    """The user cache for checkpoints: ``$XDG_CACHE_HOME/gpen_core`` (default ``~/.cache/gpen_core``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "gpen_core"


def default_model_dirs() -> list[Path]:
    """Folders searched for GPEN checkpoints, in order (they need not exist).

    ``GPEN_MODELS_DIR`` (``os.pathsep``-separated), ``./models/GPEN``, ``./weights`` (GPEN's own
    repository layout), and the user cache ``$XDG_CACHE_HOME/gpen_core`` (default ``~/.cache/gpen_core``).
    """
    return _unique([*env_dirs(MODELS_ENV), Path("models") / "GPEN", Path("weights"), cache_dir()])


def facexlib_weight_dirs(search_dirs: Sequence[PathLike] = ()) -> list[Path]:
    """Folders searched for facexlib weights after the explicit path and the per-file env var."""
    return _unique([*env_dirs(DIR_ENV), *map(Path, search_dirs), *_facexlib_package_weights(),
                    *default_model_dirs()])


def find_facexlib_weights(
    kind: str, *, search_dirs: Sequence[PathLike] = (), explicit: PathLike | None = None
) -> Path | None:
    """Path of RetinaFace (kind="detection") or face-parsing (kind="parsing") weights, or None.

    Raises ModelNotFoundError when ``explicit`` or the per-file environment variable names a path
    that does not exist (a typo should not silently fall back to another detector).
    """
    if kind not in FACEXLIB_FILES:
        raise ValueError(f"kind must be one of {tuple(FACEXLIB_FILES)}, got {kind!r}")
    names = FACEXLIB_FILES[kind]
    for source, value in (("explicit path", explicit), (FILE_ENV[kind], os.environ.get(FILE_ENV[kind]))):
        if not value:
            continue
        path = Path(value).expanduser()
        if path.is_file():
            return path
        if not path.is_dir():
            raise ModelNotFoundError(f"{kind} weights not found: {source} {path} does not exist")
        hit = _first_in(path, names)
        if hit is None:
            raise ModelNotFoundError(f"{kind} weights not found: {source} {path} has none of {', '.join(names)}")
        return hit
    for folder in facexlib_weight_dirs(search_dirs):
        hit = _first_in(folder, names)
        if hit is not None:
            return hit
    return None


def _first_in(folder: Path, names: Sequence[str]) -> Path | None:
    return next((folder / n for n in names if (folder / n).is_file()), None)


def find_gpen_models(search_dirs: Sequence[PathLike] = ()) -> list[Path]:
    """GPEN model files (``identify.is_gpen_model``: "gpen" in the name, or a GPEN generator's tensor names, as
    ModelScope's ``pytorch_model.pt``) in ``search_dirs`` then ``default_model_dirs()``, not recursive. Only
    names are read from the files (cheap, cached). Sorted by folder order, then name."""
    found = []
    for folder in _unique([*map(Path, search_dirs), *default_model_dirs()]):
        if folder.is_dir():
            found += sorted(p for p in folder.iterdir() if p.is_file() and is_gpen_model(p))
    return _unique(found)


def list_checkpoints(folder: PathLike) -> list[Path]:
    """Every checkpoint file (.pth/.pt/.safetensors/.onnx, any name) under ``folder``, recursive, sorted by
    POSIX path relative to ``folder``; [] when the folder does not exist. Files are listed, never opened."""
    root = Path(folder)
    if not root.is_dir():
        return []
    files = (p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in CHECKPOINT_SUFFIXES)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def checkpoint_size(path: PathLike) -> int | None:
    """Crop size S in px of a GPEN checkpoint, read from its tensor shapes (never from its name: ModelScope's
    ``pytorch_model.pt`` is a 1024 model), or None when it cannot be read as one. Cached per (path, size,
    modification time); cheap for .safetensors and zip .pth/.pt files (see ``inspect_checkpoint``); ``.onnx``
    files: from their input shape, read in milliseconds without onnxruntime."""
    path = Path(path)
    if path.suffix.lower() == ".onnx":
        return _onnx_size(path)
    try:
        stat = path.stat()
    except OSError:
        return None
    return _size_from_file(path.absolute(), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _size_from_file(path: Path, size: int, mtime_ns: int) -> int | None:
    from .checkpoint import inspect_checkpoint  # imports torch: only when listing sizes

    try:
        return int(inspect_checkpoint(path).size)
    except (GPENError, OSError):
        return None


def _onnx_size(path: Path) -> int | None:
    from .onnx_file import onnx_size

    try:
        return onnx_size(path)
    except (GPENError, OSError):
        return None


def largest_checkpoint(paths: Iterable[PathLike]) -> Path | None:
    """The checkpoint with the largest crop size (``checkpoint_size``; unreadable files count as 0), ties
    broken by the later file name; None for no paths."""
    candidates = [Path(p) for p in paths]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (checkpoint_size(p) or 0, p.name))
