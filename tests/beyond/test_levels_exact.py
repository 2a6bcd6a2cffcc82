"""The L-level generalisation of eq. 9 (`beyond.levels.expectation_levels`): exactly unbiased in value and in the
gradient w.r.t. every level's logits and the features, by enumeration of every draw sequence (float64); its
child sampler's frequencies against the sequence probabilities."""

from __future__ import annotations

import itertools

import pytest
import torch

from zoomin_lib.beyond.levels import expectation_levels, full_levels_sum, sample_children
from zoomin_lib.hierarchical import expectation_two_stage
from zoomin_lib.theory.enumeration import levels_bias, levels_outcomes, sequence_probability


@pytest.mark.parametrize("t, ks, n, ns", [
    (2, (2, 3), 2, (2,)),  # three levels, two distinct children per sub-tile
    (3, (2, 2), 2, (1,)),  # three levels, one child per sub-tile
    (2, (2, 2, 2), 2, (1, 1)),  # four levels
])
def test_levels_estimator_is_exactly_unbiased(t, ks, n, ns):
    errors = levels_bias(t, ks, n, ns, seed=7)
    assert errors.pop("outcomes") > 1
    assert len(errors) == len(ks) + 3  # value, every level's logits (tiles, sub-tiles, deeper levels), features
    for name, err in errors.items():
        assert err < 1e-10, (name, err)


def test_outcome_probabilities_sum_to_one():
    alpha, beta = [0.3, 0.7], [[0.4, 0.6], [0.5, 0.5]]
    gamma = [[[0.2, 0.3, 0.5], [0.6, 0.2, 0.2]], [[0.1, 0.1, 0.8], [1 / 3, 1 / 3, 1 / 3]]]
    outcomes = list(levels_outcomes(alpha, beta, [gamma], 2, (2,)))
    assert sum(o.prob for o in outcomes) == pytest.approx(1.0, abs=1e-12)
    (tiles, subtiles), (idx3,) = outcomes[0].draws
    assert len(idx3) == 2 and all(len(row) == 2 and len(set(row)) == 2 for row in idx3)


def test_two_levels_reduce_to_the_two_stage_estimator():
    torch.manual_seed(0)
    alpha = torch.softmax(torch.randn(2, 4), 1)
    tiles, beta_drawn, feats = torch.randint(0, 4, (2, 3)), torch.rand(2, 3) * 0.5 + 0.1, torch.randn(2, 3, 5)
    torch.testing.assert_close(expectation_levels(alpha, tiles, beta_drawn, [], feats),
                               expectation_two_stage(alpha, tiles, beta_drawn, feats))


def test_full_levels_sum_by_hand():
    torch.manual_seed(1)
    alpha, beta = torch.softmax(torch.randn(1, 2), 1), torch.softmax(torch.randn(1, 2, 3), -1)
    gamma, feats = torch.softmax(torch.randn(1, 2, 3, 2), -1), torch.randn(1, 2, 3, 2, 4)
    by_hand = sum(alpha[0, c] * beta[0, c, d] * gamma[0, c, d, e] * feats[0, c, d, e]
                  for c, d, e in itertools.product(range(2), range(3), range(2)))
    torch.testing.assert_close(full_levels_sum(alpha, beta, [gamma], feats)[0], by_hand)


def test_sample_children_follows_the_sequence_probabilities():
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    draws = sample_children(probs.expand(3, 20000, 4), 2, torch.Generator().manual_seed(0))  # [3, R, 2]
    assert draws.shape == (3, 20000, 2) and (draws[..., 0] != draws[..., 1]).all()
    pairs = draws.reshape(-1, 2)
    for a, b in itertools.permutations(range(4), 2):
        p = sequence_probability(probs.tolist(), (a, b))
        freq = float(((pairs[:, 0] == a) & (pairs[:, 1] == b)).float().mean())
        assert abs(freq - p) < 4 * (p * (1 - p) / len(pairs)) ** 0.5 + 1e-4, ((a, b), freq, p)
    with pytest.raises(ValueError, match="distinct children"):
        sample_children(probs, 5)


def test_bad_shapes_name_the_level():
    alpha = torch.full((1, 2), 0.5)
    tiles, beta_drawn = torch.zeros(1, 2, dtype=torch.long), torch.full((1, 2), 0.5)
    with pytest.raises(ValueError, match="level 3"):
        expectation_levels(alpha, tiles, beta_drawn, [torch.full((1, 2, 3), 0.2)], torch.randn(1, 2, 2, 4))
    with pytest.raises(ValueError, match=r"level 3: drawn probabilities must be in \(0, 1\]"):
        expectation_levels(alpha, tiles, beta_drawn, [torch.zeros(1, 2, 2)], torch.randn(1, 2, 2, 4))
