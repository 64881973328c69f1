"""gpen_core.restorer (a host's long-lived restorer), options.check_strength and web_api (the JSON restore API)."""

from __future__ import annotations

import base64
import io
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from gpen_core import GPENError, OptionError, restorer as restorer_module, web_api
from gpen_core.options import check_strength
from gpen_core.restorer import AUTO, FolderRestorer, Outcome, file_identity


@pytest.mark.parametrize("value, clamp, expected", [
    (0.25, False, 0.25), ("1", False, 1.0), (0, False, 0.0), (5, True, 1.0), (-3, True, 0.0), (1.5, True, 1.0),
])
def test_strength_in_range_or_clamped(value, clamp, expected):
    assert check_strength(value, clamp=clamp) == expected


@pytest.mark.parametrize("value", [1.5, -0.1, math.nan, math.inf, "strong", None, True, [1]])
def test_strength_refused_names_the_range(value):
    with pytest.raises(OptionError, match="strength must be"):
        check_strength(value)
    if not (isinstance(value, float) and math.isfinite(value)):
        with pytest.raises(OptionError):
            check_strength(value, clamp=True)  # clamping makes no number out of junk


def test_a_broken_file_is_read_once_per_identity_and_read_again_when_replaced(tmp_path, monkeypatch, tiny_checkpoint):
    path = tmp_path / "GPEN-BFR-512.pth"
    path.write_bytes(b"<html>404</html>")
    reads = []
    for name in ("load_model", "inspect_checkpoint"):
        real = getattr(restorer_module, name)
        monkeypatch.setattr(restorer_module, name, lambda p, real=real, **kw: reads.append(p) or real(p, **kw))
    core = FolderRestorer(tmp_path)
    first = core.restore(np.zeros((32, 32, 3), np.uint8))
    second = core.restore(np.zeros((32, 32, 3), np.uint8))
    assert len(reads) == 1 and first.error and second.error == first.error
    assert first.new_problems == [first.error] and second.new_problems == []

    shutil.copy(tiny_checkpoint, path)  # a good download under the same name
    model, skipped = core.choose(AUTO, "cpu")
    assert len(reads) == 2 and model.size == 256 and skipped == []
    assert file_identity(path) != file_identity(tiny_checkpoint)


def test_outcome_info_says_what_happened():
    image = np.zeros((2, 2, 3), np.uint8)
    done = Outcome(image, faces=3, found=3, model=Path("m/GPEN-BFR-512.pth"), strength=0.5)
    assert done.info == "GPEN-BFR-512.pth, strength 0.5, 3 faces"
    failed = Outcome(image, error="no GPEN model in /x\nPut a GPEN checkpoint...", skipped=["a.pth: junk"])
    assert failed.info == "failed: no GPEN model in /x; skipped a.pth: junk"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_decode_image_accepts_data_urls_and_keeps_alpha():
    buffer = io.BytesIO()
    Image.fromarray(np.full((4, 5, 4), 9, np.uint8)).save(buffer, format="PNG")
    image = web_api.decode_image("data:image/png;base64," + _b64(buffer.getvalue()))
    assert image.shape == (4, 5, 4) and image.dtype == np.uint8


@pytest.mark.parametrize("text, message", [
    ("", "image must be a base64-encoded image file"),
    (12, "got int"),
    ("@@@", "not valid base64"),
    (_b64(os.urandom(64)), "not a readable image"),
])
def test_decode_image_refuses_junk_with_the_fix(text, message):
    with pytest.raises(web_api.RequestError, match=message):
        web_api.decode_image(text)


def test_decode_image_refuses_a_decompression_bomb():
    buffer = io.BytesIO()
    Image.new("L", (4000, 4000)).save(buffer, format="PNG")
    with pytest.raises(web_api.RequestError, match="above the limit of 1 megapixels"):
        web_api.decode_image(_b64(buffer.getvalue()), max_pixels=1_000_000)


def test_a_service_failure_is_not_a_bad_request():
    payload = {"image": "data:image/png;base64," + _png(np.zeros((8, 8, 3), np.uint8))}
    failing = lambda request: Outcome(request.image, error="no GPEN model in /models/GPEN")  # noqa: E731
    with pytest.raises(web_api.ServiceError, match="no GPEN model"):
        web_api.handle_restore(payload, {}, [], failing)


def _png(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return _b64(buffer.getvalue())


def test_automatic_choice_falls_back_past_a_file_that_sizes_but_does_not_load(tmp_path, tiny_checkpoint):
    from safetensors.torch import load_file, save_file

    state = load_file(tiny_checkpoint)
    name = next(k for k in state if k.endswith(".weight"))
    state[name][0] = float("nan")
    save_file(state, tmp_path / "zz-damaged.safetensors")  # sizes as 256 from its header; later name: first
    shutil.copy(tiny_checkpoint, tmp_path / "good.safetensors")
    (tmp_path / "GPEN-BFR-1024.pth").write_bytes(os.urandom(1000))
    core = FolderRestorer(tmp_path)
    assert [p.name for p in core.candidates(AUTO)] == ["zz-damaged.safetensors", "good.safetensors"]

    model, skipped = core.choose(AUTO, "cpu")
    assert model.path.name == "good.safetensors"
    assert [s.split(":")[0] for s in skipped] == ["GPEN-BFR-1024.pth", "zz-damaged.safetensors"]
    with pytest.raises(GPENError, match="zz-damaged"):  # a named file's own error, no other file instead
        core.choose("zz-damaged.safetensors", "cpu")


def test_warnings_while_restoring_are_returned_and_new_only_once(tmp_path, monkeypatch, tiny_checkpoint):
    import warnings

    shutil.copy(tiny_checkpoint, tmp_path / "tiny.safetensors")

    real = restorer_module.restore_faces

    def slow_precision(image, model, **kwargs):  # as gpen_core warns about a slow precision on the CPU
        warnings.warn("float16 on the CPU is about 10x slower than float32; using float32")
        return real(image, model, **kwargs)

    monkeypatch.setattr(restorer_module, "restore_faces", slow_precision)
    core = FolderRestorer(tmp_path)
    image = np.zeros((32, 32, 3), np.uint8)
    first, second = core.restore(image), core.restore(image)
    assert first.warnings == second.warnings == ["float16 on the CPU is about 10x slower than float32; using float32"]
    assert first.new_problems == first.warnings and second.new_problems == [] and first.error is None
