"""Install what gpen_core needs and the host lacks; the WebUI and ComfyUI-Manager both run this file.

The WebUI runs it with its own `launch` module importable (launch.is_installed / launch.run_pip) and never
reads requirements.txt; ComfyUI-Manager runs it with the host's Python and no `launch`. Only missing
packages are installed, never with version pins, and torch/torchvision are never touched.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys

# import name -> pip distribution installed when the import name is missing
REQUIRED = {
    "numpy": "numpy",
    "cv2": "opencv-python-headless",
    "safetensors": "safetensors",
    "tqdm": "tqdm",
    "PIL": "Pillow",
}
OPTIONAL = {"facexlib": "RetinaFace detection and face parsing (the built-in MTCNN detector is used otherwise)"}


def is_missing(module: str) -> bool:
    """True when `module` cannot be imported (checked without importing it)."""
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):
        return True


def pip_install(package: str) -> None:
    """Install one package with the WebUI's pip wrapper when present, else this interpreter's pip."""
    try:
        import launch
    except ImportError:
        launch = None
    if launch is not None and hasattr(launch, "run_pip"):
        launch.run_pip(f"install {package}", f"{package} for GPEN")
    else:
        subprocess.run([sys.executable, "-m", "pip", "install", package], check=True)


def main() -> None:
    for module, package in REQUIRED.items():
        if is_missing(module):
            pip_install(package)
    for module, purpose in OPTIONAL.items():
        if is_missing(module):
            print(f"GPEN: optional package {module} is not installed: {purpose}.")


if __name__ == "__main__":
    main()
