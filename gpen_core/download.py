"""Download of the official GPEN-BFR checkpoints: progress bar, resume, verification, atomic rename.

Nothing here runs unless the user asks (`python -m gpen_core download SIZE`, `restore --download`).
A download goes to `<dir>/GPEN-BFR-<size>.pth.<source id>.part`; an interrupted one resumes from there
with an HTTP Range request. Only when the whole file loads as a GPEN model of the requested size is it
renamed to `<dir>/GPEN-BFR-<size>.pth`; a file that does not load is deleted and the next source tried.

Sources (taken from the public references named beside them; not reachable from the test machines):
- 256, 512 and the upscalers realesrnet_x1/x2/x4: the authors' own links in the yangxy/GPEN README (Alibaba OSS
  bucket public-vigen-video).
- 1024, 2048: the authors published them on ModelScope (README news of 2023-02-15, model
  damo/cv_gpen_image-portrait-enhancement-hires: pytorch_model.pt is the 1024 model,
  pytorch_model-2048.pt the 2048 one). Fallbacks: for 1024 the mirror used by OpenTalker/video-retalking,
  for 2048 the OSS address it had in 2022 before the authors withdrew it there.
`GPEN_DOWNLOAD_BASE_URL` (or `base_url=`) replaces all of them with `<base>/GPEN-BFR-<size>.pth`
(`<base>/realesrnet_x2.pth` for an upscaler).

A transfer is bounded: it stops at `MAX_BYTES[size]` (the official files are 76 MB for 256 and about 285 MB
for the others, so a stream that goes on past that is not the checkpoint), a larger announced
Content-Length is refused before any byte is stored, and a web page (text/html, JSON) or a body that does
not start like a checkpoint (zip, pickle or safetensors) is refused after its first bytes. Those refusals
delete what arrived; a dropped connection keeps it for the next run to resume. Upscalers: `UPSCALER_MAX_BYTES`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path

from tqdm import tqdm

from . import model_paths
from .errors import CheckpointError, GPENError, ModelNotFoundError
from .files import OutputError, check_writable_folder

_OSS = "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/"
_MODELSCOPE = ("https://www.modelscope.cn/api/v1/models/damo/cv_gpen_image-portrait-enhancement-hires/"
               "repo?Revision=master&FilePath=")

SOURCES: dict[int, tuple[str, ...]] = {
    256: (_OSS + "GPEN-BFR-256.pth",),
    512: (_OSS + "GPEN-BFR-512.pth",),
    1024: (_MODELSCOPE + "pytorch_model.pt",
           "https://carimage-1253226081.cos.ap-beijing.myqcloud.com/gpen/GPEN-BFR-1024.pth"),
    2048: (_MODELSCOPE + "pytorch_model-2048.pt", _OSS + "GPEN-BFR-2048.pth"),
}
#: Most bytes a download of each size may bring: the official file (256: ~76 MB; 512, 1024, 2048: ~285 MB)
#: plus a generous margin for repackaged copies.
MAX_BYTES: dict[int, int] = {256: 120_000_000, 512: 400_000_000, 1024: 400_000_000, 2048: 400_000_000}
#: The same for the official upscalers (RRDBNet with 32 features: about 17-67 MB).
UPSCALER_MAX_BYTES = 120_000_000
UPSCALER_SOURCES: dict[str, tuple[str, ...]] = {name: (f"{_OSS}{name}.pth",)
                                                for name in ("realesrnet_x1", "realesrnet_x2", "realesrnet_x4")}
BASE_URL_ENV = "GPEN_DOWNLOAD_BASE_URL"
_CHUNK = 1 << 20
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/xhtml")


class DownloadError(GPENError, OSError):
    """A checkpoint could not be fetched (network, HTTP status, or no source gave a valid file)."""


def default_download_dir() -> Path:
    """Folder downloads go to, one that `model_paths.default_model_dirs()` searches: the first folder of
    $GPEN_MODELS_DIR if set, else $XDG_CACHE_HOME/gpen_core (default ~/.cache/gpen_core)."""
    env = model_paths.env_dirs(model_paths.MODELS_ENV)
    return env[0] if env else model_paths.cache_dir()


def checkpoint_filename(size: int) -> str:
    """Name a downloaded checkpoint is stored under, e.g. GPEN-BFR-512.pth."""
    return f"GPEN-BFR-{size}.pth"


def download_command(size: int, target_dir: str | os.PathLike | None = None, *, python: str | None = None,
                     workdir: str | os.PathLike | None = None, windows: bool | None = None) -> str:
    """A shell command that downloads GPEN-BFR-``size`` into ``target_dir``, working from any current folder.

    python: the interpreter (default ``sys.executable``, the host's own); workdir: the folder holding the
    ``gpen_core`` package (default: where this one is), which a host's own folder does not put on the path.
    POSIX: ``cd "WORKDIR" && "PYTHON" -m gpen_core download SIZE --dir "TARGET"``. Windows (``windows``, default
    ``os.name == "nt"``): a Command Prompt line that puts WORKDIR on ``sys.path`` itself, because the embedded
    Python of ComfyUI's portable build ignores the current folder (its ``._pth`` file fixes ``sys.path``).
    Paths are made absolute and quoted. target_dir None: no ``--dir`` (``default_download_dir()`` is used).
    """
    windows = os.name == "nt" if windows is None else windows
    python = python or sys.executable
    workdir = os.path.abspath(workdir if workdir is not None else Path(__file__).resolve().parent.parent)
    args = f" download {size}"
    if target_dir is not None:
        args += " --dir " + (_cmd_word if windows else _posix_word)(os.path.abspath(target_dir))
    if windows:
        script = f"import runpy, sys; sys.path.insert(0, {workdir!r}); runpy.run_module('gpen_core', run_name='__main__')"
        return f'{_cmd_word(python)} -c "{script}"{args}'
    return f"cd {_posix_word(workdir)} && {_posix_word(python)} -m gpen_core{args}"


def missing_model_message(folders: Sequence[str | os.PathLike], target: str | os.PathLike | None = None, *,
                          size: int = 512, python: str | None = None,
                          workdir: str | os.PathLike | None = None) -> str:
    """The text every front end shows when no GPEN checkpoint is found: where to put one, how to download one.

    folders: where checkpoints are looked for, in order. target: the folder the download command writes to.
    With a target (a host's model folder), the command is ``download_command(size, target, python=python,
    workdir=workdir)``, which works from wherever the user stands; without one (the command line, whose user
    already runs ``python -m gpen_core``) it is the short ``python -m gpen_core download SIZE``, saving to
    ``default_download_dir()``. Several lines, no trailing newline; front ends add their own context (what
    happens meanwhile, where to pick the model).
    """
    if len(folders) == 1:
        where = f" in {Path(folders[0])}"
    else:
        where = " in one of these folders:" + "".join(f"\n  {Path(f)}" for f in folders)
    if target is None:
        command = f"{python or 'python'} -m gpen_core download {size}"
        into = default_download_dir()
    else:
        command = download_command(size, target, python=python, workdir=workdir)
        into = Path(os.path.abspath(target))
    return (f"Put a GPEN checkpoint (.pth or .safetensors, e.g. {checkpoint_filename(size)}){where}\n"
            f"or download the official one into {into} with:\n  {command}\n"
            f"(sizes: {', '.join(map(str, SOURCES))})")


def _posix_word(text: str | os.PathLike) -> str:
    """``text`` as one POSIX shell word, in double quotes (characters special inside them escaped)."""
    return '"' + re.sub(r'([\\"$`])', r"\\\1", str(text)) + '"'


def _cmd_word(text: str | os.PathLike) -> str:
    """``text`` as one Command Prompt word (Windows paths cannot contain a double quote)."""
    return f'"{text}"'


def checkpoint_urls(size: int, base_url: str | None = None) -> list[str]:
    """Candidate URLs for the official checkpoint of `size` px, in the order they are tried."""
    if size not in SOURCES:
        raise ModelNotFoundError(f"there is no official GPEN-BFR-{size}; choose one of "
                                 f"{', '.join(map(str, SOURCES))}")
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    if base_url:
        parts = urllib.parse.urlparse(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DownloadError(f"base URL '{base_url}' is not an http:// or https:// address; "
                                f"give one like https://example.com/models (--base-url or ${BASE_URL_ENV})")
        return [f"{base_url.rstrip('/')}/{checkpoint_filename(size)}"]
    return list(SOURCES[size])


def download_checkpoint(size: int, dest_dir: str | os.PathLike | None = None, *,
                        base_url: str | None = None, force: bool = False, progress: bool = True,
                        verify: Callable[[Path, int], None] | None = None,
                        timeout: float = 60.0) -> Path:
    """Fetch GPEN-BFR-`size` into `dest_dir` (default `default_download_dir()`); return its path.

    An existing final file is returned as is unless `force`. `verify(path, size)` must raise for a
    file that is not the wanted model (default: `verify_checkpoint`). Raises DownloadError when no
    source gives a valid file; a partial download is kept for the next attempt to resume.
    """
    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else default_download_dir()
    final = dest_dir / checkpoint_filename(size)
    if final.is_file() and not force:
        return final
    verify = verify or verify_checkpoint
    return _download_first_valid(final, checkpoint_urls(size, base_url), lambda part: verify(part, size),
                                 progress=progress, timeout=timeout, max_bytes=MAX_BYTES.get(size))


def download_upscaler(name: str, dest_dir: str | os.PathLike | None = None, *, base_url: str | None = None,
                      force: bool = False, progress: bool = True, timeout: float = 60.0) -> Path:
    """Fetch the official upscaler `name` (realesrnet_x1/x2/x4) into `dest_dir` as `<name>.pth`, like
    `download_checkpoint`: resumable, kept only if it loads as an upscaler of its scale (needs spandrel)."""
    from .upscale import verify_upscaler  # spandrel is only needed once a file has arrived

    if name not in UPSCALER_SOURCES:
        raise ModelNotFoundError(f"there is no official upscaler '{name}'; choose one of "
                                 f"{', '.join(UPSCALER_SOURCES)}")
    dest_dir = Path(dest_dir).expanduser() if dest_dir is not None else default_download_dir()
    final = dest_dir / f"{name}.pth"
    if final.is_file() and not force:
        return final
    base_url = base_url or os.environ.get(BASE_URL_ENV)
    urls = [f"{base_url.rstrip('/')}/{final.name}"] if base_url else list(UPSCALER_SOURCES[name])
    scale = int(name.rsplit("_x", 1)[1])
    return _download_first_valid(final, urls, lambda part: verify_upscaler(part, scale),
                                 progress=progress, timeout=timeout, max_bytes=UPSCALER_MAX_BYTES)


def _download_first_valid(final: Path, urls: Sequence[str], verify: Callable[[Path], None], *,
                          progress: bool, timeout: float, max_bytes: int | None) -> Path:
    """Try `urls` in order until one gives a file `verify` accepts (at most `max_bytes` each); rename it to
    `final` and return it."""
    dest_dir = final.parent
    try:
        check_writable_folder(dest_dir, "download folder")
    except OutputError as exc:
        raise DownloadError(f"{exc} (--dir)") from exc
    failures = []
    for url in urls:
        part = part_path(final, url)
        try:
            fetch(url, part, progress=progress, timeout=timeout, max_bytes=max_bytes)
        except DownloadError as exc:
            failures.append(f"{url}: {exc}")
            continue
        try:
            verify(part)
        except Exception as exc:  # whatever the loader raises, the file is unusable
            part.unlink(missing_ok=True)
            failures.append(f"{url}: the downloaded file was rejected and deleted: {exc}")
            continue
        os.replace(part, final)
        for stale in final.parent.glob(f"{final.name}.*.part"):
            stale.unlink(missing_ok=True)
        return final
    again = ("Run the command again to resume" if any(dest_dir.glob(f"{final.name}.*.part"))
             else "Check the address or try again later")
    raise DownloadError(
        f"could not download {final.stem}:\n  " + "\n  ".join(failures)
        + f"\n{again}, or fetch the file by hand and save it as {final}")


def fetch(url: str, part: Path, *, progress: bool = True, timeout: float = 60.0,
          max_bytes: int | None = None) -> None:
    """Download `url` into `part`, resuming from the bytes already in it (HTTP Range).

    Falls back to a full download when the server ignores Range. `max_bytes`: the most the whole file may
    hold. Raises DownloadError on HTTP and network errors and on a short transfer (what arrived stays in
    `part`, and the message says so only when it is there), and on a body that cannot be a checkpoint: a web
    page, a wrong start, more than `max_bytes` (then `part` is deleted).
    """
    have = part.stat().st_size if part.exists() else 0
    if have and not _looks_like_checkpoint(_head(part)):
        part.unlink()
        have = 0
    headers = {"User-Agent": "gpen_core"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the part file is already whole
            return
        raise DownloadError(f"HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
        raise DownloadError(f"cannot connect ({getattr(exc, 'reason', exc)})") from exc
    with response:
        resumed = have and response.status == 206 and _range_start(response) == have
        have = have if resumed else 0
        content_type = response.headers.get("Content-Type", "").lower()
        if content_type.startswith(_TEXT_TYPES):
            raise DownloadError(f"the server sent a web page or text ({content_type.split(';')[0]}), not a "
                                f"checkpoint: the address is wrong, or the site wants a login or a browser")
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None and length.isdigit() else None
        if total is not None and max_bytes is not None and total > max_bytes:
            raise DownloadError(f"the server announces {total / 1e6:.0f} MB, more than the {max_bytes / 1e6:.0f} MB "
                                f"a GPEN checkpoint can be; not downloaded")
        try:
            _receive(response, part, resumed, have, total, max_bytes, progress)
        except DownloadError:
            raise
        except (OSError, http.client.HTTPException) as exc:
            raise DownloadError(f"transfer interrupted ({exc}){_kept(part)}") from exc
    got = part.stat().st_size
    if total is not None and got != total:
        raise DownloadError(f"transfer ended early: {got} of {total} bytes{_kept(part)}")


def _receive(response, part: Path, resumed: bool, have: int, total: int | None, max_bytes: int | None,
             progress: bool) -> None:
    """Append (or write) the body to `part`, refusing a wrong start or more than `max_bytes`."""
    checked = bool(resumed)
    with open(part, "ab" if resumed else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.split(".pth")[0], disable=not progress) as bar:
        got = have
        while chunk := response.read(_CHUNK):
            if not checked:
                checked = True
                if not _looks_like_checkpoint(chunk):
                    f.close()
                    part.unlink(missing_ok=True)
                    raise DownloadError(f"the file does not start like a checkpoint (zip, pickle or safetensors) but "
                                   f"with {chunk[:16]!r}; nothing kept")
            got += len(chunk)
            if max_bytes is not None and got > max_bytes:
                f.close()
                part.unlink(missing_ok=True)
                raise DownloadError(f"the server sent more than {max_bytes / 1e6:.0f} MB, more than a GPEN checkpoint "
                               f"can be; stopped and deleted")
            f.write(chunk)
            bar.update(len(chunk))
        f.flush()
        os.fsync(f.fileno())


def _kept(part: Path) -> str:
    """The 'partial file kept' clause, true to what is on disk (an empty part is removed, not kept)."""
    try:
        size = part.stat().st_size
    except OSError:
        return "; nothing kept"
    if size == 0:
        part.unlink(missing_ok=True)
        return "; nothing kept"
    return f"; partial file kept in {part} ({size} bytes), the next run resumes from it"


def _head(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(16)


def _looks_like_checkpoint(head: bytes) -> bool:
    """zip (torch >= 1.6), pickle protocol 2+ (older torch.save), or safetensors (u64 header size, then '{')."""
    return head.startswith(b"PK\x03\x04") or head[:1] == b"\x80" or (len(head) > 8 and head[8:9] == b"{")


def verify_checkpoint(path: Path, size: int) -> None:
    """Raise CheckpointError unless `path` loads (on CPU) as a GPEN model of `size` px."""
    from .checkpoint import load_model  # the network is only needed once a file has arrived

    model = load_model(path, device="cpu")
    if model.size != size:
        raise CheckpointError(f"{path.name} is a {model.size} px GPEN model, not {size} px")


def part_path(final: Path, url: str) -> Path:
    """Where the partial download of `url` for `final` is kept: one per source, so bytes of two
    mirrors are never mixed."""
    return final.with_name(f"{final.name}.{hashlib.sha1(url.encode()).hexdigest()[:8]}.part")


def _range_start(response) -> int | None:
    match = re.match(r"bytes (\d+)-", response.headers.get("Content-Range", ""))
    return int(match.group(1)) if match else None


def with_download_command(message: str, target_dir: str | os.PathLike, **command_options) -> str:
    """``message`` (a gpen_core error text) with its generic download advice, which assumes a shell where
    ``python -m gpen_core`` works, replaced by ``download_command(512, target_dir, **command_options)``: what a
    host shows, since its users stand elsewhere and its loader searches its own folder. Other text is unchanged."""
    from .checkpoint import DOWNLOAD_HINT

    command = download_command(512, target_dir, **command_options)
    return message.replace(DOWNLOAD_HINT, f"download an official one (or 256/1024/2048) into "
                                          f"{os.path.abspath(target_dir)} with: {command}")
