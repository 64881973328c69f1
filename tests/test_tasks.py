"""The other official GPEN tasks and aligned input: task choice, and each task's pre/post-processing."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import gpen_core
from gpen_core import cli
from gpen_core.aligned import process_aligned, run_network
from gpen_core.imageio import read_image, write_image
from gpen_core.tasks import TASKS, keep_luminance, resolve_task, task_from_name


@pytest.fixture(scope="module")
def tiny(tiny_checkpoint):
    return gpen_core.load_model(tiny_checkpoint, device="cpu")


def named(model, name: str):
    """The same network, as if loaded from a file called ``name`` (the task comes from the name)."""
    twin = copy.copy(model)
    twin.path = Path(name)
    return twin


@pytest.fixture(scope="module")
def face(data_dir) -> np.ndarray:
    """A 300x300 RGB face crop (not the model's 256: exercises the resizing)."""
    return np.ascontiguousarray(read_image(data_dir / "astronaut.jpg")[20:320, 100:400])


def test_task_from_official_names_and_explicit_choice():
    assert task_from_name("GPEN-Colorization-1024.pth").name == "colorize"
    assert task_from_name("models/GPEN-Inpainting-1024.onnx").name == "inpaint"
    assert task_from_name("GPEN-Seg2face-512.pth").name == "seg2face"
    assert task_from_name("gpen_bfr_512.onnx").name == "restore"
    assert task_from_name("my_finetune.pth") is None
    assert resolve_task("my_finetune.pth").name == "restore"
    assert resolve_task("my_finetune.pth", "seg2face").name == "seg2face"  # only the name can tell: trusted
    assert resolve_task("GPEN-Seg2face-512.pth", "auto").name == "seg2face"
    with pytest.raises(gpen_core.TaskError, match="official GPEN-Seg2face model.*cannot restore"):
        resolve_task("GPEN-Seg2face-512.pth", "restore")
    with pytest.raises(gpen_core.TaskError, match="GPEN-BFR model.*cannot colorize.*GPEN-Colorization file"):
        resolve_task("GPEN-BFR-512.pth", "colorize")
    with pytest.raises(gpen_core.TaskError, match="unknown GPEN task 'upscale'"):
        resolve_task(None, "upscale")


def test_photo_pipeline_refuses_crop_only_tasks(tiny, face):
    with pytest.raises(gpen_core.TaskError, match="colours grey faces.*aligned face crops.*process_aligned"):
        gpen_core.restore_faces(face, named(tiny, "GPEN-Colorization-1024.pth"), detector="mtcnn")


def test_restore_resizes_to_the_model_and_back(tiny, face):
    out, = process_aligned([face], tiny)
    assert out.shape == face.shape and out.dtype == np.uint8
    small = cv2.resize(face, (256, 256), interpolation=cv2.INTER_LINEAR)
    expected = cv2.resize(tiny.restore_crops(small[None])[0], (300, 300), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_array_equal(out, expected)
    at_size, = process_aligned(small[None], tiny)  # an (N, H, W, 3) array at S: exactly restore_crops
    np.testing.assert_array_equal(at_size, tiny.restore_crops(small[None])[0])


def test_colorization_keeps_the_input_luminance(tiny, face):
    grey = cv2.cvtColor(face, cv2.COLOR_RGB2GRAY)
    model = named(tiny, "GPEN-Colorization-1024.pth")
    out, = process_aligned([grey], model)
    assert out.shape == (300, 300, 3)
    grey_rgb = np.repeat(grey[..., None], 3, axis=2)
    network = run_network(tiny, cv2.resize(grey_rgb, (256, 256), interpolation=cv2.INTER_LINEAR)[None])[0]
    yuv = cv2.cvtColor(cv2.resize(network, (300, 300), interpolation=cv2.INTER_LINEAR), cv2.COLOR_RGB2YUV)
    yuv[..., 0] = grey  # the official: Y from the grey input, U and V from the network
    np.testing.assert_array_equal(out, cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB))
    assert np.abs(cv2.cvtColor(out, cv2.COLOR_RGB2YUV)[..., 1:].astype(int) - 128).mean() > 1  # colour added
    plain, = process_aligned([grey], tiny)  # restoration keeps the network's own luminance
    assert np.median(np.abs(cv2.cvtColor(plain, cv2.COLOR_RGB2YUV)[..., 0].astype(int) - grey)) > 5
    # With colours inside the gamut, the luminance comes back exactly (up to uint8 rounding).
    ramp = np.repeat(np.repeat(np.linspace(40, 215, 64, dtype=np.uint8)[None, :, None], 64, axis=0), 3, axis=2)
    tinted = np.clip(ramp.astype(int) + (25, -10, -20), 0, 255).astype(np.uint8)
    result = keep_luminance(ramp[::-1].copy(), tinted)
    y_kept = cv2.cvtColor(result, cv2.COLOR_RGB2YUV)[..., 0].astype(int)
    assert np.abs(y_kept - ramp[::-1, :, 0]).max() <= 1
    assert np.abs(result.astype(int) - ramp[::-1]).max() > 10  # and the tint came along
    at_size, = process_aligned([cv2.resize(grey, (256, 256))], model)  # same size: the output as it is
    np.testing.assert_array_equal(at_size, run_network(tiny, np.repeat(cv2.resize(grey, (256, 256))[None, ..., None],
                                                                       3, axis=3))[0])


def test_seg2face_uses_zero_one_pixels(tiny):
    seg = np.zeros((256, 256, 3), np.uint8)
    seg[64:192, 64:192] = (255, 0, 0)
    seg[100:150, 90:170] = (0, 255, 85)
    out, = process_aligned([seg], named(tiny, "GPEN-Seg2face-512.pth"))
    with torch.inference_mode():
        x = torch.from_numpy(seg).permute(2, 0, 1)[None].float() / 255.0  # [0, 1], no (x - 0.5) / 0.5
        y = tiny.net(x).clamp(0, 1)[0].permute(1, 2, 0).mul(255).round().byte().numpy()
    assert np.abs(out.astype(int) - y).max() <= 1
    assert np.abs(out.astype(int) - tiny.restore_crops(seg[None])[0]).mean() > 5
    assert TASKS["seg2face"].normalized is False and TASKS["restore"].normalized is True


def test_inpainting_paints_the_masked_region_white(tiny, face):
    model = named(tiny, "GPEN-Inpainting-1024.pth")
    mask = np.zeros(face.shape[:2], np.float32)
    mask[120:180, 60:240] = 1.0
    painted = face.copy()
    painted[120:180, 60:240] = 255
    with_mask, = process_aligned([face], model, masks=[mask])
    already_white, = process_aligned([painted], model)
    untouched, = process_aligned([face], model)
    np.testing.assert_array_equal(with_mask, already_white)
    assert np.abs(with_mask.astype(int) - untouched).mean() > 0.5
    with pytest.raises(gpen_core.ImageError, match="mask is \\(10, 10\\) but the face is \\(300, 300\\)"):
        process_aligned([face], model, masks=[np.ones((10, 10))])
    with pytest.raises(gpen_core.ImageError, match="only used for inpainting"):
        process_aligned([face], tiny, masks=[mask])


def test_command_line_aligned_and_task(tmp_path, tiny_checkpoint, face, capsys):
    colorizer = tmp_path / "GPEN-Colorization-1024.safetensors"
    shutil.copy(tiny_checkpoint, colorizer)
    grey = write_image(tmp_path / "grey.png", cv2.cvtColor(face, cv2.COLOR_RGB2GRAY))
    out = tmp_path / "out"
    args = ["restore", str(grey), "-o", str(out), "-q", "--device", "cpu", "--model"]
    assert cli.main([*args, str(colorizer), "--aligned", "--save-faces"]) == 0
    result = read_image(out / "grey.png")
    assert result.shape == (300, 300, 3)
    assert np.abs(cv2.cvtColor(result, cv2.COLOR_RGB2YUV)[..., 1:].astype(int) - 128).mean() > 1
    assert (out / "faces" / "grey_face00_restored.png").is_file()
    capsys.readouterr()
    assert cli.main([*args, str(colorizer)]) == 1  # a whole photo through a colorization model
    assert "works on aligned face crops" in capsys.readouterr().err
    assert cli.main([*args, str(tiny_checkpoint), "--task", "colorize"]) == 1
    assert "--task colorize works on aligned face crops: add --aligned" in capsys.readouterr().err
    assert cli.main([*args, str(colorizer), "--aligned", "--task", "seg2face"]) == 1
    assert "cannot seg2face" in capsys.readouterr().err
