"""gpen_core.identify: which files a model list offers as GPEN, read cheaply and cached."""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from gpen_core import identify

TINY = Path(__file__).parent / "data" / "tiny-256.safetensors"


@pytest.fixture(scope="module")
def gpen_state() -> dict[str, torch.Tensor]:
    return {k.removeprefix("state_dict."): v for k, v in load_file(TINY).items() if k.startswith("state_dict.")}


@pytest.fixture(scope="module")
def folder(tmp_path_factory, gpen_state) -> Path:
    """A shared facerestore_models folder: GPEN files under several names and formats, and everything else."""
    root = tmp_path_factory.mktemp("facerestore_models")
    torch.save(gpen_state, root / "pytorch_model.pt")  # ModelScope's GPEN-BFR-1024 file name, zip format
    torch.save({"g_ema": gpen_state}, root / "my_restorer.pth", _use_new_zipfile_serialization=False)  # legacy
    shutil.copy(TINY, root / "renamed.safetensors")  # state_dict.* keys
    torch.save({"params_ema": {"conv_body_first.weight": torch.zeros(1), "stylegan_decoder.style_mlp.1.weight":
                               torch.zeros(1)}}, root / "GFPGANv1.4.pth")
    torch.save({"params_ema": {"quantize.embedding.weight": torch.zeros(1), "position_emb": torch.zeros(1)}},
               root / "codeformer.pth")
    torch.save({"convs.0.0.weight": torch.zeros(1), "final_linear.0.weight": torch.zeros(1)}, root / "disc.pth")
    save_file({"ClassHead.0.weight": torch.zeros(1)}, str(root / "detector.safetensors"))
    (root / "empty.pth").write_bytes(b"")
    (root / "random.pth").write_bytes(os.urandom(4096))
    (root / "GPEN-BFR-1024.pth").write_bytes(os.urandom(4096))  # damaged, but named GPEN: offered, loading explains
    (root / "GPEN-BFR-512.onnx").write_bytes(b"\x08\x07\x12\x07pytorch")
    (root / "codeformer.onnx").write_bytes(b"\x08\x07\x12\x07pytorch" + os.urandom(1000))
    (root / "notes.txt").write_text("GPEN models go here")
    return root


def test_only_gpen_files_are_offered(folder):
    offered = sorted(p.name for p in folder.iterdir() if identify.is_gpen_model(p))
    assert offered == ["GPEN-BFR-1024.pth", "GPEN-BFR-512.onnx", "my_restorer.pth", "pytorch_model.pt",
                       "renamed.safetensors"]


def test_tensor_names_come_from_the_index_only(folder, gpen_state):
    for name in ("pytorch_model.pt", "renamed.safetensors"):
        names = identify.tensor_names(folder / name)
        assert {n.removeprefix("state_dict.") for n in names} >= set(gpen_state), name
    assert "g_ema" in identify.tensor_names(folder / "my_restorer.pth")
    assert identify.tensor_names(folder / "random.pth") == identify.tensor_names(folder / "empty.pth") == []


class _CountingFile(io.FileIO):
    read_bytes = 0

    def read(self, size=-1):
        data = super().read(size)
        _CountingFile.read_bytes += len(data)
        return data

    def readinto(self, buffer):
        n = super().readinto(buffer)
        _CountingFile.read_bytes += n or 0
        return n


def test_a_large_checkpoint_is_not_read_whole_and_answers_are_cached(tmp_path, gpen_state, monkeypatch):
    state = dict(gpen_state, padding=torch.zeros(8 << 20))  # 32 MB of tensor data after GPEN's own tensors
    big = tmp_path / "big.pth"
    torch.save(state, big)
    legacy = tmp_path / "big_legacy.pth"
    torch.save(state, legacy, _use_new_zipfile_serialization=False)
    monkeypatch.setattr(identify, "open", lambda path, mode: _CountingFile(path, mode), raising=False)
    for path in (big, legacy):
        _CountingFile.read_bytes = 0
        assert identify.is_gpen_model(path)
        assert 0 < _CountingFile.read_bytes < 2 << 20, path.name  # well under the file's 40 MB
        _CountingFile.read_bytes = 0
        assert identify.is_gpen_model(path) and _CountingFile.read_bytes == 0  # cached: not opened again
    # Replaced by another file under the same name: read again.
    torch.save({"conv_body_first.weight": torch.zeros(1)}, big)
    assert not identify.is_gpen_model(big)
