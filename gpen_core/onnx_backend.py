"""GPEN ONNX files (ReActor's GPEN-BFR-*.onnx, facefusion's gpen_bfr_*.onnx, our export) run with ONNX Runtime.

:func:`load_onnx_model` returns an :class:`ONNXModel`, a :class:`~gpen_core.model.GPENModel` whose ``net`` is an
ONNX Runtime session behind the same call: float (B,3,S,S) RGB in [-1,1] in, the same out. So the pipeline, the
ComfyUI nodes and the WebUI use it exactly like a .pth model. onnxruntime is optional and imported on first use.
"""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .devices import resolve_device, resolve_dtype
from .errors import CheckpointError, MissingDependencyError
from .model import GPENModel
from .onnx_file import OnnxSignature, gpen_onnx_size, read_signature

CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"
_NUMPY_TYPES = {"float32": np.float32, "float16": np.float16}
_TORCH_TYPES = {"float32": torch.float32, "float16": torch.float16}
_warned_cpu_only = False


def import_onnxruntime():
    """The onnxruntime module; MissingDependencyError saying what to install (and into which Python) otherwise."""
    try:
        import onnxruntime
    except ImportError:
        raise MissingDependencyError(
            f"GPEN .onnx files need ONNX Runtime: run `{sys.executable} -m pip install onnxruntime` "
            f"(or onnxruntime-gpu, for NVIDIA GPUs) with the Python that runs GPEN, or use the .pth checkpoint."
        ) from None
    return onnxruntime


def _warn_cpu_only() -> None:
    global _warned_cpu_only
    if not _warned_cpu_only:
        _warned_cpu_only = True
        warnings.warn(
            "GPEN ONNX runs on the CPU although this machine has a CUDA GPU: the installed onnxruntime has no "
            "CUDAExecutionProvider, which is many times slower. Install the GPU build with "
            f"`{sys.executable} -m pip uninstall -y onnxruntime && {sys.executable} -m pip install onnxruntime-gpu`, "
            "or use the .pth checkpoint.", RuntimeWarning, stacklevel=3)


def execution_device(device: str | torch.device | None) -> torch.device:
    """Where ONNX Runtime will run for a requested torch ``device``: CUDA when asked for (or, for None/"auto",
    when torch sees a GPU) and onnxruntime has the CUDA provider; otherwise the CPU (MPS included), with a
    one-time warning when a CUDA GPU is there but only the CPU provider is installed."""
    target = resolve_device(device)
    if target.type != "cuda":
        return torch.device("cpu")
    if CUDA_PROVIDER in import_onnxruntime().get_available_providers():
        return torch.device("cuda", target.index or 0)
    _warn_cpu_only()
    return torch.device("cpu")


class OnnxNetwork(nn.Module):
    """An ONNX Runtime session behind ``forward``: (B,3,S,S) float tensor -> same shape, dtype and device.

    Batch-1 files see one image per run. The session is built on first use for the current device.
    """

    def __init__(self, path: Path, signature: OnnxSignature, device: torch.device):
        super().__init__()
        self.path = path
        self.signature = signature
        self.device = device
        self._session = None
        given = signature.inputs[0]
        self.fixed_batch = given.dims[0] if isinstance(given.dims[0], int) else None
        self.numpy_dtype = _NUMPY_TYPES[given.dtype]

    def session(self):
        """The ONNX Runtime InferenceSession for the current device (built once per device)."""
        if self._session is None:
            ort = import_onnxruntime()
            options = ort.SessionOptions()
            options.log_severity_level = 3  # errors only: the CPU provider's fallback notes are noise here
            providers = [CPU_PROVIDER]
            if self.device.type == "cuda":
                providers = [(CUDA_PROVIDER, {"device_id": self.device.index or 0}), CPU_PROVIDER]
            try:
                self._session = ort.InferenceSession(str(self.path), options, providers=providers)
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
                raise CheckpointError(f"ONNX Runtime cannot load {self.path}: {str(exc).splitlines()[0][:300]}. "
                                      f"The file is damaged or needs a newer onnxruntime (`pip install -U "
                                      f"onnxruntime`); export it again otherwise.") from None
        return self._session

    def move(self, device: torch.device) -> None:
        """Run on ``device`` from now on; a session built for another device is dropped (its memory freed)."""
        if device != self.device:
            self.device, self._session = device, None

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        session = self.session()
        x = image.detach().cpu().numpy().astype(self.numpy_dtype, copy=False)
        step = self.fixed_batch or len(x)
        out = [session.run(["output"], {"input": np.ascontiguousarray(x[i:i + step])})[0]
               for i in range(0, len(x), step)]
        return torch.from_numpy(np.concatenate(out)).to(device=image.device, dtype=image.dtype)


class ONNXModel(GPENModel):
    """A GPEN ONNX file ready for inference; used like :class:`GPENModel` (``size``, ``restore_crops``,
    ``device``, ``dtype``, ``to``, ``path``). ``net`` takes and returns (B,3,S,S) RGB in [-1,1] in ``dtype``."""

    net: OnnxNetwork

    def __init__(self, path: Path, signature: OnnxSignature, size: int, device: torch.device):
        super().__init__(OnnxNetwork(path, signature, device), path)
        self._size = size

    @property
    def config(self) -> None:
        """ONNX files carry no GPEN hyper-parameters beyond the size; see :attr:`size`."""
        return None

    @property
    def size(self) -> int:
        """Side S of the square face crop, read from the file's input shape."""
        return self._size

    @property
    def device(self) -> torch.device:
        """Where ONNX Runtime runs: cuda (CUDA execution provider) or cpu."""
        return self.net.device

    @property
    def dtype(self) -> torch.dtype:
        """The file's input/output type, float32 or float16 (fixed when it was exported)."""
        return _TORCH_TYPES[self.net.signature.inputs[0].dtype]

    @property
    def compute_dtype(self) -> torch.dtype:
        """ONNX Runtime computes in the file's own type (:attr:`dtype`) on every device."""
        return self.dtype

    @property
    def providers(self) -> list[str]:
        """ONNX Runtime execution providers of the session, first preferred."""
        return list(self.net.session().get_providers())

    def to(self, device: str | torch.device) -> ONNXModel:
        """Run on ``device`` (cuda needs onnxruntime-gpu; anything else runs on the CPU); returns self."""
        self.net.move(execution_device(device))
        return self

    def __repr__(self) -> str:
        return f"GPENModel({self.path.name}, size={self.size}, device={self.device}, dtype={self.dtype}, onnx)"


def load_onnx_model(path: str | Path, device: str | torch.device | None = None,
                    dtype: str | torch.dtype | None = None) -> ONNXModel:
    """Load a GPEN ONNX file (contract: see :mod:`gpen_core.onnx_file`); S comes from its input shape.

    ``device``: None = cuda when torch sees a GPU and onnxruntime has the CUDA provider, else cpu.
    ``dtype``: None/"auto" = the file's own type; another precision is refused (it is fixed at export).
    Raises CheckpointError (not a GPEN file: CodeFormer, GFPGAN, wrong shape) or MissingDependencyError.
    """
    path = Path(path).expanduser()
    signature = read_signature(path)
    size = gpen_onnx_size(signature, path)
    file_type = _TORCH_TYPES[signature.inputs[0].dtype]
    if dtype not in (None, "auto") and resolve_dtype(dtype) != file_type:
        raise CheckpointError(f"{path.name} is a {str(file_type).removeprefix('torch.')} ONNX file; its precision "
                              f"is fixed when it is exported, so dtype {dtype} cannot be used. Choose dtype auto, "
                              f"or export the .pth again (`python -m gpen_core export-onnx ... [--fp16]`).")
    model = ONNXModel(path, signature, size, execution_device(device))
    model.net.session()  # fail now, not at the first face, on a damaged file or a missing provider
    return model
