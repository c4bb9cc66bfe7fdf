"""The CPU ops' buffer cache (csrc/cpu/buffer_cache.h): reused buffers must never leak old values or alias a
live tensor, released ones return, the cap and the switch work."""
import os
import subprocess
import sys

import pytest
import torch

import interpgan_ext as ig
from interpgan_ext import _backend
from interpgan_ext.ops import group_energy, group_energy_reference

pytestmark = pytest.mark.skipif(not _backend.has_extension(), reason="compiled extension not loaded")

# df is 2 MiB and dW 1.25 MiB: both over the cache's 1 MiB threshold.
SHAPE = dict(B=8, M=64, K=1024, C=5)


def inputs(seed):
    gen = torch.Generator().manual_seed(seed)
    f = torch.randn(SHAPE["B"], SHAPE["M"], SHAPE["K"], generator=gen, requires_grad=True)
    W = torch.randn(SHAPE["M"], SHAPE["C"], SHAPE["K"], generator=gen, requires_grad=True)
    groups = torch.randint(0, SHAPE["C"], (SHAPE["M"],), generator=gen)
    return f, W, groups


def grads(op, f, W, groups):
    return torch.autograd.grad(op(f, W, groups).sum(), (f, W))


def reference_grads(f, W, groups):
    f64, W64 = f.detach().double().requires_grad_(True), W.detach().double().requires_grad_(True)
    return grads(group_energy_reference, f64, W64, groups)


def assert_close(got, expected):
    for a, b in zip(got, expected):
        assert torch.isfinite(a).all()
        torch.testing.assert_close(a.double(), b, rtol=1e-4, atol=1e-3)


def test_reused_buffers_are_overwritten_entirely():
    # Fresh pages are zero, so a kernel that skipped some elements would pass on fresh memory. Poison the outputs
    # with NaN, release them, and the next call, which gets the same buffers back, must still be exact.
    df, dW = grads(group_energy, *inputs(0))
    old_pointers = {df.data_ptr(), dW.data_ptr()}
    df.fill_(float("nan"))
    dW.fill_(float("nan"))
    del df, dW
    hits = ig.ops.cpu_cache_stats()["hits"]
    f, W, groups = inputs(1)
    got = grads(group_energy, f, W, groups)
    assert {t.data_ptr() for t in got} == old_pointers
    assert ig.ops.cpu_cache_stats()["hits"] >= hits + 2
    assert_close(got, reference_grads(f, W, groups))


def test_a_live_output_is_never_handed_out_again():
    first = grads(group_energy, *inputs(2))
    kept = [t.clone() for t in first]
    second = grads(group_energy, *inputs(3))
    assert not {t.data_ptr() for t in first} & {t.data_ptr() for t in second}
    for a, b in zip(first, kept):
        assert torch.equal(a, b)


def test_cached_outputs_work_as_gradients_and_survive_save_and_load(tmp_path):
    f, W, groups = inputs(4)
    for _ in range(2):  # the second pass adds into the .grad that the first one's cached buffer became
        group_energy(f, W, groups).sum().backward()
    expected = reference_grads(f, W, groups)
    torch.testing.assert_close(f.grad.double(), 2 * expected[0], rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(W.grad.double(), 2 * expected[1], rtol=1e-4, atol=1e-3)
    torch.save({"df": f.grad}, tmp_path / "grad.pt")
    assert torch.equal(torch.load(tmp_path / "grad.pt")["df"], f.grad)


def test_released_buffers_return_and_empty_cpu_cache_frees_them():
    ig.ops.empty_cpu_cache()
    in_use = ig.ops.cpu_cache_stats()["in_use_bytes"]
    df, dW = grads(group_energy, *inputs(5))
    during = ig.ops.cpu_cache_stats()
    assert during["in_use_bytes"] >= in_use + df.numel() * 4 + dW.numel() * 4
    del df, dW
    after = ig.ops.cpu_cache_stats()
    assert after["in_use_bytes"] == in_use
    assert after["cached_blocks"] >= 2 and after["cached_bytes"] > 0
    ig.ops.empty_cpu_cache()
    assert ig.ops.cpu_cache_stats()["cached_bytes"] == 0 and ig.ops.cpu_cache_stats()["cached_blocks"] == 0


def test_langevin_output_comes_from_the_cache_and_holds_the_update():
    # A chain z = langevin_step(z, ...) frees a tensor of z's size every step; the next step's output reuses it.
    gen = torch.Generator().manual_seed(3)
    z, grad, eps = (torch.randn(64, 512, 16, generator=gen) for _ in range(3))  # 2 MiB each
    want = ig.ops.langevin_step_reference(z, grad, 0.1, drift_clip=0.5, noise=eps)
    hits = ig.ops.cpu_cache_stats()["hits"]
    for _ in range(3):
        got = ig.ops.langevin_step(z, grad, 0.1, drift_clip=0.5, noise=eps)
        torch.testing.assert_close(got, want)
        del got
    assert ig.ops.cpu_cache_stats()["hits"] >= hits + 2
    # in place on a non-contiguous z: the contiguous temporary comes from the cache too, and goes back
    zt = z.clone().transpose(0, 1)
    ig.ops.langevin_step(zt, grad.transpose(0, 1), 0.1, drift_clip=0.5, noise=eps.transpose(0, 1), out=zt)
    torch.testing.assert_close(zt.transpose(0, 1), want)


def run_with_cache_mb(value):
    code = (
        "import warnings, torch, interpgan_ext as ig\n"
        "f = torch.randn(8, 64, 1024, requires_grad=True); W = torch.randn(64, 5, 1024, requires_grad=True)\n"
        "q = torch.randint(0, 5, (64,))\n"
        "for _ in range(3): torch.autograd.grad(ig.ops.group_energy(f, W, q).sum(), (f, W))\n"
        "s = ig.ops.cpu_cache_stats(); print(s['limit_bytes'], s['hits'], s['cached_bytes'], ig.info()['ext_cpu_cache_mb'])\n"
    )
    env = dict(os.environ, INTERPGAN_CPU_CACHE_MB=value)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    return [int(x) for x in out.stdout.split()], out.stderr


def test_cache_size_and_switch_come_from_the_environment():
    (limit, hits, cached, mb), _ = run_with_cache_mb("0")
    assert (limit, hits, cached, mb) == (0, 0, 0, 0)
    (limit, hits, cached, mb), _ = run_with_cache_mb("3")  # room for df (2 MiB) alone, not dW besides
    assert limit == 3 << 20 and mb == 3 and 0 < cached <= 3 << 20 and hits > 0
    (limit, _, _, _), stderr = run_with_cache_mb("lots")
    assert limit == 1024 << 20
    assert "INTERPGAN_CPU_CACHE_MB must be a whole number" in stderr


FORK_WHILE_LOCKED = """
import os, sys, time, torch, interpgan_ext as ig
from interpgan_ext import _backend
f = torch.randn(4, 64, 4096, requires_grad=True); W = torch.randn(64, 3, 4096); q = torch.arange(64) % 3
def step():  # df, 4 MiB, comes from the cache
    torch.autograd.grad(ig.ops.group_energy(f, W, q).sum(), f)
step()
_backend._C._cpu_cache_hold_lock_for_testing(1.0)  # another thread is inside the cache when we fork
pid = os.fork()
if pid == 0:
    torch.set_num_threads(1)  # as DataLoader workers do: the parent's OpenMP threads are not in the child
    step()
    ig.ops.cpu_cache_stats()
    os._exit(0)
step()  # the parent goes on too
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        sys.exit(os.waitstatus_to_exitcode(status))
    time.sleep(0.05)
os.kill(pid, 9)
os.waitpid(pid, 0)
print("the forked child hung on the buffer cache's lock")
sys.exit(3)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_another_thread_holds_the_cache_lock_does_not_hang():
    # fork() copies a locked mutex but not the thread that would unlock it.
    out = subprocess.run([sys.executable, "-c", FORK_WHILE_LOCKED], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
