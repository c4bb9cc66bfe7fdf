"""langevin_step: one Langevin update of SPEC §4, its reference, and its registration.

    z' = z + (step^2 / 2) * clip(grad - prior_weight * z) + step * eps,   eps ~ N(0, I)

The compiled kernels live in csrc/cpu/langevin_step.cpp and csrc/cuda/langevin_step.cu. Both draw eps inside the
kernel, with Philox, from the given torch.Generator (the default one when none), so a seeded generator replays.
The CPU kernel takes one 64-bit key from the CPU generator per call (csrc/cpu/normal_noise.h), the CUDA kernel a
Philox seed and offset from the CUDA generator. Neither is torch.randn's stream: only `noise=` makes the
compiled op and the reference agree exactly.
"""
from typing import Optional

import torch

from .. import _backend


def check_langevin_args(z, grad, step_size, drift_clip, noise):
    """The checks of csrc/checks.h, for the reference path: same conditions, same messages."""
    if not isinstance(z, torch.Tensor) or not z.is_floating_point():
        raise TypeError(f"langevin_step: expected z to be a floating-point tensor, but got {getattr(z, 'dtype', type(z))}")
    if not isinstance(grad, torch.Tensor) or grad.dtype != z.dtype:
        raise TypeError(f"langevin_step: expected grad to have the dtype of z ({z.dtype}), but got {getattr(grad, 'dtype', type(grad))}")
    if grad.device != z.device:
        raise RuntimeError(f"langevin_step: expected grad on the device of z ({z.device}), but got {grad.device}")
    if grad.shape != z.shape:
        raise ValueError(f"langevin_step: expected grad of the shape of z {list(z.shape)}, but got {list(grad.shape)}")
    if step_size < 0:
        raise ValueError(f"langevin_step: expected step_size >= 0, but got {step_size}")
    if drift_clip is not None and drift_clip <= 0:
        raise ValueError(f"langevin_step: expected drift_clip > 0 (or None), but got {drift_clip}")
    if noise is not None and (noise.dtype != z.dtype or noise.device != z.device or noise.shape != z.shape):
        raise ValueError(
            f"langevin_step: expected noise with the dtype, device and shape of z ({z.dtype}, {z.device}, "
            f"{list(z.shape)}), but got {noise.dtype}, {noise.device}, {list(noise.shape)}"
        )


def langevin_step_reference(z, grad, step_size, prior_weight=1.0, drift_clip=None, noise=None, generator=None):
    """Pure-PyTorch langevin_step; noise comes from torch.randn(generator=...) when not given."""
    check_langevin_args(z, grad, step_size, drift_clip, noise)
    drift = grad - prior_weight * z
    if drift_clip is not None:
        drift = drift.clamp(-drift_clip, drift_clip)
    if noise is None:
        noise = torch.randn(z.shape, generator=generator, device=z.device, dtype=z.dtype)
    return z + (0.5 * step_size * step_size) * drift + step_size * noise


def langevin_step(
    z: torch.Tensor,
    grad: torch.Tensor,
    step_size: float,
    prior_weight: float = 1.0,
    drift_clip: Optional[float] = None,
    noise: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    out: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One Langevin step on z of any shape [B, ...]. `out=z` updates z in place."""
    step_size, prior_weight = float(step_size), float(prior_weight)
    drift_clip = None if drift_clip is None else float(drift_clip)
    if out is not None and (out.shape != z.shape or out.dtype != z.dtype or out.device != z.device):
        raise ValueError(
            f"langevin_step: expected out with the shape, dtype and device of z, but got {list(out.shape)}, "
            f"{out.dtype}, {out.device}"
        )
    if isinstance(z, torch.Tensor) and _backend.use_compiled(z):  # checked in C++ (csrc/checks.h)
        if _backend.PYTHON_PRECHECKS and not torch.compiler.is_compiling():  # see _backend: C++ ValueErrors crash some torch versions
            check_langevin_args(z, grad, step_size, drift_clip, noise)
        ops = torch.ops.interpgan
        if out is None:
            return ops.langevin_step(z, grad, step_size, prior_weight, drift_clip, noise, generator)
        if out is not z:
            out.copy_(z)
        ops.langevin_step_(out, grad, step_size, prior_weight, drift_clip, noise, generator)
        return out
    result = langevin_step_reference(z, grad, step_size, prior_weight, drift_clip, noise, generator)
    if out is None:
        return result
    return out.copy_(result)


def _register():
    @torch.library.register_fake("interpgan::langevin_step")
    def _(z, grad, step_size, prior_weight=1.0, drift_clip=None, noise=None, generator=None):
        torch._check(grad.shape == z.shape, lambda: "langevin_step: grad must have the shape of z")
        return torch.empty_like(z, memory_format=torch.contiguous_format)

    @torch.library.register_fake("interpgan::langevin_step_")
    def _(z, grad, step_size, prior_weight=1.0, drift_clip=None, noise=None, generator=None):
        torch._check(grad.shape == z.shape, lambda: "langevin_step_: grad must have the shape of z")
        return None

    # Autograd is registered in C++ (csrc/autograd.cpp).


if _backend.has_extension():
    _register()
