"""RetinaFace (Deng et al. 2020) through facexlib, for users who already have its weights.

facexlib is imported only here and only when a RetinaFace file was found. Its network class is
built directly and loaded from the found file, so facexlib's download helper is never reached.
"""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import torch

from ..errors import FaceDetectorError


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .pth (weights_only) or .safetensors file, without DataParallel's ``module.`` prefix."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.serialization.load(path, map_location="cpu", weights_only=True)  # as checkpoint.py
    except Exception as err:  # any unreadable file gets the same actionable message
        raise FaceDetectorError(f"cannot read RetinaFace weights {path}: {err}") from err
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise FaceDetectorError(f"{path} is not a RetinaFace state dict")
    return {k.removeprefix("module."): v for k, v in state.items()}


def backbone_of(state: dict[str, torch.Tensor]) -> str:
    """facexlib network name ("resnet50" or "mobile0.25") read from the state-dict keys."""
    if any(k.startswith("body.layer2.") for k in state):
        return "resnet50"
    if any(k.startswith("body.stage1.") for k in state):
        return "mobile0.25"
    raise FaceDetectorError("weights are neither a ResNet-50 nor a MobileNet-0.25 RetinaFace")


@functools.lru_cache(maxsize=4)
def load_retinaface(path: str, device: str) -> torch.nn.Module:
    """facexlib ``RetinaFace`` with the weights at ``path`` on ``device``; cached per (path, device)."""
    try:
        from facexlib.detection.retinaface import RetinaFace
    except ImportError as err:
        raise FaceDetectorError(
            f"RetinaFace weights found at {path} but facexlib is not installed: pip install facexlib"
        ) from err
    state = _read_state(Path(path))
    try:
        backbone = backbone_of(state)
    except FaceDetectorError as err:
        raise FaceDetectorError(f"{path}: {err}") from None
    with warnings.catch_warnings():  # torchvision's resnet50(pretrained=False) deprecation notice
        warnings.simplefilter("ignore", UserWarning)
        net = RetinaFace(network_name=backbone, half=False, phase="test", device=torch.device(device))
    try:  # extra keys are tolerated (GPEN's own loader is not strict); missing ones are not
        missing = net.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as err:
        raise FaceDetectorError(f"{path} does not fit facexlib's RetinaFace-{backbone}: {err}") from err
    if missing:
        raise FaceDetectorError(f"{path} lacks {len(missing)} RetinaFace-{backbone} tensors, e.g. {missing[0]}")
    return net.eval()


def detect_retinaface(
    net: torch.nn.Module, image: np.ndarray, score_threshold: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Faces in a uint8 RGB HxWx3 image at full resolution.

    Returns boxes (N,4) float32 x1,y1,x2,y2, scores (N,) float32 and landmarks (N,5,2) float32 (x,y)
    in image px, in the order image-left eye, image-right eye, nose, mouth-left, mouth-right.
    """
    # facexlib subtracts the BGR means (104, 117, 123): it expects an OpenCV BGR image.
    bgr = np.ascontiguousarray(image[..., ::-1])
    with torch.inference_mode():
        out = net.detect_faces(bgr, conf_threshold=score_threshold, nms_threshold=0.4, use_origin_size=True)
    out = np.asarray(out, np.float32).reshape(-1, 15)
    return out[:, 0:4].copy(), out[:, 4].copy(), out[:, 5:15].reshape(-1, 5, 2).copy()
