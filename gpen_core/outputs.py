"""Where a run's results go: output names, the overwrite policy, and what must never be replaced.

Policy (what a careful user expects from a batch tool):
- an input is never replaced, even with `--overwrite`;
- two results of one run never share a name: the later one gets `_1`, `_2`, ...;
- a file already in the output folder that this run did not write is kept: the result gets the first free
  name (`photo_1.png`) and a note says so; with `overwrite=True` it is replaced (keeping its file mode)
  and a note says that too;
- the report file is reserved up front, so no result lands on it and it lands on no result.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from .errors import GPENError
from .imageio import output_path


class OutputNameError(GPENError, ValueError):
    """An output name option (suffix, report path) that would write somewhere it must not."""


def check_suffix(suffix: str) -> str:
    """`suffix` if it is safe to append to a file name: no path separator, no `..`, no NUL."""
    bad = [c for c in ("/", "\\", os.sep, os.altsep) if c and c in suffix]
    if bad or ".." in suffix or "\0" in suffix:
        raise OutputNameError(f"--suffix {suffix!r}: a suffix is appended to file names and must not contain "
                              f"'/', '\\' or '..'; use something like _restored")
    return suffix


class OutputPlanner:
    """Hands out output paths in `folder` following the module's policy.

    protect: the run's input files (never replaced). overwrite: replace existing files not written by this
    run. note(message): called for every file that gets a new name or is replaced.
    """

    def __init__(self, folder: Path, protect: Iterable[Path] = (), *, overwrite: bool = False,
                 note: Callable[[str], None] = lambda message: None):
        self.folder = Path(folder)
        self.overwrite = overwrite
        self.note = note
        self._inputs = {_key(p) for p in protect}
        self._taken: set[str] = set()

    def reserve(self, path: Path) -> None:
        """Keep `path` (e.g. the report) out of the names handed out."""
        self._taken.add(_key(path))

    def is_taken(self, path: Path) -> bool:
        """True when `path` is an input, reserved, or already handed out."""
        key = _key(path)
        return key in self._inputs or key in self._taken

    def result_path(self, source: Path, *, ext: str | None = None, suffix: str = "") -> Path:
        """The output path for input `source` (see `imageio.output_path` for the name)."""
        return self.claim(output_path(source, self.folder, ext=ext, suffix=suffix))

    def claim(self, wanted: Path) -> Path:
        """`wanted`, or the first free `<stem>_N<ext>` beside it; the path is then taken."""
        wanted = Path(wanted)
        candidate, n = wanted, 0
        while self._refused(candidate):
            n += 1
            candidate = wanted.with_name(f"{wanted.stem}_{n}{wanted.suffix}")
        if candidate != wanted and _exists(wanted) and not self.is_taken(wanted):
            self.note(f"{wanted} already exists; writing {candidate.name} instead (--overwrite replaces it)")
        elif _exists(candidate) and self.overwrite:
            self.note(f"replacing the existing {candidate} (--overwrite)")
        self._taken.add(_key(candidate))
        return candidate

    def _refused(self, path: Path) -> bool:
        if self.is_taken(path):
            return True
        return _exists(path) and not self.overwrite


def _exists(path: Path) -> bool:
    return os.path.lexists(path)


def _key(path: Path) -> str:
    return os.path.normcase(str(Path(path).resolve()))
