"""Benchmarks: network speed and memory per official layout, checkpoint load time, the whole pipeline.

Run ``python -m gpen_core bench --help``. Speeds are reported beside a 4096x4096 fp32 matmul timed in
the same process, because absolute seconds drift a lot between runs on shared machines. Each layout
runs in a fresh process so its peak RSS is its own. Never part of the test suite.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import conv_ops
from .devices import resolve_dtype
from .network import GPEN, GPENConfig, init_random_

#: The official checkpoints' constructor arguments (see tests/data/keys/*.meta.json).
OFFICIAL_LAYOUTS = {
    256: GPENConfig(256, channel_multiplier=1, narrow=0.5),
    512: GPENConfig(512), 1024: GPENConfig(1024), 2048: GPENConfig(2048),
}


def matmul_gflops(device: torch.device, runs: int = 3) -> float:
    """Rate of a 4096x4096 fp32 matmul, the yardstick every other figure is divided by."""
    a = torch.randn(4096, 4096, device=device)
    times = []
    for _ in range(runs + 1):
        _sync(device)
        start = time.perf_counter()
        a @ a
        _sync(device)
        times.append(time.perf_counter() - start)
    return 2 * 4096**3 / min(times[1:]) / 1e9


def _peak_rss_gib() -> float:
    try:
        status = Path("/proc/self/status").read_text()
        return int(status.split("VmHWM:")[1].split()[0]) / 2**20
    except (OSError, IndexError, ValueError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def count_gflop(net: GPEN, x: torch.Tensor) -> float:
    """Convolution and matmul GFLOP of one forward, as torch.utils.flop_counter counts them.

    Counted on the standard-op path: the counter does not know oneDNN's fused convolutions.
    """
    from torch.utils.flop_counter import FlopCounterMode

    net.requires_grad_(False)  # its module tracker fails on parameters that want gradients
    fused, conv_ops.ONEDNN = conv_ops.ONEDNN, False
    try:
        with FlopCounterMode(display=False) as counter:
            net(x)
    finally:
        conv_ops.ONEDNN = fused
    return counter.get_total_flops() / 1e9


def measure_forward(size: int, dtype: str, device: str, runs: int) -> dict:
    """Median forward seconds (after one warm-up), GFLOP/s and peak memory of one layout.

    The timed forwards come first in the process, so the peak RSS is theirs (plus the weights and
    torch itself); the matmul yardstick, the FLOP count and the accuracy check run afterwards.
    """
    dev = torch.device(device)
    torch_dtype = resolve_dtype(dtype)
    net = init_random_(GPEN(OFFICIAL_LAYOUTS[size])).eval().requires_grad_(False).to(dev, torch_dtype)
    x = (torch.rand(1, 3, size, size) * 2 - 1).to(dev, torch_dtype)
    times = []
    with torch.inference_mode():
        for _ in range(runs + 1):
            _sync(dev)
            start = time.perf_counter()
            net(x)
            _sync(dev)
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times[1:])
    result = {"what": "forward", "size": size, "dtype": dtype, "device": device, "seconds": seconds,
              "peak_rss_gib": _peak_rss_gib()}
    if dev.type == "cuda":
        result["cuda_max_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    gflop = count_gflop(net, x)
    matmul = matmul_gflops(dev)
    result.update(gflop=gflop, gflops=gflop / seconds, matmul_gflops=matmul, share_of_matmul=gflop / seconds / matmul)
    if torch_dtype != torch.float32:  # accuracy against this network in fp32, same weights and input
        with torch.inference_mode():
            out = net(x).float()
            reference = net.float()(x.float()).float()
        error = (out - reference).abs()
        result.update(max_abs_error=float(error.max()), mean_abs_error=float(error.mean()),
                      reference_std=float(reference.std()))
    return result


def measure_load(folder: Path, runs: int = 3) -> list[dict]:
    """Seconds to load a GPEN-BFR-2048-layout checkpoint (~285 MB) from a warm page cache."""
    from safetensors.torch import save_file

    from .checkpoint import load_model

    state = init_random_(GPEN(OFFICIAL_LAYOUTS[2048])).state_dict()
    files = {"pth": folder / "GPEN-BFR-2048.pth", "safetensors": folder / "GPEN-BFR-2048.safetensors"}
    torch.save(state, files["pth"])
    save_file(state, str(files["safetensors"]))
    del state
    results = []
    for fmt, path in files.items():
        times = []
        for _ in range(runs + 1):  # the first read warms the page cache
            start = time.perf_counter()
            load_model(path, device="cpu")
            times.append(time.perf_counter() - start)
        results.append({"what": "load", "format": fmt, "megabytes": path.stat().st_size / 1e6,
                        "seconds": statistics.median(times[1:])})
    return results


def measure_pipeline(image_path: Path, runs: int = 2) -> dict:
    """The whole pipeline on a photo with the 512 layout: total seconds and share outside the network."""
    from .imageio import read_image
    from .model import GPENModel
    from .pipeline import restore_faces

    model = GPENModel(init_random_(GPEN(OFFICIAL_LAYOUTS[512])).eval())
    image = read_image(image_path)
    restore_faces(image, model, detector="mtcnn")  # warm-up
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        result = restore_faces(image, model, detector="mtcnn")
        total = time.perf_counter() - start
        results.append((total, result.timings.get("network", 0.0), result.n_faces))
    total, network, faces = sorted(results)[len(results) // 2]
    return {"what": "pipeline", "image": image_path.name, "faces": faces, "seconds": total,
            "network_seconds": network, "share_outside_network": 1 - network / total}


def _fresh_process(args: list[str]) -> dict:
    out = subprocess.run([sys.executable, "-m", "gpen_core.bench", "--worker", *args],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _print_table(rows: list[dict]) -> None:
    for row in rows:
        if row["what"] == "forward":
            extra = f"  cuda peak {row['cuda_max_allocated_gib']:.2f} GiB" if "cuda_max_allocated_gib" in row else ""
            print(f"forward {row['size']:>4} {row['dtype']:>4} {row['device']:>4}  {row['seconds']:8.3f} s  "
                  f"{row['gflop']:6.1f} GFLOP  {row['gflops']:6.1f} GFLOP/s  "
                  f"{100 * row['share_of_matmul']:5.1f}% of matmul ({row['matmul_gflops']:.0f} GFLOP/s)  "
                  f"peak RSS {row['peak_rss_gib']:.2f} GiB{extra}")
            if "max_abs_error" in row:
                print(f"        vs fp32: max |error| {row['max_abs_error']:.4f}, mean {row['mean_abs_error']:.5f} "
                      f"(output std {row['reference_std']:.3f})")
        elif row["what"] == "load":
            print(f"load    {row['format']:>11}  {row['megabytes']:.0f} MB  {row['seconds']:.3f} s")
        else:
            print(f"pipeline {row['image']}  {row['faces']} faces  {row['seconds']:.2f} s  "
                  f"outside network {100 * row['share_outside_network']:.1f}%")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpen_core bench", description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512, 1024, 2048])
    parser.add_argument("--dtypes", nargs="+", default=None,
                        help="default: fp32 bf16 on CPU, fp32 fp16 bf16 on CUDA")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-load", action="store_true", help="skip the checkpoint load benchmark")
    parser.add_argument("--pipeline-image", type=Path, default=None,
                        help="photo for the pipeline benchmark (e.g. tests/data/solvay_conference_1927.png)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.worker:
        kind, *rest = args.worker
        if kind == "forward":
            row = measure_forward(int(rest[0]), rest[1], args.device, args.runs)
        else:
            row = measure_pipeline(Path(rest[0]))
        print(json.dumps(row))
        return 0

    dtypes = args.dtypes or (["fp32", "fp16", "bf16"] if args.device.startswith("cuda") else ["fp32", "bf16"])
    common = ["--device", args.device, "--threads", str(args.threads), "--runs", str(args.runs)]
    rows = []
    for size in args.sizes:
        for dtype in dtypes:
            rows.append(_fresh_process(["forward", str(size), dtype, *common]))
            _print_table(rows[-1:])
    if not args.no_load:
        with tempfile.TemporaryDirectory() as folder:
            rows += measure_load(Path(folder))
        _print_table([r for r in rows if r["what"] == "load"])
    if args.pipeline_image:
        rows.append(_fresh_process(["pipeline", str(args.pipeline_image), *common]))
        _print_table(rows[-1:])
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
