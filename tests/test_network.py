"""The network computes what the official FullGenerator computes, for every official layout."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import gpen_core
from gpen_core.checkpoint import model_from_state_dict
from gpen_core.network import GPEN, GPENConfig, init_random_

OFFICIAL = ["GPEN-BFR-256", "GPEN-BFR-512", "GPEN-BFR-1024", "GPEN-BFR-2048"]


@pytest.fixture(scope="module")
def fixture_tensors(tiny_checkpoint):
    return load_file(str(tiny_checkpoint))


def test_matches_official_output_fp32(tiny_checkpoint, fixture_tensors):
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    with torch.inference_mode():
        out = model.net(fixture_tensors["input"])
    torch.testing.assert_close(out, fixture_tensors["output"], atol=1e-4, rtol=1e-4)


def test_forward_is_deterministic_and_batch_independent(tiny_checkpoint, fixture_tensors):
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    x = fixture_tensors["input"]
    batch = torch.cat([x, x.flip(-1), x])
    with torch.inference_mode():
        out = model.net(batch)
        again = model.net(batch)
    assert torch.equal(out, again)
    torch.testing.assert_close(out[0], out[2])
    torch.testing.assert_close(out[:1], fixture_tensors["output"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out[0], out[1])


def official_state_dict(name: str, data_dir) -> tuple[dict[str, torch.Tensor], dict]:
    """Random tensors with exactly the names and shapes of an official checkpoint's key table."""
    table = json.loads((data_dir / "keys" / f"{name}.json").read_text())
    meta = json.loads((data_dir / "keys" / f"{name}.meta.json").read_text())
    gen = torch.Generator().manual_seed(0)
    state = {}
    for key, entry in table.items():
        if entry["kind"] == "buffer":  # the 4x4 blur kernels
            k = torch.tensor([1.0, 3.0, 3.0, 1.0])
            kernel = k[None] * k[:, None] / 64
            state[key] = kernel * 4 if ("upsample" in key or ".conv.blur" in key) else kernel
        else:
            state[key] = torch.randn(entry["shape"], generator=gen) * 0.1
    return state, meta


@pytest.mark.parametrize("name", OFFICIAL)
def test_official_layout_loads_strictly_and_infers_config(name, data_dir):
    state, meta = official_state_dict(name, data_dir)
    model = model_from_state_dict(state, device="cpu")
    assert model.config == GPENConfig(meta["in_size"], meta["channel_multiplier"], meta["narrow"],
                                      meta["style_dim"], meta["n_mlp"])
    assert model.size == meta["in_size"]
    assert {int(k): v for k, v in meta["channels"].items()} == model.config.channels
    assert sum(p.numel() for p in model.net.parameters()) == meta["n_params"]
    assert set(model.net.state_dict()) == set(state)
    if meta["in_size"] <= 512:
        s = meta["in_size"]
        x = torch.rand(1, 3, s, s) * 2 - 1
        with torch.inference_mode():
            out = model.net(x)
        assert out.shape == x.shape and out.dtype == x.dtype and torch.isfinite(out).all()


@pytest.mark.parametrize("size,multiplier,narrow,style_dim,n_mlp", [
    (64, 2, 0.25, 32, 4), (128, 1, 0.0625, 16, 2), (512, 4, 0.03125, 8, 8),
])
def test_any_size_and_width_round_trips(size, multiplier, narrow, style_dim, n_mlp):
    config = GPENConfig(size, multiplier, narrow, style_dim, n_mlp)
    state = init_random_(GPEN(config)).state_dict()
    model = model_from_state_dict(state, device="cpu")
    assert model.config == config
    crops = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    out = model.restore_crops(crops)
    assert out.shape == crops.shape and out.dtype == np.uint8


def test_restore_crops_uses_official_pre_and_post_processing(tiny_checkpoint):
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    crops = np.random.default_rng(1).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    x = (torch.from_numpy(crops).permute(0, 3, 1, 2).float() / 255.0 - 0.5) / 0.5
    with torch.inference_mode():
        expected = ((model.net(x) * 0.5 + 0.5).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(model.restore_crops(crops), expected)
    with pytest.raises(gpen_core.ImageError, match=r"\(B, 256, 256, 3\)"):
        model.restore_crops(crops[:, :128])


@pytest.mark.parametrize("dtype,bound", [(torch.float16, 0.03), (torch.bfloat16, 0.15)])
def test_half_precision_close_to_fp32(tiny_checkpoint, fixture_tensors, dtype, bound):
    """Measured on the fixture (output range about [-4.5, 3.8]): max |diff| fp16 0.0075, bf16 0.05."""
    model = gpen_core.load_model(tiny_checkpoint, device="cpu", dtype=dtype)
    assert model.dtype == dtype
    with torch.inference_mode():
        out = model.net(fixture_tensors["input"].to(dtype))
    assert out.dtype == dtype
    diff = (out.float() - fixture_tensors["output"]).abs()
    assert diff.max() < bound and diff.mean() < bound / 5


def test_fused_and_standard_op_paths_agree(tiny_checkpoint, fixture_tensors, monkeypatch):
    """CPU uses oneDNN's fused convolutions; CUDA/MPS/fp16 use standard ops. Both match the official output."""
    from gpen_core import conv_ops

    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    monkeypatch.setattr(conv_ops, "ONEDNN", False)
    with torch.inference_mode():
        standard = model.net(fixture_tensors["input"])
    torch.testing.assert_close(standard, fixture_tensors["output"], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("onednn", [True, False])
def test_batched_forward_equals_per_sample(tiny_checkpoint, fixture_tensors, monkeypatch, onednn):
    """One forward for the batch (styles as input/output channel scales, the GPU path) computes what one
    forward per sample (styles folded into the weights, the CPU path) computes, to 1e-5 in fp32."""
    from gpen_core import conv_ops
    from gpen_core.network import batches_faces

    monkeypatch.setattr(conv_ops, "ONEDNN", onednn and conv_ops.ONEDNN)
    model = gpen_core.load_model(tiny_checkpoint, device="cpu")
    x = fixture_tensors["input"]
    noise = torch.rand((2, 3, 256, 256), generator=torch.Generator().manual_seed(3)) * 2 - 1
    batch = torch.cat([x, x.flip(-1), noise])
    with torch.inference_mode():
        per_sample = model.net(batch, batched=False)
        batched = model.net(batch, batched=True)
    assert batched.shape == batch.shape and batched.is_contiguous()
    torch.testing.assert_close(batched, per_sample, atol=1e-5, rtol=0)
    torch.testing.assert_close(batched[:1], fixture_tensors["output"], atol=1e-4, rtol=1e-4)
    assert not torch.allclose(batched[2], batched[3])  # each sample keeps its own style
    assert not batches_faces(torch.device("cpu")) and batches_faces(torch.device("cuda"))


def test_fp16_on_cpu_computes_in_fp32_with_one_warning(tiny_checkpoint, monkeypatch):
    from gpen_core import devices

    monkeypatch.setattr(devices, "_warned_cpu_fp16", False)
    model = gpen_core.load_model(tiny_checkpoint, device="cpu", dtype="fp16")
    assert model.dtype == torch.float16  # weights keep the dtype asked for (a host may move them to a GPU)
    assert "float16 computed as torch.float32" in repr(model)
    crops = np.random.default_rng(2).integers(0, 256, (1, 256, 256, 3), dtype=np.uint8)
    with pytest.warns(devices.SlowDtypeWarning, match="fp16 on the CPU.*fp32"):
        assert model.compute_dtype == torch.float32
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # only once per process
        out = model.restore_crops(crops)
        assert gpen_core.load_model(tiny_checkpoint, device="cpu", dtype="bf16").compute_dtype == torch.bfloat16
    reference = gpen_core.load_model(tiny_checkpoint, device="cpu").restore_crops(crops)
    assert np.abs(out.astype(int) - reference).max() <= 3  # fp16-rounded weights, fp32 arithmetic
    assert devices.compute_dtype(torch.float16, "cuda") == torch.float16
