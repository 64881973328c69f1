"""Video: clips made here (a real face photo moving on a known path, H.264 + AAC), restored by the command line
and the library; tracks, scene cuts, smoothing, stream copying, timestamps, rotation and bad files."""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch

from gpen_core import cli
from gpen_core.errors import MissingDependencyError, VideoError
from gpen_core.imageio import read_image
from gpen_core.video import VideoRestorer, restore_frames, restore_video

FPS = 25
SIZE = (320, 240)  # width, height


class Identity:
    """A restorer that returns the aligned crops: detection, tracking and paste-back run, the network does not."""

    size = 256
    device = torch.device("cpu")

    def restore_crops(self, crops: np.ndarray) -> np.ndarray:
        return crops


@pytest.fixture(scope="module")
def photo(data_dir) -> np.ndarray:
    return read_image(data_dir / "astronaut.jpg")


def _path(t: np.ndarray) -> np.ndarray:
    """Known sub-pixel path (dx, dy) px of the photo at frame t: a steady drift that slowly bends."""
    return np.stack([-40 + 0.53 * t + 0.004 * t ** 2, -12 + 0.29 * t], axis=-1)


def _moving_frames(photo: np.ndarray, n: int, scale: float = 0.6) -> list[np.ndarray]:
    frames = []
    for dx, dy in _path(np.arange(n, dtype=np.float64)):
        matrix = np.array([[scale, 0, dx], [0, scale, dy]])
        frames.append(cv2.warpAffine(photo, matrix, SIZE, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT))
    return frames


def _write_clip(path: Path, frames, *, audio: bool = True, pts=None, time_base=None, rotation: int = 0,
                subtitle: bytes | None = None, video: bool = True) -> None:
    with av.open(str(path), "w") as container:
        container.metadata["title"] = "Grandma, 1987"
        stream = None
        if video:
            stream = container.add_stream("libx264", rate=FPS, options={"crf": "16", "preset": "ultrafast"})
            stream.height, stream.width = frames[0].shape[:2]
            stream.pix_fmt = "yuv420p"
            if time_base is not None:
                stream.codec_context.time_base = time_base
            if rotation:
                stream.set_display_rotation(rotation)
        sound = container.add_stream("aac", rate=44100, layout="mono") if audio else None
        text = container.add_mux_stream("subrip") if subtitle else None
        if text is not None:
            text.time_base = Fraction(1, 1000)
            text.metadata["language"] = "fra"
        for i, frame in enumerate(frames if video else []):
            out = av.VideoFrame.from_ndarray(frame, format="rgb24")
            if pts is not None:
                out.pts, out.time_base = pts[i], time_base
            container.mux(stream.encode(out))
            if text is not None and i == 2:
                packet = av.Packet(subtitle)
                packet.stream, packet.pts, packet.dts, packet.duration = text, 80, 80, 400
                packet.time_base = Fraction(1, 1000)
                container.mux(packet)
        if stream is not None:
            container.mux(stream.encode(None))
        if sound is not None:
            n = int(44100 * len(frames) / FPS)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(n) / 44100)).astype(np.float32)
            for start in range(0, n, 1024):
                chunk = av.AudioFrame.from_ndarray(tone[None, start:start + 1024], format="fltp", layout="mono")
                chunk.sample_rate, chunk.pts = 44100, start
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))


def _packets(path: Path, kind: str) -> list[tuple[bytes, int | None]]:
    with av.open(str(path)) as container:
        stream = next(s for s in container.streams if s.type == kind)
        return [(bytes(p), p.pts) for p in container.demux(stream) if p.size]


def _video_info(path: Path) -> dict:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        times = [float(f.time) for f in container.decode(stream)]
        return {"frames": len(times), "rate": stream.average_rate, "size": (stream.width, stream.height),
                "duration": container.duration / 1e6, "times": times, "pix_fmt": stream.pix_fmt}


@pytest.fixture(scope="module")
def moving_clip(tmp_path_factory, photo) -> Path:
    path = tmp_path_factory.mktemp("clip") / "family.mp4"
    _write_clip(path, _moving_frames(photo, 40))
    return path


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, photo) -> Path:
    path = tmp_path_factory.mktemp("short") / "family.mp4"
    _write_clip(path, _moving_frames(photo, 8))
    return path


def test_cli_restores_a_clip_with_a_frame_report(short_clip, tiny_checkpoint, tmp_path, clean_env):
    report = tmp_path / "report.json"
    status = cli.main(["restore", str(short_clip), "-o", str(tmp_path / "out"), "--model", str(tiny_checkpoint),
                       "--detector", "mtcnn", "--min-face-size", "40", "--crf", "20", "--report", str(report), "-q"])
    assert status == 0
    out = tmp_path / "out" / "family.mp4"
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["family.mp4"]  # no temporary file left
    source, restored = _video_info(short_clip), _video_info(out)
    assert restored["frames"] == source["frames"] == 8 and restored["times"] == source["times"]
    assert _packets(out, "audio") == _packets(short_clip, "audio")
    entry = json.loads(report.read_text())["images"][0]
    assert entry["kind"] == "video" and entry["n_frames"] == 8 and entry["n_tracks"] == 1
    assert [f["index"] for f in entry["frames"]] == list(range(8))
    face = entry["frames"][3]["faces"][0]
    assert face["track"] == 0 and len(face["box"]) == 4 and np.array(face["landmarks"]).shape == (5, 2)
    # The restored clip is not the input clip: the face was pasted (the tiny network is far from identity).
    with av.open(str(out)) as a, av.open(str(short_clip)) as b:
        first = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(int)
        assert np.abs(first - next(b.decode(video=0)).to_ndarray(format="rgb24")).mean() > 1


def test_clip_keeps_its_shape_and_audio_and_landmarks_are_smoothed(moving_clip, tmp_path, monkeypatch):
    from gpen_core import detection

    raw = []
    detect = detection.detect_faces

    def spy(*args, **kwargs):  # the raw detector's landmarks, frame by frame, seen in the same run
        faces = detect(*args, **kwargs)
        raw.append(faces[0].landmarks)
        return faces

    monkeypatch.setattr(detection, "detect_faces", spy)
    used = []
    out = tmp_path / "family.mp4"
    restore_video(moving_clip, out, Identity(), detector="mtcnn", min_face_size=40,
                  on_frame=lambda i, t, frame: used.append(frame.faces[0].landmarks))
    source, restored = _video_info(moving_clip), _video_info(out)
    assert restored["frames"] == source["frames"] == 40
    assert restored["rate"] == source["rate"] == FPS
    assert restored["size"] == source["size"] and restored["pix_fmt"] == "yuv420p"
    assert restored["times"] == pytest.approx(source["times"], abs=1e-6)
    assert restored["duration"] == pytest.approx(source["duration"], abs=0.5 / FPS)
    assert _packets(out, "audio") == _packets(moving_clip, "audio")
    with av.open(str(out)) as container:
        assert container.metadata.get("title") == "Grandma, 1987"

    raw, used = np.array(raw), np.array(used)
    offset = _path(np.arange(40.0))[:, None, :]
    still = (raw - offset).mean(axis=0)  # where the detector puts the landmarks on the unmoved photo
    jitter = {name: float(np.sqrt(((points - offset - still) ** 2).sum(-1).mean()))
              for name, points in (("raw", raw), ("smoothed", used))}
    velocity = np.gradient(offset, axis=0)
    error = used - offset - still
    lag_frames = -float((error * velocity).sum() / (velocity * velocity).sum())
    assert jitter["smoothed"] <= 0.5 * jitter["raw"], jitter
    assert abs(lag_frames) < 1.0


def _two_people(photo: np.ndarray) -> list[np.ndarray]:
    """14 frames of person A (left, shrinking) beside person B (right, growing), cut to 8 frames of B (left)
    beside A (right) on another background."""
    head = photo[20:220, 130:316]
    other = np.ascontiguousarray(cv2.cvtColor(cv2.cvtColor(head[:, ::-1], cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB))
    frames = []

    def place(canvas, face, scale, centre_x):
        small = cv2.resize(face, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        h, w = small.shape[:2]
        x, y = int(centre_x - w / 2), int(SIZE[1] / 2 - h / 2)
        canvas[y:y + h, x:x + w] = small

    for t in range(14):
        canvas = np.full((SIZE[1], SIZE[0], 3), (150, 120, 90), np.uint8)
        place(canvas, head, 0.78 - 0.02 * t, 80)
        place(canvas, other, 0.52 + 0.02 * t, 240)
        frames.append(canvas)
    for _ in range(8):
        canvas = np.full((SIZE[1], SIZE[0], 3), (40, 60, 130), np.uint8)
        place(canvas, other, 0.65, 80)
        place(canvas, head, 0.65, 240)
        frames.append(canvas)
    return frames


def test_tracks_stay_on_one_person_across_a_scene_cut(photo):
    results = list(restore_frames(_two_people(photo), Identity(), detector="mtcnn", min_face_size=40))
    assert [r.scene_cut for r in results] == [i == 14 for i in range(22)]
    assert all(len(r.faces) == 2 for r in results)
    tracks: dict[int, set] = {}
    for i, r in enumerate(results):
        for face in r.faces:
            tracks.setdefault(face.track, set()).add((i >= 14, bool(face.center[0] > 160)))
    assert len(tracks) == 4 and all(len(places) == 1 for places in tracks.values())  # one person each
    # The largest face changes sides within the first shot (so a per-frame "largest" would jump) ...
    left_larger = [max(r.faces, key=lambda f: f.area).center[0] < 160 for r in results[:14]]
    assert left_larger[0] and not left_larger[-1]


def test_select_largest_follows_one_track_and_subtitles_are_copied(photo, tmp_path):
    clip = tmp_path / "two.mkv"
    _write_clip(clip, _two_people(photo), audio=False, subtitle=b"Bonjour")
    frames = []
    restore_video(clip, tmp_path / "out.mkv", Identity(), detector="mtcnn", min_face_size=40, select="largest",
                  on_frame=lambda i, t, frame: frames.append(frame.faces))
    assert all(len(faces) == 1 for faces in frames)
    first_shot = {faces[0].track for faces in frames[:14]}
    second_shot = {faces[0].track for faces in frames[14:]}
    assert len(first_shot) == 1 and len(second_shot) == 1 and first_shot != second_shot
    # ... but the choice stays on the person largest at the start (left) for the whole shot.
    assert all(faces[0].center[0] < 160 for faces in frames[:14])
    assert _packets(tmp_path / "out.mkv", "subtitle") == _packets(clip, "subtitle") == [(b"Bonjour", 80)]
    with av.open(str(tmp_path / "out.mkv")) as container:
        assert container.streams.subtitles[0].metadata.get("language") == "fra"


def test_variable_frame_rate_timestamps_are_kept(photo, tmp_path):
    frames = _moving_frames(photo, 12)
    pts = [0, 40, 80, 100, 160, 200, 233, 300, 310, 400, 440, 520]  # ms, irregular
    clip = tmp_path / "vfr.mp4"
    _write_clip(clip, frames, audio=False, pts=pts, time_base=Fraction(1, 1000))
    result = restore_video(clip, tmp_path / "out.mp4", Identity(), detector="mtcnn", min_face_size=40)
    assert result.n_frames == 12
    assert _video_info(tmp_path / "out.mp4")["times"] == pytest.approx([p / 1000 for p in pts], abs=1e-3)


def test_rotation_is_kept_and_faces_are_found_upright(photo, tmp_path):
    upright = _moving_frames(photo, 4)
    stored = [np.ascontiguousarray(np.rot90(f, -1)) for f in upright]  # a phone held sideways
    clip = tmp_path / "phone.mov"
    _write_clip(clip, stored, audio=False, rotation=90)
    seen = []
    result = restore_video(clip, tmp_path / "out.mov", Identity(), detector="mtcnn", min_face_size=40,
                           on_frame=lambda i, t, frame: seen.append(len(frame.faces)))
    assert result.rotation == 90 and seen == [1, 1, 1, 1]
    with av.open(str(tmp_path / "out.mov")) as container:
        frame = next(container.decode(video=0))
        assert frame.rotation == 90 and (frame.width, frame.height) == (SIZE[1], SIZE[0])


def test_interrupted_run_leaves_no_file(moving_clip, tmp_path):
    def stop(done, total):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        restore_video(moving_clip, tmp_path / "out" / "x.mp4", Identity(), detector="mtcnn", min_face_size=40,
                      on_progress=stop)
    assert list((tmp_path / "out").iterdir()) == []


def test_bad_videos_get_clear_errors(moving_clip, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00\x00\x00\x18ftypisom" + bytes(range(256)) * 8)
    with pytest.raises(VideoError, match="cannot read it as a video"):
        restore_video(junk, tmp_path / "a.mp4", Identity())
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(moving_clip.read_bytes()[:3000])  # a download that stopped early
    with pytest.raises(VideoError, match="damaged"):
        restore_video(cut, tmp_path / "b.mp4", Identity())
    sound = tmp_path / "sound.mp4"
    _write_clip(sound, [np.zeros((48, 64, 3), np.uint8)] * 5, video=False)
    with pytest.raises(VideoError, match="no video stream"):
        restore_video(sound, tmp_path / "c.mp4", Identity())
    with pytest.raises(VideoError, match="refusing to overwrite an input"):
        restore_video(moving_clip, moving_clip, Identity())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4", "junk.mp4", "sound.mp4"]


def test_missing_pyav_says_how_to_install(moving_clip, tmp_path, monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "av", None)
    with pytest.raises(MissingDependencyError, match="pip install av"):
        restore_video(moving_clip, tmp_path / "a.mp4", Identity())


def test_restorer_returns_every_frame_in_order_after_its_lookahead(photo):
    restorer = VideoRestorer(Identity(), detector="mtcnn", min_face_size=40)
    frames = _moving_frames(photo, 9)
    ready = [restorer.push(frame) for frame in frames]
    assert [len(r) for r in ready] == [0] * restorer.delay + [1] * (9 - restorer.delay)
    results = [r for batch in ready for r in batch] + restorer.flush()
    assert [r.time for r in results] == pytest.approx([i / 25 for i in range(9)])
    assert all(r.image.shape == frames[0].shape and r.image.dtype == np.uint8 for r in results)
    assert all(len(r.faces) == 1 and r.faces[0].track == 0 for r in results)
