"""Shared fixtures: paths to test data and small GPEN checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

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
