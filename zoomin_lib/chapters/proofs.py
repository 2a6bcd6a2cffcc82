"""Chapter 01: eq. 8 of Zoom-In, its proof, and the unbiasedness of values and gradients, checked by code.

Each function computes one table or figure of the chapter from the theory layer:

* `eq8_symbolic`, `eq8_numeric`: Zoom-In eq. 8 (main text and appendix B) and the second line of
  the proof's eq. 11, symbolically (`theory.symbolic`) and in float64;
* `estimator_symbolic`: the without-replacement estimator, the average of the terms (Zoom-In eq. 9)
  and the last term alone (ATS eq. 14-15), by summing over every ordered draw;
* `two_stage_symbolic`: eq. 9 across two stages, the within-tile reading against the literal one;
* `gradient_bias_grid`, `monte_carlo_gradient`: the four gradient rules of
  `theory.estimator_variants` (ATS eq. 16-17 and the score surrogate of `zoomin_lib.sampling`),
  exactly over a grid of problems and by Monte-Carlo averages, with their figures;
* `adaptive_cases`, `adaptive_rows`: beyond the paper, the rule that picks the number of rounds per image
  from a pilot (`beyond.adaptive`) against the naive sequential rule, both by exact enumeration
  (`theory.enumeration.adaptive_bias`).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import matplotlib.pyplot as plt
import numpy as np
import sympy as sp
import torch
from matplotlib.figure import Figure

from zoomin_lib.theory import symbolic as S
from zoomin_lib.theory.enumeration import adaptive_bias
from zoomin_lib.theory.estimator_variants import RULES, gradient_bias, monte_carlo_logit_gradient

__all__ = [
    "eq8_symbolic",
    "eq8_numeric",
    "estimator_symbolic",
    "two_stage_symbolic",
    "gradient_bias_rows",
    "gradient_bias_grid",
    "plot_gradient_bias_grid",
    "monte_carlo_gradient",
    "plot_monte_carlo_gradient",
    "ADAPTIVE_CASES",
    "adaptive_cases",
    "adaptive_rows",
]

# the small problems enumerated for the adaptive rule: one stage (K items) and two stages (T tiles of K sub-tiles)
ADAPTIVE_CASES = {
    "one stage, K=3, P=2, budget 5": dict(k=3, pilot=2, budget=5, tol=0.3),
    "two stages, T=2, K2=2, P=2, budget 4": dict(k=2, tiles=2, pilot=2, budget=4, tol=0.5),
}

MARKERS = "osD^"  # one per rule of RULES, in its order
OURS = "zoomin (score surrogate)"  # the rule of zoomin_lib.sampling in RULES


def eq8_symbolic(max_k: int) -> list[dict[str, Any]]:
    """For K = 2..max_k: whether the corrected and the printed eq. 8, and eq. 11's line 2 with - and +, hold (sympy)."""
    rows = []
    for k in range(2, max_k + 1):
        b, f = S.symbols(k)
        t0 = time.perf_counter()
        rows.append({
            "K": k,
            "corrected eq. 8 holds": S.is_zero(S.eq8_corrected(b, f) - S.eq8_rhs(b, f)),
            "printed eq. 8 holds": S.is_zero(S.eq8_as_printed(b, f) - S.eq8_rhs(b, f)),
            "eq. 11 line 2 with minus holds": S.is_zero(S.eq11_second_line(b, f, -1) - S.eq8_corrected(b, f)),
            "eq. 11 line 2 with plus holds": S.is_zero(S.eq11_second_line(b, f, +1) - S.eq8_corrected(b, f)),
            "seconds": round(time.perf_counter() - t0, 2),
        })
    return rows


def eq8_numeric(max_k: int, seed: int, dim: int = 4) -> list[dict[str, Any]]:
    """For K = 2..max_k: the largest error of the corrected and the printed eq. 8 against sum_i beta_i f_i, in float64.

    beta = softmax of K standard normals and the features [K, dim] are drawn in turn, per K, from
    one generator seeded with `seed`.
    """
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for k in range(2, max_k + 1):
        beta = torch.softmax(torch.randn(k, generator=gen, dtype=torch.float64), 0)  # [K]
        feats = torch.randn(k, dim, generator=gen, dtype=torch.float64)  # [K, D]
        pairs = [(c, i) for c in range(k) for i in range(k) if i != c]  # c' first, then i != c'
        corrected = sum(beta[c] * beta[i] / (1 - beta[c]) * (beta[c] * feats[c] + (1 - beta[c]) * feats[i])
                        for c, i in pairs)  # [D]
        printed = sum(beta[c] * beta[i] / (1 - beta[c]) * (beta[c] * feats[c]) + (1 - beta[c]) * feats[i]
                      for c, i in pairs)  # [D]: the parenthesis closed early
        target = beta @ feats  # [D]
        rows.append({"K": k, "max abs error, corrected": float((corrected - target).abs().max()),
                     "max abs error, printed": float((printed - target).abs().max())})
    return rows


def estimator_symbolic(max_k: int, max_n: int = 3) -> list[dict[str, Any]]:
    """For K = 2..max_k and n = 1..min(K, max_n): whether the mean of the Y_k and Y_n alone are unbiased (sympy)."""
    rows = []
    for k in range(2, max_k + 1):
        b, f = S.symbols(k)
        target = S.expectation(b, f)
        for n in range(1, min(k, max_n) + 1):
            t0 = time.perf_counter()
            mean_ok = S.is_zero(S.without_replacement_expected_value(b, f, n) - target)
            last_ok = S.is_zero(S.without_replacement_expected_value(b, f, n, last_only=True) - target)
            rows.append({"K": k, "n": n, "mean of Y_k unbiased": mean_ok, "Y_n alone unbiased": last_ok,
                         "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def two_stage_symbolic(cases: Sequence[tuple[int, int, int]], seed: int) -> list[dict[str, Any]]:
    """For each (T tiles, K2 sub-tiles, N draws): whether eq. 9's within-tile and literal readings are unbiased (sympy).

    The literal reading's bias relative to the target is evaluated at one random rational point:
    attention symbols ("a", "b") in 1/40..8/40, features ("f") integers in -3..3, drawn in name order
    from `numpy.random.default_rng(seed)` (the same point for every case and every process).
    """
    rows = []
    for t, k2, n in cases:
        alpha, beta, feats = S.two_stage_symbols(t, k2)
        target = S.two_stage_target(alpha, beta, feats)
        t0 = time.perf_counter()
        within = S.is_zero(S.two_stage_expected_value(alpha, beta, feats, n) - target)
        literal = S.two_stage_expected_value(alpha, beta, feats, n, literal=True)
        literal_ok = S.is_zero(literal - target)
        rng = np.random.default_rng(seed)
        names = sorted(literal.free_symbols, key=str)
        point = {s: sp.Rational(int(rng.integers(1, 9)), 40) for s in names if s.name[0] in "ab"}
        point.update({s: sp.Integer(int(rng.integers(-3, 4))) for s in names if s.name[0] == "f"})
        bias = float(((literal - target) / target).subs(point))
        rows.append({"T": t, "K2": k2, "N": n, "within-tile reading unbiased": within,
                     "literal reading unbiased": literal_ok, "literal relative bias at a random point": round(bias, 4),
                     "seconds": round(time.perf_counter() - t0, 2)})
    return rows


def gradient_bias_rows(table: dict[str, dict[str, float]]) -> list[dict[str, Any]]:
    """`theory.estimator_variants.gradient_bias`'s table as rows: one per rule, the three relative errors."""
    return [{"rule": name, "E[value]": row["value"], "E[d/d logits]": row["grad_logits"],
             "E[d/d features]": row["grad_features"]} for name, row in table.items()]


def gradient_bias_grid(grid_k: Sequence[int], seed: int, problems: int = 3) -> dict[str, dict[str, float]]:
    """Per rule, per case "K=k, n=n" (n = 2..min(k, 3)): the worst relative error of E[d/d logits] over `problems` draws.

    Problem s of case K is `gradient_bias(k, n, seed=seed + 10 * s + k)`, exact by enumeration.
    """
    grid: dict[str, dict[str, float]] = {name: {} for name in RULES}
    for k in grid_k:
        for n in range(2, min(k, 3) + 1):
            worst = {name: 0.0 for name in RULES}
            for s in range(problems):
                for name, row in gradient_bias(k, n, seed=seed + 10 * s + k).items():
                    worst[name] = max(worst[name], row["grad_logits"])
            for name in RULES:
                grid[name][f"K={k}, n={n}"] = worst[name]
    return grid


def plot_gradient_bias_grid(grid: dict[str, dict[str, float]], exact: float = 1e-10) -> Figure:
    """`gradient_bias_grid` on a log axis, one line per rule; a dashed line at `exact` (errors under it are rounding)."""
    cases = list(next(iter(grid.values())))
    fig, ax = plt.subplots(figsize=(8, 3.4))
    for name, marker in zip(RULES, MARKERS):
        ax.semilogy(range(len(cases)), [max(grid[name][c], 1e-17) for c in cases], marker=marker, label=name)
    ax.set_xticks(range(len(cases)), cases, rotation=30)
    ax.set_ylabel("worst relative error of E[d/dlogits]")
    ax.axhline(exact, color="k", lw=0.8, ls="--")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def monte_carlo_gradient(repeats: Sequence[int], seed: int, k: int = 5, n: int = 3, dim: int = 3) -> dict[str, list[float]]:
    """Per rule: the relative error of the mean logit gradient over R draws, for each R of `repeats`.

    One problem (logits [K], features [K, dim], a projection [dim] of the features to a scalar) and
    then every draw come from one generator seeded with `seed`; for each R the rules are averaged in
    the order of RULES. The target is the exact gradient of softmax(logits) @ features @ projection.
    """
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(k, generator=gen, dtype=torch.float64)  # [K]
    feats = torch.randn(k, dim, generator=gen, dtype=torch.float64)  # [K, D]
    project = torch.randn(dim, generator=gen, dtype=torch.float64)  # [D]
    lg = logits.clone().requires_grad_()
    (exact_grad,) = torch.autograd.grad(torch.softmax(lg, 0) @ feats @ project, lg)  # [K]
    curves: dict[str, list[float]] = {name: [] for name in RULES}
    for r in repeats:
        for name, rule in RULES.items():
            g = monte_carlo_logit_gradient(rule, logits, feats, project, n, r, gen)  # [K]
            curves[name].append(float((g - exact_grad).norm() / exact_grad.norm()))
    return curves


def plot_monte_carlo_gradient(repeats: Sequence[int], curves: dict[str, list[float]]) -> Figure:
    """`monte_carlo_gradient`'s curves on log-log axes, with a 1/sqrt(R) line through the score surrogate's first point."""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for name, marker in zip(RULES, MARKERS):
        ax.loglog(repeats, curves[name], marker=marker, label=name)
    r = np.array(repeats, dtype=float)
    ax.loglog(r, curves[OURS][0] * np.sqrt(r[0] / r), "k:", lw=1, label=r"$\propto 1/\sqrt{R}$")
    ax.set_xlabel("number of draws averaged, R")
    ax.set_ylabel("relative error of the mean logit gradient")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def adaptive_cases(seed: int, cases: dict[str, dict[str, Any]] = ADAPTIVE_CASES) -> dict[str, dict[str, dict[str, Any]]]:
    """Per case, per rule ("adaptive": the pilot rule, "naive": average every round until the tolerance is met):
    the exact relative errors of E[value] and E[gradients], the rounds that occur and E[draws]."""
    return {name: {rule: adaptive_bias(rule=rule, seed=seed, **kw) for rule in ("adaptive", "naive")}
            for name, kw in cases.items()}


def adaptive_rows(results: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """One table row per case and rule of `adaptive_cases`: the worst gradient error beside the value's."""
    rows = []
    for case, rules in results.items():
        for rule, r in rules.items():
            grads = [v for key, v in r.items() if key.startswith("grad")]
            rows.append({"problem": case, "rule": rule, "draw sequences": r["outcomes"],
                         "rounds averaged": ", ".join(map(str, r["rounds_seen"])), "E[draws]": r["expected_draws"],
                         "E[value] rel. error": r["value"], "worst E[gradient] rel. error": max(grads)})
    return rows
