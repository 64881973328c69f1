"""Faces followed across video frames: tracks, scene cuts, and a face choice that stays on one person.

Frame by frame: ``SceneCutDetector`` says whether the picture changed shot; ``FaceTracker`` links the frame's
detections to the tracks of the previous frames (box overlap, then landmark distance) and starts new tracks after
a cut; ``TrackHistory`` smooths each track's landmarks (``gpen_core.smoothing``) and bridges a track that misses a
few detections; ``TrackSelector`` applies ``largest`` / ``center`` / indices to tracks, so the choice stays on one
person.
Coordinates are (x, y) image px of the frame as shown (upright).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from .faces import Face
from .options import SELECT_MODES
from .smoothing import SmoothingParams, fit_landmarks


@dataclass(eq=False)
class TrackedFace(Face):
    """One face of one frame: a :class:`Face` (box, score, landmarks, in px) that belongs to a track.

    landmarks: the landmarks to align with (smoothed, or filled in when bridged); box: the nearest detection's
    box, moved with the landmarks; score: that detection's confidence. track: id of the track (person), counting
    from 0 in a video. detected: False when the detector missed the face in this frame and the track bridged it.
    """

    track: int = 0
    detected: bool = True


class SceneCutDetector:
    """Says whether a frame starts a new shot, from a colour histogram and a thumbnail of consecutive frames.

    A cut needs both a large histogram change (total-variation distance of 3 x 16-bin channel histograms, 0..1,
    above ``threshold``) and a large picture change (mean absolute thumbnail difference above
    ``min_difference`` grey levels), so camera motion or a face turning does not count as a cut.
    """

    def __init__(self, threshold: float = 0.35, min_difference: float = 20.0):
        self.threshold = threshold
        self.min_difference = min_difference
        self._previous: tuple[np.ndarray, np.ndarray] | None = None

    def __call__(self, rgb: np.ndarray) -> bool:
        """True when ``rgb`` ((H, W, 3) uint8 RGB) starts a new shot; the first frame is no cut."""
        thumb = cv2.resize(rgb, (64, 36), interpolation=cv2.INTER_AREA)
        hist = np.concatenate([np.bincount(thumb[..., c].ravel() >> 4, minlength=16) for c in range(3)])
        hist = hist / hist.sum()
        previous, self._previous = self._previous, (thumb.astype(np.int16), hist)
        if previous is None:
            return False
        distance = 0.5 * float(np.abs(hist - previous[1]).sum())
        difference = float(np.abs(thumb.astype(np.int16) - previous[0]).mean())
        return distance > self.threshold and difference > self.min_difference


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two x1, y1, x2, y2 boxes, in [0, 1]."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


class FaceTracker:
    """Links each frame's detections to the tracks of the frames before.

    A detection joins the track whose last box overlaps it most (IoU >= ``min_iou``) or, failing that, whose last
    landmarks are within ``max_distance`` face scales (``gpen_core.smoothing``-style RMS distance / face scale);
    each track takes at most one detection per frame. A track not seen for more than ``max_missed`` frames ends;
    a scene cut ends all tracks. Track ids count from 0 and are never reused.
    """

    def __init__(self, *, max_missed: int = 6, min_iou: float = 0.3, max_distance: float = 1.0):
        self.max_missed = max_missed
        self.min_iou = min_iou
        self.max_distance = max_distance
        self.tracks: dict[int, tuple[Face, int]] = {}  # id -> (last detection, frames since)
        self.next_id = 0

    def update(self, faces: Sequence[Face], *, scene_cut: bool = False) -> list[int]:
        """Track ids of the frame's ``faces``, in their order (new ids for faces that start a track)."""
        if scene_cut:
            self.tracks = {}
        pairs = []
        for track_id, (last, _) in self.tracks.items():
            for fi, face in enumerate(faces):
                iou = box_iou(last.box, face.box)
                distance = float(np.sqrt(((last.landmarks - face.landmarks) ** 2).sum(axis=1).mean()))
                distance /= _scale(last.landmarks)
                if iou >= self.min_iou or distance <= self.max_distance:
                    pairs.append((-iou, distance, track_id, fi))
        ids: list[int | None] = [None] * len(faces)
        for _, _, track_id, fi in sorted(pairs):  # greedy: best overlap first
            if ids[fi] is None and track_id not in ids:
                ids[fi] = track_id
        tracks = {}
        for track_id, (last, missed) in self.tracks.items():
            if track_id not in ids and missed < self.max_missed:
                tracks[track_id] = (last, missed + 1)
        for fi, face in enumerate(faces):
            if ids[fi] is None:
                ids[fi] = self.next_id
                self.next_id += 1
            tracks[ids[fi]] = (face, 0)
        self.tracks = tracks
        return ids


def _scale(points: np.ndarray) -> float:
    """RMS distance in px of (5, 2) landmarks from their centroid (about a quarter of the face width)."""
    centred = points - points.mean(axis=0)
    return max(float(np.sqrt((centred ** 2).sum(axis=1).mean())), 1e-3)


class TrackHistory:
    """The recent detections of every track, and from them each frame's smoothed and bridged faces.

    ``add`` records a frame's tracked detections; ``faces_at`` gives a frame's faces once the ``params.delay``
    frames after it have been added: each track detected within ``params.radius`` frames gets landmarks fitted
    through its detections in that window (``gpen_core.smoothing.fit_landmarks``); a track missed in this frame
    but detected on both sides within ``params.max_gap`` frames is bridged the same way. params None: the raw
    detections of the frame, nothing bridged.
    """

    def __init__(self, params: SmoothingParams | None):
        self.params = params
        self.samples: dict[int, list[tuple[int, float, Face]]] = {}  # track -> (frame index, time s, face)

    def add(self, index: int, time: float, track_ids: Sequence[int], faces: Sequence[Face]) -> None:
        """Record frame ``index`` at ``time`` seconds: its detections and their track ids."""
        for track_id, face in zip(track_ids, faces, strict=True):
            self.samples.setdefault(track_id, []).append((index, float(time), face))

    def faces_at(self, index: int, time: float) -> list[TrackedFace]:
        """Faces of frame ``index`` (at ``time`` s), ordered by track id; forgets what no later frame needs."""
        out = []
        radius = self.params.radius if self.params is not None else 0
        max_gap = self.params.max_gap if self.params is not None else 0
        for track_id, samples in sorted(self.samples.items()):
            here = next((face for i, _, face in samples if i == index), None)
            before = [s for s in samples if s[0] < index]
            after = [s for s in samples if s[0] > index]
            if here is None:
                if not before or not after or after[0][0] - before[-1][0] - 1 > max_gap:
                    continue
                reach = max(radius, index - before[-1][0], after[0][0] - index)
            else:
                reach = radius
            window = [s for s in samples if abs(s[0] - index) <= reach]
            nearest = min(window, key=lambda s: abs(s[0] - index))[2]
            if radius == 0 and here is not None:
                landmarks = np.asarray(here.landmarks, np.float32).copy()
            else:
                landmarks = fit_landmarks(np.array([s[1] for s in window]),
                                          np.stack([s[2].landmarks for s in window]), time)
            shift = landmarks.mean(axis=0) - np.asarray(nearest.landmarks, np.float32).mean(axis=0)
            box = np.asarray(nearest.box, np.float32) + np.tile(shift, 2).astype(np.float32)
            out.append(TrackedFace(box, float(nearest.score), landmarks, track=track_id, detected=here is not None))
        keep_from = index - max(radius, max_gap)
        for track_id in list(self.samples):
            self.samples[track_id] = [s for s in self.samples[track_id] if s[0] >= keep_from]
            if not self.samples[track_id]:
                del self.samples[track_id]
        return out


class TrackSelector:
    """Chooses which tracked faces to restore, so that a choice stays on one person.

    mode, indices, max_faces: as ``gpen_core.faces.select_faces``: ``indices`` are positions left to right among
    the faces of the frame where the choice is made; ``largest`` / ``center`` rank by box area / distance to the
    image centre. The chosen tracks are kept while they live; when fewer than wanted are alive (first frame,
    after a scene cut, a person left), the choice is topped up from the current faces. How many are wanted:
    ``max_faces`` if given, else 1 for largest / center, else as many as ``indices`` name, else all.
    """

    def __init__(self, mode: str = "all", indices: Sequence[int] | None = None, max_faces: int | None = None):
        if mode not in SELECT_MODES:
            raise ValueError(f"face selection mode must be one of {SELECT_MODES}, got {mode!r}")
        self.mode = mode
        self.indices = None if indices is None else list(indices)
        if max_faces is not None:
            self.wanted = max_faces
        elif mode != "all":
            self.wanted = 1
        elif self.indices is not None:
            self.wanted = len(set(self.indices))
        else:
            self.wanted = None
        self.chosen: list[int] = []

    def __call__(self, faces: Sequence[TrackedFace], image_shape: tuple[int, ...]) -> list[TrackedFace]:
        """The chosen faces of one frame (a subset of ``faces``, same order); image_shape: (H, W, ...)."""
        live = {f.track for f in faces}
        self.chosen = [t for t in self.chosen if t in live]
        if self.wanted is None and self.indices is None:
            return list(faces)
        if self.wanted is None or len(self.chosen) < self.wanted:
            candidates = sorted(faces, key=lambda f: (float(f.box[0]), float(f.box[1])))
            if self.indices is not None:
                n = len(candidates)
                candidates = [candidates[i % n] for i in dict.fromkeys(i % n for i in self.indices if -n <= i < n)]
            candidates = [f for f in candidates if f.track not in self.chosen]
            if self.mode == "largest" or (self.mode == "all" and self.indices is None):
                candidates.sort(key=lambda f: -f.area)
            elif self.mode == "center":
                middle = np.array([image_shape[1], image_shape[0]], np.float32) / 2
                candidates.sort(key=lambda f: float(np.hypot(*(f.center - middle))))
            room = len(candidates) if self.wanted is None else self.wanted - len(self.chosen)
            self.chosen += [f.track for f in candidates[:room]]
        chosen = set(self.chosen)
        return [f for f in faces if f.track in chosen]
