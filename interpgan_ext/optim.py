"""The trainer's optimizer: Adam, fused where torch has a fused kernel for the parameters.

torch's default Adam on the CPU updates one tensor at a time, a dozen ops per parameter, each a full pass over it.
On 2 cores a step over the GPU job's DCGAN G and D (10.6 M parameters) took 27 ms that way and 5.3 ms fused; the
main job's (1.4 M) 4.5 and 0.44 ms (bench/results/README.md, "Fused Adam"). On a GPU it is one launch per step
where the default multi-tensor path takes several.
"""
from typing import Iterable, Tuple

import torch

_FUSED_DEVICES = ("cpu", "cuda")


def can_fuse(params) -> bool:
    """True when torch's fused Adam takes these parameters: real floating point, on the CPU or a CUDA device."""
    params = list(params)
    return bool(params) and all(
        p.device.type in _FUSED_DEVICES and p.is_floating_point() and p.layout == torch.strided for p in params)


def adam(params: Iterable[torch.Tensor], lr: float, betas: Tuple[float, float]) -> torch.optim.Adam:
    """torch.optim.Adam, fused when `can_fuse`, else torch's default implementation (same update)."""
    params = list(params)
    return torch.optim.Adam(params, lr=lr, betas=betas, fused=True if can_fuse(params) else None)


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """opt.load_state_dict(state), keeping opt's own choice of implementation.

    torch takes the saved groups' `fused` and `foreach` flags too, so a checkpoint written before Adam was fused
    would turn the fused kernel off for the rest of the run. The fused kernel keeps each parameter's step count
    as float32 on the parameter's device, where the default keeps it on the CPU: moved here when the saved
    state came from the default."""
    kept = [{key: group.get(key) for key in ("fused", "foreach")} for group in opt.param_groups]
    opt.load_state_dict(state)
    for group, flags in zip(opt.param_groups, kept):
        group.update(flags)
        if not flags["fused"]:
            continue
        for p in group["params"]:
            step = opt.state.get(p, {}).get("step")
            if step is not None:
                opt.state[p]["step"] = torch.as_tensor(step, dtype=torch.float32).to(p.device)
