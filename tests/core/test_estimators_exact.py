"""The estimators are unbiased in value and in gradient: exact enumeration of every draw sequence."""

import pytest
import torch

from zoomin_lib.hierarchical import expectation_two_stage
from zoomin_lib.sampling import expectation_with_replacement, expectation_without_replacement
from zoomin_lib.theory.enumeration import (
    expected_value_and_grads,
    two_stage_bias,
    with_replacement_outcomes,
    without_replacement_outcomes,
)

TOL = 1e-10
D = 3


def _problem(k: int, seed: int):
    """Attention logits and a feature table [K, D], float64, both requiring grad."""
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=gen, dtype=torch.float64).mul(1.5).requires_grad_()
    feats = torch.randn(k, D, generator=gen, dtype=torch.float64).requires_grad_()
    project = torch.randn(D, generator=gen, dtype=torch.float64)
    return logits, feats, project


def _exact(logits, feats, project):
    """Value and gradient of the full sum_i a_i f_i."""
    target = torch.softmax(logits, 0) @ feats  # [D]
    grads = torch.autograd.grad((target * project).sum(), [logits, feats])
    return target.detach(), grads


def _check(outcomes, estimate, logits, feats, project):
    """Assert that enumeration reproduces the exact value and gradients."""
    value, grads = expected_value_and_grads(outcomes, estimate, [logits, feats], project)
    exact_value, exact_grads = _exact(logits, feats, project)
    assert torch.allclose(value.squeeze(0), exact_value, atol=TOL, rtol=0)
    for got, want in zip(grads, exact_grads):
        assert torch.allclose(got, want, atol=TOL, rtol=0), (got, want)


CASES = [(k, n) for k in range(2, 7) for n in (1, 2, 3) if n <= k]


@pytest.mark.parametrize("terms", ["mean", "last"])
@pytest.mark.parametrize("k,n", CASES)
def test_without_replacement_unbiased_value_and_gradient(k, n, terms):
    logits, feats, project = _problem(k, seed=10 * k + n)
    probs = torch.softmax(logits.detach(), 0).tolist()

    def estimate(seq):
        idx = torch.tensor([seq])
        return expectation_without_replacement(torch.softmax(logits, 0)[None], idx, feats[idx], terms)

    _check(list(without_replacement_outcomes(probs, n)), estimate, logits, feats, project)


@pytest.mark.parametrize("k,n", [(k, n) for k in range(2, 6) for n in (1, 2, 3)])
def test_with_replacement_unbiased_value_and_gradient(k, n):
    logits, feats, project = _problem(k, seed=100 + 10 * k + n)
    probs = torch.softmax(logits.detach(), 0).tolist()

    def estimate(seq):
        idx = torch.tensor([seq])
        return expectation_with_replacement(torch.softmax(logits, 0)[None], idx, feats[idx])

    _check(list(with_replacement_outcomes(probs, n)), estimate, logits, feats, project)


def test_pathwise_only_gradient_is_biased():
    """Negative control: autograd through the value formula alone (no score term) fails the same check."""
    logits, feats, project = _problem(5, seed=7)
    probs = torch.softmax(logits.detach(), 0).tolist()

    def estimate(seq):
        a = torch.softmax(logits, 0)[list(seq)]
        f = feats[list(seq)]
        used = torch.cumsum(a, 0) - a  # exclusive
        known = torch.cumsum(a[:, None] * f, 0) - a[:, None] * f
        return (known + (1 - used)[:, None] * f).mean(0, keepdim=True)

    value, grads = expected_value_and_grads(list(without_replacement_outcomes(probs, 3)), estimate, [logits, feats], project)
    exact_value, exact_grads = _exact(logits, feats, project)
    assert torch.allclose(value.squeeze(0), exact_value, atol=TOL)  # the value is unbiased ...
    assert (grads[0] - exact_grads[0]).abs().max() > 1e-3  # ... its attention gradient is not


@pytest.mark.parametrize("t,k2,n", [(2, 2, 2), (2, 3, 3), (3, 3, 2), (3, 3, 3), (3, 2, 1)])
def test_two_stage_unbiased_value_and_gradient(t, k2, n):
    """Every two-stage draw enumerated: value and gradients w.r.t. alpha logits, beta logits, features."""
    errors = two_stage_bias(t, k2, n, seed=1000 + 100 * t + 10 * k2 + n)
    assert errors.pop("outcomes") > 1
    assert max(errors.values()) < TOL, errors


def test_two_stage_with_one_tile_is_the_one_stage_estimator():
    """With a single tile the two-stage estimator reduces to ATS without replacement."""
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(torch.randn(1, 6, generator=gen, dtype=torch.float64), 1)
    idx = torch.tensor([[4, 0, 2]])
    feats = torch.randn(1, 3, D, generator=gen, dtype=torch.float64)
    one = expectation_without_replacement(probs, idx, feats)
    two = expectation_two_stage(torch.ones(1, 1, dtype=torch.float64), torch.zeros_like(idx), probs.gather(1, idx), feats)
    assert torch.allclose(one, two, atol=1e-14)


def test_expected_unique_tiles_matches_enumeration():
    """E[N'] = sum_c 1 - (1 - p_c)^n against the mean number of distinct tiles over every draw sequence."""
    import itertools

    from zoomin_lib.hierarchical import expected_unique

    p = torch.tensor([[0.5, 0.3, 0.15, 0.05]], dtype=torch.float64)
    n = 3
    exact = sum(
        float(p[0, list(seq)].prod()) * len(set(seq)) for seq in itertools.product(range(4), repeat=n)
    )
    torch.testing.assert_close(expected_unique(p, n), torch.tensor([exact], dtype=torch.float64))
    uniform = torch.full((1, 4), 0.25, dtype=torch.float64)
    assert float(expected_unique(uniform, n)) > float(expected_unique(p, n))  # uniform maximises E[N']
