"""Detection where it used to fail: defaults on the Solvay photo, tiny faces, very wide images, damaged weights."""

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from gpen_core import detection
from gpen_core.detection import detect_faces
from gpen_core.detection.tiling import TILE, cut_at_inner_side, detection_scale, tile_grid
from gpen_core.errors import FaceDetectorError
from gpen_core.pipeline import restore_faces

DATA = Path(__file__).parent / "data"
BEFORE = json.loads((DATA / "mtcnn_before_rework.json").read_text())


def read_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def solvay() -> np.ndarray:
    return read_rgb("solvay_conference_1927.png")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return read_rgb("astronaut.jpg")


def landmarks_of(faces) -> np.ndarray:
    return np.stack([f.landmarks for f in faces])


@pytest.mark.parametrize("name", ["solvay_conference_1927.png", "astronaut.jpg"])
def test_defaults_find_every_face_with_the_landmarks_of_before(name):
    """All 29 Solvay faces at defaults (28 before: a 0.95 score cut), landmarks as the old 20 px search."""
    faces = detect_faces(read_rgb(name), "mtcnn", device="cpu")
    before = np.array([f["landmarks"] for f in BEFORE[name]], np.float32)
    assert len(faces) == len(before) == {"solvay_conference_1927.png": 29, "astronaut.jpg": 1}[name]
    shift = np.linalg.norm(landmarks_of(faces) - before, axis=2)
    assert shift.mean() < 0.5 and shift.max() < 2.0


class Inverter:
    """A 256 px restorer that returns the negative of each crop: fast, and visibly changes every face."""

    size = 256

    def restore_crops(self, crops: np.ndarray) -> np.ndarray:
        return 255 - crops


def test_restore_faces_at_defaults_restores_all_29_solvay_faces(solvay):
    result = restore_faces(solvay, Inverter(), detector="mtcnn", mask="rectangle", keep_crops=False)
    assert result.n_faces == 29
    assert sorted(f.index for f in result.faces) == list(range(29))
    assert not np.array_equal(result.image, solvay)


def test_a_14px_face_is_found_when_asked_for(astronaut):
    face = cv2.resize(astronaut, None, fx=0.15, fy=0.15, interpolation=cv2.INTER_AREA)  # 77 px, face ~14 px
    canvas = np.full((300, 400, 3), 128, np.uint8)
    canvas[100:177, 150:227] = face
    (found,) = detect_faces(canvas, "mtcnn", device="cpu", min_face_size=12)
    assert 11 < found.size < 18
    assert np.allclose(found.center, (150 + 222 * 0.15, 100 + 119 * 0.15), atol=3)
    assert detect_faces(canvas, "mtcnn", device="cpu", min_face_size=16) == []  # a filter, too


def test_three_faces_on_a_40000_px_strip(astronaut):
    """Shrinking the long side to 1000 px made these 2.5 px faces; the strip is now detected on tiles."""
    face = cv2.resize(astronaut[59:179, 162:282], (100, 100), interpolation=cv2.INTER_AREA)
    alone = np.full((100, 300, 3), 120, np.uint8)
    alone[:, 100:200] = face
    (reference,) = detect_faces(alone, "mtcnn", device="cpu")
    strip = np.full((100, 40000, 3), 120, np.uint8)
    xs = (5000, 20017, 38000)
    for x in xs:
        strip[:, x:x + 100] = face
    faces = detect_faces(strip, "mtcnn", device="cpu")
    assert len(faces) == 3
    for x, found in zip(xs, faces, strict=True):
        assert np.allclose(found.box, reference.box + [x - 100, 0, x - 100, 0], atol=7)  # MTCNN boxes jitter
        assert np.allclose(found.landmarks, reference.landmarks + [x - 100, 0], atol=2)


def test_detection_scale_and_tiles():
    assert detection_scale(1080, 1920) == pytest.approx(1000 / 1920)  # official rule kept for normal photos
    assert detection_scale(3000, 4000) == 0.25 and detection_scale(568, 1328) == 1.0
    assert detection_scale(100, 40000) == 1.0  # the short side is never shrunk below 500 px
    assert detection_scale(2000, 12000) == 0.25
    assert detection_scale(3000, 4000, min_face_size=24) == 0.5  # 24 px faces stay 12 px in the copy
    assert len(tile_grid(1000, 1500)) == 1
    tiles = tile_grid(100, 40000)
    assert all(t.y0 == 0 and t.y1 == 100 and t.x1 - t.x0 <= TILE for t in tiles)
    assert tiles[0].x0 == 0 and tiles[-1].x1 == 40000
    assert all(a.x1 - b.x0 >= 100 for a, b in zip(tiles, tiles[1:]))  # any face of the strip lies whole in one
    grid = tile_grid(5000, 5000)
    covered = np.zeros((5000, 5000), bool)
    for t in grid:
        covered[t.y0:t.y1, t.x0:t.x1] = True
    assert covered.all() and len(grid) == 9
    middle = grid[4]
    boxes = np.array([[1, 600, 100, 700], [600, 600, 700, 700], [600, 600, 700, 2047]], np.float32)
    assert cut_at_inner_side(boxes, middle).tolist() == [True, False, True]


@pytest.fixture
def damaged_retinaface(clean_env, monkeypatch):
    """A RetinaFace file whose detector returns the given rows (as a damaged file's NaN weights do)."""
    weights = clean_env / "detection_Resnet50_Final.pth"
    weights.write_bytes(b"placeholder")
    rows = {}
    monkeypatch.setattr(detection, "load_retinaface", lambda path, device: object())
    monkeypatch.setattr(detection, "detect_retinaface", lambda net, image, threshold: rows["out"])
    monkeypatch.setattr(detection.importlib.util, "find_spec", lambda name: object())

    def set_rows(boxes, scores):
        n = len(scores)
        landmarks = np.tile(np.array([[30, 40], [50, 40], [40, 50], [32, 60], [48, 60]], np.float32), (n, 1, 1))
        rows["out"] = (np.array(boxes, np.float32), np.array(scores, np.float32), landmarks)
        return weights
    return set_rows


def test_non_finite_detections_are_dropped_with_a_warning(damaged_retinaface):
    weights = damaged_retinaface([[10, 20, 70, 80], [np.nan, 0, 5, 5], [0, 0, np.inf, 9], [1, 1, 9, 9]],
                                 [0.99, 0.99, 0.95, np.nan])
    with pytest.warns(RuntimeWarning, match="dropped 3 of 4") as caught:
        faces = detect_faces(np.zeros((100, 100, 3), np.uint8), "retinaface", weights_path=weights)
    message = str(caught[0].message)
    assert str(weights) in message and "damaged" in message and "mtcnn" in message
    assert len(faces) == 1 and np.array_equal(faces[0].box, [10, 20, 70, 80])


def test_only_non_finite_detections_is_an_error_naming_the_file(damaged_retinaface):
    weights = damaged_retinaface([[np.nan, 0, 5, 5]] * 310, [np.nan] * 310)
    with pytest.raises(FaceDetectorError) as err:
        detect_faces(np.zeros((100, 100, 3), np.uint8), "retinaface", weights_path=weights)
    message = str(err.value)
    assert str(weights) in message and "damaged" in message and "download it again" in message
    assert "detector='mtcnn'" in message
