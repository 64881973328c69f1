"""Install what gpen_core needs and the host lacks; the WebUI and ComfyUI-Manager both run this file.

The WebUI runs it with its own `launch` module importable (launch.run_pip) and never reads requirements.txt;
ComfyUI-Manager runs it with the host's Python and no `launch`. Only missing packages are installed, and
nothing may change what the host depends on: torch/torchvision are never installed, and every install pins
the numpy already there, so a package that wants numpy 2 (opencv-python-headless 4.12 and later) cannot
move a numpy-1 host across the 1.x/2.x line. OpenCV is skipped when any build of it (the WebUI ships
opencv-python) already imports as cv2; where it must be installed on numpy 1, a release built for numpy 1.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys

# import name -> pip requirement installed when the import name is missing
REQUIRED = {
    "numpy": "numpy",
    "cv2": "opencv-python-headless",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "PIL": "Pillow",
}
#: The last opencv-python-headless releases that install beside numpy 1 (4.12 requires numpy >= 2).
OPENCV_FOR_NUMPY_1 = "opencv-python-headless<4.12"
OPTIONAL = {"facexlib": "RetinaFace detection and face parsing (the built-in MTCNN detector is used otherwise)"}


def is_missing(module: str) -> bool:
    """True when `module` cannot be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def installed_version(distribution: str) -> str | None:
    """The installed version of a pip distribution, or None."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def requirements(missing: list[str], numpy_version: str | None) -> list[str]:
    """The pip requirements for the missing import names, with the installed numpy pinned when there is one.

    numpy_version: the numpy already installed (e.g. "1.26.2"), or None. [] when nothing is missing.
    """
    wanted = [REQUIRED[m] for m in missing if m in REQUIRED]
    if not wanted:
        return []
    if numpy_version is None:
        return wanted
    if numpy_version.split(".")[0] == "1":
        wanted = [OPENCV_FOR_NUMPY_1 if w == REQUIRED["cv2"] else w for w in wanted]
    return [w for w in wanted if w != "numpy"] + [f"numpy=={numpy_version}"]


def pip_install(packages: list[str]) -> None:
    """Install requirements with the WebUI's pip wrapper when present, else this interpreter's pip."""
    try:
        import launch
    except ImportError:
        launch = None
    if launch is not None and hasattr(launch, "run_pip"):
        quoted = " ".join(f'"{p}"' for p in packages)  # run_pip goes through a shell: quote "<" and "=="
        launch.run_pip(f"install {quoted}", f"{', '.join(packages)} for GPEN")
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", *packages], check=True)


def main() -> None:
    missing = [module for module in REQUIRED if is_missing(module)]
    packages = requirements(missing, installed_version("numpy"))
    if packages:
        pip_install(packages)
    for module, purpose in OPTIONAL.items():
        if is_missing(module):
            print(f"GPEN: optional package {module} is not installed: {purpose}.")


if __name__ == "__main__":
    main()
