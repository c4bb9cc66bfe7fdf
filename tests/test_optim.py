"""The trainer's Adam: fused where torch can, the same updates as torch's default, and checkpoints of either kind."""
import copy

import pytest
import torch

from interpgan_ext.optim import adam, can_fuse, load_optimizer_state


def make_params(seed=0, device="cpu"):
    gen = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*shape, generator=gen).to(device)) for shape in ((7, 5), (3,), (2, 3, 4))]


def run_steps(opt, params, steps, seed):
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, generator=gen).to(p.device)
        opt.step()


def test_fused_where_torch_has_the_kernel():
    assert can_fuse(make_params())
    assert adam(make_params(), 1e-3, (0.5, 0.99)).param_groups[0]["fused"] is True
    complex_param = torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))
    assert not can_fuse([complex_param]) and not can_fuse([])
    opt = adam([complex_param], 1e-3, (0.5, 0.99))  # torch's default implementation instead, and it works
    assert not opt.param_groups[0]["fused"]
    complex_param.grad = torch.ones_like(complex_param)
    opt.step()


def test_fused_updates_match_the_default_adam():
    fused_params, default_params = make_params(), make_params()
    fused = adam(fused_params, 1e-2, (0.5, 0.99))
    default = torch.optim.Adam(default_params, lr=1e-2, betas=(0.5, 0.99), foreach=False)
    run_steps(fused, fused_params, 5, seed=1)
    run_steps(default, default_params, 5, seed=1)
    for a, b, start in zip(fused_params, default_params, make_params()):
        assert not torch.allclose(a, start)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("saved_by", ["default", "fused"])
def test_a_checkpoint_of_either_kind_resumes_fused_and_continues_the_same(saved_by, device):
    # A run saved (3 steps) by torch's default Adam, as checkpoints written before the trainer fused it, or by the
    # fused one; resumed into the trainer's Adam, it stays fused and continues as the uninterrupted default run.
    # (On CUDA the default Adam keeps its step counts on the CPU, the fused one on the GPU.)
    params = make_params(device=device)
    first = adam(params, 1e-2, (0.5, 0.99)) if saved_by == "fused" else torch.optim.Adam(
        params, lr=1e-2, betas=(0.5, 0.99), foreach=False)
    run_steps(first, params, 3, seed=2)
    # a copy, as a checkpoint read from disk: load_state_dict may keep the given tensors, which steps then update
    saved_weights, saved_state = [p.detach().clone() for p in params], copy.deepcopy(first.state_dict())

    resumed_params = [torch.nn.Parameter(w.clone()) for w in saved_weights]
    resumed = adam(resumed_params, 1e-2, (0.5, 0.99))
    load_optimizer_state(resumed, copy.deepcopy(saved_state))
    assert resumed.param_groups[0]["fused"] is True
    for p in resumed_params:
        step = resumed.state[p]["step"]
        assert step.item() == 3 and step.device == p.device and step.dtype == torch.float32
    run_steps(resumed, resumed_params, 2, seed=3)

    reference = torch.optim.Adam(params, lr=1e-2, betas=(0.5, 0.99), foreach=False)
    reference.load_state_dict(saved_state)
    run_steps(reference, params, 2, seed=3)
    for a, b in zip(resumed_params, params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
