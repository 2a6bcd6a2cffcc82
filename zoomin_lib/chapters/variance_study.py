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
  distinct tiles N' (`two_stage_curves`, `plot_two_stage`);
* (f) beyond the paper, N from the data: the rule of `beyond.adaptive` (a pilot chooses each image's number
  of rounds) against the same number of rounds for every image at an equal average number of draws
  (`one_stage_images`, `two_stage_images`, `adaptive_study`, `plot_adaptive`).

Every function that draws takes the chapter's generator and draws in the order the chapter always has,
so that a run repeats number by number.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor

from zoomin_lib.beyond.adaptive import AdaptiveEstimate, adaptive_two_stage, adaptive_with_replacement
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
    "one_stage_images",
    "two_stage_images",
    "adaptive_study",
    "plot_adaptive",
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


def one_stage_images(images: int, k: int, dim: int, scale: float, gen: torch.Generator) -> dict[str, Tensor]:
    """(f) A batch of images drawn like (c)'s problem: attention softmax(scale z) [B, K], unit-norm features [B, K, D]."""
    a = torch.stack([V.peaked_attention(k, scale, gen) for _ in range(images)])  # [B, K]
    f = torch.stack([V.random_features(k, dim, norm_spread=0.0, generator=gen) for _ in range(images)])  # [B, K, D]
    return {"probs": a, "feats": f}


def two_stage_images(images: int, tiles: int, subtiles: int, dim: int, scale: float,
                     gen: torch.Generator) -> dict[str, Tensor]:
    """(f) A batch of images drawn like (e)'s tiled problem: alpha [B, T], beta [B, T, K2], features [B, T, K2, D]."""
    problems = [V.tiled_problem(tiles, subtiles, dim, tile_scale=scale, subtile_scale=1.5, within_tile=1.0,
                                generator=gen) for _ in range(images)]
    return {name: torch.stack([p[i] for p in problems]) for i, name in enumerate(("alpha", "beta", "feats"))}


def _repeat_rows(batch: Mapping[str, Tensor], repeats: int) -> dict[str, Tensor]:
    """Every tensor of an image batch with each image repeated `repeats` times, image-major: [B * repeats, ...]."""
    return {name: x.repeat_interleave(repeats, dim=0) for name, x in batch.items()}


def _runs(estimate: Callable[[dict[str, Tensor]], AdaptiveEstimate], batch: Mapping[str, Tensor], repeats: int,
          chunk: int) -> tuple[Tensor, Tensor]:
    """`repeats` independent runs of `estimate` per image, in chunks of repeats: values [B, R, D], draws [B, R]."""
    values, draws = [], []
    b = next(iter(batch.values())).shape[0]
    for start in range(0, repeats, chunk):
        size = min(chunk, repeats - start)
        with torch.no_grad():
            out = estimate(_repeat_rows(batch, size))
        values.append(out.value.view(b, size, -1))
        draws.append(out.draws.view(b, size))
    return torch.cat(values, dim=1), torch.cat(draws, dim=1)


def _per_image_variance(values: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Mean [B, D], total variance [B] (Bessel) and its standard error [B] of runs values [B, R, D]."""
    r = values.shape[1]
    mean = values.mean(dim=1)  # [B, D]
    z = (values - mean.unsqueeze(1)).square().sum(dim=-1)  # [B, R]
    return mean, z.sum(dim=1) / (r - 1), z.std(dim=1) / math.sqrt(r) * r / (r - 1)


def adaptive_study(kind: str, batch: Mapping[str, Tensor], pilot: int, round_size: int, target_rounds: float,
                   budget: int, repeats: int, gen: torch.Generator, sigmas: float = V.MC_SIGMAS) -> dict[str, Any]:
    """(f) The pilot rule against a fixed number of rounds at the same average number of draws, per image.

    kind "one stage": rounds of `round_size` iid draws from the attention (ATS eq. 4) over batch["probs"],
    batch["feats"]; "two stages": rounds of `round_size` Zoom-In draws (eq. 9) over batch["alpha"],
    batch["beta"], batch["feats"]. The tolerance puts the average image at `target_rounds` fresh rounds:
    tol^2 = mean_b sigma_b^2 / target_rounds, sigma_b^2 the per-round variance (exact for one stage,
    measured for two). The fixed rule gives every image Nbar / round_size rounds, Nbar the rule's average
    draws (pilot included): variance sigma_b^2 round_size / Nbar, fractional rounds allowed (the best any
    rounding of Nbar could do). "oracle_*": the rounds ceil(sigma_b^2 / tol^2) the rule aims at, were
    sigma_b^2 known (no pilot), beside a fixed number of rounds at the oracle's average cost. Checked: the rule's mean is each image's target within its Monte-Carlo
    error, and every image's N lies within [r (P + 1), r budget].
    """
    b = next(iter(batch.values())).shape[0]
    if kind == "one stage":
        target = torch.einsum("bk,bkd->bd", batch["probs"], batch["feats"])  # [B, D]
        sigma2 = torch.tensor([V.importance_sampling_variance(a, f, a, round_size)
                               for a, f in zip(batch["probs"], batch["feats"])], dtype=torch.float64)  # [B]
        sigma2_se = torch.zeros(b, dtype=torch.float64)

        def run(rows: dict[str, Tensor], tol: float) -> AdaptiveEstimate:
            return adaptive_with_replacement(rows["probs"], rows["feats"], pilot, tol, budget, round_size=round_size,
                                             generator=gen)
    elif kind == "two stages":
        target = torch.einsum("bt,btk,btkd->bd", batch["alpha"], batch["beta"], batch["feats"])  # [B, D]
        spreads = [V.monte_carlo_two_stage(al, be, f, round_size, repeats, gen).value
                   for al, be, f in zip(batch["alpha"], batch["beta"], batch["feats"])]
        sigma2 = torch.tensor([s.variance for s in spreads], dtype=torch.float64)  # [B]
        sigma2_se = torch.tensor([s.se for s in spreads], dtype=torch.float64)

        def run(rows: dict[str, Tensor], tol: float) -> AdaptiveEstimate:
            return adaptive_two_stage(rows["alpha"], rows["beta"], rows["feats"], pilot, tol, budget,
                                      round_size=round_size, generator=gen)
    else:
        raise ValueError(f"kind must be 'one stage' or 'two stages', got {kind!r}")
    tol = math.sqrt(float(sigma2.mean()) / target_rounds)
    per_row = budget * (next(iter(batch.values())).shape[1] * 4 + round_size * target.shape[1] * 4)
    chunk = max(1, (1 << 22) // (b * per_row))
    values, draws = _runs(lambda rows: run(rows, tol), batch, repeats, chunk)  # [B, R, D], [B, R]
    mean, var, var_se = _per_image_variance(values)
    for i in range(b):  # unbiased: the squared error of the mean is of the order variance / R
        assert float((mean[i] - target[i]).square().sum()) <= 10 * float(var[i]) / repeats + 1e-20, (kind, i)
    assert int(draws.min()) >= round_size * (pilot + 1) and int(draws.max()) <= round_size * budget
    nbar = float(draws.double().mean())
    fixed = sigma2 * round_size / nbar  # [B]
    oracle = torch.ceil(sigma2 / tol**2).clamp(1, budget)  # [B] the rounds the rule aims at, sigma_b^2 known
    oracle_nbar = round_size * float(oracle.mean())
    per_image_n = draws.double().mean(dim=1)  # [B]
    quantiles = torch.quantile(draws.double().flatten(), torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64))
    return {"kind": kind, "images": b, "pilot_rounds": pilot, "round_size": round_size, "budget_rounds": budget,
            "target_rounds": target_rounds, "tol": tol, "repeats": repeats, "mean_draws": nbar,
            "draws_p10_p50_p90": quantiles.tolist(), "per_image_mean_draws": per_image_n.tolist(),
            "sigma2": sigma2.tolist(), "sigma2_se": sigma2_se.tolist(), "adaptive_var": var.tolist(),
            "adaptive_var_se": var_se.tolist(), "fixed_var": fixed.tolist(),
            "fixed_var_se": (sigma2_se * round_size / nbar).tolist(),
            "mean_var_adaptive": float(var.mean()), "mean_var_fixed": float(fixed.mean()),
            "max_var_adaptive": float(var.max()), "max_var_fixed": float(fixed.max()),
            "mean_var_ratio": float(var.mean() / fixed.mean()), "max_var_ratio": float(var.max() / fixed.max()),
            "oracle_mean_draws": oracle_nbar, "oracle_mean_var": float((sigma2 / oracle).mean()),
            "oracle_max_var": float((sigma2 / oracle).max()),
            "oracle_fixed_mean_var": float(sigma2.mean()) * round_size / oracle_nbar,
            "oracle_fixed_max_var": float(sigma2.max()) * round_size / oracle_nbar}


def plot_adaptive(results: Sequence[Mapping[str, Any]]) -> Figure:
    """(f) Per setup: each image's mean N against its per-round variance (left) and its variance under both rules
    (right), with the fixed rule's N and the tolerance."""
    fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
    for res, color in zip(results, ("tab:blue", "tab:red")):
        s2 = np.array(res["sigma2"])
        label = f"{res['kind']} (rounds of {res['round_size']})"
        axes[0].plot(s2, res["per_image_mean_draws"], "o", color=color, label=f"{label}: pilot rule")
        axes[0].axhline(res["mean_draws"], ls="--", color=color, lw=1, label=f"{label}: fixed N = {res['mean_draws']:.1f}")
        axes[1].errorbar(s2, res["adaptive_var"], yerr=2 * np.array(res["adaptive_var_se"]), fmt="o", color=color,
                         label=f"{label}: pilot rule")
        axes[1].plot(s2, res["fixed_var"], "x", color=color, ms=8, label=f"{label}: fixed N")
        axes[1].axhline(res["tol"] ** 2, ls=":", color=color, lw=1, label=f"{label}: tol$^2$")
    axes[0].set(xlabel=r"per-round variance $\sigma_b^2$ of the image", ylabel="mean draws N per image (pilot included)",
                title="(f) N chosen per image")
    axes[1].set(xscale="log", yscale="log", xlabel=r"per-round variance $\sigma_b^2$ of the image",
                ylabel="total variance of the estimate", title="(f) variance per image at equal average N")
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
