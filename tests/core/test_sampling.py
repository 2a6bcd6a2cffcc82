"""Samplers draw with the probabilities they claim; bad input gets a clear error."""

import itertools

import pytest
import torch
from scipy.stats import chisquare

from zoomin_lib.hierarchical import expectation_two_stage, sample_subtiles, unique_draws
from zoomin_lib.sampling import (
    expectation_with_replacement,
    expectation_without_replacement,
    sample_with_replacement,
    sample_without_replacement,
    validate_probs,
)
from zoomin_lib.theory.enumeration import sequence_probability


def _pvalue(counts: torch.Tensor, probs: torch.Tensor) -> float:
    """Chi-square p-value of observed counts against probabilities (renormalised to the count total)."""
    expected = probs.double() / probs.double().sum() * counts.sum()
    return chisquare(counts.double().numpy(), expected.numpy()).pvalue


PROBS = torch.tensor([[0.05, 0.1, 0.15, 0.3, 0.4]], dtype=torch.float64)


def test_cpu_generator_with_cpu_probs_draws_as_torch_does():
    """Same device: the samplers draw exactly what torch.multinomial / Gumbel-top-k draw with that generator."""
    probs = torch.softmax(torch.randn(3, 12, generator=torch.Generator().manual_seed(7)), 1)
    idx = sample_with_replacement(probs, 9, torch.Generator().manual_seed(0))
    want = torch.multinomial(probs, 9, replacement=True, generator=torch.Generator().manual_seed(0))
    assert idx.device == probs.device and torch.equal(idx, want)
    idx = sample_without_replacement(probs, 5, torch.Generator().manual_seed(1))
    u = torch.rand(probs.shape, generator=torch.Generator().manual_seed(1))
    keys = torch.log(probs) - torch.log(-torch.log(u))
    assert torch.equal(idx, keys.topk(5, dim=1).indices)


def test_with_replacement_frequencies_match_probabilities():
    draws = sample_with_replacement(PROBS, 20000, generator=torch.Generator().manual_seed(0))
    counts = torch.bincount(draws.flatten(), minlength=5).double()
    assert _pvalue(counts, PROBS[0]) > 1e-3


def test_without_replacement_sequence_frequencies_match_probabilities():
    """Ordered pairs (i1, i2) occur with probability p_i1 * p_i2 / (1 - p_i1)."""
    probs = PROBS.expand(40000, 5).contiguous()
    draws = sample_without_replacement(probs, 2, generator=torch.Generator().manual_seed(1))
    pairs = list(itertools.permutations(range(5), 2))
    index = {p: i for i, p in enumerate(pairs)}
    counts = torch.zeros(len(pairs), dtype=torch.float64)
    for a, b in draws.tolist():
        counts[index[(a, b)]] += 1
    expected = torch.tensor([sequence_probability(PROBS[0].tolist(), p) for p in pairs])
    assert _pvalue(counts, expected) > 1e-3
    assert (draws[:, 0] != draws[:, 1]).all()


def test_sub_tile_draws_follow_beta_within_each_tile():
    """Second-stage draws of a tile hit twice are distinct and distributed as sequential draws from beta."""
    beta = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], dtype=torch.float64)
    tiles = torch.tensor([[1, 0, 1]]).expand(30000, 3).contiguous()
    draws = unique_draws(tiles)
    rows = beta[draws.tile]
    sub = sample_subtiles(rows, draws, generator=torch.Generator().manual_seed(2))
    assert (sub[:, 0] != sub[:, 2]).all()
    pairs = list(itertools.permutations(range(3), 2))
    counts = torch.zeros(len(pairs), dtype=torch.float64)
    for a, b in sub[:, [0, 2]].tolist():
        counts[pairs.index((a, b))] += 1
    expected = torch.tensor([sequence_probability(beta[1].tolist(), p) for p in pairs])
    assert _pvalue(counts, expected) > 1e-3
    assert _pvalue(torch.bincount(sub[:, 1], minlength=3), beta[0]) > 1e-3


def test_unique_draws_by_hand():
    tiles = torch.tensor([[3, 1, 3, 3], [0, 0, 2, 1]])
    d = unique_draws(tiles)
    pairs = list(zip(d.batch.tolist(), d.tile.tolist()))
    assert pairs == [(0, 1), (0, 3), (1, 0), (1, 1), (1, 2)]
    assert d.counts.tolist() == [1, 3, 2, 1, 1]
    assert d.rank.tolist() == [[0, 0, 1, 2], [0, 1, 0, 0]]
    assert [pairs[i] for i in d.inverse.flatten().tolist()] == [(0, 3), (0, 1), (0, 3), (0, 3), (1, 0), (1, 0), (1, 2), (1, 1)]


def test_same_generator_seed_same_draws():
    a = sample_without_replacement(PROBS, 3, generator=torch.Generator().manual_seed(5))
    b = sample_without_replacement(PROBS, 3, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_float32_estimators_run():
    probs = torch.softmax(torch.randn(2, 7), 1)
    idx = sample_without_replacement(probs, 3)
    feats = torch.randn(2, 3, 4)
    assert expectation_without_replacement(probs, idx, feats).dtype == torch.float32
    assert expectation_with_replacement(probs, idx, feats).shape == (2, 4)


@pytest.mark.parametrize(
    "probs,match",
    [
        (torch.tensor([[0.5, 0.6]]), "sum to 1"),
        (torch.tensor([[float("nan"), 1.0]]), "NaN"),
        (torch.tensor([[1.5, -0.5]]), "negative"),
        (torch.tensor([0.5, 0.5]), r"\[B, K\]"),
    ],
)
def test_bad_probabilities_are_rejected(probs, match):
    with pytest.raises(ValueError, match=match):
        validate_probs(probs)
    with pytest.raises(ValueError, match=match):
        sample_with_replacement(probs, 2)


def test_more_draws_than_support_is_rejected():
    with pytest.raises(ValueError, match="only 2 items with positive probability"):
        sample_without_replacement(torch.tensor([[0.5, 0.0, 0.5, 0.0]]), 3)
    with pytest.raises(ValueError, match="drawn 3 times but has only 2 sub-tiles"):
        tiles = torch.tensor([[0, 0, 0]])
        sample_subtiles(torch.tensor([[0.5, 0.5]]), unique_draws(tiles))


def test_estimator_input_checks():
    probs = torch.tensor([[0.5, 0.5, 0.0]])
    with pytest.raises(ValueError, match="zero probability"):
        expectation_with_replacement(probs, torch.tensor([[2]]), torch.ones(1, 1, 2))
    with pytest.raises(ValueError, match="repeats"):
        expectation_without_replacement(probs, torch.tensor([[0, 0]]), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"\[B, n, D\]"):
        expectation_without_replacement(probs, torch.tensor([[0, 1]]), torch.ones(1, 3, 2))
    with pytest.raises(ValueError, match="outside"):
        expectation_without_replacement(probs, torch.tensor([[0, 5]]), torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="beta_drawn"):
        expectation_two_stage(torch.tensor([[1.0]]), torch.tensor([[0]]), torch.tensor([[float("nan")]]), torch.ones(1, 1, 2))
