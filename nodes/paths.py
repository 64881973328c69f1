"""Where the pack finds files inside ComfyUI: GPEN checkpoints and facexlib detection/parsing weights."""
from __future__ import annotations

import os

import folder_paths

from ..gpen_core.download import missing_model_message

MODEL_FOLDERS = ("gpen", "facerestore_models")
"""folder_paths names the loader lists, first match wins; facerestore_models is shared with ReActor/facerestore_cf."""
MODEL_EXTENSIONS = (".pth", ".safetensors", ".onnx")
FACE_WEIGHT_FOLDERS = ("facedetection", "facexlib")
"""models/ sub-folders where ComfyUI users keep RetinaFace/parsing weights (facerestore_cf, ReActor, facexlib)."""


def register_model_folders() -> None:
    """Add models/gpen and models/facerestore_models to folder_paths, keeping every path and extension already there.

    Paths from extra_model_paths.yaml are registered before custom nodes load, so an entry is extended, never replaced.
    """
    for name in MODEL_FOLDERS:
        is_new = name not in folder_paths.folder_names_and_paths
        folder_paths.add_model_folder_path(name, os.path.join(folder_paths.models_dir, name))
        paths, extensions = folder_paths.folder_names_and_paths[name]
        # An empty set means "any file" to folder_paths: narrowing an existing one would hide other packs' files.
        if is_new or extensions:
            folder_paths.folder_names_and_paths[name] = (paths, set(extensions) | set(MODEL_EXTENSIONS))


def model_names() -> list[str]:
    """Checkpoint names (relative to their model folder) for the loader's file choice, sorted, no duplicates."""
    names = set()
    for folder in MODEL_FOLDERS:
        names.update(n for n in folder_paths.get_filename_list(folder) if n.lower().endswith(MODEL_EXTENSIONS))
    return sorted(names, key=str.lower)


def model_path(name: str) -> str:
    """Full path of a checkpoint name returned by model_names(); FileNotFoundError naming the folders searched."""
    for folder in MODEL_FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    searched = [p for folder in MODEL_FOLDERS for p in folder_paths.get_folder_paths(folder)]
    target = os.path.join(folder_paths.models_dir, "facerestore_models")
    how = missing_model_message(searched, target)  # a command that runs from any folder, with ComfyUI's python
    raise FileNotFoundError(f"GPEN model {name!r} not found.\n{how}")


def face_weight_dirs() -> list[str]:
    """Folders to search for detection_Resnet50_Final.pth / parsing weights, including extra_model_paths.yaml ones."""
    dirs = []
    for name in FACE_WEIGHT_FOLDERS:
        registered = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
        for path in [*registered, os.path.join(folder_paths.models_dir, name)]:
            if path not in dirs:
                dirs.append(path)
    return dirs
