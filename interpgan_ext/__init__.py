"""interpgan_ext: Interpretable GANs (Li et al., AAAI 2022) with fused C++/CUDA ops for PyTorch."""
from . import _backend, ops
from ._backend import info

__version__ = "0.1.0"
__all__ = ["ops", "info", "__version__"]
