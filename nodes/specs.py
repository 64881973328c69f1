"""What the two nodes look like to ComfyUI, written once for both schema versions.

Inputs use ComfyUI's V1 spelling, ``name: (TYPE or [choices], {"default": ..., "tooltip": ...})``, with
``"optional": True`` for inputs that may stay unconnected; v3.py turns the same entries into ``comfy_api`` io objects. Outputs are ``(TYPE, name, tooltip)``; V3 requires output names distinct
from input names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..gpen_core import options
from .paths import model_names

CATEGORY = "image/restoration"
MODEL_TYPE = "GPEN_MODEL"
DTYPES = list(options.DTYPE_CHOICES)
DETECTORS = list(options.DETECTORS)
SELECTIONS = list(options.SELECT_MODES)
MASKS = list(options.MASK_KINDS)
TASKS = list(options.TASK_CHOICES)


@dataclass(frozen=True)
class NodeSpec:
    """One node: ComfyUI id, menu name, description, inputs (a function: file lists change at runtime; an entry
    with ``"optional": True`` may be left unconnected), outputs."""

    node_id: str
    display_name: str
    description: str
    inputs: Callable[[], dict[str, tuple]]
    outputs: list[tuple[str, str, str]]


def _loader_inputs() -> dict[str, tuple]:
    return {
        "model_name": (model_names(), {
            "tooltip": "GPEN checkpoint (.pth, .pt, .safetensors, or ReActor's GPEN-BFR-*.onnx, run with "
                       "onnxruntime) from models/facerestore_models or models/gpen, e.g. GPEN-BFR-512.pth; other "
                       "models in those folders (GFPGAN, CodeFormer) are not listed. The face size "
                       "(256/512/1024/2048) is read from the file."}),
        "dtype": (DTYPES, {
            "default": "auto",
            "tooltip": "Weight precision. auto = fp32 (an .onnx file: its own precision), the safe choice; "
                       "fp16/bf16 halve the model's memory and are faster on GPUs that support them, at a small "
                       "cost in precision. On the CPU fp16 is 10-12x slower, so it computes in fp32 there (the "
                       "console says so); bf16 is kept."}),
    }


def _restore_inputs() -> dict[str, tuple]:
    return {
        "image": ("IMAGE", {"tooltip": "Images to restore (a batch: every image is searched for faces)."}),
        "gpen_model": (MODEL_TYPE, {"tooltip": "A model from Load GPEN Model."}),
        "detector": (DETECTORS, {
            "default": "auto",
            "tooltip": "Face detector. mtcnn is built in; retinaface needs facexlib and detection_Resnet50_Final.pth "
                       "in models/facedetection or models/facexlib (or a folder given for them in "
                       "extra_model_paths.yaml); auto uses RetinaFace when both are there, else MTCNN."}),
        "face_selection": (SELECTIONS, {
            "default": "all",
            "tooltip": "Which detected faces to restore in each image: all, only the largest, or only the one "
                       "nearest the image centre."}),
        "min_face_size": ("INT", {
            "default": 0, "min": 0, "max": 4096, "step": 1,
            "tooltip": "Skip faces whose box is smaller than this many pixels (shorter side); 0 keeps all."}),
        "alpha": ("FLOAT", {
            "default": 1.0, "min": 0.0, "max": 1.0, "step": 0.05,
            "tooltip": "Strength: 1 pastes the restored face fully, 0 leaves the image unchanged, in between "
                       "blends restored and original face."}),
        "mask": (MASKS, {
            "default": "auto",
            "tooltip": "Shape pasted back. parsing follows the face outline (needs facexlib and "
                       "parsing_parsenet.pth in models/facedetection or models/facexlib; never downloaded); "
                       "rectangle is a soft-edged square; auto uses parsing when available, else rectangle."}),
        "color_correction": ("BOOLEAN", {
            "default": False,
            "tooltip": "Match the restored face's colours to the original face (use when the faces come back "
                       "with a colour cast)."}),
        "temporal_smoothing": ("BOOLEAN", {
            "default": False,
            "tooltip": "Turn on when the IMAGE batch is consecutive frames of one video (e.g. from a video "
                       "loader): faces are followed from frame to frame, their landmarks smoothed and short "
                       "detection gaps bridged, so restored faces do not flicker and face_selection stays on one "
                       "person. Leave off for unrelated images."}),
        "upscale_model": ("UPSCALE_MODEL", {
            "optional": True,
            "tooltip": "Optional, from Load Upscale Model (e.g. realesrnet_x2.pth or RealESRGAN_x4plus.pth): the "
                       "whole image is upscaled first (in tiles) and the faces are restored at the new size, as "
                       "GPEN's own --use_sr. The outputs are then that many times larger."}),
    }


LOADER = NodeSpec(
    node_id="GPENModelLoader",
    display_name="Load GPEN Model",
    description="Loads a GPEN face-restoration checkpoint (GPEN-BFR-256/512/1024/2048).",
    inputs=_loader_inputs,
    outputs=[(MODEL_TYPE, "gpen_model", "The loaded GPEN model, for GPEN Restore Faces.")],
)

RESTORE = NodeSpec(
    node_id="GPENRestoreFaces",
    display_name="GPEN Restore Faces",
    description="Finds the faces in each image, restores them with GPEN and pastes them back.",
    inputs=_restore_inputs,
    outputs=[
        ("IMAGE", "restored_image", "The input images with their faces restored (same size as the input)."),
        ("IMAGE", "restored_faces", "Every restored face crop of the whole batch, in image order then face order, "
                                    "each the model's size (e.g. 512x512). When no face is restored in any image "
                                    "(none found, or alpha 0): one black image of that size."),
        ("MASK", "paste_mask", "Where each image was changed: 1 inside pasted faces, 0 elsewhere, soft edges "
                         "(one mask per input image)."),
        ("INT", "face_count", "How many faces were restored in the whole batch (the number of real crops in "
                              "restored_faces; 0 when none, even though restored_faces then holds a black image)."),
        ("STRING", "face_info", "One line per input image: its batch index, faces restored and found, which "
                                "restored_faces crops came from it, and the seconds it took. Also printed in the "
                                "console."),
    ],
)


def _aligned_inputs() -> dict[str, tuple]:
    return {
        "image": ("IMAGE", {"tooltip": "Aligned face crops, one face filling each image as GPEN's template does "
                                       "(FFHQ-style crops, restored_faces of GPEN Restore Faces, a face-crop tool's "
                                       "output). Any size: each is resized to the model's and back."}),
        "gpen_model": (MODEL_TYPE, {"tooltip": "A model from Load GPEN Model (GPEN-BFR-*, GPEN-Colorization-1024, "
                                               "GPEN-Inpainting-1024 or GPEN-Seg2face-512)."}),
        "task": (TASKS, {
            "default": "auto",
            "tooltip": "auto = what the model's official file name says (restore for other names); restore, "
                       "colorize (grey faces in), inpaint (white or masked holes filled), seg2face (a "
                       "colour-coded face-parsing map in). A task the file was not trained for is refused."}),
        "mask": ("MASK", {
            "optional": True,
            "tooltip": "Inpainting only: 1 where the face is missing (painted white before GPEN fills it). One mask "
                       "for the batch, or one per image; the images' size."}),
    }


ALIGNED = NodeSpec(
    node_id="GPENAlignedFaces",
    display_name="GPEN Aligned Faces",
    description="Runs GPEN on already aligned face crops, no detection: restoration, or with the official models "
                "colorization, inpainting (optional MASK) and seg2face. Each image comes back at its own size.",
    inputs=_aligned_inputs,
    outputs=[("IMAGE", "faces", "The processed faces, each the size of its input image.")],
)
