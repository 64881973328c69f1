"""Shared fixtures: paths to test data and small GPEN checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from gpen_core import model_paths

DATA = Path(__file__).parent / "data"
TINY_CHECKPOINT = DATA / "tiny-256.safetensors"

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def tiny_checkpoint() -> Path:
    """The official-code fixture: GPEN-BFR-256 key layout, narrow 0.125, style_dim 64 (5 MB)."""
    return TINY_CHECKPOINT


@pytest.fixture
def clean_env(tmp_path, monkeypatch) -> Path:
    """No GPEN environment variables, an empty working folder and cache, no facexlib package weights."""
    for var in ("GPEN_DETECTION_WEIGHTS", "GPEN_PARSING_WEIGHTS", "GPEN_FACEXLIB_DIR", "GPEN_MODELS_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(model_paths, "_facexlib_package_weights", lambda: [])
    return tmp_path
