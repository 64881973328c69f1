"""What a batch run restores: files, folders and glob patterns turned into a list of inputs, each with its
kind, plus the files that were passed over and why.

`classify_input` decides the kind of a file from its extension; `INPUT_KINDS` is the table it reads, so a
new kind of input (e.g. video) is one entry per extension plus a handler in the batch runner.
Files found in folders or by patterns are skipped, and listed with the reason, when their extension is not
handled, when they are temp files of an interrupted run, or when gpen_core wrote them (an earlier result in
the same folder: restoring it again would stack `photo_1_1.png` onto `photo_1.png`). A file named on
its own is always taken as it is.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import GPENError
from .files import is_temp_file, unreadable_reason
from .imageio import IMAGE_EXTENSIONS, written_by_gpen_core
from .video import VIDEO_EXTENSIONS

IMAGE, VIDEO = "image", "video"
#: Lower-case extension -> kind of input.
INPUT_KINDS: dict[str, str] = {**dict.fromkeys(IMAGE_EXTENSIONS, IMAGE), **dict.fromkeys(VIDEO_EXTENSIONS, VIDEO)}


class InputError(GPENError, ValueError):
    """An input given on the command line that does not exist or holds nothing to restore."""


@dataclass(frozen=True)
class InputItem:
    """One file to restore: its path as found and its kind (a key of the handlers, e.g. "image")."""
    path: Path
    kind: str


@dataclass
class InputList:
    """The inputs in order (de-duplicated) and the files passed over, as (path, reason) pairs."""
    items: list[InputItem] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def paths(self) -> list[Path]:
        return [item.path for item in self.items]


def classify_input(path: Path) -> str | None:
    """The kind of input `path` is by its extension ("image", "video"), or None when it is not handled."""
    return INPUT_KINDS.get(Path(path).suffix.lower())


def collect_inputs(specs: Sequence[str], *, recursive: bool = False) -> InputList:
    """Expand files, folders and glob patterns (in order, duplicates dropped) into an InputList.

    A named file is taken whatever its extension (kind "image" unless its extension says otherwise).
    Raises InputError for a spec that matches nothing, or folders/patterns with no usable file.
    """
    result = InputList()
    seen: set[Path] = set()
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_dir():
            candidates = sorted(path.rglob("*") if recursive else path.iterdir())
        elif glob.has_magic(spec):
            candidates = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True))
        elif path.is_file():
            _add(result, seen, InputItem(path, classify_input(path) or IMAGE))
            continue
        else:
            reason = unreadable_reason(path)
            raise InputError(f"{spec}: {'no such file or folder' if reason == 'does not exist' else reason}")
        found, skipped = 0, []
        for candidate in candidates:
            if candidate.is_dir():
                continue
            reason = _skip_reason(candidate)
            if reason:
                skipped.append((candidate, reason))
            else:
                found += _add(result, seen, InputItem(candidate, classify_input(candidate)))
        result.skipped.extend(skipped)
        if not found:
            listing = "".join(f"\n  skipped {p}: {why}" for p, why in skipped[:10])
            raise InputError(f"{spec}: nothing to restore (looked for {', '.join(sorted(INPUT_KINDS))})"
                             + listing + ("\n  ..." if len(skipped) > 10 else ""))
    return result


def load_landmarks(path: Path) -> dict[str, np.ndarray]:
    """Read a landmarks file: JSON object image name -> N x 5 x 2 (x, y) points in upright-image pixels.

    Keys may be the path as given on the command line, the file name or its stem. A single face may
    be given as 5 x 2; an empty list means "no faces" (the image is copied unchanged).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read the landmarks file ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object mapping image names to N x 5 x 2 points")
    table = {}
    for name, value in data.items():
        try:
            points = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise InputError(f"{path}: landmarks of '{name}' are not a list of numbers ({exc})") from exc
        if points.size == 0:
            points = points.reshape(0, 5, 2)
        elif points.shape == (5, 2):
            points = points[None]
        if points.ndim != 3 or points.shape[1:] != (5, 2):
            raise InputError(f"{path}: landmarks of '{name}' must be N x 5 x 2 (x, y) points "
                             f"(eyes, nose, mouth corners), got shape {points.shape}")
        table[name] = points
    return table


def _skip_reason(path: Path) -> str | None:
    if is_temp_file(path):
        return "temp file of an interrupted gpen_core run"
    if classify_input(path) is None:
        return f"'{path.suffix or 'no extension'}' is not a supported input type"
    if not path.is_file():
        return unreadable_reason(path) or "not a regular file"
    if written_by_gpen_core(path):
        return "written by gpen_core (an earlier result); name the file itself to restore it again"
    return None


def _add(result: InputList, seen: set[Path], item: InputItem) -> int:
    key = item.path.resolve()
    if key in seen:
        return 0
    seen.add(key)
    result.items.append(item)
    return 1

