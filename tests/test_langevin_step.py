"""langevin_step against its reference, noise statistics, seeding, in-place use, registration and errors."""
import math

import pytest
import torch

from interpgan_ext import _backend
from interpgan_ext.ops import langevin_step, langevin_step_reference

DTYPES = [torch.float32, torch.float64, torch.float16, torch.bfloat16]
ATOL = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 2e-2, torch.bfloat16: 5e-2}
SHAPES = [(5,), (3, 7), (2, 3, 5, 5), (4, 1, 1), (0, 3)]
needs_ext = pytest.mark.skipif(not _backend.has_extension(), reason="compiled extension not loaded")


def inputs(shape, device, dtype, gen):
    mk = lambda: torch.randn(shape, generator=gen).to(device=device, dtype=dtype)  # noqa: E731
    return mk(), mk() * 3, mk()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("drift_clip", [None, 0.5])
def test_given_noise_matches_reference(shape, dtype, drift_clip, device, seeded):
    z, grad, noise = inputs(shape, device, dtype, seeded)
    got = langevin_step(z, grad, 0.3, prior_weight=0.7, drift_clip=drift_clip, noise=noise)
    want = langevin_step_reference(z.double(), grad.double(), 0.3, 0.7, drift_clip, noise.double())
    assert got.shape == z.shape and got.dtype == dtype
    assert torch.allclose(got.double(), want, atol=ATOL[dtype], rtol=ATOL[dtype])


def test_seeded_generator_reproduces(device):
    z = torch.randn(64, 33, device=device)
    grad = torch.randn(64, 33, device=device)
    run = lambda seed: langevin_step(z, grad, 0.2, generator=torch.Generator(device).manual_seed(seed))  # noqa: E731
    assert torch.equal(run(7), run(7))
    assert not torch.equal(run(7), run(8))
    torch.manual_seed(3)  # the default generator
    a = langevin_step(z, grad, 0.2)
    torch.manual_seed(3)
    assert torch.equal(a, langevin_step(z, grad, 0.2))
    assert not torch.equal(a, langevin_step(z, grad, 0.2))  # the generator advanced


def test_concurrent_chains_from_threads_equal_serial_ones(device):
    # Each thread's chain draws from its own seeded generator (and in place, into its own z): overlapping calls, the
    # GIL released inside the op, must neither mix the streams nor the updates.
    from concurrent.futures import ThreadPoolExecutor

    def chain(seed):
        gen = torch.Generator(device).manual_seed(seed)
        z = torch.randn(16, 64, 9, 9, generator=gen, device=device)
        grad = torch.randn(z.shape, generator=gen, device=device)
        for _ in range(5):
            z = langevin_step(z, grad, 0.1, drift_clip=2.0, generator=gen)
            langevin_step(z, grad, 0.1, generator=gen, out=z)
        return z

    serial = [chain(seed) for seed in range(6)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        for got, expected in zip(pool.map(chain, range(6)), serial):
            assert torch.equal(got, expected)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_noise_is_standard_normal(dtype, device):
    n = 1 << 20
    z = torch.zeros(n, device=device, dtype=dtype)
    eps = langevin_step(z, torch.zeros_like(z), 1.0, generator=torch.Generator(device).manual_seed(0)).double()
    # mean: standard error 1/sqrt(n) ~ 1e-3, allow 5 sigma; variance: s.e. sqrt(2/n) ~ 1.4e-3
    assert abs(eps.mean().item()) < 5 / math.sqrt(n)
    assert abs(eps.var().item() - 1) < 5 * math.sqrt(2 / n)
    # Box-Muller pairs and Philox lanes must be uncorrelated
    assert abs(torch.corrcoef(torch.stack([eps[:-1], eps[1:]]))[0, 1].item()) < 5 / math.sqrt(n)
    # tails: P(|x| > 3) = 0.0027
    assert abs((eps.abs() > 3).double().mean().item() - 0.0027) < 0.0006


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_noise_is_the_float32_noise_rounded(dtype, device):
    # 16-bit z draws in float32 (its accumulation type) from the same Philox words
    z = torch.zeros(1000, device=device)
    a = langevin_step(z, z, 1.0, generator=torch.Generator(device).manual_seed(1))
    b = langevin_step(z.to(dtype), z.to(dtype), 1.0, generator=torch.Generator(device).manual_seed(1))
    assert torch.equal(a.to(dtype), b)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_graph_replays_draw_fresh_noise_and_replay_the_seed():
    # The kernel reads the generator's offset on the device (PhiloxCudaState), so each replay of a captured graph
    # draws new noise, and reseeding before the replays gives the same sequence again.
    z = torch.zeros(1 << 16, device="cuda")
    out = torch.empty_like(z)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        langevin_step(z, z, 1.0, out=out)  # warm-up outside the capture
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        langevin_step(z, z, 1.0, out=out)

    def replays(seed):
        torch.cuda.manual_seed(seed)
        draws = []
        for _ in range(3):
            graph.replay()
            draws.append(out.clone())
        return draws

    first = replays(5)
    assert not torch.equal(first[0], first[1]) and not torch.equal(first[1], first[2])
    for eps in first:
        assert abs(eps.mean().item()) < 5 / math.sqrt(z.numel()) and abs(eps.var().item() - 1) < 0.03
    assert all(torch.equal(a, b) for a, b in zip(first, replays(5)))


def test_deterministic_drift_and_prior(device):
    z = torch.randn(10, 4, device=device, dtype=torch.float64)
    grad = torch.randn(10, 4, device=device, dtype=torch.float64)
    out = langevin_step(z, grad, 0.5, prior_weight=1.0, noise=torch.zeros_like(z))
    assert torch.allclose(out, z + 0.125 * (grad - z))
    clipped = langevin_step(z, grad * 100, 0.5, drift_clip=1.0, noise=torch.zeros_like(z))
    assert torch.allclose(clipped, z + 0.125 * (grad * 100 - z).clamp(-1, 1))


def test_in_place_out(device, seeded):
    z, grad, noise = inputs((6, 5), device, torch.float32, seeded)
    want = langevin_step(z, grad, 0.1, noise=noise)
    z_ptr = z.data_ptr()
    got = langevin_step(z, grad, 0.1, noise=noise, out=z)
    assert got is z and z.data_ptr() == z_ptr and torch.equal(z, want)
    # a non-contiguous z updated in place
    zt = torch.randn(5, 6, device=device).t()
    want = langevin_step(zt, grad, 0.1, noise=noise)
    langevin_step(zt, grad, 0.1, noise=noise, out=zt)
    assert torch.equal(zt, want)
    # a separate out tensor
    dst = torch.empty_like(want)
    assert langevin_step(zt, grad, 0.1, noise=noise, out=dst) is dst


@pytest.mark.parametrize("drift_clip", [None, 0.5])
def test_in_place_under_autograd_is_what_torch_in_place_ops_do(device, seeded, drift_clip):
    # z's history becomes the update's: gradients through out=z equal those through the functional update
    z0, grad0, noise0 = (t.double() for t in inputs((6, 5), device, torch.float32, seeded))

    def leaves():
        return [t.clone().requires_grad_(True) for t in (z0, grad0, noise0)]

    a, grad, noise = leaves()
    b = a * 2  # not a leaf: in place is allowed
    assert langevin_step(b, grad, 0.3, 0.7, drift_clip, noise=noise, out=b) is b
    (b * b).sum().backward()
    a2, grad2, noise2 = leaves()
    want = langevin_step_reference(a2 * 2, grad2, 0.3, 0.7, drift_clip, noise=noise2)
    (want * want).sum().backward()
    torch.testing.assert_close(b, want)
    for got, ref in ((a, a2), (grad, grad2), (noise, noise2)):
        torch.testing.assert_close(got.grad, ref.grad)
    # a leaf that requires grad cannot be updated in place, as in torch
    leaf = z0.clone().requires_grad_(True)
    with pytest.raises(RuntimeError, match="a leaf Variable that requires grad is being used in an in-place operation"):
        langevin_step(leaf, grad0, 0.1, out=leaf)


@needs_ext
def test_in_place_moves_the_version_counter(device, seeded):
    # A graph that saved z must not backpropagate through the overwritten values: the in-place op bumps z's version,
    # so autograd raises, as for torch's own in-place ops. (Without it, the stale gradient came out silently.)
    z, grad, noise = inputs((6, 5), device, torch.float32, seeded)
    version = z._version
    torch.ops.interpgan.langevin_step_(z, grad, 0.1, 1.0, None, noise, None)
    assert z._version == version + 1
    a = torch.randn(6, 5, device=device, requires_grad=True)
    w = a * 1.0
    y = (w * w).sum()  # saves w
    alias = w.detach()  # shares w's storage and version counter
    langevin_step(alias, grad, 0.1, noise=noise, out=alias)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_the_functional_update_keeps_no_input_for_its_backward(device, seeded):
    # It saves only where the drift was inside the clip, so z may change in place after it (as the sampler's z does)
    z, grad, noise = inputs((6, 5), device, torch.float64, seeded)
    for clip in (None, 0.5):
        zz = z.clone().requires_grad_(True)
        source = zz * 1.0
        out = langevin_step(source, grad, 0.3, 0.7, clip, noise=noise)
        source.data.zero_()  # touched in place (bumps its version) after the update
        source.add_(0)
        out.sum().backward()
        inside = ((grad - 0.7 * z).abs() <= clip) if clip else torch.ones_like(z, dtype=torch.bool)
        torch.testing.assert_close(zz.grad, 1 - 0.045 * 0.7 * inside.double())


@pytest.mark.parametrize("drift_clip", [None, 1.0])
def test_nan_propagates(device, drift_clip):
    z = torch.zeros(37, device=device)  # NaNs in the vectorised body and in the scalar tail of the CPU loop
    grad = torch.zeros(37, device=device)
    bad = torch.zeros(37, dtype=torch.bool, device=device)
    bad[[3, 20, 36]] = True
    grad[bad] = float("nan")
    out = langevin_step(z, grad, 0.1, drift_clip=drift_clip)
    assert torch.isnan(out[bad]).all() and torch.isfinite(out[~bad]).all()


def test_gradcheck(device):
    z = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    grad = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    noise = torch.randn(4, 3, dtype=torch.float64, device=device, requires_grad=True)
    for clip in (None, 0.7):
        assert torch.autograd.gradcheck(lambda z, g, n: langevin_step(z, g, 0.4, 0.8, clip, noise=n), (z, grad, noise))


@needs_ext
def test_opcheck(device, seeded):
    z, grad, noise = inputs((3, 4), device, torch.float32, seeded)
    ops = torch.ops.interpgan
    torch.library.opcheck(ops.langevin_step, (z, grad, 0.1, 1.0, 0.5, noise, None))
    torch.library.opcheck(ops.langevin_step, (z.requires_grad_(True), grad, 0.1, 1.0, None, noise, None))
    torch.library.opcheck(ops.langevin_step_, (z.detach().clone(), grad, 0.1, 1.0, None, noise, None))
    # without noise= the result is random, so only the registration checks that do not compare values
    torch.library.opcheck(
        ops.langevin_step, (z.detach(), grad, 0.1), test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_static")
    )


class TestBadInput:
    def test_integer_z(self):
        with pytest.raises(TypeError, match="floating-point"):
            langevin_step(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long), 0.1)

    def test_grad_dtype(self):
        with pytest.raises(TypeError, match="dtype of z"):
            langevin_step(torch.zeros(3), torch.zeros(3, dtype=torch.float64), 0.1)

    def test_grad_shape(self):
        with pytest.raises(ValueError, match="shape of z"):
            langevin_step(torch.zeros(3, 2), torch.zeros(2, 3), 0.1)

    def test_negative_step(self):
        with pytest.raises(ValueError, match="step_size >= 0"):
            langevin_step(torch.zeros(3), torch.zeros(3), -0.1)

    def test_bad_clip(self):
        with pytest.raises(ValueError, match="drift_clip > 0"):
            langevin_step(torch.zeros(3), torch.zeros(3), 0.1, drift_clip=0.0)

    def test_noise_shape(self):
        with pytest.raises(ValueError, match="noise"):
            langevin_step(torch.zeros(3), torch.zeros(3), 0.1, noise=torch.zeros(4))

    def test_out_shape(self):
        with pytest.raises(ValueError, match="out"):
            langevin_step(torch.zeros(3), torch.zeros(3), 0.1, out=torch.zeros(4))

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match="device"):
            langevin_step(torch.zeros(3).cuda(), torch.zeros(3), 0.1)


def cpu_noise(shape, seed, dtype=torch.float32):
    """The CPU op's noise alone: z' = z + step^2/2 (grad - pw z) + step eps with z = grad = 0, step = 1."""
    z = torch.zeros(shape, dtype=dtype)
    return langevin_step(z, z, 1.0, prior_weight=0.0, generator=torch.Generator().manual_seed(seed))


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_noise_is_a_function_of_the_seed_and_the_element(dtype):
    """The CPU kernel draws in-kernel: one key from the generator per call, then element e's noise from (key, e).
    So it does not depend on the number of threads, nor on the tensor's length or shape beyond e."""
    n = 300_007  # several blocks of 2048 and parallel tasks, and a partial chunk at the end
    ref = cpu_noise(n, 4, dtype)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one_thread = cpu_noise(n, 4, dtype)
        torch.set_num_threads(2)
        two_threads = cpu_noise(n, 4, dtype)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one_thread, ref) and torch.equal(two_threads, ref)
    assert torch.equal(cpu_noise((7, 1_001), 4, dtype).flatten(), ref[:7_007])
    assert torch.equal(cpu_noise(5, 4, dtype), ref[:5])
    assert not torch.equal(cpu_noise(n, 5, dtype), ref)
    # float16/bfloat16 draw in float32 and round
    assert torch.equal(cpu_noise(1_000, 4, torch.bfloat16), cpu_noise(1_000, 4).bfloat16())


@needs_ext
def test_cpu_seeded_update_is_the_update_with_its_noise():
    z, grad = torch.randn(33, 70), torch.randn(33, 70) * 3
    eps = cpu_noise(z.shape, 5)
    got = langevin_step(z, grad, 0.2, drift_clip=1.0, generator=torch.Generator().manual_seed(5))
    assert torch.equal(got, langevin_step(z, grad, 0.2, drift_clip=1.0, noise=eps))
    assert torch.allclose(got, langevin_step_reference(z, grad, 0.2, 1.0, 1.0, noise=eps), atol=1e-6)
    # one draw of the generator per call: the next call has other noise
    gen = torch.Generator().manual_seed(5)
    first, second = (langevin_step(torch.zeros(64), torch.zeros(64), 1.0, generator=gen) for _ in range(2))
    assert not torch.equal(first, second)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cpu_noise_distribution(dtype):
    """Kolmogorov-Smirnov against N(0, 1), the variance of every position in the kernel's chunk layout (element e
    is lane e % 8 of a Philox block; a float block gives 4 values, a double block 2), and correlation at lags
    1 to 32, which cover the lanes and the Box-Muller pairs."""
    stats = pytest.importorskip("scipy.stats")
    n = 1 << 21
    eps = cpu_noise(n, 11, dtype).double()
    assert stats.kstest(eps.numpy(), "norm").pvalue > 1e-3
    chunk = 32 if dtype == torch.float32 else 16
    per_position = eps.view(-1, chunk).var(dim=0)  # n / chunk samples each
    assert (per_position - 1).abs().max().item() < 5 * math.sqrt(2 / (n / chunk))
    centred = eps - eps.mean()
    for lag in range(1, 33):
        corr = (centred[:-lag] * centred[lag:]).mean().item() / centred.var().item()
        assert abs(corr) < 5 / math.sqrt(n), lag
    # both tails, as far as 2^21 samples reach: P(|x| > 4) = 6.3e-5 (132 expected)
    assert 80 < (eps.abs() > 4).sum().item() < 190
