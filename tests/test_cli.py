"""`python -m gpen_core restore|models|bench` end to end with the tiny 256 px fixture checkpoint.

(`download` and `restore --download` are tested in test_download.py, beside their HTTP server.)
"""

import importlib.machinery
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


def test_landmarks_file_skips_detection_and_options_reach_the_pipeline(folder_run, tmp_path):
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
    assert item["timings"]["detect"] < 0.05
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
