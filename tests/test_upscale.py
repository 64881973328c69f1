"""gpen_core.upscale and restore_faces(upscaler=...): upscalers in the official realesrnet layouts, made here with
random weights (spandrel builds them), tiled inference, and faces restored at the upscaled resolution."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import spandrel
import torch

import gpen_core
from gpen_core import cli, upscale
from gpen_core.alignment import alignment_transform, warp_to_crop
from gpen_core.errors import CheckpointError, MissingDependencyError, ModelNotFoundError, UpscalerError
from gpen_core.imageio import read_image

DATA = Path(__file__).parent / "data"


def _save(path: Path, scale: int, blocks: int) -> Path:
    torch.save(upscale.realesrnet_state_dict(scale, blocks), path)  # as the official files: {"params_ema": ...}
    return path


@pytest.fixture(scope="module")
def x2_file(tmp_path_factory) -> Path:
    """The realesrnet_x2 layout (32 features, pixel-unshuffle by 2) with 1 block instead of 23, for speed."""
    return _save(tmp_path_factory.mktemp("up") / "realesrnet_x2_small.pth", 2, 1)


@pytest.fixture(scope="module")
def x2(x2_file):
    return upscale.load_upscaler(x2_file, device="cpu")


@pytest.fixture(scope="module")
def face_image() -> np.ndarray:
    """128 x 128 RGB with one face (the astronaut photo, quartered)."""
    return cv2.resize(read_image(DATA / "astronaut.jpg"), (128, 128), interpolation=cv2.INTER_AREA)


def test_official_layouts_load_with_their_scale(tmp_path):
    # The full official x2 layout: 23 blocks of 32 features, params_ema wrapper, pixel-unshuffle by 2.
    full = upscale.load_upscaler(_save(tmp_path / "realesrnet_x2.pth", 2, 23), device="cpu")
    assert (full.scale, full.architecture.id) == (2, "ESRGAN")
    assert {"32nf", "23nb", "unshuffle"} <= set(full.tags)
    assert upscale.upscale_image(np.full((20, 26, 3), 90, np.uint8), full).shape == (40, 52, 3)
    for scale in (1, 4):
        assert upscale.load_upscaler(_save(tmp_path / f"x{scale}.pth", scale, 1), device="cpu").scale == scale


def test_tiled_equals_untiled_and_needs_the_overlap(x2, face_image, monkeypatch):
    image = face_image[16:112, 16:109]  # 93 px wide: not a multiple of the model's 4, padded as the official code
    whole = upscale.upscale_image(image, x2, tile=512)
    assert whole.shape == (192, 186, 3) and whole.std() > 10  # a real picture, not a flat or clipped one
    progress = []
    tiled = upscale.upscale_image(image, x2, tile=48, on_progress=lambda done, total: progress.append((done, total)))
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert np.abs(tiled.astype(float) - whole).mean() < 0.5
    monkeypatch.setattr(upscale, "TILE_PAD", 0)  # without context the seams show: the bound above can fail
    seams = upscale.upscale_image(image, x2, tile=48)
    assert np.abs(seams.astype(float) - whole).mean() > 0.5


def test_gray_rgba_and_16_bit_keep_their_layout(x2, face_image):
    rgb = upscale.upscale_image(face_image[:64, :64], x2)
    gray = upscale.upscale_image(face_image[:64, :64, 1], x2)
    assert gray.shape == (128, 128) and gray.dtype == np.uint8
    rgba_in = np.dstack([face_image[:64, :64], np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))])
    rgba = upscale.upscale_image(rgba_in, x2)
    assert rgba.shape == (128, 128, 4)
    assert np.array_equal(rgba[..., :3], rgb)
    assert np.array_equal(rgba[..., 3], cv2.resize(rgba_in[..., 3], (128, 128), interpolation=cv2.INTER_LINEAR))
    deep = upscale.upscale_image(face_image[:64, :64].astype(np.uint16) * 257, x2)
    assert deep.dtype == np.uint16 and np.abs(deep / 257.0 - rgb).max() <= 1.0
    assert len(np.unique(deep)) > len(np.unique(rgb))  # 16-bit precision, not 8-bit values scaled up


def test_tiles_cover_the_image_once_on_the_models_grid():
    grid = upscale.tile_grid(301, 150, tile=64, multiple=4)
    cover = np.zeros((301, 150), int)
    for y0, y1, x0, x1 in grid:
        assert y0 % 4 == 0 and x0 % 4 == 0 and y1 - y0 <= 64 and x1 - x0 <= 64
        cover[y0:y1, x0:x1] += 1
    assert (cover == 1).all()


def test_automatic_tile_fits_the_memory(x2, monkeypatch):
    monkeypatch.setattr(upscale, "_available_ram", lambda: 1 << 30)
    tile = upscale.auto_tile(x2, 3000, 4000)
    assert tile % 4 == 0 and upscale.MIN_TILE <= tile < 4000
    assert upscale.tile_memory_bytes(x2, tile) <= 0.5 * (1 << 30) < upscale.tile_memory_bytes(x2, tile + 8)
    assert upscale.auto_tile(x2, 60, 90) == 92  # a small image is one tile


def test_out_of_memory_halves_the_tile(x2, face_image, monkeypatch):
    calls, oom = [], []
    real_call = type(x2).__call__

    def call(self, x):
        calls.append(x.shape[-1])
        if x.shape[-1] > 100:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
        return real_call(self, x)

    monkeypatch.setattr(type(x2), "__call__", call)
    out = upscale.upscale_image(face_image, x2, tile=128, on_oom=lambda: oom.append(1))
    monkeypatch.undo()
    assert oom == [1] and calls[0] == 128 and max(calls[1:]) == 96  # 64 px tiles with 32 px of context
    assert np.abs(out.astype(float) - upscale.upscale_image(face_image, x2, tile=512)).mean() < 0.5


def test_non_upscalers_are_refused(tmp_path, tiny_checkpoint, x2, monkeypatch):
    with pytest.raises(UpscalerError, match="GPEN face-restoration checkpoint, not an upscaler.*--model"):
        upscale.load_upscaler(tiny_checkpoint)
    retinaface = tmp_path / "detection_Resnet50_Final.pth"
    torch.save({"ClassHead.0.conv1x1.weight": torch.zeros(4, 64, 1, 1)}, retinaface)
    with pytest.raises(UpscalerError, match="not an upscaling model.*RetinaFace.*realesrnet_x2"):
        upscale.load_upscaler(retinaface)
    face_model = spandrel.ImageModelDescriptor(
        x2.model, x2.model.state_dict(), x2.architecture, purpose="FaceSR", tags=[], supports_half=True,
        supports_bfloat16=True, scale=1, input_channels=3, output_channels=3)
    with pytest.raises(UpscalerError, match="face-restoration model, not an upscaler"):
        upscale.check_upscaler(face_model, "GFPGANv1.4.pth")
    with pytest.raises(UpscalerError, match="GPENModel is not an upscaler"):
        upscale.check_upscaler(gpen_core.load_model(tiny_checkpoint, device="cpu"))
    with pytest.raises(ModelNotFoundError, match="does not exist.*download realesrnet_x2"):
        upscale.load_upscaler(tmp_path / "missing.pth")
    (tmp_path / "empty.pth").write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty.*download realesrnet_x2"):
        upscale.load_upscaler(tmp_path / "empty.pth")
    monkeypatch.setitem(sys.modules, "spandrel", None)
    with pytest.raises(MissingDependencyError, match="pip install spandrel"):
        upscale.load_upscaler(tmp_path / "missing.pth")


def test_faces_are_restored_at_the_upscaled_resolution(x2, face_image, tiny_checkpoint):
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    plain = gpen_core.restore_faces(face_image, model, detector="mtcnn", mask="rectangle")
    tiles = []
    result = gpen_core.restore_faces(face_image, model, detector="mtcnn", mask="rectangle", upscaler=x2,
                                     upscale_tile=64, on_upscale_progress=lambda d, t: tiles.append(d))
    upscaled = upscale.upscale_image(face_image, x2)
    assert result.image.shape == (256, 256, 3) and result.mask.shape == (256, 256) and tiles == [1, 2, 3, 4]
    assert result.n_faces == plain.n_faces == 1
    points = result.faces[0].face.landmarks
    assert np.allclose(points, (plain.faces[0].face.landmarks + 0.5) * 2 - 0.5, atol=1e-3)
    # The face was pasted at its place in the upscaled image (mask around the scaled landmarks) ...
    x, y = points.mean(0).round().astype(int)
    assert result.mask[y, x] > 0.99 and result.mask[0, 0] == 0
    face = result.mask > 0.99
    assert np.abs(result.image[face].astype(float) - upscaled[face]).mean() > 5
    # ... and everything no face reaches is the upscaled image, within the tiling bound.
    assert np.abs(result.image[result.mask == 0].astype(float) - upscaled[result.mask == 0]).mean() < 0.5
    # Crops come from the input resized plainly (the official code), not from the upscaler's output.
    matrix = alignment_transform(points, model.size)
    plain_2x = cv2.resize(face_image, (256, 256), interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(result.faces[0].aligned, warp_to_crop(plain_2x, matrix, model.size))


def test_rgba_and_no_face_with_an_upscaler(x2, face_image, tiny_checkpoint):
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    rgba = np.dstack([face_image, np.full((128, 128), 77, np.uint8)])
    result = gpen_core.restore_faces(rgba, model, detector="mtcnn", upscaler=x2, upscale_tile=512)
    assert result.image.shape == (256, 256, 4) and (result.image[..., 3] == 77).all() and result.n_faces == 1
    empty = gpen_core.restore_faces(face_image, model, landmarks=np.zeros((0, 5, 2)), upscaler=x2)
    assert empty.n_faces == 0 and np.array_equal(empty.image, upscale.upscale_image(face_image, x2))


def test_command_line_upscales_and_restores_at_twice_the_size(x2_file, face_image, tiny_checkpoint, tmp_path):
    """--upscaler with the realesrnet_x2 layout; --recipe selfie-2048 sets alpha 0.8 and tile 400, options win."""
    cv2.imwrite(str(tmp_path / "in.png"), cv2.cvtColor(face_image, cv2.COLOR_RGB2BGR))
    points = gpen_core.restore_faces(face_image, gpen_core.load_model(tiny_checkpoint, device="cpu"),
                                     detector="mtcnn", alpha=0).faces[0].face.landmarks
    (tmp_path / "lm.json").write_text(json.dumps({"in.png": points.tolist()}))
    common = ["restore", str(tmp_path / "in.png"), "--model", str(tiny_checkpoint), "--upscaler", str(x2_file),
              "--recipe", "selfie-2048", "--landmarks", str(tmp_path / "lm.json"), "--mask", "rectangle",
              "--device", "cpu", "-q"]
    assert cli.main([*common, "-o", str(tmp_path / "a"), "--report", str(tmp_path / "a.json")]) == 0
    assert cli.main([*common, "-o", str(tmp_path / "b"), "--report", str(tmp_path / "b.json"), "--tile", "48"]) == 0
    whole, tiled = (read_image(tmp_path / run / "in.png") for run in "ab")
    assert whole.shape == (256, 256, 3)  # exactly twice the input
    report, report_b = (json.loads((tmp_path / f"{run}.json").read_text()) for run in "ab")
    assert report["options"]["alpha"] == 0.8 and report["options"]["tile"] == 400
    assert report_b["options"]["tile"] == 48 and report["images"][0]["timings"]["upscale"] > 0
    (face,) = report["images"][0]["faces"]
    assert np.allclose(face["landmarks"], (points + 0.5) * 2 - 0.5, atol=0.01)  # in output pixels
    x, y = np.asarray(face["landmarks"]).mean(0).round().astype(int)
    upscaled = upscale.upscale_image(face_image, upscale.load_upscaler(x2_file, device="cpu"))
    assert np.abs(whole[y - 20:y + 20, x - 20:x + 20].astype(float) - upscaled[y - 20:y + 20, x - 20:x + 20]).mean() > 5
    library = gpen_core.restore_faces(face_image, gpen_core.load_model(tiny_checkpoint, device="cpu"), landmarks=points,
                                      upscaler=upscale.load_upscaler(x2_file, device="cpu"), alpha=0.8,
                                      mask="rectangle", upscale_tile=400)
    assert np.abs(whole.astype(int) - library.image).max() <= 1  # the command line is the library call
    outside = library.mask == 0  # where no face reaches: the upscaled photo
    assert outside.any() and np.abs(whole[outside].astype(float) - upscaled[outside]).mean() < 0.5
    assert np.abs(tiled.astype(float) - whole).mean() < 0.5


def test_command_line_refuses_a_face_model_as_upscaler(tiny_checkpoint, face_image, clean_env, tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "in.png"), face_image)
    code = cli.main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                     "--upscaler", str(tiny_checkpoint), "--device", "cpu", "-q"])
    err = capsys.readouterr().err
    assert code == 1 and "is a GPEN face-restoration checkpoint, not an upscaler" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "in.png").exists()
    code = cli.main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                     "--upscaler", "realesrnet_x2", "--models-dir", str(tmp_path), "--device", "cpu", "-q"])
    assert code == 1 and "python -m gpen_core download realesrnet_x2" in capsys.readouterr().err
    code = cli.main(["restore", str(tmp_path / "in.png"), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                     "--upscaler", str(tiny_checkpoint), "--aligned", "--device", "cpu", "-q"])
    assert code == 1 and "--upscaler works on whole photos, not --aligned" in capsys.readouterr().err
