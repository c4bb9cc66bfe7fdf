"""Reference GAN architectures. Each generator names its default target layer in `default_layer`."""
from .dcgan import DCGANDiscriminator, DCGANGenerator

ARCHS = {"dcgan": (DCGANGenerator, DCGANDiscriminator)}


def build(arch: str, size: int, z_dim: int = 128, width: int = 64):
    """(G, D) of a named architecture."""
    if arch not in ARCHS:
        raise ValueError(f"unknown architecture {arch!r}; choose from {sorted(ARCHS)}")
    G_cls, D_cls = ARCHS[arch]
    return G_cls(size=size, z_dim=z_dim, width=width), D_cls(size=size, width=width)


__all__ = ["DCGANGenerator", "DCGANDiscriminator", "ARCHS", "build"]
