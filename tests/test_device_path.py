"""The torch crop/mask/paste path (used on GPUs) gives the OpenCV path's pixels; run here on the CPU."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch

import gpen_core
from gpen_core.alignment import alignment_transform
from gpen_core.blending import Compositor
from gpen_core.device_path import DeviceFrame, ParsingMasks, soften_small_faces
from gpen_core.masks import FaceParser
from gpen_core.pipeline import _aligned_crop, restore_faces

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def faces(data_dir):
    """A crop of the Solvay photo with four faces (the official fixture's), and their landmarks."""
    meta = json.loads((data_dir / "official_solvay_tiny256.json").read_text())
    photo = cv2.cvtColor(cv2.imread(str(data_dir / "solvay_conference_1927.png")), cv2.COLOR_BGR2RGB)
    y0, y1, x0, x1 = meta["region_yyxx"]
    return np.ascontiguousarray(photo[y0:y1, x0:x1]), np.array(meta["landmarks"], np.float32)


def _layouts(image):
    """RGB 8-bit, RGB 16-bit (not a multiple of 257) and gray 8-bit versions of an image."""
    return [image, image.astype(np.uint16) * 257 + np.uint16(100), np.ascontiguousarray(image[..., :1])]


@pytest.mark.parametrize("layout", [0, 1, 2])
@pytest.mark.parametrize("size", [256, 512])
def test_crops_match_opencv(faces, layout, size):
    image, landmarks = faces
    colour = _layouts(image)[layout]
    matrices = [alignment_transform(p, size) for p in landmarks]
    torch_crops = DeviceFrame(colour, CPU).crops(matrices, size).permute(0, 2, 3, 1).numpy()
    cv_crops = np.stack([_aligned_crop(colour, m, size) for m in matrices])
    assert torch_crops.shape == cv_crops.shape == (4, size, size, 3)
    # OpenCV rounds 8-bit warps to integers; torch keeps the exact value
    assert np.abs(torch_crops - cv_crops).max() <= (0.51 if colour.dtype == np.uint8 else 0.01)
    assert np.abs(np.rint(torch_crops) - np.rint(cv_crops)).max() <= 1


@pytest.mark.parametrize("layout", [0, 1, 2])
def test_paste_matches_the_compositor(faces, layout):
    """Four overlapping faces with random content and soft masks: same composite and paste mask."""
    image, landmarks = faces
    colour = _layouts(image)[layout]
    rng = np.random.default_rng(0)
    frame, compositor = DeviceFrame(colour, CPU), Compositor(colour)
    base = cv2.GaussianBlur(rng.random((64, 64), np.float32), (0, 0), 4)
    mask = np.clip(cv2.resize((base - base.min()) / np.ptp(base), (256, 256)) * 2 - 0.5, 0, 1)  # plateaus at 0, 1
    for points in landmarks:
        matrix = alignment_transform(points, 256)
        face = rng.uniform(0, 255, (256, 256, 3)).astype(np.float32)
        compositor.paste(face, mask, matrix)
        frame.paste(torch.from_numpy(face).permute(2, 0, 1), torch.from_numpy(mask), matrix)
    out, paste_mask = frame.result()
    assert out.dtype == colour.dtype and out.shape == colour.shape
    grey = 257 if colour.dtype == np.uint16 else 1
    assert np.abs(out.astype(np.int64) - compositor.image).max() <= grey
    assert np.abs(paste_mask - compositor.mask).max() < 1e-4
    assert (compositor.mask > 0.99).sum() > 300 and np.array_equal(out[paste_mask == 0], colour[paste_mask == 0])


@pytest.mark.parametrize("layout, options", [(0, dict(alpha=1.0)), (1, dict(alpha=1.0)), (2, dict(alpha=1.0)),
                                             (0, dict(alpha=0.6, color_correction=True))])
def test_full_composite_matches_the_opencv_path(tiny_checkpoint, faces, layout, options):
    """restore_faces on the torch path (run on the CPU here) against the OpenCV path: every pixel within one
    grey level, with the real network; small faces (blurred) too."""
    image, landmarks = faces
    landmarks = landmarks[:2]  # two of the four faces: the same code paths at half the test time
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    for scale in (1.0, 0.4):
        small = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else image
        colour = _layouts(small)[layout]
        kwargs = dict(landmarks=landmarks * scale, mask="rectangle", batch_size=3, **options)
        cv_path = restore_faces(colour, model, device_path=False, **kwargs)
        torch_path = restore_faces(colour, model, device_path=True, **kwargs)
        grey = 257 if colour.dtype == np.uint16 else 1
        assert np.abs(torch_path.image.astype(np.int64) - cv_path.image).max() <= grey
        assert np.abs(torch_path.mask - cv_path.mask).max() < 1e-4
        assert np.abs(cv_path.image.astype(np.int64) - colour).mean() > 0.5 * grey  # faces really changed
        for a, b in zip(torch_path.faces, cv_path.faces, strict=True):
            restored_diff = np.abs(a.restored.astype(int) - b.restored)  # a grey level in can move one out by 2
            assert a.restored.dtype == np.uint8 and restored_diff.max() <= 3 and restored_diff.mean() < 0.05
            assert np.abs(a.aligned.astype(int) - b.aligned).max() <= 1


def test_small_face_blur_and_parsing_masks_match(tmp_path):
    from gpen_core.blending import soften_small_face

    rng = np.random.default_rng(1)
    face = rng.uniform(0, 255, (64, 64, 3)).astype(np.float32)
    blurred = soften_small_faces(torch.from_numpy(face).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(blurred, soften_small_face(face), atol=1e-3)

    class Blob(torch.nn.Module):
        """Face class (1) inside a disc whose radius follows the image brightness, background outside."""

        def forward(self, x):
            yy, xx = torch.meshgrid(torch.arange(x.shape[2]), torch.arange(x.shape[3]), indexing="ij")
            radius = 100 + 100 * x.mean(dim=(1, 2, 3)).view(-1, 1, 1)
            inside = ((yy - 256) ** 2 + (xx - 256) ** 2).float() < radius**2
            logits = torch.zeros(x.shape[0], 19, *x.shape[2:])
            logits[:, 1] = inside.float()
            logits[:, 0] = 0.5
            return logits, None

    crops = rng.integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    crops[1] //= 3
    for kind in ("parsenet", "bisenet"):
        parser = FaceParser(Blob(), kind, CPU)
        expected = parser(crops)
        got = ParsingMasks(parser)(torch.from_numpy(crops).permute(0, 3, 1, 2).float()).numpy()
        assert got.shape == expected.shape == (2, 256, 256)
        # the crops' resize to 512 rounds a little differently, moving the disc edge by a pixel here and there
        assert np.abs(got - expected).max() < 0.02 and np.abs(got - expected).mean() < 1e-3
        assert expected.max() > 0.99 and expected.min() == 0
        assert not np.allclose(expected[0], expected[1])
