"""AUTOMATIC1111 / Forge adapter: the "GPEN" face restorer, its "GPEN" settings section, its infotext entry
and the extension's API routes (/gpen/v1/restore, /gpen/v1/models).

Thin glue only: WebUI settings, paths, devices and messages in, one ``gpen_core.restorer.FolderRestorer``
call per image, an RGB uint8 image out. Importing this file (the WebUI does it for every extension script)
registers the restorer in ``shared.face_restorers`` once, replacing an older copy on "Reload UI".
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

import gradio as gr
import numpy as np

from modules import devices, errors, face_restoration, script_callbacks, scripts, shared
from modules.paths import models_path

EXTENSION_DIR = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(models_path) / "GPEN"
AUTO_MODEL = "Automatic (largest)"
SECTION = ("gpen", "GPEN")
HINT_FILE = "Put GPEN models here.txt"
INFOTEXT_KEY = "GPEN"


def _import_gpen_core():
    """Import gpen_core from this extension: the WebUI puts the extension folder on sys.path only while
    it loads the script (A1111), so load the package by path when the name is not importable."""
    if importlib.util.find_spec("gpen_core") is None:
        init = EXTENSION_DIR / "gpen_core" / "__init__.py"
        spec = importlib.util.spec_from_file_location("gpen_core", init, submodule_search_locations=[str(init.parent)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["gpen_core"] = module
        spec.loader.exec_module(module)
    return importlib.import_module("gpen_core")


gpen_core = _import_gpen_core()
from gpen_core import web_api  # noqa: E402  (needs the import above)
from gpen_core.model_paths import facexlib_weight_dirs  # noqa: E402
from gpen_core.options import DETECTORS, check_strength  # noqa: E402
from gpen_core.restorer import AUTO, FolderRestorer, Outcome  # noqa: E402


def search_dirs() -> list[Path]:
    """Where the WebUI keeps facexlib's RetinaFace/parsing weights: its GFPGAN folder (models/GFPGAN or
    --gfpgan-models-path), where its own face restorers download them; gpen_core adds the rest."""
    return [Path(getattr(shared.cmd_opts, "gfpgan_models_path", None) or Path(models_path) / "GFPGAN")]


def download_hint(model_dir: Path = MODEL_DIR) -> str:
    """One paragraph telling the user where models go and how to download one from this WebUI."""
    how = FolderRestorer(model_dir, python=sys.executable, workdir=EXTENSION_DIR).missing_message()
    return f"GPEN: no model in {model_dir} - faces are left unchanged.\n{how}\nThen pick it in Settings -> GPEN."


def ensure_model_dir(model_dir: Path = MODEL_DIR) -> None:
    """Create models/GPEN with a hint file, as the WebUI does for its own model folders."""
    model_dir.mkdir(parents=True, exist_ok=True)
    hint = model_dir / HINT_FILE
    if not hint.exists():
        hint.write_text(download_hint(model_dir) + "\n", encoding="utf-8")


def list_models(model_dir: Path = MODEL_DIR) -> list[str]:
    """Checkpoint files under model_dir, as sorted POSIX paths relative to it (the setting's values);
    read again at every call, so a Reload UI or the refresh button shows files added since."""
    return FolderRestorer(model_dir).models()


def _choice(setting: str) -> str:
    return AUTO if setting == AUTO_MODEL else setting


def _free_forge_memory() -> None:
    """Forge only: ask its memory manager for room first, as its own face restorers do."""
    for name in ("modules_forge.utils", "modules_forge.forge_util"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "prepare_free_memory"):
            module.prepare_free_memory()
            return


def show_problems(outcome: Outcome) -> None:
    """Tell the user, once per problem, what went wrong or was skipped: console and a UI warning."""
    for problem in outcome.new_problems:
        errors.report(f"GPEN: {problem}")
        if problem == outcome.error and outcome.exception is not None:
            print("".join(traceback.format_exception(outcome.exception)), file=sys.stderr)
        gr.Warning(f"GPEN: {problem}")


class GPENFaceRestorer(face_restoration.FaceRestoration):
    """WebUI face restorer backed by gpen_core; ``last`` is the outcome of the latest image."""

    def __init__(self, model_dir: Path = MODEL_DIR):
        self.model_dir = model_dir
        self.cmd_dir = str(model_dir)  # shown by /sdapi/v1/face-restorers
        self.core = FolderRestorer(model_dir, python=sys.executable, workdir=EXTENSION_DIR)
        self.last: Outcome | None = None

    def name(self) -> str:
        return "GPEN"

    def run(self, np_image: np.ndarray, *, model: str | None = None, strength: float | None = None,
            detector: str | None = None, color_correction: bool | None = None) -> Outcome:
        """Restore every face of (H,W,3) uint8 RGB (RGBA keeps its alpha); options default to the settings.
        On a missing model or an error the image comes back unchanged in the outcome; on Interrupt it keeps
        the faces restored before it."""
        opts = shared.opts
        device = devices.device_codeformer or devices.get_optimal_device()
        _free_forge_memory()
        try:
            outcome = self.core.restore(
                np_image,
                choice=_choice(model if model is not None else getattr(opts, "gpen_model", AUTO_MODEL)),
                strength=strength if strength is not None else getattr(opts, "gpen_alpha", 1.0),
                detector=detector or getattr(opts, "gpen_detector", "auto"),
                color_correction=bool(color_correction if color_correction is not None
                                      else getattr(opts, "gpen_color_correction", False)),
                search_dirs=search_dirs(), device=device, check_interrupt=lambda: shared.state.interrupted,
                on_oom=devices.torch_gc)
        finally:
            if getattr(opts, "face_restoration_unload", False):
                self.core.offload(devices.cpu)
                gpen_core.release_face_models()
        show_problems(outcome)
        self.last = outcome
        return outcome

    def restore(self, np_image: np.ndarray) -> np.ndarray:
        """The WebUI's call: (H,W,3) uint8 RGB in, same shape and dtype out."""
        return self.run(np_image).image


def find_restorer() -> GPENFaceRestorer | None:
    """The registered "GPEN" restorer, or None when this script failed to load."""
    return next((r for r in shared.face_restorers if r.name() == "GPEN"), None)


class GPENInfotext(scripts.Script):
    """Puts what GPEN did (model, strength, faces, or why it failed) in txt2img/img2img infotexts when
    "Restore faces" uses GPEN. Shows nothing in the UI."""

    def title(self):
        return "GPEN infotext"

    def show(self, is_img2img):
        return scripts.AlwaysVisible

    def postprocess_image(self, p, pp, *args):
        restorer = find_restorer()
        if getattr(p, "restore_faces", False) and shared.opts.face_restoration_model == "GPEN" and restorer \
                and restorer.last is not None:
            p.extra_generation_params[INFOTEXT_KEY] = restorer.last.info


def on_ui_settings() -> None:
    """Add the "GPEN" section (model, strength, detector, colour correction) under Postprocessing."""
    weight_dirs = "; ".join(str(d) for d in facexlib_weight_dirs(search_dirs()))
    options = {
        "gpen_model": shared.OptionInfo(AUTO_MODEL, "GPEN model (files in models/GPEN)", gr.Dropdown,
                                        lambda: {"choices": [AUTO_MODEL, *list_models()]}, refresh=list_models)
        .info("Automatic = the largest model that loads, e.g. GPEN-BFR-2048"),
        "gpen_alpha": shared.OptionInfo(1.0, "GPEN strength", gr.Slider, {"minimum": 0.0, "maximum": 1.0, "step": 0.01})
        .info("1 = restored face only, 0 = original face"),
        "gpen_detector": shared.OptionInfo("auto", "GPEN face detector", gr.Radio,
                                           {"choices": list(DETECTORS)})
        .info("auto = RetinaFace (detection_Resnet50_Final.pth, face parsing: parsing_parsenet.pth) when found in "
              f"{weight_dirs}; else the built-in MTCNN"),
        "gpen_color_correction": shared.OptionInfo(False, "GPEN colour correction")
        .info("match the restored faces' colours to the original"),
    }
    if not list_models():
        options["gpen_no_model"] = shared.OptionHTML(download_hint().replace("\n", "<br>"))
    else:  # a model was added since an earlier build of the settings (Reload UI): drop the stale notice
        shared.opts.data_labels.pop("gpen_no_model", None)
    for key, info in shared.options_section((*SECTION, "postprocessing"), options).items():
        shared.opts.add_option(key, info)


def _settings_defaults() -> dict:
    opts = shared.opts
    return {"model": _choice(getattr(opts, "gpen_model", AUTO_MODEL)),
            "strength": check_strength(getattr(opts, "gpen_alpha", 1.0), clamp=True),
            "detector": getattr(opts, "gpen_detector", "auto"),
            "color_correction": bool(getattr(opts, "gpen_color_correction", False))}


def api_restore(payload: dict) -> dict:
    """POST /gpen/v1/restore (see gpen_core.web_api): one image, restored in the WebUI's queue."""
    from modules.call_queue import queue_lock

    restorer = find_restorer()
    if restorer is None:
        raise web_api.ServiceError("the GPEN restorer is not loaded; see the WebUI console")

    def restore(request: web_api.RestoreRequest) -> Outcome:
        with queue_lock:
            shared.state.begin(job="gpen_restore")
            try:
                return restorer.run(request.image, model=request.model, strength=request.strength,
                                    detector=request.detector, color_correction=request.color_correction)
            finally:
                shared.state.end()

    settings = _settings_defaults()
    if settings["model"] != AUTO and settings["model"] not in restorer.core.models():
        settings["model"] = AUTO  # the setting names a file removed since: as the restorer does
    return web_api.handle_restore(payload, settings, restorer.core.models(), restore)


def api_models() -> dict:
    """GET /gpen/v1/models: the folder, the model names a request may use, and the settings' defaults."""
    return {"folder": str(MODEL_DIR), "models": [AUTO, *list_models()], "defaults": _settings_defaults()}


def on_app_started(_demo, app) -> None:
    """Register the extension's API routes on the WebUI's FastAPI app (with or without --api)."""
    from fastapi import Body
    from fastapi.exceptions import HTTPException

    def restore_route(payload: dict = Body(...)) -> dict:
        try:
            return api_restore(payload)
        except web_api.RequestError as exc:
            raise HTTPException(status_code=422, detail=str(exc)) from None
        except web_api.ServiceError as exc:
            raise HTTPException(status_code=503, detail=str(exc)) from None

    app.add_api_route("/gpen/v1/restore", restore_route, methods=["POST"])
    app.add_api_route("/gpen/v1/models", api_models, methods=["GET"])


def register(restorer: face_restoration.FaceRestoration) -> None:
    """Put `restorer` in shared.face_restorers, replacing a "GPEN" left by an earlier load of this script."""
    names = [r.name() for r in shared.face_restorers]
    if restorer.name() in names:
        shared.face_restorers[names.index(restorer.name())] = restorer
    else:
        shared.face_restorers.append(restorer)


ensure_model_dir()
register(GPENFaceRestorer())
script_callbacks.on_ui_settings(on_ui_settings)
script_callbacks.on_app_started(on_app_started)
