"""Peak memory of restore_video for a short and a long 1080p clip (the video path must not grow with length).

    python tools/video_memory.py [--seconds 5 60] [--dir /tmp/gpen_video_memory] [--detector mtcnn]

Makes an H.264 + AAC 1920x1080 25 fps clip of each length (tests/data/astronaut.jpg drifting across the frame),
then restores each in a fresh process with an identity restorer and prints its peak RSS. Decoding, tracking,
smoothing, alignment, paste-back, encoding and the audio copy all run; the GPEN network is skipped and, unless
--detector is given, so is face detection (a stand-in returns the face where the clip put it), so that a
minute of 1080p takes minutes on a small CPU. Both leave out only fixed-size parts (weights).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _offset(i: int) -> tuple[float, float]:
    return 600 + 300 * np.sin(i / 50), 200 + 0.1 * i


def make_clip(path: Path, seconds: int, fps: int = 25, frames: int | None = None) -> None:
    """An H.264 + AAC 1920x1080 clip of `seconds` (or of `frames` frames) with the astronaut drifting."""
    import av
    import cv2

    from gpen_core.imageio import read_image

    photo = read_image(ROOT / "tests" / "data" / "astronaut.jpg")
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 1920, 1080, "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        n_frames = frames if frames is not None else seconds * fps
        for i in range(n_frames):
            dx, dy = _offset(i)
            shift = np.array([[1.2, 0, dx], [0, 1.2, dy]])
            frame = cv2.warpAffine(photo, shift, (1920, 1080), borderMode=cv2.BORDER_REFLECT)
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        samples = np.zeros((2, 1024), np.float32)
        for start in range(0, n_frames * 48000 // fps, 1024):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


def restore(src: Path, dst: Path, detector: str | None) -> None:
    import torch

    from gpen_core import detection
    from gpen_core.alignment import estimate_face_box
    from gpen_core.faces import Face
    from gpen_core.video import restore_video

    if detector is None:  # the astronaut's landmarks (tests/data/astronaut.jpg, 512 px) where the clip put them
        landmarks = np.array([[204, 101], [247, 103], [225, 129], [202, 139], [245, 142]], np.float32) * 1.2
        count = iter(range(1 << 30))

        def stand_in(image, *args, **kwargs):
            points = landmarks + np.array(_offset(next(count)), np.float32)
            return [Face(estimate_face_box(points), 0.99, points)]

        detection.detect_faces = stand_in

    class Identity:
        size, device = 512, torch.device("cpu")

        def restore_crops(self, crops):
            return crops

    started = time.perf_counter()
    result = restore_video(src, dst, Identity(), detector=detector or "mtcnn", preset="ultrafast")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"clip": src.name, "frames": result.n_frames, "seconds": round(result.duration, 2),
                      "peak_rss_mib": round(peak, 1), "wall_s": round(time.perf_counter() - started, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, nargs="+", default=[5, 60])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/gpen_video_memory"))
    parser.add_argument("--detector", choices=("mtcnn", "retinaface"), help="detect faces (slow on CPU)")
    parser.add_argument("--restore", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restore:
        restore(*args.restore, args.detector)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    for seconds in args.seconds:
        clip = args.dir / f"clip_{seconds}s.mp4"
        if not clip.exists():
            make_clip(clip, seconds)
        command = [sys.executable, __file__, "--restore", str(clip), str(args.dir / f"out_{seconds}s.mp4")]
        subprocess.run(command + (["--detector", args.detector] if args.detector else []), check=True)


if __name__ == "__main__":
    main()
