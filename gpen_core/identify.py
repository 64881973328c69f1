"""Which model files are GPEN ones, decided cheaply enough for a file list refreshed at every UI redraw.

A file is read only as far as its tensor names: the zip directory and ``data.pkl`` of a torch ``.pth``/``.pt``
(a few kB, walked as pickle opcodes, never executed), the JSON header of a ``.safetensors`` file, the opening
pickles of a legacy torch file, the first MiB of an ``.onnx`` file. No tensor is loaded and torch is not
imported. Answers are cached per (path, size, modification time).
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickletools
import re
import struct
import zipfile
from pathlib import Path

#: File endings a GPEN model can have: torch zip or legacy pickle, safetensors, ONNX.
MODEL_SUFFIXES = (".pth", ".pt", ".safetensors", ".onnx")

_SCAN_BYTES = 1 << 20  # legacy pickle / ONNX: GPEN's names come first, well inside the first MiB
_PICKLE_LIMIT = 16 << 20  # a data.pkl or safetensors header larger than this is not a GPEN checkpoint
#: Tensor names only a GPEN generator has (encoder input conv, mapping network), whatever the wrapper prefix.
_GPEN_NAMES = (re.compile(r"(^|\.)ecd0\.0\.0\.weight$"), re.compile(r"(^|\.)generator\.style\.1\.weight$"))
_GPEN_BYTES = (b"ecd0.0.0.weight", b"generator.style.1.weight")


def tensor_names(path: str | os.PathLike) -> list[str]:
    """Names found in a model file's index, read without loading tensors: the keys of a ``.safetensors`` header;
    every string of a torch file's pickle (keys, plus a few type names); [] for other files (ONNX, junk, empty).

    Raises OSError when the file cannot be read.
    """
    with open(path, "rb") as f:
        head = f.read(16)
        if head.startswith(b"PK\x03\x04"):
            return _zip_pickle_strings(f)
        if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
            f.seek(0)
            return _pickle_strings(f.read(_SCAN_BYTES), pickles=5)
        if len(head) >= 9 and head[8:9] == b"{":
            (length,) = struct.unpack("<Q", head[:8])
            if length > _PICKLE_LIMIT:
                return []
            f.seek(8)
            try:
                header = json.loads(f.read(length))
            except ValueError:
                return []
            return [k for k in header if k != "__metadata__"] if isinstance(header, dict) else []
    return []


def _zip_pickle_strings(f) -> list[str]:
    """Strings of the ``*/data.pkl`` record of a torch zip file (zipfile reads only the directory and it)."""
    try:
        with zipfile.ZipFile(f) as archive:
            entry = next((i for i in archive.infolist() if i.filename.endswith("/data.pkl")), None)
            if entry is None or entry.file_size > _PICKLE_LIMIT:
                return []
            return _pickle_strings(archive.read(entry), pickles=1)
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError):
        return []


def _pickle_strings(data: bytes, pickles: int) -> list[str]:
    """Unicode strings pushed by the first ``pickles`` pickles in ``data``, read as opcodes (nothing runs);
    what precedes damage or the end of ``data`` is kept."""
    strings: list[str] = []
    stream = io.BytesIO(data)
    try:
        for _ in range(pickles):
            for opcode, arg, _ in pickletools.genops(stream):
                if isinstance(arg, str) and "UNICODE" in opcode.name:
                    strings.append(arg)
    except (ValueError, EOFError, struct.error, UnicodeDecodeError):
        pass
    return strings


def _has_gpen_names(path: Path) -> bool:
    if path.suffix.lower() == ".onnx":
        with open(path, "rb") as f:
            head = f.read(_SCAN_BYTES)
        return all(name in head for name in _GPEN_BYTES)
    names = tensor_names(path)
    return all(any(pattern.search(n) for n in names) for pattern in _GPEN_NAMES)


@functools.lru_cache(maxsize=1024)
def _is_gpen_file(path: Path, size: int, mtime_ns: int) -> bool:
    try:
        return _has_gpen_names(path)
    except OSError:
        return False


def is_gpen_model(path: str | os.PathLike) -> bool:
    """Whether to offer ``path`` in a list of GPEN models: a file ending in one of MODEL_SUFFIXES whose name
    contains "gpen" (any case; a damaged one is offered too, so that loading it says what is wrong), or whose
    tensor names are a GPEN generator's (ModelScope's ``pytorch_model.pt``, renamed files). GFPGAN, CodeFormer,
    detection or parsing weights, empty and unreadable files are not offered. The content check reads a few
    kB and is cached per (path, size, modification time), so calling it for every file at every refresh is cheap.
    """
    path = Path(path)
    if path.suffix.lower() not in MODEL_SUFFIXES:
        return False
    if "gpen" in path.name.lower():
        return True
    try:
        stat = path.stat()
    except OSError:
        return False
    if not path.is_file() or stat.st_size == 0:
        return False
    return _is_gpen_file(path.absolute(), stat.st_size, stat.st_mtime_ns)
