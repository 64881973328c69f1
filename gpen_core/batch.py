"""Restoring a list of files into a folder: the loop behind `python -m gpen_core restore`.

Each input is handled by the function `HANDLERS` names for its kind (see `inputs.classify_input`); one
failing input is recorded and the others go on. Ctrl-C (or SIGTERM turned into KeyboardInterrupt by the
command line) stops the loop: the file being written is not left behind (see `files.write_atomic`), and
the result says which inputs were not processed. Progress: a bar on a terminal, one line per input when
stderr is a log file or pipe, nothing when quiet.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import numpy as np
from tqdm import tqdm

from .errors import GPENError
from .imageio import DEFAULT_MAX_PIXELS, check_format, read_image_file, write_image
from .inputs import IMAGE, VIDEO, InputItem
from .outputs import OutputPlanner


@dataclass
class BatchSettings:
    """How to restore and write. restore: keyword arguments for `pipeline.restore_faces` (detector, select,
    face_indices, alpha, ...). landmarks: image name/stem/path -> (N, 5, 2) float32 (x, y) px, skipping
    detection. ext/suffix: output name (see `imageio.output_path`). quality: JPEG/WebP 1..100.
    save_faces: write each face's aligned and restored crops to `<outdir>/faces/`. max_pixels: per input
    (all frames together), None = no limit. aligned_task: None = find faces (`pipeline.restore_faces`); a task
    name (or "auto") = every frame is an aligned face crop (`aligned.restore_aligned_image`). video: keyword
    arguments for `video.restore_video` beyond the `restore` ones (crf, temporal_smoothing)."""
    restore: dict = field(default_factory=dict)
    landmarks: dict[str, np.ndarray] = field(default_factory=dict)
    ext: str | None = None
    suffix: str = ""
    quality: int = 95
    save_faces: bool = False
    max_pixels: int | None = DEFAULT_MAX_PIXELS
    aligned_task: str | None = None
    video: dict = field(default_factory=dict)


@dataclass
class BatchResult:
    """images: one record per restored input (input, output, size, frames, faces, warnings, timings).
    failures: {"input", "error"} per failed input. interrupted: the run was stopped; unprocessed: inputs
    not (completely) done then. signal: the signal number that stopped it (2 for Ctrl-C)."""
    images: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    interrupted: bool = False
    unprocessed: list[str] = field(default_factory=list)
    signal: int = 0

    @property
    def n_faces(self) -> int:
        return sum(item["n_faces"] for item in self.images)


class Progress:
    """Progress on `stream`: a tqdm bar on a terminal, one line per input otherwise, nothing when quiet."""

    def __init__(self, total: int, *, quiet: bool = False, stream: TextIO | None = None):
        self.stream = stream or sys.stderr
        self.total, self.done, self.quiet = total, 0, quiet
        interactive = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.bar = tqdm(total=total, unit="image", file=self.stream) if interactive and not quiet else None
        self._next_line = 30.0  # seconds into a video when the next progress line is due (off a terminal)

    def start(self, item: InputItem) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(item.path.name)

    def faces(self, item: InputItem, done: int, total: int) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(f"{item.path.name} {done}/{total} faces")

    def frames(self, item: InputItem, done: int, total: int | None, elapsed: float) -> None:
        """Video progress: frames done of `total` (None if unknown) after `elapsed` seconds, with frames/s and
        the time left; off a terminal one line every 30 s."""
        rate = done / elapsed if elapsed > 0 else 0.0
        left = f", {(total - done) / rate / 60:.1f} min left" if total and rate > 0 and total >= done else ""
        text = f"{item.path.name} {done}/{total or '?'} frames, {rate:.2f} frames/s{left}"
        if self.bar is not None:
            self.bar.set_postfix_str(text)
        elif not self.quiet and elapsed >= self._next_line:
            self._next_line = elapsed + 30.0
            print(text, file=self.stream, flush=True)

    def finished(self, item: InputItem, record: dict | None) -> None:
        self._next_line = 30.0
        self.done += 1
        if self.bar is not None:
            self.bar.update(1)
        elif not self.quiet:
            what = (f"{record['n_faces']} faces -> {record['output']} ({record['timings']['wall']:.1f} s)"
                    if record else "failed")
            print(f"[{self.done}/{self.total}] {item.path}: {what}", file=self.stream, flush=True)

    def message(self, text: str) -> None:
        """A warning or error line that must be seen even with --quiet."""
        if self.bar is not None:
            tqdm.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


Handler = Callable[[InputItem, object, Path, OutputPlanner, BatchSettings, Progress, list], dict]


def restore_batch(items: list[InputItem], model, planned: dict[Path, Path], planner: OutputPlanner,
                  settings: BatchSettings, progress: Progress) -> BatchResult:
    """Restore every input with `model` into its `planned` output path; see the module docstring."""
    result = BatchResult()
    protect = [item.path for item in items]
    for position, item in enumerate(items):
        progress.start(item)
        try:
            record = HANDLERS[item.kind](item, model, planned[item.path], planner, settings, progress, protect)
        except KeyboardInterrupt as exc:
            result.interrupted, result.signal = True, getattr(exc, "signal", 2)
            result.unprocessed = [str(i.path) for i in items[position:]]
            break
        except GPENError as exc:
            record = None
            _fail(result, progress, item.path, str(exc))
        except Exception as exc:  # an unexpected failure on one input must not lose the others
            record = None
            _fail(result, progress, item.path, f"{type(exc).__name__}: {exc}")
        if record is not None:
            result.images.append(record)
        progress.finished(item, record)
    progress.close()
    return result


def restore_image_file(item: InputItem, model, out: Path, planner: OutputPlanner, settings: BatchSettings,
                       progress: Progress, protect: list[Path]) -> dict:
    """Restore every frame (page) of one image file and write them, with its metadata, to `out`."""
    from .aligned import restore_aligned_image
    from .pipeline import restore_faces

    started = time.perf_counter()
    src = item.path
    file = read_image_file(src, max_pixels=settings.max_pixels)
    timings = {"read": time.perf_counter() - started}
    check_format(out, len(file.frames))  # before the work, not after it
    multi = len(file.frames) > 1
    frames, faces, warnings = [], [], []

    def on_progress(done: int, total: int) -> None:
        progress.faces(item, done, total)

    for number, frame in enumerate(file.frames):
        if settings.aligned_task is not None:
            result = restore_aligned_image(frame, model, task=settings.aligned_task, keep_crops=settings.save_faces,
                                           on_progress=on_progress)
        else:
            result = restore_faces(frame, model, landmarks=_landmarks_for(src, settings.landmarks),
                                   keep_crops=settings.save_faces, on_progress=on_progress, **settings.restore)
        frames.append(result.image)
        for key, value in result.timings.items():
            timings[key] = timings.get(key, 0.0) + value
        where = f"{src} (frame {number})" if multi else str(src)
        warning = _index_warning(where, settings.restore.get("face_indices"), result.n_detected)
        if warning:
            warnings.append(warning)
            progress.message(f"warning: {warning}")
        for face in result.faces:
            faces.append(_face_record(face, number if multi else None, out, planner, settings, protect))
    write_started = time.perf_counter()
    write_image(out, frames, quality=settings.quality, protect=protect, meta=file.meta)
    timings["write"] = time.perf_counter() - write_started
    timings["wall"] = time.perf_counter() - started
    record = {"input": str(src), "output": str(out), "width": int(frames[0].shape[1]),
              "height": int(frames[0].shape[0]), "n_frames": len(frames), "n_faces": len(faces), "faces": faces,
              "timings": {k: round(float(v), 4) for k, v in timings.items()}}
    if warnings:
        record["warnings"] = warnings
    return record


def restore_video_file(item: InputItem, model, out: Path, planner: OutputPlanner, settings: BatchSettings,
                       progress: Progress, protect: list[Path]) -> dict:
    """Restore one video file into `out` (gpen_core.video.restore_video); the record lists every frame's faces."""
    from .errors import VideoError
    from .video import frame_record, restore_video

    if settings.aligned_task is not None:
        raise VideoError(f"{item.path}: --aligned takes aligned face images, not videos; restore the video "
                         "without --aligned")
    started = time.perf_counter()
    frames: list[dict] = []
    options = {k: v for k, v in settings.restore.items() if k != "keep_crops"}
    result = restore_video(
        item.path, out, model, protect=protect, **settings.video, **options,
        on_frame=lambda index, _, frame: frames.append(frame_record(index, frame)),
        on_progress=lambda done, total: progress.frames(item, done, total, time.perf_counter() - started))
    for note in result.dropped:
        progress.message(f"warning: {item.path}: stream {note}; not copied")
    if result.decode_errors:
        progress.message(f"warning: {item.path}: {result.decode_errors} damaged video packets skipped "
                         "(their frames are missing from the result)")
    wall = time.perf_counter() - started
    return {"input": str(item.path), "output": str(out), "kind": "video", "width": result.width,
            "height": result.height, "n_frames": result.n_frames, "frame_rate": round(result.frame_rate, 4),
            "duration": round(result.duration, 4), "rotation": result.rotation, "codec": result.codec,
            "pix_fmt": result.pix_fmt, "copied_streams": result.copied, "dropped_streams": result.dropped,
            "n_tracks": result.n_tracks, "n_faces": sum(len(f["faces"]) for f in frames),
            "decode_errors": result.decode_errors,
            "frames_per_second": round(result.n_frames / wall, 3), "frames": frames,
            "timings": {"wall": round(wall, 4)}}


#: Input kind -> function restoring one such input; returns the input's report record.
HANDLERS: dict[str, Handler] = {IMAGE: restore_image_file, VIDEO: restore_video_file}


def _index_warning(where: str, indices, n_detected: int) -> str | None:
    if not indices:
        return None
    missing = [i for i in indices if not -n_detected <= i < n_detected]
    if not missing:
        return None
    valid = f"valid numbers are 0..{n_detected - 1}" if n_detected else "no face to number"
    return (f"{where}: {n_detected} face{'s' if n_detected != 1 else ''} found; --faces "
            f"{','.join(map(str, missing))} out of range ({valid}), not restored")


def _face_record(item, frame: int | None, out: Path, planner: OutputPlanner, settings: BatchSettings,
                 protect: list[Path]) -> dict:
    face = item.face
    record = {"index": item.index, "box": _rounded(face.box), "score": round(float(face.score), 4),
              "landmarks": _rounded(face.landmarks)}
    if frame is not None:
        record = {"frame": frame, **record}
    if settings.save_faces:
        tag = f"_frame{frame:03d}" if frame is not None else ""
        for kind, crop in (("aligned", item.aligned), ("restored", item.restored)):
            if crop is not None:
                path = planner.claim(planner.folder / "faces" / f"{out.stem}{tag}_face{item.index:02d}_{kind}.png")
                record[kind] = str(write_image(path, crop, protect=protect))
    return record


def _fail(result: BatchResult, progress: Progress, src: Path, message: str) -> None:
    text = message if str(src) in message else f"{src}: {message}"
    result.failures.append({"input": str(src), "error": text})
    progress.message(f"error: {text}")


def _landmarks_for(src: Path, table: dict[str, np.ndarray]) -> np.ndarray | None:
    for key in (str(src), src.name, src.stem):
        if key in table:
            return table[key]
    return None


def _rounded(array: np.ndarray) -> list:
    return np.round(np.asarray(array, dtype=np.float64), 2).tolist()
