"""Restoring the faces of video: frame by frame as it streams, faces tracked, their landmarks smoothed.

``VideoRestorer`` takes consecutive frames (a host's batch of video frames, or frames of a file) and restores each
one: detect -> track (``gpen_core.tracking``) -> smooth (``gpen_core.smoothing``) -> ``restore_faces`` with the
smoothed landmarks. ``restore_video`` does it for a file with PyAV (an optional dependency): it decodes, restores and
encodes frame by frame, so memory does not grow with the length; it keeps the size, frame rate, timestamps, pixel
format (where the encoder allows), rotation, colour description and metadata, and copies every audio and subtitle
stream packet for packet. Frames are restored upright (as a player shows them), landmarks are in upright px.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time as clock
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import MissingDependencyError, VideoError
from .files import TEMP_PREFIX
from .smoothing import SmoothingParams
from .tracking import FaceTracker, SceneCutDetector, TrackedFace, TrackHistory, TrackSelector

#: Extensions of the video files restore_video reads and writes.
VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
_MUXERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
#: x264 / VP9 constant-rate factor used unless told otherwise: visually lossless for most footage.
DEFAULT_CRF = 18
_SKIPPED_METADATA = {"major_brand", "minor_version", "compatible_brands", "encoder"}


def _import_av():
    try:
        import av
    except ImportError as exc:
        raise MissingDependencyError("reading and writing video files needs PyAV: pip install av "
                                     "(with the Python that runs gpen_core)") from exc
    return av


@dataclass
class FrameResult:
    """One restored frame.

    image: same shape, dtype and channels as the frame given (see ``restore_faces``).
    faces: the faces restored in it, each with its track id and the (5, 2) landmarks used to align and paste.
    mask: (H, W) float32 paste mask in [0, 1]; crops: the restored (S, S, 3) uint8 RGB face crops, in the order
    of ``faces``, when the restorer keeps them (``keep_crops``), else empty.
    time: the frame's time in seconds; scene_cut: True when it starts a new shot (all tracks restarted).
    tag: whatever the caller passed to ``push`` with this frame (e.g. its timestamp in the file).
    """

    image: np.ndarray
    faces: list[TrackedFace]
    mask: np.ndarray
    crops: list[np.ndarray] = field(default_factory=list)
    time: float = 0.0
    scene_cut: bool = False
    tag: object = None


@dataclass
class _Pending:
    frame: np.ndarray
    index: int
    time: float
    scene_cut: bool
    tag: object


class VideoRestorer:
    """Restores the faces of consecutive frames of one video, each face followed along its track.

    Frames go in with ``push`` and come out, restored and in order, from ``push`` and ``flush``: each one waits
    for the ``smoothing.delay`` frames after it (6 by default), whose detections smooth its landmarks and bridge a
    face the detector missed. Memory: that many frames.

    model: a GPENModel (or anything ``restore_faces`` accepts). temporal_smoothing: smooth the landmarks along
    each track and bridge missed detections (``smoothing`` sets how); False restores each frame from its own
    detections, without delay (tracks still give ids and keep the face choice on one person). frame_rate: frames
    per second assumed when ``push`` is given no time. detector, select, face_indices, min_face_size, max_faces,
    score_threshold, alpha, mask, color_correction, batch_size, keep_crops, search_dirs, device, check_interrupt,
    on_oom: as ``restore_faces``, except that ``select`` / ``face_indices`` / ``max_faces`` choose tracks (see
    ``gpen_core.tracking.TrackSelector``). One instance per video: it remembers the previous frames.
    """

    def __init__(self, model, *, temporal_smoothing: bool = True, smoothing: SmoothingParams = SmoothingParams(),
                 frame_rate: float = 25.0, detector: str = "auto", select: str = "all",
                 face_indices: Sequence[int] | None = None, min_face_size: float = 0, max_faces: int | None = None,
                 score_threshold: float | None = None, alpha: float = 1.0, mask: str = "auto",
                 color_correction: bool = False, batch_size: int = 4, keep_crops: bool = False,
                 search_dirs: Sequence = (), device=None, check_interrupt: Callable[[], None] | None = None,
                 on_oom: Callable[[], None] | None = None):
        if frame_rate <= 0:
            raise ValueError(f"frame_rate must be > 0, got {frame_rate}")
        self.model = model
        self.frame_rate = float(frame_rate)
        params = smoothing if temporal_smoothing else None
        self.delay = params.delay if params is not None else 0
        self.tracker = FaceTracker(max_missed=params.max_gap if params is not None else 0)
        self.history = TrackHistory(params)
        self.selector = TrackSelector(select, face_indices, max_faces)
        self.scene_cuts = SceneCutDetector()
        self.detector = detector
        self.detect_options = {"score_threshold": score_threshold, "min_face_size": min_face_size}
        self.restore_options = dict(alpha=alpha, mask=mask, color_correction=color_correction,
                                    batch_size=batch_size, keep_crops=keep_crops, search_dirs=search_dirs,
                                    check_interrupt=check_interrupt, on_oom=on_oom)
        self.search_dirs = tuple(search_dirs)
        self.device = device if device is not None else getattr(model, "device", None)
        self.pending: deque[_Pending] = deque()
        self.frames_in = 0

    @property
    def n_tracks(self) -> int:
        """Tracks (people, per shot) started so far."""
        return self.tracker.next_id

    def push(self, frame: np.ndarray, time: float | None = None, tag: object = None) -> list[FrameResult]:
        """Add the next frame: uint8/uint16 (H, W) gray, (H, W, 3) RGB or (H, W, 4) RGBA, upright.

        time: its timestamp in seconds (None: frame number / frame_rate); tag: returned with its result.
        Returns the frames now ready (restored, oldest first; none while the look-ahead fills).
        """
        from .detection import as_rgb8, detect_faces

        if time is None:
            time = self.frames_in / self.frame_rate
        rgb = as_rgb8(frame)
        cut = self.scene_cuts(rgb)
        faces = detect_faces(rgb, self.detector, device=self.device, search_dirs=self.search_dirs,
                             **self.detect_options)
        self.history.add(self.frames_in, time, self.tracker.update(faces, scene_cut=cut), faces)
        self.pending.append(_Pending(frame, self.frames_in, float(time), cut, tag))
        self.frames_in += 1
        ready = []
        while len(self.pending) > self.delay:
            ready.append(self._restore(self.pending.popleft()))
        return ready

    def flush(self) -> list[FrameResult]:
        """Restore the frames still waiting (call after the last ``push``); returns them in order."""
        ready = []
        while self.pending:
            ready.append(self._restore(self.pending.popleft()))
        return ready

    def _restore(self, item: _Pending) -> FrameResult:
        from .pipeline import restore_faces

        faces = self.history.faces_at(item.index, item.time)
        chosen = self.selector(faces, item.frame.shape)
        points = np.stack([f.landmarks for f in chosen]) if chosen else np.zeros((0, 5, 2), np.float32)
        result = restore_faces(item.frame, self.model, landmarks=points, device=self.device, **self.restore_options)
        crops = [face.restored for face in result.faces if face.restored is not None]
        return FrameResult(result.image, chosen, result.mask, crops, item.time, item.scene_cut, item.tag)


def restore_frames(frames: Iterable[np.ndarray], model, **options) -> Iterator[FrameResult]:
    """Restore consecutive video frames (layouts of ``VideoRestorer.push``) as they come; a generator.

    options: VideoRestorer's keyword arguments. Yields one FrameResult per frame, in order (each after the
    look-ahead frames behind it have been read).
    """
    restorer = VideoRestorer(model, **options)
    for frame in frames:
        yield from restorer.push(frame)
    yield from restorer.flush()


def frame_record(index: int, result: FrameResult) -> dict:
    """A frame for a JSON report: index, time (s), scene_cut, and per restored face its track id, box,
    the 5 landmarks used (x, y upright image px, rounded to 0.01), score and whether it was detected or bridged."""
    return {"index": index, "time": round(result.time, 6), "scene_cut": result.scene_cut,
            "faces": [{"track": f.track, "box": np.round(f.box.astype(np.float64), 2).tolist(),
                       "landmarks": np.round(f.landmarks.astype(np.float64), 2).tolist(),
                       "score": round(f.score, 4), "detected": f.detected} for f in result.faces]}


@dataclass
class VideoResult:
    """What restore_video wrote. frame_rate: average frames per second; duration: seconds of video;
    copied / dropped: the other streams, as "#index type codec" (dropped ones with the reason)."""

    path: Path
    n_frames: int
    width: int
    height: int
    frame_rate: float
    duration: float
    codec: str
    pix_fmt: str
    rotation: int
    n_tracks: int
    copied: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    decode_errors: int = 0
    timings: dict[str, float] = field(default_factory=dict)


def restore_video(src: str | os.PathLike, dst: str | os.PathLike, model, *, crf: int = DEFAULT_CRF,
                  preset: str = "medium", protect: Iterable[str | os.PathLike] = (),
                  on_progress: Callable[[int, int | None], None] | None = None,
                  on_frame: Callable[[int, float, FrameResult], None] | None = None,
                  **options) -> VideoResult:
    """Restore the faces of video file ``src`` into ``dst`` (mp4, m4v, mov, mkv, webm or avi, by extension).

    Streamed: one frame is decoded, restored and encoded at a time. The video is encoded with H.264 (VP9 for
    .webm) at constant quality ``crf`` (0..51, lower = better; 18 is visually lossless) and x264 ``preset``;
    width, height, timestamps (so frame rate, frame count and duration, variable rate included), pixel format
    where the encoder has it, rotation, colour description and the container's metadata are kept. Every audio
    and subtitle stream is copied packet for packet; a stream the output container cannot hold is dropped and
    listed in ``VideoResult.dropped``. ``dst`` is written under a temporary name in its folder and renamed when
    complete: an error or Ctrl-C leaves no partial file. ``dst`` must not be ``src`` or one of ``protect``.
    on_progress(frames done, total frames or None if unknown) after each frame; on_frame(index, time in s,
    FrameResult) for each restored frame. options: VideoRestorer's keyword arguments (model options, face choice,
    ``temporal_smoothing``). Raises VideoError for unreadable files and files without a video stream,
    MissingDependencyError when PyAV is not installed.
    """
    av = _import_av()
    src, dst = Path(src), Path(dst)
    if not 0 <= crf <= 63:
        raise ValueError(f"crf must be in 0..51 (H.264) or 0..63 (VP9), got {crf}")
    if not src.is_file():
        raise VideoError(f"{src}: no such file")
    muxer = _MUXERS.get(dst.suffix.lower())
    if muxer is None:
        raise VideoError(f"{dst}: cannot write '{dst.suffix or 'no extension'}' video; "
                         f"use one of {', '.join(_MUXERS)}")
    if any(_same_file(dst, Path(p)) for p in [src, *protect]):
        raise VideoError(f"{dst}: refusing to overwrite an input file; choose another output folder or name")
    started = clock.perf_counter()
    probe = _probe(av, src)
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"  # see gpen_core.files
    try:
        result = _transcode(av, src, tmp, muxer, model, probe, crf=crf, preset=preset, on_progress=on_progress,
                            on_frame=on_frame, options=options)
        os.replace(tmp, dst)
    except av.error.FFmpegError as exc:
        raise VideoError(f"{src}: {exc}; the file may be damaged, or its streams cannot go into a "
                         f"{dst.suffix} file") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    result.path = dst
    result.timings["total"] = clock.perf_counter() - started
    return result


@dataclass
class _Probe:
    rotation: int
    format: str
    alpha: bool
    deep: bool


def _open_input(av, src: Path):
    try:
        return av.open(str(src), metadata_errors="ignore")
    except (av.error.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise VideoError(f"{src}: cannot read it as a video ({exc}); the file may be damaged or incomplete, "
                         "or not a video; re-copy or re-export it") from exc


def _video_stream(src: Path, container):
    streams = [s for s in container.streams.video if not s.disposition & s.disposition.attached_pic]
    if not streams:
        kinds = ", ".join(sorted({s.type for s in container.streams})) or "no streams"
        raise VideoError(f"{src}: has no video stream ({kinds}); nothing to restore — give a video file")
    return streams[0]


def _probe(av, src: Path) -> _Probe:
    """Rotation and pixel format of the first frame that decodes (the stream header may not have them)."""
    with _open_input(av, src) as container:
        stream = _video_stream(src, container)
        try:
            for frame in container.decode(stream):
                fmt = frame.format
                alpha = len(fmt.components) == 4 and not fmt.name.startswith("gbrp")
                return _Probe(int(round((frame.rotation or 0) / 90.0)) * 90 % 360, fmt.name, alpha,
                              max(c.bits for c in fmt.components) > 8)
        except av.error.FFmpegError as exc:
            raise VideoError(f"{src}: its video cannot be decoded ({exc}); the file may be damaged") from exc
    raise VideoError(f"{src}: no video frame could be decoded; the file may be damaged or incomplete")


def _frame_formats(probe: _Probe, encoder_formats: list[str]) -> tuple[str, str]:
    """(numpy-side format, encoder pixel format) for the source's pixel format."""
    if probe.format.startswith("gray"):
        array_format = "gray16le" if probe.deep else "gray"
    elif probe.alpha:
        array_format = "rgba64le" if probe.deep else "rgba"
    else:
        array_format = "rgb48le" if probe.deep else "rgb24"
    wanted = probe.format.replace("yuvj", "yuv")  # yuvj* = yuv* in full range, kept through color_range
    if wanted not in encoder_formats:
        wanted = next((f for f in ("yuv420p10le", "yuv420p") if probe.deep and f in encoder_formats), "yuv420p")
    return array_format, wanted


def _transcode(av, src: Path, tmp: Path, muxer: str, model, probe: _Probe, *, crf: int, preset: str,
               on_progress, on_frame, options: dict) -> VideoResult:
    with _open_input(av, src) as source, av.open(str(tmp), "w", format=muxer) as target:
        video = _video_stream(src, source)
        video.thread_type = "AUTO"
        rate = video.average_rate or video.guessed_rate or video.base_rate or Fraction(25)
        codec = "libvpx-vp9" if muxer == "webm" else "libx264"
        encoder_options = {"crf": str(crf), "b": "0", "row-mt": "1"} if codec == "libvpx-vp9" else \
            {"crf": str(crf), "preset": preset}
        out_video = target.add_stream(codec, rate=rate, options=encoder_options)
        array_format, pix_fmt = _frame_formats(probe, [f.name for f in out_video.codec.video_formats])
        out_video.width, out_video.height, out_video.pix_fmt = video.width, video.height, pix_fmt
        out_video.time_base = video.time_base
        out_video.codec_context.time_base = video.time_base
        ctx, out_ctx = video.codec_context, out_video.codec_context
        if video.sample_aspect_ratio:
            out_ctx.sample_aspect_ratio = video.sample_aspect_ratio
        full_range = 2 if "yuvj" in probe.format else 0  # AVCOL_RANGE_JPEG: yuvj* formats are full range
        colour = {"colorspace": ctx.colorspace, "color_range": ctx.color_range or full_range,
                  "color_primaries": ctx.color_primaries, "color_trc": ctx.color_trc}
        for name, value in colour.items():
            if value:
                setattr(out_ctx, name, value)
        if probe.rotation:
            out_video.set_display_rotation(probe.rotation)
        _copy_metadata(source.metadata, target.metadata)
        _copy_metadata(video.metadata, out_video.metadata)
        copied, dropped, mapping = _add_copied_streams(source, target, video)

        total = video.frames or _estimate_frames(video, source, rate)
        restorer = VideoRestorer(model, frame_rate=float(rate), **options)
        state = {"index": 0, "decoded": 0, "last_pts": None, "errors": 0, "last_time": 0.0}
        k = probe.rotation // 90

        def write(results: list[FrameResult]) -> None:
            for restored in results:
                if on_frame is not None:
                    on_frame(state["index"], restored.time, restored)
                image = np.rot90(restored.image, -k) if k else restored.image
                new = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=array_format)
                new = new.reformat(format=pix_fmt, dst_colorspace=colour["colorspace"] or None,
                                   dst_color_range=colour["color_range"] or None)
                new.pts, new.time_base = restored.tag, video.time_base
                target.mux(out_video.encode(new))
                state["index"] += 1
                state["last_time"] = restored.time
                if on_progress is not None:
                    on_progress(state["index"], total)

        for packet in source.demux():
            if packet.stream is video:
                try:
                    frames = packet.decode()
                except av.error.InvalidDataError:
                    state["errors"] += 1  # a damaged packet: its frame is lost, the others are kept
                    continue
                for frame in frames:
                    array = frame.to_ndarray(format=array_format, src_color_range=colour["color_range"] or None)
                    pts = _pts(frame, state, video.time_base, rate)
                    write(restorer.push(np.ascontiguousarray(np.rot90(array, k) if k else array),
                                        float(pts * video.time_base), tag=pts))
            elif packet.stream.index in mapping and packet.dts is not None:
                packet.stream = mapping[packet.stream.index]
                target.mux(packet)
        write(restorer.flush())
        if state["index"] == 0:
            raise VideoError(f"{src}: no video frame could be decoded; the file may be damaged or incomplete")
        target.mux(out_video.encode(None))
        duration = state["last_time"] + 1.0 / float(rate) - float((video.start_time or 0) * video.time_base)
        return VideoResult(tmp, state["index"], video.width, video.height, float(rate), duration, codec, pix_fmt,
                           probe.rotation, restorer.n_tracks, copied, dropped, state["errors"])


def _pts(frame, state: dict, time_base: Fraction, rate: Fraction) -> int:
    """The frame's pts in ``time_base``, made up from the frame number when missing, forced to increase."""
    pts = frame.pts
    if pts is None:
        pts = int(round(state["decoded"] / rate / time_base))
    if state["last_pts"] is not None and pts <= state["last_pts"]:
        pts = state["last_pts"] + 1
    state["last_pts"] = pts
    state["decoded"] += 1
    return pts


def _estimate_frames(video, container, rate: Fraction) -> int | None:
    if video.duration and video.time_base:
        return int(round(float(video.duration * video.time_base * rate)))
    if container.duration:
        return int(round(container.duration / 1_000_000 * float(rate)))
    return None


def _copy_metadata(source: dict, target: dict) -> None:
    for key, value in source.items():
        if key.lower() not in _SKIPPED_METADATA:
            target[key] = value


def _add_copied_streams(source, target, video) -> tuple[list[str], list[str], dict]:
    """Output streams for every audio and subtitle stream (copied as packets); others are dropped."""
    copied, dropped, mapping = [], [], {}
    for stream in source.streams:
        if stream is video:
            continue
        name = f"#{stream.index} {stream.type} {stream.codec_context.name if stream.codec_context else '?'}"
        if stream.type not in ("audio", "subtitle"):
            dropped.append(f"{name}: only audio and subtitle streams are copied")
            continue
        try:
            out = target.add_stream_from_template(stream)
        except ValueError as exc:
            dropped.append(f"{name}: {exc}")
            continue
        _copy_metadata(stream.metadata, out.metadata)
        out.disposition = stream.disposition
        mapping[stream.index] = out
        copied.append(name)
    return copied, dropped, mapping


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False
