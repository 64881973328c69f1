"""Writing files safely: temp file + rename with the mode a plain write gives, recognisable temp names,
clean-up of temp files left by a killed run, and up-front checks that a folder or file can be written.

A temp file is named `.gpen_core-<pid>-<random>.tmp` beside its target. It is created with mode
0666 & ~umask (what `open(path, "w")` gives a new file), so the renamed result looks like a plain write;
a file that replaces an existing one keeps that file's mode.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from pathlib import Path

from .errors import GPENError

TEMP_PREFIX = ".gpen_core-"
_TEMP_NAME = re.compile(r"^\.gpen_core-(\d+)-[0-9a-f]+\.tmp$")


class OutputError(GPENError, OSError):
    """An output folder or file cannot be written (read-only, missing permission, a file in the way)."""


def is_temp_file(path: Path) -> bool:
    """True for a temp file name this module makes (`.gpen_core-<pid>-<hex>.tmp`)."""
    return _TEMP_NAME.match(Path(path).name) is not None


def write_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder and a rename.

    A failed or interrupted write (also KeyboardInterrupt / SIGTERM turned into one) removes the temp file
    and leaves `path` as it was. The folder is created if needed. Raises OutputError with the reason.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the folder {path.parent} ({exc.strerror or exc})") from exc
    old_mode = _existing_mode(path)
    tmp = path.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as exc:
        raise OutputError(f"cannot write in {path.parent} ({exc.strerror or exc}); "
                          f"choose a folder you can write to") from exc
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if old_mode is not None:
            os.chmod(tmp, old_mode)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and not isinstance(exc, GPENError):
            raise OutputError(f"cannot write {path} ({exc.strerror or exc})") from exc
        raise
    return path


def check_writable_folder(folder: Path, what: str = "output folder") -> None:
    """Create `folder` if needed and make sure files can be created in it; OutputError saying why not."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{what} {folder} is a file, not a folder; choose another path")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create the {what} {folder} ({exc.strerror or exc}); "
                          f"choose a folder you can write to") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise OutputError(f"the {what} {folder} is not writable; choose another folder or fix its permissions")
    probe = folder / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    try:
        os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"the {what} {folder} is not writable ({exc.strerror or exc}); "
                          f"choose another folder or fix its permissions") from exc


def check_writable_file(path: Path, what: str) -> None:
    """Make sure `path` can be written (its folder created and writable, an existing file writable)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path} is a folder; give a file name")
    check_writable_folder(path.parent, f"folder of the {what}")
    if path.exists() and not os.access(path, os.W_OK):
        raise OutputError(f"{what} {path} exists and is not writable; choose another file")


def remove_stale_temp_files(folder: Path, started: float) -> list[Path]:
    """Delete temp files of this module in `folder` (not recursive) left by runs that no longer exist:
    older than `started` (a time.time() stamp) and made by a process that is not running. Returns them."""
    removed = []
    with contextlib.suppress(OSError):
        for entry in os.scandir(folder):
            match = _TEMP_NAME.match(entry.name)
            if not match or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(OSError):
                mtime = entry.stat().st_mtime
                if mtime < started and not _process_alive(int(match.group(1)), mtime, started):
                    os.unlink(entry.path)
                    removed.append(Path(entry.path))
    return removed


def unreadable_reason(path: Path) -> str | None:
    """Why `path` cannot be read as a file, or None when it can: a folder, a symlink loop, a broken link,
    missing, or the OS error text (e.g. permission denied)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symlink loop (a link that leads back to itself), not a file"
        if path.is_symlink():
            return f"is a broken symbolic link (to {os.readlink(path)})"
        return "does not exist"
    if stat.S_ISDIR(info.st_mode):
        return "is a folder, not a file"
    if not stat.S_ISREG(info.st_mode):
        return "is not a regular file"
    try:
        with open(path, "rb") as f:
            f.read(1)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    return None


def _existing_mode(path: Path) -> int | None:
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return None


def _process_alive(pid: int, mtime: float, started: float) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":  # os.kill(pid, 0) would send CTRL_C_EVENT there; a temp file lives seconds
        return mtime > started - 60
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # exists but belongs to someone else, or the platform cannot tell
        return True
    return True
