"""Variance of the sampling estimators: analytic formula (ATS eq. 7-9) vs exact enumeration vs Monte Carlo."""

import math

import pytest
import torch

from zoomin_lib.theory import variance as V

MC_SIGMAS = 4.0  # Monte-Carlo checks: within this many standard errors (fixed seeds)


def _problem(k: int, d: int, seed: int, scale: float = 1.5, spread: float = 0.7):
    """A peaked attention [K] and features with spread-out norms [K, D], float64."""
    gen = torch.Generator().manual_seed(seed)
    return V.peaked_attention(k, scale, gen), V.random_features(k, d, spread, gen)


def _proposals(a, f):
    """Uniform, the attention itself, and the optimum of ATS eq. 9."""
    return {"uniform": V.uniform_proposal(a.shape[0]), "a": a, "p*": V.optimal_proposal(a, f)}


@pytest.mark.parametrize("k,n", [(3, 1), (4, 2), (5, 3), (6, 2)])
def test_analytic_is_variance_equals_enumeration(k, n):
    a, f = _problem(k, 3, seed=k + 10 * n)
    for name, p in _proposals(a, f).items():
        analytic = V.importance_sampling_variance(a, f, p, n)
        exact = V.exact_variance("importance", a, f, n, proposal=p)
        assert math.isclose(analytic, exact, rel_tol=1e-10, abs_tol=1e-12), name


@pytest.mark.parametrize("k,n", [(4, 1), (4, 3), (5, 2)])
def test_analytic_standard_error_equals_enumeration(k, n):
    a, f = _problem(k, 3, seed=20 + k + n)
    for name, p in _proposals(a, f).items():
        exact = V.exact_moments("importance", a, f, n, proposal=p).value
        assert math.isclose(V.importance_sampling_variance_se(a, f, p, n, 100), exact.monte_carlo_se(100), rel_tol=1e-8), name


def test_with_replacement_estimator_is_importance_sampling_with_p_equal_a():
    a, f = _problem(5, 3, seed=1)
    for n in (1, 2, 3):
        exact = V.exact_variance("with", a, f, n)
        assert math.isclose(exact, V.importance_sampling_variance(a, f, a, n), rel_tol=1e-10)


def test_monte_carlo_matches_analytic():
    a, f = _problem(32, 4, seed=2)
    gen = torch.Generator().manual_seed(0)
    for name, p in _proposals(a, f).items():
        for n in (1, 4):
            mc = V.monte_carlo_variance("importance", a, f, n, 4000, gen, proposal=p)
            analytic = V.importance_sampling_variance(a, f, p, n)
            assert abs(mc.variance - analytic) < MC_SIGMAS * mc.se, (name, n, mc, analytic)
    mc = V.monte_carlo_variance("with", a, f, 4, 4000, gen)
    assert abs(mc.variance - V.importance_sampling_variance(a, f, a, 4)) < MC_SIGMAS * mc.se


def test_optimal_proposal_beats_random_proposals():
    a, f = _problem(8, 3, seed=3)
    best = V.importance_sampling_variance(a, f, V.optimal_proposal(a, f), 2)
    gen = torch.Generator().manual_seed(1)
    for _ in range(200):
        p = torch.distributions.Dirichlet(torch.ones(8, dtype=torch.float64)).sample()
        p = torch.softmax(3 * torch.randn(8, generator=gen, dtype=torch.float64), 0) if _ % 2 else p
        assert best <= V.importance_sampling_variance(a, f, p, 2) + 1e-12
    closed_form = ((a * f.norm(dim=1)).sum() ** 2 - (a @ f).square().sum()) / 2
    assert math.isclose(best, float(closed_form), rel_tol=1e-10)


def test_unit_norm_features_make_attention_optimal():
    a, f = _problem(10, 4, seed=4)
    unit = V.l2_normalize(f)
    assert torch.allclose(V.optimal_proposal(a, unit), a, atol=1e-14, rtol=0)
    for n in (1, 3):
        assert math.isclose(
            V.importance_sampling_variance(a, unit, a, n),
            V.importance_sampling_variance(a, unit, V.optimal_proposal(a, unit), n),
            rel_tol=1e-12,
        )
    assert V.optimal_proposal(a, f).sub(a).abs().max() > 1e-3  # raw features: p* differs from a


def test_zero_proposal_on_needed_item_is_infinite():
    a, f = _problem(4, 2, seed=5)
    p = torch.tensor([0.5, 0.5, 0.0, 0.0], dtype=torch.float64)
    assert V.importance_sampling_variance(a, f, p, 3) == math.inf


def test_without_replacement_vs_with_replacement():
    a, f = _problem(6, 3, seed=6)
    k = 6
    for n in range(1, k + 1):
        wr = V.importance_sampling_variance(a, f, a, n)
        avg = V.exact_variance("without", a, f, n)
        last = V.exact_variance("without_last", a, f, n)
        if n == 1:
            assert math.isclose(avg, wr, rel_tol=1e-10) and math.isclose(last, wr, rel_tol=1e-10)
        else:
            assert avg < wr and last < wr
    assert V.exact_variance("without_last", a, f, k) < 1e-20  # Y_K is the full sum: exact at n = K
    assert V.exact_variance("without", a, f, k) > 1e-3  # the average of Y_1..Y_K is not


def test_without_replacement_monte_carlo_matches_enumeration():
    a, f = _problem(6, 3, seed=7)
    gen = torch.Generator().manual_seed(2)
    for scheme in ("without", "without_last"):
        for n in (2, 4):
            exact = V.exact_variance(scheme, a, f, n)
            mc = V.monte_carlo_variance(scheme, a, f, n, 4000, gen)
            assert abs(mc.variance - exact) < MC_SIGMAS * mc.se, (scheme, n, mc, exact)


def test_gradient_moments_exact_unbiased_and_monte_carlo():
    a, f = _problem(5, 3, seed=8)
    project = torch.tensor([1.0, -0.5, 2.0], dtype=torch.float64)
    logits = a.log().requires_grad_()
    feats = f.clone().requires_grad_()
    true = torch.autograd.grad((torch.softmax(logits, 0) @ feats * project).sum(), [logits, feats])
    for got, want in zip(V.full_gradients(a, f, project), true):
        assert torch.allclose(got, want, atol=1e-14)
    gen = torch.Generator().manual_seed(3)
    for scheme in ("with", "without", "without_last"):
        exact = V.exact_moments(scheme, a, f, 3, grads=True, project=project)
        assert torch.allclose(exact.grad_logits.mean, true[0], atol=1e-10)
        assert torch.allclose(exact.grad_feats.mean, true[1], atol=1e-10)
        mc = V.monte_carlo_moments(scheme, a, f, 3, 4000, gen, grads=True, project=project)
        for got, want in ((mc.grad_logits, exact.grad_logits), (mc.grad_feats, exact.grad_feats)):
            assert abs(got.variance - want.variance) < MC_SIGMAS * got.se, (scheme, got, want)
    wr = V.exact_moments("with", a, f, 3, grads=True, project=project)
    wor = V.exact_moments("without", a, f, 3, grads=True, project=project)
    assert wor.grad_logits.variance < wr.grad_logits.variance
    assert wor.grad_feats.variance < wr.grad_feats.variance


def test_two_stage_monte_carlo_matches_enumeration_and_bounds():
    gen = torch.Generator().manual_seed(9)
    alpha, beta, f = V.tiled_problem(3, 3, 2, 1.0, 1.0, 0.5, gen)
    joint_a, joint_f = V.two_stage_joint(alpha, beta, f)
    for n in (1, 2, 3):
        exact = V.exact_two_stage_variance(alpha, beta, f, n)
        mc = V.monte_carlo_two_stage(alpha, beta, f, n, 4000, gen)
        assert abs(mc.value.variance - exact) < MC_SIGMAS * mc.value.se
        assert exact >= V.between_tile_variance(alpha, beta, f, n) - 1e-12
        expected = V.expected_unique_tiles(alpha, n)
        assert abs(float(mc.unique_tiles.mean) - expected) <= MC_SIGMAS * mc.unique_tiles.mean_se + 1e-12
    # one draw: the two-stage draw is one draw from the joint alpha_c beta^c_c'
    one = V.exact_two_stage_variance(alpha, beta, f, 1)
    assert math.isclose(one, V.importance_sampling_variance(joint_a, joint_f, joint_a, 1), rel_tol=1e-10)


def test_argument_checks():
    a, f = _problem(4, 2, seed=10)
    with pytest.raises(ValueError):
        V.monte_carlo_variance("importance", a, f, 2, 10)  # no proposal
    with pytest.raises(ValueError):
        V.monte_carlo_variance("bogus", a, f, 2, 10)
    with pytest.raises(ValueError):
        V.exact_variance("without", a, f, 5)  # more draws than items
    with pytest.raises(ValueError):
        V.exact_variance("with", V.uniform_proposal(20), torch.ones(20, 2, dtype=torch.float64), 6)  # too many


def test_monte_carlo_check_helpers():
    from zoomin_lib.theory.variance import MC_SIGMAS, agrees, clearly_below

    assert agrees(1.0 + 3.9 * 0.01, 1.0, 0.01) and not agrees(1.0 + 4.1 * 0.01, 1.0, 0.01)
    assert clearly_below(1.0, 0.03, 1.25, 0.04)  # gap 0.25 > 4 * hypot(0.03, 0.04) = 0.2
    assert not clearly_below(1.0, 0.03, 1.19, 0.04) and MC_SIGMAS == 4.0


def test_log_axis_helpers():
    from zoomin_lib.book.plotting import lift_zeros, log_floor

    floor = log_floor([1e-3, 0.0, 1e-31], [2e-2])
    assert floor == pytest.approx(0.3e-3)
    assert lift_zeros([0.0, 1e-31, 5e-3], floor).tolist() == pytest.approx([0.3e-3, 0.3e-3, 5e-3])
    with pytest.raises(ValueError, match="above zero"):
        log_floor([0.0])
