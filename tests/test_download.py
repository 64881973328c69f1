"""gpen_core.download and `python -m gpen_core download`, against an HTTP server on 127.0.0.1."""

import contextlib
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from gpen_core import cli, download
from gpen_core.download import DownloadError, checkpoint_urls, download_checkpoint, part_path
from gpen_core.errors import ModelNotFoundError
from gpen_core.model_paths import default_model_dirs
from gpen_core.upscale import realesrnet_state_dict as upscale_layout

TINY = Path(__file__).parent / "data" / "tiny-256.safetensors"


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`; honours `Range: bytes=N-` unless `server.honour_range` is False and
    cuts the body after `server.cut_after` bytes once (a dropped connection)."""

    def do_GET(self):
        server = self.server
        server.requests.append((self.path, self.headers.get("Range")))
        if server.endless:  # no Content-Length, a body that never ends
            self.send_response(200)
            self.end_headers()
            chunk = server.endless
            with contextlib.suppress(OSError):
                while True:
                    self.wfile.write(chunk)
            return
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start = 0
        wanted = re.match(r"bytes=(\d+)-$", self.headers.get("Range") or "")
        if wanted and server.honour_range:
            start = int(wanted.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        if server.content_type:
            self.send_header("Content-Type", server.content_type)
        self.send_header("Content-Length", str(server.claimed_length or len(payload)))
        self.end_headers()
        if server.cut_after is not None:
            payload, server.cut_after = payload[: server.cut_after], None
        with contextlib.suppress(OSError):  # a client that refuses the body hangs up early
            self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def official_bytes(tmp_path_factory) -> bytes:
    """The tiny fixture saved the way official GPEN checkpoints are: a plain torch state dict."""
    state = {k.removeprefix("state_dict."): v for k, v in load_file(TINY).items() if k.startswith("state_dict.")}
    path = tmp_path_factory.mktemp("ckpt") / "GPEN-BFR-256.pth"
    torch.save(state, path)
    return path.read_bytes()


@pytest.fixture
def server(official_bytes):
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files = {"/GPEN-BFR-256.pth": official_bytes}
    httpd.requests, httpd.honour_range, httpd.cut_after = [], True, None
    httpd.endless, httpd.content_type, httpd.claimed_length = None, None, None
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def test_complete_download_is_verified_and_renamed(tmp_path, server, official_bytes):
    path = download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert path == tmp_path / "GPEN-BFR-256.pth"
    assert path.read_bytes() == official_bytes
    assert _files(tmp_path) == ["GPEN-BFR-256.pth"]
    assert server.requests == [("/GPEN-BFR-256.pth", None)]
    # Present already: nothing is fetched again.
    assert download_checkpoint(256, tmp_path, base_url=server.url, progress=False) == path
    assert len(server.requests) == 1


def test_resume_from_partial_file_uses_range(tmp_path, server, official_bytes):
    url = f"{server.url}/GPEN-BFR-256.pth"
    half = len(official_bytes) // 2
    part_path(tmp_path / "GPEN-BFR-256.pth", url).write_bytes(official_bytes[:half])
    path = download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert server.requests == [("/GPEN-BFR-256.pth", f"bytes={half}-")]
    assert path.read_bytes() == official_bytes
    assert _files(tmp_path) == ["GPEN-BFR-256.pth"]


def test_dropped_connection_keeps_part_and_next_run_resumes(tmp_path, server, official_bytes):
    server.cut_after = 1_000_000
    with pytest.raises(DownloadError, match="run again|resume|kept"):
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert not (tmp_path / "GPEN-BFR-256.pth").exists()
    (part,) = tmp_path.glob("*.part")
    assert part.stat().st_size == 1_000_000
    path = download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert server.requests[-1] == ("/GPEN-BFR-256.pth", "bytes=1000000-")
    assert path.read_bytes() == official_bytes


def test_server_ignoring_range_restarts_cleanly(tmp_path, server, official_bytes):
    server.honour_range = False
    url = f"{server.url}/GPEN-BFR-256.pth"
    part_path(tmp_path / "GPEN-BFR-256.pth", url).write_bytes(b"x" * 1000)
    path = download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert path.read_bytes() == official_bytes


def test_bad_file_is_rejected_and_removed(tmp_path, server, official_bytes):
    server.files["/GPEN-BFR-256.pth"] = official_bytes[: len(official_bytes) // 2]  # truncated checkpoint
    with pytest.raises(DownloadError, match="rejected"):
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert _files(tmp_path) == []


def test_wrong_model_size_is_rejected(tmp_path, server, official_bytes):
    server.files["/GPEN-BFR-512.pth"] = official_bytes  # a 256 px model where 512 px is asked for
    with pytest.raises(DownloadError, match="256 px GPEN model, not 512"):
        download_checkpoint(512, tmp_path, base_url=server.url, progress=False)
    assert _files(tmp_path) == []


def test_http_error_leaves_nothing(tmp_path, server):
    with pytest.raises(DownloadError, match="404"):
        download_checkpoint(1024, tmp_path, base_url=server.url, progress=False)
    assert _files(tmp_path) == []


def test_official_sources_and_overrides(monkeypatch, tmp_path):
    monkeypatch.delenv(download.BASE_URL_ENV, raising=False)
    for size in (256, 512):
        assert checkpoint_urls(size) == [
            f"https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/GPEN-BFR-{size}.pth"]
    assert all(checkpoint_urls(size) for size in (1024, 2048))
    with pytest.raises(ModelNotFoundError, match="256, 512, 1024, 2048"):
        checkpoint_urls(300)
    monkeypatch.setenv(download.BASE_URL_ENV, "http://127.0.0.1:9/m/")
    assert checkpoint_urls(512) == ["http://127.0.0.1:9/m/GPEN-BFR-512.pth"]


@pytest.mark.parametrize("models_env", [None, "first", "first:second"])
def test_download_dir_is_searched_for_models(monkeypatch, tmp_path, models_env):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    if models_env:
        monkeypatch.setenv("GPEN_MODELS_DIR", os.pathsep.join(str(tmp_path / p) for p in models_env.split(":")))
    else:
        monkeypatch.delenv("GPEN_MODELS_DIR", raising=False)
    target = download.default_download_dir().absolute()
    assert target == default_model_dirs()[0] if models_env else target in default_model_dirs()


def test_download_command(tmp_path, server, capsys):
    args = ["download", "256", "--dir", str(tmp_path), "--base-url", server.url, "-q"]
    assert cli.main(args) == 0
    assert "saved" in capsys.readouterr().out
    assert cli.main(args) == 0
    assert "already exists" in capsys.readouterr().out
    assert len(server.requests) == 1
    assert cli.main(["download", "512", "--dir", str(tmp_path / "x"), "--base-url", server.url, "-q"]) == 1
    assert "error: could not download GPEN-BFR-512" in capsys.readouterr().err


def test_restore_download_flag_fetches_the_model_first(tmp_path, server, monkeypatch, capsys):
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv(download.BASE_URL_ENV, server.url)
    monkeypatch.chdir(tmp_path)
    image = tmp_path / "in.png"
    Image.open(Path(cli.__file__).parent / "samples" / "solvay_1927_crop.jpg").save(image)
    (tmp_path / "lm.json").write_text('{"in.png": []}')
    common = ["restore", str(image), "-o", str(tmp_path / "out"), "--landmarks", str(tmp_path / "lm.json"), "-q"]
    assert cli.main([*common, "--model", "256"]) == 1
    assert "python -m gpen_core download 256" in capsys.readouterr().err
    assert cli.main([*common, "--model", "256", "--download"]) == 0
    assert (tmp_path / "models" / "GPEN-BFR-256.pth").is_file()
    assert (tmp_path / "out" / "in.png").is_file()
    # Without --model, --download fetches GPEN-BFR-512; the 256 px file served under that name is refused.
    (tmp_path / "models" / "GPEN-BFR-256.pth").unlink()
    server.files["/GPEN-BFR-512.pth"] = server.files["/GPEN-BFR-256.pth"]
    assert cli.main([*common, "--download"]) == 1
    assert "256 px GPEN model, not 512" in capsys.readouterr().err
    assert _files(tmp_path / "models") == []


def test_missing_model_message_names_folders_and_the_download_command(tmp_path, monkeypatch):
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "default"))
    text = download.missing_model_message([tmp_path / "a", tmp_path / "b"], size=1024)
    assert f"\n  {tmp_path / 'a'}\n  {tmp_path / 'b'}\n" in text and "GPEN-BFR-1024.pth" in text
    assert "\n  python -m gpen_core download 1024\n" in text and str(tmp_path / "default") in text
    assert "256, 512, 1024, 2048" in text

    host = tmp_path / "my models"
    text = download.missing_model_message([host], host, python="/opt/py/bin/python", workdir=tmp_path / "ext")
    assert f"in {host}\n" in text and str(tmp_path / "default") not in text
    assert f'cd "{tmp_path / "ext"}" && "/opt/py/bin/python" -m gpen_core download 512 --dir "{host}"' in text


@pytest.mark.parametrize("windows", [False, True])
def test_download_command_works_from_any_folder(tmp_path, server, monkeypatch, windows):
    """The command a host shows runs as printed from an unrelated folder (where ``-m gpen_core`` alone fails)
    and saves into the host's folder; paths with spaces and shell characters survive."""
    target = tmp_path / "Comfy UI $HOME" / "models" / "facerestore_models"
    command = download.download_command(256, target, windows=windows)
    root = Path(download.__file__).resolve().parents[1]
    assert f'--dir "{target}' in command.replace("\\$", "$") and sys.executable in command
    assert command.startswith(f'"{sys.executable}" -c "import runpy' if windows else f'cd "{root}" && ')
    # The Command Prompt line is also valid POSIX shell (no $, ` or \ in these paths), so both forms are run here.
    if windows:
        target = tmp_path / "plain" / "facerestore_models"
        command = download.download_command(256, target, windows=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {**os.environ, "GPEN_DOWNLOAD_BASE_URL": server.url, "PYTHONPATH": ""}
    done = subprocess.run(["bash", "-c", command], cwd=elsewhere, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert _files(target) == ["GPEN-BFR-256.pth"]


def test_endless_stream_stops_at_the_size_cap(tmp_path, server, official_bytes, monkeypatch):
    monkeypatch.setitem(download.MAX_BYTES, 256, 3_000_000)
    server.endless = official_bytes[:1 << 16]  # starts like a checkpoint, then never ends
    with pytest.raises(DownloadError, match="more than 3 MB.*stopped and deleted"):
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert _files(tmp_path) == []


def test_announced_size_over_the_cap_is_refused_before_storing(tmp_path, server, monkeypatch):
    monkeypatch.setitem(download.MAX_BYTES, 256, 1_000_000)
    with pytest.raises(DownloadError, match=r"announces \d MB, more than the 1 MB.*\nCheck the address"):
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert _files(tmp_path) == []
    assert download.MAX_BYTES[512] >= 300_000_000  # the official 512 file (~285 MB) still fits


def test_web_page_is_refused_at_once(tmp_path, server, official_bytes):
    server.content_type = "text/html; charset=utf-8"
    with pytest.raises(DownloadError, match=r"web page or text \(text/html\)"):
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    server.content_type = None
    server.files["/GPEN-BFR-256.pth"] = b"<!DOCTYPE html><html>" + b" " * 5_000_000
    with pytest.raises(DownloadError, match="does not start like a checkpoint.*<!DOCTYPE"):
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert _files(tmp_path) == []


def test_partial_file_kept_only_when_it_is(tmp_path, server, official_bytes):
    server.claimed_length = len(official_bytes) + 10  # the body ends 10 bytes short of what was announced
    with pytest.raises(DownloadError) as info:
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    (part,) = tmp_path.glob("*.part")
    assert f"partial file kept in {part} ({len(official_bytes)} bytes)" in str(info.value)
    server.claimed_length, server.cut_after = None, 0  # headers, then the connection drops: nothing arrived
    part.unlink()
    with pytest.raises(DownloadError) as info:
        download_checkpoint(256, tmp_path, base_url=server.url, progress=False)
    assert "nothing kept" in str(info.value) and "partial file kept" not in str(info.value)
    assert _files(tmp_path) == []


def test_download_command_errors_are_one_line(tmp_path, server, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert cli.main(["download", "256", "--dir", str(blocker / "sub"), "--base-url", server.url, "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: cannot create the download folder {blocker / 'sub'}") and "--dir" in err
    assert err.count("\n") == 1
    with pytest.raises(SystemExit) as info:
        cli.main(["download", "256", "--dir", str(tmp_path), "--base-url", "notaurl"])
    assert info.value.code == 2
    assert "expected an http:// or https:// address" in capsys.readouterr().err
    with pytest.raises(DownloadError, match="not an http:// or https:// address"):
        download_checkpoint(256, tmp_path, base_url="notaurl", progress=False)


def test_a_host_replaces_the_generic_download_advice(tmp_path):
    from gpen_core.checkpoint import DOWNLOAD_HINT

    message = f"x.pth is empty (0 bytes), probably an interrupted download: delete it and {DOWNLOAD_HINT}."
    host = tmp_path / "ComfyUI" / "models" / "facerestore_models"
    text = download.with_download_command(message, host, python="/opt/py", workdir=tmp_path / "pack")
    assert text == (f"x.pth is empty (0 bytes), probably an interrupted download: delete it and download an "
                    f"official one (or 256/1024/2048) into {host} with: cd \"{tmp_path / 'pack'}\" && \"/opt/py\" "
                    f"-m gpen_core download 512 --dir \"{host}\".")
    assert download.with_download_command("no advice here", host) == "no advice here"


def test_official_upscaler_download_resumes_and_checks_the_scale(tmp_path, server, monkeypatch):
    monkeypatch.delenv(download.BASE_URL_ENV, raising=False)
    assert download.UPSCALER_SOURCES["realesrnet_x2"] == (
        "https://public-vigen-video.oss-cn-shanghai.aliyuncs.com/robin/models/realesrnet_x2.pth",)
    for scale in (2, 4):  # the official layout (one block instead of 23), saved as the official files are
        torch.save(upscale_layout(scale, 1), tmp_path / f"x{scale}.pth")
        server.files[f"/realesrnet_x{scale}.pth"] = (tmp_path / f"x{scale}.pth").read_bytes()
    body = server.files["/realesrnet_x2.pth"]
    server.cut_after = len(body) // 3
    with pytest.raises(DownloadError, match="realesrnet_x2.*partial file kept"):
        download.download_upscaler("realesrnet_x2", tmp_path / "m", base_url=server.url, progress=False)
    path = download.download_upscaler("realesrnet_x2", tmp_path / "m", base_url=server.url, progress=False)
    assert server.requests[-1] == ("/realesrnet_x2.pth", f"bytes={len(body) // 3}-")
    assert path == tmp_path / "m" / "realesrnet_x2.pth" and path.read_bytes() == body
    server.files["/realesrnet_x1.pth"] = server.files["/realesrnet_x4.pth"]  # a x4 file where x1 is asked for
    with pytest.raises(DownloadError, match="x4 upscaler, not x1"):
        download.download_upscaler("realesrnet_x1", tmp_path / "m", base_url=server.url, progress=False)
    assert _files(tmp_path / "m") == ["realesrnet_x2.pth"]
    with pytest.raises(ModelNotFoundError, match="realesrnet_x1, realesrnet_x2, realesrnet_x4"):
        download.download_upscaler("realesrnet_x3", tmp_path / "m")
    assert cli.main(["download", "realesrnet_x4", "--dir", str(tmp_path / "m"), "--base-url", server.url, "-q"]) == 0
    assert _files(tmp_path / "m") == ["realesrnet_x2.pth", "realesrnet_x4.pth"]
