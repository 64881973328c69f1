"""The WebUI adapter (scripts/, install.py) against small stand-ins for the AUTOMATIC1111 / Forge modules.

The stand-ins copy only what the adapter touches, with the real signatures of WebUI 1.8-1.10 / Forge:
shared.face_restorers / opts / OptionInfo / options_section / state, face_restoration.FaceRestoration, devices,
errors.report, paths.models_path, script_callbacks.on_ui_settings / on_app_started, scripts.Script,
call_queue.queue_lock, scripts_postprocessing, ui_components.InputAccordion. The API route is served by a real
FastAPI app, as in the WebUI.
Scripts are loaded the way modules.script_loading does: by file path, module name = file name.
"""
from __future__ import annotations

import base64
import contextlib
import importlib.util
import io
import os
import threading
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from gpen_core import GPENError, load_model

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "tests" / "data" / "tiny-256.safetensors"
PHOTO = ROOT / "tests" / "data" / "astronaut.jpg"  # one face, 512x512


class OptionInfo:
    def __init__(self, default=None, label="", component=None, component_args=None, onchange=None, section=None,
                 refresh=None, comment_before="", comment_after="", infotext=None, restrict_api=False,
                 category_id=None):
        self.default, self.label, self.component, self.component_args = default, label, component, component_args
        self.section, self.category_id, self.refresh, self.comment_after = section, category_id, refresh, comment_after
        self.do_not_save = False

    def info(self, info):
        self.comment_after += info
        return self


class OptionHTML(OptionInfo):
    def __init__(self, text):
        super().__init__(str(text).strip(), label="")
        self.do_not_save = True


def options_section(section_identifier, options_dict):
    for v in options_dict.values():
        v.section, v.category_id = section_identifier[:2], section_identifier[2]
    return options_dict


class Options:
    """Like modules.options.Options: unknown keys raise AttributeError, registered ones fall back to defaults."""

    def __init__(self, **data):
        self.__dict__["data"] = dict(data)
        self.__dict__["data_labels"] = {}

    def __getattr__(self, item):
        if item in self.data:
            return self.data[item]
        if item in self.data_labels:
            return self.data_labels[item].default
        raise AttributeError(item)

    def __setattr__(self, key, value):
        self.data[key] = value

    def add_option(self, key, info):
        self.data_labels[key] = info
        if key not in self.data and not info.do_not_save:
            self.data[key] = info.default


class State:
    """Like modules.shared_state.State: begin() clears a previous interrupt."""

    def __init__(self):
        self.interrupted, self.jobs = False, []

    def begin(self, job="(unknown)"):
        self.interrupted = False
        self.jobs.append(job)

    def end(self):
        pass


class Script:
    pass


class FaceRestoration:
    def name(self):
        return "None"

    def restore(self, np_image):
        return np_image


class ScriptPostprocessing:
    order = 1000
    name = None


class PostprocessedImage:
    def __init__(self, image):
        self.image = image
        self.info = {}


class Component:
    """gradio stand-in: keeps its keyword arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


@contextlib.contextmanager
def input_accordion(value, **kwargs):
    yield Component(value, **kwargs)


def _module(name: str, **attrs) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    return module


@pytest.fixture
def webui(tmp_path, monkeypatch):
    """Stand-in WebUI modules in sys.modules; models_path is tmp_path/models. Returns the namespace."""
    warnings: list[str] = []
    callbacks: list = []
    app_started: list = []
    reports: list[str] = []
    shared = _module(
        "modules.shared", face_restorers=[], OptionInfo=OptionInfo, OptionHTML=OptionHTML,
        options_section=options_section, cmd_opts=types.SimpleNamespace(gfpgan_models_path=None),
        state=State(),
        opts=Options(face_restoration_model="CodeFormer", face_restoration_unload=False),
    )
    devices = _module("modules.devices", cpu=torch.device("cpu"), device_codeformer=torch.device("cpu"),
                      get_optimal_device=lambda: torch.device("cpu"), torch_gc=lambda: None)
    modules = {
        "modules": _module("modules", __path__=[]),
        "modules.shared": shared,
        "modules.devices": devices,
        "modules.errors": _module("modules.errors", report=lambda message, exc_info=False: reports.append(message)),
        "modules.face_restoration": _module("modules.face_restoration", FaceRestoration=FaceRestoration),
        "modules.paths": _module("modules.paths", models_path=str(tmp_path / "models")),
        "modules.script_callbacks": _module("modules.script_callbacks", on_ui_settings=callbacks.append,
                                            on_app_started=app_started.append),
        "modules.scripts": _module("modules.scripts", Script=Script, AlwaysVisible=object()),
        "modules.call_queue": _module("modules.call_queue", queue_lock=threading.Lock()),
        "modules.scripts_postprocessing": _module("modules.scripts_postprocessing",
                                                  ScriptPostprocessing=ScriptPostprocessing,
                                                  PostprocessedImage=PostprocessedImage),
        "modules.ui_components": _module("modules.ui_components", InputAccordion=input_accordion),
        "gradio": _module("gradio", Slider=Component, Dropdown=Component, Radio=Component, HTML=Component,
                          Warning=warnings.append),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
        if "." in name:
            setattr(modules["modules"], name.split(".", 1)[1], module)
    return types.SimpleNamespace(shared=shared, devices=devices, callbacks=callbacks, warnings=warnings,
                                 reports=reports, app_started=app_started, model_dir=tmp_path / "models" / "GPEN")


def load_script(name: str) -> types.ModuleType:
    """Execute scripts/<name> the way modules.script_loading.load_module does."""
    path = ROOT / "scripts" / name
    spec = importlib.util.spec_from_file_location(path.name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def gpen_restorers(shared) -> list:
    return [r for r in shared.face_restorers if r.name() == "GPEN"]


def photo(size: int = 256) -> np.ndarray:
    """A real portrait, resized so the long side is `size` px: (H,W,3) uint8 RGB."""
    image = Image.open(PHOTO).convert("RGB")
    image.thumbnail((size, size))
    return np.asarray(image).copy()


def test_import_registers_one_gpen_restorer_and_a_model_folder(webui):
    load_script("gpen_restorer.py")
    first = gpen_restorers(webui.shared)
    assert len(first) == 1 and isinstance(first[0], FaceRestoration)
    assert webui.model_dir.is_dir() and any(webui.model_dir.glob("*.txt"))

    load_script("gpen_restorer.py")  # "Reload UI" executes every script again
    again = gpen_restorers(webui.shared)
    assert len(again) == 1 and again[0] is not first[0]
    assert first[0].cmd_dir == str(webui.model_dir)


def test_settings_section_lists_models_and_defaults_to_automatic(webui):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "tiny-256.safetensors")
    script = load_script("gpen_restorer.py")
    for callback in webui.callbacks:
        callback()

    labels = webui.shared.opts.data_labels
    assert {"gpen_model", "gpen_alpha", "gpen_detector", "gpen_color_correction"} <= set(labels)
    assert all(labels[k].section == ("gpen", "GPEN") for k in labels)
    model = labels["gpen_model"]
    assert model.default == script.AUTO_MODEL and callable(model.refresh)
    (webui.model_dir / "GPEN-BFR-512.pth").write_bytes(b"x")
    assert model.component_args()["choices"] == [script.AUTO_MODEL, "GPEN-BFR-512.pth", "tiny-256.safetensors"]
    assert "gpen_no_model" not in labels
    assert webui.shared.opts.gpen_alpha == 1.0 and webui.shared.opts.gpen_detector == "auto"


def test_settings_without_a_model_say_how_to_get_one(webui):
    load_script("gpen_restorer.py")
    for callback in webui.callbacks:
        callback()
    text = webui.shared.opts.data_labels["gpen_no_model"].default
    assert str(webui.model_dir) in text and "-m gpen_core download 512 --dir" in text


def test_automatic_choice_is_the_largest_model_and_a_named_choice_wins(webui):
    webui.model_dir.mkdir(parents=True)
    for name in ("GPEN-BFR-512.pth", "GPEN-BFR-2048.pth", "GPEN-BFR-1024.safetensors"):
        (webui.model_dir / name).write_bytes(b"not a checkpoint")
    shutil.copy(TINY, webui.model_dir / "zz-unnamed.safetensors")  # size read from the file: 256
    script = load_script("gpen_restorer.py")
    core = gpen_restorers(webui.shared)[0].core
    # Sizes come from the files, not their names: files that are not checkpoints are not candidates.
    assert [p.name for p in core.candidates(script._choice(script.AUTO_MODEL))] == ["zz-unnamed.safetensors"]
    assert [p.name for p in core.candidates("GPEN-BFR-512.pth")] == ["GPEN-BFR-512.pth"]
    assert [p.name for p in core.candidates("deleted-since.pth")] == ["zz-unnamed.safetensors"]


def test_automatic_falls_back_past_a_broken_largest_file_and_says_so(webui):
    webui.model_dir.mkdir(parents=True)
    (webui.model_dir / "GPEN-BFR-1024.pth").write_bytes(os.urandom(4096))
    shutil.copy(TINY, webui.model_dir / "GPEN-BFR-256.safetensors")
    load_script("gpen_restorer.py")
    webui.shared.opts.gpen_detector = "mtcnn"
    restorer = gpen_restorers(webui.shared)[0]

    image = photo(128)
    out = restorer.restore(image)
    assert np.abs(out.astype(int) - image).max() > 0, "the usable 256 model was not used"
    info = restorer.last.info
    assert info.startswith("GPEN-BFR-256.safetensors, strength 1, 1 faces; skipped GPEN-BFR-1024.pth: ")
    with pytest.raises(GPENError) as reason:  # the loader's own words say why
        load_model(webui.model_dir / "GPEN-BFR-1024.pth")
    assert info.endswith(str(reason.value).strip().splitlines()[0])
    restorer.restore(image)
    assert len(webui.warnings) == 1 and "GPEN-BFR-1024.pth" in webui.warnings[0]  # shown once
    assert len(webui.reports) == 1


def test_without_a_model_the_image_comes_back_unchanged_with_a_hint_once(webui):
    load_script("gpen_restorer.py")
    image = photo()
    restorer = gpen_restorers(webui.shared)[0]
    out = restorer.restore(image)
    assert out is image
    assert restorer.restore(image) is image
    assert len(webui.reports) == 1 and len(webui.warnings) == 1
    assert str(webui.model_dir) in webui.reports[0] and "download 512" in webui.reports[0]
    assert str(webui.model_dir) in webui.warnings[0]
    assert restorer.last.info == f"failed: no GPEN model in {webui.model_dir}"


def test_the_download_hint_works_from_where_a_webui_user_stands(webui):
    script = load_script("gpen_restorer.py")
    hint = script.download_hint()
    command = f"cd {script.EXTENSION_DIR} && {sys.executable} -m gpen_core download 512 --dir {webui.model_dir}"
    assert command in hint.replace('"', "")


def test_restore_runs_gpen_caches_the_model_and_reloads_on_a_new_setting(webui, monkeypatch):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "a.safetensors")
    shutil.copy(TINY, webui.model_dir / "b.safetensors")
    script = load_script("gpen_restorer.py")
    loads = []
    real_load = script.gpen_core.restorer.load_model
    monkeypatch.setattr(script.gpen_core.restorer, "load_model", lambda path, **kw: loads.append(Path(path).name)
                        or real_load(path, **kw))
    webui.shared.opts.gpen_model = "a.safetensors"
    webui.shared.opts.gpen_detector = "mtcnn"
    restorer = gpen_restorers(webui.shared)[0]

    image = photo(128)
    out = restorer.restore(image)
    assert out.shape == image.shape and out.dtype == np.uint8
    assert np.abs(out.astype(int) - image).max() > 0, "no face was restored"
    restorer.restore(image)
    assert loads == ["a.safetensors"] and not webui.reports
    webui.shared.opts.gpen_model = "b.safetensors"
    restorer.restore(image)
    assert loads == ["a.safetensors", "b.safetensors"]

    # the same name replaced by another file (a new download): read again
    (webui.model_dir / "b.safetensors").unlink()
    shutil.copy(TINY, webui.model_dir / "b.safetensors")
    stat = (webui.model_dir / "b.safetensors").stat()
    os.utime(webui.model_dir / "b.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    restorer.restore(image)
    assert loads == ["a.safetensors", "b.safetensors", "b.safetensors"]


@pytest.mark.parametrize("unload", [False, True])
def test_face_restoration_unload_moves_the_model_to_cpu_afterwards(webui, monkeypatch, unload):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "tiny.safetensors")
    script = load_script("gpen_restorer.py")
    webui.shared.opts.face_restoration_unload = unload
    webui.shared.opts.gpen_detector = "mtcnn"
    restorer = gpen_restorers(webui.shared)[0]
    moves = []
    monkeypatch.setattr(restorer.core, "offload", lambda device: moves.append(device))
    releases = []
    monkeypatch.setattr(script.gpen_core, "release_face_models", lambda: releases.append(1))
    restorer.restore(photo(128))
    assert moves == ([webui.devices.cpu] if unload else [])
    assert len(releases) == unload  # the detector and parsing networks are dropped too


def test_a_broken_file_is_read_once_reported_once_and_recorded_in_the_infotext(webui, monkeypatch):
    webui.model_dir.mkdir(parents=True)
    (webui.model_dir / "GPEN-BFR-512.pth").write_bytes(b"corrupt")
    script = load_script("gpen_restorer.py")
    reads = []
    for name in ("load_model", "inspect_checkpoint"):
        real = getattr(script.gpen_core.restorer, name)
        monkeypatch.setattr(script.gpen_core.restorer, name, lambda p, real=real, **kw: reads.append(p)
                            or real(p, **kw))
    restorer = gpen_restorers(webui.shared)[0]
    image = photo(128)
    for _ in range(3):
        assert restorer.restore(image) is image
    assert len(reads) == 1 and len(webui.reports) == 1 and len(webui.warnings) == 1
    assert "GPEN-BFR-512.pth" in webui.warnings[0]
    assert restorer.last.info.startswith("failed: ") and "GPEN-BFR-512.pth" in restorer.last.info

    pp = PostprocessedImage(Image.fromarray(image))
    load_script("postprocessing_gpen.py").ScriptPostprocessingGPEN().process(pp, enable=True, gpen_visibility=1.0)
    assert pp.info["GPEN"].startswith("failed: ") and "GPEN visibility" not in pp.info


def test_strength_stored_out_of_range_is_clamped_not_fatal(webui):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "tiny.safetensors")
    load_script("gpen_restorer.py")
    webui.shared.opts.gpen_detector = "mtcnn"
    webui.shared.opts.gpen_alpha = 5  # as POST /sdapi/v1/options {"gpen_alpha": 5} stores it
    restorer = gpen_restorers(webui.shared)[0]
    image = photo(128)
    assert np.abs(restorer.restore(image).astype(int) - image).max() > 0
    assert restorer.last.info == "tiny.safetensors, strength 1, 1 faces" and not webui.reports


class InterruptedAfter:
    """shared.state whose `interrupted` turns True at the n-th read (the Interrupt button pressed mid-run)."""

    def __init__(self, reads: int):
        self.reads, self.limit = 0, reads

    @property
    def interrupted(self) -> bool:
        self.reads += 1
        return self.reads >= self.limit


def test_interrupt_stops_between_faces_and_keeps_the_faces_done(webui):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "tiny.safetensors")
    load_script("gpen_restorer.py")
    webui.shared.opts.gpen_detector = "mtcnn"
    restorer = gpen_restorers(webui.shared)[0]
    image = np.concatenate([photo(128), photo(128)], axis=1)  # two faces, left one first
    webui.shared.state = InterruptedAfter(2)  # pressed while the first face is in the network

    out = restorer.restore(image)
    half = image.shape[1] // 2
    assert np.abs(out[:, :half].astype(int) - image[:, :half]).max() > 0, "the face done was thrown away"
    assert np.array_equal(out[:, half:], image[:, half:])
    assert restorer.last.info == "tiny.safetensors, strength 1, 1 of 2 faces (interrupted)"
    assert not webui.reports


def test_txt2img_infotext_says_what_gpen_did(webui):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "tiny.safetensors")
    script = load_script("gpen_restorer.py")
    webui.shared.opts.gpen_detector = "mtcnn"
    webui.shared.opts.face_restoration_model = "GPEN"
    gpen_restorers(webui.shared)[0].restore(photo(128))
    infotext = script.GPENInfotext()
    assert infotext.show(False) is sys.modules["modules.scripts"].AlwaysVisible
    p = types.SimpleNamespace(restore_faces=True, extra_generation_params={})
    infotext.postprocess_image(p, None)
    assert p.extra_generation_params == {"GPEN": "tiny.safetensors, strength 1, 1 faces"}
    p = types.SimpleNamespace(restore_faces=False, extra_generation_params={})
    infotext.postprocess_image(p, None)
    assert p.extra_generation_params == {}


def test_settings_drop_the_no_model_notice_after_a_model_is_added_and_the_ui_reloaded(webui):
    load_script("gpen_restorer.py")
    for callback in webui.callbacks:
        callback()
    assert "gpen_no_model" in webui.shared.opts.data_labels
    webui.model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY, webui.model_dir / "GPEN-BFR-256.safetensors")

    webui.callbacks.clear()  # Reload UI: callbacks cleared, scripts executed again, settings built again
    script = load_script("gpen_restorer.py")
    for callback in webui.callbacks:
        callback()
    labels = webui.shared.opts.data_labels
    assert "gpen_no_model" not in labels
    assert labels["gpen_model"].component_args()["choices"] == [script.AUTO_MODEL, "GPEN-BFR-256.safetensors"]


def test_detector_setting_names_the_folders_really_searched(webui, monkeypatch):
    gfpgan = webui.model_dir.parent / "GFPGAN"
    load_script("gpen_restorer.py")
    for callback in webui.callbacks:
        callback()
    text = webui.shared.opts.data_labels["gpen_detector"].comment_after
    assert str(gfpgan) in text
    import facexlib
    assert str(Path(facexlib.__file__).parent / "weights") in text


def png_base64(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture
def api(webui):
    """A real FastAPI app with the extension's routes, as the WebUI's app_started callback adds them."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    load_script("gpen_restorer.py")
    app = FastAPI()
    for callback in webui.app_started:
        callback(None, app)
    return TestClient(app)


def test_api_restores_an_image_with_gpen(webui, api):
    webui.model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY, webui.model_dir / "GPEN-BFR-256.safetensors")
    webui.shared.state.interrupted = True  # left over from an earlier Interrupt: the new job clears it
    models = api.get("/gpen/v1/models").json()
    assert models["models"] == ["auto", "GPEN-BFR-256.safetensors"] and models["folder"] == str(webui.model_dir)

    image = photo()
    reply = api.post("/gpen/v1/restore", json={"image": png_base64(image), "strength": 0.5, "detector": "mtcnn"})
    assert reply.status_code == 200, reply.text
    body = reply.json()
    assert body["faces"] == 1 and body["model"] == "GPEN-BFR-256.safetensors" and body["strength"] == 0.5
    assert body["info"] == "GPEN-BFR-256.safetensors, strength 0.5, 1 faces"
    out = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["image"]))))
    assert out.shape == image.shape and np.abs(out.astype(int) - image).max() > 0
    assert webui.shared.state.jobs == ["gpen_restore"]


@pytest.mark.parametrize("payload, message", [
    ({"image": "not base64!"}, "image is not valid base64"),
    ({"image": base64.b64encode(b"<html>not an image</html>").decode()}, "not a readable image"),
    ({"strength": 1.5}, "strength must be from 0 to 1"),
    ({"strength": "high"}, "strength must be a number from 0 to 1"),
    ({"model": "nope.pth"}, "model 'nope.pth' is not in the model folder"),
    ({"detector": "yolo"}, "detector must be one of auto, retinaface, mtcnn"),
    ({"alpha": 1}, "unknown field(s) alpha"),
])
def test_api_refuses_bad_requests_with_422_and_a_clear_message(webui, api, payload, message):
    webui.model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(TINY, webui.model_dir / "GPEN-BFR-256.safetensors")
    reply = api.post("/gpen/v1/restore", json={"image": png_base64(photo(32)), **payload})
    assert reply.status_code == 422 and message in reply.json()["detail"]


def test_api_without_a_model_answers_503_with_the_download_command(api, webui):
    reply = api.post("/gpen/v1/restore", json={"image": png_base64(photo(32))})
    assert reply.status_code == 503
    assert "no GPEN model in" in reply.json()["detail"] and "download 512 --dir" in reply.json()["detail"]


class Inverting(FaceRestoration):
    def name(self):
        return "GPEN"

    def run(self, np_image):
        out = np_image.copy()
        out[..., :3] = 255 - out[..., :3]
        return types.SimpleNamespace(image=out, faces=1, info="inverted")


@pytest.mark.parametrize("visibility", [0.0, 0.5, 1.0])
def test_extras_blend_by_visibility(webui, visibility):
    webui.shared.face_restorers.append(Inverting())
    script = load_script("postprocessing_gpen.py").ScriptPostprocessingGPEN()
    assert script.name == "GPEN" and 3000 < script.order < 4000  # after CodeFormer (3000), before cropping (4000+)
    assert set(script.ui()) == {"enable", "gpen_visibility"}
    source = Image.fromarray(photo(64))
    pp = PostprocessedImage(source)

    script.process(pp, enable=True, gpen_visibility=visibility)
    expected = (1 - visibility) * np.asarray(source, float) + visibility * (255 - np.asarray(source, float))
    assert np.abs(np.asarray(pp.image, float) - expected).max() <= 1
    assert (pp.image is source) is (visibility == 0)
    assert ("GPEN visibility" in pp.info) is (visibility > 0)
    assert pp.info.get("GPEN") == ("inverted" if visibility > 0 else None)


def test_extras_off_or_without_restorer_does_nothing(webui):
    script = load_script("postprocessing_gpen.py").ScriptPostprocessingGPEN()
    pp = PostprocessedImage(Image.fromarray(photo(64)))
    before = pp.image
    script.process(pp, enable=True, gpen_visibility=1.0)  # no GPEN restorer registered
    webui.shared.face_restorers.append(Inverting())
    script.process(pp, enable=False, gpen_visibility=1.0)
    assert pp.image is before and not pp.info


def test_extras_with_the_real_restorer_keeps_rgba_alpha(webui):
    webui.model_dir.mkdir(parents=True)
    shutil.copy(TINY, webui.model_dir / "tiny.safetensors")
    load_script("gpen_restorer.py")
    webui.shared.opts.gpen_detector = "mtcnn"
    rgba = np.dstack([photo(), np.full(photo().shape[:2], 77, np.uint8)])
    pp = PostprocessedImage(Image.fromarray(rgba))
    load_script("postprocessing_gpen.py").ScriptPostprocessingGPEN().process(pp, enable=True, gpen_visibility=0.5)
    out = np.asarray(pp.image)
    assert pp.image.mode == "RGBA" and (out[..., 3] == 77).all()
    assert np.abs(out[..., :3].astype(int) - rgba[..., :3]).max() > 0
    assert not webui.reports


def load_install(monkeypatch, missing: set[str], launch: types.ModuleType | None, numpy: str | None = "1.26.2"):
    install = load_script_file(ROOT / "install.py")
    monkeypatch.setattr(install, "is_missing", lambda module: module in missing)
    monkeypatch.setattr(install, "installed_version", lambda dist: numpy if dist == "numpy" else None)
    if launch is None:
        monkeypatch.setitem(sys.modules, "launch", None)  # import launch -> ImportError
    else:
        monkeypatch.setitem(sys.modules, "launch", launch)
    return install


def load_script_file(path: Path) -> types.ModuleType:
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_install_uses_the_webui_pip_for_missing_packages_only_and_keeps_numpy_1(monkeypatch):
    calls = []
    launch = _module("launch", run_pip=lambda command, desc=None: calls.append(command), is_installed=None)
    install = load_install(monkeypatch, {"cv2", "facexlib"}, launch)
    install.main()
    assert calls == ['install "opencv-python-headless<4.12" "numpy==1.26.2"']
    assert not any("torch" in p for p in install.REQUIRED.values())


def test_install_leaves_an_existing_opencv_alone(monkeypatch):
    calls = []
    launch = _module("launch", run_pip=lambda command, desc=None: calls.append(command), is_installed=None)
    load_install(monkeypatch, {"facexlib"}, launch).main()  # the WebUI's opencv-python provides cv2
    assert calls == []


@pytest.mark.parametrize("missing, numpy, expected", [
    (["cv2"], "1.26.2", ["opencv-python-headless<4.12", "numpy==1.26.2"]),
    (["cv2"], "2.1.3", ["opencv-python-headless", "numpy==2.1.3"]),
    (["safetensors", "tqdm"], "2.0.0", ["safetensors", "tqdm", "numpy==2.0.0"]),
    (["numpy", "cv2"], None, ["numpy", "opencv-python-headless"]),
    ([], "1.26.2", []),
])
def test_install_requirements_never_move_numpy(missing, numpy, expected):
    install = load_script_file(ROOT / "install.py")
    assert install.requirements(missing, numpy) == expected


def test_install_without_the_webui_uses_this_pythons_pip(monkeypatch):
    runs = []
    install = load_install(monkeypatch, {"safetensors"}, None, numpy="2.1.3")
    monkeypatch.setattr(install.subprocess, "run", lambda args, check: runs.append(args))
    install.main()
    assert runs == [[sys.executable, "-m", "pip", "install", "safetensors", "numpy==2.1.3"]]
    install = load_install(monkeypatch, set(), None)
    install.main()
    assert len(runs) == 1
