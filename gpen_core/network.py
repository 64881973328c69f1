"""GPEN network (Yang et al., CVPR 2021): a conv encoder whose features feed a StyleGAN2 generator.

Module and parameter names follow the official ``FullGenerator`` so its checkpoints load strictly.
The arithmetic is rearranged for speed without changing the function:

* the ``sqrt(2)`` gain of every fused leaky ReLU is not applied to the activation map; it is
  carried into the weights of whatever consumes that map (``gain`` arguments below);
* biases and activations are fused into the convolutions (``conv_ops``), not separate passes;
* GPEN concatenates each styled map with an encoder feature; here the two halves stay separate
  tensors and the next convolution sums one conv per half, which saves copying both into one;
* feature maps are channels-last, each encoder feature is freed after its last use, and the
  full-size one (a 1x1 conv of the image) is recomputed when needed rather than held;
* a batch runs at once on GPUs (styles applied as input/output channel scales, ``forward_batched``)
  and one sample at a time on the CPU (styles folded into the weights): see batches_faces.

All tensors are NCHW (channels-last in memory), RGB, values in [-1, 1] at the ends.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from . import conv_ops

SQRT2 = math.sqrt(2.0)
BLUR_KERNEL = (1.0, 3.0, 3.0, 1.0)

#: A styled feature map and the encoder feature GPEN concatenates to it, kept as two tensors.
Halves = tuple[torch.Tensor, torch.Tensor]
#: An encoder feature map, or a function that computes it when it is needed.
Feature = torch.Tensor | Callable[[], torch.Tensor]


@dataclass(frozen=True)
class GPENConfig:
    """Hyper-parameters of a GPEN network, as the official ``FullGenerator`` takes them."""

    size: int
    channel_multiplier: int = 2
    narrow: float = 1.0
    style_dim: int = 512
    n_mlp: int = 8

    @property
    def log_size(self) -> int:
        return int(math.log2(self.size))

    @property
    def channels(self) -> dict[int, int]:
        """Feature channels per resolution: 512 up to 32 px, then halving; scaled and truncated."""
        table = {}
        for log in range(2, self.log_size + 1):
            res = 2**log
            base = 512 if res <= 32 else (16384 // res) * self.channel_multiplier
            table[res] = int(base * self.narrow)
        return table


def _blur_kernel(scale: float = 1.0) -> torch.Tensor:
    k = torch.tensor(BLUR_KERNEL)
    k = k[None, :] * k[:, None]
    return k / k.sum() * scale


def _depthwise(kernel: torch.Tensor, channels: int, dtype: torch.dtype) -> torch.Tensor:
    """A 2-D FIR kernel as a depthwise conv weight; flipped because conv2d correlates."""
    return kernel.flip([0, 1]).to(dtype).expand(channels, 1, *kernel.shape).contiguous()


class PixelNorm(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.square().mean(dim=1, keepdim=True) + 1e-8)


class Blur(nn.Module):
    """Fixed low-pass FIR filter (the anti-aliasing kernel of StyleGAN2), stored as a buffer."""

    def __init__(self, scale: float = 1.0):
        super().__init__()
        self.register_buffer("kernel", _blur_kernel(scale))

    def forward(self, x: torch.Tensor, padding: int, bias: torch.Tensor | None = None,
                leaky: bool = False) -> torch.Tensor:
        weight = _depthwise(self.kernel, x.shape[1], x.dtype)
        return conv_ops.conv2d(x, weight, bias, padding=padding, groups=x.shape[1], leaky=leaky)


class Upsample(Blur):
    """2x upsampling: zero insertion then the blur kernel (times 4), done as one transposed conv."""

    def __init__(self):
        super().__init__(scale=4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        weight = _depthwise(self.kernel, x.shape[1], x.dtype)
        return F.conv_transpose2d(x, weight, stride=2, padding=1, groups=x.shape[1])


class EqualLinear(nn.Module):
    """Linear layer with equalized learning rate; optional fused leaky ReLU (times sqrt 2)."""

    def __init__(self, in_dim: int, out_dim: int, *, lr_mul: float = 1.0, activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        self.bias = nn.Parameter(torch.empty(out_dim))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        weight = self.weight.to(x.dtype) * (self.scale * gain)
        out = F.linear(x, weight, self.bias.to(x.dtype) * self.lr_mul)
        return F.leaky_relu(out, 0.2) * SQRT2 if self.activate else out


class EqualConv2d(nn.Module):
    """Convolution with equalized learning rate (weights scaled by 1/sqrt(fan_in) at run time)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_channel, in_channel, kernel_size, kernel_size))
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)

    def scaled_weight(self, dtype: torch.dtype, gain: float = 1.0) -> torch.Tensor:
        return (self.weight.float() * (self.scale * gain)).to(dtype)


class FusedLeakyReLU(nn.Module):
    """Holds the per-channel bias of StyleGAN2's fused "bias + leaky ReLU(0.2) * sqrt 2"."""

    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.empty(channels))


class EncoderLayer(nn.Sequential):
    """Encoder conv (1x1 at full size, else blur + 3x3 stride 2) with its fused bias/activation.

    Returns ``leaky_relu(conv + bias)`` WITHOUT the sqrt 2 gain; consumers apply it.
    """

    def __init__(self, in_channel: int, out_channel: int, downsample: bool):
        layers: list[nn.Module] = [Blur()] if downsample else []
        layers += [EqualConv2d(in_channel, out_channel, 3 if downsample else 1), FusedLeakyReLU(out_channel)]
        super().__init__(*layers)
        self.downsample = downsample

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:  # type: ignore[override]
        *blur, conv, act = self
        weight = conv.scaled_weight(x.dtype, gain)
        bias = act.bias.to(x.dtype)
        if self.downsample:
            return conv_ops.conv2d(blur[0](x, padding=2), weight, bias, stride=2, leaky=True)
        return conv_ops.conv2d(x, weight, bias, leaky=True)


class ModulatedConv2d(nn.Module):
    """StyleGAN2 modulated convolution (per-sample weights scaled by the style, then demodulated)."""

    def __init__(self, in_channel: int, out_channel: int, kernel_size: int, style_dim: int, *,
                 demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1, out_channel, in_channel, kernel_size, kernel_size))
        self.modulation = EqualLinear(style_dim, in_channel)
        self.scale = 1 / math.sqrt(in_channel * kernel_size**2)
        self.demodulate = demodulate
        self.upsample = upsample
        if upsample:
            self.blur = Blur(scale=4.0)

    def modulated_weight(self, style: torch.Tensor, gain: float) -> torch.Tensor:
        """(out, in, k, k) float32 weight for one style vector (1, style_dim), input gain folded in."""
        s = self.modulation(style.float()).view(1, -1, 1, 1)
        weight = self.weight[0].float() * (s * self.scale)
        if self.demodulate:
            weight = weight * torch.rsqrt(weight.square().sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        return weight * gain

    def forward(self, x: torch.Tensor | Halves, style: torch.Tensor, bias: torch.Tensor | None = None,
                gain: float = 1.0, leaky: bool = False) -> torch.Tensor:
        """Convolve ``x`` (one map, or two halves of the input channels); add ``bias``; optional leaky ReLU.

        ``style`` is (B, style_dim) float32. With one style the weight itself is modulated (a plain conv);
        with several, see :meth:`forward_batched`.
        """
        parts = x if isinstance(x, tuple) else (x,)
        if style.shape[0] > 1:
            return self.forward_batched(parts, style, bias, gain, leaky)
        weight = self.modulated_weight(style, gain).to(parts[0].dtype)
        weights = weight.split([p.shape[1] for p in parts], dim=1)
        if self.upsample:
            out = F.conv_transpose2d(parts[0], weights[0].transpose(0, 1), stride=2)
            for part, w in zip(parts[1:], weights[1:], strict=True):
                out += F.conv_transpose2d(part, w.transpose(0, 1), stride=2)
            return self.blur(out, padding=1, bias=bias, leaky=leaky)
        padding = weight.shape[-1] // 2
        if len(parts) == 1:
            return conv_ops.conv2d(parts[0], weights[0], bias, padding=padding, leaky=leaky)
        out = conv_ops.conv2d(parts[0], weights[0], bias, padding=padding)
        for part, w in zip(parts[1:], weights[1:], strict=True):
            conv_ops.conv2d_add_(out, part, w, padding=padding)
        return F.leaky_relu_(out, 0.2) if leaky else out

    def forward_batched(self, parts: tuple[torch.Tensor, ...], style: torch.Tensor, bias: torch.Tensor | None,
                        gain: float, leaky: bool) -> torch.Tensor:
        """The same function for B styles in one plain convolution shared by the batch.

        ``conv(x, W * s) * d == conv(x * s, W) * d``: the input channels are scaled by each sample's style
        ``s`` and the output channels by its demodulation factor
        ``d = rsqrt(sum_i s_i^2 sum_k W_oik^2 + 1e-8)``, so the weight is never copied per sample.
        """
        batch, dtype = style.shape[0], parts[0].dtype
        s = self.modulation(style.float())  # (B, in)
        base = self.weight[0].float() * self.scale
        weight = (base * gain if not self.demodulate else base).to(dtype)
        demod = None
        if self.demodulate:
            energy = s.square() @ base.square().sum(dim=(2, 3)).T  # (B, out)
            demod = (torch.rsqrt(energy + 1e-8) * gain).to(dtype).view(batch, -1, 1, 1)
        widths = [p.shape[1] for p in parts]
        scaled = [p * si.to(dtype).view(batch, -1, 1, 1) for p, si in zip(parts, s.split(widths, dim=1), strict=True)]
        weights = weight.split(widths, dim=1)
        if self.upsample:
            out = F.conv_transpose2d(scaled[0], weights[0].transpose(0, 1), stride=2)
            for part, w in zip(scaled[1:], weights[1:], strict=True):
                out += F.conv_transpose2d(part, w.transpose(0, 1), stride=2)
            del scaled
            if demod is not None:
                out.mul_(demod)  # per channel, so it commutes with the depthwise blur
            return self.blur(out, padding=1, bias=bias, leaky=leaky)
        padding = weight.shape[-1] // 2
        fused_bias = bias if demod is None else None
        out = conv_ops.conv2d(scaled[0], weights[0], fused_bias, padding=padding)
        for part, w in zip(scaled[1:], weights[1:], strict=True):
            conv_ops.conv2d_add_(out, part, w, padding=padding)
        del scaled
        if demod is not None:
            out.mul_(demod)
            if bias is not None:
                out.add_(bias.view(1, -1, 1, 1))
        return F.leaky_relu_(out, 0.2) if leaky else out


class NoiseInjection(nn.Module):
    """GPEN's "noise": an encoder feature map, scaled by a learned scalar, concatenated as channels."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(1))


class StyledConv(nn.Module):
    """Modulated conv, concatenated encoder feature, fused bias + leaky ReLU over both halves.

    Inputs arrive without their sqrt 2 gain, and the output halves leave without it.
    """

    def __init__(self, in_channel: int, out_channel: int, style_dim: int, upsample: bool = False):
        super().__init__()
        self.conv = ModulatedConv2d(in_channel, out_channel, 3, style_dim, upsample=upsample)
        self.noise = NoiseInjection()
        self.activate = FusedLeakyReLU(out_channel * 2)

    def styled(self, x: torch.Tensor | Halves, style: torch.Tensor, gain: float) -> torch.Tensor:
        """The modulated-conv half: leaky_relu(conv(x) + bias)."""
        dtype = (x[0] if isinstance(x, tuple) else x).dtype
        bias = self.activate.bias[: self.activate.bias.shape[0] // 2].to(dtype)
        return self.conv(x, style, bias, gain, leaky=True)

    def encoder_half(self, feature: torch.Tensor) -> torch.Tensor:
        """The concatenated half, leaky_relu(w * sqrt2 * feature + bias), as a per-channel 1x1 conv."""
        half = feature.shape[1]
        scale = (self.noise.weight.float() * SQRT2).to(feature.dtype).expand(half, 1, 1, 1).contiguous()
        bias = self.activate.bias[half:].to(feature.dtype)
        return conv_ops.conv2d(feature, scale, bias, groups=half, leaky=True)

    def forward(self, x: torch.Tensor | Halves, style: torch.Tensor, feature: torch.Tensor,
                gain: float) -> Halves:
        return self.styled(x, style, gain), self.encoder_half(feature)


class ToRGB(nn.Module):
    """1x1 modulated conv to RGB (no demodulation) plus the upsampled RGB of the previous level."""

    def __init__(self, in_channel: int, style_dim: int, upsample: bool = True):
        super().__init__()
        if upsample:
            self.upsample = Upsample()
        self.conv = ModulatedConv2d(in_channel, 3, 1, style_dim, demodulate=False)
        self.bias = nn.Parameter(torch.empty(1, 3, 1, 1))

    def forward(self, x: Halves, style: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        out = self.conv(x, style, self.bias.to(x[0].dtype).view(3), gain=SQRT2)
        if skip is not None:
            out += self.upsample(skip)
        return out


class ConstantInput(nn.Module):
    def __init__(self, channel: int):
        super().__init__()
        self.input = nn.Parameter(torch.empty(1, channel, 4, 4))


class Generator(nn.Module):
    """StyleGAN2 synthesis network with GPEN's concatenated-feature "noise" inputs."""

    def __init__(self, config: GPENConfig):
        super().__init__()
        channels = config.channels
        self.style = nn.Sequential(
            PixelNorm(),
            *(EqualLinear(config.style_dim, config.style_dim, lr_mul=0.01, activate=True)
              for _ in range(config.n_mlp)),
        )
        self.input = ConstantInput(channels[4])
        self.conv1 = StyledConv(channels[4], channels[4], config.style_dim)
        self.to_rgb1 = ToRGB(channels[4] * 2, config.style_dim, upsample=False)
        self.convs = nn.ModuleList()
        self.to_rgbs = nn.ModuleList()
        in_channel = channels[4]
        for log in range(3, config.log_size + 1):
            out_channel = channels[2**log]
            self.convs.append(StyledConv(in_channel * 2, out_channel, config.style_dim, upsample=True))
            self.convs.append(StyledConv(out_channel * 2, out_channel, config.style_dim))
            self.to_rgbs.append(ToRGB(out_channel * 2, config.style_dim))
            in_channel = out_channel

    def forward(self, style: torch.Tensor, features: list[Feature]) -> torch.Tensor:
        """``style`` (B, style_dim) float32, ``features`` encoder maps (B, C, R, R) from 4 px up.

        ``features`` is consumed (emptied) so each map is freed after its last use. An entry may be a
        function that recomputes its map (the full-size one, cheaper to recompute than to hold).
        """
        w = self.style(style)
        dtype = features[0].dtype  # type: ignore[union-attr]
        x: torch.Tensor | Halves | None = self.input.input.to(dtype).contiguous(memory_format=torch.channels_last)
        x = self.conv1(x, w, features.pop(0), gain=1.0)
        skip = self.to_rgb1(x, w)
        for up, conv, to_rgb in zip(self.convs[::2], self.convs[1::2], self.to_rgbs):
            # Statement order keeps at most three full-size maps alive (peak memory at 2048 px): the input
            # of a level is dropped before its feature is made, a recomputable feature is made twice.
            feature = features.pop(0)
            styled = up.styled(x, w, gain=SQRT2)
            x = None
            recompute = feature if callable(feature) else None
            current = recompute() if recompute else feature
            x = (styled, up.encoder_half(current))
            del styled
            later = None if recompute else conv.encoder_half(current)
            del feature, current
            out = conv.styled(x, w, gain=SQRT2)
            x = None
            x = (out, later if recompute is None else conv.encoder_half(recompute()))
            del out, later
            skip = to_rgb(x, w, skip)
        return skip


class GPEN(nn.Module):
    """GPEN's ``FullGenerator``: image (B,3,S,S) RGB in [-1,1] -> restored image, same layout/range/dtype."""

    def __init__(self, config: GPENConfig):
        super().__init__()
        self.config = config
        channels = config.channels
        self.generator = Generator(config)
        self.ecd0 = nn.Sequential(EncoderLayer(3, channels[config.size], downsample=False))
        for i, log in enumerate(range(config.log_size, 2, -1), start=1):
            layer = EncoderLayer(channels[2**log], channels[2 ** (log - 1)], downsample=True)
            setattr(self, f"ecd{i}", nn.Sequential(layer))
        self.final_linear = nn.Sequential(EqualLinear(channels[4] * 16, config.style_dim, activate=True))

    def encode(self, image: torch.Tensor) -> tuple[torch.Tensor, list[Feature]]:
        """Style vectors (B, style_dim) float32 and encoder features ordered from 4 px up to S (the last
        one as a function computing it)."""
        first = self.ecd0[0]
        x = first(image)
        # The full-size feature is a 1x1 conv of the image: recomputed when needed instead of held.
        features: list[Feature] = [functools.partial(first, image)]
        for i in range(1, self.config.log_size - 1):
            x = getattr(self, f"ecd{i}")[0](x, gain=SQRT2)
            features.append(x)
        style = self.final_linear[0](x.float().reshape(x.shape[0], -1), gain=SQRT2)
        return style, features[::-1]

    def forward(self, image: torch.Tensor, batched: bool | None = None) -> torch.Tensor:
        """Restore (B,3,S,S) RGB in [-1,1]; same layout, range, dtype and device out.

        ``batched``: one forward for the whole batch (True) or one per sample (False); None picks what
        is faster on the image's device (:func:`batches_faces`). Both compute the same function.
        """
        if batched is None:
            batched = batches_faces(image.device)
        outputs = []
        for chunk in ((image,) if batched else image.split(1)):
            chunk = chunk.contiguous(memory_format=torch.channels_last)
            style, features = self.encode(chunk)
            outputs.append(self.generator(style, features))
        return (outputs[0] if len(outputs) == 1 else torch.cat(outputs)).contiguous()


def batches_faces(device: torch.device) -> bool:
    """Whether :class:`GPEN` runs a batch in one forward on ``device`` (else one
    sample at a time). Both compute the same function.

    GPUs: yes (one forward keeps the device busy). CPU: no. Measured there (2 threads, batch 4, one
    process, interleaved), batched took 0.77x the per-sample time at 256 px and 0.88x at 512 px, but it
    holds the whole batch's activations (4x the memory: +2.3 GB at 512) and Cancel and progress could
    then only act per batch; one face at a time keeps both per face.
    """
    return torch.device(device).type != "cpu"


def init_random_(net: GPEN, seed: int = 0) -> GPEN:
    """Fill every parameter with seeded random values of the official initialisation's scale.

    For benchmarks and tests: same shapes and FLOPs as a real checkpoint, no trained behaviour.
    """
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in net.named_parameters():
            values = torch.randn(param.shape, generator=gen)
            if name.endswith("modulation.bias"):
                values = 1 + 0.1 * values
            elif name.endswith("noise.weight"):
                values = 0.1 * values
            elif name.endswith("bias"):
                values = 0.1 * values
            elif ".style." in name:
                values = values / 0.01
            param.copy_(values)
    return net
