"""DCGAN-style generator and discriminator for 16, 32, 64 and 128 px images."""
import math

from torch import nn


def _check_size(size):
    if size not in (16, 32, 64, 128):
        raise ValueError(f"DCGAN: image size must be 16, 32, 64 or 128, got {size}")
    return int(math.log2(size)) - 2  # number of x2 up/down-sampling stages from 4x4


class DCGANGenerator(nn.Module):
    """z [B, z_dim] -> image [B, 3, size, size] in [-1, 1].

    `blocks.i` is the i-th up-sampling stage (ConvTranspose, BatchNorm, ReLU) with output side 8 * 2**i.
    `default_layer` is the stage at a quarter of the image size (16x16 at 64 px, 8x8 at 32 px).
    """

    def __init__(self, size: int = 32, z_dim: int = 128, width: int = 64):
        super().__init__()
        n_up = _check_size(size)
        self.size, self.z_dim = size, z_dim
        chans = [min(width * 2 ** (n_up - i), width * 8) for i in range(n_up + 1)]
        self.stem = nn.Sequential(nn.Linear(z_dim, chans[0] * 16), nn.Unflatten(1, (chans[0], 4, 4)),
                                  nn.BatchNorm2d(chans[0]), nn.ReLU(True))
        self.blocks = nn.Sequential(*[
            nn.Sequential(nn.ConvTranspose2d(chans[i], chans[i + 1], 4, 2, 1, bias=False),
                          nn.BatchNorm2d(chans[i + 1]), nn.ReLU(True))
            for i in range(n_up - 1)
        ])
        self.to_rgb = nn.Sequential(nn.ConvTranspose2d(chans[n_up - 1], 3, 4, 2, 1), nn.Tanh())
        self.default_layer = f"blocks.{max(0, n_up - 3)}"

    def forward(self, z):
        return self.to_rgb(self.blocks(self.stem(z)))


class DCGANDiscriminator(nn.Module):
    """image [B, 3, size, size] -> logit [B]."""

    def __init__(self, size: int = 32, width: int = 64):
        super().__init__()
        n_down = _check_size(size)
        chans = [3] + [min(width * 2**i, width * 8) for i in range(n_down)]
        layers = []
        for i in range(n_down):
            layers += [nn.Conv2d(chans[i], chans[i + 1], 4, 2, 1), nn.LeakyReLU(0.2, True)]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * 16, 1))

    def forward(self, x):
        return self.head(self.features(x)).flatten()
