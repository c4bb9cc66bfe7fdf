"""FilterPartition: EM monotonicity, agreement with sklearn, descriptors, and L_gmm's log-likelihood and posterior."""
import math

import pytest
import torch

from interpgan_ext.partition import FilterPartition, constrained_assignment, filter_descriptors


def clusters(n_per=20, C=4, D=12, spread=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(C, D, generator=g) * 2
    X = torch.cat([centres[c] + spread * torch.randn(n_per, D, generator=g) for c in range(C)])
    return X, torch.arange(C).repeat_interleave(n_per)


def adjusted_rand(a, b):
    from sklearn.metrics import adjusted_rand_score

    return adjusted_rand_score(a.numpy(), b.numpy())


def test_em_log_likelihood_never_decreases():
    X, _ = clusters(spread=0.5, seed=1)
    p = FilterPartition(4, tol=0, max_iter=30).fit(X)
    h = torch.tensor(p.history)
    assert len(h) >= 5
    assert torch.all(h[1:] >= h[:-1] - 1e-4 * h.abs()[1:].clamp_min(1)), p.history


def test_torch_and_sklearn_find_the_same_partition():
    X, truth = clusters()
    for backend in ("torch", "sklearn"):
        q = FilterPartition(4, backend=backend, seed=3).fit(X).q
        assert adjusted_rand(q, truth) >= 0.95, backend
    qt = FilterPartition(4, backend="torch").fit(X).q
    qs = FilterPartition(4, backend="sklearn").fit(X).q
    assert adjusted_rand(qt, qs) >= 0.95


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_relative_reg_floors_the_variances_and_keeps_the_partition(backend):
    X, truth = clusters(spread=0.05)
    mean_var = X.double().var(0, unbiased=False).mean().item()
    plain = FilterPartition(4, backend=backend, seed=3).fit(X)
    floored = FilterPartition(4, backend=backend, seed=3, relative_reg=0.3).fit(X)
    assert plain.variances.max() < 0.1 * mean_var  # tight clusters: without the floor, tiny variances
    assert floored.variances.min() >= 0.3 * mean_var * (1 - 1e-5)
    assert adjusted_rand(floored.q, truth) >= 0.95
    # the floor bounds L_gmm's pull on descriptors that stray from their group mean (gradient ~ 1 / variance)
    strayed = (X + 0.1).requires_grad_(True)
    pull = [torch.autograd.grad(p.log_likelihood(strayed).sum(), strayed)[0].norm() for p in (plain, floored)]
    assert pull[1] < pull[0] / 5


def test_posteriors_are_distributions():
    X, _ = clusters()
    p = FilterPartition(4).fit(X)
    assert torch.allclose(p.posteriors.sum(1), torch.ones(len(X)), atol=1e-5)
    assert torch.equal(p.q, p.posteriors.argmax(1))
    assert p.group_sizes().sum() == len(X)


def test_log_likelihood_matches_direct_formula_and_is_differentiable():
    X, _ = clusters(n_per=5, C=3, D=4)
    p = FilterPartition(3).fit(X)
    Xg = X.clone().requires_grad_(True)
    ll = p.log_likelihood(Xg)
    mu, var = p.means[p.q], p.variances[p.q]
    direct = torch.stack([
        sum(-0.5 * math.log(2 * math.pi * var[j, d]) - 0.5 * (X[j, d] - mu[j, d]) ** 2 / var[j, d] for d in range(4))
        for j in range(len(X))
    ])
    assert torch.allclose(ll, direct, rtol=1e-4, atol=1e-4)
    ll.sum().backward()
    assert torch.isfinite(Xg.grad).all() and Xg.grad.abs().sum() > 0


def test_log_posterior_matches_direct_formula_and_saturates_once_groups_are_apart():
    X, _ = clusters(n_per=5, C=3, D=4, spread=0.5)
    p = FilterPartition(3).fit(X)
    for T in (1.0, 7.0):
        Xg = X.clone().requires_grad_(True)
        lp = p.log_posterior(Xg, temperature=T)
        joint = torch.stack([
            torch.stack([math.log(p.weights[c]) + sum(
                -0.5 * math.log(2 * math.pi * p.variances[c, d]) - 0.5 * (X[j, d] - p.means[c, d]) ** 2
                / p.variances[c, d] for d in range(4)) for c in range(3)])
            for j in range(len(X))
        ]).double() / T
        direct = joint[torch.arange(len(X)), p.q] - torch.logsumexp(joint, 1)
        assert torch.allclose(lp.double(), direct, rtol=1e-4, atol=1e-4), T
        assert torch.all(lp <= 1e-6)
        lp.sum().backward()
        assert torch.isfinite(Xg.grad).all()
    # Unlike the log-likelihood, the posterior stops pulling a filter that sits well inside its own group.
    X, _ = clusters(spread=0.05)
    p = FilterPartition(4, seed=3).fit(X)
    near = (X + 0.02).requires_grad_(True)
    assert torch.autograd.grad(p.log_posterior(near, temperature=1.0).sum(), near)[0].abs().max() < 1e-6
    assert torch.autograd.grad(p.log_likelihood(near).sum(), near)[0].abs().max() > 1
    with pytest.raises(ValueError, match="temperature"):
        p.log_posterior(X, temperature=0)


def test_empty_component_is_reseeded():
    X = torch.cat([torch.zeros(10, 3), torch.ones(10, 3)]) + 0.01 * torch.randn(20, 3)
    p = FilterPartition(5).fit(X)  # more groups than clusters: some would go empty
    assert p.q.shape == (20,) and torch.isfinite(p.means).all() and torch.isfinite(p.variances).all()


def test_descriptors_are_standardised_and_pooled():
    f = torch.randn(6, 10, 32, 32) * 5 + 3
    d = filter_descriptors(f)
    assert d.shape == (10, 6 * 16 * 16)
    assert torch.allclose(d.mean(1), torch.zeros(10), atol=1e-5)
    assert torch.allclose(d.norm(dim=1), torch.ones(10), atol=1e-5)


def test_bad_input():
    with pytest.raises(ValueError):
        FilterPartition(0)
    with pytest.raises(ValueError, match="relative_reg"):
        FilterPartition(2, relative_reg=-0.1)
    with pytest.raises(ValueError, match="NaN"):
        FilterPartition(2).fit(torch.tensor([[0.0, float("nan")], [1.0, 1.0], [2.0, 2.0]]))
    with pytest.raises(ValueError, match="M >= 3"):
        FilterPartition(3).fit(torch.randn(2, 4))


def test_constrained_assignment_is_the_best_assignment_with_groups_that_large():
    import itertools

    g = torch.Generator().manual_seed(0)
    for M, C, m in ((7, 3, 2), (6, 3, 2), (8, 2, 3), (5, 2, 0)):
        for _ in range(3):
            scores = torch.randn(M, C, generator=g, dtype=torch.float64)
            q = constrained_assignment(scores, m)
            assert torch.bincount(q, minlength=C).min() >= m
            best = max(sum(scores[j, a[j]].item() for j in range(M)) for a in itertools.product(range(C), repeat=M)
                       if min(torch.bincount(torch.tensor(a), minlength=C).tolist()) >= m)
            assert scores.gather(1, q[:, None]).sum().item() == pytest.approx(best, abs=1e-9)
    scores = torch.randn(12, 3, generator=g)
    assert torch.equal(constrained_assignment(scores, 0), scores.argmax(1))  # no constraint: each row's best
    with pytest.raises(ValueError, match="need 15 rows, got 12"):
        constrained_assignment(scores, 5)


@pytest.mark.parametrize("backend", ["torch", "sklearn"])
def test_min_group_size_grows_a_small_group_and_refits_it(backend):
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(4, 12, generator=g) * 2
    sizes = (30, 30, 30, 2)
    X = torch.cat([centres[c] + 0.1 * torch.randn(n, 12, generator=g) for c, n in enumerate(sizes)])
    plain = FilterPartition(4, backend=backend, seed=3).fit(X)
    assert sorted(plain.group_sizes().tolist()) == [2, 30, 30, 30]  # what plain EM does with a small cluster
    p = FilterPartition(4, backend=backend, seed=3, min_group_size=5).fit(X)
    assert p.group_sizes().min() == 5
    assert (p.q != plain.q).sum() == 3  # three filters join the small group; the rest stay where they were
    for c in range(4):  # each group's Gaussian is refitted to its members
        members = X[p.q == c]
        assert torch.allclose(p.means[c], members.mean(0), atol=1e-5)
        assert torch.allclose(p.variances[c], members.var(0, unbiased=False) + p.reg_covar, rtol=1e-3, atol=1e-5)
    assert torch.allclose(p.weights, p.group_sizes().float() / len(X))
    assert torch.allclose(p.posteriors.sum(1), torch.ones(len(X)), atol=1e-5)
    assert torch.isfinite(p.log_likelihood(X)).all()
    # a constraint the plain fit already meets changes nothing
    loose = FilterPartition(4, backend=backend, seed=3, min_group_size=2).fit(X)
    assert torch.equal(loose.q, plain.q) and torch.equal(loose.means, plain.means)


def test_min_group_size_bad_values():
    with pytest.raises(ValueError, match="min_group_size"):
        FilterPartition(2, min_group_size=-1)
    with pytest.raises(ValueError, match="min_group_size"):
        FilterPartition(2, min_group_size=1.5)
    with pytest.raises(ValueError, match="need 12 filters, got 10"):
        FilterPartition(3, min_group_size=4).fit(torch.randn(10, 4))
