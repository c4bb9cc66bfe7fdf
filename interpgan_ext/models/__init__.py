"""Reference GAN architectures. Each generator names its default target layer in `default_layer`."""
from .dcgan import DCGANDiscriminator, DCGANGenerator
from .stylegan2 import StyleGAN2Generator

# The StyleGAN2-like generator is paired with the DCGAN discriminator: the method changes only G's training.
ARCHS = {"dcgan": (DCGANGenerator, DCGANDiscriminator), "stylegan2": (StyleGAN2Generator, DCGANDiscriminator)}


def build(arch: str, size: int, z_dim: int = 128, width: int = 64):
    """(G, D) of a named architecture."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
    G_cls, D_cls = ARCHS[arch]
    return G_cls(size=size, z_dim=z_dim, width=width), D_cls(size=size, width=width)


__all__ = ["DCGANGenerator", "DCGANDiscriminator", "StyleGAN2Generator", "ARCHS", "build"]
