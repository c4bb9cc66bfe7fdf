"""The filter partition q (SPEC §5, "Partition"): a diagonal-covariance GMM over filter descriptors.

Each filter j is described by F^j, its feature maps over a batch of generated images (average-pooled to at
most 16x16, flattened, then standardised per filter to zero mean and unit norm), and the C-component GMM
fitted by EM gives q_j = argmax_c P(c | F^j). `log_likelihood` is differentiable in the descriptors, for
L_gmm(G) = -(1/M) sum_j log N(F^j; mu_{q_j}, Sigma_{q_j}) with the GMM held fixed.

`min_group_size` (default 0: the SPEC's plain EM) keeps every group at a given number of filters or more, by
hard EM under that constraint after the plain fit (`constrained_assignment`).
"""
import math
from dataclasses import dataclass, field
from typing import List, Optional

import numpy as np
import torch
import torch.nn.functional as F


def filter_descriptors(features: torch.Tensor, max_side: int = 16) -> torch.Tensor:
    """[N, M, H, W] feature maps -> [M, N*K'] descriptors, zero mean and unit norm per filter."""
    if features.dim() != 4:
        raise ValueError(f"filter_descriptors: expected features [N, M, H, W], got {list(features.shape)}")
    H, W = features.shape[-2:]
    if max(H, W) > max_side:
        features = F.adaptive_avg_pool2d(features, (min(H, max_side), min(W, max_side)))
    d = features.transpose(0, 1).reshape(features.shape[1], -1).float()
    d = d - d.mean(dim=1, keepdim=True)
    return d / d.norm(dim=1, keepdim=True).clamp_min(1e-8)


def _log_gauss_diag(X, means, variances):
    """log N(x_i; mu_c, diag var_c) for all i, c -> [M, C], by matrix products (no [M, C, D] tensor)."""
    prec = 1.0 / variances
    D = X.shape[1]
    quad = (X * X) @ prec.T - 2 * X @ (means * prec).T + (means * means * prec).sum(1)[None]
    return -0.5 * (D * math.log(2 * math.pi) + torch.log(variances).sum(1)[None] + quad)


def _m_step(X, resp, reg, global_var):
    """Means, diagonal variances and weights of the groups from responsibilities resp [M, C]. A group with about one
    filter gets the global variance (its own would be `reg` alone: a spike that every other filter avoids)."""
    nk = resp.sum(0)
    means = (resp.T @ X) / nk[:, None]
    variances = ((resp.T @ (X * X)) / nk[:, None] - means**2).clamp_min(0) + reg
    variances = torch.where(nk[:, None] > 1.5, variances, global_var[None].expand_as(variances))
    return means, variances, nk / X.shape[0]


def constrained_assignment(scores: torch.Tensor, min_size: int) -> torch.Tensor:
    """The q maximising sum_j scores[j, q_j] with every group holding at least `min_size` rows. scores [M, C].

    Exact: a linear assignment of the M rows to M slots. Each group has min_size slots of its own (score
    scores[j, c]); the other M - C*min_size slots are free, and a row in one goes to its best group. The
    [M, M] problem takes scipy ~0.1 s at M = 512."""
    from scipy.optimize import linear_sum_assignment

    M, C = scores.shape
    if min_size * C > M:
        raise ValueError(f"constrained_assignment: {C} groups of >= {min_size} need {min_size * C} rows, got {M}")
    s = scores.detach().double().cpu().numpy()
    if not np.isfinite(s).all():
        raise ValueError("constrained_assignment: scores contain NaN or inf")
    free = np.repeat(s.max(1, keepdims=True), M - C * min_size, axis=1)
    rows, cols = linear_sum_assignment(np.concatenate([np.repeat(s, min_size, axis=1), free], axis=1), maximize=True)
    q = np.empty(M, dtype=np.int64)
    q[rows] = np.where(cols < C * min_size, cols // max(min_size, 1), s.argmax(1)[rows])
    return torch.from_numpy(q).to(scores.device)


@dataclass
class FilterPartition:
    """GMM over filter descriptors. backend "torch" (batched EM on the descriptors' device) or "sklearn"."""

    n_groups: int
    backend: str = "torch"
    max_iter: int = 100
    tol: float = 1e-5
    reg_covar: float = 1e-6
    # Added to every variance too, as a fraction of the descriptors' mean per-dimension variance. With
    # L_gmm in G's loss, plain EM is a feedback loop: G pulls filters to their group means, the next refit
    # shrinks the variances, which strengthens the pull. In a 1500-step 32 px run the groups ended as
    # near-copies (cosine 0.97-0.99 within a group, variance 2-4% of the global; the baseline's GMM: 0.5-0.7,
    # 30-54%). A floor bounds the pull's strength. 0 = plain EM (SPEC §5).
    relative_reg: float = 0.0
    # Every group gets at least this many filters; 0 = plain EM (SPEC §5). Plain EM left groups of 1-3 of
    # 128 filters in the 32 px runs, and of 1 and 3 of 256 at 64 px (bench/results/README.md): a group that
    # small is hardly a concept to edit. After the plain fit, hard EM under the constraint: the best assignment
    # with every group that large, then each group's Gaussian refitted to its filters, until q is stable.
    min_group_size: int = 0
    seed: int = 0
    q: Optional[torch.Tensor] = None
    posteriors: Optional[torch.Tensor] = None
    means: Optional[torch.Tensor] = None
    variances: Optional[torch.Tensor] = None
    weights: Optional[torch.Tensor] = None
    history: List[float] = field(default_factory=list)

    def __post_init__(self):
        if self.n_groups < 1:
            raise ValueError(f"FilterPartition: n_groups must be >= 1, got {self.n_groups}")
        if self.backend not in ("torch", "sklearn"):
            raise ValueError(f"FilterPartition: backend must be 'torch' or 'sklearn', got {self.backend!r}")
        if not self.relative_reg >= 0:
            raise ValueError(f"FilterPartition: relative_reg must be >= 0, got {self.relative_reg}")
        if not (isinstance(self.min_group_size, int) and self.min_group_size >= 0):
            raise ValueError(f"FilterPartition: min_group_size must be an int >= 0, got {self.min_group_size!r}")

    # -- fitting ------------------------------------------------------------------------------------
    def fit(self, X: torch.Tensor) -> "FilterPartition":
        """Fit to descriptors X [M, D] (one row per filter). Sets q, posteriors, means, variances, weights."""
        X = X.detach()
        if X.dim() != 2 or X.shape[0] < self.n_groups:
            raise ValueError(f"FilterPartition.fit: expected [M >= {self.n_groups}, D] descriptors, got {list(X.shape)}")
        if self.min_group_size * self.n_groups > X.shape[0]:
            raise ValueError(f"FilterPartition.fit: {self.n_groups} groups of min_group_size={self.min_group_size} "
                             f"need {self.min_group_size * self.n_groups} filters, got {X.shape[0]}")
        if not torch.isfinite(X).all():
            raise ValueError("FilterPartition.fit: descriptors contain NaN or inf")
        reg = self.reg_covar + self.relative_reg * X.double().var(dim=0, unbiased=False).mean().item()
        if self.backend == "sklearn":
            self._fit_sklearn(X, reg)
        else:
            self._fit_torch(X.float(), reg)
        self.q = self.posteriors.argmax(dim=1)
        if self.group_sizes().min() < self.min_group_size:
            self._rebalance(X.float(), reg)
        return self

    def _fit_sklearn(self, X, reg):
        from sklearn.mixture import GaussianMixture

        gm = GaussianMixture(self.n_groups, covariance_type="diag", reg_covar=reg, max_iter=self.max_iter,
                             tol=self.tol, random_state=self.seed, init_params="k-means++")
        gm.fit(X.cpu().double().numpy())
        to = lambda a: torch.as_tensor(a, dtype=torch.float32, device=X.device)  # noqa: E731
        self.means, self.variances, self.weights = to(gm.means_), to(gm.covariances_), to(gm.weights_)
        self.posteriors = to(gm.predict_proba(X.cpu().double().numpy()))
        self.history = [float(gm.lower_bound_)]

    def _kmeans_pp(self, X, gen):
        """k-means++ seeding: each next centre drawn with probability proportional to squared distance."""
        M = X.shape[0]
        centres = [X[torch.randint(M, (1,), generator=gen).item()]]
        d2 = ((X - centres[0]) ** 2).sum(1)
        for _ in range(1, self.n_groups):
            probs = (d2 / d2.sum()).cpu() if d2.sum() > 0 else torch.full((M,), 1.0 / M)
            nxt = X[torch.multinomial(probs, 1, generator=gen).item()]
            centres.append(nxt)
            d2 = torch.minimum(d2, ((X - nxt) ** 2).sum(1))
        return torch.stack(centres)

    def _fit_torch(self, X, reg):
        gen = torch.Generator().manual_seed(self.seed)
        M, C = X.shape[0], self.n_groups
        global_var = X.var(dim=0, unbiased=False) + reg
        means = self._kmeans_pp(X, gen)
        # hard assignment to the nearest seed, then a first M-step
        resp = F.one_hot(torch.cdist(X, means).argmin(1), C).float()
        self.history = []
        prev = -math.inf
        for _ in range(self.max_iter):
            empty = resp.sum(0) < 1e-3
            if empty.any():  # re-seed an empty component on the worst-explained filters
                worst = torch.argsort(resp.max(1).values)[: int(empty.sum())]
                resp[worst] = F.one_hot(torch.nonzero(empty).flatten(), C).float()
            means, variances, weights = _m_step(X, resp, reg, global_var)
            log_joint = _log_gauss_diag(X, means, variances) + torch.log(weights)[None]
            log_norm = torch.logsumexp(log_joint, dim=1)
            resp = torch.exp(log_joint - log_norm[:, None])
            ll = log_norm.mean().item()
            self.history.append(ll)
            if abs(ll - prev) < self.tol * max(1.0, abs(ll)):
                break
            prev = ll
        self.means, self.variances, self.weights, self.posteriors = means, variances, weights, resp

    def _rebalance(self, X, reg):
        """Hard EM with every group holding >= min_group_size filters, from the plain fit's Gaussians. Each round
        raises sum_j log(w_{q_j} N(F^j; mu_{q_j}, Sigma_{q_j})) (up to the variance floor), so it settles in a few
        rounds; max_iter bounds it. q is then the constrained assignment, which need not be the posteriors' argmax."""
        global_var = X.var(dim=0, unbiased=False) + reg
        means, variances, weights = (t.to(X) for t in (self.means, self.variances, self.weights))
        q = None
        for _ in range(self.max_iter):
            q_new = constrained_assignment(_log_gauss_diag(X, means, variances) + torch.log(weights)[None],
                                           self.min_group_size)
            if q is not None and torch.equal(q_new, q):
                break
            q = q_new
            means, variances, weights = _m_step(X, F.one_hot(q, self.n_groups).to(X), reg, global_var)
        log_joint = _log_gauss_diag(X, means, variances) + torch.log(weights)[None]
        self.means, self.variances, self.weights = means, variances, weights
        self.posteriors = torch.softmax(log_joint, dim=1)
        self.q = q.to(X.device)

    # -- use ------------------------------------------------------------------------------------------
    def log_likelihood(self, X: torch.Tensor) -> torch.Tensor:
        """log N(F^j; mu_{q_j}, Sigma_{q_j}) per filter [M], differentiable in X; the GMM is held fixed."""
        if self.q is None:
            raise RuntimeError("FilterPartition.log_likelihood: call fit() first")
        mu, var = self.means[self.q].to(X), self.variances[self.q].to(X)
        return -0.5 * (((X - mu) ** 2) / var + torch.log(2 * math.pi * var)).sum(dim=1)

    def log_posterior(self, X: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
        """log P_T(q_j | F^j) per filter [M], differentiable in X; the GMM is held fixed. The posterior is tempered:
        the groups' log-joint densities are divided by `temperature` before the softmax. (In the D dimensions of a
        descriptor the plain posterior is 0 or 1 to machine precision, so it has no gradient; at T = D it
        compares mean per-dimension log densities.)"""
        if self.q is None:
            raise RuntimeError("FilterPartition.log_posterior: call fit() first")
        if not temperature > 0:
            raise ValueError(f"FilterPartition.log_posterior: temperature must be > 0, got {temperature}")
        means, variances = self.means.to(X), self.variances.to(X)
        joint = _log_gauss_diag(X, means, variances) + torch.log(self.weights.to(X))[None]
        return torch.log_softmax(joint / temperature, dim=1).gather(1, self.q.to(X.device)[:, None])[:, 0]

    def group_sizes(self) -> torch.Tensor:
        return torch.bincount(self.q, minlength=self.n_groups)

    def state_dict(self):
        keys = ("q", "posteriors", "means", "variances", "weights")
        return {k: getattr(self, k) for k in keys} | {"history": list(self.history), "n_groups": self.n_groups}

    def load_state_dict(self, state):
        for k in ("q", "posteriors", "means", "variances", "weights"):
            setattr(self, k, state[k])
        self.history = list(state.get("history", []))
