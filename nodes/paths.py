"""Where the pack finds files inside ComfyUI: GPEN checkpoints and facexlib detection/parsing weights."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import folder_paths

from ..gpen_core.download import missing_model_message
from ..gpen_core.identify import MODEL_SUFFIXES, is_gpen_model

MODEL_FOLDERS = ("gpen", "facerestore_models")
"""folder_paths names the loader lists, first match wins; facerestore_models is shared with ReActor/facerestore_cf."""
MODEL_EXTENSIONS = MODEL_SUFFIXES
FACE_WEIGHT_FOLDERS = ("facedetection", "facexlib")
"""models/ sub-folders where ComfyUI users keep RetinaFace/parsing weights (facerestore_cf, ReActor, facexlib)."""
EXAMPLE_IMAGE = "gpen_example_solvay_1927.jpg"
"""Name under which the sample photo is put in ComfyUI's input folder, for example_workflows/gpen_restore_faces.json."""
_SAMPLE = Path(__file__).resolve().parent.parent / "gpen_core" / "samples" / "solvay_1927_crop.jpg"

log = logging.getLogger("comfyui-gpen")


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
    """GPEN checkpoint names (relative to their model folder) for the loader's file choice, sorted, no duplicates.

    The shared facerestore_models folder also holds GFPGAN, CodeFormer and other files: only files that
    gpen_core.identify.is_gpen_model accepts are listed (a name with "gpen", or GPEN tensor names; cheap, cached).
    """
    names = set()
    for folder in MODEL_FOLDERS:
        for name in folder_paths.get_filename_list(folder):
            if name not in names and name.lower().endswith(MODEL_EXTENSIONS):
                path = folder_paths.get_full_path(folder, name)
                if path is not None and is_gpen_model(path):
                    names.add(name)
    return sorted(names, key=str.lower)


def model_path(name: str) -> str:
    """Full path of a checkpoint name returned by model_names(); FileNotFoundError naming the folders searched."""
    for folder in MODEL_FOLDERS:
        path = folder_paths.get_full_path(folder, name)
        if path is not None:
            return path
    searched = [p for folder in MODEL_FOLDERS for p in folder_paths.get_folder_paths(folder)]
    how = missing_model_message(searched, download_folder())  # a command that runs from any folder
    raise FileNotFoundError(f"GPEN model {name!r} not found.\n{how}")


def download_folder() -> str:
    """Where the download commands the pack shows save to: models/facerestore_models, which the loader lists."""
    return os.path.join(folder_paths.models_dir, "facerestore_models")


def face_weight_dirs() -> list[str]:
    """Folders to search for detection_Resnet50_Final.pth / parsing weights, including extra_model_paths.yaml ones."""
    dirs = []
    for name in FACE_WEIGHT_FOLDERS:
        registered = folder_paths.folder_names_and_paths.get(name, ([], set()))[0]
        for path in [*registered, os.path.join(folder_paths.models_dir, name)]:
            if path not in dirs:
                dirs.append(path)
    return dirs


def install_example_image() -> None:
    """Put the sample photo (Solvay 1927 group, public domain) in ComfyUI's input folder as EXAMPLE_IMAGE, which the
    example workflow loads; a file already there under that name is left as it is."""
    try:
        target = Path(folder_paths.get_input_directory()) / EXAMPLE_IMAGE
        if not target.exists():
            shutil.copyfile(_SAMPLE, target)
            log.info("comfyui-gpen: put the example workflow's photo in %s", target)
    except OSError as exc:
        log.warning("comfyui-gpen: could not put the example photo in ComfyUI's input folder (%s); load any "
                    "photo with faces in the example workflow instead", exc)
