"""Symbolic checks (sympy) of Zoom-In eq. 8, its proof (appendix B, eq. 11), eq. 9 and ATS eq. 14-17.

Attention weights b_1..b_K are symbols constrained to sum to 1 (b_K = 1 - b_1 - ... - b_{K-1});
features f_1..f_K are scalar symbols (every identity here is linear in f, so scalars suffice).
An identity holds when the difference of its sides cancels to 0 as a rational function.
"""

from __future__ import annotations

import itertools
from functools import reduce
from operator import mul

import sympy as sp

__all__ = [
    "symbols",
    "expectation",
    "eq8_rhs",
    "eq8_corrected",
    "eq8_as_printed",
    "eq11_second_line",
    "without_replacement_expected_value",
    "two_stage_expected_value",
    "two_stage_symbols",
    "two_stage_target",
    "is_zero",
]


def symbols(k: int) -> tuple[list[sp.Expr], list[sp.Symbol]]:
    """Attention symbols b (summing to 1, last one eliminated) and feature symbols f, K of each."""
    if k < 2:
        raise ValueError(f"K must be at least 2, got {k}")
    free = list(sp.symbols(f"b1:{k}", positive=True))
    b = free + [1 - sum(free)]
    f = list(sp.symbols(f"f1:{k + 1}"))
    return b, f


def is_zero(expr: sp.Expr) -> bool:
    """True when `expr` cancels to zero as a rational function."""
    num, _ = sp.fraction(sp.together(expr))
    return sp.expand(num) == 0


def expectation(b: list[sp.Expr], f: list[sp.Symbol]) -> sp.Expr:
    """sum_i b_i f_i, the expectation E_{c ~ b}[f_c] (eq. 7)."""
    return sum(bi * fi for bi, fi in zip(b, f))


eq8_rhs = expectation


def eq8_corrected(b: list[sp.Expr], f: list[sp.Symbol]) -> sp.Expr:
    """Eq. 8 with its parentheses restored: sum_c sum_{i != c} b_c b_i/(1-b_c) (b_c f_c + (1-b_c) f_i)."""
    k = len(b)
    return sum(
        b[c] * b[i] / (1 - b[c]) * (b[c] * f[c] + (1 - b[c]) * f[i]) for c in range(k) for i in range(k) if i != c
    )


def eq8_as_printed(b: list[sp.Expr], f: list[sp.Symbol]) -> sp.Expr:
    """Eq. 8 read as printed: the term (1-b_c) f_i falls outside the weighted parenthesis."""
    k = len(b)
    return sum(b[c] * b[i] / (1 - b[c]) * (b[c] * f[c]) + (1 - b[c]) * f[i] for c in range(k) for i in range(k) if i != c)


def eq11_second_line(b: list[sp.Expr], f: list[sp.Symbol], sign: int) -> sp.Expr:
    """Line 2 of eq. 11: the sum over all d, with the d = c' term added back with `sign` (+1 as printed, -1 as needed)."""
    k = len(b)
    total = 0
    for c in range(k):
        full = sum(b[c] * b[d] / (1 - b[c]) * (b[c] * f[c] + (1 - b[c]) * f[d]) for d in range(k))
        diagonal = b[c] * b[c] / (1 - b[c]) * (b[c] * f[c] + (1 - b[c]) * f[c])
        total += full + sign * diagonal
    return total


def _sequence_probability(b: list[sp.Expr], seq: tuple[int, ...]) -> sp.Expr:
    """Probability of drawing `seq` in order without replacement from b (eq. 13 of ATS)."""
    used, factors = 0, []
    for i in seq:
        factors.append(b[i] / (1 - used))
        used += b[i]
    return reduce(mul, factors, sp.Integer(1))


def _sequence_estimate(b: list[sp.Expr], f: list[sp.Symbol], seq: tuple[int, ...], last_only: bool = False) -> sp.Expr:
    """(1/n) sum_k Y_k, Y_k = sum_{j<k} b_{i_j} f_{i_j} + (1 - sum_{j<k} b_{i_j}) f_{i_k}; or Y_n alone (ATS eq. 14-15)."""
    terms, known, used = [], 0, 0
    for i in seq:
        terms.append(known + (1 - used) * f[i])
        known += b[i] * f[i]
        used += b[i]
    return terms[-1] if last_only else sum(terms) / len(seq)


def without_replacement_expected_value(b: list[sp.Expr], f: list[sp.Symbol], n: int, last_only: bool = False) -> sp.Expr:
    """E over all ordered n-draws without replacement of the estimator of Zoom-In eq. 9 (or, last_only, ATS eq. 14-15).

    The sum over the K!/(K-n)! sequences is taken level by level (first draw outermost) and each
    level is cancelled to lowest terms, which keeps the rational functions small.
    """

    if not 1 <= n <= len(b):
        raise ValueError(f"n must be in [1, K={len(b)}] for draws without replacement, got {n}")

    def expect(prefix: tuple[int, ...]) -> sp.Expr:
        if len(prefix) == n:
            return _sequence_estimate(b, f, prefix, last_only)
        left = 1 - sum(b[i] for i in prefix)
        total = sum(b[i] / left * expect(prefix + (i,)) for i in range(len(b)) if i not in prefix)
        return sp.cancel(sp.together(total))

    return expect(())


def two_stage_expected_value(
    alpha: list[sp.Expr], beta: list[list[sp.Expr]], f: list[list[sp.Symbol]], n: int, literal: bool = False
) -> sp.Expr:
    """E of the two-stage estimator of eq. 9: tiles iid from alpha, sub-tiles without replacement within each tile.

    literal=False: draw i's earlier-draw sum runs over earlier draws *of the same tile* (the reading used here).
    literal=True: eq. 9 as printed: over *all* earlier draws j < i, weighted beta^{c_i}_{c'_j} with f(c_i, c'_j).
    """
    t = len(alpha)
    total = 0
    for tiles in itertools.product(range(t), repeat=n):
        p_tiles = reduce(mul, [alpha[c] for c in tiles], sp.Integer(1))
        groups = sorted(set(tiles))
        counts = [tiles.count(c) for c in groups]
        per_tile = [list(itertools.permutations(range(len(beta[c])), m)) for c, m in zip(groups, counts)]
        for choice in itertools.product(*per_tile):
            order = {c: list(seq) for c, seq in zip(groups, choice)}
            p = p_tiles * reduce(mul, [_sequence_probability(beta[c], seq) for c, seq in zip(groups, choice)], 1)
            subtiles = [order[c].pop(0) for c in tiles]
            est = 0
            for i, (ci, si) in enumerate(zip(tiles, subtiles)):
                earlier = [s for j, s in enumerate(subtiles[:i]) if literal or tiles[j] == ci]
                est += sum(beta[ci][s] * f[ci][s] for s in earlier) + (1 - sum(beta[ci][s] for s in earlier)) * f[ci][si]
            total += p * est / n
    return total


def two_stage_symbols(t: int, k2: int) -> tuple[list[sp.Expr], list[list[sp.Expr]], list[list[sp.Symbol]]]:
    """alpha over t tiles and beta^c over k2 sub-tiles per tile (each summing to 1), and features f[c][c']."""
    alpha, _ = symbols(t)
    alpha = [a.subs({s: sp.Symbol(f"a{s.name[1:]}", positive=True) for s in a.free_symbols}) for a in alpha]
    beta, feats = [], []
    for c in range(t):
        free = list(sp.symbols(f"b{c + 1}_1:{k2}", positive=True))
        beta.append(free + [1 - sum(free)])
        feats.append(list(sp.symbols(f"f{c + 1}_1:{k2 + 1}")))
    return alpha, beta, feats


def two_stage_target(alpha: list[sp.Expr], beta: list[list[sp.Expr]], f: list[list[sp.Symbol]]) -> sp.Expr:
    """Eq. 5's aggregate sum_c alpha_c sum_c' beta^c_c' f(c, c')."""
    return sum(a * expectation(bc, fc) for a, bc, fc in zip(alpha, beta, f))
