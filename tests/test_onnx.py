"""GPEN ONNX files: loading with ONNX Runtime (the official contract), refusing other models, exporting."""

from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import stat
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch import nn

import gpen_core
from gpen_core import cli, conv_ops, model_paths, onnx_backend
from gpen_core.imageio import read_image
from gpen_core.onnx_export import DEFAULT_OPSET, export_onnx
from gpen_core.onnx_file import is_onnx_file, read_signature


def _export(module: nn.Module, path: Path, inputs: tuple, *, input_names=("input",), output_names=("output",),
            opset: int = DEFAULT_OPSET, **options) -> Path:
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, inputs, str(path), input_names=list(input_names), output_names=list(output_names),
                          opset_version=opset, dynamo=False, **options)
    return path


@pytest.fixture(scope="module")
def torch_model(tiny_checkpoint):
    return gpen_core.load_model(tiny_checkpoint, device="cpu")


@pytest.fixture(scope="module")
def official_onnx(tmp_path_factory, torch_model) -> Path:
    """The tiny network exported as the official misc/onnx_export.py does: opset 10, weights also listed as
    graph inputs (its ONNX_ATEN_FALLBACK default), batch 1, no dynamic axes. No size in the file name."""
    path = tmp_path_factory.mktemp("official") / "model.onnx"
    fused, conv_ops.ONEDNN = conv_ops.ONEDNN, False
    try:
        return _export(torch_model.net, path, (torch.zeros(1, 3, 256, 256),), opset=10,
                       keep_initializers_as_inputs=True)
    finally:
        conv_ops.ONEDNN = fused


@pytest.fixture(scope="module")
def exported(tmp_path_factory, tiny_checkpoint) -> tuple[Path, str]:
    """`python -m gpen_core export-onnx` of the tiny checkpoint (current default opset): the file, the printout."""
    target = tmp_path_factory.mktemp("exported") / "GPEN-BFR-2048.onnx"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert cli.main(["export-onnx", str(tiny_checkpoint), str(target)]) == 0
    return target, out.getvalue()


class _Conv(nn.Module):
    """A 1x1 convolution: a stand-in network for signature tests (exports in well under a second)."""

    def __init__(self, outputs: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.outputs = outputs

    def forward(self, x, weight=None):
        y = self.conv(x) if weight is None else self.conv(x) * weight
        return y if self.outputs == 1 else (y, y[:, :, ::2, ::2])


@pytest.mark.parametrize("which", ["official opset 10", f"export-onnx opset {DEFAULT_OPSET}"])
def test_onnx_matches_torch_within_one_grey_level(which, official_onnx, exported, torch_model):
    path = official_onnx if which.startswith("official") else exported[0]
    model = gpen_core.load_model(path, device="cpu")
    assert isinstance(model, gpen_core.GPENModel)
    assert (model.size, model.device, model.dtype, model.path) == (256, torch.device("cpu"), torch.float32, path)
    assert read_signature(path).opset == (10 if which.startswith("official") else DEFAULT_OPSET)
    assert repr(model) == f"GPENModel({path.name}, size=256, device=cpu, dtype=torch.float32, onnx)"
    assert model.to("cpu") is model and model.providers == ["CPUExecutionProvider"]
    crops = np.random.default_rng(3).integers(0, 256, (2, 256, 256, 3), dtype=np.uint8)
    got, want = model.restore_crops(crops), torch_model.restore_crops(crops)
    assert got.shape == crops.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want).max() <= 1


def test_restore_faces_on_a_photo_with_an_onnx_model(official_onnx, torch_model, data_dir):
    image = read_image(data_dir / "astronaut.jpg")
    model = gpen_core.load_model(official_onnx, device="cpu")
    result = gpen_core.restore_faces(image, model, detector="mtcnn", mask="rectangle")
    reference = gpen_core.restore_faces(image, torch_model, detector="mtcnn", mask="rectangle")
    assert result.n_faces == 1 and result.image.shape == image.shape
    changed = result.mask > 0.5
    assert np.abs(result.image.astype(int) - image)[changed].mean() > 5  # the face went through the network
    assert np.abs(result.image.astype(int) - reference.image).max() <= 1


def test_export_round_trip_and_no_overwrite(exported, tiny_checkpoint, capsys):
    path, printed = exported
    max_error = float(re.search(r"ONNX Runtime vs torch: max ([0-9.e+-]+)", printed).group(1))
    assert max_error <= 1e-4 and "256 px, float32, opset 17" in printed
    folder = path.parent
    assert sorted(p.name for p in folder.iterdir()) == ["GPEN-BFR-2048.onnx"]  # no temporary file left
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # as a plain write, not a temp file's 0600
    signature = read_signature(path)
    assert [(i.name, i.dtype, i.dims) for i in signature.inputs] == [("input", "float32", (1, 3, 256, 256))]
    assert [(o.name, o.dims) for o in signature.outputs] == [("output", (1, 3, 256, 256))]
    before = path.read_bytes()
    assert cli.main(["export-onnx", str(tiny_checkpoint), str(path)]) == 1
    assert "already exists; choose another name or add --overwrite" in capsys.readouterr().err
    assert path.read_bytes() == before
    # The size comes from the input shape, never from the name (which says 2048 here).
    assert model_paths.checkpoint_size(path) == 256
    assert model_paths.find_gpen_models([folder]) == [path]
    assert model_paths.list_checkpoints(folder) == [path]
    assert cli.main(["models", "--models-dir", str(folder)]) == 0
    assert f"{path}  " in (listing := capsys.readouterr().out) and "256 px (ONNX float32, batch 1, opset 17)" in listing


def test_export_refuses_a_non_gpen_file(tmp_path, official_onnx, tiny_checkpoint, capsys, monkeypatch):
    other = tmp_path / "codeformer.safetensors"
    save_file({"quantize.embedding.weight": torch.zeros(4, 4), "position_emb": torch.zeros(4)}, str(other))
    with pytest.raises(gpen_core.CheckpointError, match="not a GPEN checkpoint.*CodeFormer"):
        export_onnx(other, tmp_path / "out.onnx")
    with pytest.raises(gpen_core.CheckpointError, match="already an ONNX file"):
        export_onnx(official_onnx, tmp_path / "out.onnx")
    assert cli.main(["export-onnx", str(other), str(tmp_path)]) == 1
    assert "not a GPEN checkpoint" in capsys.readouterr().err
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnx", None)
        with pytest.raises(gpen_core.MissingDependencyError, match="needs the onnx package.*pip install onnx"):
            export_onnx(tiny_checkpoint, tmp_path / "out.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codeformer.safetensors"]


@pytest.mark.parametrize("kind,match", [
    ("codeformer", "CodeFormer model, not GPEN.*'weight'"),
    ("two outputs", "2 outputs.*GFPGAN"),
    ("other names", "'input' and 'output'"),
    ("non-square", "256x128.*square"),
    ("rank 3", r"takes 'input' float32 \(3, 256, 256\)"),
])
def test_other_onnx_models_are_refused(tmp_path, kind, match):
    path = tmp_path / "GPEN-BFR-256.onnx"
    x = torch.rand(1, 3, 256, 256)
    if kind == "codeformer":
        _export(_Conv(), path, (x, torch.tensor(0.5)), input_names=("input", "weight"))
    elif kind == "two outputs":
        _export(_Conv(outputs=2), path, (x,), output_names=("output", "rgb"))
    elif kind == "other names":
        _export(_Conv(), path, (x,), output_names=("out",))
    elif kind == "non-square":
        _export(_Conv(), path, (torch.rand(1, 3, 256, 128),))
    else:
        _export(_Conv(), path, (x[0],))
    with pytest.raises(gpen_core.CheckpointError, match=match):
        gpen_core.load_model(path, device="cpu")
    assert model_paths.checkpoint_size(path) is None


def test_bytes_decide_not_the_extension(tmp_path, tiny_checkpoint, official_onnx):
    assert is_onnx_file(official_onnx) and not is_onnx_file(tiny_checkpoint)
    renamed = tmp_path / "GPEN-BFR-256.pth"
    shutil.copy(official_onnx, renamed)
    assert type(gpen_core.load_model(renamed, device="cpu")).__name__ == "ONNXModel"
    truncated = tmp_path / "cut.onnx"
    truncated.write_bytes(official_onnx.read_bytes()[:100_000])
    with pytest.raises(gpen_core.CheckpointError, match="truncated or corrupt"):
        gpen_core.load_model(truncated, device="cpu")


def test_batches_fixed_and_dynamic_and_precision(tmp_path):
    fixed = _export(_Conv(), tmp_path / "fixed.onnx", (torch.rand(1, 3, 64, 64),))
    dynamic = _export(_Conv(), tmp_path / "dynamic.onnx", (torch.rand(1, 3, 64, 64),),
                      dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
    half = _export(_Conv().half(), tmp_path / "half.onnx", (torch.rand(1, 3, 64, 64).half(),))
    crops = np.random.default_rng(0).integers(0, 256, (3, 64, 64, 3), dtype=np.uint8)
    out_fixed = gpen_core.load_model(fixed, device="cpu").restore_crops(crops)  # one face per run
    assert out_fixed.shape == crops.shape
    assert gpen_core.load_model(dynamic, device="cpu").net.fixed_batch is None
    half_model = gpen_core.load_model(half, device="cpu")
    assert half_model.dtype == torch.float16 and half_model.restore_crops(crops).shape == crops.shape
    with pytest.raises(gpen_core.CheckpointError, match="float16 ONNX file.*dtype auto"):
        gpen_core.load_model(half, device="cpu", dtype="fp32")


def test_missing_onnxruntime_says_what_to_install(official_onnx, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(gpen_core.MissingDependencyError, match=r"pip install onnxruntime` \(or onnxruntime-gpu"):
        gpen_core.load_model(official_onnx, device="cpu")
    assert model_paths.checkpoint_size(official_onnx) == 256  # listing needs no onnxruntime


def test_cuda_machine_with_cpu_only_onnxruntime_warns_once(monkeypatch):
    import onnxruntime

    monkeypatch.setattr(onnx_backend, "_warned_cpu_only", False)
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    with pytest.warns(RuntimeWarning, match="no CUDAExecutionProvider.*onnxruntime-gpu"):
        assert onnx_backend.execution_device(None) == torch.device("cpu")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert onnx_backend.execution_device("cuda") == torch.device("cpu")
    monkeypatch.setattr(onnxruntime, "get_available_providers",
                        lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_backend.execution_device("cuda:1") == torch.device("cuda", 1)
