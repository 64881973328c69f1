"""ComfyUI adapter for gpen_core: Load GPEN Model and GPEN Restore Faces.

Exports ``comfy_entrypoint`` (V3 schema) when ComfyUI has ``comfy_api`` v0.0.2, else ``NODE_CLASS_MAPPINGS`` (V1).
Never both: ComfyUI ignores ``comfy_entrypoint`` when ``NODE_CLASS_MAPPINGS`` is defined.
"""
from .paths import install_example_image, register_model_folders

register_model_folders()
install_example_image()

try:
    from comfy_api.v0_0_2 import ComfyExtension, io  # noqa: F401  (probe: v0.0.2 without io predates V3)
except ImportError:
    from .v1 import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS

    __all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
else:
    from .v3 import comfy_entrypoint

    __all__ = ["comfy_entrypoint"]
