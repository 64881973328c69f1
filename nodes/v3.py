"""The nodes in ComfyUI's V3 schema (``comfy_api`` v0.0.2), registered through ``comfy_entrypoint``."""
from __future__ import annotations

from comfy_api.v0_0_2 import ComfyExtension, io

from . import run, specs

_WIDGETS = {"INT": io.Int, "FLOAT": io.Float, "BOOLEAN": io.Boolean, "STRING": io.String, "IMAGE": io.Image,
            "MASK": io.Mask}


def _io_type(name: str):
    return _WIDGETS.get(name) or io.Custom(name)


def _schema(spec: specs.NodeSpec) -> io.Schema:
    inputs = []
    for name, (kind, options) in spec.inputs().items():
        if isinstance(kind, list):
            inputs.append(io.Combo.Input(name, options=kind, **options))
        else:
            inputs.append(_io_type(kind).Input(name, **options))
    outputs = [_io_type(kind).Output(name, display_name=name, tooltip=tip) for kind, name, tip in spec.outputs]
    return io.Schema(node_id=spec.node_id, display_name=spec.display_name, category=specs.CATEGORY,
                     description=spec.description, inputs=inputs, outputs=outputs)


class GPENModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(specs.LOADER)

    @classmethod
    def execute(cls, model_name: str, dtype: str) -> io.NodeOutput:
        return io.NodeOutput(run.load(model_name, dtype))


class GPENRestoreFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(specs.RESTORE)

    @classmethod
    def execute(cls, image, gpen_model, **options) -> io.NodeOutput:
        return io.NodeOutput(*run.restore(image, gpen_model, **options))


class GPENAlignedFaces(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return _schema(specs.ALIGNED)

    @classmethod
    def execute(cls, image, gpen_model, task: str, mask=None) -> io.NodeOutput:
        return io.NodeOutput(*run.aligned(image, gpen_model, task=task, mask=mask))


class GPENExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [GPENModelLoader, GPENRestoreFaces, GPENAlignedFaces]


async def comfy_entrypoint() -> GPENExtension:
    """Called by ComfyUI when it loads the pack."""
    return GPENExtension()
