"""The ComfyUI node pack (repo-root __init__.py + nodes/) against small stand-ins for ComfyUI's modules.

The pack is loaded the way ComfyUI loads a custom node (the repo root as a package, by file location), with
stand-ins for folder_paths, comfy.model_management, comfy.utils and comfy_api in sys.modules: V3 when
comfy_api.v0_0_2 is there, V1 when it is not. Inputs are real photos and the real tiny checkpoint.
"""
from __future__ import annotations

import asyncio
import importlib.util
import json
import logging
import shutil
import sys
import types
import uuid
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
TINY = DATA / "tiny-256.safetensors"


# ---------------------------------------------------------------------------------------------- stand-ins
def _folder_paths(models_dir: Path, existing: dict) -> types.ModuleType:
    """folder_paths: the registry and the four functions the pack uses, with ComfyUI's semantics."""
    fp = types.ModuleType("folder_paths")
    fp.models_dir = str(models_dir)
    fp.folder_names_and_paths = dict(existing)

    def add_model_folder_path(name, path, is_default=False):
        if name not in fp.folder_names_and_paths:
            fp.folder_names_and_paths[name] = ([path], set())
        elif path not in (paths := fp.folder_names_and_paths[name][0]):
            paths.insert(0 if is_default else len(paths), path)

    def get_filename_list(name):
        paths, extensions = fp.folder_names_and_paths[name]
        return sorted({str(f.relative_to(d)) for d in map(Path, paths) if d.is_dir() for f in d.rglob("*")
                       if f.is_file() and (not extensions or f.suffix in extensions)})

    def get_full_path(name, filename):
        for d in fp.folder_names_and_paths.get(name, ([], set()))[0]:
            if (Path(d) / filename).is_file():
                return str(Path(d) / filename)
        return None

    fp.add_model_folder_path = add_model_folder_path
    fp.get_filename_list = get_filename_list
    fp.get_full_path = get_full_path
    fp.get_folder_paths = lambda name: list(fp.folder_names_and_paths[name][0])
    fp.get_input_directory = lambda: str(models_dir.parent / "input")
    return fp


class InterruptProcessingException(Exception):
    pass


def _model_management() -> types.ModuleType:
    """comfy.model_management on the CPU, recording what the pack asks of it; ``interrupt_after`` arms a Cancel."""
    mm = types.ModuleType("comfy.model_management")
    mm.calls = []
    mm.interrupt_after = None
    mm.OOM_EXCEPTION = torch.OutOfMemoryError
    mm.InterruptProcessingException = InterruptProcessingException
    mm.get_torch_device = lambda: torch.device("cpu")
    mm.unet_offload_device = lambda: torch.device("cpu")
    mm.module_size = lambda module: sum(p.numel() * p.element_size() for p in module.parameters())
    mm.free_memory = lambda memory, device, keep_loaded=(): mm.calls.append(("free_memory", memory, device))
    mm.soft_empty_cache = lambda force=False: mm.calls.append(("soft_empty_cache",))

    def throw_exception_if_processing_interrupted():
        mm.calls.append(("check_interrupt",))
        checks = sum(call == ("check_interrupt",) for call in mm.calls)
        if mm.interrupt_after is not None and checks > mm.interrupt_after:
            raise InterruptProcessingException()

    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    return mm


def _comfy_utils() -> types.ModuleType:
    utils = types.ModuleType("comfy.utils")

    class ProgressBar:
        updates: list = []

        def __init__(self, total, node_id=None):
            self.total = total
            ProgressBar.updates = []

        def update_absolute(self, value, total=None, preview=None):
            self.total = self.total if total is None else total
            ProgressBar.updates.append((value, self.total))

    utils.ProgressBar = ProgressBar
    return utils


def _comfy_api_v3() -> tuple[types.ModuleType, types.ModuleType]:
    """comfy_api and comfy_api.v0_0_2 with the io names the pack uses; sockets keep their keyword arguments."""
    io = types.ModuleType("comfy_api.v0_0_2.io")

    def comfytype(io_type):
        class Socket:
            def __init__(self, id=None, **options):
                self.id, self.io_type, self.options = id, io_type, options
        return type(io_type, (), {"io_type": io_type, "Input": Socket, "Output": Socket})

    for name, io_type in [("Image", "IMAGE"), ("Mask", "MASK"), ("Int", "INT"), ("Float", "FLOAT"),
                          ("Boolean", "BOOLEAN"), ("String", "STRING"), ("Combo", "COMBO")]:
        setattr(io, name, comfytype(io_type))
    io.Custom = comfytype
    io.ComfyNode = type("ComfyNode", (), {})
    io.Schema = type("Schema", (), {"__init__": lambda self, **kw: self.__dict__.update(kw)})
    io.NodeOutput = type("NodeOutput", (), {"__init__": lambda self, *args: setattr(self, "args", args)})
    v3 = types.ModuleType("comfy_api.v0_0_2")
    v3.io = io
    v3.ComfyExtension = type("ComfyExtension", (), {})
    return types.ModuleType("comfy_api"), v3


# ---------------------------------------------------------------------------------------------- loading the pack
class Host:
    """A loaded pack and the stand-ins it runs against."""

    def __init__(self, pack, folder_paths, mm, utils):
        self.pack, self.folder_paths, self.mm, self.utils = pack, folder_paths, mm, utils

    def nodes(self) -> dict:
        """node id -> node class, through whichever registration the pack chose."""
        if hasattr(self.pack, "comfy_entrypoint"):
            extension = asyncio.run(self.pack.comfy_entrypoint())
            return {cls.define_schema().node_id: cls for cls in asyncio.run(extension.get_node_list())}
        return self.pack.NODE_CLASS_MAPPINGS

    def run(self, node_id: str, **inputs) -> tuple:
        """Execute a node the way ComfyUI does for its schema; returns the outputs tuple."""
        cls = self.nodes()[node_id]
        if hasattr(self.pack, "comfy_entrypoint"):
            return cls.execute(**inputs).args
        return getattr(cls(), cls.FUNCTION)(**inputs)


def _load_pack(models_dir: Path, api: str, existing_folders: dict) -> Host:
    """Import the pack under a fresh name with the stand-ins in sys.modules (only while it imports: the pack
    binds the modules then, as it would inside ComfyUI). api: "v3"; "none" (ComfyUI before comfy_api); "no io"
    (ComfyUI 0.3.47: comfy_api.v0_0_2 without the V3 node schema)."""
    folder_paths = _folder_paths(models_dir, existing_folders)
    Path(folder_paths.get_input_directory()).mkdir(parents=True, exist_ok=True)
    mm, utils = _model_management(), _comfy_utils()
    comfy = types.ModuleType("comfy")
    comfy.model_management, comfy.utils = mm, utils
    api_root, api_v3 = _comfy_api_v3() if api != "none" else (None, None)  # None in sys.modules: ImportError
    if api == "no io":
        del api_v3.io
    name = f"comfyui_gpen_test_{uuid.uuid4().hex}"
    with pytest.MonkeyPatch.context() as patch:
        for module_name, module in [("folder_paths", folder_paths), ("comfy", comfy), ("comfy.model_management", mm),
                                    ("comfy.utils", utils), ("comfy_api", api_root), ("comfy_api.v0_0_2", api_v3)]:
            patch.setitem(sys.modules, module_name, module)
        spec = importlib.util.spec_from_file_location(name, ROOT / "__init__.py")
        pack = importlib.util.module_from_spec(spec)
        sys.modules[name] = pack
        spec.loader.exec_module(pack)
    return Host(pack, folder_paths, mm, utils)


def _unload(host: Host) -> None:
    name = host.pack.__name__
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


@pytest.fixture
def make_host(tmp_path):
    """make_host(api="v3", existing_folders={}) -> Host with models_dir tmp_path/models; unloaded afterwards."""
    hosts = []

    def make(api: str = "v3", existing_folders: dict | None = None) -> Host:
        hosts.append(_load_pack(tmp_path / "models", api, existing_folders or {}))
        return hosts[-1]

    yield make
    for host in hosts:
        _unload(host)


@pytest.fixture(scope="module")
def v3_host(tmp_path_factory):
    """One V3 host for the module, the tiny checkpoint in models/facerestore_models."""
    models = tmp_path_factory.mktemp("comfy") / "models"
    (models / "facerestore_models").mkdir(parents=True)
    shutil.copy(TINY, models / "facerestore_models" / TINY.name)
    host = _load_pack(models, "v3", {})
    yield host
    _unload(host)


@pytest.fixture
def host(v3_host) -> Host:
    """The module's V3 host with its records cleared."""
    v3_host.mm.calls.clear()
    v3_host.mm.interrupt_after = None
    return v3_host


@pytest.fixture(scope="module")
def model(v3_host):
    """The tiny checkpoint through the V3 loader node (fp32, CPU)."""
    return v3_host.run("GPENModelLoader", model_name=TINY.name, dtype="auto")[0]


def _rgb(path: Path) -> np.ndarray:
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, list[int]]:
    """IMAGE (3,256,256,3): a blank grey image, the astronaut (one face), a Solvay 1927 crop (four faces)."""
    blank = np.full((256, 256, 3), 128, np.uint8)
    astronaut = cv2.resize(_rgb(DATA / "astronaut.jpg"), (256, 256), interpolation=cv2.INTER_AREA)
    solvay = _rgb(DATA / "solvay_conference_1927.png")[120:376, 40:296]
    images = np.stack([blank, astronaut, solvay]).astype(np.float32) / 255.0
    return torch.from_numpy(images), [0, 1, 4]


RESTORE_DEFAULTS = dict(detector="mtcnn", face_selection="all", min_face_size=0, alpha=1.0, mask="rectangle",
                        color_correction=False, temporal_smoothing=False)


# ---------------------------------------------------------------------------------------------- schema
def test_v3_registers_only_the_entrypoint_with_tooltips_everywhere(host):
    assert hasattr(host.pack, "comfy_entrypoint") and not hasattr(host.pack, "NODE_CLASS_MAPPINGS")
    nodes = host.nodes()
    assert set(nodes) == {"GPENModelLoader", "GPENRestoreFaces", "GPENAlignedFaces"}
    loader, restore = (nodes[n].define_schema() for n in ("GPENModelLoader", "GPENRestoreFaces"))
    assert loader.display_name == "Load GPEN Model" and restore.display_name == "GPEN Restore Faces"
    assert loader.category == restore.category == "image/restoration"
    assert [(s.id, s.io_type) for s in loader.inputs] == [("model_name", "COMBO"), ("dtype", "COMBO")]
    assert loader.inputs[0].options["options"] == [TINY.name]
    assert [s.io_type for s in loader.outputs] == ["GPEN_MODEL"]
    assert [(s.id, s.io_type) for s in restore.inputs] == [
        ("image", "IMAGE"), ("gpen_model", "GPEN_MODEL"), ("detector", "COMBO"), ("face_selection", "COMBO"),
        ("min_face_size", "INT"), ("alpha", "FLOAT"), ("mask", "COMBO"), ("color_correction", "BOOLEAN"),
        ("temporal_smoothing", "BOOLEAN"), ("upscale_model", "UPSCALE_MODEL")]
    assert [s.options.get("optional", False) for s in restore.inputs] == [False] * 9 + [True]
    assert [s.io_type for s in restore.outputs] == ["IMAGE", "IMAGE", "MASK", "INT", "STRING"]
    # ComfyUI's V3 Schema.validate: ids unique across inputs and outputs.
    ids = [s.id for s in restore.inputs] + [s.id for s in restore.outputs]
    assert len(ids) == len(set(ids))
    for socket in [*loader.inputs, *loader.outputs, *restore.inputs, *restore.outputs]:
        assert len(socket.options["tooltip"]) > 20, socket.id
    assert "black" in restore.outputs[1].options["tooltip"]


@pytest.mark.parametrize("api", ["none", "no io"])
def test_v1_fallback_without_comfy_api_v3(make_host, api):
    host = make_host(api)
    assert hasattr(host.pack, "NODE_CLASS_MAPPINGS") and not hasattr(host.pack, "comfy_entrypoint")
    v1 = host.pack.NODE_CLASS_MAPPINGS
    assert host.pack.NODE_DISPLAY_NAME_MAPPINGS == {"GPENModelLoader": "Load GPEN Model",
                                                    "GPENRestoreFaces": "GPEN Restore Faces",
                                                    "GPENAlignedFaces": "GPEN Aligned Faces"}
    aligned = v1["GPENAlignedFaces"].INPUT_TYPES()
    assert list(aligned["required"]) == ["image", "gpen_model", "task"] and list(aligned["optional"]) == ["mask"]
    inputs = v1["GPENRestoreFaces"].INPUT_TYPES()["required"]
    assert list(inputs) == ["image", "gpen_model", "detector", "face_selection", "min_face_size", "alpha", "mask",
                            "color_correction", "temporal_smoothing"]
    assert inputs["detector"][0] == ["auto", "retinaface", "mtcnn"]
    assert all(len(options["tooltip"]) > 20 for _, options in inputs.values())
    optional = v1["GPENRestoreFaces"].INPUT_TYPES()["optional"]
    assert list(optional) == ["upscale_model"] and optional["upscale_model"][0] == "UPSCALE_MODEL"
    assert "optional" not in optional["upscale_model"][1] and "optional" not in v1["GPENModelLoader"].INPUT_TYPES()
    assert v1["GPENRestoreFaces"].RETURN_TYPES == ("IMAGE", "IMAGE", "MASK", "INT", "STRING")
    assert len(v1["GPENRestoreFaces"].OUTPUT_TOOLTIPS) == 5
    assert v1["GPENModelLoader"].RETURN_TYPES == ("GPEN_MODEL",)
    assert v1["GPENModelLoader"].CATEGORY == "image/restoration"


# ---------------------------------------------------------------------------------------------- folders and loading
def test_folder_registration_extends_existing_entries(make_host, tmp_path):
    extra = tmp_path / "extra_models"  # as set by extra_model_paths.yaml before custom nodes load
    extra.mkdir()
    shutil.copy(TINY, extra / "GPEN-tiny.safetensors")
    (extra / "codeformer.onnx").write_bytes(b"not a GPEN model")
    detection = tmp_path / "shared_detection"
    host = make_host(existing_folders={"facerestore_models": ([str(extra)], {".onnx"}),
                                       "facedetection": ([str(detection)], set())})
    registry = host.folder_paths.folder_names_and_paths
    models = tmp_path / "models"
    assert registry["facerestore_models"][0] == [str(extra), str(models / "facerestore_models")]
    assert registry["facerestore_models"][1] == {".onnx", ".pth", ".pt", ".safetensors"}
    assert registry["gpen"] == ([str(models / "gpen")], {".onnx", ".pth", ".pt", ".safetensors"})
    loader = host.nodes()["GPENModelLoader"]
    # .onnx files are listed when they are GPEN's (ReActor's GPEN-BFR-*.onnx); a CodeFormer one is not offered.
    assert loader.define_schema().inputs[0].options["options"] == ["GPEN-tiny.safetensors"]
    paths = sys.modules[host.pack.__name__ + ".nodes.paths"]
    assert paths.face_weight_dirs() == [str(detection), str(models / "facedetection"), str(models / "facexlib")]


def test_empty_extension_set_stays_any_file(make_host, tmp_path):
    host = make_host(existing_folders={"facerestore_models": ([str(tmp_path / "x")], set())})
    assert host.folder_paths.folder_names_and_paths["facerestore_models"][1] == set()


def test_model_is_reused_for_same_file_and_dtype(host, model):
    assert model.size == 256 and model.dtype == torch.float32 and model.device.type == "cpu"
    assert host.run("GPENModelLoader", model_name=TINY.name, dtype="fp32")[0] is model  # auto = fp32
    (half,) = host.run("GPENModelLoader", model_name=TINY.name, dtype="bf16")
    assert half is not model and half.dtype == torch.bfloat16
    assert host.run("GPENModelLoader", model_name=TINY.name, dtype="bf16")[0] is half


def test_missing_model_names_the_folders(host):
    with pytest.raises(FileNotFoundError, match="facerestore_models") as info:
        host.run("GPENModelLoader", model_name="GPEN-BFR-512.pth", dtype="auto")
    # and a download command that works from any folder, into the folder the loader searches
    models = Path(host.folder_paths.models_dir)
    assert f'cd "{ROOT}" && "{sys.executable}" -m gpen_core download 512 --dir "{models / "facerestore_models"}"' \
        in str(info.value)


def test_loader_lists_gpen_files_only_and_explains_a_damaged_one(make_host, tmp_path):
    """The shared facerestore_models folder holds GFPGAN, CodeFormer, empty and junk files too: only GPEN files are
    offered (by name or by their tensor names); a damaged GPEN-named one is offered and its error says how to get a
    good file, with a command that works in ComfyUI."""
    folder = tmp_path / "models" / "facerestore_models"
    folder.mkdir(parents=True)
    state = {k.removeprefix("state_dict."): v for k, v in load_file(TINY).items() if k.startswith("state_dict.")}
    torch.save(state, folder / "pytorch_model.pt")  # ModelScope's name for GPEN-BFR-1024
    torch.save({"params_ema": {"conv_body_first.weight": torch.zeros(1)}}, folder / "GFPGANv1.4.pth")
    torch.save({"params_ema": {"quantize.embedding.weight": torch.zeros(1)}}, folder / "codeformer.pth")
    (folder / "empty.pth").write_bytes(b"")
    (folder / "junk.pth").write_bytes(bytes(range(256)) * 16)
    (folder / "GPEN-BFR-1024.pth").write_bytes(bytes(range(256)) * 16)
    host = make_host()
    loader = host.nodes()["GPENModelLoader"]
    assert loader.define_schema().inputs[0].options["options"] == ["GPEN-BFR-1024.pth", "pytorch_model.pt"]
    assert host.run("GPENModelLoader", model_name="pytorch_model.pt", dtype="auto")[0].size == 256
    errors = sys.modules[host.pack.__name__ + ".gpen_core.errors"]  # the pack's own copy of gpen_core
    with pytest.raises(errors.CheckpointError) as info:
        host.run("GPENModelLoader", model_name="GPEN-BFR-1024.pth", dtype="auto")
    message = str(info.value)
    assert "is not a model checkpoint" in message and "`python -m gpen_core download 512`" not in message
    assert f'cd "{ROOT}" && "{sys.executable}" -m gpen_core download 512 --dir "{folder}"' in message


def test_tooltips_name_the_folders_searched_for_face_weights(host):
    inputs = host.nodes()["GPENRestoreFaces"].define_schema().inputs
    tips = {s.id: s.options["tooltip"] for s in inputs}
    paths = sys.modules[host.pack.__name__ + ".nodes.paths"]
    searched = ["models/" + Path(d).name for d in paths.face_weight_dirs()]
    assert searched == ["models/facedetection", "models/facexlib"]
    for name, weights in (("detector", "detection_Resnet50_Final.pth"), ("mask", "parsing_parsenet.pth")):
        assert weights in tips[name] and all(folder in tips[name] for folder in searched), name


# ---------------------------------------------------------------------------------------------- restoring
def _spy_moves(model, monkeypatch) -> list:
    """Record every device the model is moved to (still moving it)."""
    moves, move = [], model.to
    monkeypatch.setattr(model, "to", lambda device: (moves.append(torch.device(device)), move(device))[1])
    return moves


@pytest.mark.parametrize("v3", [True, False])
def test_batch_with_zero_one_and_four_faces(make_host, host, model, batch, monkeypatch, v3):
    host = host if v3 else make_host("none")
    images, n_faces = batch
    moves = _spy_moves(model, monkeypatch)
    restored, faces, mask, count, info = host.run("GPENRestoreFaces", image=images, gpen_model=model,
                                                  **RESTORE_DEFAULTS)

    assert count == sum(n_faces) and info.splitlines()[2].startswith(
        "image 3 of 3 (batch index 2): 4 faces restored of 4 found -> restored_faces 1-4, ")
    assert restored.shape == images.shape and restored.dtype == torch.float32
    assert faces.shape == (sum(n_faces), 256, 256, 3) and faces.dtype == torch.float32
    assert mask.shape == images.shape[:3] and mask.dtype == torch.float32
    assert 0 <= float(restored.min()) and float(restored.max()) <= 1 and float(faces.max()) <= 1
    assert float(mask[0].max()) == 0 and torch.equal(restored[0], images[0])  # no face: untouched, bit-exact
    for i in (1, 2):
        assert float(mask[i].max()) > 0.9
        changed = (restored[i] - images[i]).abs().amax(dim=-1) > 2 / 255
        assert bool(changed[mask[i] > 0.5].any()) and not bool(changed[mask[i] == 0].any())
    # memory: freed before, run on the compute device, back to the offload device after
    net_bytes = sum(p.numel() * p.element_size() for p in model.net.parameters())
    assert host.mm.calls[0][:2] == ("free_memory", net_bytes + 256 * 256 * 3072)  # weights + fp32 work memory
    assert moves[-1] == torch.device("cpu") and len(moves) == 2
    # progress over the faces of the whole batch, ending complete
    updates = host.utils.ProgressBar.updates
    assert updates[-1] == (5, 5) and [v for v, _ in updates] == sorted(v for v, _ in updates)


def test_no_face_anywhere_gives_one_black_crop(host, model, batch):
    images, _ = batch
    restored, faces, mask, count, info = host.run("GPENRestoreFaces", image=images[:1], gpen_model=model,
                                                  **RESTORE_DEFAULTS)
    assert faces.shape == (1, 256, 256, 3) and float(faces.abs().max()) == 0
    assert count == 0 and info.startswith("image 1 of 1 (batch index 0): 0 faces restored of 0 found, ")
    assert torch.equal(restored, images[:1]) and float(mask.max()) == 0


def test_face_selection_and_min_size_are_passed_on(host, model, batch):
    images, _ = batch
    options = dict(RESTORE_DEFAULTS, face_selection="largest")
    assert host.run("GPENRestoreFaces", image=images[2:], gpen_model=model, **options)[1].shape[0] == 1
    options = dict(RESTORE_DEFAULTS, min_face_size=40)  # the Solvay faces are 35-50 px boxes
    assert 0 < host.run("GPENRestoreFaces", image=images[2:], gpen_model=model, **options)[1].shape[0] < 4


def test_temporal_smoothing_treats_the_batch_as_video_frames(host, model, batch):
    images, _ = batch
    frames = images[1:2].repeat(3, 1, 1, 1)  # the astronaut, three times: one face, one track
    frames[1, 25:95, 85:140] = 0.5  # the face hidden in the middle frame: the track bridges the gap
    options = dict(RESTORE_DEFAULTS, temporal_smoothing=True)
    restored, faces, mask, _, _ = host.run("GPENRestoreFaces", image=frames, gpen_model=model, **options)
    assert restored.shape == frames.shape and faces.shape == (3, 256, 256, 3) and mask.shape == frames.shape[:3]
    assert all(float(mask[i].max()) > 0.9 for i in range(3))
    assert torch.allclose(restored[0], restored[2], atol=1e-6)  # same face, same landmarks: same result
    assert host.utils.ProgressBar.updates[-1] == (3, 3)


def test_out_of_memory_retries_with_smaller_face_batches(host, model, batch, monkeypatch):
    images, _ = batch
    reference = host.run("GPENRestoreFaces", image=images[2:], gpen_model=model, **RESTORE_DEFAULTS)
    sizes, restore_crops = [], model.restore_crops

    def small_memory(crops):  # full on the first two calls, as if another process held the GPU meanwhile
        sizes.append(len(crops))
        if len(sizes) <= 2:
            raise torch.OutOfMemoryError("CUDA out of memory (stand-in)")
        return restore_crops(crops)

    monkeypatch.setattr(model, "restore_crops", small_memory)
    releases = []
    pack_core = sys.modules[host.pack.__name__ + ".gpen_core"]
    monkeypatch.setattr(pack_core, "release_face_models", lambda: releases.append(1))
    result = host.run("GPENRestoreFaces", image=images[2:], gpen_model=model, **RESTORE_DEFAULTS)
    assert sizes == [1, 1, 1, 1, 1, 1]  # one face per network call; the face batch halves 4 -> 2 -> 1
    assert host.mm.calls.count(("soft_empty_cache",)) == 2 and len(releases) == 2  # cached face nets dropped too
    for got, want in zip(result[:3], reference[:3]):
        assert torch.allclose(got, want, atol=1e-6)
    assert result[3] == reference[3] == 4


def test_interruption_between_faces_stops_and_offloads(host, model, batch, monkeypatch):
    images, _ = batch
    moves = _spy_moves(model, monkeypatch)
    restored_batches = []
    restore_crops = model.restore_crops
    monkeypatch.setattr(model, "restore_crops",
                        lambda crops: (restored_batches.append(len(crops)), restore_crops(crops))[1])
    host.mm.interrupt_after = 5  # image 1, its face, image 2, its first two faces; then Cancel
    with pytest.raises(InterruptProcessingException):
        host.run("GPENRestoreFaces", image=images[1:].repeat(2, 1, 1, 1)[:3], gpen_model=model,
                 **dict(RESTORE_DEFAULTS, face_selection="all"))
    assert restored_batches == [1, 1, 1]  # astronaut, then two of the Solvay crop's four faces
    assert moves[-1] == torch.device("cpu")
    # the bar moved with every face: 1 of the astronaut, then 2 and 3 (its total grown by the Solvay faces)
    assert [value for value, _ in host.utils.ProgressBar.updates] == [1, 1, 2, 3]


@pytest.mark.parametrize("v3", [True, False])
def test_upscale_model_input_restores_at_the_upscaled_size(make_host, host, model, batch, monkeypatch, v3):
    """ComfyUI's UPSCALE_MODEL (a spandrel descriptor, as its Load Upscale Model node gives) upscales first."""
    from spandrel import ModelLoader

    from gpen_core.upscale import realesrnet_state_dict

    host = host if v3 else make_host("none")
    images, _ = batch
    upscaler = ModelLoader().load_from_state_dict(realesrnet_state_dict(2, 1)["params_ema"]).eval()
    moves = _spy_moves(upscaler, monkeypatch)
    restored, faces, mask, _, _ = host.run("GPENRestoreFaces", image=images[:2], gpen_model=model, upscale_model=upscaler,
                                     **RESTORE_DEFAULTS)
    assert restored.shape == (2, 512, 512, 3) and mask.shape == (2, 512, 512) and faces.shape == (1, 256, 256, 3)
    assert float(mask[0].max()) == 0 and float(mask[1].max()) > 0.9
    assert moves == [torch.device("cpu")] * 2  # to the compute device, back to the offload device
    assert host.mm.calls[0][1] > sum(p.numel() * p.element_size() for p in upscaler.model.parameters())
    updates = host.utils.ProgressBar.updates
    assert updates[0] == (1, 1) and updates[-1] == (1, 1)  # the first image's one tile ... the last face


# ---------------------------------------------------------------------------------------------- example workflow
def test_example_workflow_matches_the_nodes(host):
    """Every widget value of our nodes in the example workflow is a valid value of that input, in order."""
    workflow = json.loads((ROOT / "example_workflows" / "gpen_restore_faces.json").read_text())
    nodes = {node["type"]: node for node in workflow["nodes"]}
    assert {"LoadImage", "GPENModelLoader", "GPENRestoreFaces", "SaveImage"} <= set(nodes)
    for node_id, cls in host.nodes().items():
        if node_id not in nodes:  # GPENAlignedFaces is not part of this photo workflow
            continue
        inputs = cls.define_schema().inputs
        widgets = [s for s in inputs if s.io_type in ("COMBO", "INT", "FLOAT", "BOOLEAN")]
        values = nodes[node_id]["widgets_values"]
        assert len(values) == len(widgets)
        for socket, value in zip(widgets, values):
            if socket.id != "model_name":
                options = socket.options
                assert value in options.get("options", [value]) and options.get("min", value) <= value
        links = [s.id for s in inputs if s not in widgets]
        assert [i["name"] for i in nodes[node_id]["inputs"]] == links
    by_id = {node["id"]: node for node in workflow["nodes"]}
    for _, source, slot, target, _, kind in workflow["links"]:
        assert by_id[source]["outputs"][slot]["type"] == kind


# ---------------------------------------------------------------------------------------------- aligned faces
def test_aligned_faces_node_schema_and_restore(host, model, batch):
    schema = host.nodes()["GPENAlignedFaces"].define_schema()
    assert [(s.id, s.io_type, s.options.get("optional", False)) for s in schema.inputs] == [
        ("image", "IMAGE", False), ("gpen_model", "GPEN_MODEL", False), ("task", "COMBO", False),
        ("mask", "MASK", True)]
    assert schema.inputs[2].options["options"] == ["auto", "restore", "colorize", "inpaint", "seg2face"]
    assert all(len(s.options["tooltip"]) > 20 for s in [*schema.inputs, *schema.outputs])
    images = batch[0][1:]
    faces, = host.run("GPENAlignedFaces", image=images, gpen_model=model, task="auto")
    assert faces.shape == images.shape and faces.dtype == torch.float32
    crops = [np.rint(i.numpy() * 255).astype(np.uint8) for i in images]
    expected = np.stack(gpen_core_module(host).process_aligned(crops, model)) / 255.0
    np.testing.assert_allclose(faces.numpy(), expected, atol=1e-6)
    assert ("free_memory",) == host.mm.calls[0][:1]


def test_aligned_faces_node_inpaints_with_a_mask_and_refuses_it_otherwise(host, model, batch):
    import copy

    inpainting = copy.copy(model)
    inpainting.path = Path("GPEN-Inpainting-1024.pth")
    images = batch[0][1:2]
    mask = torch.zeros(1, 256, 256)
    mask[:, 100:160, 60:200] = 1.0
    painted = images.clone()
    painted[:, 100:160, 60:200] = 1.0
    with_mask, = host.run("GPENAlignedFaces", image=images, gpen_model=inpainting, task="auto", mask=mask)
    white, = host.run("GPENAlignedFaces", image=painted, gpen_model=inpainting, task="inpaint")
    torch.testing.assert_close(with_mask, white)
    errors = gpen_core_module(host).errors
    with pytest.raises(errors.ImageError, match="only used for inpainting"):
        host.run("GPENAlignedFaces", image=images, gpen_model=model, task="restore", mask=mask)
    with pytest.raises(errors.TaskError, match="cannot colorize"):
        host.run("GPENAlignedFaces", image=images, gpen_model=inpainting, task="colorize")


def gpen_core_module(host: Host):
    """The pack's own gpen_core package (imported under the pack's test name)."""
    return sys.modules[host.pack.__name__ + ".gpen_core"]


def _skip_network(model, monkeypatch) -> None:
    """Detection is what these tests check: the network returns its input (faces are still aligned and pasted)."""
    monkeypatch.setattr(model, "restore_crops", lambda crops: crops.copy())


def test_example_workflow_finds_faces_in_the_photo_it_loads(make_host, model, caplog, monkeypatch):
    """The pack puts the sample photo in ComfyUI's input folder under the name the workflow's LoadImage uses (never
    replacing a file of that name), and the workflow's settings restore faces in it."""
    workflow = json.loads((ROOT / "example_workflows" / "gpen_restore_faces.json").read_text())
    nodes = {node["type"]: node for node in workflow["nodes"]}
    host = make_host()
    photo = Path(host.folder_paths.get_input_directory()) / nodes["LoadImage"]["widgets_values"][0]
    assert photo.read_bytes() == (ROOT / "gpen_core" / "samples" / "solvay_1927_crop.jpg").read_bytes()
    photo.write_bytes(b"the user's own file")
    make_host()
    assert photo.read_bytes() == b"the user's own file"

    image = torch.from_numpy(_rgb(ROOT / "gpen_core" / "samples" / "solvay_1927_crop.jpg")[None] / 255.0).float()
    widgets = nodes["GPENRestoreFaces"]["widgets_values"]
    names = list(host.nodes()["GPENRestoreFaces"].INPUT_TYPES()["required"]) if hasattr(
        host.pack, "NODE_CLASS_MAPPINGS") else [s.id for s in host.nodes()["GPENRestoreFaces"].define_schema().inputs]
    options = dict(zip(names[2:], widgets))
    _skip_network(model, monkeypatch)
    with caplog.at_level(logging.INFO):
        count = host.run("GPENRestoreFaces", image=image, gpen_model=model, **options)[3]
    assert count >= 10
    assert f"image 1 of 1 (batch index 0): {count} faces restored" in caplog.text  # a console line per image


def test_defaults_find_all_29_solvay_faces(host, model, monkeypatch):
    """The node's own default settings find every face of the Solvay 1927 photo (the README's showcase)."""
    defaults = {s.id: s.options["default"] for s in host.nodes()["GPENRestoreFaces"].define_schema().inputs
                if "default" in s.options}
    image = torch.from_numpy(_rgb(DATA / "solvay_conference_1927.png")[None] / 255.0).float()
    _skip_network(model, monkeypatch)
    count, info = host.run("GPENRestoreFaces", image=image, gpen_model=model, **defaults)[3:]
    assert count == 29, info


def test_fp16_on_the_cpu_is_said_in_the_tooltip_and_the_console(host, batch, caplog):
    tip = host.nodes()["GPENModelLoader"].define_schema().inputs[1].options["tooltip"]
    assert "CPU fp16 is 10-12x slower, so it computes in fp32" in tip
    (half,) = host.run("GPENModelLoader", model_name=TINY.name, dtype="fp16")
    with caplog.at_level(logging.INFO):
        host.run("GPENRestoreFaces", image=batch[0][:1], gpen_model=half, **RESTORE_DEFAULTS)
    assert "the model is torch.float16, 10-12x slower than fp32 on cpu, so it computes in torch.float32" in caplog.text
