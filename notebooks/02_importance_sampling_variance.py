# ---
# jupyter:
#   jupytext:
#     cell_metadata_filter: tags,-all
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # How noisy is attention sampling? Importance sampling, replacement and two stages
#
# Attention sampling replaces the attention-weighted average of $K$ features
#
# $$\mu = \sum_{i=1}^K a_i f_i \qquad (\text{ATS eq. 1})$$
#
# by an estimate from $n \ll K$ sampled features. The estimate is unbiased; what matters then is
# its **variance**, because that noise goes straight into the classifier $g$ and into the gradients.
# This chapter measures it, for every sampler in `zoomin_lib`:
#
# - **(a)** importance sampling from a uniform proposal, from the attention $a$, and from the optimum
#   $p^*_i \propto a_i\lVert f_i\rVert$ of ATS eq. 9 — the analytic variance against Monte Carlo, as $n$ grows;
# - **(b)** why L2-normalised features (ATS sec. 3.4) make sampling from $a$ optimal;
# - **(c)** sampling with vs without replacement as $n \to K$, for the two unbiased without-replacement
#   estimators (the average of all terms, Zoom-In eq. 9, and the last term alone, ATS eq. 14);
# - **(d)** the variance of the *gradient* estimators w.r.t. the attention logits and the features;
# - **(e)** one stage vs Zoom-In's two stages (tiles, then sub-tiles) at an equal number of draws, and the
#   number of distinct tiles $N'$ that sets Zoom-In's memory.
#
# Every number in this chapter is **measured here** on synthetic attention and features (a stand-in, not
# data from the papers); the papers supply only the formulas. Each claim is checked by an `assert` whose
# tolerance is a multiple of its Monte-Carlo standard error, with fixed seeds.

# %% tags=["parameters"]
import os

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | paper
seed = 0

# %%
import math
import time

import matplotlib.pyplot as plt
import numpy as np
import torch

from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib.theory import variance as V
from zoomin_lib.infra.io import write_json
from zoomin_lib.book.plotting import lift_zeros, log_floor, save_figure

SETTINGS = {
    # seconds: what CI runs
    "smoke": dict(k_is=64, n_is=[1, 4, 16, 64], spreads=[0.0, 0.5, 1.0, 2.0], k_wor=16,
                  n_wor=[1, 2, 4, 8, 12, 15, 16], k_exact=5, n_grad=[1, 2, 4, 8, 16],
                  tiles=8, subtiles=8, n_two=[1, 2, 4, 8], repeats=1000),
    # a minute or less on a 2-core CPU: the book's default
    "cpu": dict(k_is=256, n_is=[1, 2, 4, 8, 16, 32, 64, 128, 256], spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
                k_wor=64, n_wor=[1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 63, 64], k_exact=6,
                n_grad=[1, 2, 4, 8, 16, 32, 64], tiles=16, subtiles=16, n_two=[1, 2, 4, 8, 16], repeats=10000),
    # larger problems and more repeats
    "paper": dict(k_is=1024, n_is=[1, 4, 16, 64, 256, 1024], spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
                  k_wor=128, n_wor=[1, 2, 4, 8, 16, 32, 64, 96, 112, 120, 127, 128], k_exact=7,
                  n_grad=[1, 4, 16, 64, 128], tiles=32, subtiles=32, n_two=[1, 2, 4, 8, 16, 32], repeats=40000),
}
cfg, out, _ = open_chapter("02_importance_sampling_variance", SETTINGS, profile, seed)
R = cfg["repeats"]
D = 8  # feature dimension
SCALE = 2.0  # attention = softmax(SCALE * z), z ~ N(0, I): peaked
SIGMAS = V.MC_SIGMAS  # Monte-Carlo tolerance, in standard errors
metrics = {"profile": profile, "seed": seed, "repeats": R, "feature_dim": D, "attention_scale": SCALE}
t_start = time.perf_counter()
print(f"repeats={R}")


def is_se(a, f, p, n):
    """Exact standard error of a variance measured from R runs of the IS estimator."""
    return V.importance_sampling_variance_se(a, f, p, n, R)


# %% [markdown]
# ## (a) Importance sampling: uniform, attention, optimal proposal
#
# Draw $q_1,\dots,q_n$ i.i.d. from a proposal $P$ with probabilities $p_i$ and estimate
# $\hat\mu = \frac1n\sum_k a_{q_k} f_{q_k} / p_{q_k}$. It is unbiased for any $p$ that covers the
# support of $a$, and its total variance (trace of the covariance) is, from ATS eq. 7–8,
#
# $$\mathbb{V}[\hat\mu] = \frac1n\Big(\sum_{i=1}^K \frac{a_i^2 \lVert f_i\rVert_2^2}{p_i} - \lVert\mu\rVert_2^2\Big),$$
#
# minimised (Cauchy–Schwarz) by ATS eq. 9, $p^*_i \propto a_i \lVert f_i\rVert_2$, where it equals
# $\frac1n\big((\sum_i a_i\lVert f_i\rVert)^2 - \lVert\mu\rVert^2\big)$. We take a peaked attention
# $a = \mathrm{softmax}(2z)$ and features whose norms are log-normal, so $p^* \ne a$, and compare the formula
# (`importance_sampling_variance`) with the spread of $R$ independent runs of the estimator
# (`monte_carlo_variance`, the $R$ runs on the batch axis of the samplers). The tolerance of each check is
# the exact standard error of a variance measured from $R$ runs (`importance_sampling_variance_se`, from
# the fourth moments of the estimator), so heavy-tailed cases such as the uniform proposal are not flaky.

# %%
gen = torch.Generator().manual_seed(seed)
k = cfg["k_is"]
a = V.peaked_attention(k, SCALE, gen)  # [K]
f = V.random_features(k, D, norm_spread=0.75, generator=gen)  # [K, D]
proposals = {"uniform": V.uniform_proposal(k), "attention a": a, "optimal p*": V.optimal_proposal(a, f)}
perplexity = float(torch.exp(-(a * a.log()).sum()))
print(f"K={k}: attention perplexity exp(H(a)) = {perplexity:.1f}, max a = {float(a.max()):.3f}")

res_a = {name: {"n": cfg["n_is"], "analytic": [], "mc": [], "se": []} for name in proposals}
for name, p in proposals.items():
    for n in cfg["n_is"]:
        mc = V.monte_carlo_variance("importance", a, f, n, R, gen, proposal=p)
        analytic = V.importance_sampling_variance(a, f, p, n)
        assert V.agrees(mc.variance, analytic, is_se(a, f, p, n)), (name, n, mc.variance, analytic, mc.se)
        res_a[name]["analytic"].append(analytic)
        res_a[name]["mc"].append(mc.variance)
        res_a[name]["se"].append(mc.se)

# sampling from a with the library's with-replacement estimator (ATS eq. 4) is importance sampling with p = a
mc_ats = V.monte_carlo_variance("with", a, f, 4, R, gen)
assert V.agrees(mc_ats.variance, V.importance_sampling_variance(a, f, a, 4), is_se(a, f, a, 4))
for i in range(len(cfg["n_is"])):
    assert res_a["optimal p*"]["analytic"][i] <= res_a["attention a"]["analytic"][i] <= res_a["uniform"]["analytic"][i]
ratio_a = res_a["attention a"]["analytic"][0] / res_a["optimal p*"]["analytic"][0]
ratio_u = res_a["uniform"]["analytic"][0] / res_a["optimal p*"]["analytic"][0]
assert ratio_a < ratio_u  # sampling from a is much closer to the optimum than uniform sampling
print(f"variance relative to p* (any n): uniform x{ratio_u:.1f}, attention a x{ratio_a:.2f}")
for name in proposals:
    print(f"{name:>12}: n=1 analytic {res_a[name]['analytic'][0]:.4g}, measured {res_a[name]['mc'][0]:.4g} "
          f"± {res_a[name]['se'][0]:.2g}")
metrics["a_importance"] = {"K": k, "perplexity": perplexity, "ratio_uniform_to_opt": ratio_u,
                           "ratio_attention_to_opt": ratio_a, "curves": res_a}

# %%
fig, ax = plt.subplots(figsize=(6.4, 4.4))
colors = {"uniform": "tab:red", "attention a": "tab:blue", "optimal p*": "tab:green"}
for name, r in res_a.items():
    ax.plot(r["n"], r["analytic"], "-", color=colors[name], label=f"{name}: analytic")
    ax.errorbar(r["n"], r["mc"], yerr=np.array(r["se"]) * 2, fmt="o", color=colors[name], mfc="none",
                label=f"{name}: measured (±2 s.e.)")
ax.set(xscale="log", yscale="log", xlabel="number of draws n", ylabel=r"total variance $\mathrm{tr\,Cov}[\hat\mu]$",
       title=f"(a) importance sampling, K={k}, R={R} runs per point")
ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "a_importance_sampling")
plt.show()

# %% [markdown]
# Every measured point sits on its line: the formula of ATS eq. 7–8 is the variance of the estimator the
# library computes. All three lines fall as $1/n$ (slope $-1$ on log–log axes); the proposal only moves the
# constant. A uniform proposal is worst by far on a peaked attention: it spends most draws on items of
# negligible weight and must then up-weight the rare important ones by $a_i/p_i$. Sampling from $a$ is much
# closer to the optimum, but not equal to it, because these features have different norms; the ratios
# printed above are how much variance each proposal costs over $p^*$.
#
# ## (b) Why L2-normalised features make the attention the optimal proposal
#
# If $\lVert f_i\rVert = c$ for every $i$, then $p^*_i \propto a_i c \propto a_i$: sampling from the
# attention *is* the minimum-variance proposal, which is why ATS ends every feature network with an L2
# normalisation (sec. 3.4). The excess variance of sampling from $a$ over $p^*$ is
#
# $$\frac{\mathbb{V}_a}{\mathbb{V}_{p^*}} = \frac{\sum_i a_i\lVert f_i\rVert^2 - \lVert\mu\rVert^2}{(\sum_i a_i\lVert f_i\rVert)^2 - \lVert\mu\rVert^2} \;\ge 1,$$
#
# independent of $n$, with equality when the norms are equal. Below, the same attention and feature
# directions, with norms $\exp(\sigma e_i)$: $\sigma = 0$ is the normalised case.

# %%
unit = V.l2_normalize(f)  # [K, D]
assert torch.allclose(V.optimal_proposal(a, unit), a, atol=1e-14, rtol=0)
n_b = 8
var_unit_a = V.importance_sampling_variance(a, unit, a, n_b)
var_unit_opt = V.importance_sampling_variance(a, unit, V.optimal_proposal(a, unit), n_b)
assert math.isclose(var_unit_a, var_unit_opt, rel_tol=1e-12)
mc_unit = V.monte_carlo_variance("with", a, unit, n_b, R, gen)
assert V.agrees(mc_unit.variance, var_unit_a, is_se(a, unit, a, n_b))
print(f"unit-norm features, n={n_b}: max |p* - a| = {float((V.optimal_proposal(a, unit) - a).abs().max()):.1e}; "
      f"variance from a {var_unit_a:.4g} = from p* {var_unit_opt:.4g}; measured {mc_unit.variance:.4g} ± {mc_unit.se:.2g}")

res_b = {"sigma": cfg["spreads"], "ratio": [], "var_a": [], "var_opt": [], "mc_a": [], "se_a": [], "mc_opt": [], "se_opt": []}
for sigma in cfg["spreads"]:
    f_s = V.random_features(k, D, norm_spread=sigma, generator=torch.Generator().manual_seed(seed + 1))  # [K, D]
    p_opt = V.optimal_proposal(a, f_s)
    var_a = V.importance_sampling_variance(a, f_s, a, n_b)
    var_opt = V.importance_sampling_variance(a, f_s, p_opt, n_b)
    mc_a = V.monte_carlo_variance("with", a, f_s, n_b, R, gen)
    mc_opt = V.monte_carlo_variance("importance", a, f_s, n_b, R, gen, proposal=p_opt)
    assert V.agrees(mc_a.variance, var_a, is_se(a, f_s, a, n_b)) and V.agrees(mc_opt.variance, var_opt, is_se(a, f_s, p_opt, n_b)), sigma
    assert var_opt <= var_a * (1 + 1e-12)
    for key, val in zip(("ratio", "var_a", "var_opt", "mc_a", "se_a", "mc_opt", "se_opt"),
                        (var_a / var_opt, var_a, var_opt, mc_a.variance, mc_a.se, mc_opt.variance, mc_opt.se)):
        res_b[key].append(val)
assert math.isclose(res_b["ratio"][0], 1.0, rel_tol=1e-12)  # sigma = 0: equal norms
assert all(x <= y * (1 + 1e-12) for x, y in zip(res_b["ratio"], res_b["ratio"][1:]))  # grows with the spread
for s, r in zip(res_b["sigma"], res_b["ratio"]):
    print(f"sigma={s:4.2f}: Var(a)/Var(p*) = {r:.3f}")
metrics["b_normalisation"] = {"n": n_b, "unit_var_attention": var_unit_a, "unit_var_opt": var_unit_opt,
                              "unit_var_measured": mc_unit.variance, "unit_var_se": mc_unit.se, "sweep": res_b}

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
p_raw = V.optimal_proposal(a, f)
p_unit = V.optimal_proposal(a, unit)
axes[0].loglog(a, p_raw, "o", ms=3, alpha=0.6, label=r"raw features ($\sigma$=0.75)")
axes[0].loglog(a, p_unit, "x", ms=4, color="k", label="L2-normalised features")
lim = [float(a.min()) * 0.5, 1.0]
axes[0].plot(lim, lim, ":", color="gray", label="p* = a")
axes[0].set(xlabel=r"attention $a_i$", ylabel=r"optimal proposal $p^*_i \propto a_i\|f_i\|$",
            title="(b) p* against a")
axes[0].legend(fontsize=8)
axes[1].plot(res_b["sigma"], res_b["ratio"], "-o", color="tab:purple", label="analytic")
mc_ratio = np.array(res_b["mc_a"]) / np.array(res_b["mc_opt"])
axes[1].plot(res_b["sigma"], mc_ratio, "s", mfc="none", color="k", label="measured (ratio of MC variances)")
axes[1].axhline(1.0, ls=":", color="gray")
axes[1].set(xlabel=r"spread of the feature norms $\sigma$ ($\|f_i\| = e^{\sigma e_i}$)",
            ylabel=r"$\mathbb{V}_a / \mathbb{V}_{p^*}$", title=f"(b) cost of sampling from a, K={k}, n={n_b}")
axes[1].legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "b_normalisation")
plt.show()

# %% [markdown]
# With normalised features every point lies on the diagonal $p^* = a$ and the two variances are equal
# (asserted to 12 digits). With spread-out norms the optimum shifts weight towards large-norm features and
# sampling from $a$ loses a factor that grows with the spread of the norms. Because a model cannot know
# $\lVert f_i\rVert$ before it computes $f_i$ — the point of sampling is not to compute most of them —
# normalising the features is what makes the attention the best proposal it *can* use.
#
# ## (c) With vs without replacement as $n \to K$
#
# Without replacement, draws $i_1,\dots,i_n$ come in sequence, each from $a$ renormalised over the items
# left (Gumbel-top-$k$). With the exclusive sums $S_{k-1} = \sum_{j<k} a_{i_j}$ every term
#
# $$Y_k = \sum_{j<k} a_{i_j} f_{i_j} + (1 - S_{k-1})\, f_{i_k}$$
#
# has $\mathbb{E}[Y_k \mid i_1..i_{k-1}] = \mu$, so two unbiased estimators are at hand:
# the **average** $\frac1n\sum_k Y_k$ (Zoom-In eq. 9, `expectation_without_replacement`) and the
# **last term** $Y_n$ (ATS eq. 14–15 as printed, `expectation_without_replacement(..., terms="last")`). At $n = K$ the last term is
# $\sum_i a_i f_i$ itself, so its variance is zero; the average still contains the early terms $Y_1, Y_2,\dots$
# built from few draws, so it is *not* exact at $n = K$. Measured below on $K$ items, with the exact
# variance by enumeration of every draw sequence on a small $K$ as a check on the Monte Carlo.

# %%
k_c = cfg["k_wor"]
a_c = V.peaked_attention(k_c, SCALE, gen)  # [K]
f_c = V.random_features(k_c, D, norm_spread=0.0, generator=gen)  # [K, D], unit norm as in ATS
res_c = {"K": k_c, "n": cfg["n_wor"], "with_analytic": [], "with_mc": [], "with_se": [],
         "without_avg": [], "without_avg_se": [], "without_last": [], "without_last_se": []}
for n in cfg["n_wor"]:
    wr = V.importance_sampling_variance(a_c, f_c, a_c, n)
    mc_wr = V.monte_carlo_variance("with", a_c, f_c, n, R, gen)
    mc_avg = V.monte_carlo_variance("without", a_c, f_c, n, R, gen)
    mc_last = V.monte_carlo_variance("without_last", a_c, f_c, n, R, gen)
    assert V.agrees(mc_wr.variance, wr, is_se(a_c, f_c, a_c, n))
    if n > 1:
        assert V.clearly_below(mc_avg.variance, mc_avg.se, wr, 0.0), n  # the average beats with replacement
    for key, val in zip(("with_analytic", "with_mc", "with_se", "without_avg", "without_avg_se", "without_last",
                         "without_last_se"), (wr, mc_wr.variance, mc_wr.se, mc_avg.variance, mc_avg.se,
                                              mc_last.variance, mc_last.se)):
        res_c[key].append(val)
assert cfg["n_wor"][-1] == k_c
assert res_c["without_last"][-1] < 1e-12  # n = K: the last term is the exact sum
assert res_c["without_avg"][-1] > SIGMAS * res_c["without_avg_se"][-1]  # the average is not exact at n = K
i2 = cfg["n_wor"].index(2)
assert V.clearly_below(res_c["without_avg"][i2], res_c["without_avg_se"][i2],
                     res_c["without_last"][i2], res_c["without_last_se"][i2])  # small n: the average wins
assert cfg["n_wor"][-2] == k_c - 1  # one item left: the last term wins clearly
assert V.clearly_below(res_c["without_last"][-2], res_c["without_last_se"][-2],
                     res_c["without_avg"][-2], res_c["without_avg_se"][-2])
cross = next(n for n, x, y in zip(cfg["n_wor"], res_c["without_avg"], res_c["without_last"]) if n > 1 and y < x)
last_vs_with = [n for n, y, w in zip(cfg["n_wor"], res_c["without_last"], res_c["with_analytic"]) if n > 1 and y >= w]
print(f"K={k_c}: the last term beats the average from n = {cross} on (measured grid)")
print(f"n > 1 where the last term is no better than sampling with replacement: {last_vs_with or 'none'}")
res_c["last_term_not_better_than_with"] = last_vs_with
print(f"at n=K: with replacement {res_c['with_analytic'][-1]:.3g}, average {res_c['without_avg'][-1]:.3g} "
      f"± {res_c['without_avg_se'][-1]:.1g}, last term {res_c['without_last'][-1]:.1e}")
res_c["crossover_n"] = cross

# exact enumeration on a small problem: validates the Monte-Carlo numbers above and shows the same pattern
k_e = cfg["k_exact"]
a_e = V.peaked_attention(k_e, SCALE, gen)  # [K]
f_e = V.random_features(k_e, D, norm_spread=0.0, generator=gen)  # [K, D]
exact_c = {"K": k_e, "n": list(range(1, k_e + 1)), "with": [], "without_avg": [], "without_last": [],
           "mc_without_avg": [], "mc_without_avg_se": [], "mc_without_last": [], "mc_without_last_se": []}
for n in exact_c["n"]:
    exact_c["with"].append(V.importance_sampling_variance(a_e, f_e, a_e, n))
    for scheme, key in (("without", "without_avg"), ("without_last", "without_last")):
        exact_spread = V.exact_moments(scheme, a_e, f_e, n).value
        exact = exact_spread.variance
        mc = V.monte_carlo_variance(scheme, a_e, f_e, n, R, gen)
        assert V.agrees(mc.variance, exact, exact_spread.monte_carlo_se(R)), (scheme, n, mc.variance, exact)
        exact_c[key].append(exact)
        exact_c["mc_" + key].append(mc.variance)
        exact_c["mc_" + key + "_se"].append(mc.se)
assert exact_c["without_last"][-1] < 1e-20 and exact_c["without_avg"][-1] > 0
gain_c = [w / x for w, x in zip(exact_c["with"], exact_c["without_avg"])]  # with / without replacement
assert all(g1 < g2 for g1, g2 in zip(gain_c, gain_c[1:])), gain_c  # the advantage grows with n
assert math.isclose(exact_c["without_avg"][0], exact_c["with"][0], rel_tol=1e-10)  # n = 1: one draw from a
metrics["c_replacement"] = {"monte_carlo": res_c, "exact": exact_c}
for n, w, x, y in zip(exact_c["n"], exact_c["with"], exact_c["without_avg"], exact_c["without_last"]):
    print(f"K={k_e}, n={n}: exact variance with {w:.4g} | without, average {x:.4g} | without, last term {y:.3g}")

# %%
# variances below 1e-20 are zero up to rounding (~1e-30 here): log_floor draws them on one line
fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
ax = axes[0]
floor = log_floor(res_c["without_avg"], res_c["without_last"])
ax.plot(res_c["n"], res_c["with_analytic"], "-", color="tab:blue", label="with replacement: analytic")
ax.errorbar(res_c["n"], res_c["with_mc"], yerr=2 * np.array(res_c["with_se"]), fmt="o", mfc="none",
            color="tab:blue", label="with replacement: measured")
ax.errorbar(res_c["n"], lift_zeros(res_c["without_avg"], floor), yerr=2 * np.array(res_c["without_avg_se"]), fmt="s-",
            color="tab:orange", label=r"without, average $\frac{1}{n}\sum_k Y_k$ (Zoom-In eq. 9)")
ax.errorbar(res_c["n"], lift_zeros(res_c["without_last"], floor), yerr=2 * np.array(res_c["without_last_se"]), fmt="^-",
            color="tab:green", label=r"without, last term $Y_n$ (ATS eq. 14)")
ax.axhline(floor, ls=":", color="gray")
ax.text(res_c["n"][0], floor * 1.5, "zero (up to rounding) is drawn on this line", fontsize=8, color="gray")
ax.set(yscale="log", xlabel="number of draws n", ylabel="total variance", title=f"(c) Monte Carlo, K={k_c}, R={R}")
ax.legend(fontsize=8)
ax = axes[1]
floor = log_floor(exact_c["without_avg"], exact_c["without_last"], exact_c["mc_without_last"])
ax.plot(exact_c["n"], exact_c["with"], "o-", color="tab:blue", label="with replacement (exact)")
ax.plot(exact_c["n"], lift_zeros(exact_c["without_avg"], floor), "s-", color="tab:orange", label="without, average (exact)")
ax.plot(exact_c["n"], lift_zeros(exact_c["without_last"], floor), "^-", color="tab:green", label="without, last term (exact)")
ax.plot(exact_c["n"], lift_zeros(exact_c["mc_without_avg"], floor), "k+", ms=10, label="Monte Carlo check")
ax.plot(exact_c["n"], lift_zeros(exact_c["mc_without_last"], floor), "k+", ms=10)
ax.axhline(floor, ls=":", color="gray")
ax.text(1, floor * 1.5, "zero (up to rounding) is drawn on this line", fontsize=8, color="gray")
ax.set(yscale="log", xlabel="number of draws n", ylabel="total variance",
       title=f"(c) exact by enumeration, K={k_e}")
ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "c_with_vs_without_replacement")
plt.show()

# %% [markdown]
# At $n = 1$ all three estimators are one draw from $a$. With replacement the variance only falls as
# $1/n$, because the heavy items are drawn again and again; without replacement each draw removes an item
# and its mass. The **average** of Zoom-In eq. 9 beats sampling with replacement at every $n > 1$, and the
# gap widens as $n$ grows (asserted on the exact curves). The two without-replacement estimators differ:
#
# - the average is the better one at small $n$: it averages $n$ unbiased terms, which damps the noise of the
#   last one; but it keeps the early, noisy terms at any $n$, so even at $n = K$ — every item drawn — its
#   variance is not zero;
# - the **last term** (ATS eq. 14 as printed) is a single term scaled by the mass left, $(1 - S_{n-1})$: at
#   small $n$ it is noisy, and on the larger problem it can be no better than sampling with replacement (the
#   $n$ where that happens in this run are printed above); once most of the mass has been drawn it is far
#   better than the average, and at $n = K$ it is exact.
#
# The $n$ from which the last term wins is printed above. Any convex combination of the $Y_k$ is unbiased
# too; the two shown are the two the papers write down.
#
# ## (d) The variance of the gradient estimators
#
# Training needs the gradient of the loss through the sampling. The library's estimators are autograd
# surrogates whose expected gradient is the exact gradient of $\sum_i a_i f_i$ (ATS eq. 11–12 with
# replacement; a score-function term per draw without replacement). Their **variance** is what the optimiser
# sees. We take the scalar $\langle w, \hat\mu\rangle$ for a fixed $w$ and measure the total variance of its
# gradient w.r.t. the attention logits $s$ ($a = \mathrm{softmax}(s)$, a vector of $K$) and w.r.t. the
# feature table ($K\times D$), relative to the squared norm of the true gradient: exactly by enumeration on
# the small problem of (c), and by Monte Carlo on the larger one (the $R$ runs on the batch axis, one autograd
# call for all of them).

# %%
project = V.random_features(1, D, 0.0, torch.Generator().manual_seed(seed + 2))[0]  # [D], the fixed w
schemes = {"with": "with replacement", "without": "without, average", "without_last": "without, last term"}
true_e = V.full_gradients(a_e, f_e, project)  # ([K], [K, D])
true_c = V.full_gradients(a_c, f_c, project)
norm_e = [float(g.square().sum()) for g in true_e]
norm_c = [float(g.square().sum()) for g in true_c]
res_d = {"exact": {"K": k_e, "n": list(range(1, k_e + 1))}, "mc": {"K": k_c, "n": cfg["n_grad"]}}
for scheme in schemes:
    for part in ("logits", "feats"):
        res_d["exact"][f"{scheme}_{part}"] = []
        res_d["mc"][f"{scheme}_{part}"] = []
        res_d["mc"][f"{scheme}_{part}_se"] = []
    for n in res_d["exact"]["n"]:
        m = V.exact_moments(scheme, a_e, f_e, n, grads=True, project=project)
        assert torch.allclose(m.grad_logits.mean, true_e[0], atol=1e-10)  # unbiased, exactly
        assert torch.allclose(m.grad_feats.mean, true_e[1], atol=1e-10)
        res_d["exact"][f"{scheme}_logits"].append(m.grad_logits.variance / norm_e[0])
        res_d["exact"][f"{scheme}_feats"].append(m.grad_feats.variance / norm_e[1])
    for n in cfg["n_grad"]:
        m = V.monte_carlo_moments(scheme, a_c, f_c, n, R, gen, grads=True, project=project)
        for part, spread, true, norm in (("logits", m.grad_logits, true_c[0], norm_c[0]),
                                         ("feats", m.grad_feats, true_c[1], norm_c[1])):
            # unbiased: the squared error of the mean is of the order variance / R
            assert float((spread.mean - true).square().sum()) <= 10 * spread.variance / R + 1e-20, (scheme, n, part)
            res_d["mc"][f"{scheme}_{part}"].append(spread.variance / norm)
            res_d["mc"][f"{scheme}_{part}_se"].append(spread.se / norm)

for part in ("logits", "feats"):
    ex, mc = res_d["exact"], res_d["mc"]
    for i, n in enumerate(ex["n"]):
        if n > 1:
            assert ex[f"without_{part}"][i] < ex[f"with_{part}"][i]
    for i, n in enumerate(mc["n"]):
        wor, se_wor, wr, se_wr = mc[f"without_{part}"][i], mc[f"without_{part}_se"][i], mc[f"with_{part}"][i], mc[f"with_{part}_se"][i]
        assert not V.clearly_below(wr, se_wr, wor, se_wor), (part, n)  # never measurably worse
        if n >= 4:
            assert V.clearly_below(wor, se_wor, wr, se_wr), (part, n)  # and measurably better from n = 4
    for i, n in enumerate(ex["n"]):  # with replacement: exactly 1/n
        assert math.isclose(ex[f"with_{part}"][i] * n, ex[f"with_{part}"][0], rel_tol=1e-9)
    gain = [w / x for w, x in zip(ex[f"with_{part}"], ex[f"without_{part}"])]  # with / without replacement
    assert all(g1 < g2 for g1, g2 in zip(gain, gain[1:])), gain  # the advantage grows with n
    assert ex[f"without_last_{part}"][-1] < 1e-20 < ex[f"without_{part}"][-1]  # n = K: only Y_K has an exact gradient
    assert mc["n"][-1] == k_c and mc[f"without_last_{part}"][-1] < 1e-12
    print(f"gradient w.r.t. {part}, n=K={k_c}: relative variance with {mc[f'with_{part}'][-1]:.3g}, "
          f"average {mc[f'without_{part}'][-1]:.3g}, last term {mc[f'without_last_{part}'][-1]:.1e}")
metrics["d_gradients"] = res_d

# %%
fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
styles = {"with": ("tab:blue", "o"), "without": ("tab:orange", "s"), "without_last": ("tab:green", "^")}
for ax, part, label in ((axes[0], "logits", "attention logits $s$"), (axes[1], "feats", "features $f$")):
    floor = log_floor(*(res_d[src][f"{scheme}_{part}"] for src in ("exact", "mc") for scheme in schemes))
    for scheme, name in schemes.items():
        color, marker = styles[scheme]
        x = np.array(res_d["exact"]["n"]) / k_e
        ax.plot(x, lift_zeros(res_d["exact"][f"{scheme}_{part}"], floor), marker + "-", color=color, label=f"{name}: exact, K={k_e}")
        x = np.array(res_d["mc"]["n"]) / k_c
        ax.errorbar(x, lift_zeros(res_d["mc"][f"{scheme}_{part}"], floor), yerr=2 * np.array(res_d["mc"][f"{scheme}_{part}_se"]),
                    fmt=marker + "--", mfc="none", color=color, alpha=0.7, label=f"{name}: measured, K={k_c}")
    ax.axhline(floor, ls=":", color="gray")
    ax.text(0.0, floor * 1.5, "zero (up to rounding) is drawn on this line", fontsize=8, color="gray")
    ax.set(yscale="log", xlabel="fraction of items drawn n / K",
           ylabel=r"$\mathrm{tr\,Var}[\hat g] / \|g\|^2$", title=f"(d) gradient w.r.t. {label}")
    ax.legend(fontsize=7)
fig.tight_layout()
save_figure(fig, out, "d_gradient_variance")
plt.show()

# %% [markdown]
# The gradients follow the values. Every estimator's mean gradient is the exact gradient (asserted to
# $10^{-10}$ by enumeration, and within its Monte-Carlo error on the larger problem). Sampling without
# replacement (the average) lowers the gradient variance w.r.t. the attention logits and the features alike:
# exactly at every $n > 1$ on the small problem, by a factor that grows with $n$; on the larger problem the
# gain at $n = 2$ is small (a few percent, within a few standard errors) and clear from $n = 4$ on. With replacement both gradient
# variances fall exactly as $1/n$ (the draws are i.i.d.). At $n = K$ only the last-term estimator has a
# deterministic (exact) gradient, for the same reason as its value: $Y_K$ is the full sum, while the average
# keeps the score terms of the early draws.
#
# ## (e) One stage vs two stages at an equal number of draws
#
# Zoom-In splits the image into $T$ tiles with attention $\alpha_c$ and each tile into $K_2$ sub-tiles with
# attention $\beta^c_{c'}$, so $\mu = \sum_c \alpha_c \sum_{c'} \beta^c_{c'} f(c, c')$ (Zoom-In eq. 5). It
# draws $n$ tiles i.i.d. from $\alpha$ and, within each drawn tile, as many sub-tiles as the tile was drawn,
# without replacement from $\beta^c$. The one-stage alternative (ATS) draws the $n$ sub-tiles directly from
# the joint $\alpha_c\beta^c_{c'}$ over all $TK_2$ items. By the law of total variance the two-stage
# variance is at least that of the tile-level average,
#
# $$\mathbb{V}_{\text{two-stage}} \;\ge\; \frac1n\Big(\sum_c \alpha_c \lVert g_c\rVert^2 - \lVert\mu\rVert^2\Big),
# \qquad g_c = \sum_{c'} \beta^c_{c'} f(c,c'),$$
#
# because the tiles are drawn *with* replacement. What it buys is memory: the second-stage attention
# $\beta^c$ is only computed for the $N'$ distinct tiles drawn, with
# $\mathbb{E}[N'] = \sum_c 1 - (1-\alpha_c)^n$. The features vary by tile: $f(c,c') \propto m_c + \varepsilon_{cc'}$,
# a tile centre plus sub-tile noise of the same scale, normalised to unit norm.

# %%
gen_e = torch.Generator().manual_seed(seed + 3)
alpha, beta, f_t = V.tiled_problem(cfg["tiles"], cfg["subtiles"], D, tile_scale=SCALE, subtile_scale=1.5,
                                   within_tile=1.0, generator=gen_e)  # [T], [T, K2], [T, K2, D]
a_j, f_j = V.two_stage_joint(alpha, beta, f_t)  # [T*K2], [T*K2, D]
res_e = {"T": cfg["tiles"], "K2": cfg["subtiles"], "n": cfg["n_two"], "one_with_analytic": [], "one_with": [],
         "one_with_se": [], "one_without": [], "one_without_se": [], "two_stage": [], "two_stage_se": [],
         "between_tile_bound": [], "unique_expected": [], "unique_measured": [], "unique_se": []}
for n in cfg["n_two"]:
    wr = V.importance_sampling_variance(a_j, f_j, a_j, n)
    one_wr = V.monte_carlo_variance("with", a_j, f_j, n, R, gen_e)
    one_wor = V.monte_carlo_variance("without", a_j, f_j, n, R, gen_e)
    two = V.monte_carlo_two_stage(alpha, beta, f_t, n, R, gen_e)
    bound = V.between_tile_variance(alpha, beta, f_t, n)
    expected_unique = V.expected_unique_tiles(alpha, n)
    assert V.agrees(one_wr.variance, wr, is_se(a_j, f_j, a_j, n))
    assert two.value.variance + SIGMAS * two.value.se >= bound  # law of total variance
    assert two.value.variance <= wr + SIGMAS * two.value.se  # within-tile draws without replacement never hurt
    assert abs(float(two.unique_tiles.mean) - expected_unique) <= SIGMAS * two.unique_tiles.mean_se + 1e-12
    assert expected_unique < n or n == 1  # repeated tiles share one second-stage view
    assert expected_unique < cfg["tiles"]
    if n == 1:
        assert V.agrees(two.value.variance, wr, is_se(a_j, f_j, a_j, 1)) and V.agrees(one_wor.variance, wr, is_se(a_j, f_j, a_j, 1))  # one draw: all three are one draw from the joint
    for key, val in zip(("one_with_analytic", "one_with", "one_with_se", "one_without", "one_without_se", "two_stage",
                         "two_stage_se", "between_tile_bound", "unique_expected", "unique_measured", "unique_se"),
                        (wr, one_wr.variance, one_wr.se, one_wor.variance, one_wor.se, two.value.variance,
                         two.value.se, bound, expected_unique, float(two.unique_tiles.mean), two.unique_tiles.mean_se)):
        res_e[key].append(val)
    print(f"n={n:3d}: one-stage with {wr:.4f} | one-stage without {one_wor.variance:.4f} | two-stage "
          f"{two.value.variance:.4f} ± {two.value.se:.4f} (tile bound {bound:.4f}) | N' {float(two.unique_tiles.mean):.2f} "
          f"(expected {expected_unique:.2f}) of T={cfg['tiles']}")
# at the largest n: two stages beat one-stage with replacement, and one stage without replacement beats both
saved = [n - u for n, u in zip(res_e["n"], res_e["unique_expected"])]  # draws that reuse a tile
assert all(x < y for x, y in zip(saved, saved[1:])), saved
se2 = res_e["two_stage_se"][-1]
assert res_e["two_stage"][-1] + SIGMAS * se2 < res_e["one_with_analytic"][-1]
assert res_e["one_without"][-1] + SIGMAS * res_e["one_without_se"][-1] < res_e["two_stage"][-1] - SIGMAS * se2
metrics["e_two_stage"] = res_e

# %%
fig, axes = plt.subplots(1, 2, figsize=(11.5, 4.4))
ax = axes[0]
ax.plot(res_e["n"], res_e["one_with_analytic"], "-", color="tab:blue", label="one stage, with replacement: analytic")
ax.errorbar(res_e["n"], res_e["one_with"], yerr=2 * np.array(res_e["one_with_se"]), fmt="o", mfc="none",
            color="tab:blue", label="one stage, with replacement: measured")
ax.errorbar(res_e["n"], res_e["one_without"], yerr=2 * np.array(res_e["one_without_se"]), fmt="s-",
            color="tab:orange", label="one stage, without replacement (eq. 9 average)")
ax.errorbar(res_e["n"], res_e["two_stage"], yerr=2 * np.array(res_e["two_stage_se"]), fmt="D-",
            color="tab:red", label="two stages (Zoom-In)")
ax.plot(res_e["n"], res_e["between_tile_bound"], ":", color="tab:red", label="two-stage lower bound (tile level)")
ax.set(xscale="log", yscale="log", xlabel="number of draws n (sub-tiles)", ylabel="total variance",
       title=f"(e) T={cfg['tiles']} tiles x K2={cfg['subtiles']} sub-tiles, R={R}")
ax.legend(fontsize=7)
ax = axes[1]
ax.plot(res_e["n"], res_e["unique_expected"], "-", color="tab:red", label=r"$\mathbb{E}[N'] = \sum_c 1-(1-\alpha_c)^n$")
ax.errorbar(res_e["n"], res_e["unique_measured"], yerr=2 * np.array(res_e["unique_se"]), fmt="o", mfc="none",
            color="k", label="measured mean N'")
ax.plot(res_e["n"], res_e["n"], ":", color="gray", label="n (every draw a new tile)")
ax.axhline(cfg["tiles"], ls="--", color="gray", lw=0.8, label=f"T = {cfg['tiles']} (all tiles)")
ax.set(xlabel="number of draws n", ylabel="distinct tiles N'", title="(e) tiles whose second stage is computed")
ax.legend(fontsize=8)
fig.tight_layout()
save_figure(fig, out, "e_one_vs_two_stage")
plt.show()

# %% [markdown]
# At one draw all three schemes coincide (one draw from the joint $\alpha_c\beta^c_{c'}$). As $n$ grows:
#
# - two stages are never worse than one stage with replacement (within error at every $n$) and measurably
#   better at the largest $n$, because the sub-tiles of a repeated tile are drawn without replacement;
# - but the two-stage variance cannot fall below the dotted tile-level bound, which decays only as $1/n$,
#   since the tiles themselves are drawn with replacement. One stage without replacement has no such floor
#   and is the least noisy of the three at the largest $n$;
# - the price of one stage is memory and compute: it needs the attention over all $TK_2$ sub-tiles, at the
#   second stage's resolution. Two stages compute the second-stage view and $\beta^c$ only for the $N'$
#   distinct tiles, and with a peaked $\alpha$ that is fewer than $n$ (for $n > 1$) and than $T$, the more so
#   the larger $n$ (right panel; the measured mean matches $\sum_c 1-(1-\alpha_c)^n$ within its error).
#
# So Zoom-In trades some variance (the tile-level term) for memory that scales with $N'$ rather than with the
# whole image; the memory itself is measured on real models in the later chapters.

# %%
metrics["runtime_s"] = time.perf_counter() - t_start
write_json(out / "metrics.json", metrics)
print(f"wrote {out / 'metrics.json'} and 5 figures; {metrics['runtime_s']:.1f} s")
