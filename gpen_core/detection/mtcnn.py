"""MTCNN face detector (Zhang et al. 2016): P-Net / R-Net / O-Net cascade with 5 landmarks.

The weights ship in ``gpen_core/weights/mtcnn.safetensors`` (converted once from the MIT-licensed
facenet-pytorch 2.6.0 wheel by ``tools/convert_mtcnn_weights.py``; see ``weights/LICENSE-mtcnn.txt``).
All nets take NCHW float32 RGB crops scaled as ``(pixel - 127.5) / 128``.

Coordinates: boxes are pixel edges (pixel ``i`` spans ``[i, i+1)``), the convention RetinaFace and the
official GPEN alignment use, so landmarks from either detector feed ``cv2.warpAffine`` the same way.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from ..errors import FaceDetectorError

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "mtcnn.safetensors"

CELL = 12  # P-Net window side in pixels of a pyramid level
STRIDE = 2  # P-Net output stride in pixels of a pyramid level
# A face must be confirmed by at least this many R-Net windows (IoU > SUPPORT_IOU with the final box),
# unless O-Net is at least SURE_SCORE sure. On the Solvay and astronaut photos (scaled 0.35-2x, mirrored,
# pyramid floors 12-30 px) every false positive, O-Net scores up to 0.95, had a single window, and every
# face had two or more except faces at the pyramid floor (those scored 0.84-0.996).
MIN_SUPPORT, SUPPORT_IOU, SURE_SCORE = 2, 0.4, 0.98


def face_probability(logits: torch.Tensor) -> torch.Tensor:
    """softmax(logits, dim 1)[:, 1] for two classes (not face, face), as sigmoid of their difference:
    one pass instead of a strided softmax over a 2-channel map."""
    return torch.sigmoid(logits[:, 1] - logits[:, 0])


class PNet(nn.Module):
    """Proposal net: fully convolutional; each output cell scores one 12x12 window, stride 2."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 10, 3), nn.PReLU(10), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(10, 16, 3), nn.PReLU(16),
            nn.Conv2d(16, 32, 3), nn.PReLU(32),
        )
        self.score = nn.Conv2d(32, 2, 1)
        self.box = nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B,3,H,W) -> face probability (B,H',W'), box offsets (B,4,H',W') in window sides."""
        h = self.features(x)
        return face_probability(self.score(h)), self.box(h)


class RNet(nn.Module):
    """Refine net: 24x24 crops -> face probability (B,), box offsets (B,4) in crop sides."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 28, 3), nn.PReLU(28), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(28, 48, 3), nn.PReLU(48), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(48, 64, 2), nn.PReLU(64), nn.Flatten(),
            nn.Linear(576, 128), nn.PReLU(128),
        )
        self.score = nn.Linear(128, 2)
        self.box = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return face_probability(self.score(h)), self.box(h)


class ONet(nn.Module):
    """Output net: 48x48 crops -> probability (B,), box offsets (B,4), landmarks (B,5,2) in crop sides."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3), nn.PReLU(32), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(32, 64, 3), nn.PReLU(64), nn.MaxPool2d(3, 2, ceil_mode=True),
            nn.Conv2d(64, 64, 3), nn.PReLU(64), nn.MaxPool2d(2, 2, ceil_mode=True),
            nn.Conv2d(64, 128, 2), nn.PReLU(128), nn.Flatten(),
            nn.Linear(1152, 256), nn.PReLU(256),
        )
        self.score = nn.Linear(256, 2)
        self.box = nn.Linear(256, 4)
        self.landmarks = nn.Linear(256, 10)  # (x, y) interleaved per point

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = self.features(x)
        return face_probability(self.score(h)), self.box(h), self.landmarks(h).view(-1, 5, 2)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    boxes (N,4) x1,y1,x2,y2; overlap is intersection over union, or over the smaller box for
    ``mode="min"`` (used on the final stage, where a big box may swallow a small one).
    """
    x1, y1, x2, y2 = boxes.T
    area = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        iw = np.clip(np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]), 0, None)
        inter = iw * ih
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        order = rest[inter <= threshold * denom]
    return np.asarray(keep, dtype=np.int64)


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,M) intersection over union of boxes a (N,4) and b (M,4), x1,y1,x2,y2."""
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = iw * ih
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Move each box edge by its offset times the box width/height; (N,4) float32."""
    wh = np.tile(boxes[:, 2:4] - boxes[:, 0:2], 2)
    return (boxes + offsets * wh).astype(np.float32)


def square(boxes: np.ndarray) -> np.ndarray:
    """Square integer boxes of side max(w, h) (at least 1 px) around each box centre; (N,4) float32."""
    side = np.maximum(np.round((boxes[:, 2:4] - boxes[:, 0:2]).max(1)), 1)
    x1y1 = np.round((boxes[:, 0:2] + boxes[:, 2:4] - side[:, None]) / 2)
    return np.concatenate([x1y1, x1y1 + side[:, None]], 1).astype(np.float32)


def crop_windows(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Crops of integer boxes, zero-padded outside the image, resized to size^2; (N,3,size,size) float32."""
    h, w = image.shape[:2]
    out = np.empty((len(boxes), size, size, 3), np.uint8)
    for i, (x1, y1, x2, y2) in enumerate(boxes.astype(np.int64)):
        if x1 >= 0 and y1 >= 0 and x2 <= w and y2 <= h:
            patch = image[y1:y2, x1:x2]
        else:
            patch = np.zeros((y2 - y1, x2 - x1, 3), np.uint8)
            sx1, sy1, sx2, sy2 = max(x1, 0), max(y1, 0), min(x2, w), min(y2, h)
            if sx2 > sx1 and sy2 > sy1:
                patch[sy1 - y1:sy2 - y1, sx1 - x1:sx2 - x1] = image[sy1:sy2, sx1:sx2]
        out[i] = cv2.resize(patch, (size, size), interpolation=cv2.INTER_AREA)
    return normalize(out)


def normalize(pixels: np.ndarray) -> np.ndarray:
    """(N,H,W,3) uint8 RGB -> (N,3,H,W) float32 ``(p - 127.5) / 128`` as the nets were trained."""
    return (pixels.transpose(0, 3, 1, 2).astype(np.float32) - 127.5) * (1 / 128)


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float) -> list[float]:
    """Scales at which a face of min_face_size px first fills the 12 px window, shrinking by factor."""
    scale, side, scales = CELL / min_face_size, min(height, width) * CELL / min_face_size, []
    while side >= CELL:
        scales.append(scale)
        scale, side = scale * factor, side * factor
    return scales


def pnet_cells(side: int) -> int:
    """P-Net output cells along a side of ``side`` px (3x3 conv, 2x2 ceil-mode pool, two 3x3 convs)."""
    return -(-(side - 2) // 2) - 4


def pack_levels(sizes: list[tuple[int, int]]) -> tuple[list[tuple[int, int]], tuple[int, int]]:
    """Shelf-pack pyramid levels (h, w), largest first, into one canvas as wide as the first level.

    Returns each level's (y, x) offset, both even so P-Net's stride-2 cells line up with each level's own,
    and the canvas (h, w). P-Net's receptive field is its 12 px window, so a cell whose window lies inside
    a level sees only that level: it scores exactly as on the level alone (only the last cell of an odd
    side, whose window pokes 1 px out, sees a neighbour's pixel instead of the pool's padding).
    """
    width = sizes[0][1] + sizes[0][1] % 2
    offsets, x, y, shelf = [], 0, 0, 0
    for h, w in sizes:
        if x + w > width:  # next shelf
            x, y, shelf = 0, y + shelf, 0
        offsets.append((y, x))
        x += w + w % 2
        shelf = max(shelf, h + h % 2)
    return offsets, (y + shelf, width)


class MTCNN:
    """The three nets on one device plus the cascade; weights from ``WEIGHTS``."""

    def __init__(self, device: torch.device | str = "cpu", weights: Path = WEIGHTS) -> None:
        from safetensors.torch import load_file

        if not Path(weights).is_file():
            raise FaceDetectorError(f"MTCNN weights missing: {weights} (reinstall gpen_core)")
        state = load_file(str(weights))
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()
        for name, net in (("pnet", self.pnet), ("rnet", self.rnet), ("onet", self.onet)):
            prefix = name + "."
            net.load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            net.to(self.device).eval()

    def _run(self, net: nn.Module, crops: np.ndarray, chunk: int = 2048) -> list[np.ndarray]:
        """Run a crop net in chunks (bounded memory); outputs as float32 numpy arrays."""
        parts = [net(torch.from_numpy(crops[i:i + chunk]).to(self.device)) for i in range(0, len(crops), chunk)]
        return [torch.cat(p).float().cpu().numpy() for p in zip(*parts, strict=True)]

    def _propose(self, image: np.ndarray, min_face_size: float, factor: float, threshold: float) -> np.ndarray:
        """Stage 1: P-Net over the image pyramid -> square integer candidate boxes (N,4).

        The levels are packed into two canvases (the largest level, then all others) so P-Net runs twice
        per image instead of once per level; per-level results equal separate runs (see ``pack_levels``).
        """
        h, w = image.shape[:2]
        sizes = [(int(np.ceil(h * s)), int(np.ceil(w * s))) for s in pyramid_scales(h, w, min_face_size, factor)]
        found = []
        for group in (sizes[:1], sizes[1:]):
            if not group:
                continue
            offsets, (ch, cw) = pack_levels(group)
            canvas = np.full((1, ch, cw, 3), 128, np.uint8)
            for (sh, sw), (oy, ox) in zip(group, offsets, strict=True):
                canvas[0, oy:oy + sh, ox:ox + sw] = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
            prob, regression = self.pnet(torch.from_numpy(normalize(canvas)).to(self.device))
            prob, regression = prob[0].float().cpu().numpy(), regression[0].float().cpu().numpy()
            for (sh, sw), (oy, ox) in zip(group, offsets, strict=True):
                cy, cx, ny, nx = oy // STRIDE, ox // STRIDE, pnet_cells(sh), pnet_cells(sw)
                level_prob = prob[cy:cy + ny, cx:cx + nx]
                ys, xs = np.nonzero(level_prob >= threshold)
                if not len(ys):
                    continue
                # window edges on the level, mapped back with the level's exact per-axis scale
                win = np.stack([xs * STRIDE, ys * STRIDE, xs * STRIDE + CELL, ys * STRIDE + CELL], 1)
                win = (win / np.array([sw / w, sh / h, sw / w, sh / h])).astype(np.float32)
                cand = np.concatenate([win, level_prob[ys, xs, None], regression[:, cy + ys, cx + xs].T], 1)
                found.append(cand[nms(cand[:, :4], cand[:, 4], 0.5)])
        if not found:
            return np.zeros((0, 4), np.float32)
        cand = np.concatenate(found)
        cand = cand[nms(cand[:, :4], cand[:, 4], 0.7)]
        return square(regress(cand[:, :4], cand[:, 5:9]))

    @torch.inference_mode()
    def detect(
        self,
        image: np.ndarray,
        min_face_size: float = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces in a uint8 RGB HxWx3 image.

        min_face_size: the pyramid floor, px: the smallest face side searched (raised to 12, the P-Net
        window). thresholds: per-stage face probabilities. A face is kept when at least MIN_SUPPORT
        windows that passed R-Net overlap it, or O-Net scores it >= SURE_SCORE (false positives of
        textures are single windows; see MIN_SUPPORT). Returns boxes (N,4) float32 x1,y1,x2,y2, scores (N,) float32 in [0,1] and
        landmarks (N,5,2) float32 (x,y) in image px: image-left eye, image-right eye, nose,
        mouth-left, mouth-right. Boxes may extend past the image border.
        """
        empty = (np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32))
        boxes = self._propose(image, max(float(min_face_size), CELL), factor, thresholds[0])
        if not len(boxes):
            return empty

        prob, offsets = self._run(self.rnet, crop_windows(image, boxes, 24))
        keep = prob >= thresholds[1]
        boxes, prob, offsets = boxes[keep], prob[keep], offsets[keep]
        confirmed = boxes
        keep = nms(boxes, prob, 0.7)
        boxes = square(regress(boxes[keep], offsets[keep]))
        if not len(boxes):
            return empty

        prob, offsets, points = self._run(self.onet, crop_windows(image, boxes, 48))
        keep = prob >= thresholds[2]
        boxes, prob, offsets, points = boxes[keep], prob[keep], offsets[keep], points[keep]
        landmarks = boxes[:, None, 0:2] + points * (boxes[:, None, 2:4] - boxes[:, None, 0:2])
        boxes = regress(boxes, offsets)
        keep = nms(boxes, prob, 0.7, mode="min")
        boxes, prob, landmarks = boxes[keep], prob[keep], landmarks[keep]
        support = (iou_matrix(boxes, confirmed) > SUPPORT_IOU).sum(1)
        keep = (support >= MIN_SUPPORT) | (prob >= SURE_SCORE)
        return boxes[keep], prob[keep].astype(np.float32), landmarks[keep].astype(np.float32)
