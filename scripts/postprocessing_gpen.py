"""Extras tab: "GPEN" face restoration with a visibility slider, beside GFPGAN and CodeFormer.

Uses the "GPEN" restorer that scripts/gpen_restorer.py registers in shared.face_restorers.
"""
from __future__ import annotations

import gradio as gr
import numpy as np
from PIL import Image

from modules import face_restoration, scripts_postprocessing, shared, ui_components


def find_restorer() -> face_restoration.FaceRestoration | None:
    """The registered "GPEN" restorer, or None when its script failed to load."""
    return next((r for r in shared.face_restorers if r.name() == "GPEN"), None)


class ScriptPostprocessingGPEN(scripts_postprocessing.ScriptPostprocessing):
    name = "GPEN"
    order = 3100  # GFPGAN is 2000, CodeFormer 3000

    def ui(self):
        with ui_components.InputAccordion(False, label="GPEN") as enable:
            visibility = gr.Slider(minimum=0.0, maximum=1.0, step=0.001, label="Visibility", value=1.0,
                                   elem_id="extras_gpen_visibility")
        return {"enable": enable, "gpen_visibility": visibility}

    def process(self, pp: scripts_postprocessing.PostprocessedImage, enable, gpen_visibility):
        """Restore the faces of pp.image (RGB, or RGBA keeping its alpha) and blend by `gpen_visibility` in [0, 1];
        the infotext gets what happened ("GPEN": model, strength, faces, or why nothing was restored)."""
        restorer = find_restorer()
        if not enable or gpen_visibility == 0 or restorer is None:
            return

        source = pp.image if pp.image.mode in ("RGB", "RGBA") else pp.image.convert("RGB")
        outcome = restorer.run(np.asarray(source, dtype=np.uint8))
        pp.info["GPEN"] = outcome.info
        if not outcome.faces:
            return
        restored = Image.fromarray(outcome.image)
        if gpen_visibility < 1.0:
            restored = Image.blend(source, restored, gpen_visibility)

        pp.image = restored
        pp.info["GPEN visibility"] = round(gpen_visibility, 3)
