"""Smoothing a face's 5 landmarks along its track, so a restored face in a video does not shimmer.

The detector's landmarks jitter by a fraction of a pixel to a few pixels from frame to frame; each wobble moves
the aligned crop and so the restored face. A causal filter (One-Euro, alpha-beta) must trade that jitter against
lag, and a lagging crop is pasted beside the moving face. Video is restored with a short look-ahead instead
(``SmoothingParams.delay`` frames), so each frame's landmarks are a local linear fit through the track's
detections on both sides of it: steady when the face is still, no lag at any steady speed (the fit is centred),
and a detection the detector missed is filled in from its neighbours. All five points share one fit in time,
so the face shape is never distorted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SmoothingParams:
    """Settings of the landmark smoothing.

    radius: frames on each side of a frame whose detections are fitted (0 = no smoothing).
    max_gap: longest run of frames without a detection that a track bridges (filled in from both sides).
    """

    radius: int = 4
    max_gap: int = 6

    @property
    def delay(self) -> int:
        """Frames a frame waits for the ones after it: the look-ahead the fit and the bridging need."""
        return max(self.radius, self.max_gap)


def fit_landmarks(times: np.ndarray, points: np.ndarray, at: float) -> np.ndarray:
    """Landmarks at time ``at`` from a weighted local linear fit through a track's detections.

    times: (N,) seconds of the detections, N >= 1; points: (N, 5, 2) float (x, y) px. Weights fall off with the
    distance in time (tricube over the span of the samples), so the nearest detections count most. With one
    sample, or all at one time, it is their weighted mean. Returns (5, 2) float32 px.
    """
    times = np.asarray(times, np.float64)
    points = np.asarray(points, np.float64).reshape(len(times), -1)
    offsets = times - at
    span = np.abs(offsets).max()
    step = np.diff(np.sort(times)).min() if len(times) > 1 else 1.0
    weights = (1 - (np.abs(offsets) / (span + max(step, 1e-6))) ** 3) ** 3
    w_sum = weights.sum()
    mean_t = (weights * offsets).sum() / w_sum
    mean_p = (weights[:, None] * points).sum(0) / w_sum
    var_t = (weights * (offsets - mean_t) ** 2).sum() / w_sum
    if var_t < 1e-12:
        return mean_p.reshape(5, 2).astype(np.float32)
    slope = (weights[:, None] * (offsets - mean_t)[:, None] * (points - mean_p)).sum(0) / w_sum / var_t
    return (mean_p - slope * mean_t).reshape(5, 2).astype(np.float32)
