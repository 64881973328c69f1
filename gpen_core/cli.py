"""Command line: `python -m gpen_core restore|models|download|bench`.

    python -m gpen_core restore photo.jpg old_photos/ "scans/*.png" -o restored/ --report report.json
    python -m gpen_core models
    python -m gpen_core download 512

Exit status: 0 success; 1 an error, or at least one input failed (the others are still written and
the report lists the failures); 2 bad command-line syntax; 130 interrupted.
Expected problems (missing model, unreadable image, bad option value) print one `error:` line, no traceback.
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .download import SOURCES, checkpoint_filename, default_download_dir, download_checkpoint, missing_model_message
from .errors import GPENError, ModelNotFoundError
from .imageio import DEFAULT_MAX_PIXELS, IMAGE_EXTENSIONS, output_path, read_image, write_image
from .options import DETECTORS, DTYPE_CHOICES, MASK_KINDS, SELECT_MODES

EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130
# Name preferences when several checkpoints are found and --model is not given.
_PREFERRED_MODELS = tuple(checkpoint_filename(size).removesuffix(".pth").lower() for size in (512, 1024, 2048, 256))


class UsageError(GPENError, ValueError):
    """A command-line value that cannot be used (no such input, malformed landmarks file, ...)."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with `argv` (default sys.argv[1:]); return the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        return _run_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except GPENError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of all subcommands."""
    parser = argparse.ArgumentParser(prog="python -m gpen_core", description="GPEN blind face restoration.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    r = sub.add_parser("restore", help="restore the faces of photos",
                       description="Restore every face of each input image and write the result to OUTDIR "
                                   "(inputs are never overwritten).")
    r.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders or glob patterns")
    r.add_argument("-o", "--output-dir", required=True, type=Path, metavar="OUTDIR")
    r.add_argument("--recursive", action="store_true", help="also look into sub-folders of folder inputs")
    m = r.add_argument_group("model")
    m.add_argument("--model", metavar="PATH|NAME",
                   help="checkpoint file, or a name/size found in the model folders (GPEN-BFR-512, 512)")
    m.add_argument("--models-dir", action="append", type=Path, default=[], metavar="DIR",
                   help="extra folder to search for GPEN checkpoints and face detector/parsing weights")
    m.add_argument("--download", action="store_true",
                   help="download the official checkpoint first if none is found (GPEN-BFR-512 by default)")
    m.add_argument("--device", default="auto", type=_device, help="auto, cpu, cuda, cuda:1, mps (default auto)")
    m.add_argument("--dtype", default="auto", choices=DTYPE_CHOICES, help="network precision (default auto)")
    m.add_argument("--batch-size", type=_positive_int, default=4, help="faces per network call (default 4)")
    f = r.add_argument_group("faces")
    f.add_argument("--detector", default="auto", choices=DETECTORS)
    f.add_argument("--select", default="all", choices=SELECT_MODES)
    f.add_argument("--faces", type=_index_list, metavar="I,J", help="restore only these detected faces (0-based)")
    f.add_argument("--min-face-size", type=int, default=0, metavar="PX")
    f.add_argument("--max-faces", type=_positive_int, metavar="N")
    f.add_argument("--score-threshold", type=float, metavar="S", help="minimum detection score, 0..1")
    f.add_argument("--landmarks", type=Path, metavar="JSON",
                   help='JSON {"image name": N x 5 x 2 [x, y] points}; those images skip detection')
    b = r.add_argument_group("blending")
    b.add_argument("--alpha", type=_unit_float, default=1.0, help="1 = restored face, 0 = original (default 1)")
    b.add_argument("--color-correction", action="store_true", help="match restored faces to the input colours")
    b.add_argument("--mask", default="auto", choices=MASK_KINDS)
    o = r.add_argument_group("output")
    o.add_argument("--ext", choices=("png", "jpg", "jpeg", "webp", "tif", "tiff", "bmp"),
                   help="output format (default: the input's)")
    o.add_argument("--suffix", default="", help="appended to output file names")
    o.add_argument("--quality", type=int, default=95, help="JPEG/WebP quality (default 95)")
    o.add_argument("--save-faces", action="store_true", help="also write aligned and restored face crops")
    o.add_argument("--report", type=Path, metavar="JSON", help="write faces, boxes, scores and timings here")
    o.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"refuse larger images (default {DEFAULT_MAX_PIXELS}; 0 = no limit)")
    o.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    r.set_defaults(func=cmd_restore)

    ls = sub.add_parser("models", help="list the GPEN checkpoints found")
    ls.add_argument("--models-dir", action="append", type=Path, default=[], metavar="DIR")
    ls.set_defaults(func=cmd_models)

    d = sub.add_parser("download", help="download an official GPEN-BFR checkpoint")
    d.add_argument("size", type=int, choices=sorted(SOURCES))
    d.add_argument("--dir", type=Path, help=f"target folder (default {default_download_dir()})")
    d.add_argument("--base-url", help="download from <URL>/GPEN-BFR-<size>.pth instead (also "
                                      "env GPEN_DOWNLOAD_BASE_URL)")
    d.add_argument("--force", action="store_true", help="download again even if the file exists")
    d.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_download)

    sub.add_parser("bench", help="benchmark the network (see `bench --help`)", add_help=False)
    return parser


def cmd_restore(args: argparse.Namespace) -> int:
    """`restore`: every input goes through `restore_faces`; failures are collected, not fatal."""
    inputs = collect_inputs(args.inputs, recursive=args.recursive)
    if args.report and any(args.report.resolve() == p.resolve() for p in inputs):
        raise UsageError(f"--report {args.report}: refusing to overwrite an input file")
    landmarks = load_landmarks(args.landmarks) if args.landmarks else {}
    _warn_unused_landmarks(landmarks, inputs)
    model_path = resolve_model(args.model, args.models_dir, download=args.download, quiet=args.quiet)

    from .checkpoint import load_model
    model = load_model(model_path, device=args.device, dtype=args.dtype)
    _log(args, f"model {model_path} ({model.size} px) on {model.device}, {model.dtype}")

    images, failures = [], []
    try:
        _restore_all(args, model, inputs, landmarks, images, failures)
    finally:
        if args.report:
            _write_report(args, model, model_path, images, failures)
    n_faces = sum(item["n_faces"] for item in images)
    _log(args, f"restored {n_faces} faces in {len(images)} images -> {args.output_dir}")
    if failures:
        lines = "\n".join(f"  {item['error']}" for item in failures)
        print(f"error: {len(failures)} of {len(inputs)} images failed:\n{lines}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_OK


def cmd_models(args: argparse.Namespace) -> int:
    """`models`: list checkpoints found in the known folders with the config read from each."""
    from .checkpoint import inspect_checkpoint
    from .model_paths import default_model_dirs, find_gpen_models

    found = find_gpen_models(tuple(args.models_dir))
    if not found:
        print("No GPEN checkpoint found.\n" + _how_to_get_a_model(args.models_dir))
        return EXIT_OK
    folders = ", ".join(str(d) for d in [*args.models_dir, *default_model_dirs()])
    print(f"GPEN checkpoints in {folders}:")
    for path in found:
        try:
            config = inspect_checkpoint(path)
            info = f"{config.size} px (channel_multiplier {config.channel_multiplier}, narrow {config.narrow})"
        except GPENError as exc:
            info = f"not usable: {exc}"
        print(f"  {path}  {path.stat().st_size / 1e6:.0f} MB  {info}")
    return EXIT_OK


def cmd_download(args: argparse.Namespace) -> int:
    """`download SIZE`: fetch, verify and install an official checkpoint."""
    target = (args.dir or default_download_dir()) / checkpoint_filename(args.size)
    if target.is_file() and not args.force:
        print(f"{target} already exists (use --force to download it again)")
        return EXIT_OK
    path = download_checkpoint(args.size, args.dir, base_url=args.base_url, force=args.force,
                               progress=not args.quiet)
    print(f"saved {path}")
    return EXIT_OK


def collect_inputs(specs: Sequence[str], *, recursive: bool = False) -> list[Path]:
    """Expand files, folders (images by extension) and glob patterns into a de-duplicated file list."""
    files: list[Path] = []
    for spec in specs:
        path = Path(spec).expanduser()
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            candidates = path.rglob("*") if recursive else path.iterdir()
            matches = sorted(p for p in candidates if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
        elif glob.has_magic(spec):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(spec), recursive=True)
                             if Path(p).is_file() and Path(p).suffix.lower() in IMAGE_EXTENSIONS)
        else:
            raise UsageError(f"{spec}: no such file or folder")
        if not matches:
            raise UsageError(f"{spec}: no images found (looked for {', '.join(IMAGE_EXTENSIONS)})")
        files.extend(matches)
    seen, unique = set(), []
    for path in files:
        key = path.resolve()
        if key not in seen:
            seen.add(key)
            unique.append(path)
    return unique


def load_landmarks(path: Path) -> dict[str, np.ndarray]:
    """Read a landmarks file: JSON object image name -> N x 5 x 2 (x, y) points in upright-image pixels.

    Keys may be the path as given on the command line, the file name or its stem. A single face may
    be given as 5 x 2; an empty list means "no faces" (the image is copied unchanged).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"{path}: cannot read the landmarks file ({exc})") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: expected a JSON object mapping image names to N x 5 x 2 points")
    table = {}
    for name, value in data.items():
        try:
            points = np.asarray(value, dtype=np.float32)
        except (TypeError, ValueError) as exc:
            raise UsageError(f"{path}: landmarks of '{name}' are not a list of numbers ({exc})") from exc
        if points.size == 0:
            points = points.reshape(0, 5, 2)
        elif points.shape == (5, 2):
            points = points[None]
        if points.ndim != 3 or points.shape[1:] != (5, 2):
            raise UsageError(f"{path}: landmarks of '{name}' must be N x 5 x 2 (x, y) points "
                             f"(eyes, nose, mouth corners), got shape {points.shape}")
        table[name] = points
    return table


def resolve_model(name: str | None, search_dirs: Sequence[Path] = (), *, download: bool = False,
                  quiet: bool = False) -> Path:
    """Checkpoint path for --model (a path, a name like GPEN-BFR-512, or a size), or the preferred one found.

    With `download` a missing official model (512 when none is named) is downloaded first.
    Raises ModelNotFoundError saying where to put a checkpoint and how to download one.
    """
    from .model_paths import find_gpen_models

    if name and Path(name).expanduser().is_file():
        return Path(name).expanduser()
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


def _restore_all(args, model, inputs: list[Path], landmarks: dict, images: list, failures: list) -> None:
    from .pipeline import restore_faces

    taken = list(inputs)
    bar = tqdm(inputs, unit="image", disable=True if args.quiet else None)
    for src in bar:
        bar.set_postfix_str(src.name)
        started = time.perf_counter()
        try:
            image = read_image(src, max_pixels=args.max_pixels or None)
            read_s = time.perf_counter() - started
            result = restore_faces(
                image, model, landmarks=_landmarks_for(src, landmarks), detector=args.detector,
                select=args.select, face_indices=args.faces, min_face_size=args.min_face_size,
                max_faces=args.max_faces, score_threshold=args.score_threshold, alpha=args.alpha,
                mask=args.mask, color_correction=args.color_correction, batch_size=args.batch_size,
                keep_crops=args.save_faces, search_dirs=tuple(args.models_dir), device=model.device,
                on_progress=lambda done, total, name=src.name: bar.set_postfix_str(f"{name} {done}/{total} faces"))
            write_started = time.perf_counter()
            out = write_image(output_path(src, args.output_dir, ext=args.ext, suffix=args.suffix, taken=taken),
                              result.image, quality=args.quality, protect=inputs)
            taken.append(out)
            faces = [_face_record(args, out, item, inputs) for item in result.faces]
            timings = {**result.timings, "read": read_s, "write": time.perf_counter() - write_started,
                       "wall": time.perf_counter() - started}
        except GPENError as exc:
            _fail(failures, src, str(exc))
            continue
        except Exception as exc:  # an unexpected failure on one image must not lose the others
            _fail(failures, src, f"{type(exc).__name__}: {exc}")
            continue
        images.append({"input": str(src), "output": str(out), "width": int(image.shape[1]),
                       "height": int(image.shape[0]), "n_faces": len(faces), "faces": faces,
                       "timings": {k: round(float(v), 4) for k, v in timings.items()}})


def _face_record(args, out: Path, item, protect: list[Path]) -> dict:
    face, index = item.face, item.index
    record = {"index": index, "box": _rounded(face.box), "score": round(float(face.score), 4),
              "landmarks": _rounded(face.landmarks)}
    if args.save_faces:
        faces_dir = args.output_dir / "faces"
        for kind, crop in (("aligned", item.aligned), ("restored", item.restored)):
            if crop is not None:
                path = faces_dir / f"{out.stem}_face{index:02d}_{kind}.png"
                record[kind] = str(write_image(path, crop, protect=protect))
    return record


def _write_report(args, model, model_path: Path, images: list, failures: list) -> None:
    report = {
        "model": {"path": str(model_path), "size": model.size},
        "device": str(model.device), "dtype": str(model.dtype).removeprefix("torch."),
        "options": _report_options(args),
        "n_images": len(images), "n_faces": sum(item["n_faces"] for item in images),
        "n_failed": len(failures), "images": images, "failed": failures,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def _report_options(args) -> dict:
    keys = ("detector", "select", "faces", "min_face_size", "max_faces", "score_threshold", "alpha",
            "color_correction", "mask", "batch_size")
    return {k: getattr(args, k) for k in keys}


def _fail(failures: list, src: Path, message: str) -> None:
    text = message if str(src) in message else f"{src}: {message}"
    failures.append({"input": str(src), "error": text})
    tqdm.write(f"error: {text}", file=sys.stderr)


def _landmarks_for(src: Path, table: dict[str, np.ndarray]) -> np.ndarray | None:
    for key in (str(src), src.name, src.stem):
        if key in table:
            return table[key]
    return None


def _warn_unused_landmarks(table: dict, inputs: list[Path]) -> None:
    names = {key for src in inputs for key in (str(src), src.name, src.stem)}
    unused = sorted(set(table) - names)
    if unused:
        print(f"warning: landmarks given for images not among the inputs: {', '.join(unused)}", file=sys.stderr)


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


def _rounded(array: np.ndarray) -> list:
    return np.round(np.asarray(array, dtype=np.float64), 2).tolist()


def _log(args, message: str) -> None:
    if not args.quiet:
        tqdm.write(message, file=sys.stderr)


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
        except RuntimeError:
            raise argparse.ArgumentTypeError(f"unknown device '{text}': use auto, cpu, cuda, cuda:N or mps") from None
    return text


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _unit_float(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1, got {value}")
    return value


def _index_list(text: str) -> list[int]:
    try:
        indices = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated face numbers like 0,2, got '{text}'") from None
    if not indices or min(indices) < 0:
        raise argparse.ArgumentTypeError(f"expected face numbers >= 0 like 0,2, got '{text}'")
    return indices
