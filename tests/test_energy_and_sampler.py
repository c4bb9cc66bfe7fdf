"""Losses of SPEC §5 against direct formulas, W's projection, and the Langevin sampler."""
import pytest
import torch
from torch import nn

from interpgan_ext.energy import EnergyModel
from interpgan_ext.sampler import FeatureExtractor, LangevinSampler, get_layer


def test_loss_interp_matches_formula():
    torch.manual_seed(0)
    em = EnergyModel(5, 3, 4)
    with torch.no_grad():
        em.W.uniform_(0, 1)
    q = torch.tensor([0, 2, 2, 1, 0])
    W = em.W.detach()
    own = sum(W[j, q[j]].sum() for j in range(5))
    other = W.sum() - own
    assert torch.allclose(em.loss_interp(q, lambda1=0.7), (-own + 0.7 * other) / (5 * 4))
    with pytest.raises(ValueError, match=r"expected q of shape \[M=5\] \(a group id per filter\), got \[4\]"):
        em.loss_interp(q[:4])


def test_loss_cd_and_real_match_formula():
    torch.manual_seed(1)
    em = EnergyModel(4, 2, 6)
    q = torch.tensor([0, 1, 1, 0])
    fp, fn = torch.randn(3, 4, 2, 3), torch.randn(3, 4, 2, 3)
    assert torch.allclose(em.loss_cd(fp, fn, q), em(fn, q).mean() - em(fp, q).mean())
    f = fp.clone().requires_grad_(True)
    loss = em.loss_real(f, q)
    assert torch.allclose(loss, -em(fp, q).mean())
    loss.backward()
    assert em.W.grad is None and f.grad is not None  # W is held fixed for G's realism term


def test_projection_keeps_w_in_box():
    em = EnergyModel(3, 2, 2, w_max=0.5)
    with torch.no_grad():
        em.W.copy_(torch.randn(3, 2, 2) * 3)
    em.project_()
    assert em.W.min() >= 0 and em.W.max() <= 0.5


class TinyG(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(6, 4 * 9)
        self.mid = nn.Tanh()
        self.out = nn.Linear(36, 12)
        self.calls_after_mid = 0

    def forward(self, z):
        h = self.mid(self.fc(z).view(-1, 4, 3, 3))
        self.calls_after_mid += 1
        return self.out(h.flatten(1))


def test_feature_extractor_stops_at_the_layer():
    G = TinyG()
    f = FeatureExtractor(G, "mid").features(torch.randn(2, 6))
    assert f.shape == (2, 4, 3, 3) and G.calls_after_mid == 0
    x, f2 = FeatureExtractor(G, "mid").images_and_features(torch.randn(2, 6))
    assert x.shape == (2, 12) and G.calls_after_mid == 1


class InPlaceAfterLayer(nn.Module):
    """A generator whose target layer ("norm") is overwritten in place by the next module, as with
    nn.ReLU(inplace=True) after a BatchNorm; `overwrite_from` > 0 does it only from that forward on."""

    def __init__(self, overwrite_from=0):
        super().__init__()
        self.fc = nn.Linear(6, 4 * 9)
        self.norm = nn.BatchNorm2d(4)
        self.out = nn.Linear(36, 12)
        self.forwards, self.overwrite_from = 0, overwrite_from

    def forward(self, z):
        h = self.norm(self.fc(z).view(-1, 4, 3, 3))
        if self.forwards >= self.overwrite_from:
            h = torch.relu_(h)
        self.forwards += 1
        return self.out(h.flatten(1))


def test_a_full_forward_returns_the_layers_own_output_even_when_a_later_module_overwrites_it():
    torch.manual_seed(0)
    G, z = InPlaceAfterLayer(), torch.randn(5, 6)
    ext = FeatureExtractor(G, "norm")
    with torch.no_grad():
        _, first = ext.images_and_features(z)  # the first full forward finds the overwrite
    assert ext.copy_output is True
    x, f = ext.images_and_features(z)
    expected = ext.features(z)
    assert (f < 0).any() and torch.equal(f, expected) and torch.equal(first, expected)  # not ReLU'd
    # the copy stays in the graph: gradients reach the layers before it, through f and through x
    (f.sum() + x.sum()).backward()
    assert G.fc.weight.grad.abs().sum() > 0

    # a layer nothing overwrites is not copied after the first forward
    plain = FeatureExtractor(TinyG(), "mid")
    plain.images_and_features(torch.randn(2, 6))
    assert plain.copy_output is False
    # and an overwrite that starts after the first forward (control flow on the data) is an error, not silent
    late = FeatureExtractor(InPlaceAfterLayer(overwrite_from=1), "norm")
    late.images_and_features(z)
    assert late.copy_output is False
    with pytest.raises(RuntimeError, match="overwritten in place"):
        late.images_and_features(z)


def test_a_chain_started_from_the_callers_forward_is_the_same_chain():
    # The trainer gives the sampler its first gradient from its own forward of G (energy_grad_of); the chain must be
    # the one the sampler would have run, to the bit.
    torch.manual_seed(0)
    G = InPlaceAfterLayer()
    q = torch.tensor([0, 1, 1, 0])
    sampler = LangevinSampler(G, "norm", EnergyModel(4, 2, 9), steps=3, step_size=0.2)
    z = torch.randn(5, 6, requires_grad=True)
    _, f = FeatureExtractor(G, "norm").images_and_features(z)
    first = sampler.energy_grad_of(f, z, q)
    grad, g = sampler.energy_grad(z, q)
    assert torch.equal(first[0], grad) and torch.equal(first[1], g) and first[1].grad_fn is None
    started = sampler.sample(z, q, generator=torch.Generator().manual_seed(1), first=first, return_energies=True)
    plain = sampler.sample(z, q, generator=torch.Generator().manual_seed(1), return_energies=True)
    assert torch.equal(started[0], plain[0]) and torch.equal(started[1], plain[1])
    assert f.grad_fn is not None  # the caller's graph is kept for its own backward


def test_unknown_layer_lists_names():
    try:
        get_layer(TinyG(), "nope")
    except KeyError as e:
        assert "mid" in str(e)
    else:
        raise AssertionError("no error")


def test_sampler_raises_energy():
    torch.manual_seed(0)
    G = TinyG()
    em = EnergyModel(4, 2, 9)
    with torch.no_grad():
        em.W.uniform_(0.5, 1.0)
    q = torch.tensor([0, 0, 1, 1])
    sampler = LangevinSampler(G, "mid", em, steps=30, step_size=0.05, prior_weight=0.0, drift_clip=None)
    z = torch.randn(16, 6)
    z_new, energies = sampler.sample(z, q, generator=torch.Generator().manual_seed(0), return_energies=True)
    assert energies.shape == (30, 16)
    assert energies[-5:].mean() > energies[:5].mean()
    assert not torch.equal(z_new, z)
    assert all(p.grad is None for p in G.parameters())  # G gets no gradient from sampling
