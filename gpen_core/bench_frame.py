"""The video-frame figure: time spent OUTSIDE the network on one 1920x1080 frame with one face.

Detection + alignment + mask + paste-back of ``restore_faces`` on a frame made by placing the
astronaut test photo (tests/data/astronaut.jpg, 512 px, one face) on a grey 1920x1080 canvas, restored
by a stand-in network that returns its input (so the network's own time is excluded, not estimated).
Reported beside a 4096x4096 fp32 matmul timed in the same process, interleaved run by run, because
absolute milliseconds drift a lot on shared machines. Target (issue 10): <= 0.05 x that matmul.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

FRAME_SHAPE = (1080, 1920)
_PHOTO = Path(__file__).resolve().parent.parent / "tests" / "data" / "astronaut.jpg"


class _PassThrough:
    """A stand-in GPEN model: S x S crops in, the same crops out (no network time)."""

    def __init__(self, size: int, device: str):
        self.size, self.device = size, torch.device(device)

    def restore_crops(self, crops: np.ndarray) -> np.ndarray:
        return crops

    def restore_tensor(self, crops: torch.Tensor) -> torch.Tensor:
        """The tensor form (as GPENModel's), so that on a GPU the frame takes the device path."""
        return crops.float()


def make_frame(photo: np.ndarray | None = None) -> np.ndarray:
    """(1080, 1920, 3) uint8 RGB: ``photo`` (default: a 512 px one-face photo) pasted at (700, 300) on grey."""
    if photo is None:
        from .imageio import read_image

        photo = read_image(_PHOTO)[..., :3]
    frame = np.full((*FRAME_SHAPE, 3), 90, np.uint8)
    h, w = photo.shape[:2]
    frame[300:300 + h, 700:700 + w] = photo
    return frame


def _matmul_seconds(a: torch.Tensor) -> float:
    start = time.perf_counter()
    a @ a
    if a.device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def measure_frame(runs: int = 7, size: int = 512, device: str = "cpu", detector: str = "mtcnn",
                  mask: str = "rectangle", frame: np.ndarray | None = None) -> dict:
    """Median seconds outside the network per 1080p frame, per stage, and as a share of the matmul.

    runs: timed frames, each followed by one matmul (after one warm-up of both). size: crop side S.
    Returns {"what": "frame", "faces", "seconds_outside_network", "stages": {detect, align, mask, paste},
    "matmul_seconds", "share_of_matmul", "target_share": 0.05}.
    """
    from .pipeline import restore_faces

    frame = make_frame() if frame is None else frame
    model = _PassThrough(size, device)
    a = torch.randn(4096, 4096, device=device)
    stages = ("detect", "align", "mask", "paste")
    outside, matmul, per_stage = [], [], {k: [] for k in stages}
    for i in range(runs + 1):
        result = restore_faces(frame, model, detector=detector, mask=mask, device=device)
        seconds = _matmul_seconds(a)
        if i == 0:
            continue  # warm-up: detector loading, first-call allocations
        outside.append(sum(result.timings[k] for k in stages))
        matmul.append(seconds)
        for k in stages:
            per_stage[k].append(result.timings[k])
    median_outside, median_matmul = statistics.median(outside), statistics.median(matmul)
    return {"what": "frame", "faces": result.n_faces, "seconds_outside_network": median_outside,
            "stages": {k: statistics.median(v) for k, v in per_stage.items()},
            "matmul_seconds": median_matmul, "share_of_matmul": median_outside / median_matmul,
            "target_share": 0.05}
