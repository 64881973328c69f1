"""Discovery of facexlib weights and GPEN checkpoints in host folders; nothing is opened or downloaded."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gpen_core.errors import ModelNotFoundError
from gpen_core.model_paths import (
    checkpoint_size,
    default_model_dirs,
    facexlib_weight_dirs,
    find_facexlib_weights,
    find_gpen_models,
    largest_checkpoint,
    list_checkpoints,
)


@pytest.fixture
def clean(clean_env):
    return clean_env


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


def test_nothing_found_in_an_empty_world(clean):
    assert find_facexlib_weights("detection", search_dirs=[clean / "missing"]) is None
    assert find_facexlib_weights("parsing") is None
    assert find_gpen_models() == []


def test_host_folders_and_name_preference(clean):
    comfy = clean / "ComfyUI" / "models"
    mobile = touch(comfy / "facedetection" / "detection_mobilenet0.25_Final.pth")
    parsing = touch(comfy / "facexlib" / "parsing_bisenet.pth")
    a1111 = clean / "webui" / "models" / "GFPGAN"
    resnet = touch(a1111 / "detection_Resnet50_Final.pth")
    dirs = [comfy / "facedetection", comfy / "facexlib", a1111]

    assert find_facexlib_weights("detection", search_dirs=dirs) == mobile  # folder order first
    assert find_facexlib_weights("detection", search_dirs=dirs[::-1]) == resnet
    assert find_facexlib_weights("parsing", search_dirs=dirs) == parsing
    touch(comfy / "facedetection" / "detection_Resnet50_Final.pth")  # same folder: ResNet-50 wins
    assert find_facexlib_weights("detection", search_dirs=dirs).name == "detection_Resnet50_Final.pth"
    parsenet = touch(comfy / "facexlib" / "parsing_parsenet.pth")
    assert find_facexlib_weights("parsing", search_dirs=dirs) == parsenet


def test_gpen_weights_folder_layout(clean):
    gpen = touch(clean / "weights" / "RetinaFace-R50.pth")  # GPEN's own repository, run from its root
    assert find_facexlib_weights("detection") == gpen.absolute()


def test_explicit_and_environment(clean, monkeypatch):
    host = touch(clean / "host" / "detection_Resnet50_Final.pth")
    mine = touch(clean / "mine" / "retina.pth")
    assert find_facexlib_weights("detection", search_dirs=[host.parent], explicit=mine) == mine
    assert find_facexlib_weights("detection", explicit=host.parent) == host
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        find_facexlib_weights("detection", explicit=clean / "typo.pth")
    with pytest.raises(ModelNotFoundError, match="has none of"):
        find_facexlib_weights("detection", explicit=clean / "mine")

    monkeypatch.setenv("GPEN_DETECTION_WEIGHTS", str(mine))
    assert find_facexlib_weights("detection", search_dirs=[host.parent]) == mine
    assert find_facexlib_weights("parsing") is None  # per-kind variable
    monkeypatch.delenv("GPEN_DETECTION_WEIGHTS")

    shared = touch(clean / "shared" / "parsing_parsenet.pth")
    monkeypatch.setenv("GPEN_FACEXLIB_DIR", str(shared.parent))
    assert find_facexlib_weights("parsing") == shared
    with pytest.raises(ValueError):
        find_facexlib_weights("landmarks")


def test_facexlib_package_folder_found_without_importing_facexlib():
    code = (
        "import sys; from gpen_core.model_paths import _facexlib_package_weights as f; "
        "print(f()[0]); assert 'facexlib' not in sys.modules"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=Path(__file__).parents[1], check=True)
    import facexlib

    assert Path(out.stdout.strip()) == Path(facexlib.__file__).parent / "weights"


def test_gpen_checkpoints_listed_not_loaded(clean, monkeypatch):
    host = clean / "ComfyUI" / "models" / "facerestore_models"
    for name in ("GPEN-BFR-512.pth", "codeformer.pth", "GFPGANv1.4.pth", "gpen-bfr-256.safetensors", "GPEN.txt"):
        touch(host / name)
    (host / "GPEN-BFR-1024.pth").mkdir()  # a folder with a checkpoint's name is not a checkpoint
    assert [p.name for p in find_gpen_models([host])] == ["GPEN-BFR-512.pth", "gpen-bfr-256.safetensors"]

    env_dir = touch(clean / "envmodels" / "GPEN-BFR-2048.pth").parent
    monkeypatch.setenv("GPEN_MODELS_DIR", str(env_dir))
    cached = touch(clean / "cache" / "gpen_core" / "GPEN-BFR-512.pth")
    local = touch(clean / "models" / "GPEN" / "GPEN-Colorization-1024.pth")
    dirs = default_model_dirs()
    assert dirs[0] == env_dir and dirs[1] == local.parent and cached.parent in dirs
    assert find_gpen_models() == [env_dir / "GPEN-BFR-2048.pth", local, cached]
    assert all(d in facexlib_weight_dirs() for d in dirs)


TINY = Path(__file__).parent / "data" / "tiny-256.safetensors"


def test_list_checkpoints_any_name_recursive_sorted(tmp_path):
    for name in ("b.pth", "A.safetensors", "sub/GPEN-BFR-1024.pt", "notes.txt", "sub/x.ckpt"):
        touch(tmp_path / name)
    assert [p.relative_to(tmp_path).as_posix() for p in list_checkpoints(tmp_path)] == [
        "A.safetensors", "b.pth", "sub/GPEN-BFR-1024.pt"]
    assert list_checkpoints(tmp_path / "missing") == []


def test_checkpoint_size_from_shapes_not_name_cached_per_mtime(tmp_path, monkeypatch):
    import gpen_core.checkpoint

    assert checkpoint_size(touch(tmp_path / "GPEN-BFR-2048.pth")) is None  # a name alone says nothing
    modelscope = tmp_path / "pytorch_model-2048.pt"  # a ModelScope name, here holding a 256 network
    modelscope.write_bytes(TINY.read_bytes())
    reads = []
    real = gpen_core.checkpoint.inspect_checkpoint
    monkeypatch.setattr(gpen_core.checkpoint, "inspect_checkpoint", lambda p: reads.append(p) or real(p))
    assert checkpoint_size(modelscope) == checkpoint_size(str(modelscope)) == 256
    assert len(reads) == 1
    modelscope.write_bytes(b"replaced by something unreadable")
    os.utime(modelscope, ns=(1, 1))  # a new modification time: read again
    assert checkpoint_size(modelscope) is None and len(reads) == 2
    assert checkpoint_size(tmp_path / "gone.pth") is None


def test_largest_checkpoint_prefers_size_then_name(tmp_path):
    paths = [touch(tmp_path / n) for n in ("GPEN-BFR-512.pth", "GPEN-BFR-2048.pth", "junk.pth")]
    tiny = tmp_path / "zz-face.safetensors"
    tiny.write_bytes(TINY.read_bytes())
    assert largest_checkpoint(paths + [tiny]) == tiny  # 256 read from the file beats empty files named 2048
    twin = tmp_path / "zz-twin.safetensors"
    twin.write_bytes(TINY.read_bytes())
    assert largest_checkpoint([tiny, twin]) == twin  # equal sizes: the later name
    assert largest_checkpoint([]) is None


def test_modelscope_file_is_found_by_its_tensor_names(clean):
    folder = clean / "models" / "GPEN"
    folder.mkdir(parents=True)
    (folder / "pytorch_model.pt").write_bytes(TINY.read_bytes())  # ModelScope's name, GPEN's tensors
    (folder / "GFPGANv1.4.pth").write_bytes(b"not gpen")
    assert [p.name for p in find_gpen_models()] == ["pytorch_model.pt"]
