"""Alignment: GPEN's template, the similarity fit, crop warps and their inverse."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from gpen_core.alignment import (alignment_transform, crop_footprint, estimate_face_box, reference_points,
                                 similarity_transform, transform_points, warp_from_crop, warp_to_crop)

OFFICIAL_512 = np.array([(202.04, 242.88), (309.43, 242.29), (256.08, 303.96), (211.96, 366.83), (300.89, 366.34)])


def _similarity(angle_deg: float, scale: float, shift) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    m = np.zeros((2, 3))
    m[:, :2] = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    m[:, 2] = shift
    return m


@pytest.mark.parametrize("size", [256, 512, 1024])
def test_template_matches_official_points(size):
    np.testing.assert_allclose(reference_points(size), OFFICIAL_512 * size / 512, atol=0.006 * size / 512)


def test_similarity_fit_recovers_known_transform_and_never_reflects():
    src = OFFICIAL_512 + np.random.default_rng(0).normal(0, 3, (5, 2))
    truth = _similarity(-33.0, 0.37, (41.5, -12.25))
    np.testing.assert_allclose(similarity_transform(src, transform_points(truth, src)), truth, atol=1e-9)
    mirrored = src * [-1, 1]  # a mirror image is fitted by a rotation, not a reflection
    assert np.linalg.det(similarity_transform(mirrored, OFFICIAL_512)[:, :2]) > 0
    with pytest.raises(ValueError):
        similarity_transform(np.ones((5, 2)), OFFICIAL_512)


def _blob_centroids(crop: np.ndarray, points: np.ndarray, radius: int) -> np.ndarray:
    found = []
    for x, y in points:
        x0, y0 = int(round(x)) - radius, int(round(y)) - radius
        win = crop[y0:y0 + 2 * radius + 1, x0:x0 + 2 * radius + 1].astype(np.float64)
        yy, xx = np.mgrid[: win.shape[0], : win.shape[1]]
        found.append((x0 + (win * xx).sum() / win.sum(), y0 + (win * yy).sum() / win.sum()))
    return np.array(found)


@pytest.mark.parametrize("angle, scale, size", [(0, 0.12, 256), (28, 0.1, 256), (-40, 0.2, 512), (15, 0.6, 256)])
def test_warped_landmarks_land_on_template(solvay_gray, angle, scale, size):
    """Marks painted at the landmarks of a real photo end up within 1 px of the template in the crop.

    The marks are found in warp(photo + marks) - warp(photo) (the warp is linear), so the photo's own
    edges do not bias the measured positions.
    """
    photo = solvay_gray.astype(np.float32)
    canvas = photo.copy()
    landmarks = transform_points(_similarity(angle, scale, (400, 250)), OFFICIAL_512)
    sigma = 1.2
    yy, xx = np.mgrid[: canvas.shape[0], : canvas.shape[1]]
    for x, y in landmarks:
        canvas += 120 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2))
    matrix = alignment_transform(landmarks, size)
    crop = warp_to_crop(canvas, matrix, size) - warp_to_crop(photo, matrix, size)
    template = reference_points(size)
    crop_sigma = sigma * size / 512 / scale
    centroids = _blob_centroids(crop, template, int(np.ceil(3 * crop_sigma)) + 1)
    assert np.abs(centroids - template).max() <= 1.0


def test_real_landmarks_fit_the_template(data_dir):
    """Hand-picked Solvay landmarks: the least-squares fit leaves only small residuals."""
    meta = json.loads((data_dir / "official_solvay_tiny256.json").read_text())
    for points in np.array(meta["landmarks"]):
        residual = transform_points(alignment_transform(points, 512), points) - reference_points(512)
        assert np.abs(residual).max() < 0.12 * 107  # a tenth of the template eye distance


def test_paste_region_warp_equals_full_warp(solvay_gray):
    size = 128
    crop = np.random.default_rng(1).uniform(0, 255, (size, size, 3)).astype(np.float32)
    matrix = _similarity(20, 2.5, (-700, -300))
    full = cv2.warpAffine(crop, cv2.invertAffineTransform(matrix), solvay_gray.shape[::-1], flags=cv2.INTER_LINEAR)
    region = crop_footprint(matrix, size, solvay_gray.shape)
    y0, y1, x0, x1 = region
    np.testing.assert_allclose(warp_from_crop(crop, matrix, region), full[y0:y1, x0:x1], atol=0.05)
    outside = full.copy()
    outside[y0:y1, x0:x1] = 0
    assert outside.max() == 0  # nothing of the crop lands outside the region
    assert crop_footprint(_similarity(0, 1, (5000, 5000)), size, solvay_gray.shape) is None


def test_estimated_box_follows_the_face():
    box = estimate_face_box(OFFICIAL_512)
    np.testing.assert_allclose(box, [128, 112, 384, 448], atol=0.05)
    moved = estimate_face_box(transform_points(_similarity(0, 0.25, (10, 20)), OFFICIAL_512))
    np.testing.assert_allclose(moved, box * 0.25 + [10, 20, 10, 20], atol=0.05)


@pytest.fixture(scope="module")
def solvay_gray(data_dir) -> np.ndarray:
    return cv2.imread(str(data_dir / "solvay_conference_1927.png"), cv2.IMREAD_GRAYSCALE)
