"""StyleGAN2 generator and discriminator, written to read like the paper.

Generator: a mapping network z (+ class embedding) -> w, then a synthesis network that starts from
a learned 4x4 constant and, per resolution, up-samples bilinearly and applies two modulated 3x3
convs (modulate, convolve, demodulate), per-pixel noise and a toRGB skip output.
Discriminator: residual blocks down to 4x4, minibatch standard deviation, and a projection
logit for class labels. All weights use the equalized learning rate (stored N(0, 1), scaled by
1/sqrt(fan_in) at run time). Both are diffusers `ModelMixin`s, so `save_pretrained` works.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin

SQRT2 = math.sqrt(2.0)


def normalize_2nd_moment(x: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def default_channels(resolution: int, base: int = 4096, cap: int = 256) -> list[int]:
    """Channel width per resolution 4, 8, ..., resolution: min(base / res, cap)."""
    n = int(math.log2(resolution)) - 1
    return [min(base // (4 * 2**i), cap) for i in range(n)]


class EqualLinear(nn.Module):
    """Linear layer with the equalized learning rate and an optional lrelu*sqrt(2)."""

    def __init__(self, in_f: int, out_f: int, bias_init: float = 0.0, lr_mul: float = 1.0,
                 activate: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_f, in_f) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_f], float(bias_init)))
        self.weight_gain = lr_mul / math.sqrt(in_f)
        self.lr_mul = lr_mul
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.linear(x, self.weight * self.weight_gain, self.bias * self.lr_mul)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activate else x


class EqualConv2d(nn.Module):
    """Plain conv with the equalized learning rate (used by the discriminator)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, bias: bool = True,
                 activate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_ch)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.activate = activate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(x, self.weight * self.weight_gain, self.bias, padding=self.padding)
        return F.leaky_relu(x, 0.2) * SQRT2 if self.activate else x


class MappingNetwork(nn.Module):
    """z (and a class label) -> w, with a tracked mean w for truncation."""

    def __init__(self, z_dim: int, w_dim: int, num_layers: int, num_classes: int,
                 lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.num_classes = num_classes
        in_dim = z_dim + (w_dim if num_classes else 0)
        self.embed = EqualLinear(num_classes, w_dim) if num_classes else None
        dims = [in_dim] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            EqualLinear(dims[i], dims[i + 1], lr_mul=lr_mul, activate=True) for i in range(num_layers))
        self.w_avg_beta = w_avg_beta
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation_psi: float = 1.0, update_w_avg: bool = False) -> torch.Tensor:
        x = normalize_2nd_moment(z)
        if self.embed is not None:
            if labels is None:
                raise ValueError("this generator is class-conditional: pass labels")
            onehot = F.one_hot(labels.long(), self.num_classes).to(z.dtype)
            x = torch.cat([x, normalize_2nd_moment(self.embed(onehot))], dim=1)
        for layer in self.layers:
            x = layer(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        if truncation_psi != 1.0:
            x = self.w_avg.lerp(x, truncation_psi)
        return x


class ModulatedConv2d(nn.Module):
    """A conv whose weights are scaled per sample by a style (modulate) and renormalized (demodulate).

    Two equivalent paths:
      fused=True : build per-sample weights and run one grouped conv (groups = batch), as in the paper;
      fused=False: scale the input by the style, run one conv with shared weights, then scale the
                   output by the demodulation factor. Same result, exports to ONNX with a dynamic
                   batch and is faster on the CPU.
    """

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel))
        self.affine = EqualLinear(w_dim, in_ch, bias_init=1.0)
        self.weight_gain = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2
        self.demodulate = demodulate

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        batch, in_ch, height, width = x.shape
        styles = self.affine(w)  # [B, in_ch]
        weight = self.weight * self.weight_gain  # [out, in, k, k]
        if fused:
            wts = weight.unsqueeze(0) * styles[:, None, :, None, None]  # [B, out, in, k, k]
            if self.demodulate:
                wts = wts * (wts.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
            x = x.reshape(1, batch * in_ch, height, width)
            wts = wts.reshape(-1, in_ch, *weight.shape[2:])
            out = F.conv2d(x, wts, padding=self.padding, groups=batch)
            return out.reshape(batch, -1, height, width)
        out = F.conv2d(x * styles[:, :, None, None], weight, padding=self.padding)
        if self.demodulate:
            # sum_{i,k} (W[o,i,k] * s[b,i])^2 = (s^2) @ (sum_k W^2)^T
            dcoefs = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()
            out = out * dcoefs[:, :, None, None]
        return out


class StyleLayer(nn.Module):
    """Modulated 3x3 conv + per-pixel noise + bias + lrelu*sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim)
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.resolution = resolution

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                generator: torch.Generator | None = None, fused: bool = False,
                noise: torch.Tensor | None = None) -> torch.Tensor:
        x = self.conv(x, w, fused=fused)
        if noise is None and noise_mode == "random":
            gen_device = generator.device if generator is not None else x.device
            noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution,
                                generator=generator, device=gen_device).to(x)
        elif noise is None and noise_mode == "const":
            noise = self.noise_const
        if noise is not None:
            x = x + noise * self.noise_strength
        return F.leaky_relu(x + self.bias[None, :, None, None], 0.2) * SQRT2


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation (the skip-output branch)."""

    def __init__(self, in_ch: int, w_dim: int):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, 3, 1, w_dim, demodulate=False)
        self.bias = nn.Parameter(torch.zeros(3))

    def forward(self, x: torch.Tensor, w: torch.Tensor, fused: bool = False) -> torch.Tensor:
        return self.conv(x, w, fused=fused) + self.bias[None, :, None, None]


class SynthesisBlock(nn.Module):
    """One resolution: [up-sample] -> StyleLayer -> StyleLayer, plus the toRGB skip."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int):
        super().__init__()
        self.is_first = resolution == 4
        if self.is_first:
            self.const = nn.Parameter(torch.randn(out_ch, 4, 4))
            self.layers = nn.ModuleList([StyleLayer(out_ch, out_ch, w_dim, 4)])
        else:
            self.layers = nn.ModuleList([StyleLayer(in_ch, out_ch, w_dim, resolution),
                                         StyleLayer(out_ch, out_ch, w_dim, resolution)])
        self.torgb = ToRGB(out_ch, w_dim)
        self.num_ws = len(self.layers) + 1  # the toRGB w is shared with the next block's first conv

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor,
                **kw) -> tuple[torch.Tensor, torch.Tensor]:
        fused = kw.get("fused", False)
        noises = kw.pop("noises", None) or [None] * len(self.layers)
        if self.is_first:
            x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
        else:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        for i, layer in enumerate(self.layers):
            x = layer(x, ws[:, i], noise=noises[i], **kw)
        rgb = self.torgb(x, ws[:, len(self.layers)], fused=fused)
        if img is not None:
            rgb = rgb + F.interpolate(img, scale_factor=2, mode="bilinear", align_corners=False)
        return x, rgb


class StyleGANGenerator(ModelMixin, ConfigMixin):
    """The full generator: mapping + synthesis. `forward(z, labels)` returns images in [-1, 1]."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, resolution: int = 64, z_dim: int = 256, w_dim: int = 256,
                 mapping_layers: int = 4, channels: list[int] | None = None,
                 num_classes: int = 0, class_names: list[str] | None = None):
        super().__init__()
        channels = list(channels or default_channels(resolution))
        if len(channels) != int(math.log2(resolution)) - 1:
            raise ValueError(f"need one channel width per resolution 4..{resolution}, got {channels}")
        self.z_dim, self.w_dim, self.num_classes = z_dim, w_dim, num_classes
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, num_classes)
        blocks, in_ch = [], channels[0]
        for i, ch in enumerate(channels):
            blocks.append(SynthesisBlock(in_ch, ch, w_dim, 4 * 2**i))
            in_ch = ch
        self.blocks = nn.ModuleList(blocks)
        # Block i reads ws[offset_i : offset_i + len(layers) + 1]; the toRGB w is the next conv's w.
        self.ws_offsets = list(np.cumsum([0] + [b.num_ws - 1 for b in blocks[:-1]]))
        self.num_ws = int(self.ws_offsets[-1] + blocks[-1].num_ws)

    def draw_noise(self, batch: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> list[list[torch.Tensor]]:
        """Per-layer noise maps [batch, 1, r, r] for `synthesis(noises=...)`, drawn in the order that
        synthesis itself would draw them; a compiled synthesis then holds no random draws."""
        return [[torch.randn(batch, 1, layer.resolution, layer.resolution, generator=generator, device=device)
                 for layer in block.layers] for block in self.blocks]

    def synthesis(self, ws: torch.Tensor, noise_mode: str = "random",
                  generator: torch.Generator | None = None, fused: bool = False,
                  noises: list[list[torch.Tensor]] | None = None) -> torch.Tensor:
        """ws: [B, num_ws, w_dim] -> images [B, 3, R, R]."""
        x = img = None
        for i, (block, off) in enumerate(zip(self.blocks, self.ws_offsets)):
            x, img = block(x, img, ws[:, off:off + block.num_ws], noise_mode=noise_mode,
                           generator=generator, fused=fused, noises=noises[i] if noises else None)
        return img

    def map(self, z: torch.Tensor, labels: torch.Tensor | None = None, truncation_psi: float = 1.0,
            mix_z: torch.Tensor | None = None, mix_cutoff: int | None = None,
            update_w_avg: bool = False) -> torch.Tensor:
        """z -> ws [B, num_ws, w_dim]; with mix_z, layers from mix_cutoff on take the second w."""
        w = self.mapping(z, labels, truncation_psi, update_w_avg=update_w_avg)
        ws = w.unsqueeze(1).repeat(1, self.num_ws, 1)
        if mix_z is not None and mix_cutoff is not None:
            w2 = self.mapping(mix_z, labels, truncation_psi)
            ws[:, mix_cutoff:] = w2.unsqueeze(1)
        return ws

    def forward(self, z: torch.Tensor, labels: torch.Tensor | None = None,
                truncation_psi: float = 1.0, noise_mode: str = "random",
                generator: torch.Generator | None = None, fused: bool = False,
                mix_z: torch.Tensor | None = None, mix_cutoff: int | None = None) -> torch.Tensor:
        ws = self.map(z, labels, truncation_psi, mix_z=mix_z, mix_cutoff=mix_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode, generator=generator, fused=fused)


class DiscriminatorBlock(nn.Module):
    """Residual block: two 3x3 convs and a 2x average-pool, plus a 1x1 skip, scaled by 1/sqrt(2)."""

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3)
        self.skip = EqualConv2d(in_ch, out_ch, 1, bias=False, activate=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.skip(F.avg_pool2d(x, 2))
        x = F.avg_pool2d(self.conv1(self.conv0(x)), 2)
        return (x + y) / SQRT2


class MinibatchStd(nn.Module):
    """Appends the std of features across groups of samples: lets D see a lack of variety."""

    def __init__(self, group_size: int = 4):
        super().__init__()
        self.group_size = group_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        if n % g:
            g = 1
        y = x.reshape(g, -1, c, h, w)
        y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()  # [n/g, c, h, w]
        y = y.mean(dim=[1, 2, 3]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class StyleGANDiscriminator(ModelMixin, ConfigMixin):
    """fromRGB -> residual blocks to 4x4 -> minibatch std -> conv -> fc -> logit (+ projection)."""

    config_name = "config.json"

    @register_to_config
    def __init__(self, resolution: int = 64, channels: list[int] | None = None,
                 num_classes: int = 0, mbstd_group: int = 4):
        super().__init__()
        channels = list(channels or default_channels(resolution))  # indexed from 4x4 upwards
        top = channels[-1]
        self.from_rgb = EqualConv2d(3, top, 1)
        self.blocks = nn.ModuleList(
            DiscriminatorBlock(channels[i], channels[i - 1]) for i in range(len(channels) - 1, 0, -1))
        c4 = channels[0]
        self.mbstd = MinibatchStd(mbstd_group)
        self.conv = EqualConv2d(c4 + 1, c4, 3)
        self.fc = EqualLinear(c4 * 16, c4, activate=True)
        self.out = EqualLinear(c4, 1)
        self.embed = EqualLinear(num_classes, c4) if num_classes else None
        self.num_classes = num_classes

    def forward(self, img: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        x = self.from_rgb(img)
        for block in self.blocks:
            x = block(x)
        x = self.fc(self.conv(self.mbstd(x)).flatten(1))
        logit = self.out(x)
        if self.embed is not None:
            # Projection discriminator: add <embed(y), phi(x)>, so the logit judges "real AND of class y".
            onehot = F.one_hot(labels.long(), self.num_classes).to(x.dtype)
            logit = logit + (self.embed(onehot) * x).sum(1, keepdim=True) / math.sqrt(x.shape[1])
        return logit.squeeze(1)
