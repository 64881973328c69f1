"""`python -m gpen_core restore|models|bench` end to end with the tiny 256 px fixture checkpoint.

(`download` and `restore --download` are tested in test_download.py, beside their HTTP server.)
"""

import importlib.machinery
import os
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpen_core import cli

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "tests" / "data" / "tiny-256.safetensors"
SAMPLE = ROOT / "gpen_core" / "samples" / "solvay_1927_crop.jpg"
FAST = ["--model", str(TINY), "--detector", "mtcnn", "--mask", "rectangle", "--device", "cpu", "-q"]


def _crop(box) -> np.ndarray:
    """A piece of the bundled 1927 photo, (H, W, 3) uint8 RGB."""
    x0, y0, x1, y1 = box
    return np.asarray(Image.open(SAMPLE).convert("RGB"))[y0:y1, x0:x1].copy()


@pytest.fixture(scope="module")
def folder_run(tmp_path_factory):
    """One folder run: a PNG, a JPEG stored sideways with EXIF orientation 6, a corrupt JPEG, a text file."""
    root = tmp_path_factory.mktemp("cli")
    inputs = root / "in"
    inputs.mkdir()
    upright_a, upright_b = _crop((360, 100, 538, 222)), _crop((110, 30, 200, 180))  # 3 and 2 faces
    Image.fromarray(upright_a).save(inputs / "a.png")
    sideways = Image.fromarray(np.rot90(upright_b, 1).copy())  # displayed upright after a clockwise turn
    exif = sideways.getexif()
    exif[0x0112] = 6
    sideways.save(inputs / "b.jpg", exif=exif, quality=95)
    (inputs / "broken.jpg").write_bytes((inputs / "b.jpg").read_bytes()[:300])
    (inputs / "notes.txt").write_text("not an image, not looked at")
    before = {p.name: p.read_bytes() for p in inputs.iterdir()}
    out, report = root / "out", root / "report.json"
    code = cli.main(["restore", str(inputs), "-o", str(out), "--report", str(report), "--save-faces", *FAST])
    return types.SimpleNamespace(code=code, inputs=inputs, out=out, before=before, upright_a=upright_a,
                                 upright_b=upright_b, report=json.loads(report.read_text()))


def test_folder_run_reports_the_bad_file_and_finishes_the_others(folder_run):
    assert folder_run.code == 1
    report = folder_run.report
    assert [Path(item["input"]).name for item in report["images"]] == ["a.png", "b.jpg"]
    assert [Path(item["input"]).name for item in report["failed"]] == ["broken.jpg"]
    assert "broken.jpg" in report["failed"][0]["error"]
    assert report["model"]["size"] == 256 and report["n_failed"] == 1
    assert sorted(p.name for p in folder_run.out.glob("*.*")) == ["a.png", "b.jpg"]


def test_report_lists_faces_boxes_scores_landmarks_timings(folder_run):
    for item in folder_run.report["images"]:
        assert item["n_faces"] == len(item["faces"]) >= 2
        for i, face in enumerate(item["faces"]):
            assert face["index"] == i
            x1, y1, x2, y2 = face["box"]
            assert x2 > x1 and y2 > y1
            assert 0.9 <= face["score"] <= 1.0
            assert np.array(face["landmarks"]).shape == (5, 2)
            for kind in ("aligned", "restored"):
                with Image.open(face[kind]) as crop:
                    assert crop.size == (256, 256)
        assert {"detect", "network", "paste", "read", "write"} <= set(item["timings"])


def test_outputs_are_upright_restored_and_inputs_untouched(folder_run):
    assert {p.name: p.read_bytes() for p in folder_run.inputs.iterdir()} == folder_run.before
    a = np.asarray(Image.open(folder_run.out / "a.png"))
    assert a.shape == folder_run.upright_a.shape
    assert np.abs(a.astype(int) - folder_run.upright_a).mean() > 1  # faces were replaced
    b = Image.open(folder_run.out / "b.jpg")
    assert b.format == "JPEG" and b.size == (90, 150)  # EXIF orientation applied, not stored again
    assert b.getexif().get(0x0112) == 1  # EXIF kept, orientation reset: the pixels are stored upright


def test_landmarks_file_skips_detection_and_options_reach_the_pipeline(folder_run, tmp_path, monkeypatch):
    import gpen_core.detection

    monkeypatch.setattr(gpen_core.detection, "detect_faces", lambda *a, **k: pytest.fail("detector ran"))
    faces = folder_run.report["images"][0]["faces"]
    points = [face["landmarks"] for face in faces]
    (tmp_path / "lm.json").write_text(json.dumps({"a.png": points}))
    source = folder_run.inputs / "a.png"

    def run(*extra) -> dict:
        report = tmp_path / "r.json"
        assert cli.main(["restore", str(source), "-o", str(tmp_path / "o"), "--landmarks", str(tmp_path / "lm.json"),
                         "--report", str(report), "--overwrite", *FAST, *extra]) == 0
        return json.loads(report.read_text())["images"][0]

    item = run()
    assert item["n_faces"] == len(points)
    assert [face["landmarks"] for face in item["faces"]] == points
    assert run("--max-faces", "1")["n_faces"] == 1
    assert run("--faces", "0,1")["n_faces"] == 2
    run("--alpha", "0")
    unchanged = np.asarray(Image.open(tmp_path / "o" / "a.png")).astype(int)
    assert np.abs(unchanged - folder_run.upright_a).max() <= 1


def test_output_in_the_input_folder_gets_a_new_name(tmp_path):
    Image.fromarray(_crop((0, 0, 64, 48))).save(tmp_path / "a.png")
    original = (tmp_path / "a.png").read_bytes()
    (tmp_path / "lm.json").write_text('{"a": []}')
    args = ["restore", str(tmp_path / "a.png"), "-o", str(tmp_path), "--landmarks", str(tmp_path / "lm.json"), *FAST]
    assert cli.main(args) == 0
    assert (tmp_path / "a.png").read_bytes() == original
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a_1.png")), _crop((0, 0, 64, 48)))
    with pytest.raises(SystemExit):
        cli.main([*args, "--ext", "xcf"])
    assert cli.main([*args, "--report", str(tmp_path / "a.png")]) == 1
    assert (tmp_path / "a.png").read_bytes() == original


def test_globs_and_ext(tmp_path):
    for name in ("x.png", "y.png"):
        Image.fromarray(_crop((0, 0, 40, 30))).save(tmp_path / name)
    (tmp_path / "lm.json").write_text('{"x": [], "y": []}')
    assert cli.main(["restore", str(tmp_path / "*.png"), "-o", str(tmp_path / "o"), "--ext", "webp",
                     "--landmarks", str(tmp_path / "lm.json"), *FAST]) == 0
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x.webp", "y.webp"]


def test_no_model_anywhere_says_where_and_how(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("GPEN_MODELS_DIR", str(tmp_path / "models"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert cli.main(["restore", str(SAMPLE), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no GPEN checkpoint found")
    assert str(tmp_path / "models") in err and str(tmp_path / "cache" / "gpen_core") in err
    assert "python -m gpen_core download 512" in err and "--download" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("args, message", [
    (["restore", "nowhere.png", "-o", "o"], "nowhere.png: no such file or folder"),
    (["restore", str(SAMPLE), "-o", "o", "--model", "missing.pth"], "missing.pth: no such file"),
    (["restore", str(SAMPLE), "-o", "o", "--model", str(SAMPLE)], "solvay_1927_crop.jpg"),
])
def test_expected_errors_are_one_line_messages(tmp_path, monkeypatch, capsys, args, message):
    monkeypatch.chdir(tmp_path)
    assert cli.main(args) == 1
    assert message in capsys.readouterr().err


def test_malformed_landmarks_file(tmp_path, capsys):
    (tmp_path / "lm.json").write_text('{"a.png": [[1, 2], [3, 4]]}')
    assert cli.main(["restore", str(SAMPLE), "-o", str(tmp_path), "--landmarks", str(tmp_path / "lm.json"), *FAST]) == 1
    assert "N x 5 x 2" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--faces", "one"], ["--alpha", "2"], ["--batch-size", "0"], ["--device", "gpu9"]])
def test_bad_option_values_are_usage_errors(bad):
    with pytest.raises(SystemExit) as info:
        cli.main(["restore", str(SAMPLE), "-o", "o", *bad])
    assert info.value.code == 2


def test_models_lists_checkpoints_with_inferred_size(tmp_path, capsys):
    shutil.copy(TINY, tmp_path / "GPEN-tiny.safetensors")
    (tmp_path / "GPEN-junk.pth").write_bytes(b"\x80\x02 not a checkpoint")
    assert cli.main(["models", "--models-dir", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert any("GPEN-tiny.safetensors" in line and "256 px" in line for line in lines)
    assert any("GPEN-junk.pth" in line and "not usable" in line for line in lines)


def test_model_found_by_name_in_a_models_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("GPEN_MODELS_DIR", raising=False)
    shutil.copy(TINY, tmp_path / "GPEN-BFR-256.safetensors")
    assert cli.resolve_model("256", [tmp_path]) == tmp_path / "GPEN-BFR-256.safetensors"
    assert cli.resolve_model(None, [tmp_path]) == tmp_path / "GPEN-BFR-256.safetensors"


def test_bench_is_dispatched(monkeypatch):
    seen = []
    fake = types.ModuleType("gpen_core.bench")
    fake.__spec__ = importlib.machinery.ModuleSpec("gpen_core.bench", None)
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "gpen_core.bench", fake)
    monkeypatch.setattr("gpen_core.bench", fake, raising=False)
    assert cli.main(["bench", "--size", "256"]) == 0
    assert seen == [["--size", "256"]]


def test_module_entry_point_prints_no_traceback(tmp_path):
    junk = tmp_path / "GPEN-junk.pth"
    junk.write_bytes(b"garbage")
    proc = subprocess.run([sys.executable, "-m", "gpen_core", "restore", str(SAMPLE), "-o", str(tmp_path / "o"),
                           "--model", str(junk)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: ") and "GPEN-junk.pth" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- Safety of outputs, up-front checks, messages (issue 9, "The command line") ---------------------------

def _quick(tmp_path, names=("a.png",), folder="in") -> tuple[Path, list[str]]:
    """Small inputs in tmp_path/folder and a landmarks file saying "no faces" (no detection, no network)."""
    src = tmp_path / folder
    src.mkdir(exist_ok=True)
    for i, name in enumerate(names):
        Image.fromarray(_crop((i, 0, i + 40, 30))).save(src / name)
    lm = tmp_path / "lm.json"
    lm.write_text(json.dumps({Path(n).stem: [] for n in names}))
    return src, ["--landmarks", str(lm), *FAST]


def test_existing_unrelated_file_is_kept_unless_overwrite(tmp_path, capsys):
    src, opts = _quick(tmp_path)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.png").write_bytes(b"someone else's file")
    (out / "a.png").chmod(0o640)
    assert cli.main(["restore", str(src / "a.png"), "-o", str(out), *opts]) == 0
    assert (out / "a.png").read_bytes() == b"someone else's file"
    err = capsys.readouterr().err
    assert f"{out / 'a.png'} already exists; writing a_1.png instead (--overwrite replaces it)" in err
    assert (out / "a_1.png").is_file()
    assert cli.main(["restore", str(src / "a.png"), "-o", str(out), "--overwrite", *opts]) == 0
    assert f"replacing the existing {out / 'a.png'} (--overwrite)" in capsys.readouterr().err
    np.testing.assert_array_equal(np.asarray(Image.open(out / "a.png")), np.asarray(Image.open(src / "a.png")))
    assert (out / "a.png").stat().st_mode & 0o777 == 0o640  # a replaced file keeps its mode
    # Inputs are never replaced, --overwrite or not.
    before = (src / "a.png").read_bytes()
    assert cli.main(["restore", str(src / "a.png"), "-o", str(src), "--overwrite", *opts]) == 0
    assert (src / "a.png").read_bytes() == before and (src / "a_1.png").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_new_files_get_the_mode_of_a_plain_write(tmp_path, umask):
    src, opts = _quick(tmp_path)
    old = os.umask(umask)
    try:
        assert cli.main(["restore", str(src / "a.png"), "-o", str(tmp_path / "o"), "--report",
                         str(tmp_path / "r.json"), *opts]) == 0
    finally:
        os.umask(old)
    for path in (tmp_path / "o" / "a.png", tmp_path / "r.json"):
        assert path.stat().st_mode & 0o777 == 0o666 & ~umask, path


def test_report_path_on_an_output_or_a_foreign_file_is_refused_up_front(tmp_path, capsys, monkeypatch):
    src, opts = _quick(tmp_path)
    out = tmp_path / "out"
    monkeypatch.setattr("gpen_core.checkpoint.load_model", _must_not_run)
    assert cli.main(["restore", str(src / "a.png"), "-o", str(out), "--report", str(out / "a.png"), *opts]) == 1
    assert "a restored image of this run goes there" in capsys.readouterr().err
    assert list(out.iterdir()) == []
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}')
    assert cli.main(["restore", str(src / "a.png"), "-o", str(out), "--report", str(notes), *opts]) == 1
    assert "not a gpen_core report; refusing to replace it" in capsys.readouterr().err
    assert notes.read_text() == '{"mine": true}'


def _must_not_run(*args, **kwargs):
    raise AssertionError("the model was loaded before the up-front checks failed")


def test_read_only_output_folder_and_report_folder_are_found_before_the_work(tmp_path, capsys, monkeypatch):
    src, opts = _quick(tmp_path)
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: Path(p) != locked and real_access(p, mode, **kw))
    monkeypatch.setattr("gpen_core.checkpoint.load_model", _must_not_run)
    assert cli.main(["restore", str(src / "a.png"), "-o", str(locked), *opts]) == 1
    assert capsys.readouterr().err == (f"error: the output folder {locked} is not writable; "
                                       f"choose another folder or fix its permissions\n")
    assert cli.main(["restore", str(src / "a.png"), "-o", str(tmp_path / "o"), "--report",
                     str(locked / "r.json"), *opts]) == 1
    assert f"folder of the report file {locked} is not writable" in capsys.readouterr().err


def test_report_that_cannot_be_written_at_the_end_is_printed(tmp_path, capsys, monkeypatch):
    from gpen_core import report
    from gpen_core.files import OutputError

    src, opts = _quick(tmp_path)

    def broken(path, data):
        raise OutputError(f"cannot write {path} (No space left on device)")

    monkeypatch.setattr(report, "write_atomic", broken)
    assert cli.main(["restore", str(src / "a.png"), "-o", str(tmp_path / "o"), "--report",
                     str(tmp_path / "r.json"), *opts]) == 1
    captured = capsys.readouterr()
    assert "(No space left on device); the report follows on standard output" in captured.err
    assert json.loads(captured.out)["images"][0]["output"] == str(tmp_path / "o" / "a.png")


@pytest.mark.parametrize("device, cuda, count, message", [
    ("cuda", False, 0, "device 'cuda': CUDA is not available"),
    ("cuda:1", True, 1, "device 'cuda:1' does not exist: this machine has 1 CUDA device (cuda:0)"),
    ("mps", False, 0, "device 'mps': Apple MPS is not available"),
])
def test_missing_device_is_one_clear_line(tmp_path, capsys, monkeypatch, device, cuda, count, message):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert cli.main(["restore", str(SAMPLE), "-o", str(tmp_path / "o"), "--model", str(TINY), "--device", device]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1 and "'cpu'" in err


def test_load_model_on_missing_cuda_names_the_fix(monkeypatch):
    import torch

    from gpen_core.checkpoint import load_model
    from gpen_core.errors import DeviceError

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DeviceError, match="CUDA is not available.*use device 'cpu'.*install a CUDA build"):
        load_model(TINY, device="cuda")


def test_unreadable_checkpoint_and_models_listing(tmp_path, capsys, monkeypatch):
    import builtins
    import errno

    from gpen_core import files

    shutil.copy(TINY, tmp_path / "GPEN-locked.safetensors")
    real_open = builtins.open

    def open_as_non_root(path, *args, **kwargs):  # what a user without read permission gets
        if Path(path).name == "GPEN-locked.safetensors":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(files, "open", open_as_non_root, raising=False)
    assert cli.main(["restore", str(SAMPLE), "-o", str(tmp_path / "o"), "--model",
                     str(tmp_path / "GPEN-locked.safetensors"), "-q"]) == 1
    err = capsys.readouterr().err
    assert err == (f"error: checkpoint {tmp_path / 'GPEN-locked.safetensors'} cannot be read (Permission denied); "
                   f"make it readable (e.g. chmod a+r) or pass --model with a readable copy\n")
    assert cli.main(["models", "--models-dir", str(tmp_path)]) == 0
    assert "GPEN-locked.safetensors cannot be read (Permission denied)" in capsys.readouterr().out


def test_model_that_is_a_folder_or_a_symlink_loop(tmp_path, capsys):
    (tmp_path / "x.pth").mkdir()
    (tmp_path / "loop.pth").symlink_to(tmp_path / "loop.pth")
    for name, what in (("x.pth", "is a folder, not a file"), ("loop.pth", "is a symlink loop")):
        assert cli.main(["restore", str(SAMPLE), "-o", str(tmp_path / "o"), "--model", str(tmp_path / name)]) == 1
        assert capsys.readouterr().err.startswith(f"error: --model {tmp_path / name} {what}")


def test_empty_image_is_a_clear_failure(tmp_path, capsys):
    src, opts = _quick(tmp_path)
    (src / "empty.png").write_bytes(b"")
    assert cli.main(["restore", str(src / "empty.png"), "-o", str(tmp_path / "o"), *opts]) == 1
    assert f"{src / 'empty.png'} is empty (0 bytes)" in capsys.readouterr().err


def test_face_numbers_beyond_the_faces_found_are_reported(tmp_path, capsys):
    src, opts = _quick(tmp_path)
    assert cli.main(["restore", str(src / "a.png"), "-o", str(tmp_path / "o"), "--faces", "5,9",
                     "--report", str(tmp_path / "r.json"), *opts]) == 0
    warning = f"{src / 'a.png'}: 0 faces found; --faces 5,9 out of range (no face to number), not restored"
    assert f"warning: {warning}" in capsys.readouterr().err
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["warnings"] == [warning]


@pytest.mark.parametrize("bad, message", [
    (["--quality", "500"], "must be between 1 and 100"),
    (["--score-threshold", "5"], "must be between 0 and 1"),
    (["--score-threshold", "nan"], "expected a finite number"),
    (["--max-pixels", "-1"], "must be 0 or more"),
    (["--min-face-size", "-3"], "must be 0 or more"),
    (["--suffix", "/../../x"], "must not contain '/', '\\' or '..'"),
    (["--suffix", "_.."], "must not contain"),
])
def test_out_of_range_values_are_refused(capsys, bad, message):
    with pytest.raises(SystemExit) as info:
        cli.main(["restore", str(SAMPLE), "-o", "o", *bad])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_rerun_into_the_input_folder_skips_earlier_results(tmp_path, capsys):
    src, opts = _quick(tmp_path, ("a.png", "b.jpg"))
    (src / "notes.txt").write_text("x")
    assert cli.main(["restore", str(src), "-o", str(src), *opts]) == 0
    assert sorted(p.name for p in src.iterdir()) == ["a.png", "a_1.png", "b.jpg", "b_1.jpg", "notes.txt"]
    assert "note: skipped 1 files in the input folders" in capsys.readouterr().err  # notes.txt, with -q
    opts.remove("-q")
    assert cli.main(["restore", str(src), "-o", str(src), "--report", str(tmp_path / "r.json"), *opts]) == 0
    err = capsys.readouterr().err
    assert f"skipped {src / 'a_1.png'}: written by gpen_core (an earlier result)" in err
    assert f"skipped {src / 'notes.txt'}: '.txt' is not a supported input type" in err
    report = json.loads((tmp_path / "r.json").read_text())
    assert [Path(i["input"]).name for i in report["images"]] == ["a.png", "b.jpg"]
    assert {Path(s["input"]).name for s in report["skipped"]} == {"a_1.png", "b_1.jpg", "notes.txt"}
    assert sorted(p.name for p in src.glob("a*")) == ["a.png", "a_1.png", "a_2.png"]


def test_line_per_image_when_stderr_is_not_a_terminal(tmp_path, capsys):
    src, opts = _quick(tmp_path, ("a.png", "b.png"))
    opts.remove("-q")
    assert cli.main(["restore", str(src), "-o", str(tmp_path / "o"), *opts]) == 0
    lines = capsys.readouterr().err.splitlines()
    assert any(line.startswith(f"[1/2] {src / 'a.png'}: 0 faces -> {tmp_path / 'o' / 'a.png'} (") for line in lines)
    assert any(line.startswith(f"[2/2] {src / 'b.png'}: 0 faces -> ") for line in lines)


def test_interrupted_run_reports_what_is_left(tmp_path, capsys, monkeypatch):
    from gpen_core import batch

    src, opts = _quick(tmp_path, ("a.png", "b.png", "c.png"))
    real = batch.HANDLERS["image"]

    def stop_at_b(item, *args):
        if item.path.name == "b.png":
            raise cli.Terminated(15)
        return real(item, *args)

    monkeypatch.setitem(batch.HANDLERS, "image", stop_at_b)
    report_args = ["--report", str(tmp_path / "r.json")]
    assert cli.main(["restore", str(src), "-o", str(tmp_path / "o"), *report_args, *opts]) == 143
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["interrupted"] is True and report["n_images"] == 1
    assert report["unprocessed"] == [str(src / "b.png"), str(src / "c.png")]
    assert "interrupted: 2 of 3 inputs not processed" in capsys.readouterr().err


SIGTERM_DURING_WRITE = """
import os, signal, sys
from gpen_core import cli, files
real_fdopen = os.fdopen
def fdopen(fd, *args, **kwargs):
    f = real_fdopen(fd, *args, **kwargs)
    files.os.fdopen = real_fdopen  # only the first write (the image) is hit
    real_write = f.write
    def write(data):
        real_write(data[:10])
        os.kill(os.getpid(), signal.SIGTERM)  # arrives mid-write, as from `kill` or a job scheduler
        return real_write(data[10:])
    f.write = write
    return f
files.os.fdopen = fdopen
sys.exit(cli.main(sys.argv[1:]))
"""


def test_sigterm_mid_write_leaves_no_temp_file_and_stale_ones_are_removed(tmp_path):
    src, opts = _quick(tmp_path)
    out = tmp_path / "o"
    out.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = out / f".gpen_core-{dead.stdout.strip()}-0123abcd.tmp"
    stale.write_bytes(b"left by a killed run")
    os.utime(stale, (1_000_000_000, 1_000_000_000))
    proc = subprocess.run([sys.executable, "-c", SIGTERM_DURING_WRITE, "restore", str(src / "a.png"), "-o", str(out),
                           "--report", str(tmp_path / "r.json"), *opts], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    assert list(out.iterdir()) == []  # the stale temp file was removed, the interrupted one cleaned up
    assert json.loads((tmp_path / "r.json").read_text())["unprocessed"] == [str(src / "a.png")]


def test_animated_gif_in_a_folder_comes_back_with_every_frame(tmp_path):
    src, opts = _quick(tmp_path, ("anim.gif",))
    frames = [Image.fromarray(_crop((10 * i, 0, 10 * i + 40, 30))) for i in range(3)]
    frames[0].save(src / "anim.gif", save_all=True, append_images=frames[1:], duration=[50, 60, 70], loop=0)
    assert cli.main(["restore", str(src), "-o", str(tmp_path / "o"), "--report", str(tmp_path / "r.json"), *opts]) == 0
    with Image.open(tmp_path / "o" / "anim.png") as apng:
        assert apng.n_frames == 3
        apng.seek(2)
        assert apng.info["duration"] == 70
    assert json.loads((tmp_path / "r.json").read_text())["images"][0]["n_frames"] == 3
    assert cli.main(["restore", str(src), "-o", str(tmp_path / "j"), "--ext", "jpg", *opts]) == 1
    assert not (tmp_path / "j" / "anim.jpg").exists()
