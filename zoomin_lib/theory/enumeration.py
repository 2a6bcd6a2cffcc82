"""Exact expectations of sampling estimators by enumerating every draw sequence.

For small K and n the expectation of an estimator's value, and of its autograd gradient, is a
finite sum over draw sequences weighted by their probabilities. This is how the estimators of
ATS eq. 4/14-17 and Zoom-In eq. 9 are checked to be unbiased in value *and* in gradient, and so
is the L-level generalisation of eq. 9 (`beyond.levels.expectation_levels`, `levels_bias`), and the rule
that chooses the number of rounds per image from a pilot (`beyond.adaptive`, `adaptive_bias`), beside the
naive sequential rule that is biased.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from functools import reduce
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor

from zoomin_lib.beyond.adaptive import (
    adaptive_estimate,
    naive_sequential_estimate,
    round_estimates_two_stage,
    round_estimates_with_replacement,
)
from zoomin_lib.beyond.levels import expectation_levels, full_levels_sum
from zoomin_lib.hierarchical import expectation_two_stage, full_two_stage_sum

__all__ = [
    "Outcome",
    "with_replacement_outcomes",
    "without_replacement_outcomes",
    "two_stage_outcomes",
    "sequence_probability",
    "expected_value_and_grads",
    "two_stage_bias",
    "levels_outcomes",
    "levels_bias",
    "rounds_outcomes",
    "adaptive_bias",
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


def _subtree(deeper: Sequence, path: tuple, ns: Sequence[int]) -> Iterator[tuple[list, float]]:
    """Every draw below the node at `path`: n_l distinct children per node at each level, without replacement.

    Yields (arrays, p): arrays[k] holds the indices drawn k levels below the node, nested
    [n_first][n_next]...; deeper[k] is indexed by a full path (tile, sub-tile, ...) to a probability list.
    """
    if not ns:
        yield [], 1.0
        return
    probs = reduce(lambda a, i: a[i], path, deeper[0])
    for first in without_replacement_outcomes(probs, ns[0]):
        below = [list(_subtree(deeper[1:], path + (c,), ns[1:])) for c in first.draws]
        for combo in itertools.product(*below):
            arrays = [list(first.draws)] + [[sub[0][k] for sub in combo] for k in range(len(ns) - 1)]
            yield arrays, first.prob * math.prod(sub[1] for sub in combo)


def levels_outcomes(
    alpha: Sequence[float], beta: Sequence[Sequence[float]], deeper: Sequence, n: int, ns: Sequence[int]
) -> Iterator[Outcome]:
    """Every L-level draw: the two stages of `two_stage_outcomes`, then n_l children per node at each deeper level.

    deeper[l - 3] is a nested list indexed by (tile, sub-tile, ..., level l - 1's node) to level l's
    probabilities. Outcome.draws = ((tiles, subtiles), [idx_3, ..., idx_L]), idx_l nested [N][n_3]...[n_l].
    """
    for two in two_stage_outcomes(alpha, beta, n):
        tiles, subtiles = two.draws
        per_draw = [list(_subtree(deeper, (c, c2), ns)) for c, c2 in zip(tiles, subtiles)]
        for combo in itertools.product(*per_draw):
            arrays = [[draw[0][k] for draw in combo] for k in range(len(ns))]
            yield Outcome((two.draws, arrays), two.prob * math.prod(draw[1] for draw in combo))


def levels_bias(t: int, ks: Sequence[int], n: int, ns: Sequence[int], dim: int = 3, seed: int = 0) -> dict[str, float]:
    """Relative error of E[value] and E[gradients] of the L-level estimator against the exact target, float64.

    ks = (K2, K3, ..., K_L) children per node at each level below the tiles, ns = (n_3, ..., n_L)
    children drawn per node below level 2. Gradients w.r.t. every level's logits and the leaf features.
    """
    if len(ns) != len(ks) - 1:
        raise ValueError(f"ns gives the draws of levels 3..L: {len(ks) - 1} numbers for ks={tuple(ks)}, got {tuple(ns)}")
    gen = torch.Generator().manual_seed(seed)
    shapes = [(t,)] + [(t, *ks[: i + 1]) for i in range(len(ks))]  # level l's logits: [T, K2, ..., K_l]
    logits = [torch.randn(s, generator=gen, dtype=torch.float64).requires_grad_() for s in shapes]
    feats = torch.randn(t, *ks, dim, generator=gen, dtype=torch.float64).requires_grad_()
    project = torch.randn(dim, generator=gen, dtype=torch.float64)
    params = [*logits, feats]

    def estimate(draws: tuple) -> Tensor:
        (tiles, subtiles), arrays = draws
        probs = [torch.softmax(lg, dim=-1) for lg in logits]
        tiles, subtiles = torch.tensor(tiles), torch.tensor(subtiles)  # [N]
        index: tuple = (tiles, subtiles)
        drawn = []
        for level, idx in enumerate(arrays):
            idx = torch.tensor(idx)  # [N, n_3, ..., n_l]
            index = tuple(i.unsqueeze(-1) for i in index) + (idx,)  # broadcast every earlier index to idx
            drawn.append(probs[level + 2][index][None])  # [1, N, n_3, ..., n_l]
        leaf = feats[index][None]  # [1, N, n_3, ..., n_L, D]
        beta_drawn = probs[1][tiles, subtiles][None]  # [1, N]
        return expectation_levels(probs[0][None], tiles[None], beta_drawn, drawn, leaf)

    with torch.no_grad():
        plain = [torch.softmax(lg, dim=-1).tolist() for lg in logits]
    outcomes = list(levels_outcomes(plain[0], plain[1], plain[2:], n, ns))
    value, grads = expected_value_and_grads(outcomes, estimate, params, project)
    probs = [torch.softmax(lg, dim=-1) for lg in logits]
    exact = full_levels_sum(probs[0][None], probs[1][None], [p[None] for p in probs[2:]], feats[None])[0]
    exact_grads = torch.autograd.grad((exact * project).sum(), params)

    def rel(got: Tensor, want: Tensor) -> float:
        return float((got - want).norm() / want.norm())

    out: dict[str, float] = {"outcomes": len(outcomes), "value": rel(value.squeeze(0), exact.detach())}
    for level, (g, e) in enumerate(zip(grads[:-1], exact_grads[:-1]), start=1):
        out[f"grad_level{level}_logits"] = rel(g, e)
    out["grad_features"] = rel(grads[-1], exact_grads[-1])
    return out


def rounds_outcomes(per_round: Sequence[Outcome], rounds: int) -> Iterator[Outcome]:
    """Every sequence of `rounds` independent rounds, each one of `per_round`: draws = (round 1's, round 2's, ...)."""
    for combo in itertools.product(per_round, repeat=rounds):
        yield Outcome(tuple(o.draws for o in combo), math.prod(o.prob for o in combo))


def adaptive_bias(k: int, pilot: int, budget: int, tol: float, *, rule: str = "adaptive", round_size: int = 1,
                  tiles: int | None = None, dim: int = 2, seed: int = 0) -> dict[str, Any]:
    """Relative error of E[value] and E[gradients] of a rule that picks the rounds per image, float64, exact.

    Every sequence of `budget` rounds is enumerated (rounds of `round_size` draws: iid from a over K items,
    or with `tiles` = T two-stage draws over T tiles of K sub-tiles). rule="adaptive" is
    `beyond.adaptive.adaptive_estimate` (P = `pilot` rounds choose M, the mean of M fresh rounds);
    rule="naive" is `naive_sequential_estimate` (stop once the running standard error of all rounds is
    below tol, from `pilot` rounds on, and average them all). Also returned: the numbers of averaged
    rounds that occur ("rounds_seen") and the expected draws per image, pilot included ("expected_draws").
    """
    if rule not in ("adaptive", "naive"):
        raise ValueError(f"rule must be 'adaptive' or 'naive', got {rule!r}")
    gen = torch.Generator().manual_seed(seed)
    shape = (k,) if tiles is None else (tiles, k)
    la = torch.randn(shape[0], generator=gen, dtype=torch.float64).requires_grad_()
    lb = None if tiles is None else torch.randn(tiles, k, generator=gen, dtype=torch.float64).requires_grad_()
    feats = torch.randn(*shape, dim, generator=gen, dtype=torch.float64).requires_grad_()
    project = torch.randn(dim, generator=gen, dtype=torch.float64)
    params = [la, feats] if lb is None else [la, lb, feats]
    with torch.no_grad():
        if lb is None:
            per_round = list(with_replacement_outcomes(torch.softmax(la, 0).tolist(), round_size))
        else:
            per_round = list(two_stage_outcomes(torch.softmax(la, 0).tolist(), torch.softmax(lb, 1).tolist(), round_size))
    spent: dict[tuple, tuple[int, int]] = {}

    def estimate(draws: tuple) -> Tensor:
        alpha = torch.softmax(la, 0)[None]  # [1, K] or [1, T]
        if lb is None:
            idx = torch.tensor(draws).view(1, budget, round_size)  # [1, R, r]
            rounds = round_estimates_with_replacement(alpha, idx, feats[idx])  # [1, R, D]
        else:
            tl = torch.tensor([d[0] for d in draws]).view(1, budget, round_size)  # [1, R, r]
            sub = torch.tensor([d[1] for d in draws]).view(1, budget, round_size)  # [1, R, r]
            rounds = round_estimates_two_stage(alpha, tl, torch.softmax(lb, 1)[tl, sub], feats[tl, sub])  # [1, R, D]
        if rule == "adaptive":
            out = adaptive_estimate(rounds, pilot, tol, budget, round_size=round_size)
        else:
            out = naive_sequential_estimate(rounds, tol, min_rounds=pilot, round_size=round_size)
        spent[draws] = (int(out.rounds), int(out.draws))
        return out.value

    outcomes = list(rounds_outcomes(per_round, budget))
    value, grads = expected_value_and_grads(outcomes, estimate, params, project)
    if lb is None:
        exact = torch.softmax(la, 0) @ feats  # [D]
    else:
        exact = full_two_stage_sum(torch.softmax(la, 0)[None], torch.softmax(lb, 1)[None], feats[None])[0]
    exact_grads = torch.autograd.grad((exact * project).sum(), params)

    def rel(got: Tensor, want: Tensor) -> float:
        return float((got - want).norm() / want.norm())

    names = ["grad_logits", "grad_features"] if lb is None else ["grad_alpha_logits", "grad_beta_logits", "grad_features"]
    out: dict[str, Any] = {"outcomes": len(outcomes), "value": rel(value.squeeze(0), exact.detach())}
    out.update({name: rel(g, e) for name, g, e in zip(names, grads, exact_grads)})
    out["rounds_seen"] = sorted({r for r, _ in spent.values()})
    out["expected_draws"] = sum(o.prob * spent[o.draws][1] for o in outcomes)
    return out
