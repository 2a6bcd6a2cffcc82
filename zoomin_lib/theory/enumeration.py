"""Exact expectations of sampling estimators by enumerating every draw sequence.

For small K and n the expectation of an estimator's value, and of its autograd gradient, is a
finite sum over draw sequences weighted by their probabilities. This is how the estimators of
ATS eq. 4/14-17 and Zoom-In eq. 9 are checked to be unbiased in value *and* in gradient.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from torch import Tensor

from zoomin_lib.hierarchical import expectation_two_stage, full_two_stage_sum

__all__ = [
    "Outcome",
    "with_replacement_outcomes",
    "without_replacement_outcomes",
    "two_stage_outcomes",
    "sequence_probability",
    "expected_value_and_grads",
    "two_stage_bias",
]


@dataclass(frozen=True)
class Outcome:
    """One draw sequence and its probability."""

    draws: tuple  # the drawn indices (for two stages: (tiles, subtiles))
    prob: float


def sequence_probability(probs: Sequence[float], seq: Sequence[int]) -> float:
    """Probability of drawing `seq` in order without replacement from `probs`."""
    p, used = 1.0, 0.0
    for i in seq:
        p *= probs[i] / (1.0 - used)
        used += probs[i]
    return p


def with_replacement_outcomes(probs: Sequence[float], n: int) -> Iterator[Outcome]:
    """Every ordered sequence of n iid draws from `probs`, with its probability."""
    for seq in itertools.product(range(len(probs)), repeat=n):
        p = 1.0
        for i in seq:
            p *= probs[i]
        yield Outcome(seq, p)


def without_replacement_outcomes(probs: Sequence[float], n: int) -> Iterator[Outcome]:
    """Every ordered sequence of n distinct draws from `probs`, with its probability."""
    for seq in itertools.permutations(range(len(probs)), n):
        yield Outcome(seq, sequence_probability(probs, seq))


def two_stage_outcomes(alpha: Sequence[float], beta: Sequence[Sequence[float]], n: int) -> Iterator[Outcome]:
    """Every two-stage draw: n tiles iid from alpha, then per tile its sub-tiles without replacement from beta[c]."""
    for first in with_replacement_outcomes(alpha, n):
        tiles = first.draws
        unique = sorted(set(tiles))
        counts = {c: tiles.count(c) for c in unique}
        per_tile = [list(without_replacement_outcomes(beta[c], counts[c])) for c in unique]
        for choice in itertools.product(*per_tile):
            order = {c: list(o.draws) for c, o in zip(unique, choice)}
            subtiles = tuple(order[c].pop(0) for c in tiles)  # k-th visit of a tile takes its k-th sub-tile
            p = first.prob
            for o in choice:
                p *= o.prob
            yield Outcome((tiles, subtiles), p)


def expected_value_and_grads(
    outcomes: Sequence[Outcome],
    estimate: Callable[[tuple], Tensor],
    params: Sequence[Tensor],
    project: Tensor | None = None,
) -> tuple[Tensor, list[Tensor]]:
    """E[estimate] and E[d (project . estimate) / d params] over `outcomes` (probabilities summing to 1)."""
    total_p = sum(o.prob for o in outcomes)
    if abs(total_p - 1.0) > 1e-9:
        raise ValueError(f"outcome probabilities sum to {total_p}, not 1")
    value = None
    grads = [torch.zeros_like(p) for p in params]
    for o in outcomes:
        est = estimate(o.draws)
        scalar = (est * project).sum() if project is not None else est.sum()
        gs = torch.autograd.grad(scalar, params, allow_unused=True)
        value = est.detach() * o.prob if value is None else value + est.detach() * o.prob
        for acc, g in zip(grads, gs):
            if g is not None:
                acc += o.prob * g
    return value, grads


def two_stage_bias(t: int, k2: int, n: int, dim: int = 3, seed: int = 0) -> dict[str, float]:
    """Relative error of E[value] and E[gradients] (alpha logits, beta logits, features) of the two-stage estimator, float64."""
    gen = torch.Generator().manual_seed(seed)
    la = torch.randn(t, generator=gen, dtype=torch.float64).requires_grad_()
    lb = torch.randn(t, k2, generator=gen, dtype=torch.float64).requires_grad_()
    feats = torch.randn(t, k2, dim, generator=gen, dtype=torch.float64).requires_grad_()
    project = torch.randn(dim, generator=gen, dtype=torch.float64)
    params = [la, lb, feats]

    def estimate(draws: tuple) -> Tensor:
        tiles, subtiles = torch.tensor([draws[0]]), torch.tensor([draws[1]])
        beta = torch.softmax(lb, 1)
        return expectation_two_stage(torch.softmax(la, 0)[None], tiles, beta[tiles, subtiles], feats[tiles, subtiles])

    outcomes = list(two_stage_outcomes(torch.softmax(la.detach(), 0).tolist(), torch.softmax(lb.detach(), 1).tolist(), n))
    value, grads = expected_value_and_grads(outcomes, estimate, params, project)
    exact = full_two_stage_sum(torch.softmax(la, 0)[None], torch.softmax(lb, 1)[None], feats[None])[0]
    exact_grads = torch.autograd.grad((exact * project).sum(), params)

    def rel(got: Tensor, want: Tensor) -> float:
        return float((got - want).norm() / want.norm())

    return {
        "outcomes": len(outcomes),
        "value": rel(value.squeeze(0), exact.detach()),
        "grad_alpha_logits": rel(grads[0], exact_grads[0]),
        "grad_beta_logits": rel(grads[1], exact_grads[1]),
        "grad_features": rel(grads[2], exact_grads[2]),
    }
