"""group_energy against a float64 brute-force reference, its gradients, registration and errors."""
import warnings

import pytest
import torch

import interpgan_ext as ig
from interpgan_ext import _backend
from interpgan_ext.ops import group_energy, group_energy_reference


def brute_force_energy(f, W, groups):
    """SPEC §2 written out literally, in float64, with the [B, M, C, K] broadcast (tests only)."""
    f = f.double().reshape(f.shape[0], f.shape[1], -1)
    W = W.double()
    C = W.shape[1]
    fbar = torch.zeros(f.shape[0], C, f.shape[2], dtype=torch.float64, device=f.device)
    for c in range(C):
        members = groups == c
        if members.any():
            fbar[:, c] = f[:, members].mean(dim=1)
    return (W[None] * f[:, :, None] * fbar[:, None]).sum(dim=(1, 2, 3))


# (B, M, H, W, C): odd sizes, K = 1, C = 1, C = M, K not a multiple of the CPU tile (8), big-ish M.
SHAPES = [
    (3, 7, 5, 3, 3),
    (1, 1, 1, 1, 1),
    (5, 6, 1, 1, 6),
    (2, 9, 3, 7, 1),
    (4, 16, 4, 4, 5),
    (6, 33, 3, 5, 7),
    (9, 64, 4, 4, 24),
    (12, 130, 10, 13, 5),  # over 1 MB: the CPU kernels pack f and W tile-major (smaller ones read in place)
]


@pytest.fixture(params=["direct", "staged"] if torch.cuda.is_available() else ["direct"])
def product_kernels(request, device, monkeypatch):
    """On CUDA the products (group sums, df, dW) have two sets of kernels (INTERPGAN_CUDA_PRODUCTS): on a GPU the
    tests that use them run with each. "direct" is the default; the CPU has one set."""
    if request.param != "direct" and device != "cuda":
        pytest.skip("the staged products are CUDA kernels")
    monkeypatch.setenv("INTERPGAN_CUDA_PRODUCTS", request.param)
    return request.param


def make_inputs(B, M, H, Wd, C, device, dtype, w_dtype=None, empty_groups=True, gen=None):
    f = torch.randn(B, M, H, Wd, generator=gen).to(device=device, dtype=dtype)
    W = torch.randn(M, C, H * Wd, generator=gen).to(device=device, dtype=w_dtype or dtype)
    if empty_groups and C > 2:
        # use only some ids, so that some groups are empty
        ids = torch.randperm(C, generator=gen)[: max(1, C // 2)]
        groups = ids[torch.randint(0, len(ids), (M,), generator=gen)]
    else:
        groups = torch.randint(0, C, (M,), generator=gen)
    return f, W, groups.to(device)


def tol(dtype):
    return {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 5e-2}[dtype]


def rel_err(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm().clamp_min(1e-30)).item()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_matches_float64_reference(shape, dtype, device, seeded, product_kernels):
    f, W, groups = make_inputs(*shape, device, dtype, gen=seeded)
    g = group_energy(f, W, groups)
    assert g.shape == (shape[0],) and g.dtype == dtype
    assert rel_err(g, brute_force_energy(f, W, groups)) < tol(dtype)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_matches_float64_reference(shape, dtype, device, seeded, product_kernels):
    f, W, groups = make_inputs(*shape, device, dtype, gen=seeded)
    f.requires_grad_(True)
    W.requires_grad_(True)
    gg = torch.randn(shape[0], generator=seeded).to(device=device, dtype=dtype)
    df, dW = torch.autograd.grad(group_energy(f, W, groups), (f, W), gg)
    f64, W64 = f.detach().double().requires_grad_(True), W.detach().double().requires_grad_(True)
    rf, rW = torch.autograd.grad(brute_force_energy(f64, W64, groups), (f64, W64), gg.double())
    assert df.shape == f.shape and dW.shape == W.shape
    assert rel_err(df, rf) < tol(dtype)
    assert rel_err(dW, rW) < tol(dtype)


@pytest.mark.parametrize("energy", [group_energy, group_energy_reference], ids=["op", "reference"])
@pytest.mark.parametrize("B, M, K", [(0, 5, 7), (4, 0, 7), (4, 5, 0), (0, 300, 40)])
def test_zero_sized_dimensions(B, M, K, device, energy):
    # The kernels allocate their outputs uninitialised and write every element; with nothing to write, dW
    # must still be zeros (no samples contribute to it), and g is 0 (an empty sum). The reference (the
    # fallback backend) must give the same, [B, M, H, W] input included.
    f = torch.randn(B, M, K, device=device, requires_grad=True)
    W = torch.randn(M, 3, K, device=device, requires_grad=True)
    groups = torch.randint(0, 3, (M,), device=device)
    g4 = energy(f.detach().reshape(B, M, 1, K), W.detach(), groups)
    assert g4.shape == (B,) and torch.equal(g4, torch.zeros_like(g4))
    g = energy(f, W, groups)
    assert g.shape == (B,) and torch.equal(g, torch.zeros_like(g))
    df, dW = torch.autograd.grad(g.sum(), (f, W), allow_unused=True)
    assert df.shape == f.shape and dW.shape == W.shape
    assert torch.equal(dW, torch.zeros_like(dW)) and torch.equal(df, torch.zeros_like(df))


def test_three_dim_input_equals_four_dim(device, seeded):
    f, W, groups = make_inputs(4, 10, 3, 5, 4, device, torch.float64, gen=seeded)
    assert torch.allclose(group_energy(f, W, groups), group_energy(f.flatten(2), W, groups))


def test_non_contiguous_inputs(device, seeded, product_kernels):
    f_big = torch.randn(12, 6, 5, 4, generator=seeded, dtype=torch.float64).to(device)
    f = f_big.transpose(0, 1)[:, :, ::2]  # [6, 12, 3, 4], strided
    W = torch.randn(12, 9, 12, generator=seeded, dtype=torch.float64).to(device)[:, ::2]  # [12, 5, 12]
    groups = torch.randint(0, 5, (24,), generator=seeded).to(device)[::2]
    assert not f.is_contiguous() and not W.is_contiguous() and not groups.is_contiguous()
    f.requires_grad_(True)
    W.requires_grad_(True)
    g = group_energy(f, W, groups)
    assert rel_err(g, brute_force_energy(f, W, groups)) < 1e-10
    df, dW = torch.autograd.grad(g.sum(), (f, W))
    rf, rW = torch.autograd.grad(brute_force_energy(f, W, groups).sum(), (f, W))
    assert rel_err(df, rf) < 1e-10 and rel_err(dW, rW) < 1e-10


def test_empty_group_contributes_nothing(device, product_kernels):
    f = torch.randn(3, 4, 2, 2, dtype=torch.float64, device=device)
    W = torch.randn(4, 3, 4, dtype=torch.float64, device=device, requires_grad=True)
    groups = torch.tensor([0, 0, 2, 2], device=device)  # group 1 is empty
    g = group_energy(f, W, groups)
    (dW,) = torch.autograd.grad(g.sum(), W)
    assert torch.all(dW[:, 1] == 0)
    W2 = W.detach().clone()
    W2[:, 1] = 1e6  # weights of the empty group must not matter
    assert torch.allclose(group_energy(f, W2, groups), g.detach())


def test_half_precision_on_cpu_and_cuda(device, seeded, product_kernels):
    for dtype in (torch.float16, torch.bfloat16):
        for w_dtype in (dtype, torch.float32):
            f, W, groups = make_inputs(4, 12, 3, 3, 4, device, dtype, w_dtype=w_dtype, gen=seeded)
            g = group_energy(f, W, groups)
            assert g.dtype == w_dtype
            assert rel_err(g, brute_force_energy(f, W, groups)) < tol(dtype)
            f.requires_grad_(True)
            df, dW = torch.autograd.grad(group_energy(f, W.requires_grad_(True), groups).sum(), (f, W))
            assert df.dtype == dtype and dW.dtype == w_dtype


def test_reference_matches_brute_force(seeded):
    f, W, groups = make_inputs(5, 11, 3, 4, 6, "cpu", torch.float64, gen=seeded)
    assert rel_err(group_energy_reference(f, W, groups), brute_force_energy(f, W, groups)) < 1e-12


def test_gradcheck(device, seeded, product_kernels):
    f, W, groups = make_inputs(3, 6, 2, 3, 4, device, torch.float64, gen=seeded)
    f.requires_grad_(True)
    W.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda f, W: group_energy(f, W, groups), (f, W))


def test_nan_propagates(device, product_kernels):
    f = torch.randn(3, 5, 4, dtype=torch.float32, device=device)
    W = torch.randn(5, 2, 4, dtype=torch.float32, device=device)
    groups = torch.tensor([0, 1, 0, 1, 1], device=device)
    f[1, 2, 3] = float("nan")
    g = group_energy(f, W, groups)
    assert torch.isnan(g[1]) and torch.isfinite(g[0]) and torch.isfinite(g[2])


needs_ext = pytest.mark.skipif(not _backend.has_extension(), reason="compiled extension not loaded")


@needs_ext
def test_opcheck(device, seeded, product_kernels):
    f, W, groups = make_inputs(3, 7, 2, 3, 3, device, torch.float64, gen=seeded)
    torch.library.opcheck(torch.ops.interpgan.group_energy, (f, W, groups))
    torch.library.opcheck(torch.ops.interpgan.group_energy, (f.requires_grad_(True), W.requires_grad_(True), groups))
    gg = torch.randn(3, dtype=torch.float64, device=device)
    torch.library.opcheck(torch.ops.interpgan.group_energy_backward, (gg, f.detach(), W.detach(), groups))
    torch.library.opcheck(torch.ops.interpgan.group_energy_with_stats, (f.detach(), W.detach(), groups))
    _, stats = torch.ops.interpgan.group_energy_with_stats(f.detach(), W.detach(), groups)
    torch.library.opcheck(torch.ops.interpgan.group_energy_backward, (gg, f.detach(), W.detach(), groups, stats))
    # with inputs that require grad too (its g is differentiable, as group_energy's); the backward op's outputs
    # refuse to be differentiated (next test), which opcheck's gradient tests would do
    torch.library.opcheck(torch.ops.interpgan.group_energy_with_stats, (f, W, groups))


@needs_ext
def test_every_op_is_differentiable_once_and_says_so_when_differentiated_twice(device, seeded, product_kernels):
    # Autograd's fallback for an op without an autograd kernel only warns, and drops the gradient: g from
    # group_energy_with_stats got no gradient, and a second derivative came out as None. Now neither is silent.
    f, W, groups = make_inputs(3, 7, 2, 3, 3, device, torch.float64, gen=seeded)
    f.requires_grad_(True)
    W.requires_grad_(True)
    want = reference_backward(torch.ones(3, dtype=torch.float64, device=device), f.detach(), W.detach(), groups)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "autograd kernel was not registered" warning either
        g, stats = torch.ops.interpgan.group_energy_with_stats(f, W, groups)
        assert not stats.requires_grad
        got = torch.autograd.grad(g.sum(), (f, W))
        torch.testing.assert_close(got, want)
        for mask in ([True, True], [True, False], [False, True]):  # create_graph: first derivatives as usual
            inputs = [t for t, asked in zip((f, W), mask) if asked]
            got = torch.autograd.grad(group_energy(f, W, groups).sum(), inputs, create_graph=True)
            torch.testing.assert_close(got, tuple(w for w, asked in zip(want, mask) if asked))
            assert all(t.requires_grad for t in got)
            with pytest.raises(RuntimeError, match="first derivatives only.*group_energy_reference"):
                got[0].sum().backward()
        df, dW = torch.ops.interpgan.group_energy_backward(torch.ones(3, dtype=torch.float64, device=device,
                                                                     requires_grad=True), f, W, groups)
        with pytest.raises(RuntimeError, match="first derivatives only"):
            torch.autograd.grad(dW.sum(), W)
    # the reference is the way to second derivatives: it matches torch's numerical ones
    assert torch.autograd.gradgradcheck(group_energy_reference, (f, W, groups))


@needs_ext
@pytest.mark.parametrize("shape", [(6, 33, 3, 5, 7), (12, 130, 10, 13, 5)])  # read in place; packed, with a tail
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_backward_from_saved_stats_equals_recomputed(shape, dtype, device, seeded, product_kernels):
    # Autograd's forward saves the group means and sums; the backward given them must match one that recomputes.
    f, W, groups = make_inputs(*shape, device, dtype, gen=seeded)
    g, stats = torch.ops.interpgan.group_energy_with_stats(f, W, groups)
    assert torch.equal(g, torch.ops.interpgan.group_energy(f, W, groups))
    gg = torch.randn(shape[0], generator=seeded).to(device=device, dtype=dtype)
    saved = torch.ops.interpgan.group_energy_backward(gg, f, W, groups, stats)
    recomputed = torch.ops.interpgan.group_energy_backward(gg, f, W, groups)
    for a, b in zip(saved, recomputed):
        torch.testing.assert_close(a, b, rtol=tol(dtype), atol=tol(dtype))


@needs_ext
@pytest.mark.parametrize("shape", [(6, 33, 3, 5, 7), (12, 130, 10, 13, 5)])
def test_backward_output_mask(shape, device, seeded, product_kernels):
    # A gradient left out of output_mask is not computed (None); the other is unchanged, with or without stats.
    f, W, groups = make_inputs(*shape, device, torch.float64, gen=seeded)
    gg = torch.randn(shape[0], generator=seeded, dtype=torch.float64).to(device)
    _, stats = torch.ops.interpgan.group_energy_with_stats(f, W, groups)
    df, dW = torch.ops.interpgan.group_energy_backward(gg, f, W, groups)
    for saved in (None, stats):
        only_df = torch.ops.interpgan.group_energy_backward(gg, f, W, groups, saved, [True, False])
        only_dW = torch.ops.interpgan.group_energy_backward(gg, f, W, groups, saved, [False, True])
        assert only_df[1] is None and only_dW[0] is None
        torch.testing.assert_close(only_df[0], df, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(only_dW[1], dW, rtol=1e-12, atol=1e-12)
    assert torch.ops.interpgan.group_energy_backward(gg, f, W, groups, stats, [False, False]) == (None, None)
    torch.library.opcheck(torch.ops.interpgan.group_energy_backward, (gg, f, W, groups, stats, [False, True]))


@needs_ext
def test_autograd_asks_only_for_the_gradients_it_needs(device, seeded, product_kernels):
    # The sampler and L_real differentiate g in f only, L_cd in W only: each must get the same values as both.
    f, W, groups = make_inputs(5, 40, 4, 4, 6, device, torch.float64, gen=seeded)
    f.requires_grad_(True)
    W.requires_grad_(True)
    df, dW = torch.autograd.grad(group_energy(f, W, groups).sum(), (f, W))
    (df_only,) = torch.autograd.grad(group_energy(f, W, groups).sum(), (f,))  # W requires grad, but is not asked
    (dW_only,) = torch.autograd.grad(group_energy(f.detach(), W, groups).sum(), (W,))
    torch.testing.assert_close(df_only, df, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(dW_only, dW, rtol=1e-12, atol=1e-12)


@needs_ext
def test_backward_reads_grad_out_through_its_strides_and_dtype(device, seeded, product_kernels):
    # Autograd hands the gradient of g.sum() as a stride-0 expansion; the kernels read it in place, and any
    # floating dtype, not only a contiguous copy in the compute dtype.
    f, W, groups = make_inputs(6, 33, 3, 5, 7, device, torch.float32, gen=seeded)
    _, stats = torch.ops.interpgan.group_energy_with_stats(f, W, groups)
    every_other = torch.randn(12, generator=seeded).to(device)[::2]
    for gg in (torch.full((1,), 0.75, device=device).expand(6), every_other, every_other.half(), every_other.double()):
        expected = torch.ops.interpgan.group_energy_backward(gg.float().contiguous(), f, W, groups, stats)
        for saved in (None, stats):
            got = torch.ops.interpgan.group_energy_backward(gg, f, W, groups, saved)
            for a, b in zip(got, expected):
                torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def reference_backward(gg, f, W, groups):
    f64, W64 = f.detach().double().requires_grad_(True), W.detach().double().requires_grad_(True)
    return torch.autograd.grad(brute_force_energy(f64, W64, groups), (f64, W64), gg.double())


@needs_ext
@pytest.mark.parametrize("mask", [[True, True], [True, False], [False, True]])
@pytest.mark.parametrize("change", ["none", "W in place", "f through a view", "W another view of its storage",
                                    "W freed"])
def test_cpu_backward_reuses_packed_inputs_only_while_unchanged(change, mask, seeded):
    # Given the forward's statistics, the CPU backward reuses the tile-major copies of f and W that the forward
    # made on the same thread, while those tensors are unchanged (same storage, offset, shape, version). Whatever
    # changed in between, it must give what it gives on fresh copies of its inputs, which it has to pack anew.
    shape = (12, 130, 10, 13, 5)  # big enough to be packed
    f, W, groups = make_inputs(*shape, "cpu", torch.float32, gen=seeded)
    gg = torch.randn(shape[0], generator=seeded)
    storage = torch.randn(2, *W.shape, generator=seeded)
    if change == "W another view of its storage":
        W = storage[0]
    _, stats = torch.ops.interpgan.group_energy_with_stats(f, W, groups)  # packs f and W
    if change == "W in place":
        W.mul_(-0.5)
    elif change == "f through a view":
        f[3].add_(1.0)  # bumps the version that f shares with its views
    elif change == "W another view of its storage":
        W = storage[1]  # same storage, same shape, another offset
    elif change == "W freed":
        W_shape, version = W.shape, W._version
        del W
        W = torch.randn(W_shape, generator=seeded)  # maybe in the freed W's memory, and at its version
        assert W._version == version
    got = torch.ops.interpgan.group_energy_backward(gg, f, W, groups, stats, mask)
    expected = torch.ops.interpgan.group_energy_backward(gg, f.clone(), W.clone(), groups, stats, mask)
    for a, b in zip(got, expected):
        assert (a is None and b is None) or torch.equal(a, b)
    if change == "none":
        for a, b, wanted in zip(got, reference_backward(gg, f, W, groups), mask):
            assert not wanted or rel_err(a, b) < 1e-5


@needs_ext
def test_cpu_backward_of_inference_tensors(seeded):
    # Inference tensors keep no version counter, so their packed copies are never reused, and nothing fails.
    shape = (12, 130, 10, 13, 5)
    f, W, groups = make_inputs(*shape, "cpu", torch.float32, gen=seeded)
    gg = torch.randn(shape[0], generator=seeded)
    expected = reference_backward(gg, f, W, groups)
    with torch.inference_mode():
        fi, Wi = f.clone(), W.clone()
        _, stats = torch.ops.interpgan.group_energy_with_stats(fi, Wi, groups)
        for saved in (stats, None):
            for a, b in zip(torch.ops.interpgan.group_energy_backward(gg, fi, Wi, groups, saved), expected):
                assert rel_err(a, b) < 1e-5


@needs_ext
def test_concurrent_calls_from_threads_equal_serial_ones(device, seeded):
    # The CPU kernels keep packing buffers per calling thread and tile buffers per worker; torch.ops releases the
    # GIL, so calls from several Python threads (a data-loading thread, a second model) really overlap. Shapes of
    # different sizes make the buffers grow while other calls use theirs. Each result must equal the serial one.
    from concurrent.futures import ThreadPoolExecutor

    cases = [make_inputs(*shape, device, dtype, gen=seeded)
             for shape in [(12, 130, 10, 13, 5), (6, 33, 3, 5, 7), (16, 200, 8, 9, 11)]
             for dtype in (torch.float32, torch.float64)]

    def run(case):
        f, W, groups = case
        f, W = f.clone().requires_grad_(True), W.clone().requires_grad_(True)
        g = group_energy(f, W, groups)
        df, dW = torch.autograd.grad(g.sum(), (f, W))
        return g.detach(), df, dW

    serial = [run(case) for case in cases]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            for got, expected in zip(pool.map(run, cases), serial):
                for a, b in zip(got, expected):
                    assert torch.equal(a, b)


@needs_ext
def test_backward_rejects_bad_grad_out():
    f, W, groups = torch.randn(4, 6, 9), torch.randn(6, 3, 9), torch.tensor([0, 1, 2, 0, 1, 2])
    with pytest.raises(TypeError, match="expected grad_out to be a floating-point tensor, but got dtype Long"):
        torch.ops.interpgan.group_energy_backward(torch.ones(4, dtype=torch.long), f, W, groups)
    if not _backend.PYTHON_PRECHECKS:  # a C++ ValueError: see test_direct_op_call_checks_inputs
        with pytest.raises(ValueError, match=r"expected grad_out of shape \[B=4\], but got \[3\]"):
            torch.ops.interpgan.group_energy_backward(torch.ones(3), f, W, groups)


@needs_ext
def test_backward_rejects_stats_of_other_inputs():
    f, W, groups = torch.randn(4, 6, 9), torch.randn(6, 3, 9), torch.tensor([0, 1, 2, 0, 1, 2])
    _, stats = torch.ops.interpgan.group_energy_with_stats(f[:3], W, groups)
    with pytest.raises(RuntimeError, match="expected stats as returned by group_energy_with_stats"):
        torch.ops.interpgan.group_energy_backward(torch.ones(4), f, W, groups, stats)


@needs_ext
@pytest.mark.skipif(_backend.PYTHON_PRECHECKS, reason="this torch segfaults on C++ ValueErrors (see _backend); "
                    "the wrappers check in Python first")
def test_direct_op_call_checks_inputs():
    f = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="group id out of range"):
        torch.ops.interpgan.group_energy(f, torch.randn(3, 2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="expected W of shape"):
        torch.ops.interpgan.group_energy(f, torch.randn(3, 2, 5), torch.tensor([0, 1, 1]))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_cuda_products_choice_is_checked(monkeypatch):
    f, W, groups = make_inputs(2, 5, 2, 2, 3, "cuda", torch.float32)
    gg = torch.ones(2, device="cuda")
    monkeypatch.setenv("INTERPGAN_CUDA_PRODUCTS", "fastest")
    for call in (lambda: torch.ops.interpgan.group_energy(f, W, groups),
                 lambda: torch.ops.interpgan.group_energy_backward(gg, f, W, groups)):
        with pytest.raises(RuntimeError, match="INTERPGAN_CUDA_PRODUCTS must be 'direct' or 'staged', got 'fastest'"):
            call()


@needs_ext
def test_wrappers_precheck_in_python_where_torch_needs_it(monkeypatch):
    """With the Python pre-checks on (torch < 2.14), bad input to the compiled path raises the same errors."""
    from interpgan_ext.ops import langevin_step

    monkeypatch.setattr(_backend, "PYTHON_PRECHECKS", True)
    f = torch.randn(2, 3, 4)
    with pytest.raises(ValueError, match="group id out of range"):
        group_energy(f, torch.randn(3, 2, 4), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError, match="expected W of shape"):
        group_energy(f, torch.randn(3, 2, 5), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="expected grad of the shape of z"):
        langevin_step(torch.randn(3), torch.randn(4), 0.1)
    assert torch.allclose(group_energy(f, torch.ones(3, 2, 4), torch.tensor([0, 1, 1])),
                       group_energy_reference(f, torch.ones(3, 2, 4), torch.tensor([0, 1, 1])))


class TestBadInput:
    def setup_method(self):
        self.f = torch.randn(2, 3, 2, 2)
        self.W = torch.randn(3, 2, 4)
        self.groups = torch.tensor([0, 1, 1])

    def test_integer_f(self):
        with pytest.raises(TypeError, match="floating-point"):
            group_energy(self.f.long(), self.W, self.groups)

    def test_dtype_mismatch(self):
        with pytest.raises(TypeError, match="dtype of f"):
            group_energy(self.f, self.W.double(), self.groups)

    def test_groups_dtype(self):
        with pytest.raises(TypeError, match="int64"):
            group_energy(self.f, self.W, self.groups.int())

    def test_shape_mismatch_K(self):
        with pytest.raises(ValueError, match=r"K=4"):
            group_energy(self.f, torch.randn(3, 2, 5), self.groups)

    def test_shape_mismatch_M(self):
        with pytest.raises(ValueError, match=r"M=3"):
            group_energy(self.f, torch.randn(4, 2, 4), self.groups)

    def test_groups_length(self):
        with pytest.raises(ValueError, match="groups of length M=3"):
            group_energy(self.f, self.W, torch.tensor([0, 1]))

    def test_group_id_out_of_range(self):
        with pytest.raises((ValueError, RuntimeError), match="out of range"):
            group_energy(self.f, self.W, torch.tensor([0, 2, 1]))
        with pytest.raises((ValueError, RuntimeError), match="out of range"):
            group_energy(self.f, self.W, torch.tensor([0, -1, 1]))

    def test_wrong_rank(self):
        with pytest.raises(ValueError, match=r"\[B, M, H, W\]"):
            group_energy(torch.randn(3, 4), self.W, self.groups)

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device")
    def test_mixed_devices(self):
        with pytest.raises(RuntimeError, match="one device"):
            group_energy(self.f.cuda(), self.W, self.groups)


def test_compile_fullgraph_uses_both_ops(device, seeded):
    """torch.compile(fullgraph=True) over both ops, forward and backward, with no graph break."""
    f, W, groups = make_inputs(4, 8, 3, 3, 3, device, torch.float32, gen=seeded)
    z = torch.randn(4, 5, generator=seeded).to(device)
    grad = torch.randn(4, 5, generator=seeded).to(device)
    noise = torch.randn(4, 5, generator=seeded).to(device)

    def fn(f, W, z, grad, noise):
        energy = group_energy(torch.tanh(f), W, groups).sum()
        return energy, ig.ops.langevin_step(z, grad, 0.1, drift_clip=2.0, noise=noise)

    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    results = []
    for run in (compiled, fn):
        fr, Wr = f.clone().requires_grad_(True), W.clone().requires_grad_(True)
        energy, z2 = run(fr, Wr, z, grad, noise)
        energy.backward()
        results.append((energy.detach(), z2, fr.grad, Wr.grad))
    for got, want in zip(*results):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_torch_func_transforms_run_the_reference(device, seeded):
    """grad, vmap and jacrev over group_energy: the compiled ops' C++ autograd cannot run under torch.func, so the
    wrapper runs the reference there, which the transforms differentiate and batch."""
    f, W, groups = make_inputs(4, 7, 3, 2, 4, device, torch.float64, gen=seeded)  # a group may be empty
    one = lambda f1, W: group_energy(f1[None], W, groups)[0]  # noqa: E731  (one sample's energy)
    torch.testing.assert_close(torch.func.vmap(one, in_dims=(0, None))(f, W), group_energy(f, W, groups))
    per_sample_dW = torch.func.vmap(torch.func.grad(one, argnums=1), in_dims=(0, None))(f, W)
    for b in range(f.shape[0]):
        Wb = W.clone().requires_grad_(True)
        group_energy(f[b:b + 1], Wb, groups).sum().backward()
        torch.testing.assert_close(per_sample_dW[b], Wb.grad)
    jac = torch.func.jacrev(lambda f: group_energy(f, W, groups))(f)  # [B, B, M, H, W]: sample b's g on its f only
    fr = f.clone().requires_grad_(True)
    group_energy(fr, W, groups).sum().backward()
    torch.testing.assert_close(torch.einsum("bb...->b...", jac), fr.grad)
    off_diagonal = jac.clone()
    off_diagonal[range(f.shape[0]), range(f.shape[0])] = 0
    assert off_diagonal.abs().max() == 0


def test_torch_func_grad_through_a_langevin_step(device, seeded):
    z, grad, noise = (torch.randn(3, 5, generator=seeded, dtype=torch.float64).to(device) for _ in range(3))
    loss = lambda z: ig.ops.langevin_step(z, grad, 0.3, 0.7, drift_clip=1.0, noise=noise).pow(2).sum()  # noqa: E731
    zr = z.clone().requires_grad_(True)
    loss(zr).backward()
    torch.testing.assert_close(torch.func.grad(loss)(z), zr.grad)
    batched = torch.func.vmap(lambda z1, n1: ig.ops.langevin_step(z1, z1 * 0, 0.3, noise=n1))(z, noise)
    torch.testing.assert_close(batched, ig.ops.langevin_step(z, z * 0, 0.3, noise=noise))
