"""restore_faces end to end: official equivalence, identity round trip, image layouts, batching, parsing masks."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import gpen_core
from gpen_core import model_paths
from gpen_core.errors import ModelNotFoundError
from gpen_core.masks import FaceParser
from gpen_core.pipeline import restore_faces


class Identity:
    """A restorer that returns its input: isolates alignment and paste-back."""

    def __init__(self, size: int):
        self.size = size
        self.batches: list[int] = []

    def restore_crops(self, crops: np.ndarray) -> np.ndarray:
        self.batches.append(len(crops))
        return crops.copy()


class OOMFirstCalls(Identity):
    """Fails like a full GPU on its first ``failures`` calls (recorded as -len(crops))."""

    def __init__(self, size: int, failures: int):
        super().__init__(size)
        self.failures = failures

    def restore_crops(self, crops):
        if self.failures > 0:
            self.failures -= 1
            self.batches.append(-len(crops))
            raise torch.OutOfMemoryError("CUDA out of memory (fake)")
        return super().restore_crops(crops)


@pytest.fixture(scope="module")
def fixture_meta(data_dir) -> dict:
    return json.loads((data_dir / "official_solvay_tiny256.json").read_text())


@pytest.fixture(scope="module")
def solvay_rgb(data_dir) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(data_dir / "solvay_conference_1927.png"), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def crop_and_landmarks(solvay_rgb, fixture_meta):
    y0, y1, x0, x1 = fixture_meta["region_yyxx"]
    return np.ascontiguousarray(solvay_rgb[y0:y1, x0:x1]), np.array(fixture_meta["landmarks"], np.float32)


@pytest.fixture(autouse=True)
def _no_parsing_weights(monkeypatch, tmp_path):
    """Keep a user's own facexlib files out of these tests."""
    monkeypatch.setattr(model_paths, "facexlib_weight_dirs", lambda search_dirs=(): [Path(d) for d in search_dirs])
    monkeypatch.delenv("GPEN_PARSING_WEIGHTS", raising=False)


@pytest.mark.parametrize("alpha", [1.0, 0.7])
def test_matches_official_pipeline(tiny_checkpoint, data_dir, fixture_meta, crop_and_landmarks, alpha):
    """Same landmarks, weights and soft-rectangle mask as the official code: within 0.5 grey level MAD."""
    image, landmarks = crop_and_landmarks
    official = cv2.cvtColor(cv2.imread(str(data_dir / fixture_meta["outputs_by_alpha"][str(alpha)])), cv2.COLOR_BGR2RGB)
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    result = restore_faces(image, model, landmarks=landmarks, mask="rectangle", alpha=alpha)
    diff = np.abs(result.image.astype(np.int16) - official)
    assert diff.mean() <= 0.5 and np.percentile(diff, 99) <= 2
    assert np.abs(image.astype(np.int16) - official).mean() > 10  # the fixture really changed the faces
    assert result.n_faces == 4 and result.mask_kind == "rectangle"
    assert result.faces[0].restored.shape == (256, 256, 3) and result.faces[0].aligned.dtype == np.uint8


def test_identity_restorer_gives_back_the_input(solvay_rgb, fixture_meta):
    """Faces >= 100 px (no small-face blur), crops inside the image: only resampling error is left.

    Out and back through two bilinear warps and an 8-bit crop cannot be lossless on a real photo; measured
    here: max 2, and fewer than 1 pixel in 10,000 more than 1 grey level off.
    """
    y0, y1, x0, x1 = fixture_meta["region_yyxx"]
    big = solvay_rgb[y0 - 50:y1 + 40, x0 - 60:x1 + 60]
    image = cv2.resize(big, None, fx=3, fy=3, interpolation=cv2.INTER_CUBIC)
    landmarks = (np.array(fixture_meta["landmarks"]) + [60, 50]) * 3 + 1
    result = restore_faces(image, Identity(1024), landmarks=landmarks, mask="rectangle")
    assert min(f.face.size for f in result.faces) >= 100
    diff = np.abs(result.image.astype(np.int16) - image)
    assert diff.max() <= 2 and (diff > 1).mean() < 1e-4
    assert np.array_equal(result.image[result.mask == 0], image[result.mask == 0])
    assert (result.mask > 0.99).sum() > 4 * 100 * 100


def test_identity_restorer_with_exact_warps_gives_back_the_input_everywhere(solvay_rgb):
    """Landmarks on the template shifted by whole pixels make both warps exact, so the paste-back
    (mask blend, two-face merge, rounding) must return the photo within 1 grey level everywhere."""
    from gpen_core.alignment import reference_points

    image = np.ascontiguousarray(solvay_rgb[100:500, 300:900])
    template = reference_points(256)
    landmarks = np.stack([template + [20, 40], template + [200, 90]])  # two overlapping faces
    result = restore_faces(image, Identity(256), landmarks=landmarks, mask="rectangle")
    assert result.n_faces == 2 and min(f.face.size for f in result.faces) >= 100
    assert (result.mask > 0.99).sum() > 2 * 150 * 150
    assert np.abs(result.image.astype(np.int16) - image).max() <= 1


def test_a_small_min_face_size_finds_faces_under_the_detector_default(solvay_rgb):
    """0 (the default) finds faces down to the detector's 20 px floor; asking for 12 px searches further."""
    small = cv2.resize(solvay_rgb, None, fx=0.45, fy=0.45, interpolation=cv2.INTER_AREA)  # faces 11-23 px
    default = restore_faces(small, Identity(64), detector="mtcnn", alpha=0.0)
    result = restore_faces(small, Identity(64), detector="mtcnn", min_face_size=12, alpha=0.0)
    assert result.n_faces > default.n_faces
    assert min(f.face.size for f in result.faces) < 20


def test_restored_faces_keep_their_detection_index(crop_and_landmarks):
    image, landmarks = crop_and_landmarks
    result = restore_faces(image, Identity(128), landmarks=landmarks, face_indices=[3, 1])
    assert [f.index for f in result.faces] == [3, 1]  # in the order asked for
    np.testing.assert_array_equal(result.faces[0].face.landmarks, landmarks[3])


def test_no_face_and_alpha_zero_leave_the_image_unchanged(crop_and_landmarks):
    image, landmarks = crop_and_landmarks
    for kwargs in ({"landmarks": np.zeros((0, 5, 2))}, {"landmarks": landmarks, "alpha": 0.0}):
        model = Identity(128)
        result = restore_faces(image, model, **kwargs)
        assert np.array_equal(result.image, image) and result.image is not image
        assert result.mask.shape == image.shape[:2] and result.mask.max() == 0
        assert model.batches == []
    assert result.n_faces == 4 and result.faces[0].restored is None and result.faces[0].aligned is not None
    blank = np.full((120, 160, 3), 128, np.uint8)
    result = restore_faces(blank, Identity(128))  # real detector, nothing to find
    assert result.n_faces == 0 and np.array_equal(result.image, blank)


def _tinted(size: int):
    class Tint(Identity):
        def restore_crops(self, crops):
            return np.clip(crops.astype(np.int16) + [60, 0, -40], 0, 255).astype(np.uint8)
    return Tint(size)


def test_gray_rgba_and_16_bit(crop_and_landmarks):
    image, landmarks = crop_and_landmarks
    rgb = restore_faces(image, _tinted(128), landmarks=landmarks, mask="rectangle").image
    untouched = np.all(rgb == image, axis=2)

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    for g in (gray, gray[..., None]):
        out = restore_faces(g, _tinted(128), landmarks=landmarks, mask="rectangle").image
        assert out.shape == g.shape and out.dtype == np.uint8
        expected = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).reshape(g.shape)
        assert np.abs(out.astype(int) - expected).max() <= 2 and not np.array_equal(out, g)

    alpha = np.random.default_rng(0).integers(0, 256, image.shape[:2], dtype=np.uint8)
    rgba = np.dstack([image, alpha])
    out = restore_faces(rgba, _tinted(128), landmarks=landmarks, mask="rectangle").image
    assert out.shape == rgba.shape and np.array_equal(out[..., 3], alpha) and np.array_equal(out[..., :3], rgb)

    deep = image.astype(np.uint16) * 257 + np.random.default_rng(1).integers(0, 257, image.shape, dtype=np.uint16)
    result = restore_faces(deep, _tinted(128), landmarks=landmarks, mask="rectangle")
    assert result.image.dtype == np.uint16
    assert np.array_equal(result.image[result.mask == 0], deep[result.mask == 0])  # bit-exact where no face
    assert np.abs(result.image / 257.0 - rgb)[~untouched].mean() < 1.0
    assert np.abs(result.image.astype(np.int32) - deep).max() > 257 * 20  # the faces did change


def test_colour_correction_undoes_a_colour_cast(crop_and_landmarks):
    image, landmarks = crop_and_landmarks
    plain = restore_faces(image, _tinted(128), landmarks=landmarks[:1], mask="rectangle", batch_size=1)
    fixed = restore_faces(image, _tinted(128), landmarks=landmarks[:1], mask="rectangle", color_correction=True)
    face = plain.mask > 0.9
    cast = np.abs(plain.image[face].mean(0) - image[face].mean(0)).max()
    assert cast > 20 and np.abs(fixed.image[face].mean(0) - image[face].mean(0)).max() < 0.2 * cast


def test_per_face_progress_and_oom_retry(crop_and_landmarks):
    image, landmarks = crop_and_landmarks
    reference = restore_faces(image, Identity(128), landmarks=landmarks, batch_size=1, mask="rectangle")

    model, ooms, progress = OOMFirstCalls(128, failures=2), [], []
    result = restore_faces(image, model, landmarks=landmarks, batch_size=4, mask="rectangle", keep_crops=False,
                           on_oom=lambda: ooms.append(1), on_progress=lambda d, t: progress.append((d, t)))
    assert model.batches == [-1, -1, 1, 1, 1, 1] and len(ooms) == 2  # the network sees one face per call
    assert progress == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert np.array_equal(result.image, reference.image) and np.array_equal(result.mask, reference.mask)
    assert all(f.aligned is None and f.restored is None for f in result.faces)
    assert set(result.timings) >= {"detect", "align", "network", "paste", "total"}
    assert not result.interrupted and result.n_selected == result.n_faces == 4

    with pytest.raises(torch.OutOfMemoryError):
        restore_faces(image, OOMFirstCalls(128, failures=99), landmarks=landmarks, mask="rectangle")


def test_interrupt_checked_before_every_face_not_every_batch(crop_and_landmarks):
    image, landmarks = crop_and_landmarks
    calls, progress = [], []

    def cancel():
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    model = Identity(128)
    with pytest.raises(KeyboardInterrupt):
        restore_faces(image, model, landmarks=landmarks, batch_size=4, check_interrupt=cancel, mask="rectangle",
                      on_progress=lambda d, t: progress.append(d))
    assert model.batches == [1, 1] and progress == [1, 2]  # stopped inside the first batch of 4


def test_interrupt_can_keep_the_faces_done(crop_and_landmarks):
    """check_interrupt returning True stops early; the faces done so far stay pasted."""
    image, landmarks = crop_and_landmarks
    flags = iter([False, False, True])
    result = restore_faces(image, Identity(128), landmarks=landmarks, batch_size=4, mask="rectangle",
                           check_interrupt=lambda: next(flags))
    first_two = restore_faces(image, Identity(128), landmarks=landmarks[:2], mask="rectangle")
    assert result.interrupted and result.n_faces == 2 and result.n_selected == 4
    assert [f.index for f in result.faces] == [0, 1]
    assert np.array_equal(result.image, first_two.image) and np.array_equal(result.mask, first_two.mask)
    assert result.mask.max() > 0.9


def _random_parsenet(folder, keep_class: int):
    from facexlib.parsing.parsenet import ParseNet
    torch.manual_seed(0)
    net = ParseNet(in_size=512, out_size=512, parsing_ch=19)
    with torch.no_grad():  # random weights, but one class wins everywhere so the mask is predictable
        net.out_mask_conv.conv2d.weight.zero_()
        net.out_mask_conv.conv2d.bias.zero_()
        net.out_mask_conv.conv2d.bias[keep_class] = 10.0
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), folder / "parsing_parsenet.pth")
    return folder


def test_parsing_mask_from_a_host_folder_without_download(tmp_path, monkeypatch, crop_and_landmarks):
    image, landmarks = crop_and_landmarks

    def no_network(*args, **kwargs):
        raise AssertionError("tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", no_network)
    with pytest.raises(ModelNotFoundError):
        restore_faces(image, Identity(128), landmarks=landmarks[:1], mask="parsing")

    skin = _random_parsenet(tmp_path / "ComfyUI" / "models" / "facexlib", keep_class=1)
    result = restore_faces(image, _tinted(128), landmarks=landmarks[:1], search_dirs=[skin])
    assert result.mask_kind == "parsing" and result.mask.max() > 0.99
    assert not np.array_equal(result.image, image)


@pytest.mark.parametrize("kind, dropped, kept", [
    ("parsenet", (0, 14, 18), (1, 13, 17)), ("bisenet", (0, 16, 18), (1, 14, 17))])
def test_parser_drops_background_hat_and_cloth(kind, dropped, kept):
    """Each network's own class numbering: background, hat and cloth stay original, the rest is face."""
    class OneClass(torch.nn.Module):
        label = 0

        def forward(self, x):
            logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
            logits[:, self.label] = 1
            return logits, None

    net = OneClass()
    parser = FaceParser(net, kind, torch.device("cpu"))
    crops = np.zeros((1, 128, 128, 3), np.uint8)
    for label in dropped + kept:
        net.label = label
        mask = parser(crops)
        assert mask.shape == (1, 128, 128)
        assert (mask.max() == 0) if label in dropped else (mask[0, 64, 64] > 0.99)


def test_working_memory_estimate_scales_with_pixels_and_precision():
    from gpen_core.pipeline import working_memory_bytes

    fp32 = working_memory_bytes(512)
    assert 750e6 < fp32 < 850e6  # the formula keeps the ~780 MB measured once for a 512 px crop in fp32
    assert working_memory_bytes(1024) == 4 * fp32
    assert working_memory_bytes(512, torch.float16) == working_memory_bytes(512, torch.bfloat16) == fp32 // 2
    assert working_memory_bytes(512, batch=4) == 4 * fp32


def test_release_face_models_drops_cached_networks(tmp_path):
    from gpen_core.detection import get_mtcnn
    from gpen_core.detection.retinaface import load_retinaface
    from gpen_core.masks import load_parser

    from test_detection import random_retinaface_file

    parsing = _random_parsenet(tmp_path, keep_class=1) / "parsing_parsenet.pth"
    retina = str(random_retinaface_file(tmp_path / "det"))
    mtcnn, parser, detector = get_mtcnn("cpu"), load_parser(parsing), load_retinaface(retina, "cpu")
    assert get_mtcnn("cpu") is mtcnn and load_parser(parsing) is parser  # cached until released
    assert load_retinaface(retina, "cpu") is detector
    gpen_core.release_face_models()
    assert get_mtcnn("cpu") is not mtcnn and load_parser(parsing) is not parser
    assert load_retinaface(retina, "cpu") is not detector
