"""What an ONNX file holds, read from its bytes without onnx or onnxruntime: inputs, outputs, weight names.

Hosts list models without loading them, and ONNX Runtime is optional, so the few fields needed to tell a
GPEN file from a CodeFormer or GFPGAN one, and to read its crop size S, are read straight from the protobuf
wire format (ModelProto -> GraphProto -> ValueInfoProto shapes, TensorProto names). Weight bytes are skipped,
never read, so a 285 MB file is described in milliseconds.

The GPEN contract (official ``misc/onnx_export.py``, ReActor, facefusion): one input ``input`` float32
(1, 3, S, S) RGB in [-1, 1], one output ``output`` of the same layout and range; batch 1 or dynamic.
"""

from __future__ import annotations

import mmap
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, ModelNotFoundError

#: ONNX TensorProto element types the network may take.
ELEMENT_TYPES = {1: "float32", 10: "float16", 11: "float64", 16: "bfloat16"}
#: Sizes a GPEN crop can have (powers of two; official files are 256-2048).
GPEN_SIZES = (64, 128, 256, 512, 1024, 2048)
#: Weight-name fragments of other face models shipped as ONNX in the same folders (ReActor, facefusion).
OTHER_MODELS = {
    "CodeFormer": ("quantize", "position_emb", "ft_layers", "fuse_convs_dict"),
    "GFPGAN": ("stylegan_decoder", "conv_body_first", "condition_scale"),
}
# ModelProto field 1 (ir_version, varint) comes first in every exporter's output; then one of these fields.
_MODEL_FIELD_TAGS = {0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72}


@dataclass(frozen=True)
class TensorInfo:
    """A graph input or output: name, element type name, and dims (an int, or a str for a symbolic/unknown dim)."""

    name: str
    dtype: str
    dims: tuple[int | str, ...]


@dataclass(frozen=True)
class OnnxSignature:
    """The runtime inputs (weights excluded), outputs, weight names and ``ai.onnx`` opset of an ONNX model."""

    inputs: tuple[TensorInfo, ...]
    outputs: tuple[TensorInfo, ...]
    initializers: frozenset[str]
    opset: int | None


def is_onnx_header(head: bytes) -> bool:
    """Whether a file's first bytes (3 are enough) start an ONNX ModelProto: ir_version, then a model field.

    Zip (.pth), pickle and safetensors files never start this way.
    """
    return len(head) >= 3 and head[0] == 0x08 and 1 <= head[1] <= 30 and head[2] in _MODEL_FIELD_TAGS


def is_onnx_file(path: str | Path) -> bool:
    """Whether the file at ``path`` is an ONNX model, by its first bytes (see :func:`is_onnx_header`)."""
    try:
        with Path(path).open("rb") as f:
            return is_onnx_header(f.read(3))
    except OSError:
        return False


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf, start: int, end: int):
    """(field number, wire type, value) of a message in buf[start:end]; length-delimited values as (start, end)."""
    pos = start
    while pos < end:
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value = (pos, pos + length)
            pos += length
        elif wire == 1:
            value, pos = None, pos + 8
        elif wire == 5:
            value, pos = None, pos + 4
        else:
            raise ValueError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise ValueError("message runs past its end")
        yield number, wire, value


def _text(buf, span: tuple[int, int]) -> str:
    return bytes(buf[span[0]:span[1]]).decode("utf-8", "replace")


def _value_info(buf, span: tuple[int, int]) -> TensorInfo:
    name, dtype, dims = "", "unknown", []
    for number, _, value in _fields(buf, *span):
        if number == 1:
            name = _text(buf, value)
        elif number == 2:  # TypeProto
            for t_number, _, t_value in _fields(buf, *value):
                if t_number != 1:  # only tensor_type
                    continue
                for f_number, _, f_value in _fields(buf, *t_value):
                    if f_number == 1:
                        dtype = ELEMENT_TYPES.get(f_value, f"type {f_value}")
                    elif f_number == 2:  # TensorShapeProto
                        for _, _, dim in _fields(buf, *f_value):
                            entry: int | str = "?"
                            for d_number, _, d_value in _fields(buf, *dim):
                                if d_number == 1:
                                    entry = d_value
                                elif d_number == 2:
                                    entry = _text(buf, d_value)
                            dims.append(entry)
    return TensorInfo(name, dtype, tuple(dims))


def _tensor_name(buf, span: tuple[int, int]) -> str:
    for number, _, value in _fields(buf, *span):
        if number == 8:
            return _text(buf, value)
    return ""


def read_signature(path: str | Path) -> OnnxSignature:
    """The inputs (initializers listed as inputs, as older exporters do, removed), outputs, weight names and
    opset of an ONNX file. Raises ModelNotFoundError / CheckpointError naming the file and the fix."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"ONNX model {path} does not exist. Check the path, or put the file in your "
                                 f"models folder.")
    if not is_onnx_file(path):
        raise CheckpointError(f"{path} is not an ONNX file (its first bytes are not an ONNX model header); "
                              f"it is damaged or has the wrong extension. Download or export it again.")
    inputs, outputs, initializers, opset = [], [], set(), None
    try:
        with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            for number, _, value in _fields(buf, 0, len(buf)):
                if number == 8:  # opset_import
                    entry = {n: v for n, _, v in _fields(buf, *value)}
                    domain = _text(buf, entry[1]) if 1 in entry else ""
                    if domain in ("", "ai.onnx") and 2 in entry:
                        opset = entry[2]
                elif number == 7:  # graph
                    for g_number, _, g_value in _fields(buf, *value):
                        if g_number == 5:
                            initializers.add(_tensor_name(buf, g_value))
                        elif g_number == 11:
                            inputs.append(_value_info(buf, g_value))
                        elif g_number == 12:
                            outputs.append(_value_info(buf, g_value))
    except (ValueError, IndexError) as exc:
        raise CheckpointError(f"{path} is a truncated or corrupt ONNX file ({exc or 'ends mid-field'}): download "
                              f"or export it again.") from None
    runtime_inputs = tuple(i for i in inputs if i.name not in initializers)
    return OnnxSignature(runtime_inputs, tuple(outputs), frozenset(initializers), opset)


def _looks_like(signature: OnnxSignature) -> str:
    for name, fragments in OTHER_MODELS.items():
        if any(fragment in weight for weight in signature.initializers for fragment in fragments):
            return f" It looks like a {name} model (weight names)."
    return ""


def _describe(info: TensorInfo) -> str:
    return f"'{info.name}' {info.dtype} {tuple(info.dims)}"


def gpen_onnx_size(signature: OnnxSignature, source: str | Path = "ONNX model") -> int:
    """Crop size S of an ONNX file that follows the GPEN contract, from its input shape (never its name).

    Raises CheckpointError for CodeFormer (second input ``weight``), GFPGAN-style exports (several outputs
    or other names), a rank other than 4, non-square or unknown sizes, non-float inputs.
    """
    fix = ("Use a GPEN ONNX file (GPEN-BFR-512.onnx from ReActor, gpen_bfr_512.onnx from facefusion), or turn a "
           "GPEN .pth into one with `python -m gpen_core export-onnx GPEN-BFR-512.pth GPEN-BFR-512.onnx`.")
    hint = _looks_like(signature)
    names = [i.name for i in signature.inputs]
    if "weight" in names:
        raise CheckpointError(f"{source} is a CodeFormer model, not GPEN: it takes {len(names)} inputs "
                              f"({', '.join(names)}), and 'weight' is CodeFormer's fidelity weight. GPEN takes one "
                              f"image. {fix}")
    if len(signature.inputs) != 1 or len(signature.outputs) != 1:
        what = (f"{len(signature.inputs)} inputs and {len(signature.outputs)} outputs "
                f"({', '.join(o.name for o in signature.outputs)})")
        extra = " GFPGAN exports return the face plus intermediate images." if len(signature.outputs) > 1 else ""
        raise CheckpointError(f"{source} is not a GPEN model: it has {what}; GPEN files have one input 'input' and "
                              f"one output 'output'.{extra}{hint} {fix}")
    given, out = signature.inputs[0], signature.outputs[0]
    if hint:
        raise CheckpointError(f"{source} is not a GPEN model.{hint} {fix}")
    if (given.name, out.name) != ("input", "output"):
        raise CheckpointError(f"{source} does not follow the GPEN ONNX contract: its input is {_describe(given)} "
                              f"and its output {_describe(out)}, GPEN files name them 'input' and 'output' "
                              f"(GFPGAN exports use other output names). {fix}")
    if len(given.dims) != 4 or given.dims[1] != 3:
        raise CheckpointError(f"{source} takes {_describe(given)}; a GPEN model takes (batch, 3, S, S) RGB "
                              f"images. {fix}")
    size, width = given.dims[2], given.dims[3]
    if not isinstance(size, int) or not isinstance(width, int):
        raise CheckpointError(f"{source} takes images of unfixed size {_describe(given)}; GPEN files fix the crop "
                              f"size S (1, 3, S, S), and it cannot be guessed. {fix}")
    if size != width or size not in GPEN_SIZES:
        raise CheckpointError(f"{source} takes {size}x{width} images; GPEN crops are square, one of "
                              f"{', '.join(map(str, GPEN_SIZES))} px. {fix}")
    if given.dtype not in ("float32", "float16") or out.dims[1:] != given.dims[1:]:
        raise CheckpointError(f"{source} takes {_describe(given)} and returns {_describe(out)}; a GPEN model takes "
                              f"and returns float32 or float16 (batch, 3, S, S) images. {fix}")
    batch = given.dims[0]
    if isinstance(batch, int) and batch < 1:
        raise CheckpointError(f"{source} has batch size {batch}; expected 1 or a dynamic batch. {fix}")
    return size


def onnx_size(path: str | Path) -> int:
    """Crop size S of a GPEN ONNX file, read from its input shape; CheckpointError when it is not one."""
    return gpen_onnx_size(read_signature(path), Path(path))


def describe_onnx(path: str | Path) -> str:
    """One line for model listings: "512 px (ONNX float32, batch 1, opset 10)"; CheckpointError if not GPEN."""
    signature = read_signature(path)
    size = gpen_onnx_size(signature, Path(path))
    given = signature.inputs[0]
    batch = given.dims[0] if isinstance(given.dims[0], int) else "dynamic"
    return f"{size} px (ONNX {given.dtype}, batch {batch}, opset {signature.opset})"
