"""Checkpoint formats, wrappers, safety and the error messages users see."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import gpen_core
from gpen_core.checkpoint import read_state_dict


@pytest.fixture(scope="module")
def tiny_state(tiny_checkpoint) -> dict[str, torch.Tensor]:
    prefix = "state_dict."
    return {k[len(prefix):]: v for k, v in load_file(str(tiny_checkpoint)).items() if k.startswith(prefix)}


@pytest.fixture(scope="module")
def tiny_input(tiny_checkpoint) -> torch.Tensor:
    return load_file(str(tiny_checkpoint))["input"]


def run(model: gpen_core.GPENModel, x: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return model.net(x.to(model.dtype)).float()


@pytest.fixture(scope="module")
def reference(tiny_checkpoint, tiny_input) -> torch.Tensor:
    return run(gpen_core.load_model(tiny_checkpoint, device="cpu"), tiny_input)


@pytest.mark.parametrize("layout", ["plain", "g_ema", "params_ema", "state_dict", "model", "module", "training"])
@pytest.mark.parametrize("legacy", [False, True])
def test_pth_wrappers_and_formats_load(tmp_path, tiny_state, tiny_input, reference, layout, legacy):
    wrapped = {
        "plain": tiny_state,
        "g_ema": {"g_ema": tiny_state},
        "params_ema": {"params_ema": tiny_state, "params": {}},
        "state_dict": {"state_dict": tiny_state, "epoch": 3},
        "model": {"model": {f"module.{k}": v for k, v in tiny_state.items()}},
        "module": {f"module.{k}": v for k, v in tiny_state.items()},
        "training": {"g": tiny_state, "d": {"x": torch.zeros(1)}, "g_ema": tiny_state, "g_optim": {}},
    }[layout]
    path = tmp_path / "GPEN-BFR-256.pth"
    torch.save(wrapped, path, _use_new_zipfile_serialization=not legacy)
    model = gpen_core.load_model(path, device="cpu")
    assert model.size == 256 and model.path == path
    assert torch.equal(run(model, tiny_input), reference)


def test_safetensors_gives_identical_output(tmp_path, tiny_state, tiny_input, reference):
    path = tmp_path / "GPEN-BFR-256.safetensors"
    save_file(tiny_state, str(path))
    assert torch.equal(run(gpen_core.load_model(path, device="cpu"), tiny_input), reference)


@pytest.mark.parametrize("stored", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoint_loads_as_float32(tmp_path, tiny_state, tiny_input, reference, stored):
    path = tmp_path / "half.pth"
    torch.save({k: v.to(stored) for k, v in tiny_state.items()}, path)
    model = gpen_core.load_model(path, device="cpu")
    assert model.dtype == torch.float32
    assert (run(model, tiny_input) - reference).abs().max() < 0.2


def test_default_device_is_cpu_without_accelerator(tiny_checkpoint):
    model = gpen_core.load_model(tiny_checkpoint)
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and torch.backends.mps.is_available():
        expected = "mps"
    assert model.device.type == expected


class _WritesAFile:
    """Unpickling this calls open(target, "w"), i.e. runs code that creates a file."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return builtins.open, (str(self.target), "w")


@pytest.mark.parametrize("legacy", [False, True])
def test_pickle_with_code_is_refused_and_never_runs(tmp_path, tiny_state, legacy):
    target = tmp_path / "pwned.txt"
    path = tmp_path / "GPEN-BFR-512.pth"
    torch.save({**tiny_state, "payload": _WritesAFile(target)}, path, _use_new_zipfile_serialization=not legacy)
    with pytest.raises(gpen_core.CheckpointError, match="pickled Python code") as info:
        gpen_core.load_model(path, device="cpu")
    assert str(path) in str(info.value) and "was not run" in str(info.value)
    assert "`io.open`" in str(info.value)  # names what it asked for (builtins.open is io.open)
    assert "Weights only load failed" not in str(info.value)  # not torch's boilerplate
    assert not target.exists()


def test_missing_file(tmp_path):
    path = tmp_path / "GPEN-BFR-512.pth"
    with pytest.raises(gpen_core.ModelNotFoundError, match="does not exist") as info:
        gpen_core.load_model(path)
    assert str(path) in str(info.value) and "python -m gpen_core download 512" in str(info.value)
    with pytest.raises(gpen_core.ModelNotFoundError, match="is a folder"):
        gpen_core.load_model(tmp_path)


def test_empty_file(tmp_path):
    path = tmp_path / "GPEN-BFR-512.pth"
    path.touch()
    with pytest.raises(gpen_core.CheckpointError, match=r"is empty \(0 bytes\).*download"):
        gpen_core.load_model(path)


@pytest.mark.parametrize("suffix,legacy", [(".pth", False), (".pth", True), (".safetensors", False)])
def test_truncated_file(tmp_path, tiny_state, suffix, legacy):
    path = tmp_path / f"GPEN-BFR-256{suffix}"
    if suffix == ".safetensors":
        save_file(tiny_state, str(path))
    else:
        torch.save(tiny_state, path, _use_new_zipfile_serialization=not legacy)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(gpen_core.CheckpointError, match="truncated or corrupt.*download it again") as info:
        gpen_core.load_model(path, device="cpu")
    assert str(path) in str(info.value)


@pytest.mark.parametrize("keys,name", [
    (["conv_body_first.weight", "stylegan_decoder.style_mlp.1.weight"], "GFPGAN"),
    (["quantize.embedding.weight", "position_emb", "ft_layers.0.norm1.weight"], "CodeFormer"),
    (["body.conv1.weight", "ClassHead.0.conv1x1.weight", "BboxHead.0.conv1x1.weight"], "RetinaFace"),
    (["encoder.0.conv2d.weight", "out_img_conv.conv2d.weight"], "ParseNet"),
    (["cp.resnet.conv1.weight", "ffm.convblk.conv.weight"], "BiSeNet"),
    (["conv_first.weight", "body.0.rdb1.conv1.weight", "conv_up1.weight"], "RealESRGAN"),
])
def test_other_models_are_named(tmp_path, keys, name):
    path = tmp_path / "model.pth"
    torch.save({"params_ema": {k: torch.zeros(2, 2) for k in keys}}, path)
    with pytest.raises(gpen_core.CheckpointError, match=f"not a GPEN checkpoint: it looks like a {name}") as info:
        gpen_core.load_model(path)
    assert str(path) in str(info.value)


def test_not_a_state_dict(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([1, 2, 3], path)
    with pytest.raises(gpen_core.CheckpointError, match="holds a list, not a state dict"):
        gpen_core.load_model(path)


def test_missing_and_unexpected_keys(tmp_path, tiny_state):
    state = dict(tiny_state)
    del state["generator.convs.3.conv.weight"]
    del state["generator.to_rgbs.0.upsample.kernel"]
    state["generator.extra.weight"] = torch.zeros(1)
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    with pytest.raises(gpen_core.CheckpointError) as info:
        gpen_core.load_model(path)
    message = str(info.value)
    assert "2 missing: generator.convs.3.conv.weight, generator.to_rgbs.0.upsample.kernel" in message
    assert "1 unexpected: generator.extra.weight" in message and str(path) in message


def test_shape_mismatch(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["generator.convs.2.conv.modulation.weight"] = torch.zeros(7, 64)
    path = tmp_path / "edited.safetensors"
    save_file(state, str(path))
    with pytest.raises(gpen_core.CheckpointError, match=r"1 wrong shape: generator\.convs\.2\.conv\.modulation"
                                                        r"\.weight \(7, 64\) \(expected \(128, 64\)\)"):
        gpen_core.load_model(path)


def test_read_state_dict_strips_fixture_prefix(tiny_checkpoint, tiny_state):
    state = read_state_dict(tiny_checkpoint)
    assert set(state) == set(tiny_state)
    assert gpen_core.inspect_checkpoint(tiny_checkpoint).size == 256


def test_non_finite_weights_are_refused(tmp_path, tiny_state):
    state = dict(tiny_state)
    state["generator.convs.1.conv.weight"] = torch.full_like(state["generator.convs.1.conv.weight"], float("nan"))
    path = tmp_path / "nan.safetensors"
    save_file(state, str(path))
    with pytest.raises(gpen_core.CheckpointError, match=r"NaN or infinite values in 1 tensors \(generator\.convs\.1"):
        gpen_core.load_model(path)


def _onnx_bytes() -> bytes:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, 8, 8])])
    return helper.make_model(graph, producer_name="pytorch").SerializeToString()


@pytest.mark.parametrize("content,what", [
    (b"this is not a checkpoint at all" * 100, "a text file starting 'this is not a checkpoint"),
    (bytes(range(7, 256)) * 40, "unrecognised binary data"),
    (b"[" + bytes(range(128, 256)) * 40, "unrecognised binary data"),  # random bytes that start like JSON
    (b"\n<!DOCTYPE html><html><body>502 Bad Gateway</body></html>", "an HTML page"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:abc\nsize 284\n", "a Git LFS pointer"),
    (b'{"detail": "Entry not found"}', "a JSON text"),
    (b"\xff\xd8\xff\xe0" + bytes(200), "a JPEG image"),
])
def test_junk_is_named_for_what_it_is_not_called_code(tmp_path, content, what):
    path = tmp_path / "GPEN-BFR-512.pth"
    path.write_bytes(content)
    with pytest.raises(gpen_core.CheckpointError) as info:
        gpen_core.load_model(path)
    message = str(info.value)
    assert f"{path} is not a model checkpoint: it is {what}" in message
    assert "pickled Python code" not in message and "tampered" not in message
    assert "python -m gpen_core download 512" in message


def test_onnx_file_saved_as_pth_is_called_onnx(tmp_path):
    path = tmp_path / "GPEN-BFR-512.pth"
    path.write_bytes(_onnx_bytes())
    with pytest.raises(gpen_core.CheckpointError, match="is an ONNX model, not a PyTorch or safetensors checkpoint"):
        read_state_dict(path)


def test_messages_keep_whole_sentences():
    from gpen_core.checkpoint import _short_reason

    long = "First sentence of a long library message. " * 12 + "Last one"
    reason = _short_reason("\n\n" + long + "\nsecond line")
    assert reason.endswith("message.") and len(reason) <= 300
    assert _short_reason("x" * 400) == "x" * 400  # no sentence end: kept whole, never cut mid-word


def test_truncated_zip_message_is_whole(tmp_path, tiny_state):
    path = tmp_path / "GPEN-BFR-256.pth"
    torch.save(tiny_state, path)
    path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(gpen_core.CheckpointError) as info:
        gpen_core.load_model(path)
    message = str(info.value)
    assert message.endswith("(or 256/1024/2048).") and "Delete it and download it again" in message


def test_symlink_loop_broken_link_and_folder_are_named(tmp_path):
    loop = tmp_path / "GPEN-BFR-512.pth"
    loop.symlink_to(loop)
    with pytest.raises(gpen_core.ModelNotFoundError, match="symbolic link that loops back on itself"):
        gpen_core.load_model(loop)
    broken = tmp_path / "GPEN-BFR-1024.pth"
    broken.symlink_to(tmp_path / "elsewhere.pth")
    with pytest.raises(gpen_core.ModelNotFoundError, match="broken symbolic link .*elsewhere.pth"):
        gpen_core.load_model(broken)
    folder = tmp_path / "x.pth"
    folder.mkdir()
    with pytest.raises(gpen_core.ModelNotFoundError, match=r"x.pth is a folder, not a file"):
        gpen_core.inspect_checkpoint(folder)


def test_unreadable_file_says_permission(tmp_path, tiny_checkpoint, monkeypatch):
    path = tmp_path / "GPEN-BFR-256.safetensors"
    path.write_bytes(tiny_checkpoint.read_bytes())
    real_open = Path.open

    def deny(self, *args, **kwargs):
        if self == path:
            raise PermissionError(13, "Permission denied", str(self))
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", deny)
    with pytest.raises(gpen_core.CheckpointError, match=r"cannot read .*: permission denied.*chmod a\+r"):
        gpen_core.load_model(path)


def _discriminator_state(size: int) -> dict[str, torch.Tensor]:
    """Key layout of the official GPEN/StyleGAN2 ``Discriminator`` (tiny tensors: only names matter)."""
    z = torch.zeros(1)
    state = {"convs.0.0.weight": torch.zeros(4, 3, 1, 1), "convs.0.1.bias": z}
    for i in range(1, size.bit_length() - 3 + 1):  # one residual block per halving down to 4 px
        for key in ("conv1.0.weight", "conv1.1.bias", "conv2.0.kernel", "conv2.1.weight", "conv2.2.bias",
                    "skip.0.kernel", "skip.1.weight"):
            state[f"convs.{i}.{key}"] = z
    for key in ("final_conv.0.weight", "final_conv.1.bias", "final_linear.0.weight", "final_linear.0.bias",
                "final_linear.1.weight", "final_linear.1.bias"):
        state[key] = z
    return state


@pytest.mark.parametrize("size", [256, 512])
def test_discriminator_is_named_with_the_generator_to_use(tmp_path, size):
    path = tmp_path / f"GPEN-BFR-{size}-D.pth"
    torch.save(_discriminator_state(size), path)
    with pytest.raises(gpen_core.CheckpointError) as info:
        gpen_core.load_model(path)
    message = str(info.value)
    assert "discriminator" in message and f"GPEN-BFR-{size}.pth (the name without -D)" in message


def test_modelscope_pt_loads_and_lists_its_real_size(tmp_path, tiny_state, tiny_input, reference):
    from gpen_core.model_paths import checkpoint_size

    path = tmp_path / "pytorch_model-2048.pt"  # ModelScope's names; the official keys, a plain torch.save
    torch.save(tiny_state, path)
    assert torch.equal(run(gpen_core.load_model(path, device="cpu"), tiny_input), reference)
    assert gpen_core.inspect_checkpoint(path).size == 256 and checkpoint_size(path) == 256


def test_inspect_reads_only_the_safetensors_header(tiny_checkpoint, monkeypatch):
    import safetensors.torch

    monkeypatch.setattr(safetensors.torch, "load_file", lambda *a, **k: pytest.fail("read every tensor"))
    assert gpen_core.inspect_checkpoint(tiny_checkpoint).size == 256
