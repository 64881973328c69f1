"""The nodes in ComfyUI's classic (V1) schema, for ComfyUI versions without ``comfy_api`` v0.0.2."""
from __future__ import annotations

from . import run, specs


def _outputs(spec: specs.NodeSpec) -> tuple[tuple, tuple, tuple]:
    """RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS."""
    kinds, names, tips = zip(*spec.outputs)
    return kinds, names, tips


def _input_types(spec: specs.NodeSpec) -> dict:
    """INPUT_TYPES: the spec's inputs split into "required" and "optional"."""
    sections: dict = {"required": {}}
    for name, (kind, options) in spec.inputs().items():
        options = dict(options)
        section = "optional" if options.pop("optional", False) else "required"
        sections.setdefault(section, {})[name] = (kind, options)
    return sections


class GPENModelLoader:
    DESCRIPTION = specs.LOADER.description
    CATEGORY = specs.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = _outputs(specs.LOADER)
    FUNCTION = "load"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return _input_types(specs.LOADER)

    def load(self, model_name: str, dtype: str) -> tuple:
        return (run.load(model_name, dtype),)


class GPENRestoreFaces:
    DESCRIPTION = specs.RESTORE.description
    CATEGORY = specs.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = _outputs(specs.RESTORE)
    FUNCTION = "restore"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return _input_types(specs.RESTORE)

    def restore(self, image, gpen_model, **options) -> tuple:
        return run.restore(image, gpen_model, **options)


class GPENAlignedFaces:
    DESCRIPTION = specs.ALIGNED.description
    CATEGORY = specs.CATEGORY
    RETURN_TYPES, RETURN_NAMES, OUTPUT_TOOLTIPS = _outputs(specs.ALIGNED)
    FUNCTION = "process"

    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return _input_types(specs.ALIGNED)

    def process(self, image, gpen_model, task: str, mask=None) -> tuple:
        return run.aligned(image, gpen_model, task=task, mask=mask)


_NODES = [(specs.LOADER, GPENModelLoader), (specs.RESTORE, GPENRestoreFaces), (specs.ALIGNED, GPENAlignedFaces)]
NODE_CLASS_MAPPINGS = {spec.node_id: node for spec, node in _NODES}
NODE_DISPLAY_NAME_MAPPINGS = {spec.node_id: spec.display_name for spec, _ in _NODES}
