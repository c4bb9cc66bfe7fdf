"""Interpretation methods on constructions whose answer is known (issue 5)."""
import pytest
import torch
from torch import nn

from interpgan_ext.analysis import (ablate_units, artifact_units, average_causal_effect, conditional_boundary,
                                    edit_along, ganspace, invert, latent_shift_masks, linear_weights, mask_iou,
                                    rank_units_by_ace, rescoring, sefa, svm_boundary, train_encoder)
from interpgan_ext.edit import generate

from test_edit import M, ToyPainter, regions


def cos(a, b):
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0).abs())


class LinearG(nn.Module):
    """z [B, d] -> image [B, 3, 8, 8] = reshape(A z): `map` is the Linear layer that reads z."""

    def __init__(self, A):
        super().__init__()
        self.map = nn.Linear(A.shape[1], A.shape[0], bias=False)
        with torch.no_grad():
            self.map.weight.copy_(A)

    def forward(self, z):
        return self.map(z).reshape(-1, 3, 8, 8)


def planted(d=6, seed=0):
    """A = U diag(s) V^T with known right singular vectors V and distinct singular values."""
    gen = torch.Generator().manual_seed(seed)
    U, _ = torch.linalg.qr(torch.randn(192, d, generator=gen))
    V, _ = torch.linalg.qr(torch.randn(d, d, generator=gen))
    s = torch.tensor([10.0, 6.0, 3.0, 1.0, 0.5, 0.2])[:d]
    return (U * s) @ V.T, V


def test_sefa_recovers_planted_directions():
    A, V = planted()
    dirs, evals = sefa(linear_weights(LinearG(A), ["map"]))
    assert torch.all(evals[:-1] >= evals[1:])  # descending, by construction of the order
    for k in range(3):
        assert cos(dirs[k], V[:, k]) >= 0.99
    with pytest.raises(ValueError, match="2-D weight"):
        linear_weights(ToyPainter(), ["paint"])


def test_ganspace_recovers_the_dominant_direction():
    A, V = planted()
    G = LinearG(A)
    z = torch.randn(2000, 6, generator=torch.Generator().manual_seed(1))
    dirs, ratio = ganspace(z, G, "map", n_components=3, batch_size=250)
    assert cos(dirs[0], V[:, 0]) >= 0.99 and cos(dirs[1], V[:, 1]) >= 0.99
    assert ratio[0] > ratio[1] > ratio[2]
    dz, _ = ganspace(z * torch.tensor([3.0, 1, 1, 1, 1, 1]), n_components=2)  # PCA of the latents themselves
    assert cos(dz[0], torch.eye(6)[0]) >= 0.99


def test_svm_boundary_conditional_and_rescoring():
    gen = torch.Generator().manual_seed(2)
    n1 = torch.nn.functional.normalize(torch.randn(8, generator=gen), dim=0)
    z = torch.randn(5000, 8, generator=gen)
    normal, acc = svm_boundary(z, z @ n1 + 0.05 * torch.randn(5000, generator=gen))
    assert cos(normal, n1) >= 0.99 and acc == 1.0 and float(normal @ n1) > 0
    n2 = torch.nn.functional.normalize(n1 + torch.eye(8)[0], dim=0)
    cond = conditional_boundary(n2, n1)
    assert abs(float(cond @ n1)) < 1e-6 and cond.norm() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="span"):
        conditional_boundary(n1, n1)
    # re-scoring on a linear G: attribute = mean of the image's first channel, which moves with A^T-direction
    A, V = planted()
    G = LinearG(A)
    attr = lambda x: torch.stack([x[:, 0].mean((1, 2)), x[:, 1].mean((1, 2))], 1)  # noqa: E731
    zz = torch.randn(16, 6, generator=gen)
    da = rescoring(G, zz, V[:, 0], attr, alpha=2.0)
    want = (attr(G(zz + 2.0 * V[:, 0])) - attr(G(zz))).mean(0)
    assert torch.allclose(da, want, atol=1e-5) and da.shape == (2,)


def test_edit_along_in_z_and_in_a_layer_input():
    A, V = planted()
    G = LinearG(A)
    z = torch.randn(3, 6)
    imgs = edit_along(G, z, V[:, 0], [-1.0, 0.0, 2.0])
    assert imgs.shape == (3, 3, 3, 8, 8) and torch.allclose(imgs[1], G(z))
    via_layer = edit_along(G, z, V[:, 0], [2.0], layers=["map"])  # shifting the Linear's input = shifting z here
    assert torch.allclose(via_layer[0], imgs[2], atol=1e-5)


def band_score(j):
    """Share of band j's pixels that are bright: a concept score for the toy painter."""
    inside = regions()[j].bool()
    return lambda x: (x.mean(1)[:, inside].abs() > 0.05).float().mean(1)


def test_ablation_insertion_and_ace_find_the_painting_unit():
    G = ToyPainter()
    z = torch.randn(32, M, generator=torch.Generator().manual_seed(3)).abs() + 0.5  # every unit on
    x, _ = generate(G, "paint", z, edit=ablate_units([2]))
    assert x.mean(1)[:, regions()[2].bool()].abs().max() == 0  # ablation removes unit 2's band
    values = torch.ones(M)
    ace = average_causal_effect(G, "paint", [2], band_score(2), z, values[2:3])
    assert ace > 0.9
    units, aces = rank_units_by_ace(G, "paint", band_score(4), z, values)
    assert int(units[0]) == 4 and aces[0] > 0.9 and aces[1:].abs().max() < 1e-6
    # an "artifact" unit: the realism score penalises brightness in band 5; ablating unit 5 helps most
    realism = lambda x: -x.mean(1)[:, regions()[5].bool()].abs().mean(1)  # noqa: E731
    art, gain = artifact_units(G, "paint", realism, z, range(M), top=2)
    assert int(art[0]) == 5 and gain[0] > 0


class Background(nn.Module):
    """z [B, 3] -> image: the central square is drawn by z[0] (the object), the rest by z[1] (background)."""

    def __init__(self):
        super().__init__()
        m = torch.zeros(16, 16, dtype=torch.bool)
        m[4:12, 4:12] = True
        self.register_buffer("obj", m)

    def forward(self, z):
        obj = torch.tanh(z[:, 0])[:, None, None]
        bg = torch.tanh(z[:, 1])[:, None, None]
        img = torch.where(self.obj, obj, bg) + 0.01 * z[:, 2:3, None]
        return img[:, None].expand(-1, 3, -1, -1)


def test_latent_shift_segments_the_planted_background():
    G = Background()
    z = torch.randn(8, 3, generator=torch.Generator().manual_seed(4))
    masks = latent_shift_masks(G, z, torch.tensor([0.0, 1.0, 0.0]), margin=1e-3)
    assert mask_iou(masks, ~G.obj.expand(8, -1, -1)) == 1.0


class SmallG(nn.Module):
    """A small, injective conv generator for inversion."""

    def __init__(self, z_dim=4):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(z_dim, 8 * 4 * 4)
        self.up = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(8, 3, 3, padding=1))

    def forward(self, z):
        return torch.tanh(self.up(torch.tanh(self.fc(z)).reshape(-1, 8, 4, 4)))


def test_inversion_recovers_gs_own_latents():
    G = SmallG()
    z_true = 0.7 * torch.randn(6, 4, generator=torch.Generator().manual_seed(5))
    x = G(z_true).detach()
    z_opt, rec, err = invert(G, x, 4, steps=400, lr=0.05, reg_weight=0.0)
    assert err.max() < 1e-4 and torch.allclose(z_opt, z_true, atol=0.05)
    # with a feature loss too (any differentiable extractor): still G's own latents
    pooled = lambda imgs: torch.nn.functional.avg_pool2d(imgs, 2).flatten(1)  # noqa: E731
    z_feat, _, err_feat = invert(G, x, 4, steps=400, lr=0.05, reg_weight=0.0, feature_fn=pooled, feature_weight=1.0)
    assert err_feat.max() < 1e-4 and torch.allclose(z_feat, z_true, atol=0.05)
    E = train_encoder(G, 4, 8, steps=300, batch_size=64, lr=3e-3)
    z_enc = E(x)
    assert (z_enc - z_true).abs().mean() < 0.3  # the encoder's guess is close
    z_dom, _, err_dom = invert(G, x, 4, steps=150, lr=0.02, encoder=E, reg_weight=0.01)
    assert err_dom.max() < 1e-3 and (z_dom - z_true).abs().mean() < (z_enc - z_true).abs().mean()


@pytest.mark.slow
def test_attribute_classifier_learns_synthfaces(tmp_path):
    from interpgan_ext.analysis.attributes import load_or_train_attribute_classifier

    _, scores = load_or_train_attribute_classifier(str(tmp_path), 16, steps=150, progress=False)
    assert scores["skin_tone"]["r2"] > 0.6 and scores["hair_color"]["r2"] > 0.4
    binary = [v["accuracy"] for v in scores.values() if isinstance(v, dict) and "accuracy" in v]
    assert sum(binary) / len(binary) > 0.7  # always guessing the majority class averages 0.65 over these five
    assert (tmp_path / "attributes_16px.pt").exists()


def test_learned_directions_are_told_apart():
    from interpgan_ext.analysis.learned import learn_directions

    A, _ = planted()
    G = LinearG(A)
    dirs, _, acc = learn_directions(G, 6, K=3, steps=250, batch_size=32, lr=3e-3)
    assert dirs.shape == (3, 6) and torch.allclose(dirs @ dirs.T, torch.eye(3), atol=1e-5)  # orthonormal
    assert acc > 0.8  # chance is 1/3


def test_brightness_walk_finds_the_planted_direction():
    from interpgan_ext.analysis.learned import EDITS, learn_walk

    gen = torch.Generator().manual_seed(6)
    B = 0.05 * torch.randn(192, 6, generator=gen)  # images well inside [-1, 1], so the edit's clamp stays idle
    B = B - B.mean(0)  # columns that change the image without changing its mean...
    B[:, 0] = 0.1  # ...except z_0, which brightens every pixel
    G = LinearG(B)
    w, loss = learn_walk(G, 6, "brightness", steps=300, max_alpha=0.3)
    assert cos(w, torch.eye(6)[0]) >= 0.99 and loss < 1e-3
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    assert torch.allclose(EDITS["zoom"](x, 0.0), x, atol=1e-5) and torch.allclose(EDITS["shift"](x, 0.0), x, atol=1e-5)
    with pytest.raises(ValueError, match="edit must be"):
        learn_walk(G, 6, "rotate", steps=1)


class TinyImageText(nn.Module):
    """A randomly initialised image-text model with the open_clip interface, small enough to script and save."""

    image_size: int

    def __init__(self, dim: int = 16):
        super().__init__()
        self.image_size = 16
        self.img = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(32, dim))
        self.tok = nn.EmbeddingBag(257, dim)

    @torch.jit.export
    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.img(x)

    @torch.jit.export
    def encode_text(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.tok(tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encode_image(x)


def test_text_edit_loads_a_local_model_and_lowers_the_text_loss(tmp_path):
    from interpgan_ext.analysis.text_edit import byte_tokens, load_image_text_model, text_edit

    torch.manual_seed(0)
    path = str(tmp_path / "tiny_clip.pt")
    torch.jit.script(TinyImageText()).save(path)
    model, tokenizer, size = load_image_text_model(path)
    assert size == 16 and tokenizer is byte_tokens
    tokens = tokenizer(["a face with red hair"])
    assert tokens.shape == (1, 32) and tokens[0, 0] == ord("a") + 1 and tokens[0, -1] == 0
    G = SmallG()
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))
    z_new, x, hist = text_edit(G, z, model, tokens, size, steps=60, lr=0.05, l2_weight=0.001)
    assert hist[-1] < hist[0] and not torch.allclose(z_new, z) and x.shape == (4, 3, 8, 8)
    with pytest.raises(ImportError, match="open_clip"):
        load_image_text_model("open_clip:ViT-B-32:/nonexistent.pt")


_LOADER = '''
import torch
from torch import nn
from interpgan_ext.analysis.text_edit import byte_tokens


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.img = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
                                 nn.Linear(32, 16))
        self.tok = nn.EmbeddingBag(257, 16)

    def encode_image(self, x):
        return self.img(x)

    def encode_text(self, tokens):
        return self.tok(tokens)


def load(device):
    torch.manual_seed(0)
    return Tiny().to(device).train(), byte_tokens, 16


def not_a_triple(device):
    return Tiny()


def no_text_encoder(device):
    return nn.Linear(2, 2), byte_tokens, 16
'''


def test_text_edit_loads_a_model_from_a_loader_function_of_the_users(tmp_path, monkeypatch):
    # The way to any image-text model (Hugging Face's CLIP, say) without TorchScript, which torch 2.15 deprecates.
    from interpgan_ext.analysis.text_edit import byte_tokens, load_image_text_model, text_edit

    loader = tmp_path / "my_clip_loader.py"
    loader.write_text(_LOADER)
    model, tokenizer, size = load_image_text_model(f"python:{loader}:load")
    assert tokenizer is byte_tokens and size == 16 and not model.training  # put in eval mode, as the others are
    G = SmallG()
    z = torch.randn(4, 4, generator=torch.Generator().manual_seed(7))
    z_new, x, hist = text_edit(G, z, model, tokenizer(["a face with red hair"]), size, steps=60, lr=0.05,
                               l2_weight=0.001)
    assert hist[-1] < hist[0] and not torch.allclose(z_new, z) and x.shape == (4, 3, 8, 8)
    monkeypatch.syspath_prepend(str(tmp_path))  # the same loader as an importable module
    assert load_image_text_model("python:my_clip_loader:load")[2] == 16
    for spec, error, message in (
            (f"python:{tmp_path / 'missing.py'}:load", FileNotFoundError, "no loader file"),
            (f"python:{loader}:absent", ValueError, "has no function absent"),
            (f"python:{loader}:not_a_triple", ValueError, "must return .model, tokenizer, image size."),
            (f"python:{loader}:no_text_encoder", ValueError, "has no encode_image"),
            ("python:load", ValueError, "is not python:FILE.py:FUNCTION")):
        with pytest.raises(error, match=message):
            load_image_text_model(spec)
