"""Reference architectures: shapes, default target layers, and a few training steps of each family."""
import pytest
import torch

from interpgan_ext.data import SynthFaces
from interpgan_ext.models import ARCHS, StyleGAN2Generator, build
from interpgan_ext.sampler import FeatureExtractor
from interpgan_ext.trainer import TrainConfig, Trainer


@pytest.mark.parametrize("arch", sorted(ARCHS))
@pytest.mark.parametrize("size", [16, 32, 64])
def test_shapes_and_default_layer(arch, size):
    G, D = build(arch, size, z_dim=16, width=8)
    x = G(torch.randn(3, 16))
    assert x.shape == (3, 3, size, size) and x.abs().max() <= 1
    assert D(x).shape == (3,)
    f = FeatureExtractor(G, G.default_layer).features(torch.randn(3, 16))
    assert f.dim() == 4 and f.shape[-1] == max(8, size // 4)


def test_bad_size():
    with pytest.raises(ValueError, match="16, 32, 64 or 128"):
        build("dcgan", 48)
    with pytest.raises(ValueError, match="unknown architecture"):
        build("vit", 32)


def test_stylegan2_noise_and_styles():
    G = StyleGAN2Generator(16, z_dim=16, width=8)
    z = torch.randn(2, 16)
    assert torch.equal(G(z), G(z))  # noise strengths start at 0
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.fill_(0.5)
    assert not torch.equal(G(z), G(z))  # noise inputs on
    G.set_noise("none")
    assert torch.equal(G(z), G(z))
    assert not torch.allclose(G(z)[0], G(z)[1])  # the style depends on z


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_each_family_trains(arch, tmp_path):
    torch.manual_seed(0)
    G, D = build(arch, 16, z_dim=16, width=8)
    cfg = TrainConfig(steps=4, batch_size=4, z_dim=16, n_groups=2, gmm_every=2, gmm_images=4, langevin_steps=1,
                      log_every=2, image_every=100, ckpt_every=100, device="cpu")
    logs = Trainer(G, D, G.default_layer, SynthFaces(16, n=16), cfg, out_dir=str(tmp_path)).fit(progress=False)
    assert all(torch.isfinite(torch.tensor(v)) for v in logs.values() if isinstance(v, float))


def test_modulated_conv_equals_per_sample_weights():
    from interpgan_ext.models.stylegan2 import ModulatedConv2d

    torch.manual_seed(0)
    conv = ModulatedConv2d(5, 4, 3, w_dim=6)
    x, w = torch.randn(3, 5, 7, 7), torch.randn(3, 6)
    style = conv.affine(w)
    for b in range(3):
        wb = conv.weight * style[b][None, :, None, None]
        wb = wb * torch.rsqrt(wb.pow(2).sum(dim=(1, 2, 3), keepdim=True) + 1e-8)
        want = torch.nn.functional.conv2d(x[b:b + 1], wb, padding=1)
        assert torch.allclose(conv(x, w)[b:b + 1], want, atol=1e-5)
