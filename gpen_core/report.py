"""The JSON report of a batch run (`restore --report`): what was restored, what failed, what was left.

Top-level keys: generator ("gpen_core"), model {path, size}, device, dtype, options, n_images, n_faces,
n_failed, interrupted, unprocessed (inputs not done when the run was stopped), skipped ([{input, reason}]
for files passed over in folders), images, failed. Boxes and landmarks are image pixels (x, y).
A video's record has kind "video" and a `frames` list: per frame its index, time (s), scene_cut and faces,
each with its track id, box, the 5 landmarks used to align and paste, score and detected (False: bridged).
"""

from __future__ import annotations

import json
from pathlib import Path

from .batch import BatchResult
from .files import write_atomic

GENERATOR = "gpen_core"


def build_report(model, model_path: Path, options: dict, result: BatchResult,
                 skipped: list[tuple[Path, str]]) -> dict:
    """The report as a JSON-ready dict (see the module docstring)."""
    return {
        "generator": GENERATOR,
        "model": {"path": str(model_path), "size": model.size},
        "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
        "options": options,
        "n_images": len(result.images), "n_faces": result.n_faces, "n_failed": len(result.failures),
        "interrupted": result.interrupted, "unprocessed": result.unprocessed,
        "skipped": [{"input": str(path), "reason": reason} for path, reason in skipped],
        "images": result.images, "failed": result.failures,
    }


def write_report(path: Path, report: dict) -> Path:
    """Write `report` as indented JSON (temp file + rename); OutputError when it cannot be written."""
    return write_atomic(path, (json.dumps(report, indent=2) + "\n").encode("utf-8"))


def is_report(path: Path) -> bool:
    """True when `path` holds a report this tool wrote (so writing a new one over it loses nothing new)."""
    try:
        with open(path, "rb") as f:
            data = json.loads(f.read(64 << 20))
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and (data.get("generator") == GENERATOR or {"images", "failed"} <= data.keys())
