"""Face detection: embedded MTCNN on real photos, face selection, and the facexlib RetinaFace path."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from gpen_core.detection import as_rgb8, detect_faces, resolve_detector
from gpen_core.detection.mtcnn import nms, square
from gpen_core.detection.retinaface import backbone_of, load_retinaface
from gpen_core.errors import FaceDetectorError, ImageError
from gpen_core.faces import Face, select_faces

DATA = Path(__file__).parent / "data"

# Face centres (x, y) of the 29 people in the Solvay photo, checked by eye once on a drawn detection.
SOLVAY_CENTRES = np.array([
    (80, 176), (126, 225), (199, 195), (225, 55), (262, 229), (322, 85), (336, 180), (390, 113),
    (398, 224), (483, 181), (500, 107), (547, 230), (624, 117), (641, 171), (722, 221), (722, 93),
    (756, 175), (833, 98), (845, 223), (882, 184), (940, 94), (952, 223), (1026, 187), (1032, 90),
    (1105, 229), (1103, 51), (1160, 195), (1167, 91), (1211, 246),
], np.float32)


def read_rgb(name: str) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / name), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def solvay_rgba() -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(DATA / "solvay_conference_1927.png"), cv2.IMREAD_UNCHANGED),
                        cv2.COLOR_BGRA2RGBA)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return read_rgb("astronaut.jpg")


@pytest.fixture
def no_weights_anywhere(clean_env):
    return clean_env


def assert_plausible_landmarks(face: Face) -> None:
    (lx, ly), (rx, ry), (nx, ny), (mlx, mly), (mrx, mry) = face.landmarks
    x1, y1, x2, y2 = face.box
    assert np.all((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])), "landmark outside its box"
    assert lx < nx < rx and mlx < mrx, "left/right order"
    assert max(ly, ry) < ny < min(mly, mry), "eyes above nose above mouth"
    assert abs(ly - ry) < 0.25 * face.size and abs(mly - mry) < 0.25 * face.size, "upright face"


def test_mtcnn_finds_the_solvay_faces_and_nothing_else(solvay_rgba):
    faces = detect_faces(solvay_rgba, "mtcnn", device="cpu")  # RGBA in: alpha is ignored

    centres = np.stack([f.center for f in faces])
    dist = np.linalg.norm(centres[:, None] - SOLVAY_CENTRES[None], axis=2)
    assert np.all(dist.min(1) < 8), "a detection matches no person (false positive)"
    assert len(set(dist.argmin(1))) == len(faces), "a person detected twice"
    assert len(faces) == 29
    assert all(f.score >= 0.7 for f in faces)
    assert all(25 < f.size < 50 for f in faces)
    for face in faces:
        assert face.box.dtype == np.float32 and face.landmarks.shape == (5, 2)
        assert_plausible_landmarks(face)
    assert [f.box[0] for f in faces] == sorted(f.box[0] for f in faces), "left-to-right order"


def test_mtcnn_one_face_on_the_astronaut(astronaut):
    faces = detect_faces(astronaut, "mtcnn", device="cpu")
    assert len(faces) == 1, "flag, shuttle and mission patch are not faces"
    face = faces[0]
    assert face.score > 0.99
    assert np.allclose(face.center, (222, 119), atol=10) and 70 < face.size < 110
    assert_plausible_landmarks(face)
    # the eyes are about 43 px apart in this 512 px photo
    assert 35 < face.landmarks[1, 0] - face.landmarks[0, 0] < 50


def test_gray_and_large_images_map_back_to_input_pixels(astronaut):
    reference = detect_faces(astronaut, "mtcnn", device="cpu")[0]
    big = cv2.resize(astronaut, None, fx=4, fy=4, interpolation=cv2.INTER_CUBIC)  # 2048 px: detected at 1000
    gray = cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY)
    (large,) = detect_faces(big, "mtcnn", device="cpu")
    assert np.allclose(large.landmarks / 4, reference.landmarks, atol=3)
    assert np.allclose(large.box / 4, reference.box, atol=6)
    (from_gray,) = detect_faces(gray, "mtcnn", device="cpu")
    assert np.allclose(from_gray.landmarks, reference.landmarks, atol=3)


def test_min_face_size_and_score_threshold(solvay_rgba):
    assert detect_faces(solvay_rgba, "mtcnn", device="cpu", min_face_size=45) == []
    strict = detect_faces(solvay_rgba, "mtcnn", device="cpu", score_threshold=0.99)
    assert 0 < len(strict) < 29 and all(f.score >= 0.99 for f in strict)


def test_no_face_and_bad_input():
    assert detect_faces(np.full((200, 300, 3), 127, np.uint8), "mtcnn", device="cpu") == []
    with pytest.raises(ImageError):
        detect_faces(np.zeros((10, 10, 3), np.float32), "mtcnn")
    with pytest.raises(ImageError):
        as_rgb8(np.zeros((10, 10, 2), np.uint8))
    with pytest.raises(ValueError):
        detect_faces(np.zeros((10, 10, 3), np.uint8), "yolo")


def test_nms_union_and_min():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [2, 2, 6, 6]], np.float32)
    scores = np.array([0.9, 0.8, 0.7, 0.95], np.float32)
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # box 1 overlaps box 0 (IoU 0.68)
    assert nms(boxes, scores, 0.5, mode="min").tolist() == [3, 2]  # box 3 lies inside 0 and 1


def test_square_keeps_centre():
    out = square(np.array([[10, 20, 30, 60]], np.float32))
    assert out.tolist() == [[0, 20, 40, 60]]


def make_face(x1, y1, side, score=0.99):
    box = np.array([x1, y1, x1 + side, y1 + side], np.float32)
    return Face(box, score, np.zeros((5, 2), np.float32))


def test_select_faces():
    faces = [make_face(0, 0, 50), make_face(100, 40, 30, 0.8), make_face(190, 80, 20), make_face(300, 0, 80)]
    shape = (200, 400, 3)  # centre (200, 100)
    assert select_faces(faces, shape) == faces
    assert select_faces(faces, shape, mode="largest") == [faces[3]]
    assert select_faces(faces, shape, mode="largest", max_faces=2) == [faces[3], faces[0]]
    assert select_faces(faces, shape, mode="center") == [faces[2]]
    assert select_faces(faces, shape, max_faces=2) == [faces[0], faces[3]]  # largest two, input order
    assert select_faces(faces, shape, indices=[2, -1, 7, 2]) == [faces[2], faces[3]]
    assert select_faces(faces, shape, min_size=40) == [faces[0], faces[3]]
    assert select_faces(faces, shape, score_threshold=0.9) == [faces[0], faces[2], faces[3]]
    assert select_faces(faces, shape, mode="largest", indices=[1, 2]) == [faces[1]]
    assert select_faces([], shape, mode="center") == []
    with pytest.raises(ValueError):
        select_faces(faces, shape, mode="smallest")


# --- RetinaFace through facexlib ---------------------------------------------------------------

@pytest.fixture
def no_downloads(monkeypatch):
    """Every download route facexlib or torch could take raises."""
    import urllib.request

    import facexlib.detection
    import facexlib.utils.misc
    import torch.hub

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(facexlib.utils.misc, "load_file_from_url", refuse)
    monkeypatch.setattr(facexlib.detection, "load_file_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def random_retinaface_file(folder: Path, name: str = "detection_mobilenet0.25_Final.pth") -> Path:
    """A random-init facexlib RetinaFace saved like the official files (DataParallel ``module.`` keys)."""
    from facexlib.detection.retinaface import RetinaFace

    torch.manual_seed(0)
    net = RetinaFace(network_name="mobile0.25", device=torch.device("cpu"))
    folder.mkdir(parents=True, exist_ok=True)
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, folder / name)
    return folder / name


def test_retinaface_from_a_comfyui_folder_is_found_and_used(no_weights_anywhere, no_downloads, astronaut):
    from facexlib.detection.retinaface import RetinaFace

    comfy_dir = no_weights_anywhere / "ComfyUI" / "models" / "facedetection"
    weights = random_retinaface_file(comfy_dir)

    name, path = resolve_detector("auto", search_dirs=[comfy_dir])
    assert (name, path) == ("retinaface", weights)
    load_retinaface.cache_clear()
    small = cv2.resize(astronaut, (160, 160), interpolation=cv2.INTER_AREA)
    faces = detect_faces(small, "auto", device="cpu", search_dirs=[comfy_dir], score_threshold=0.99)
    net = load_retinaface(str(weights.resolve()), "cpu")
    assert isinstance(net, RetinaFace) and net.cfg["name"] == "mobilenet0.25"
    assert load_retinaface.cache_info().hits >= 1 and load_retinaface.cache_info().currsize == 1
    # random weights: the detections are garbage, but must come back in the documented form
    assert all(f.box.shape == (4,) and f.landmarks.shape == (5, 2) and f.score >= 0.99 for f in faces)


def test_retinaface_via_explicit_weights_and_env(no_weights_anywhere, no_downloads, monkeypatch):
    weights = random_retinaface_file(no_weights_anywhere / "elsewhere", "my_retinaface.pth")
    assert resolve_detector("retinaface", weights_path=weights) == ("retinaface", weights)
    monkeypatch.setenv("GPEN_DETECTION_WEIGHTS", str(weights))
    assert resolve_detector("auto") == ("retinaface", weights)


def test_retinaface_without_weights_says_where_to_put_them(no_weights_anywhere):
    host = no_weights_anywhere / "A1111" / "models" / "GFPGAN"
    assert resolve_detector("auto", search_dirs=[host]) == ("mtcnn", None)
    with pytest.raises(FaceDetectorError) as err:
        detect_faces(np.zeros((64, 64, 3), np.uint8), "retinaface", search_dirs=[host])
    message = str(err.value)
    assert "detection_Resnet50_Final.pth" in message and str(host) in message and "mtcnn" in message


def test_unusable_retinaface_file_is_a_clear_error(no_weights_anywhere):
    bad = no_weights_anywhere / "detection_Resnet50_Final.pth"
    bad.write_bytes(b"not a checkpoint")
    load_retinaface.cache_clear()
    with pytest.raises(FaceDetectorError, match="cannot read"):
        detect_faces(np.zeros((64, 64, 3), np.uint8), "retinaface", weights_path=bad, device="cpu")
    with pytest.raises(FaceDetectorError):
        backbone_of({"conv.weight": torch.zeros(1)})
    assert backbone_of({"body.layer2.0.conv1.weight": torch.zeros(1)}) == "resnet50"


def test_retinaface_file_layouts(no_weights_anywhere, no_downloads):
    """GPEN-style files ({"state_dict": ...}, extra tensors) load; a file missing tensors is refused."""
    weights = random_retinaface_file(no_weights_anywhere / "w")
    state = torch.load(weights, weights_only=True)
    torch.save({"state_dict": {**state, "extra.num_batches": torch.zeros(1)}}, weights)
    load_retinaface.cache_clear()
    assert load_retinaface(str(weights), "cpu").cfg["name"] == "mobilenet0.25"

    state.pop("module.LandmarkHead.0.conv1x1.weight")
    torch.save(state, weights)
    load_retinaface.cache_clear()
    with pytest.raises(FaceDetectorError, match="lacks 1"):
        load_retinaface(str(weights), "cpu")
