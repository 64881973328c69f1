"""Peak memory of restore_video for a short and a long 1080p clip (the video path must not grow with length).

    python tools/video_memory.py [--seconds 5 60] [--dir /tmp/gpen_video_memory]

Makes an H.264 + AAC 1920x1080 25 fps clip of each length (tests/data/astronaut.jpg drifting across the frame),
then restores each in a fresh process with an identity restorer (detection of faces of 80 px and up, tracking,
smoothing, paste-back, decoding and encoding all run; only the GPEN network is skipped) and prints its peak RSS.
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


def make_clip(path: Path, seconds: int, fps: int = 25) -> None:
    import av
    import cv2

    from gpen_core.imageio import read_image

    photo = read_image(ROOT / "tests" / "data" / "astronaut.jpg")
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "23", "preset": "ultrafast"})
        video.width, video.height, video.pix_fmt = 1920, 1080, "yuv420p"
        audio = container.add_stream("aac", rate=48000, layout="stereo")
        for i in range(seconds * fps):
            shift = np.array([[1.2, 0, 600 + 300 * np.sin(i / 50)], [0, 1.2, 200 + 0.1 * i]])
            frame = cv2.warpAffine(photo, shift, (1920, 1080), borderMode=cv2.BORDER_REFLECT)
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode(None))
        samples = np.zeros((2, 1024), np.float32)
        for start in range(0, seconds * 48000, 1024):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="stereo")
            frame.sample_rate, frame.pts = 48000, start
            container.mux(audio.encode(frame))
        container.mux(audio.encode(None))


def restore(src: Path, dst: Path) -> None:
    import torch

    from gpen_core.video import restore_video

    class Identity:
        size, device = 512, torch.device("cpu")

        def restore_crops(self, crops):
            return crops

    started = time.perf_counter()
    result = restore_video(src, dst, Identity(), detector="mtcnn", min_face_size=80, preset="ultrafast")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"clip": src.name, "frames": result.n_frames, "seconds": round(result.duration, 2),
                      "peak_rss_mib": round(peak, 1), "wall_s": round(time.perf_counter() - started, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, nargs="+", default=[5, 60])
    parser.add_argument("--dir", type=Path, default=Path("/tmp/gpen_video_memory"))
    parser.add_argument("--restore", nargs=2, type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.restore:
        restore(*args.restore)
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    for seconds in args.seconds:
        clip = args.dir / f"clip_{seconds}s.mp4"
        if not clip.exists():
            make_clip(clip, seconds)
        subprocess.run([sys.executable, __file__, "--restore", str(clip), str(args.dir / f"out_{seconds}s.mp4")],
                       check=True)


if __name__ == "__main__":
    main()
