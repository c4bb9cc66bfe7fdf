"""A compact StyleGAN2-like generator: mapping network, modulated (demodulated) convolutions, per-pixel
noise inputs and skip-connected toRGB outputs (Karras et al., 2020), small enough to train on a CPU.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .dcgan import _check_size


class MappingNetwork(nn.Module):
    """z -> w: pixel-normalised z through an MLP with leaky ReLUs."""

    def __init__(self, z_dim: int, w_dim: int, n_layers: int = 4):
        super().__init__()
        layers, d = [], z_dim
        for _ in range(n_layers):
            layers += [nn.Linear(d, w_dim), nn.LeakyReLU(0.2)]
            d = w_dim
        self.net = nn.Sequential(*layers)

    def forward(self, z):
        z = z * torch.rsqrt(z.pow(2).mean(dim=1, keepdim=True) + 1e-8)
        return self.net(z)


class ModulatedConv2d(nn.Module):
    """Conv whose input channels are scaled per sample by a style from w; demodulated to unit output variance."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, w_dim: int, demodulate: bool = True, upsample: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_ch, in_ch, kernel, kernel) / math.sqrt(in_ch * kernel * kernel))
        self.affine = nn.Linear(w_dim, in_ch)
        nn.init.ones_(self.affine.bias)  # styles start at 1: an unmodulated conv
        self.demodulate, self.upsample, self.padding = demodulate, upsample, kernel // 2

    def forward(self, x, w):
        # Equivalent to convolving with per-sample weights weight * style (then demodulated), but as one shared
        # conv between two per-channel scalings: a grouped conv with groups=B was 20x slower on the CPU.
        style = self.affine(w)  # [B, in]
        if self.upsample:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        out = F.conv2d(x * style[:, :, None, None], self.weight, padding=self.padding)
        if self.demodulate:  # 1 / ||weight * style|| per (sample, output channel)
            dcoefs = torch.rsqrt(style.pow(2) @ self.weight.pow(2).sum(dim=(2, 3)).T + 1e-8)  # [B, out]
            out = out * dcoefs[:, :, None, None]
        return out


class StyledConv(nn.Module):
    """Modulated conv, a per-pixel noise input with a learned per-channel strength, bias and leaky ReLU."""

    def __init__(self, in_ch, out_ch, w_dim, upsample=False):
        super().__init__()
        self.conv = ModulatedConv2d(in_ch, out_ch, 3, w_dim, upsample=upsample)
        self.noise_strength = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.bias = nn.Parameter(torch.zeros(1, out_ch, 1, 1))
        self.noise_mode = "random"  # "random" | "none"

    def forward(self, x, w):
        x = self.conv(x, w)
        if self.noise_mode == "random":
            x = x + self.noise_strength * torch.randn(x.shape[0], 1, *x.shape[2:], device=x.device, dtype=x.dtype)
        return F.leaky_relu(x + self.bias, 0.2)


class SynthesisBlock(nn.Module):
    def __init__(self, in_ch, out_ch, w_dim):
        super().__init__()
        self.conv1 = StyledConv(in_ch, out_ch, w_dim, upsample=True)
        self.conv2 = StyledConv(out_ch, out_ch, w_dim)
        self.to_rgb = ModulatedConv2d(out_ch, 3, 1, w_dim, demodulate=False)

    def forward(self, x, rgb, w):
        x = self.conv2(self.conv1(x, w), w)
        rgb = F.interpolate(rgb, scale_factor=2, mode="bilinear", align_corners=False) + self.to_rgb(x, w)
        return x, rgb


class StyleGAN2Generator(nn.Module):
    """z [B, z_dim] -> image [B, 3, size, size] in [-1, 1].

    `blocks.i` doubles the resolution to 8 * 2**i; `blocks.i.conv2` is that block's last feature layer.
    `default_layer` is the one at a quarter of the image size (16x16 at 64 px). Set every StyledConv's
    `noise_mode = "none"` (see `set_noise`) for deterministic images, e.g. when editing.
    """

    def __init__(self, size: int = 32, z_dim: int = 128, width: int = 64, w_dim: int = None, mapping_layers: int = 4):
        super().__init__()
        n_up = _check_size(size)
        w_dim = w_dim or z_dim
        self.size, self.z_dim = size, z_dim
        chans = [min(width * 2 ** (n_up - i), width * 8) for i in range(n_up + 1)]
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers)
        self.const = nn.Parameter(torch.randn(1, chans[0], 4, 4))
        self.conv0 = StyledConv(chans[0], chans[0], w_dim)
        self.rgb0 = ModulatedConv2d(chans[0], 3, 1, w_dim, demodulate=False)
        self.blocks = nn.ModuleList(SynthesisBlock(chans[i], chans[i + 1], w_dim) for i in range(n_up))
        self.default_layer = f"blocks.{max(0, n_up - 3)}.conv2"

    def set_noise(self, mode: str):
        for m in self.modules():
            if isinstance(m, StyledConv):
                m.noise_mode = mode
        return self

    def forward(self, z):
        w = self.mapping(z)
        x = self.conv0(self.const.expand(z.shape[0], -1, -1, -1), w)
        rgb = self.rgb0(x, w)
        for block in self.blocks:
            x, rgb = block(x, rgb, w)
        return torch.tanh(rgb)
