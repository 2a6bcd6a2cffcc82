"""N from the data (`beyond.adaptive`): the pilot rule is exactly unbiased in value and gradient (enumeration of every
draw sequence, float64), the naive sequential rule is not (the test has power), the batched rule matches a per-image
reference, M respects the tolerance and the budget, and the host synchronisations are bounded."""

from __future__ import annotations

import statistics

import pytest
import torch

from zoomin_lib.beyond.adaptive import (
    adaptive_estimate,
    adaptive_two_stage,
    adaptive_with_replacement,
    choose_rounds,
    naive_sequential_estimate,
    predictable_mean,
    round_estimates_with_replacement,
    round_variance,
)
from zoomin_lib.syncs import record_syncs
from zoomin_lib.theory.enumeration import adaptive_bias


def _errors(result: dict) -> dict:
    return {key: v for key, v in result.items() if key == "value" or key.startswith("grad")}


@pytest.mark.parametrize("kw", [
    dict(k=3, pilot=2, budget=5, tol=0.3),  # one stage, M in {1, 2, 3}
    dict(k=3, pilot=3, budget=5, tol=0.4, seed=3),
    dict(k=2, pilot=2, budget=4, tol=0.5, round_size=2, seed=1),  # rounds of two draws
    dict(k=2, tiles=2, pilot=2, budget=4, tol=0.5),  # Zoom-In's two stages per round
])
def test_pilot_rule_is_exactly_unbiased(kw):
    result = adaptive_bias(**kw)
    assert len(result["rounds_seen"]) >= 2, result  # M really varies with the draws
    for name, err in _errors(result).items():
        assert err < 1e-10, (name, err)


@pytest.mark.parametrize("kw", [dict(k=3, pilot=2, budget=5, tol=0.3), dict(k=2, tiles=2, pilot=2, budget=4, tol=0.5)])
def test_naive_sequential_rule_is_biased(kw):
    result = adaptive_bias(rule="naive", **kw)
    assert len(result["rounds_seen"]) >= 2
    assert result["value"] > 1e-2 and max(_errors(result).values()) > 1e-1, result


def test_choose_rounds_respects_tolerance_and_budget():
    gen = torch.Generator().manual_seed(0)
    pilot = torch.randn(200, 4, 3, generator=gen, dtype=torch.float64) * torch.rand(200, 1, 1, generator=gen) * 3
    tol, budget = 0.4, 20
    m, s2 = choose_rounds(pilot, tol, budget, min_rounds=2)
    assert m.dtype == torch.long and int(m.min()) >= 2 and int(m.max()) <= budget - 4
    clipped = m == budget - 4
    assert ((s2 / m <= tol**2 + 1e-12) | clipped).all()  # the estimated standard error meets tol unless clipped
    assert ((s2 / (m - 1) > tol**2) | (m == 2)).all()  # and M is the smallest that does
    assert 2 < len(set(m.tolist()))  # N differs between images
    ref = [sum(statistics.variance(pilot[b, :, d].tolist()) for d in range(3)) for b in range(200)]
    torch.testing.assert_close(s2, torch.tensor(ref, dtype=torch.float64))


def test_projection_measures_the_logits():
    pilot = torch.randn(5, 3, 4, dtype=torch.float64)
    head = torch.randn(4, 2, dtype=torch.float64)
    torch.testing.assert_close(round_variance(pilot, head), round_variance(pilot @ head))


def test_batched_rule_matches_a_per_image_reference():
    gen = torch.Generator().manual_seed(1)
    rounds = torch.randn(6, 12, 3, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 2, 6).view(6, 1, 1)
    batched = adaptive_estimate(rounds, 3, 0.5, 12)
    naive = naive_sequential_estimate(rounds, 0.5, min_rounds=3)
    for b in range(6):
        x = rounds[b].tolist()
        s2 = sum(statistics.variance([row[d] for row in x[:3]]) for d in range(3))
        m = min(max(int(-(-s2 // 0.25)), 1), 9)
        assert int(batched.rounds[b]) == m
        torch.testing.assert_close(batched.value[b], rounds[b, 3 : 3 + m].mean(0))
        tau = next((t for t in range(3, 13)
                    if sum(statistics.variance([row[d] for row in x[:t]]) for d in range(3)) / t <= 0.25), 12)
        assert int(naive.rounds[b]) == tau
        torch.testing.assert_close(naive.value[b], rounds[b, :tau].mean(0))
    assert len(set(batched.rounds.tolist())) > 1


def test_rounds_reuse_the_library_estimator():
    gen = torch.Generator().manual_seed(2)
    probs = torch.softmax(torch.randn(2, 5, generator=gen, dtype=torch.float64), 1)
    idx = torch.randint(0, 5, (2, 3, 4), generator=gen)
    feats = torch.randn(2, 3, 4, 6, generator=gen, dtype=torch.float64)
    est = round_estimates_with_replacement(probs, idx, feats)  # [2, 3, 6]
    torch.testing.assert_close(est, feats.mean(2))  # the value of eq. 4 is the plain mean
    torch.testing.assert_close(predictable_mean(est, torch.tensor([1, 3])), torch.stack([est[0, 0], est[1].mean(0)]))


def test_monte_carlo_unbiased_with_a_fixed_seed():
    gen = torch.Generator().manual_seed(3)
    probs = torch.softmax(2 * torch.randn(2, 16, generator=gen, dtype=torch.float64), 1)
    feats = torch.randn(2, 16, 4, generator=gen, dtype=torch.float64)
    reps = 4000
    out = adaptive_with_replacement(probs.repeat_interleave(reps, 0), feats.repeat_interleave(reps, 0), 4, 0.3, 40,
                                    generator=gen)
    value = out.value.view(2, reps, 4)
    exact = torch.einsum("bk,bkd->bd", probs, feats)
    se = value.std(1) / reps**0.5
    assert ((value.mean(1) - exact).abs() < 4 * se).all()
    per_image = out.rounds.view(2, reps).double().mean(1)
    assert out.rounds.min() >= 1 and out.rounds.max() <= 36 and (per_image[0] - per_image[1]).abs() > 1


def test_gradient_flows_without_the_weights():
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(3, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    feats = torch.randn(3, 6, 2, generator=gen, dtype=torch.float64, requires_grad=True)
    out = adaptive_with_replacement(torch.softmax(logits, 1), feats, 2, 0.2, 10, generator=gen)
    out.value.sum().backward()
    assert logits.grad is not None and feats.grad is not None and not out.rounds.requires_grad


def test_host_synchronisations_are_bounded():
    gen = torch.Generator().manual_seed(5)
    for b in (2, 8):
        probs = torch.softmax(torch.randn(b, 9, generator=gen), 1)
        feats = torch.randn(b, 9, 3, generator=gen)
        with record_syncs() as log:
            adaptive_with_replacement(probs, feats, 3, 0.1, 30, generator=gen)
        assert len(log) == 1, log
        with record_syncs() as log:
            adaptive_with_replacement(probs, feats, 3, 0.1, 30, static_width=27, generator=gen)
        assert log == []
        alpha = torch.softmax(torch.randn(b, 4, generator=gen), 1)
        beta = torch.softmax(torch.randn(b, 4, 5, generator=gen), -1)
        with record_syncs() as log:
            out = adaptive_two_stage(alpha, beta, torch.randn(b, 4, 5, 3, generator=gen), 2, 0.1, 12, round_size=3,
                                     generator=gen)
        assert len(log) == 3, log
        assert out.value.shape == (b, 3) and (out.draws == 3 * (2 + out.rounds)).all()


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="P >= 2"):
        choose_rounds(torch.zeros(2, 1, 3), 0.1, 5)
    with pytest.raises(ValueError, match="min_rounds"):
        choose_rounds(torch.zeros(2, 4, 3), 0.1, 4)
    with pytest.raises(ValueError, match="tol"):
        choose_rounds(torch.zeros(2, 4, 3), 0.0, 9)
