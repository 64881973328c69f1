"""One-off: convert facenet-pytorch 2.6.0's MTCNN weights to gpen_core/weights/mtcnn.safetensors.

    pip download --no-deps facenet-pytorch==2.6.0 -d /tmp/fnp && unzip /tmp/fnp/*.whl -d /tmp/fnp/wheel
    python tools/convert_mtcnn_weights.py /tmp/fnp/wheel/facenet_pytorch/data

facenet-pytorch flattens the last conv map of R-Net/O-Net as (W,H,C) (a legacy of the Caffe/TensorFlow
ports) and emits O-Net landmarks as 5 x then 5 y; the dense weights are permuted here so gpen_core's nets
use a plain (C,H,W) flatten and (x,y)-interleaved landmarks.
"""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from gpen_core.detection.mtcnn import WEIGHTS, ONet, PNet, RNet

RENAME = {
    "pnet": {"conv1": "features.0", "prelu1": "features.1", "conv2": "features.3", "prelu2": "features.4",
             "conv3": "features.5", "prelu3": "features.6", "conv4_1": "score", "conv4_2": "box"},
    "rnet": {"conv1": "features.0", "prelu1": "features.1", "conv2": "features.3", "prelu2": "features.4",
             "conv3": "features.6", "prelu3": "features.7", "dense4": "features.9", "prelu4": "features.10",
             "dense5_1": "score", "dense5_2": "box"},
    "onet": {"conv1": "features.0", "prelu1": "features.1", "conv2": "features.3", "prelu2": "features.4",
             "conv3": "features.6", "prelu3": "features.7", "conv4": "features.9", "prelu4": "features.10",
             "dense5": "features.12", "prelu5": "features.13", "dense6_1": "score", "dense6_2": "box",
             "dense6_3": "landmarks"},
}
FLATTEN = {"rnet": ("dense4", 64, 3), "onet": ("dense5", 128, 3)}  # layer, channels, map side


def convert(name: str, state: dict) -> dict:
    layer, channels, side = FLATTEN.get(name, (None, 0, 0))
    out = {}
    for key, value in state.items():
        module, param = key.rsplit(".", 1)
        if module == layer and param == "weight":  # columns (W,H,C) -> (C,H,W)
            value = value.view(-1, side, side, channels).permute(0, 3, 2, 1).reshape(value.shape[0], -1)
        if module == "dense6_3":  # rows x0..x4,y0..y4 -> x0,y0,x1,y1,...
            value = value.view(2, 5, *value.shape[1:]).transpose(0, 1).reshape(value.shape)
        out[f"{name}.{RENAME[name][module]}.{param}"] = value.float().contiguous()
    return out


def main(data_dir: str) -> None:
    tensors = {}
    for name, net in (("pnet", PNet()), ("rnet", RNet()), ("onet", ONet())):
        part = convert(name, torch.load(Path(data_dir) / f"{name}.pt", map_location="cpu", weights_only=True))
        net.load_state_dict({k.split(".", 1)[1]: v for k, v in part.items()})  # strict: every key matches
        tensors.update(part)
    save_file(tensors, str(WEIGHTS), metadata={"source": "facenet-pytorch 2.6.0 (MIT, Tim Esler)"})
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes, {len(tensors)} tensors)")


if __name__ == "__main__":
    main(sys.argv[1])
