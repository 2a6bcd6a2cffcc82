"""Chapter 02: how noisy attention sampling is, measured for every sampler of `zoomin_lib`.

The five studies of the chapter, each a function that measures its curves (checking every Monte-Carlo
point against its exact value within `theory.variance.MC_SIGMAS` standard errors) and one that draws them:

* (a) importance sampling from a uniform proposal, the attention and the optimum of ATS eq. 9, against
  the variance of ATS eq. 7-8 (`importance_curves`, `plot_importance`);
* (b) why L2-normalised features (ATS sec. 3.4) make the attention the optimal proposal
  (`normalisation_sweep`, `plot_normalisation`);
* (c) with against without replacement, the average of the terms (Zoom-In eq. 9) and the last term
  (ATS eq. 14-15), by Monte Carlo and by enumeration (`replacement_curves`, `replacement_exact`,
  `plot_replacement`);
* (d) the variance of the gradient estimators (ATS eq. 11-12, the score surrogates of
  `zoomin_lib.sampling`) (`gradient_variances`, `plot_gradient_variance`);
* (e) one stage against Zoom-In's two stages (eq. 5, 9) at an equal number of draws, and the number of
  distinct tiles N' (`two_stage_curves`, `plot_two_stage`).

Every function that draws takes the chapter's generator and draws in the order the chapter always has,
so that a run repeats number by number.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from zoomin_lib.book.plotting import lift_zeros, log_floor
from zoomin_lib.theory import variance as V

__all__ = [
    "SCHEMES",
    "importance_curves",
    "plot_importance",
    "normalisation_sweep",
    "plot_normalisation",
    "replacement_curves",
    "replacement_exact",
    "plot_replacement",
    "gradient_variances",
    "plot_gradient_variance",
    "two_stage_curves",
    "plot_two_stage",
]

# the estimators of (d): scheme of `theory.variance` -> its name in the figures
SCHEMES = {"with": "with replacement", "without": "without, average", "without_last": "without, last term"}
ZERO_NOTE = "zero (up to rounding) is drawn on this line"  # the label of log_floor's line


def _append(res: dict[str, Any], keys: Sequence[str], values: Sequence[float]) -> None:
    """Append each value to the list of `res` under its key."""
    for key, val in zip(keys, values):
        res[key].append(val)


def importance_curves(a: Tensor, f: Tensor, proposals: Mapping[str, Tensor], ns: Sequence[int], repeats: int,
                      gen: torch.Generator) -> dict[str, dict[str, list]]:
    """(a) Per proposal, per n: the variance of ATS eq. 7-8 ("analytic") and that of `repeats` runs ("mc", "se").

    a [K] is the attention, f [K, D] the features, each proposal [K] a distribution over the K items;
    every measured point must agree with the formula within its exact standard error.
    """
    res = {name: {"n": ns, "analytic": [], "mc": [], "se": []} for name in proposals}
    for name, p in proposals.items():
        for n in ns:
            mc = V.monte_carlo_variance("importance", a, f, n, repeats, gen, proposal=p)
            analytic = V.importance_sampling_variance(a, f, p, n)
            se = V.importance_sampling_variance_se(a, f, p, n, repeats)
            assert V.agrees(mc.variance, analytic, se), (name, n, mc.variance, analytic, mc.se)
            _append(res[name], ("analytic", "mc", "se"), (analytic, mc.variance, mc.se))
    return res


def plot_importance(res: Mapping[str, Mapping[str, list]], k: int, repeats: int) -> Figure:
    """(a) `importance_curves` on log-log axes: the formula as a line, the measured points with 2 s.e. bars."""
    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    colors = {"uniform": "tab:red", "attention a": "tab:blue", "optimal p*": "tab:green"}
    for name, r in res.items():
        ax.plot(r["n"], r["analytic"], "-", color=colors[name], label=f"{name}: analytic")
        ax.errorbar(r["n"], r["mc"], yerr=np.array(r["se"]) * 2, fmt="o", color=colors[name], mfc="none",
                    label=f"{name}: measured (±2 s.e.)")
    ax.set(xscale="log", yscale="log", xlabel="number of draws n", ylabel=r"total variance $\mathrm{tr\,Cov}[\hat\mu]$",
           title=f"(a) importance sampling, K={k}, R={repeats} runs per point")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def normalisation_sweep(a: Tensor, spreads: Sequence[float], dim: int, n: int, repeats: int, gen: torch.Generator,
                        seed: int) -> dict[str, list]:
    """(b) Per spread sigma of the feature norms: the variance of sampling from a and from p*, exact and measured.

    The features [K, dim] of every sigma share their directions (`random_features` seeded with
    seed + 1), with norms exp(sigma e_i); "ratio" is Var(a) / Var(p*), at least 1.
    """
    res: dict[str, list] = {"sigma": spreads, "ratio": [], "var_a": [], "var_opt": [], "mc_a": [], "se_a": [],
                            "mc_opt": [], "se_opt": []}
    for sigma in spreads:
        f_s = V.random_features(len(a), dim, norm_spread=sigma, generator=torch.Generator().manual_seed(seed + 1))
        p_opt = V.optimal_proposal(a, f_s)  # [K]
        var_a = V.importance_sampling_variance(a, f_s, a, n)
        var_opt = V.importance_sampling_variance(a, f_s, p_opt, n)
        mc_a = V.monte_carlo_variance("with", a, f_s, n, repeats, gen)
        mc_opt = V.monte_carlo_variance("importance", a, f_s, n, repeats, gen, proposal=p_opt)
        assert V.agrees(mc_a.variance, var_a, V.importance_sampling_variance_se(a, f_s, a, n, repeats)), sigma
        assert V.agrees(mc_opt.variance, var_opt, V.importance_sampling_variance_se(a, f_s, p_opt, n, repeats)), sigma
        assert var_opt <= var_a * (1 + 1e-12)
        _append(res, ("ratio", "var_a", "var_opt", "mc_a", "se_a", "mc_opt", "se_opt"),
                (var_a / var_opt, var_a, var_opt, mc_a.variance, mc_a.se, mc_opt.variance, mc_opt.se))
    return res


def plot_normalisation(a: Tensor, f: Tensor, res: Mapping[str, list], n: int) -> Figure:
    """(b) Left: p* against a for the features f [K, D] and for them L2-normalised; right: Var(a)/Var(p*) per sigma."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    axes[0].loglog(a, V.optimal_proposal(a, f), "o", ms=3, alpha=0.6, label=r"raw features ($\sigma$=0.75)")
    axes[0].loglog(a, V.optimal_proposal(a, V.l2_normalize(f)), "x", ms=4, color="k", label="L2-normalised features")
    lim = [float(a.min()) * 0.5, 1.0]
    axes[0].plot(lim, lim, ":", color="gray", label="p* = a")
    axes[0].set(xlabel=r"attention $a_i$", ylabel=r"optimal proposal $p^*_i \propto a_i\|f_i\|$",
                title="(b) p* against a")
    axes[0].legend(fontsize=8)
    axes[1].plot(res["sigma"], res["ratio"], "-o", color="tab:purple", label="analytic")
    mc_ratio = np.array(res["mc_a"]) / np.array(res["mc_opt"])
    axes[1].plot(res["sigma"], mc_ratio, "s", mfc="none", color="k", label="measured (ratio of MC variances)")
    axes[1].axhline(1.0, ls=":", color="gray")
    axes[1].set(xlabel=r"spread of the feature norms $\sigma$ ($\|f_i\| = e^{\sigma e_i}$)",
                ylabel=r"$\mathbb{V}_a / \mathbb{V}_{p^*}$", title=f"(b) cost of sampling from a, K={len(a)}, n={n}")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    return fig


def replacement_curves(a: Tensor, f: Tensor, ns: Sequence[int], repeats: int, gen: torch.Generator) -> dict[str, Any]:
    """(c) Per n: with replacement (exact and measured), without replacement, average and last term (measured).

    a [K], f [K, D]; the measured with-replacement variance must agree with the formula, and from
    n = 2 the average must be clearly below sampling with replacement.
    """
    res: dict[str, Any] = {"K": len(a), "n": ns, "with_analytic": [], "with_mc": [], "with_se": [],
                           "without_avg": [], "without_avg_se": [], "without_last": [], "without_last_se": []}
    for n in ns:
        wr = V.importance_sampling_variance(a, f, a, n)
        mc_wr = V.monte_carlo_variance("with", a, f, n, repeats, gen)
        mc_avg = V.monte_carlo_variance("without", a, f, n, repeats, gen)
        mc_last = V.monte_carlo_variance("without_last", a, f, n, repeats, gen)
        assert V.agrees(mc_wr.variance, wr, V.importance_sampling_variance_se(a, f, a, n, repeats))
        if n > 1:
            assert V.clearly_below(mc_avg.variance, mc_avg.se, wr, 0.0), n  # the average beats with replacement
        _append(res, ("with_analytic", "with_mc", "with_se", "without_avg", "without_avg_se", "without_last",
                      "without_last_se"),
                (wr, mc_wr.variance, mc_wr.se, mc_avg.variance, mc_avg.se, mc_last.variance, mc_last.se))
    return res


def replacement_exact(a: Tensor, f: Tensor, repeats: int, gen: torch.Generator) -> dict[str, Any]:
    """(c) For n = 1..K: the exact variances by enumeration, and Monte-Carlo checks of the two without-replacement ones.

    a [K], f [K, D] (a small K: every draw sequence is enumerated); each Monte-Carlo variance must
    agree with the exact one within its standard error.
    """
    k = len(a)
    res: dict[str, Any] = {"K": k, "n": list(range(1, k + 1)), "with": [], "without_avg": [], "without_last": [],
                           "mc_without_avg": [], "mc_without_avg_se": [], "mc_without_last": [],
                           "mc_without_last_se": []}
    for n in res["n"]:
        res["with"].append(V.importance_sampling_variance(a, f, a, n))
        for scheme, key in (("without", "without_avg"), ("without_last", "without_last")):
            exact = V.exact_moments(scheme, a, f, n).value
            mc = V.monte_carlo_variance(scheme, a, f, n, repeats, gen)
            assert V.agrees(mc.variance, exact.variance, exact.monte_carlo_se(repeats)), (scheme, n, mc.variance)
            _append(res, (key, "mc_" + key, "mc_" + key + "_se"), (exact.variance, mc.variance, mc.se))
    return res


def plot_replacement(res: Mapping[str, Any], exact: Mapping[str, Any], repeats: int) -> Figure:
    """(c) Left: `replacement_curves`; right: `replacement_exact`. Variances below 1e-20 are drawn on one line."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    ax = axes[0]
    floor = log_floor(res["without_avg"], res["without_last"])
    ax.plot(res["n"], res["with_analytic"], "-", color="tab:blue", label="with replacement: analytic")
    ax.errorbar(res["n"], res["with_mc"], yerr=2 * np.array(res["with_se"]), fmt="o", mfc="none",
                color="tab:blue", label="with replacement: measured")
    ax.errorbar(res["n"], lift_zeros(res["without_avg"], floor), yerr=2 * np.array(res["without_avg_se"]), fmt="s-",
                color="tab:orange", label=r"without, average $\frac{1}{n}\sum_k Y_k$ (Zoom-In eq. 9)")
    ax.errorbar(res["n"], lift_zeros(res["without_last"], floor), yerr=2 * np.array(res["without_last_se"]),
                fmt="^-", color="tab:green", label=r"without, last term $Y_n$ (ATS eq. 14)")
    ax.axhline(floor, ls=":", color="gray")
    ax.text(res["n"][0], floor * 1.5, ZERO_NOTE, fontsize=8, color="gray")
    ax.set(yscale="log", xlabel="number of draws n", ylabel="total variance",
           title=f"(c) Monte Carlo, K={res['K']}, R={repeats}")
    ax.legend(fontsize=8)
    ax = axes[1]
    floor = log_floor(exact["without_avg"], exact["without_last"], exact["mc_without_last"])
    ax.plot(exact["n"], exact["with"], "o-", color="tab:blue", label="with replacement (exact)")
    ax.plot(exact["n"], lift_zeros(exact["without_avg"], floor), "s-", color="tab:orange",
            label="without, average (exact)")
    ax.plot(exact["n"], lift_zeros(exact["without_last"], floor), "^-", color="tab:green",
            label="without, last term (exact)")
    ax.plot(exact["n"], lift_zeros(exact["mc_without_avg"], floor), "k+", ms=10, label="Monte Carlo check")
    ax.plot(exact["n"], lift_zeros(exact["mc_without_last"], floor), "k+", ms=10)
    ax.axhline(floor, ls=":", color="gray")
    ax.text(1, floor * 1.5, ZERO_NOTE, fontsize=8, color="gray")
    ax.set(yscale="log", xlabel="number of draws n", ylabel="total variance",
           title=f"(c) exact by enumeration, K={exact['K']}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def gradient_variances(small: tuple[Tensor, Tensor], large: tuple[Tensor, Tensor], project: Tensor,
                       ns: Sequence[int], repeats: int, gen: torch.Generator) -> dict[str, dict[str, Any]]:
    """(d) The variance of each scheme's gradient of <project, estimate> w.r.t. the logits and the features.

    small = (a [K], f [K, D]) is enumerated exactly for n = 1..K ("exact"); large is measured by
    Monte Carlo for each n of `ns` ("mc", with standard errors). Variances are relative to the
    squared norm of the true gradient. Every mean gradient must be the true one: to 1e-10 exactly,
    within its Monte-Carlo error otherwise.
    """
    (a_e, f_e), (a_c, f_c) = small, large
    true_e = V.full_gradients(a_e, f_e, project)  # ([K], [K, D])
    true_c = V.full_gradients(a_c, f_c, project)
    norm_e = [float(g.square().sum()) for g in true_e]
    norm_c = [float(g.square().sum()) for g in true_c]
    res: dict[str, dict[str, Any]] = {"exact": {"K": len(a_e), "n": list(range(1, len(a_e) + 1))},
                                      "mc": {"K": len(a_c), "n": ns}}
    for scheme in SCHEMES:
        for part in ("logits", "feats"):
            res["exact"][f"{scheme}_{part}"] = []
            res["mc"][f"{scheme}_{part}"] = []
            res["mc"][f"{scheme}_{part}_se"] = []
        for n in res["exact"]["n"]:
            m = V.exact_moments(scheme, a_e, f_e, n, grads=True, project=project)
            assert torch.allclose(m.grad_logits.mean, true_e[0], atol=1e-10)  # unbiased, exactly
            assert torch.allclose(m.grad_feats.mean, true_e[1], atol=1e-10)
            res["exact"][f"{scheme}_logits"].append(m.grad_logits.variance / norm_e[0])
            res["exact"][f"{scheme}_feats"].append(m.grad_feats.variance / norm_e[1])
        for n in ns:
            m = V.monte_carlo_moments(scheme, a_c, f_c, n, repeats, gen, grads=True, project=project)
            for part, spread, true, norm in (("logits", m.grad_logits, true_c[0], norm_c[0]),
                                             ("feats", m.grad_feats, true_c[1], norm_c[1])):
                # unbiased: the squared error of the mean is of the order variance / R
                assert float((spread.mean - true).square().sum()) <= 10 * spread.variance / repeats + 1e-20, \
                    (scheme, n, part)
                res["mc"][f"{scheme}_{part}"].append(spread.variance / norm)
                res["mc"][f"{scheme}_{part}_se"].append(spread.se / norm)
    return res


def plot_gradient_variance(res: Mapping[str, Mapping[str, Any]]) -> Figure:
    """(d) `gradient_variances` against the fraction of items drawn, w.r.t. the logits (left) and the features (right)."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    styles = {"with": ("tab:blue", "o"), "without": ("tab:orange", "s"), "without_last": ("tab:green", "^")}
    ex, mc = res["exact"], res["mc"]
    for ax, part, label in ((axes[0], "logits", "attention logits $s$"), (axes[1], "feats", "features $f$")):
        floor = log_floor(*(res[src][f"{scheme}_{part}"] for src in ("exact", "mc") for scheme in SCHEMES))
        for scheme, name in SCHEMES.items():
            color, marker = styles[scheme]
            x = np.array(ex["n"]) / ex["K"]
            ax.plot(x, lift_zeros(ex[f"{scheme}_{part}"], floor), marker + "-", color=color,
                    label=f"{name}: exact, K={ex['K']}")
            x = np.array(mc["n"]) / mc["K"]
            ax.errorbar(x, lift_zeros(mc[f"{scheme}_{part}"], floor), yerr=2 * np.array(mc[f"{scheme}_{part}_se"]),
                        fmt=marker + "--", mfc="none", color=color, alpha=0.7, label=f"{name}: measured, K={mc['K']}")
        ax.axhline(floor, ls=":", color="gray")
        ax.text(0.0, floor * 1.5, ZERO_NOTE, fontsize=8, color="gray")
        ax.set(yscale="log", xlabel="fraction of items drawn n / K",
               ylabel=r"$\mathrm{tr\,Var}[\hat g] / \|g\|^2$", title=f"(d) gradient w.r.t. {label}")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def two_stage_curves(alpha: Tensor, beta: Tensor, f: Tensor, ns: Sequence[int], repeats: int,
                     gen: torch.Generator, sigmas: float = V.MC_SIGMAS) -> dict[str, Any]:
    """(e) Per n: one stage with and without replacement, two stages (Zoom-In), the tile-level bound, and N'.

    alpha [T], beta [T, K2], f [T, K2, D]. Checked at every n: the measured one-stage variance
    against the formula, the law of total variance (two stages above the bound), two stages never
    above one stage with replacement, the measured mean N' against its expectation, and N' below
    n (for n > 1) and below T.
    """
    tiles = len(alpha)
    a_j, f_j = V.two_stage_joint(alpha, beta, f)  # [T*K2], [T*K2, D]
    res: dict[str, Any] = {"T": tiles, "K2": beta.shape[1], "n": ns, "one_with_analytic": [], "one_with": [],
                           "one_with_se": [], "one_without": [], "one_without_se": [], "two_stage": [],
                           "two_stage_se": [], "between_tile_bound": [], "unique_expected": [], "unique_measured": [],
                           "unique_se": []}
    for n in ns:
        wr = V.importance_sampling_variance(a_j, f_j, a_j, n)
        wr_se = V.importance_sampling_variance_se(a_j, f_j, a_j, n, repeats)
        one_wr = V.monte_carlo_variance("with", a_j, f_j, n, repeats, gen)
        one_wor = V.monte_carlo_variance("without", a_j, f_j, n, repeats, gen)
        two = V.monte_carlo_two_stage(alpha, beta, f, n, repeats, gen)
        bound = V.between_tile_variance(alpha, beta, f, n)
        expected_unique = V.expected_unique_tiles(alpha, n)
        assert V.agrees(one_wr.variance, wr, wr_se)
        assert two.value.variance + sigmas * two.value.se >= bound  # law of total variance
        assert two.value.variance <= wr + sigmas * two.value.se  # within-tile draws without replacement never hurt
        assert abs(float(two.unique_tiles.mean) - expected_unique) <= sigmas * two.unique_tiles.mean_se + 1e-12
        assert expected_unique < n or n == 1  # repeated tiles share one second-stage view
        assert expected_unique < tiles
        if n == 1:  # one draw: all three are one draw from the joint
            assert V.agrees(two.value.variance, wr, wr_se) and V.agrees(one_wor.variance, wr, wr_se)
        _append(res, ("one_with_analytic", "one_with", "one_with_se", "one_without", "one_without_se", "two_stage",
                      "two_stage_se", "between_tile_bound", "unique_expected", "unique_measured", "unique_se"),
                (wr, one_wr.variance, one_wr.se, one_wor.variance, one_wor.se, two.value.variance,
                 two.value.se, bound, expected_unique, float(two.unique_tiles.mean), two.unique_tiles.mean_se))
    return res


def plot_two_stage(res: Mapping[str, Any], repeats: int) -> Figure:
    """(e) Left: the variances of `two_stage_curves` against n; right: the distinct tiles N', expected and measured."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    n, ax = res["n"], axes[0]
    ax.plot(n, res["one_with_analytic"], "-", color="tab:blue", label="one stage, with replacement: analytic")
    ax.errorbar(n, res["one_with"], yerr=2 * np.array(res["one_with_se"]), fmt="o", mfc="none",
                color="tab:blue", label="one stage, with replacement: measured")
    ax.errorbar(n, res["one_without"], yerr=2 * np.array(res["one_without_se"]), fmt="s-",
                color="tab:orange", label="one stage, without replacement (eq. 9 average)")
    ax.errorbar(n, res["two_stage"], yerr=2 * np.array(res["two_stage_se"]), fmt="D-",
                color="tab:red", label="two stages (Zoom-In)")
    ax.plot(n, res["between_tile_bound"], ":", color="tab:red", label="two-stage lower bound (tile level)")
    ax.set(xscale="log", yscale="log", xlabel="number of draws n (sub-tiles)", ylabel="total variance",
           title=f"(e) T={res['T']} tiles x K2={res['K2']} sub-tiles, R={repeats}")
    ax.legend(fontsize=7)
    ax = axes[1]
    ax.plot(n, res["unique_expected"], "-", color="tab:red", label=r"$\mathbb{E}[N'] = \sum_c 1-(1-\alpha_c)^n$")
    ax.errorbar(n, res["unique_measured"], yerr=2 * np.array(res["unique_se"]), fmt="o", mfc="none",
                color="k", label="measured mean N'")
    ax.plot(n, n, ":", color="gray", label="n (every draw a new tile)")
    ax.axhline(res["T"], ls="--", color="gray", lw=0.8, label=f"T = {res['T']} (all tiles)")
    ax.set(xlabel="number of draws n", ylabel="distinct tiles N'", title="(e) tiles whose second stage is computed")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
