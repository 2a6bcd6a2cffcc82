"""The symbolic checks of chapter 01 and the flawed gradient rules behave as the chapter says."""

import pytest
import torch

from zoomin_lib.theory import symbolic as S
from zoomin_lib.theory.estimator_variants import RULES, gradient_bias, monte_carlo_logit_gradient


@pytest.mark.parametrize("k", [2, 3, 4])
def test_eq8_corrected_holds_and_printed_does_not(k):
    b, f = S.symbols(k)
    assert S.is_zero(S.eq8_corrected(b, f) - S.eq8_rhs(b, f))
    assert not S.is_zero(S.eq8_as_printed(b, f) - S.eq8_rhs(b, f))
    assert S.is_zero(S.eq11_second_line(b, f, -1) - S.eq8_corrected(b, f))
    assert not S.is_zero(S.eq11_second_line(b, f, +1) - S.eq8_corrected(b, f))


@pytest.mark.parametrize("k,n", [(3, 2), (4, 3)])
def test_without_replacement_symbolically_unbiased(k, n):
    b, f = S.symbols(k)
    for last_only in (False, True):
        assert S.is_zero(S.without_replacement_expected_value(b, f, n, last_only) - S.expectation(b, f))


def test_symbolic_with_replacement_like_estimator_would_fail():
    """Power check: the plain mean of the draws is biased without replacement."""
    import itertools

    b, f = S.symbols(3)
    plain = sum(
        S._sequence_probability(b, seq) * (f[seq[0]] + f[seq[1]]) / 2 for seq in itertools.permutations(range(3), 2)
    )
    assert not S.is_zero(plain - S.expectation(b, f))


def test_two_stage_within_tile_unbiased_literal_not():
    alpha, beta, feats = S.two_stage_symbols(2, 2)
    target = S.two_stage_target(alpha, beta, feats)
    assert S.is_zero(S.two_stage_expected_value(alpha, beta, feats, 2) - target)
    assert not S.is_zero(S.two_stage_expected_value(alpha, beta, feats, 2, literal=True) - target)


def test_symbolic_input_checks():
    with pytest.raises(ValueError, match="at least 2"):
        S.symbols(1)
    b, f = S.symbols(2)
    with pytest.raises(ValueError, match="n must be"):
        S.without_replacement_expected_value(b, f, 3)


def test_only_the_score_surrogate_has_unbiased_gradients():
    table = gradient_bias(5, 3, seed=1)
    assert all(row["value"] < 1e-12 for row in table.values())
    assert max(table["zoomin (score surrogate)"].values()) < 1e-12
    for name in ("pathwise only", "ATS hand-written rule", "port: inclusive sums"):
        assert table[name]["grad_logits"] > 0.05, name
    assert table["ATS hand-written rule"]["grad_features"] < 1e-12  # its feature gradient is exact
    assert table["port: inclusive sums"]["grad_features"] > 0.05


def test_monte_carlo_gradient_converges_for_the_surrogate():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, generator=gen, dtype=torch.float64)
    feats = torch.randn(4, 2, generator=gen, dtype=torch.float64)
    project = torch.randn(2, generator=gen, dtype=torch.float64)
    lg = logits.clone().requires_grad_()
    (exact,) = torch.autograd.grad(torch.softmax(lg, 0) @ feats @ project, lg)
    mc = monte_carlo_logit_gradient(RULES["zoomin (score surrogate)"], logits, feats, project, 2, 200_000, gen)
    assert (mc - exact).norm() / exact.norm() < 0.02
