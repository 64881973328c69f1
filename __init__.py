"""ComfyUI custom-node pack entry point: ComfyUI imports this file; the nodes live in nodes/, the library in gpen_core/.

Outside ComfyUI (pytest imports this file as the repo root's package) it defines nothing.
"""
try:
    import folder_paths  # noqa: F401  (ComfyUI's; importable only inside ComfyUI)
except ImportError:
    __all__ = []
else:
    from .nodes import *  # noqa: F401,F403  (comfy_entrypoint, or NODE_CLASS_MAPPINGS on ComfyUI without V3)
    from .nodes import __all__  # noqa: F401
