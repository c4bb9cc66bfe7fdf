"""Concept swaps and refinement on a toy generator whose channels each paint a known image region."""
import pytest
import torch
from torch import nn

from interpgan_ext.edit import deterministic, group_channels, refine, replace_channels, swap_concept
from interpgan_ext.energy import EnergyModel
from interpgan_ext.metrics.locality import locality_ratio
from interpgan_ext.models import StyleGAN2Generator

S, M = 12, 6


def regions():
    """Channel j paints the j-th horizontal band of 2 rows: disjoint, known regions [M, S, S]."""
    r = torch.zeros(M, S, S)
    for j in range(M):
        r[j, 2 * j: 2 * j + 2] = 1
    return r


class Paint(nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("regions", regions())

    def forward(self, z):  # z [B, M] -> f [B, M, S, S]: channel j is z_j on its band
        return z[:, :, None, None] * self.regions


class ToyPainter(nn.Module):
    """G(z): layer `paint` writes each channel into its band, `to_rgb` sums the channels into an image."""

    def __init__(self):
        super().__init__()
        self.paint = Paint()
        self.to_rgb = nn.Conv2d(M, 3, 1, bias=False)
        with torch.no_grad():
            self.to_rgb.weight.copy_(torch.rand(3, M, 1, 1) + 0.5)

    def forward(self, z):
        return torch.tanh(self.to_rgb(self.paint(z)))


def test_swap_edits_only_the_swapped_groups_regions():
    G = ToyPainter()
    gen = torch.Generator().manual_seed(0)
    za, zb = torch.randn(4, M, generator=gen), torch.randn(4, M, generator=gen)
    q = torch.tensor([0, 1, 1, 2, 0, 2])
    for groups in ([1], [0, 2]):  # one group, and a region of several
        res = swap_concept(G, "paint", za, zb, groups=groups, q=q)
        chans = group_channels(q, groups)
        inside = regions()[chans].sum(0).bool().expand(4, S, S)
        diff = (res.edited_a - res.a).abs().sum(1)
        assert diff[~inside].max() == 0, "a swap changed pixels outside the swapped channels' regions"
        assert (diff[inside] > 0).float().mean() > 0.9
        # the edited A shows B's content in the swapped region, and A's elsewhere; symmetrically for B
        assert torch.allclose(res.edited_a[inside[:, None].expand_as(res.a)], res.b[inside[:, None].expand_as(res.b)])
        assert torch.allclose(res.edited_b[~inside[:, None].expand_as(res.b)], res.b[~inside[:, None].expand_as(res.b)])
        assert torch.all(locality_ratio(res.a, res.edited_a, inside) == 0)


def test_swap_errors_are_clear():
    G = ToyPainter()
    z = torch.randn(2, M)
    q = torch.tensor([0, 0, 1, 1, 2, 2])
    with pytest.raises(ValueError, match="hold no filters"):
        swap_concept(G, "paint", z, z, groups=[5], q=q)
    with pytest.raises(ValueError, match="differ in shape"):
        swap_concept(G, "paint", z, z[:1], groups=[0], q=q)
    with pytest.raises(ValueError, match="partition q"):
        swap_concept(G, "paint", z, z, groups=[0])
    with pytest.raises(ValueError, match=r"channels must lie in \[0, 6\)"):
        swap_concept(G, "paint", z, z, channels=torch.tensor([6]))
    with pytest.raises(KeyError, match="no layer named"):
        swap_concept(G, "nope", z, z, groups=[0], q=q)


def test_stylegan2_swap_of_no_channels_changes_nothing():
    """Noise inputs are off while editing, so an empty swap reproduces the originals exactly."""
    torch.manual_seed(0)
    G = StyleGAN2Generator(size=16, z_dim=8, width=8)
    z = torch.randn(3, 8)
    res = swap_concept(G, G.default_layer, z, z.flip(0), channels=torch.tensor([], dtype=torch.long))
    assert torch.equal(res.edited_a, res.a) and torch.equal(res.edited_b, res.b)
    assert all(m.noise_mode == "random" for m in G.modules() if hasattr(m, "noise_mode"))  # restored
    with deterministic(G):
        assert not G.training


def test_refine_applies_the_edit_and_moves_z():
    G = ToyPainter()
    gen = torch.Generator().manual_seed(1)
    za, zb = torch.randn(3, M, generator=gen), torch.randn(3, M, generator=gen)
    q = torch.tensor([0, 1, 1, 2, 0, 2])
    res = swap_concept(G, "paint", za, zb, groups=[1], q=q)
    edit = replace_channels(res.features_b, res.channels)
    z0, x0 = refine(G, "paint", EnergyModel(M, 3, S * S, init_scale=0.5), za, q, edit=edit, steps=0)
    assert torch.equal(z0, za) and torch.allclose(x0, res.edited_a)  # no steps: the edited image itself
    z5, x5 = refine(G, "paint", EnergyModel(M, 3, S * S, init_scale=0.5), za, q, edit=edit, steps=5, step_size=0.1,
                    generator=torch.Generator().manual_seed(0))
    assert not torch.allclose(z5, za)
    inside = regions()[res.channels].sum(0).bool()
    # the swapped region still shows B's content (the edit stays applied), whatever z became
    assert torch.allclose(x5[:, :, inside], res.edited_a[:, :, inside])
