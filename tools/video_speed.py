"""Frames per second of restore_video on a 1080p clip with one face, for GPEN's 256 and 512 layouts.

    python tools/video_speed.py [--frames 25] [--sizes 256 512] [--detector mtcnn]

Random weights in the official layouts (same shapes and work as the real checkpoints); the clip is the one
tools/video_memory.py makes (tests/data/astronaut.jpg drifting over a 1920x1080 frame), cut to --frames.
The layouts run one after the other in one process, so their ratio holds on a busy machine; the load
average is printed beside the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=25)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--detector", default="mtcnn")
    args = parser.parse_args()

    import torch
    from video_memory import make_clip

    from gpen_core.bench import OFFICIAL_LAYOUTS
    from gpen_core.model import GPENModel
    from gpen_core.network import GPEN, init_random_
    from gpen_core.video import restore_video

    folder = Path(tempfile.mkdtemp(prefix="gpen_video_speed_"))
    clip = folder / "clip.mp4"
    make_clip(clip, 1, frames=args.frames)
    for size in args.sizes:
        model = GPENModel(init_random_(GPEN(OFFICIAL_LAYOUTS[size])).eval())
        started = time.perf_counter()
        result = restore_video(clip, folder / f"out_{size}.mp4", model, detector=args.detector)
        wall = time.perf_counter() - started
        print(json.dumps({"layout": size, "frames": result.n_frames, "faces_tracked": result.n_tracks,
                          "frames_per_s": round(result.n_frames / wall, 3), "wall_s": round(wall, 1),
                          "threads": torch.get_num_threads(), "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
