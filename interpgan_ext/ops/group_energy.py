"""group_energy: the group-weighted energy g_W of SPEC §2, its reference, and its registration.

    g[b] = sum_{j,c,k} W[j,c,k] * f[b,j,k] * fbar[b,c,k],   fbar[b,c,k] = mean_{j: q_j = c} f[b,j,k]

The compiled kernels live in csrc/cpu/group_energy.cpp and csrc/cuda/group_energy.cu.
"""
import torch

from .. import _backend

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_group_energy_args(f, W, groups):
    """The checks of csrc/checks.h, for the reference path: same conditions, same messages."""
    if not isinstance(f, torch.Tensor) or f.dim() not in (3, 4):
        raise ValueError(f"group_energy: expected f of shape [B, M, H, W] or [B, M, K], but got {_shape(f)}")
    if not f.is_floating_point():
        raise TypeError(f"group_energy: expected f to be a floating-point tensor, but got dtype {f.dtype}")
    if not isinstance(W, torch.Tensor) or W.dim() != 3:
        raise ValueError(f"group_energy: expected W of shape [M, C, K], but got {_shape(W)}")
    if not (W.dtype == f.dtype or (f.dtype in _LOW_PRECISION and W.dtype == torch.float32)):
        raise TypeError(
            f"group_energy: expected W to have the dtype of f ({f.dtype}), or float32 when f is "
            f"float16/bfloat16, but got {W.dtype}"
        )
    if not isinstance(groups, torch.Tensor) or groups.dim() != 1 or groups.dtype != torch.int64:
        raise TypeError(
            "group_energy: expected groups to be a 1-D int64 tensor [M], but got "
            f"{getattr(groups, 'dtype', type(groups).__name__)} {_shape(groups)}"
        )
    if W.device != f.device or groups.device != f.device:
        raise RuntimeError(
            f"group_energy: expected f, W and groups on one device, but got f on {f.device}, W on {W.device}, "
            f"groups on {groups.device}"
        )
    B, M = f.shape[:2]
    K = f.shape[2] * f.shape[3] if f.dim() == 4 else f.shape[2]
    if W.shape[0] != M or W.shape[2] != K:
        raise ValueError(f"group_energy: expected W of shape [M={M}, C, K={K}] to match f {_shape(f)}, but got {_shape(W)}")
    if groups.shape[0] != M:
        raise ValueError(f"group_energy: expected groups of length M={M} (one id per filter), but got {groups.shape[0]}")
    if W.shape[1] < 1:
        raise ValueError("group_energy: expected at least one group (W.size(1) >= 1), but got C=0")


def _shape(t):
    return list(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__


def check_partition(groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """Validates a partition q once (it syncs on CUDA): int64 [M] with ids in [0, n_groups).

    Call it when q changes (after a GMM refit), not per op call. Returns the group sizes n_c.
    """
    if groups.dim() != 1 or groups.dtype != torch.int64:
        raise TypeError(f"expected groups to be a 1-D int64 tensor, but got {groups.dtype} {list(groups.shape)}")
    if groups.numel() and (int(groups.min()) < 0 or int(groups.max()) >= n_groups):
        bad = groups[(groups < 0) | (groups >= n_groups)][0].item()
        raise ValueError(f"group id out of range: found {bad}, expected 0 <= id < C = {n_groups}")
    return torch.bincount(groups, minlength=n_groups)


def group_means(f: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """SPEC §1: fbar [B, C, K] from f [B, M, K]; an empty group's mean is 0."""
    B, M, K = f.shape
    # index_add out of place: torch.func.vmap batches it (not the in-place form into an unbatched zeros), and it
    # still range-checks the ids (a device-side assert on CUDA)
    counts = torch.zeros(n_groups, dtype=f.dtype, device=f.device).index_add(0, groups, f.new_ones(M))
    inv_n = torch.where(counts > 0, 1.0 / counts.clamp_min(1), torch.zeros_like(counts))
    return f.new_zeros(B, n_groups, K).index_add(1, groups, f) * inv_n[None, :, None]


def group_energy_reference(f: torch.Tensor, W: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Pure-PyTorch g_W (differentiable through autograd, including the path through fbar)."""
    check_group_energy_args(f, W, groups)
    return _group_energy_math(f, W, groups)


def _group_energy_math(f, W, groups):
    if groups.device.type == "cpu":  # on CUDA, index_add_ asserts on the device instead of syncing here
        check_partition(groups, W.shape[1])
    compute = W.dtype if f.dtype in _LOW_PRECISION else f.dtype
    B, M = f.shape[:2]
    fk = f.reshape(B, M, W.shape[2]).to(compute)  # K from W: with B or M = 0, a -1 here would be ambiguous
    fbar = group_means(fk, groups, W.shape[1])
    S = torch.einsum("jck,bjk->bck", W.to(compute), fk)
    return (S * fbar).sum(dim=(1, 2)).to(W.dtype)


def group_energy(f: torch.Tensor, W: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """g_W(f) -> [B]. f: [B, M, H, W] or [B, M, K]; W: [M, C, K]; groups: int64 [M] with ids in [0, C).

    Differentiable in f and W. Runs the fused kernel for f's device when it is compiled in, else the reference.
    The output has W's dtype (float32 for half f with float32 W).
    """
    if isinstance(f, torch.Tensor) and _backend.use_compiled(f):
        if _backend.PYTHON_PRECHECKS and not torch.compiler.is_compiling():  # see _backend: C++ ValueErrors crash some torch versions
            check_group_energy_args(f, W, groups)
            if groups.device.type == "cpu":
                check_partition(groups, W.shape[1])
        return torch.ops.interpgan.group_energy(f, W, groups)  # checked in C++ (csrc/checks.h), same errors
    check_group_energy_args(f, W, groups)
    return _group_energy_math(f, W, groups)


def _register():
    """Fake kernels (shape and dtype only) so that torch.compile traces the compiled ops."""

    def check_shapes(f, W, groups):
        torch._check(f.dim() in (3, 4), lambda: "group_energy: expected f of shape [B, M, H, W] or [B, M, K]")
        torch._check(W.dim() == 3, lambda: "group_energy: expected W of shape [M, C, K]")
        torch._check(W.shape[0] == f.shape[1], lambda: "group_energy: W.shape[0] must equal M = f.shape[1]")
        torch._check(groups.dim() == 1 and groups.shape[0] == f.shape[1], lambda: "group_energy: groups must be [M]")

    @torch.library.register_fake("interpgan::group_energy")
    def _(f, W, groups):
        check_shapes(f, W, groups)
        return f.new_empty((f.shape[0],), dtype=W.dtype)

    @torch.library.register_fake("interpgan::group_energy_with_stats")
    def _(f, W, groups):
        check_shapes(f, W, groups)
        # Opaque statistics for the backward: group means and sums, B * C * K each (in each backend's own order).
        n = 2 * f.shape[0] * W.shape[1] * W.shape[2]
        stats_dtype = torch.float64 if f.dtype == torch.float64 else torch.float32
        return f.new_empty((f.shape[0],), dtype=W.dtype), f.new_empty((n,), dtype=stats_dtype)

    @torch.library.register_fake("interpgan::group_energy_backward")
    def _(grad_out, f, W, groups, stats=None, output_mask=(True, True)):
        torch._check(grad_out.dim() == 1 and grad_out.shape[0] == f.shape[0], lambda: "grad_out must be [B]")
        # an output left out of output_mask is not computed: None, as in ATen's backward ops
        return (f.new_empty(f.shape) if output_mask[0] else None, W.new_empty(W.shape) if output_mask[1] else None)

    # Autograd is registered in C++ (csrc/autograd.cpp): its forward is group_energy_with_stats, its backward
    # the op group_energy_backward.


if _backend.has_extension():
    _register()
