"""Peak memory of tiled upscaling, for photos of several sizes: is it bounded by the tile, not the photo?

    python tools/upscale_memory.py [--sizes 1000x750 2000x1500 4000x3000] [--scale 2] [--tile 400] [--blocks 23]

Each size runs in a fresh process: an upscaler in the official realesrnet_x{scale} layout with random weights
(gpen_core.upscale.realesrnet_state_dict; --blocks 23 is the official depth, fewer run faster with the same
activation sizes) upscales a random RGB photo on the CPU. Printed per size: tiles, peak RSS (VmHWM) before and
during the upscale, the output buffer, and what remains (the working memory of the tiles), in MiB. Not a test.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gpen_core import upscale  # noqa: E402


def _peak_mib() -> float:
    return int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024


def worker(width: int, height: int, scale: int, tile: int, blocks: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"realesrnet_x{scale}.pth"
        torch.save(upscale.realesrnet_state_dict(scale, blocks), path)
        model = upscale.load_upscaler(path, device="cpu")
    image = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
    before = _peak_mib()
    tiles = []
    start = time.perf_counter()
    out = upscale.upscale_image(image, model, tile=tile, on_progress=lambda done, total: tiles.append(total))
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    output = out.nbytes / 2**20
    return {"size": f"{width}x{height}", "scale": scale, "tile": tile, "blocks": blocks, "tiles": tiles[-1],
            "peak_before_mib": round(before), "peak_mib": round(peak), "output_mib": round(output),
            "working_mib": round(peak - before - output), "seconds": round(seconds, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", nargs="+", default=["1000x750", "2000x1500", "4000x3000"])
    parser.add_argument("--scale", type=int, default=2, choices=(1, 2, 4))
    parser.add_argument("--tile", type=int, default=400)
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(*args.worker, args.scale, args.tile, args.blocks, args.threads)))
        return
    for size in args.sizes:
        width, height = map(int, size.split("x"))
        command = [sys.executable, __file__, "--worker", str(width), str(height), "--scale", str(args.scale),
                   "--tile", str(args.tile), "--blocks", str(args.blocks), "--threads", str(args.threads)]
        print(subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip(), flush=True)


if __name__ == "__main__":
    main()
