"""Export a GPEN checkpoint to the ONNX file ReActor and facefusion read, checked before it is put in place.

The file follows the official ``misc/onnx_export.py`` contract: input ``input`` (1, 3, S, S) RGB in [-1, 1],
output ``output``, same layout and range; float32 (or float16 with ``fp16``), batch 1. The graph is traced
through the standard-op path of :mod:`gpen_core.conv_ops` (oneDNN's fused CPU ops have no ONNX form),
written to a temporary file beside the target, run with ONNX Runtime on a seeded input and compared with the
torch output, and only then renamed to the target. An existing file is replaced only with ``overwrite``.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from . import conv_ops
from .checkpoint import build_network, read_state_dict
from .errors import CheckpointError, ExportError, MissingDependencyError
from .files import TEMP_PREFIX
from .onnx_backend import CPU_PROVIDER, import_onnxruntime
from .onnx_file import gpen_onnx_size, is_onnx_file, read_signature

#: ONNX opset written by default: widely supported (ONNX Runtime 1.12+); the official script used 10.
DEFAULT_OPSET = 17
#: Largest |ONNX Runtime - torch| accepted, in the network's [-1, 1] output units.
TOLERANCE = {"float32": 1e-4, "float16": 0.1}


@dataclass(frozen=True)
class ExportResult:
    """What was written: the file, crop size S, opset, dtype name, the max / mean |ONNX Runtime - torch|
    difference on the check input ([-1, 1] units) and the seconds taken."""

    path: Path
    size: int
    opset: int
    dtype: str
    max_error: float
    mean_error: float
    seconds: float


@contextlib.contextmanager
def _standard_ops():
    fused, conv_ops.ONEDNN = conv_ops.ONEDNN, False
    try:
        yield
    finally:
        conv_ops.ONEDNN = fused


def _target_path(source: Path, target: str | Path) -> Path:
    target = Path(target).expanduser()
    return target / f"{source.stem}.onnx" if target.is_dir() else target


def export_onnx(source: str | Path, target: str | Path, *, opset: int | None = None, fp16: bool = False,
                overwrite: bool = False, seed: int = 0) -> ExportResult:
    """Write GPEN checkpoint ``source`` (.pth/.pt/.safetensors) as an ONNX file at ``target`` (a file, or a
    folder to write ``<source stem>.onnx`` into) and check it against torch; see the module docstring.
    ``opset``: None = :data:`DEFAULT_OPSET`. ``fp16``: float16 weights, input and output.

    Raises CheckpointError (source is not a GPEN checkpoint, or already ONNX), ExportError (target exists
    without ``overwrite``, the exporter failed, or the check failed: then nothing is left at ``target``),
    MissingDependencyError (onnxruntime or onnx missing).
    """
    started = time.perf_counter()
    opset = DEFAULT_OPSET if opset is None else opset
    source = Path(source).expanduser()
    target = _target_path(source, target)
    if source.is_file() and is_onnx_file(source):
        raise CheckpointError(f"{source} is already an ONNX file; export-onnx reads a GPEN .pth or .safetensors "
                              f"checkpoint.")
    if target.exists() and not overwrite:
        raise ExportError(f"{target} already exists; choose another name or add --overwrite to replace it.")
    if not 7 <= opset <= 25:
        raise ExportError(f"opset {opset} is outside 7-25; use {DEFAULT_OPSET} (or 10, as the official script).")
    ort = import_onnxruntime()
    try:
        import onnx  # noqa: F401  (torch's exporter writes the file through it)
    except ImportError:
        raise MissingDependencyError(f"exporting to ONNX needs the onnx package: run `{sys.executable} -m pip "
                                     f"install onnx`.") from None
    net = build_network(read_state_dict(source), source)
    dtype = torch.float16 if fp16 else torch.float32
    net = net.to(dtype)
    size = net.config.size
    check = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1
    target.parent.mkdir(parents=True, exist_ok=True)
    # files.py's temp naming (cleaned up after a killed run) and mode: 0666 & ~umask, as a plain write gives.
    tmp = target.parent / f"{TEMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}.tmp"
    os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666))
    try:
        with _standard_ops(), torch.inference_mode():
            expected = net(check.to(dtype)).float().numpy()
        with _standard_ops(), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and constant-folding notes
            try:
                torch.onnx.export(net, (check.to(dtype),), str(tmp), input_names=["input"],
                                  output_names=["output"], opset_version=opset, dynamo=False)
            except Exception as exc:  # noqa: BLE001 - the exporter raises many types
                raise ExportError(f"torch could not export {source.name} at opset {opset}: "
                                  f"{str(exc).splitlines()[0][:300]}. Try --opset {DEFAULT_OPSET}.") from None
        gpen_onnx_size(read_signature(tmp), tmp)
        session = ort.InferenceSession(str(tmp), providers=[CPU_PROVIDER])
        got = session.run(["output"], {"input": check.to(dtype).numpy()})[0].astype(np.float32)
        diff = np.abs(got - expected)
        bound = TOLERANCE[str(dtype).removeprefix("torch.")]
        if not np.isfinite(got).all() or diff.max() > bound:
            raise ExportError(f"the exported {target.name} does not match the torch network (max difference "
                              f"{diff.max():.2e} > {bound:g} in [-1, 1] units); nothing was written. Try another "
                              f"--opset or an fp32 export.")
        if target.exists() and not overwrite:
            raise ExportError(f"{target} appeared while exporting; add --overwrite to replace it.")
        if target.exists():
            os.chmod(tmp, stat.S_IMODE(target.stat().st_mode))  # a replaced file keeps its mode
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportResult(target, size, opset, str(dtype).removeprefix("torch."), float(diff.max()),
                        float(diff.mean()), time.perf_counter() - started)
