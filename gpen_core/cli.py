"""Command line: `python -m gpen_core restore|models|download|bench`.

    python -m gpen_core restore photo.jpg old_photos/ "scans/*.png" -o restored/ --report report.json
    python -m gpen_core models
    python -m gpen_core download 512
    python -m gpen_core restore selfie.jpg -o out/ --recipe selfie-2048    # x2 upscale, GPEN-BFR-2048

This module only turns arguments into calls: inputs are collected by `gpen_core.inputs`, output names and the
overwrite policy come from `gpen_core.outputs`, the loop is `gpen_core.batch`, the report `gpen_core.report`.
Everything that can be checked before the work is checked first (device, inputs, output folder, report
path, model file), so a mistake costs seconds, not a finished run.

Exit status: 0 success; 1 an error, or at least one input failed (the others are still written and
the report lists the failures); 2 bad command-line syntax or value; 130 interrupted (Ctrl-C), 143 terminated
(SIGTERM) -- the report then says "interrupted": true and lists the unprocessed inputs.
Expected problems (missing model, unreadable image, bad option value) print one `error:` line, no traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import urlparse

from .download import (SOURCES, UPSCALER_SOURCES, checkpoint_filename, default_download_dir, download_checkpoint,
                       download_upscaler, missing_model_message)
from .errors import CheckpointError, GPENError, ModelNotFoundError
from .imageio import DEFAULT_MAX_PIXELS
from .options import DETECTORS, DTYPE_CHOICES, MASK_KINDS, SELECT_MODES, TASK_CHOICES
from .video import DEFAULT_CRF

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
# Name preferences when several checkpoints are found and --model is not given.
_PREFERRED_MODELS = tuple(checkpoint_filename(size).removesuffix(".pth").lower() for size in (512, 1024, 2048, 256))
_OUTPUT_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp", "gif")


class UsageError(GPENError, ValueError):
    """A command-line value that cannot be used (a report path on an output, a checkpoint that is a folder)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (or SIGHUP), raised like Ctrl-C so that the same clean-up runs; `signal` is its number."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signal = signum


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    if getattr(args, "recipe", None):  # parsed again with the recipe as defaults: explicit options still win
        args = build_parser(args.recipe).parse_args(argv)
    try:
        with _signals_as_interrupts():
            return args.func(args)
    except GPENError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except OSError as exc:  # an OS refusal the checks did not foresee: still one line, no traceback
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt as exc:
        print("interrupted", file=sys.stderr)
        return 128 + getattr(exc, "signal", signal.SIGINT)


def build_parser(recipe: str | None = None) -> argparse.ArgumentParser:
    """The argparse parser of all subcommands; `recipe` (a name of `upscale.RECIPES`) sets restore defaults."""
    from .upscale import RECIPES

    parser = argparse.ArgumentParser(prog="python -m gpen_core", description="GPEN blind face restoration.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("restore", help="restore the faces of photos and videos",
                       description="Restore every face of each input image or video and write the result to OUTDIR. "
                                   "Inputs are never overwritten; an existing file of another name in OUTDIR is "
                                   "kept (the result gets a _1 name) unless --overwrite is given.")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image or video files, folders or glob patterns")
    r.add_argument("-o", "--output-dir", required=True, type=Path, metavar="OUTDIR")
    r.add_argument("--recursive", action="store_true", help="also look into sub-folders of folder inputs")
    m = r.add_argument_group("model")
    m.add_argument("--model", metavar="PATH|NAME",
                   help="checkpoint file, or a name/size found in the model folders (GPEN-BFR-512, 512)")
    m.add_argument("--models-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="extra folder to search for GPEN checkpoints and face detector/parsing weights")
    m.add_argument("--download", action="store_true",
                   help="download the official checkpoint first if none is found (GPEN-BFR-512 by default), "
                        "and the official upscaler --upscaler names")
    m.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda, cuda:1, mps (default auto)")
    m.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="network precision (default auto)")
    m.add_argument("--batch-size", type=_positive_int, default=4, help="faces per network call (default 4)")
    m.add_argument("--upscaler", metavar="PATH|NAME",
                   help="upscale each image first with this model (spandrel: realesrnet_x2.pth, RealESRGAN_x4plus, "
                        "...; or an official name, found in the model folders), then restore its faces at that size")
    m.add_argument("--tile", type=_positive_int, metavar="PX",
                   help="upscaler tile side in input pixels (default: what fits in memory)")
    m.add_argument("--recipe", choices=sorted(RECIPES),
                   help="official settings: selfie-2048 = GPEN-BFR-2048, alpha 0.8, realesrnet_x2, tile 400 "
                        "(options given as well win)")
    f = r.add_argument_group("faces")
    f.add_argument("--detector", default="auto", choices=DETECTORS)
    f.add_argument("--select", default="all", choices=SELECT_MODES)
    f.add_argument("--faces", type=_index_list, metavar="I,J", help="restore only these detected faces (0-based)")
    f.add_argument("--min-face-size", type=_non_negative_float, default=0, metavar="PX")
    f.add_argument("--max-faces", type=_positive_int, metavar="N")
    f.add_argument("--score-threshold", type=_unit_float, metavar="S", help="minimum detection score, 0..1")
    f.add_argument("--landmarks", type=Path, metavar="JSON",
                   help='JSON {"image name": N x 5 x 2 [x, y] points}; those images skip detection')
    f.add_argument("--aligned", action="store_true",
                   help="inputs are aligned face crops (FFHQ-style): no detection, each whole image is the face")
    f.add_argument("--task", default="auto", choices=TASK_CHOICES,
                   help="with --aligned: restore, colorize, inpaint (white holes), seg2face; auto = from the "
                        "model's official name (default)")
    b = r.add_argument_group("blending")
    b.add_argument("--alpha", type=_unit_float, default=1.0, help="1 = restored face, 0 = original (default 1)")
    b.add_argument("--color-correction", action="store_true", help="match restored faces to the input colours")
    b.add_argument("--mask", default="auto", choices=MASK_KINDS)
    o = r.add_argument_group("output")
    o.add_argument("--ext", choices=_OUTPUT_EXTENSIONS,
                   help="output format (default: the input's; GIF becomes PNG, animated if the GIF is)")
    o.add_argument("--suffix", default="", type=_suffix, help="appended to output file names (no / or ..)")
    o.add_argument("--overwrite", action="store_true",
                   help="replace existing files in OUTDIR that this run did not write (never the inputs)")
    o.add_argument("--quality", type=_quality, default=95, help="JPEG/lossy WebP quality 1..100 (default 95)")
    o.add_argument("--save-faces", action="store_true", help="also write aligned and restored face crops")
    o.add_argument("--report", type=Path, metavar="JSON", help="write faces, boxes, scores and timings here")
    o.add_argument("--max-pixels", type=_non_negative_int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images (all frames together; default {DEFAULT_MAX_PIXELS}; 0 = no limit)")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress (warnings and errors still shown)")
    v = r.add_argument_group("video (mp4, m4v, mov, mkv, webm, avi; needs `pip install av`; written in the "
                             "input's format, sound and subtitles copied)")
    v.add_argument("--crf", type=_crf, default=DEFAULT_CRF, metavar="Q",
                   help=f"quality 0..51, lower = better and larger (default {DEFAULT_CRF}, visually lossless)")
    v.add_argument("--temporal-smoothing", action=argparse.BooleanOptionalAction, default=True,
                   help="follow faces from frame to frame and smooth their landmarks (default on; "
                        "--no-temporal-smoothing uses each frame's own detections)")
    r.set_defaults(func=cmd_restore, **(RECIPES[recipe] if recipe else {}))

    ls = sub.add_parser("models", help="list the GPEN checkpoints found")
    ls.add_argument("--models-dir", action="append", type=Path, default=[], metavar="DIR")
    ls.set_defaults(func=cmd_models)

    d = sub.add_parser("download", help="download an official GPEN-BFR checkpoint or upscaler")
    d.add_argument("size", type=_download_name, metavar="{" + ",".join([*map(str, SOURCES), *UPSCALER_SOURCES]) + "}")
    d.add_argument("--dir", type=Path, help=f"target folder (default {default_download_dir()})")
    d.add_argument("--base-url", type=_http_url, help="download from <URL>/GPEN-BFR-<size>.pth (<URL>/<name>.pth "
                                                      "for an upscaler) instead (also env GPEN_DOWNLOAD_BASE_URL)")
    d.add_argument("--force", action="store_true", help="download again even if the file exists")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_download)

    e = sub.add_parser("export-onnx", help="write a GPEN checkpoint as the ONNX file ReActor/facefusion read",
                       description="Export a GPEN .pth/.safetensors checkpoint to ONNX (input 'input', output "
                                   "'output', (1, 3, S, S) RGB in [-1, 1]), checked with ONNX Runtime against "
                                   "torch before it is put in place.")
    e.add_argument("checkpoint", type=Path, help="GPEN checkpoint (.pth, .pt, .safetensors)")
    e.add_argument("output", type=Path, help=".onnx file to write, or a folder (<checkpoint name>.onnx)")
    e.add_argument("--opset", type=_positive_int, help="ONNX opset (default 17; the official script used 10)")
    e.add_argument("--fp16", action="store_true", help="float16 weights and images (half the file size)")
    e.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    e.set_defaults(func=cmd_export_onnx)

    sub.add_parser("bench", help="benchmark the network (see `bench --help`)", add_help=False)
    return parser


def cmd_restore(args: argparse.Namespace) -> int:
    """`restore`: check everything that can be checked, then restore every input; failures are collected."""
    from .batch import BatchSettings, Progress, restore_batch
    from .devices import resolve_device
    from .files import check_writable_file, check_writable_folder, remove_stale_temp_files, unreadable_reason
    from .inputs import IMAGE, collect_inputs, load_landmarks
    from .outputs import OutputPlanner
    from .report import build_report, is_report, write_report

    started = time.time()
    device = resolve_device(args.device)
    inputs = collect_inputs(args.inputs, recursive=args.recursive)
    _report_skipped(args, inputs.skipped)
    landmarks = load_landmarks(args.landmarks) if args.landmarks else {}
    _warn_unused_landmarks(landmarks, inputs.paths)
    model_path = resolve_model(args.model, args.models_dir, download=args.download, quiet=args.quiet)
    reason = unreadable_reason(model_path)
    if reason is not None:
        raise CheckpointError(f"checkpoint {model_path} {reason}; make it readable (e.g. chmod a+r) "
                              f"or pass --model with a readable copy")

    check_writable_folder(args.output_dir)
    for folder in (args.output_dir, args.output_dir / "faces"):
        for stale in remove_stale_temp_files(folder, started):
            _log(args, f"removed {stale} (temp file of an interrupted earlier run)")
    planner = OutputPlanner(args.output_dir, inputs.paths, overwrite=args.overwrite,
                            note=lambda text: print(f"note: {text}", file=sys.stderr))
    planned = {item.path: planner.result_path(item.path, ext=args.ext if item.kind == IMAGE else item.path.suffix,
                                              suffix=args.suffix) for item in inputs.items}
    if args.report:
        _check_report_path(args.report, inputs.paths, planned.values(), args.overwrite, is_report)
        check_writable_file(args.report, "report file")
        planner.reserve(args.report)

    _check_task(args, model_path)

    from .checkpoint import load_model
    model = load_model(model_path, device=device, dtype=args.dtype)
    _log(args, f"model {model_path} ({model.size} px) on {model.device}, {model.dtype}")
    upscaler = None
    if args.upscaler:
        from .upscale import load_upscaler, resolve_upscaler
        upscaler_path = resolve_upscaler(args.upscaler, args.models_dir, download=args.download, quiet=args.quiet)
        upscaler = load_upscaler(upscaler_path, device=device, dtype=args.dtype)
        _log(args, f"upscaler {upscaler_path} (x{upscaler.scale}, {upscaler.architecture.name})")
    settings = BatchSettings(
        restore=dict(detector=args.detector, select=args.select, face_indices=args.faces,
                     min_face_size=args.min_face_size, max_faces=args.max_faces, score_threshold=args.score_threshold,
                     alpha=args.alpha, mask=args.mask, color_correction=args.color_correction,
                     batch_size=args.batch_size, search_dirs=tuple(args.models_dir), device=model.device,
                     upscaler=upscaler, upscale_tile=args.tile),
        landmarks=landmarks, ext=args.ext, suffix=args.suffix, quality=args.quality, save_faces=args.save_faces,
        max_pixels=args.max_pixels or None, aligned_task=args.task if args.aligned else None,
        video=dict(crf=args.crf, temporal_smoothing=args.temporal_smoothing))
    result = restore_batch(inputs.items, model, planned, planner, settings,
                           Progress(len(inputs.items), quiet=args.quiet))

    status = EXIT_OK
    if args.report:
        report = build_report(model, model_path, _report_options(args), result, inputs.skipped)
        try:
            write_report(args.report, report)
        except GPENError as exc:
            print(f"error: {exc}; the report follows on standard output", file=sys.stderr)
            print(json.dumps(report, indent=2))
            status = EXIT_FAILED
    _log(args, f"restored {result.n_faces} faces in {len(result.images)} images -> {args.output_dir}")
    if result.interrupted:
        print(f"interrupted: {len(result.unprocessed)} of {len(inputs.items)} inputs not processed"
              + (f" (listed in {args.report})" if args.report else ""), file=sys.stderr)
        return 128 + result.signal
    if result.failures:
        lines = "\n".join(f"  {item['error']}" for item in result.failures)
        print(f"error: {len(result.failures)} of {len(inputs.items)} images failed:\n{lines}", file=sys.stderr)
        return EXIT_FAILED
    return status


def cmd_models(args: argparse.Namespace) -> int:
    """`models`: list checkpoints found in the known folders with the config read from each."""
    from .checkpoint import inspect_checkpoint
    from .files import unreadable_reason
    from .model_paths import default_model_dirs, find_gpen_models
    from .onnx_file import describe_onnx, is_onnx_file

    found = find_gpen_models(tuple(args.models_dir))
    if not found:
        print("No GPEN checkpoint found.\n" + _how_to_get_a_model(args.models_dir))
        return EXIT_OK
    folders = ", ".join(str(d) for d in [*args.models_dir, *default_model_dirs()])
    print(f"GPEN checkpoints in {folders}:")
    for path in found:
        reason = unreadable_reason(path)
        try:
            if reason is not None:
                raise CheckpointError(f"{path.name} {reason}")
            if is_onnx_file(path):
                info = describe_onnx(path)
            else:
                config = inspect_checkpoint(path)
                info = f"{config.size} px (channel_multiplier {config.channel_multiplier}, narrow {config.narrow})"
        except GPENError as exc:
            info = f"not usable: {exc}"
        except OSError as exc:
            info = f"not usable: cannot be read ({exc.strerror or exc})"
        print(f"  {path}  {_size_mb(path)}  {info}")
    return EXIT_OK


def cmd_export_onnx(args: argparse.Namespace) -> int:
    """`export-onnx CHECKPOINT OUTPUT`: export, check against torch, then put the file in place."""
    from .onnx_export import export_onnx

    result = export_onnx(args.checkpoint, args.output, opset=args.opset, fp16=args.fp16, overwrite=args.overwrite)
    print(f"wrote {result.path}: {result.size} px, {result.dtype}, opset {result.opset}; ONNX Runtime vs torch: "
          f"max {result.max_error:.1e}, mean {result.mean_error:.1e} ([-1, 1] units); {result.seconds:.0f} s")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """`download SIZE|UPSCALER`: fetch, verify and install an official checkpoint or upscaler."""
    upscaler = isinstance(args.size, str)
    name = f"{args.size}.pth" if upscaler else checkpoint_filename(args.size)
    target = (args.dir or default_download_dir()) / name
    if target.is_file() and not args.force:
        print(f"{target} already exists (use --force to download it again)")
        return EXIT_OK
    download = download_upscaler if upscaler else download_checkpoint
    path = download(args.size, args.dir, base_url=args.base_url, force=args.force, progress=not args.quiet)
    print(f"saved {path}")
    return EXIT_OK


def resolve_model(name: str | None, search_dirs: Sequence[Path] = (), *, download: bool = False,
                  quiet: bool = False) -> Path:
    """Checkpoint path for --model (a path, a name like GPEN-BFR-512, or a size), or the preferred one found.

    With `download` a missing official model (512 when none is named) is downloaded first.
    Raises ModelNotFoundError saying where to put a checkpoint and how to download one.
    """
    from .files import unreadable_reason
    from .model_paths import find_gpen_models

    if name:
        given = Path(name).expanduser()
        if given.is_file():
            return given
        reason = unreadable_reason(given)
        looks_like_path = "/" in name or "\\" in name or bool(given.suffix)
        if reason not in ("does not exist", None) and (looks_like_path or os.path.lexists(given)):
            raise UsageError(f"--model {name} {reason}; give a checkpoint file (.pth or .safetensors)")
    found = find_gpen_models(tuple(search_dirs))
    if name:
        matches = [p for p in found if _model_matches(p, name)]
        if matches:
            return matches[0]
    elif found:
        return min(found, key=_preference)
    size = _official_size(name) if name else 512
    if download and size is not None:
        return download_checkpoint(size, progress=not quiet)
    if name and ("/" in name or "\\" in name or Path(name).suffix):
        raise ModelNotFoundError(f"--model {name}: no such file")
    what = f"no GPEN checkpoint named '{name}'" if name else "no GPEN checkpoint found"
    listing = "".join(f"\n  {p}" for p in found)
    found_text = f"\nFound these instead:{listing}" if found else ""
    raise ModelNotFoundError(f"{what}.{found_text}\n{_how_to_get_a_model(search_dirs, size or 512)}")


def _how_to_get_a_model(search_dirs: Sequence[Path] = (), size: int = 512) -> str:
    from .model_paths import default_model_dirs

    return (missing_model_message([*search_dirs, *default_model_dirs()], size=size)
            + "\nor pass --model PATH, or add --download to the restore command.")


def _model_matches(path: Path, name: str) -> bool:
    name = name.lower()
    stem = path.stem.lower()
    return name in (stem, path.name.lower()) or (name.isdigit() and stem == f"gpen-bfr-{name}")


def _preference(path: Path) -> int:
    stem = path.stem.lower()
    return _PREFERRED_MODELS.index(stem) if stem in _PREFERRED_MODELS else len(_PREFERRED_MODELS)


def _official_size(name: str) -> int | None:
    text = name.lower().removesuffix(".pth").removeprefix("gpen-bfr-")
    return int(text) if text.isdigit() and int(text) in SOURCES else None


def _check_task(args, model_path: Path) -> None:
    """Refuse, before any work, a task the model file cannot do or options that do not go with --aligned."""
    from .tasks import require_restoration, resolve_task

    if not args.aligned:
        if args.task not in ("auto", "restore"):
            raise UsageError(f"--task {args.task} works on aligned face crops: add --aligned")
        require_restoration(model_path)
        return
    if args.landmarks or args.faces:
        raise UsageError("--aligned inputs are whole faces: --landmarks and --faces do not apply; leave them out")
    if args.upscaler:
        raise UsageError("--upscaler works on whole photos, not --aligned face crops; leave one of them out")
    resolve_task(model_path, args.task)


def _warn_unused_landmarks(table: dict, inputs: list[Path]) -> None:
    names = {key for src in inputs for key in (str(src), src.name, src.stem)}
    unused = sorted(set(table) - names)
    if unused:
        print(f"warning: landmarks given for images not among the inputs: {', '.join(unused)}", file=sys.stderr)


def _report_options(args) -> dict:
    keys = ("detector", "select", "faces", "min_face_size", "max_faces", "score_threshold", "alpha",
            "color_correction", "mask", "batch_size", "aligned", "task", "crf", "temporal_smoothing", "upscaler",
            "tile", "recipe")
    return {k: getattr(args, k) for k in keys}


def _check_report_path(report: Path, inputs, outputs, overwrite: bool, is_report) -> None:
    """Refuse a report path that is an input or an output of this run, or an unrelated existing file."""
    key = report.resolve()
    if any(key == p.resolve() for p in inputs):
        raise UsageError(f"--report {report}: that is an input file; refusing to overwrite it. "
                         f"Give the report another name, e.g. report.json")
    if any(key == p.resolve() for p in outputs):
        raise UsageError(f"--report {report}: a restored image of this run goes there; "
                         f"give the report another name, e.g. report.json")
    if report.exists() and not report.is_dir() and not overwrite and not is_report(report):
        raise UsageError(f"--report {report}: the file exists and is not a gpen_core report; "
                         f"refusing to replace it (give another name, or --overwrite)")


def _report_skipped(args, skipped: list[tuple[Path, str]], shown: int = 20) -> None:
    """One line per file passed over (the first `shown`), or a count with --quiet; the report has them all."""
    if not skipped:
        return
    if args.quiet:
        print(f"note: skipped {len(skipped)} files in the input folders (not images, or earlier results); "
              f"run without -q to list them", file=sys.stderr)
        return
    for path, reason in skipped[:shown]:
        print(f"skipped {path}: {reason}", file=sys.stderr)
    if len(skipped) > shown:
        where = " (all listed in the report)" if args.report else ""
        print(f"... and {len(skipped) - shown} more skipped files{where}", file=sys.stderr)


def _log(args, message: str) -> None:
    if not args.quiet:
        print(message, file=sys.stderr, flush=True)


def _size_mb(path: Path) -> str:
    try:
        return f"{path.stat().st_size / 1e6:.0f} MB"
    except OSError:
        return "? MB"


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated (a KeyboardInterrupt) in the main thread while a command runs,
    so a killed run cleans up its temp files and reports what it did not finish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    wanted = [s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {}
    for signum in wanted:
        if signal.getsignal(signum) is not signal.SIG_DFL:  # e.g. nohup ignores SIGHUP: keep it ignored
            continue
        with contextlib.suppress(OSError, ValueError):
            previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def _raise_terminated(signum: int, frame) -> None:
    raise Terminated(signum)


def _run_bench(argv: list[str]) -> int:
    if importlib.util.find_spec("gpen_core.bench") is None:
        print("error: the benchmark module (gpen_core.bench) is not installed", file=sys.stderr)
        return EXIT_FAILED
    from . import bench
    return int(bench.main(argv) or 0)


def _device(text: str) -> str:
    if text != "auto":
        import torch
        try:
            torch.device(text)
        except (RuntimeError, ValueError):
            raise argparse.ArgumentTypeError(f"unknown device '{text}': use auto, cpu, cuda, cuda:N or mps") from None
    return text


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got '{text}'") from None


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got '{text}'") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got '{text}'")
    return value


def _ranged(parse, low: float, high: float | None = None, low_name: str | None = None):
    """An argparse type: ``parse`` the text, then require ``low <= value`` (and ``<= high`` when given); the
    message names the range ("at least 1", "0 or more", "between 1 and 100")."""
    low_text = f"{low:g}" + (f" ({low_name})" if low_name else "")
    if high is not None:
        wanted = f"between {low_text} and {high:g}"
    else:
        wanted = "0 or more" if low == 0 else f"at least {low_text}"

    def check(text: str):
        value = parse(text)
        if value < low or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"must be {wanted}, got {value}")
        return value

    return check


_positive_int = _ranged(_int, 1)
_non_negative_int = _ranged(_int, 0)
_quality = _ranged(_int, 1, 100)
_crf = _ranged(_int, 0, 51, "lossless")
_non_negative_float = _ranged(_float, 0)
_unit_float = _ranged(_float, 0, 1)


def _suffix(text: str) -> str:
    from .outputs import OutputNameError, check_suffix

    try:
        return check_suffix(text)
    except OutputNameError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--suffix {text!r}: ")) from None


def _download_name(text: str) -> int | str:
    if text in UPSCALER_SOURCES:
        return text
    if text.isdigit() and int(text) in SOURCES:
        return int(text)
    raise argparse.ArgumentTypeError(f"choose a GPEN size ({', '.join(map(str, SOURCES))}) or an upscaler "
                                     f"({', '.join(UPSCALER_SOURCES)}), got '{text}'")


def _http_url(text: str) -> str:
    parts = urlparse(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise argparse.ArgumentTypeError(f"expected an http:// or https:// address like "
                                         f"https://example.com/models, got '{text}'")
    return text


def _index_list(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated face numbers like 0,2, got '{text}'") from None
    if not indices or min(indices) < 0:
        raise argparse.ArgumentTypeError(f"expected face numbers >= 0 like 0,2, got '{text}'")
    return indices
