"""Masks and blending: GPEN's soft rectangle, multi-face merge, alpha, small-face blur, colour matching."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from gpen_core.alignment import alignment_transform, reference_points
from gpen_core.blending import Compositor, match_colour, mix, soften_small_face
from gpen_core.masks import rectangle_mask, soften_parsing


def test_rectangle_mask_shape_and_profile():
    mask = rectangle_mask(512)
    assert mask.shape == (512, 512) and mask.dtype == np.float32
    assert mask[256, 256] == pytest.approx(1.0, abs=1e-6) and mask[0, 0] < 1e-6
    assert 0.4 < mask[256, 26] < 0.6  # the edge of the square is half way up the feathering
    profile = mask[256, :256]
    assert np.all(np.diff(profile) >= -1e-7)  # rises monotonically from the border to the centre
    np.testing.assert_allclose(mask, mask.T, atol=1e-6)
    np.testing.assert_allclose(rectangle_mask(256), cv2.resize(mask, (256, 256)), atol=1e-6)
    assert not rectangle_mask(256).flags.writeable


def test_parsing_mask_is_zeroed_at_the_border_and_soft():
    keep = np.ones((512, 512), bool)
    keep[300:, :] = False  # e.g. cloth below the chin
    mask = soften_parsing(keep, 256)
    assert mask.shape == (256, 256)
    assert mask[:3].max() < 1e-3 and mask[100, 128] > 0.99 and mask[200, 128] < 1e-3


def _two_faces(image_shape):
    """Two aligned-crop transforms for 64 px crops, overlapping in the middle of the image."""
    left = alignment_transform(reference_points(512) * 0.2 + [40, 20], 64)
    right = alignment_transform(reference_points(512) * 0.2 + [70, 20], 64)
    return left, right


def test_merge_keeps_the_strongest_mask_and_the_earlier_face_on_ties():
    base = np.full((160, 220, 3), 100, np.uint8)
    left, right = _two_faces(base.shape)
    mask = np.asarray(rectangle_mask(64))
    red, blue = np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 3), np.float32)
    red[..., 0], blue[..., 2] = 255, 255

    comp = Compositor(base)
    comp.paste(red, mask, left)
    comp.paste(blue, mask, left)  # same place, same mask: a tie, the first face stays
    assert comp.image[..., 2].max() == 100 and comp.image[..., 0].max() == 255

    comp.paste(blue, mask, right)  # overlapping: each pixel goes to the face with the larger mask
    ref = cv2.warpAffine(mask, cv2.invertAffineTransform(left), (220, 160), flags=cv2.INTER_LINEAR)
    new = cv2.warpAffine(mask, cv2.invertAffineTransform(right), (220, 160), flags=cv2.INTER_LINEAR)
    blue_wins = new > ref + 1e-3
    red_wins = ref > new + 1e-3
    assert np.all(comp.image[blue_wins & (new > 0.5)][:, 2] > comp.image[blue_wins & (new > 0.5)][:, 0])
    assert np.all(comp.image[red_wins & (ref > 0.5)][:, 0] > comp.image[red_wins & (ref > 0.5)][:, 2])
    np.testing.assert_allclose(comp.mask, np.maximum(ref, new), atol=1e-3)
    untouched = comp.mask == 0
    assert untouched.any() and np.all(comp.image[untouched] == 100)


def test_composite_formula_and_16_bit_precision():
    base = np.random.default_rng(2).integers(0, 65536, (120, 120, 1), dtype=np.uint16)
    matrix = alignment_transform(reference_points(512) * 0.15 + [20, 10], 64)
    face = np.full((64, 64, 3), 200.0, np.float32)
    mask = np.asarray(rectangle_mask(64))
    comp = Compositor(base)
    comp.paste(face, mask, matrix)
    m = comp.mask[..., None]
    expected = np.rint(base * (1 - m.astype(np.float64)) + 200 * 257 * m)
    inside = comp.mask > 0.01  # away from the crop's own edge, where the warped face fades to black
    assert np.abs(comp.image.astype(np.float64) - expected)[inside].max() <= 1
    assert np.array_equal(comp.image[comp.mask == 0], base[comp.mask == 0])
    assert comp.image.dtype == np.uint16 and base.max() > 255


def test_mix_and_small_face_blur():
    rng = np.random.default_rng(3)
    restored, aligned = rng.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    np.testing.assert_allclose(mix(restored, aligned, 0.0), aligned)
    np.testing.assert_allclose(mix(restored, aligned, 0.25), 0.25 * restored + 0.75 * aligned, rtol=1e-6)
    assert mix(restored, aligned, 1.0) is restored
    flat = np.full((16, 16, 3), 77.0, np.float32)
    np.testing.assert_allclose(soften_small_face(flat), flat)
    blurred = soften_small_face(restored)
    assert blurred.std() < restored.std() * 0.7
    kernel = np.outer([1, 2, 1], [1, 2, 1])[..., None] / 16
    np.testing.assert_allclose(blurred[5, 5], (restored[4:7, 4:7] * kernel).sum((0, 1)), rtol=1e-5)


def test_colour_correction_moves_statistics_toward_the_input(data_dir):
    photo = cv2.cvtColor(cv2.imread(str(data_dir / "astronaut.jpg")), cv2.COLOR_BGR2RGB)
    reference = cv2.resize(photo, (128, 128)).astype(np.float32)
    tinted = np.clip(reference * [1.15, 0.95, 0.7] + [10, 0, -5], 0, 255).astype(np.float32)  # GPEN-like shift
    weight = np.asarray(rectangle_mask(128))
    corrected = match_colour(tinted, reference, weight)

    def lab_stats(rgb):
        lab = cv2.cvtColor(rgb.astype(np.float32) / 255, cv2.COLOR_RGB2LAB)
        w = weight[..., None] / weight.sum()
        mean = (lab * w).sum((0, 1))
        return mean, np.sqrt((((lab - mean) ** 2) * w).sum((0, 1)))

    (m_ref, s_ref), (m_tint, s_tint), (m_cor, s_cor) = map(lab_stats, (reference, tinted, corrected))
    assert np.abs(m_cor - m_ref).max() < 0.2 * np.abs(m_tint - m_ref).max()
    assert np.abs(s_cor - s_ref).sum() < 0.8 * np.abs(s_tint - s_ref).sum()
    assert corrected.dtype == np.float32 and corrected.min() >= 0 and corrected.max() <= 255
    assert np.abs(corrected - reference).mean() < np.abs(tinted - reference).mean()
