"""The Langevin chain as one captured CUDA graph (interpgan_ext/sampler_graph.py).

On the CPU the capture is a stand-in that runs the captured function again at each replay (Replayed): it checks what
the graphed path adds around the graph (static z and q, the `first` step, the generator's state handed over and back,
when to capture again, the eager fallback) against the eager chain. The CUDA tests capture real graphs."""
import copy
import math
import warnings

import pytest
import torch

from interpgan_ext import sampler_graph
from interpgan_ext.energy import EnergyModel
from interpgan_ext.models import build
from interpgan_ext.sampler import FeatureExtractor, LangevinSampler
from interpgan_ext.trainer import TrainConfig, frozen_batchnorm_stats


class Replayed:
    """A CPU stand-in for CudaGraphCapture: warm-up, 'capture' (one run, whose outputs become the static ones), and
    replays that run the function again and write its results into those outputs, as a graph's replay would."""

    captures = 0

    def __init__(self, fn, n_steps, device, generator):
        type(self).captures += 1
        fn(sampler_graph.WARMUP_STEPS)
        self.fn, self.n = fn, n_steps
        self.outputs = fn(n_steps)

    def replay(self):
        for static, new in zip(self.outputs, self.fn(self.n)):
            static.copy_(new)


@pytest.fixture
def on_cpu(monkeypatch):
    """The graphed path on CPU tensors, with Replayed as its capture."""
    monkeypatch.setattr("interpgan_ext.sampler.graphs_available", lambda z: True)
    monkeypatch.setattr(sampler_graph.GraphedChain.__init__, "__defaults__", (Replayed,))
    Replayed.captures = 0
    return Replayed


def make_sampler(device="cpu", cuda_graph=True, steps=4, arch="dcgan"):
    torch.manual_seed(0)
    G, _ = build(arch, 16, z_dim=16, width=8)
    G = G.to(device).train()
    layer = G.default_layer
    with torch.no_grad(), frozen_batchnorm_stats(G):
        M, H, W = FeatureExtractor(G, layer).features(torch.zeros(2, 16, device=device)).shape[1:]
    energy = EnergyModel(M, 3, H * W, init_scale=0.5).to(device)
    q = torch.arange(M, device=device) % 3
    return LangevinSampler(G, layer, energy, steps=steps, step_size=0.3, cuda_graph=cuda_graph), q


def chain(sampler, z, q, seed, **kw):
    gen = torch.Generator(z.device).manual_seed(seed)
    with frozen_batchnorm_stats(sampler.extractor.G):
        out = sampler.sample(z, q, generator=gen, **kw)
    return out, torch.randint(1 << 30, (4,), generator=gen, device=z.device)  # where the generator was left


def eager_twin(sampler, G=None):
    """The same chain, eager: on the same G, or on `G` (a copy, where BatchNorm statistics move)."""
    return LangevinSampler(G or sampler.extractor.G, sampler.extractor.layer_name, sampler.energy, sampler.steps,
                           sampler.step_size, sampler.prior_weight, sampler.drift_clip, cuda_graph=False)


@pytest.mark.parametrize("with_first", [False, True])
def test_graphed_chain_draws_and_moves_what_the_eager_one_does(on_cpu, with_first):
    sampler, q = make_sampler()
    z = torch.randn(5, 16)
    first = sampler.energy_grad(z, q) if with_first else None
    default_before = torch.default_generator.get_state()
    (got, got_e), got_next = chain(sampler, z, q, 7, first=first, return_energies=True)
    (want, want_e), want_next = chain(eager_twin(sampler), z, q, 7, first=first, return_energies=True)
    assert on_cpu.captures == 1 and sampler.uses_cuda_graph
    assert torch.equal(got, want) and torch.equal(got_e, want_e) and got_e.shape == (4, 5)
    assert torch.equal(got_next, want_next)  # the caller's generator moved on as far
    assert torch.equal(torch.default_generator.get_state(), default_before)  # the default one did not move
    assert not torch.equal(got, z)


@pytest.mark.parametrize("arch", ["dcgan", "stylegan2"])
def test_with_the_default_generator_the_draws_are_the_eager_ones_too(on_cpu, arch):
    # StyleGAN2's G draws noise in its forward, from the default generator, as the chain does when given none
    sampler, q = make_sampler(arch=arch)
    z = torch.randn(5, 16)
    chain(sampler, z, q, 1)  # captured with a generator of its own: the chain without one is another capture
    results = []
    for s in (sampler, eager_twin(sampler)):
        torch.manual_seed(3)
        results.append((s.sample(z, q, return_energies=True), torch.rand(3)))
    ((got, got_e), got_next), ((want, want_e), want_next) = results
    assert torch.equal(got, want) and torch.equal(got_e, want_e) and torch.equal(got_next, want_next)
    assert on_cpu.captures == 2


def test_a_given_generator_draws_the_langevin_noise_and_g_draws_from_the_default_one(on_cpu):
    sampler, q = make_sampler(arch="stylegan2")
    z = torch.randn(5, 16)
    results = []
    for s in (sampler, eager_twin(sampler)):
        torch.manual_seed(3)
        results.append((chain(s, z, q, 9), torch.rand(3)))
    ((got, got_next), got_default), ((want, want_next), want_default) = results
    assert torch.equal(got, want) and torch.equal(got_next, want_next) and torch.equal(got_default, want_default)


def test_replays_read_parameters_updated_in_place_and_recapture_when_they_move(on_cpu):
    sampler, q = make_sampler()
    twin = eager_twin(sampler)
    G = sampler.extractor.G
    z = torch.randn(5, 16)
    chain(sampler, z, q, 1)
    with torch.no_grad():  # an optimizer step: in place
        for p in G.parameters():
            p.mul_(1.1)
        sampler.energy.W.add_(0.2)
    assert torch.equal(chain(sampler, z, q, 2)[0], chain(twin, z, q, 2)[0])
    q2 = q.flip(0)  # a refit partition: copied into the static q
    assert torch.equal(chain(sampler, z, q2, 2)[0], chain(twin, z, q2, 2)[0])
    assert not torch.equal(chain(twin, z, q2, 2)[0], chain(twin, z, q, 2)[0])
    assert on_cpu.captures == 1  # one capture serves them all
    layer = G.get_submodule(sampler.extractor.layer_name)
    weight = next(layer.parameters())
    weight.data = weight.data.clone()  # new storage: the graph would read the old one
    assert torch.equal(chain(sampler, z, q, 3)[0], chain(twin, z, q, 3)[0])
    assert on_cpu.captures == 2


def test_a_new_capture_whenever_what_the_graph_read_changes(on_cpu, monkeypatch):
    monkeypatch.setattr(sampler_graph, "CAPTURES_BEFORE_A_VERDICT", 100)  # a capture at almost every run, on purpose
    sampler, q = make_sampler()
    twin = eager_twin(sampler)
    G = sampler.extractor.G
    z5, z3 = torch.randn(5, 16), torch.randn(3, 16)

    def same_as_eager(z):
        assert torch.equal(chain(sampler, z, q, 4)[0], chain(twin, z, q, 4)[0])

    def set_step_size(step_size):
        sampler.step_size = twin.step_size = step_size

    changes = [
        ("first call", lambda: None, z5, True),
        ("nothing", lambda: None, z5, False),
        ("the batch size", lambda: None, z3, True),
        ("G in eval mode", G.eval, z3, True),
        ("G in train mode", G.train, z3, True),
        ("the step size", lambda: set_step_size(0.05), z3, True),
        ("nothing", lambda: None, z3, False),
    ]
    for what, change, z, captures_again in changes:
        before = on_cpu.captures
        change()
        same_as_eager(z)
        assert on_cpu.captures == before + captures_again, what
    before = on_cpu.captures  # outside frozen_batchnorm_stats, BatchNorm's momenta are not the captured ones
    for momentum in (None, None, 0.5):
        if momentum is not None:
            for m in G.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.momentum = momentum
        sampler.sample(z3, q, generator=torch.Generator().manual_seed(5))
    assert on_cpu.captures == before + 2


def test_inputs_that_keep_changing_end_the_graphs(on_cpu):
    # alternating batch sizes: every run would capture (a sync and warm-up steps) and replay once
    sampler, q = make_sampler()
    zs = [torch.randn(5, 16), torch.randn(3, 16)]
    for i in range(4):
        chain(sampler, zs[i % 2], q, i)
    assert on_cpu.captures == 4 and sampler.uses_cuda_graph
    with pytest.warns(UserWarning, match=r"CUDA graph was captured 4 times in 4 runs: what it reads keeps changing .*"
                                         r"; it runs eagerly from now on"):
        got = chain(sampler, zs[0], q, 9)[0]
    assert torch.equal(got, chain(eager_twin(sampler), zs[0], q, 9)[0]) and not sampler.uses_cuda_graph
    sampler, q = make_sampler()  # a new capture now and then, each replayed often: graphs go on
    for i in range(12):
        chain(sampler, zs[i // 3 % 2], q, i)
    assert on_cpu.captures == 4 + 4 and sampler.uses_cuda_graph


def test_batchnorm_statistics_move_as_in_the_eager_chain(on_cpu):
    # Outside frozen_batchnorm_stats each step's forward updates G's running statistics. The warm-up and the capture
    # run the steps too (the capture only on the stand-in): what they wrote is undone.
    sampler, q = make_sampler()
    G = sampler.extractor.G
    twin = eager_twin(sampler, copy.deepcopy(G))
    z = torch.randn(5, 16)
    for seed in (1, 2):
        got = sampler.sample(z, q, generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got, twin.sample(z, q, generator=torch.Generator().manual_seed(seed)))
        for a, b in zip(G.buffers(), twin.extractor.G.buffers()):
            assert torch.equal(a, b)
    assert on_cpu.captures == 1


def test_training_steps_with_the_graphed_chain_are_the_eager_ones(on_cpu, tmp_path):
    # In the trainer the chain runs between G's forward, whose graph is kept, and the G step's backward through it:
    # the capture must leave what that graph saved untouched (BatchNorm's running statistics among it).
    from test_trainer import make_trainer

    runs = {}
    for mode in ("off", "on"):
        tr = make_trainer(tmp_path / mode, steps=6, langevin_graph=mode)
        logs = tr.fit(progress=False)
        runs[mode] = (logs, [p.detach().clone() for p in (*tr.G.parameters(), *tr.G.buffers(), tr.energy.W)])
    assert on_cpu.captures == 1
    (logs_off, state_off), (logs_on, state_on) = runs["off"], runs["on"]
    for k in ("loss_D", "L_cd", "L_interp", "loss_G"):
        assert logs_on[k] == logs_off[k], k
    assert all(torch.equal(a, b) for a, b in zip(state_on, state_off))


def test_edits_run_eagerly(on_cpu):
    sampler, q = make_sampler()
    z = torch.randn(4, 16)
    edit = lambda f: f * 0.5  # noqa: E731
    got = chain(sampler, z, q, 3, edit=edit)[0]
    assert on_cpu.captures == 0
    assert torch.equal(got, chain(eager_twin(sampler), z, q, 3, edit=edit)[0])


def test_a_forward_that_cannot_be_captured_warns_and_runs_eagerly(on_cpu, monkeypatch):
    def refuse(*args):
        raise RuntimeError("CUDA error: operation not permitted when stream is capturing\nmore")

    monkeypatch.setattr(sampler_graph.GraphedChain.__init__, "__defaults__", (refuse,))
    sampler, q = make_sampler()
    z = torch.randn(4, 16)
    with pytest.warns(UserWarning, match=r"LangevinSampler: the Langevin chain could not be captured as a CUDA graph "
                                         r"\(CUDA error: operation not permitted when stream is capturing\); it runs "
                                         r"eagerly from now on"):
        got = chain(sampler, z, q, 3)[0]
    assert torch.equal(got, chain(eager_twin(sampler), z, q, 3)[0])
    assert sampler.cuda_graph is False and not sampler.uses_cuda_graph
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chain(sampler, z, q, 3)  # once only


def test_without_a_gpu_the_option_changes_nothing():
    sampler, q = make_sampler(cuda_graph=True)
    z = torch.randn(4, 16)
    assert torch.equal(chain(sampler, z, q, 3)[0], chain(eager_twin(sampler), z, q, 3)[0])
    assert not sampler.uses_cuda_graph


def test_an_energy_that_is_not_a_module_is_refused_for_graphs():
    sampler, q = make_sampler()
    W = sampler.energy.W.detach()
    with pytest.raises(ValueError, match="cuda_graph=True needs the energy as an nn.Module .* got function"):
        LangevinSampler(sampler.extractor.G, sampler.extractor.layer_name, lambda f, q: f.sum((1, 2, 3)) * W.sum(),
                        cuda_graph=True)


def test_train_config_checks_langevin_graph():
    assert TrainConfig(langevin_graph="on").langevin_graph == "on"
    with pytest.raises(ValueError, match="langevin_graph must be 'off' or 'on', got 'yes'"):
        TrainConfig(langevin_graph="yes")


# ----------------------------------------------------------------------------- real graphs
def on_cuda(test):
    return pytest.mark.cuda(pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")(test))


@on_cuda
@pytest.mark.parametrize("with_first", [False, True])
def test_cuda_graph_chain_matches_the_eager_chain(with_first):
    sampler, q = make_sampler("cuda")
    twin = eager_twin(sampler)
    z = torch.randn(6, 16, device="cuda")
    first = sampler.energy_grad(z, q) if with_first else None
    default_before = torch.cuda.default_generators[0].get_state()
    for seed in (1, 2):
        (got, got_e), got_next = chain(sampler, z, q, seed, first=first, return_energies=True)
        (want, want_e), want_next = chain(twin, z, q, seed, first=first, return_energies=True)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(got_e, want_e, rtol=1e-4, atol=1e-4)
        assert torch.equal(got_next, want_next)  # the same draws: the generator moved as far
        with torch.no_grad():
            sampler.energy.W.mul_(1.5)  # in place: the next replay reads it
    assert torch.equal(torch.cuda.default_generators[0].get_state(), default_before)
    assert isinstance(sampler._graphed.graph, sampler_graph.CudaGraphCapture) and sampler.uses_cuda_graph


@on_cuda
def test_cuda_graph_of_a_forward_that_syncs_falls_back():
    sampler, q = make_sampler("cuda")
    layer = sampler.extractor.layer
    hook = layer.register_forward_hook(lambda m, i, out: out * float(out.mean()))  # .item(): no capture
    z = torch.randn(4, 16, device="cuda")
    with pytest.warns(UserWarning, match="could not be captured as a CUDA graph"):
        got = chain(sampler, z, q, 3)[0]
    torch.testing.assert_close(got, chain(eager_twin(sampler), z, q, 3)[0])
    hook.remove()


@on_cuda
def test_cuda_training_steps_with_the_graphed_chain_match_the_eager_ones(tmp_path):
    from test_trainer import make_trainer

    runs = {}
    for mode in ("off", "on"):
        tr = make_trainer(tmp_path / mode, steps=4, device="cuda", langevin_graph=mode)
        logs = tr.fit(progress=False)
        runs[mode] = (logs, tr.energy.W.detach().clone())
        assert tr.sampler.uses_cuda_graph == (mode == "on")
    (logs_off, W_off), (logs_on, W_on) = runs["off"], runs["on"]
    for k in ("loss_D", "L_cd", "L_interp", "loss_G"):
        assert math.isclose(logs_on[k], logs_off[k], rel_tol=1e-3, abs_tol=1e-5), (k, logs_on[k], logs_off[k])
    torch.testing.assert_close(W_on, W_off, rtol=1e-3, atol=1e-5)
