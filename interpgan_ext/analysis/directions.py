"""Interpretable directions in a generator's latent space, and edits along them.

- SeFa (Shen & Zhou 2021): the top eigenvectors of A^T A, where A is the weight of the layer that first acts
  on the latent (or the concatenated affine layers of a style-based G). `torch.linalg.eigh`, sorted
  descending: the order is guaranteed, unlike `np.linalg.eig`'s.
- GANSpace (Haerkoenen et al. 2020): PCA of sampled latents, or of a layer's activations, with the activation
  components regressed back to latent directions.
- InterFaceGAN (Shen et al. 2020): a linear SVM separating the latents of the top and bottom 2% of samples by
  an attribute score; its unit normal is the editing direction. A conditional direction projects out other
  boundaries. Re-scoring (as in HiGAN, Yang et al.): the change of each attribute score when moving along a
  direction, to rank directions.
"""
from contextlib import contextmanager
from typing import Callable, Optional, Sequence

import torch
from torch import nn

from ..sampler import get_layer


def linear_weights(G: nn.Module, layers: Sequence[str]) -> torch.Tensor:
    """The weights [sum of outputs, d] of the named Linear layers that read the latent, stacked."""
    mats = []
    for name in layers:
        w = getattr(get_layer(G, name), "weight", None)
        if w is None or w.dim() != 2:
            raise ValueError(f"linear_weights: layer {name!r} has no 2-D weight (a Linear layer is expected)")
        mats.append(w.detach().float())
    if len({m.shape[1] for m in mats}) != 1:
        raise ValueError(f"linear_weights: layers read inputs of different sizes {[m.shape[1] for m in mats]}")
    return torch.cat(mats)


def sefa(weight: torch.Tensor, k: Optional[int] = None):
    """(directions [k, d] as unit rows, eigenvalues [k]) of A^T A, largest eigenvalue first."""
    A = weight.detach().double()
    evals, evecs = torch.linalg.eigh(A.T @ A)  # ascending
    order = torch.argsort(evals, descending=True)[: k or len(evals)]
    return evecs[:, order].T.float(), evals[order].float()


def _features(G, layer, z, batch_size, max_side):
    from ..edit import deterministic, generate

    out = []
    with deterministic(G), torch.no_grad():
        for zb in z.split(batch_size):
            _, f = generate(G, layer, zb)
            if f.dim() == 4 and max(f.shape[-2:]) > max_side:
                f = nn.functional.adaptive_avg_pool2d(f, max_side)
            out.append(f.flatten(1).float().cpu())
    return out


def ganspace(z: torch.Tensor, G: Optional[nn.Module] = None, layer: Optional[str] = None, n_components: int = 10,
             batch_size: int = 256, max_side: int = 8):
    """(directions [n_components, d] in latent space, explained variance ratio). Without `layer`: PCA of the
    latents themselves. With `layer`: incremental PCA of the layer's activations (pooled to at most
    max_side^2 positions), whose per-sample coefficients are regressed on z by least squares; each latent
    direction moves the activations along one component."""
    from sklearn.decomposition import IncrementalPCA, PCA

    if len(z) < n_components:
        raise ValueError(f"ganspace: {n_components} directions need at least as many latents, got {len(z)}")
    if layer is None:
        pca = PCA(n_components).fit(z.detach().cpu().double().numpy())
        return torch.as_tensor(pca.components_, dtype=torch.float32), torch.as_tensor(pca.explained_variance_ratio_)
    if G is None:
        raise ValueError("ganspace: a layer needs its generator G")
    feats = _features(G, layer, z, batch_size, max_side)
    ipca = IncrementalPCA(n_components)
    for f in feats:  # streamed: batches must hold at least n_components samples
        if len(f) >= n_components:
            ipca.partial_fit(f.double().numpy())
    coeffs = torch.cat([torch.as_tensor(ipca.transform(f.double().numpy())) for f in feats])  # [N, k]
    coeffs = coeffs / coeffs.std(0, keepdim=True).clamp_min(1e-12)
    Z = z.detach().cpu().double()
    D = torch.linalg.lstsq(coeffs, Z - Z.mean(0)).solution  # [k, d]: z ~ coeffs @ D
    D = D / D.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return D.float(), torch.as_tensor(ipca.explained_variance_ratio_)


def svm_boundary(latents: torch.Tensor, scores: torch.Tensor, share: float = 0.02, C: float = 1.0, seed: int = 0):
    """Unit normal [d] of a linear SVM between the latents with the top and the bottom `share` of `scores`
    (InterFaceGAN), pointing towards higher scores; and its accuracy on those samples."""
    from sklearn.svm import LinearSVC

    n = max(2, int(round(len(scores) * share)))
    order = torch.argsort(scores.detach().cpu())
    lo, hi = order[:n], order[-n:]
    X = torch.cat([latents[lo], latents[hi]]).detach().cpu().double().numpy()
    y = [0] * n + [1] * n
    svm = LinearSVC(C=C, random_state=seed, max_iter=10000).fit(X, y)
    normal = torch.as_tensor(svm.coef_[0], dtype=torch.float32)
    return normal / normal.norm(), float(svm.score(X, y))


def boundary_quality(latents: torch.Tensor, scores: torch.Tensor, share: float = 0.02, seed: int = 0) -> float:
    """Held-out accuracy of an InterFaceGAN boundary: an SVM fitted on the extremes of one half of the samples,
    tested on the extremes of the other half."""
    from sklearn.svm import LinearSVC

    half = len(scores) // 2

    def extremes(z, s):
        n = max(2, int(round(len(s) * share)))
        order = torch.argsort(s.detach().cpu())
        return torch.cat([z[order[:n]], z[order[-n:]]]).detach().cpu().double().numpy(), [0] * n + [1] * n

    Xa, ya = extremes(latents[:half], scores[:half])
    Xb, yb = extremes(latents[half:], scores[half:])
    return float(LinearSVC(random_state=seed, max_iter=10000).fit(Xa, ya).score(Xb, yb))


def default_sefa_layers(G: nn.Module, z_dim: int):
    """(Linear layers for SeFa, layers whose input an edit shifts or None for z): a style-based G's affines
    (directions in w), else the first Linear that reads z."""
    affines = [n for n, m in G.named_modules() if isinstance(m, nn.Linear) and n.endswith("affine")]
    if affines:
        return affines, affines
    for n, m in G.named_modules():
        if isinstance(m, nn.Linear) and m.in_features == z_dim:
            return [n], None
    raise ValueError("default_sefa_layers: no Linear layer reads the latent; name the layers")


def conditional_boundary(primary: torch.Tensor, *conditions: torch.Tensor) -> torch.Tensor:
    """The primary direction with the condition directions projected out (Gram-Schmidt on the conditions),
    renormalised: editing along it leaves the conditioned attributes unchanged to first order."""
    basis = []
    for c in conditions:
        v = c.double().clone()
        for b in basis:
            v -= (v @ b) * b
        if v.norm() > 1e-8:
            basis.append(v / v.norm())
    p = primary.double().clone()
    for b in basis:
        p -= (p @ b) * b
    if p.norm() < 1e-8:
        raise ValueError("conditional_boundary: the primary direction lies in the span of the conditions")
    return (p / p.norm()).float()


@contextmanager
def _input_shift(G: nn.Module, layers: Sequence[str], delta: torch.Tensor):
    """Adds `delta` to the first input of each named layer during G's forward."""
    handles = [get_layer(G, name).register_forward_pre_hook(
        lambda m, args: (args[0] + delta.to(args[0].dtype),) + tuple(args[1:])) for name in layers]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def edit_along(G: nn.Module, z: torch.Tensor, direction: torch.Tensor, strengths: Sequence[float],
               layers: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Images [len(strengths), B, 3, S, S] of G moved by alpha * direction, for each alpha. The move is in z
    (default) or, with `layers`, in the input space of those layers (e.g. the w space of style affines)."""
    from ..edit import deterministic

    d = direction.to(z.device, z.dtype)
    out = []
    with deterministic(G):
        for a in strengths:
            if layers:
                with _input_shift(G, layers, a * d):
                    out.append(G(z))
            else:
                out.append(G(z + a * d))
    return torch.stack(out)


@torch.no_grad()
def rescoring(G: nn.Module, z: torch.Tensor, direction: torch.Tensor, attribute_fn: Callable, alpha: float = 3.0,
              layers: Optional[Sequence[str]] = None) -> torch.Tensor:
    """Delta a: the mean change of each attribute score [A] when z moves by alpha along `direction`
    (attribute_fn: images -> [B, A])."""
    x0, x1 = edit_along(G, z, direction, [0.0, alpha], layers)
    return (attribute_fn(x1) - attribute_fn(x0)).float().mean(0)
