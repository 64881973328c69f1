"""AUTOMATIC1111 / Forge adapter: the "GPEN" face restorer and its "GPEN" settings section.

Thin glue only: WebUI settings, paths and devices in, one ``gpen_core.restore_faces`` call, an RGB uint8
image out. Importing this file (the WebUI does it for every extension script) registers the restorer in
``shared.face_restorers`` once, replacing an older copy on "Reload UI".
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path

import gradio as gr
import numpy as np

from modules import devices, errors, face_restoration, script_callbacks, shared
from modules.paths import models_path

EXTENSION_DIR = Path(__file__).resolve().parent.parent
MODEL_DIR = Path(models_path) / "GPEN"
AUTO_MODEL = "Automatic (largest)"
SECTION = ("gpen", "GPEN")
HINT_FILE = "Put GPEN models here.txt"


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
from gpen_core.download import missing_model_message  # noqa: E402  (needs the import above)
from gpen_core.model_paths import largest_checkpoint, list_checkpoints  # noqa: E402
from gpen_core.options import DETECTORS  # noqa: E402


def download_hint(model_dir: Path = MODEL_DIR) -> str:
    """One paragraph telling the user where models go and how to download one."""
    how = missing_model_message([model_dir], model_dir, python=sys.executable, workdir=EXTENSION_DIR)
    return f"GPEN: no model in {model_dir} - faces are left unchanged.\n{how}\nThen pick it in Settings -> GPEN."


def ensure_model_dir(model_dir: Path = MODEL_DIR) -> None:
    """Create models/GPEN with a hint file, as the WebUI does for its own model folders."""
    model_dir.mkdir(parents=True, exist_ok=True)
    hint = model_dir / HINT_FILE
    if not hint.exists():
        hint.write_text(download_hint(model_dir) + "\n", encoding="utf-8")


def list_models(model_dir: Path = MODEL_DIR) -> list[str]:
    """Checkpoint files under model_dir, as sorted POSIX paths relative to it (the setting's values)."""
    return [p.relative_to(model_dir).as_posix() for p in list_checkpoints(model_dir)]


def selected_model(model_dir: Path = MODEL_DIR) -> Path | None:
    """The checkpoint the settings ask for; the largest one present when set to automatic or missing."""
    choice = getattr(shared.opts, "gpen_model", AUTO_MODEL)
    if choice != AUTO_MODEL and (model_dir / choice).is_file():
        return model_dir / choice
    return largest_checkpoint(list_checkpoints(model_dir))


def search_dirs() -> list[Path]:
    """Where the WebUI keeps facexlib's RetinaFace/parsing weights (models/GFPGAN); gpen_core adds
    facexlib's own weights/ folder itself."""
    return [Path(getattr(shared.cmd_opts, "gfpgan_models_path", None) or Path(models_path) / "GFPGAN")]


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


class _Interrupted(Exception):
    """The user pressed Interrupt while faces were being restored."""


def _check_interrupt() -> None:
    if shared.state.interrupted:
        raise _Interrupted


class GPENFaceRestorer(face_restoration.FaceRestoration):
    """WebUI face restorer backed by gpen_core; caches the loaded model between calls."""

    def __init__(self, model_dir: Path = MODEL_DIR):
        self.model_dir = model_dir
        self.cmd_dir = str(model_dir)  # shown by /sdapi/v1/face-restorers
        self.model: gpen_core.GPENModel | None = None
        self.model_path: Path | None = None
        self._warned_missing = False

    def name(self) -> str:
        return "GPEN"

    def load(self, device) -> gpen_core.GPENModel | None:
        """The selected model on `device`, loaded once and reloaded when the setting points elsewhere."""
        path = selected_model(self.model_dir)
        if path is None:
            self.model = self.model_path = None
            if not self._warned_missing:  # console once, the UI on every call
                print(download_hint(self.model_dir))
                self._warned_missing = True
            gr.Warning(download_hint(self.model_dir))
            return None
        self._warned_missing = False
        if self.model is None or self.model_path != path:
            self.model = None  # drop the old weights before reading the new ones
            self.model = gpen_core.load_model(path, device=device)
            self.model_path = path
        return self.model.to(device)

    def restore(self, np_image: np.ndarray) -> np.ndarray:
        """Restore every face: (H,W,3) uint8 RGB in (RGBA keeps its alpha), same shape and dtype out.

        On a missing model, an interrupt or an error the input comes back unchanged so generation goes on.
        """
        device = devices.device_codeformer or devices.get_optimal_device()
        try:
            _free_forge_memory()
            model = self.load(device)
            if model is None:
                return np_image
            result = gpen_core.restore_faces(
                np_image,
                model,
                detector=getattr(shared.opts, "gpen_detector", "auto"),
                alpha=float(getattr(shared.opts, "gpen_alpha", 1.0)),
                color_correction=bool(getattr(shared.opts, "gpen_color_correction", False)),
                search_dirs=search_dirs(),
                keep_crops=False,
                device=device,
                check_interrupt=_check_interrupt,
                on_oom=devices.torch_gc,
            )
            return result.image
        except _Interrupted:
            return np_image
        except Exception:
            errors.report("GPEN face restoration failed; the image is left unchanged", exc_info=True)
            return np_image
        finally:
            if getattr(shared.opts, "face_restoration_unload", False):
                if self.model is not None:
                    self.model.to(devices.cpu)
                gpen_core.release_face_models()


def on_ui_settings() -> None:
    """Add the "GPEN" section (model, strength, detector, colour correction) under Postprocessing."""
    options = {
        "gpen_model": shared.OptionInfo(AUTO_MODEL, "GPEN model (files in models/GPEN)", gr.Dropdown,
                                        lambda: {"choices": [AUTO_MODEL, *list_models()]}, refresh=list_models)
        .info("Automatic = the largest model present, e.g. GPEN-BFR-2048"),
        "gpen_alpha": shared.OptionInfo(1.0, "GPEN strength", gr.Slider, {"minimum": 0.0, "maximum": 1.0, "step": 0.01})
        .info("1 = restored face only, 0 = original face"),
        "gpen_detector": shared.OptionInfo("auto", "GPEN face detector", gr.Radio,
                                           {"choices": list(DETECTORS)})
        .info("auto = RetinaFace when its weights are in models/GFPGAN or facexlib/weights, else the built-in MTCNN"),
        "gpen_color_correction": shared.OptionInfo(False, "GPEN colour correction")
        .info("match the restored faces' colours to the original"),
    }
    if not list_models():
        options["gpen_no_model"] = shared.OptionHTML(download_hint().replace("\n", "<br>"))
    for key, info in shared.options_section((*SECTION, "postprocessing"), options).items():
        shared.opts.add_option(key, info)


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
