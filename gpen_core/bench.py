"""Benchmarks: network speed and memory per official layout, checkpoint load time, the 1080p-frame pipeline,
and on CUDA faces per second per batch size and precision (beside the official code and ONNX Runtime).

Run ``python -m gpen_core bench --help``. Every model is read the way users read it: a random-weight
checkpoint in the official layout is written as a ``.pth`` to a temporary folder and loaded with
``load_model``. Speeds are reported beside a 4096x4096 fp32 matmul timed in the same process, because
absolute seconds drift a lot between runs on shared machines. Each layout runs in a fresh process so its
peak RSS is its own. Never part of the test suite.
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


def write_checkpoint(folder: Path, size: int) -> Path:
    """A random-weight checkpoint in the official GPEN-BFR-``size`` layout, saved as users get it (.pth)."""
    path = folder / f"GPEN-BFR-{size}.pth"
    if not path.exists():
        torch.save(init_random_(GPEN(OFFICIAL_LAYOUTS[size])).state_dict(), path)
    return path


def measure_forward(path: Path, dtype: str, device: str, runs: int) -> dict:
    """Median forward seconds (after one warm-up), GFLOP/s and peak memory of the checkpoint at ``path``.

    The model is loaded with ``load_model`` and the timed forwards come first in the process, so the peak
    RSS is theirs (plus the weights, the file's pages and torch itself); the matmul yardstick, the FLOP
    count and the accuracy check run afterwards.
    """
    from .checkpoint import load_model

    dev = torch.device(device)
    torch_dtype = resolve_dtype(dtype)
    net = load_model(path, device=dev, dtype=torch_dtype).net
    size = net.config.size
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


def measure_load(pth: Path, runs: int = 3) -> list[dict]:
    """Seconds to load the .pth checkpoint ``pth`` and the same tensors as .safetensors, warm page cache."""
    from safetensors.torch import save_file

    from .checkpoint import load_model, read_state_dict

    files = {"pth": pth, "safetensors": pth.with_suffix(".safetensors")}
    save_file({k: v.contiguous() for k, v in read_state_dict(pth).items()}, str(files["safetensors"]))
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


def measure_pipeline(image_path: Path, path: Path, runs: int = 2) -> dict:
    """The whole pipeline on a photo with the checkpoint at ``path``: total seconds, share outside the network."""
    from .checkpoint import load_model
    from .imageio import read_image
    from .pipeline import restore_faces

    model = load_model(path, device="cpu")
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


def _faces_per_second(net, x: torch.Tensor, device: torch.device, seconds: float = 2.0) -> float:
    """Faces per second of ``net`` on the batch ``x``: two warm-up forwards, then at least 3 and ~``seconds``."""
    with torch.inference_mode():
        for _ in range(2):
            net(x)
        _sync(device)
        start, n = time.perf_counter(), 0
        while n < 3 or time.perf_counter() - start < seconds:
            net(x)
            n += 1
            if n >= 3:
                _sync(device)
        return len(x) * n / (time.perf_counter() - start)


def official_network(repo: Path, path: Path) -> torch.nn.Module:
    """The official ``FullGenerator`` from a user's clone of yangxy/GPEN (never part of this repository) with
    the checkpoint's weights; built with its pure-torch ops (``device="cpu"``), which run on any device."""
    from .checkpoint import infer_config, read_state_dict

    sys.path.insert(0, str(Path(repo).expanduser() / "face_model"))
    from gpen_model import FullGenerator  # type: ignore[import-not-found]

    state = read_state_dict(path)
    config = infer_config(state, path)
    net = FullGenerator(config.size, config.style_dim, config.n_mlp, channel_multiplier=config.channel_multiplier,
                        narrow=config.narrow, device="cpu")
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)


def _onnx_network(path: Path, folder: Path, device: torch.device):
    """gpen_core's ONNX export of ``path`` run by ONNX Runtime on ``device``; None (and a note) if unavailable."""
    try:
        from .onnx_backend import load_onnx_model
        from .onnx_export import export_onnx
    except ImportError:
        print("ONNX Runtime: skipped (this gpen_core has no ONNX support)", file=sys.stderr)
        return None
    try:
        target = folder / f"{path.stem}.onnx"
        if not target.exists():
            export_onnx(path, target)
        model = load_onnx_model(target, device=device)
    except Exception as exc:  # noqa: BLE001 - optional comparison: report and go on
        print(f"ONNX Runtime: skipped ({str(exc).splitlines()[0][:200]})", file=sys.stderr)
        return None
    if model.device.type != device.type:
        print(f"ONNX Runtime: skipped (no {device.type} execution provider; pip install onnxruntime-gpu)",
              file=sys.stderr)
        return None
    return model.net


def measure_throughput(path: Path, device: str, dtypes: list[str], batches: list[int],
                       official_repo: Path | None = None, onnx: bool = True) -> list[dict]:
    """Faces per second of the checkpoint at ``path`` per precision and batch size (one network forward per
    batch), and of the official code and ONNX Runtime (fp32, same weights) where available."""
    from .checkpoint import inspect_checkpoint, load_model

    dev = torch.device(device)
    size = inspect_checkpoint(path).size
    rows: list[dict] = []

    def run(impl: str, make, dtype: str, batch_sizes: list[int]) -> None:
        torch_dtype = resolve_dtype(dtype)
        try:
            net = make(torch_dtype)
        except Exception as exc:  # noqa: BLE001 - optional implementations: report and go on
            rows.append({"what": "throughput", "impl": impl, "dtype": dtype, "error": str(exc)[:300]})
            return
        if net is None:
            return
        for batch in batch_sizes:
            x = (torch.rand(batch, 3, size, size, device=dev) * 2 - 1).to(torch_dtype)
            row = {"what": "throughput", "impl": impl, "size": size, "dtype": dtype, "batch": batch}
            try:
                if dev.type == "cuda":
                    torch.cuda.reset_peak_memory_stats()
                row["faces_per_s"] = _faces_per_second(net, x, dev)
                if dev.type == "cuda":
                    row["cuda_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            except Exception as exc:  # noqa: BLE001 - out of memory or an unsupported precision
                row["error"] = str(exc).splitlines()[0][:200]
            rows.append(row)
            del x
            if dev.type == "cuda":
                torch.cuda.empty_cache()

    for dtype in dtypes:
        run("gpen_core", lambda d: load_model(path, device=dev, dtype=d).net, dtype, batches)
    if official_repo is not None:
        for dtype in dtypes:
            run("official", lambda d: official_network(official_repo, path).to(dev, d), dtype, batches)
    if onnx:
        run("onnxruntime", lambda d: _onnx_network(path, path.parent, dev), "fp32", [1])
    return rows


def _fresh_process(args: list[str]) -> list[dict]:
    out = subprocess.run([sys.executable, "-m", "gpen_core.bench", "--worker", *args],
                         check=True, stdout=subprocess.PIPE, text=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result if isinstance(result, list) else [result]


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
        elif row["what"] == "frame":
            stages = {k: round(1000 * v, 1) for k, v in row["stages"].items()}
            print(f"frame   1920x1080 {row['faces']} face  outside the network "
                  f"{1000 * row['seconds_outside_network']:.0f} ms = {row['share_of_matmul']:.3f} x one 4096^2 "
                  f"fp32 matmul ({1000 * row['matmul_seconds']:.0f} ms; target {row['target_share']})  "
                  f"stages ms {stages}")
        elif row["what"] == "throughput":
            figure = (f"{row['faces_per_s']:8.1f} faces/s" if "faces_per_s" in row else f"error: {row['error']}")
            peak = f"  cuda peak {row['cuda_peak_gib']:.2f} GiB" if "cuda_peak_gib" in row else ""
            print(f"faces/s {row['impl']:>11} {row.get('size', ''):>4} {row['dtype']:>4} batch "
                  f"{row.get('batch', ''):>2}  {figure}{peak}")
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
    parser.add_argument("--no-frame", action="store_true", help="skip the 1080p-frame pipeline benchmark")
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 4, 16],
                        help="CUDA faces/s: batch sizes (default 1 4 16)")
    parser.add_argument("--throughput-sizes", type=int, nargs="+", default=[512, 2048],
                        help="CUDA faces/s: layouts (default 512 2048)")
    parser.add_argument("--official-repo", type=Path, default=None,
                        help="a clone of github.com/yangxy/GPEN: also time its FullGenerator (CUDA faces/s)")
    parser.add_argument("--json", type=Path, help="also write the rows to this JSON file")
    parser.add_argument("--worker", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.worker:
        kind, *rest = args.worker
        if kind == "forward":
            result: dict | list = measure_forward(Path(rest[0]), rest[1], args.device, args.runs)
        elif kind == "frame":
            from .bench_frame import measure_frame

            result = measure_frame(device=args.device)
        elif kind == "throughput":
            result = measure_throughput(Path(rest[0]), args.device, rest[1].split(","),
                                        [int(b) for b in rest[2].split(",")], args.official_repo)
        else:
            result = measure_pipeline(Path(rest[0]), Path(rest[1]))
        print(json.dumps(result))
        return 0

    cuda = args.device.startswith("cuda")
    dtypes = args.dtypes or (["fp32", "fp16", "bf16"] if cuda else ["fp32", "bf16"])
    common = ["--device", args.device, "--threads", str(args.threads), "--runs", str(args.runs)]
    rows: list[dict] = []

    def report(new: list[dict]) -> None:
        rows.extend(new)
        _print_table(new)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for size in args.sizes:
            path = write_checkpoint(folder, size)
            for dtype in dtypes:
                report(_fresh_process(["forward", str(path), dtype, *common]))
        if not args.no_frame:
            report(_fresh_process(["frame", *common]))
        if cuda:
            official = ["--official-repo", str(args.official_repo)] if args.official_repo else []
            for size in args.throughput_sizes:
                report(_fresh_process(["throughput", str(write_checkpoint(folder, size)), ",".join(dtypes),
                                       ",".join(map(str, args.batches)), *common, *official]))
        if not args.no_load:
            report(measure_load(write_checkpoint(folder, 2048)))
        if args.pipeline_image:
            report(_fresh_process(["pipeline", str(args.pipeline_image), str(write_checkpoint(folder, 512)),
                                   *common]))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
