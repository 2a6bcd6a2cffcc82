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

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | gpu | paper
seed = 0

# %% [markdown]
# The chapter's tools: the variances of the samplers, exact and by Monte Carlo (`zoomin_lib.theory.variance`),
# and this chapter's helpers that measure the curves of each study and draw them
# (`zoomin_lib.chapters.variance_study`).

# %%
import math
import time

import matplotlib.pyplot as plt
import torch

from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib.chapters.variance_study import (gradient_variances, importance_curves, normalisation_sweep,
                                                plot_gradient_variance, plot_importance, plot_normalisation,
                                                plot_replacement, plot_two_stage, replacement_curves,
                                                replacement_exact, two_stage_curves, one_stage_images,
                                                two_stage_images, adaptive_study, plot_adaptive)
from zoomin_lib.theory import variance as V
from zoomin_lib.infra.io import write_json
from zoomin_lib.book.plotting import save_figure

# %% [markdown]
# ## Settings
#
# A profile sets the size of each study and the number $R$ of independent runs behind every measured
# variance (`repeats`): (a) $K$ items and the draw counts $n$ (`k_is`, `n_is`); (b) the spreads $\sigma$ of
# the feature norms (`spreads`); (c) $K$ items and the draw counts without replacement (`k_wor`, `n_wor`),
# and the small $K$ that is enumerated exactly in (c) and (d) (`k_exact`); (d) the draw counts of the
# gradients (`n_grad`); (e) $T$ tiles of $K_2$ sub-tiles and the draw counts (`tiles`, `subtiles`, `n_two`);
# (f) the images, pilot rounds, average target of fresh rounds, budget of rounds, two-stage round size and runs
# per image of the adaptive study (`adaptive`, with its own, smaller number of runs).
# The `smoke` profile runs in seconds, as the tests do: small problems and a thousand runs per point.

# %%
SMOKE = dict(k_is=64, n_is=[1, 4, 16, 64], spreads=[0.0, 0.5, 1.0, 2.0], k_wor=16,
             n_wor=[1, 2, 4, 8, 12, 15, 16], k_exact=5, n_grad=[1, 2, 4, 8, 16],
             tiles=8, subtiles=8, n_two=[1, 2, 4, 8], repeats=1000,
             adaptive=dict(images=6, pilot=3, target=6, budget=24, round_two=2, repeats=300))

# %% [markdown]
# The `cpu` profile, the book's default, takes a minute or less on a 2-core CPU: larger problems (256 items
# in (a) and (b), 64 in (c) and (d), 16 tiles of 16 sub-tiles in (e)), denser grids of $n$ up to $K$, and ten
# thousand runs per point.

# %%
CPU = dict(k_is=256, n_is=[1, 2, 4, 8, 16, 32, 64, 128, 256], spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
           k_wor=64, n_wor=[1, 2, 4, 8, 16, 24, 32, 40, 48, 56, 63, 64], k_exact=6,
           n_grad=[1, 2, 4, 8, 16, 32, 64], tiles=16, subtiles=16, n_two=[1, 2, 4, 8, 16], repeats=10000,
           adaptive=dict(images=12, pilot=4, target=12, budget=48, round_two=2, repeats=1500))

# %% [markdown]
# The `gpu` profile, for a machine with one H100-class GPU and 16 CPU cores, in minutes: the `paper` profile's
# forty thousand runs per point and its sizes in (c), (d) and (e) (128 items, $K = 7$ enumerated exactly, 32 tiles
# of 32 sub-tiles), 512 items in (a) and (b) (not 1024), and an adaptive study of 24 images with 5000 runs. The
# studies run on the CPU; they are four to eight times the `cpu` profile's work, spread over more cores. These
# settings are sized by estimate (from this chapter's `cpu` costs and one colon run timed by hand on an H200, issue
# 16); this project has not yet run them on a GPU.

# %%
GPU = dict(k_is=512, n_is=[1, 2, 4, 8, 16, 32, 64, 128, 256, 512], spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
           k_wor=128, n_wor=[1, 2, 4, 8, 16, 32, 64, 96, 112, 120, 127, 128], k_exact=7,
           n_grad=[1, 2, 4, 8, 16, 32, 64, 128], tiles=32, subtiles=32, n_two=[1, 2, 4, 8, 16, 32], repeats=40000,
           adaptive=dict(images=24, pilot=6, target=16, budget=64, round_two=2, repeats=5000))

# %% [markdown]
# The `paper` profile takes larger problems and more runs per point (forty thousand). The papers state the
# formulas only; no size here is one of theirs.

# %%
PAPER = dict(k_is=1024, n_is=[1, 4, 16, 64, 256, 1024], spreads=[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0],
             k_wor=128, n_wor=[1, 2, 4, 8, 16, 32, 64, 96, 112, 120, 127, 128], k_exact=7,
             n_grad=[1, 4, 16, 64, 128], tiles=32, subtiles=32, n_two=[1, 2, 4, 8, 16, 32], repeats=40000,
             adaptive=dict(images=32, pilot=8, target=16, budget=64, round_two=2, repeats=10000))

# %% [markdown]
# The opening picks the settings of the chosen profile, makes the chapter's results folder and seeds every
# random number generator. Every study uses features of dimension $D = 8$ and a peaked attention over the
# items (over the tiles in (e)), $\mathrm{softmax}(2z)$ with $z \sim N(0, I)$, and checks a measured value
# against an exact one within `MC_SIGMAS` standard errors.

# %%
cfg, out, _ = open_chapter("02_importance_sampling_variance", {"smoke": SMOKE, "cpu": CPU, "gpu": GPU, "paper": PAPER},
                           profile, seed)
R = cfg["repeats"]
D = 8  # feature dimension
SCALE = 2.0  # attention = softmax(SCALE * z), z ~ N(0, I): peaked
SIGMAS = V.MC_SIGMAS  # Monte-Carlo tolerance, in standard errors
metrics = {"profile": profile, "seed": seed, "repeats": R, "feature_dim": D, "attention_scale": SCALE}
t_start = time.perf_counter()
print(f"repeats={R}")

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

# %% [markdown]
# Each proposal is run $R$ times at every $n$, and each measured variance must agree with the formula within
# its standard error. Sampling from $a$ with the library's with-replacement estimator (ATS eq. 4) is
# importance sampling with $p = a$: one more check. At every $n$ the optimum must be best and the uniform
# proposal worst.

# %%
res_a = importance_curves(a, f, proposals, cfg["n_is"], R, gen)
mc_ats = V.monte_carlo_variance("with", a, f, 4, R, gen)
assert V.agrees(mc_ats.variance, V.importance_sampling_variance(a, f, a, 4), V.importance_sampling_variance_se(a, f, a, 4, R))
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

# %% [markdown]
# On log–log axes, each proposal's formula is a line and its measured variances are points with two standard
# errors either side:

# %%
save_figure(plot_importance(res_a, k, R), out, "a_importance_sampling")
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
# independent of $n$, with equality when the norms are equal. First the normalised case itself, at $n = 8$:
# $p^*$ equals $a$, and both proposals have the same variance.

# %%
unit = V.l2_normalize(f)  # [K, D]
assert torch.allclose(V.optimal_proposal(a, unit), a, atol=1e-14, rtol=0)
n_b = 8
var_unit_a = V.importance_sampling_variance(a, unit, a, n_b)
var_unit_opt = V.importance_sampling_variance(a, unit, V.optimal_proposal(a, unit), n_b)
assert math.isclose(var_unit_a, var_unit_opt, rel_tol=1e-12)
mc_unit = V.monte_carlo_variance("with", a, unit, n_b, R, gen)
assert V.agrees(mc_unit.variance, var_unit_a, V.importance_sampling_variance_se(a, unit, a, n_b, R))
print(f"unit-norm features, n={n_b}: max |p* - a| = {float((V.optimal_proposal(a, unit) - a).abs().max()):.1e}; "
      f"variance from a {var_unit_a:.4g} = from p* {var_unit_opt:.4g}; measured {mc_unit.variance:.4g} ± {mc_unit.se:.2g}")

# %% [markdown]
# Then the same attention and feature directions, with norms $\exp(\sigma e_i)$ for each spread $\sigma$ of
# the profile: $\sigma = 0$ is the normalised case, and the cost of sampling from $a$ must grow with $\sigma$.

# %%
res_b = normalisation_sweep(a, cfg["spreads"], D, n_b, R, gen, seed)
assert math.isclose(res_b["ratio"][0], 1.0, rel_tol=1e-12)  # sigma = 0: equal norms
assert all(x <= y * (1 + 1e-12) for x, y in zip(res_b["ratio"], res_b["ratio"][1:]))  # grows with the spread
for s, r in zip(res_b["sigma"], res_b["ratio"]):
    print(f"sigma={s:4.2f}: Var(a)/Var(p*) = {r:.3f}")
metrics["b_normalisation"] = {"n": n_b, "unit_var_attention": var_unit_a, "unit_var_opt": var_unit_opt,
                              "unit_var_measured": mc_unit.variance, "unit_var_se": mc_unit.se, "sweep": res_b}

# %% [markdown]
# Left, $p^*$ against $a$ for the raw and for the normalised features; right, the cost of sampling from $a$
# as the norms spread:

# %%
save_figure(plot_normalisation(a, f, res_b, n_b), out, "b_normalisation")
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
res_c = replacement_curves(a_c, f_c, cfg["n_wor"], R, gen)
assert cfg["n_wor"][-1] == k_c
assert res_c["without_last"][-1] < 1e-12  # n = K: the last term is the exact sum
assert res_c["without_avg"][-1] > SIGMAS * res_c["without_avg_se"][-1]  # the average is not exact at n = K
i2 = cfg["n_wor"].index(2)
assert V.clearly_below(res_c["without_avg"][i2], res_c["without_avg_se"][i2],
                     res_c["without_last"][i2], res_c["without_last_se"][i2])  # small n: the average wins
assert cfg["n_wor"][-2] == k_c - 1  # one item left: the last term wins clearly
assert V.clearly_below(res_c["without_last"][-2], res_c["without_last_se"][-2],
                     res_c["without_avg"][-2], res_c["without_avg_se"][-2])

# %% [markdown]
# Where the last term overtakes the average on the measured grid, and where it is no better than sampling
# with replacement:

# %%
cross = next(n for n, x, y in zip(cfg["n_wor"], res_c["without_avg"], res_c["without_last"]) if n > 1 and y < x)
last_vs_with = [n for n, y, w in zip(cfg["n_wor"], res_c["without_last"], res_c["with_analytic"]) if n > 1 and y >= w]
print(f"K={k_c}: the last term beats the average from n = {cross} on (measured grid)")
print(f"n > 1 where the last term is no better than sampling with replacement: {last_vs_with or 'none'}")
res_c["last_term_not_better_than_with"] = last_vs_with
print(f"at n=K: with replacement {res_c['with_analytic'][-1]:.3g}, average {res_c['without_avg'][-1]:.3g} "
      f"± {res_c['without_avg_se'][-1]:.1g}, last term {res_c['without_last'][-1]:.1e}")
res_c["crossover_n"] = cross

# %% [markdown]
# Exact enumeration on a small problem validates the Monte-Carlo numbers above and shows the same pattern:
# the gain of sampling without replacement grows with $n$, and at $n = 1$ the average is one draw from $a$.

# %%
k_e = cfg["k_exact"]
a_e = V.peaked_attention(k_e, SCALE, gen)  # [K]
f_e = V.random_features(k_e, D, norm_spread=0.0, generator=gen)  # [K, D]
exact_c = replacement_exact(a_e, f_e, R, gen)
assert exact_c["without_last"][-1] < 1e-20 and exact_c["without_avg"][-1] > 0
gain_c = [w / x for w, x in zip(exact_c["with"], exact_c["without_avg"])]  # with / without replacement
assert all(g1 < g2 for g1, g2 in zip(gain_c, gain_c[1:])), gain_c  # the advantage grows with n
assert math.isclose(exact_c["without_avg"][0], exact_c["with"][0], rel_tol=1e-10)  # n = 1: one draw from a
metrics["c_replacement"] = {"monte_carlo": res_c, "exact": exact_c}
for n, w, x, y in zip(exact_c["n"], exact_c["with"], exact_c["without_avg"], exact_c["without_last"]):
    print(f"K={k_e}, n={n}: exact variance with {w:.4g} | without, average {x:.4g} | without, last term {y:.3g}")

# %% [markdown]
# Left the Monte Carlo on $K$ items, right the exact curves of the small problem. Variances below $10^{-20}$
# are zero up to rounding (about $10^{-30}$ here): they are drawn on one dotted line.

# %%
save_figure(plot_replacement(res_c, exact_c, R), out, "c_with_vs_without_replacement")
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
res_d = gradient_variances((a_e, f_e), (a_c, f_c), project, cfg["n_grad"], R, gen)

# %% [markdown]
# For both gradients, sampling without replacement (the average) must beat sampling with it: exactly at every
# $n > 1$ on the small problem, by a gain that grows with $n$; on the larger problem never measurably worse,
# and measurably better from $n = 4$. With replacement the variance is exactly $1/n$ of one draw's, and at
# $n = K$ only the last term has an exact gradient.

# %%
ex, mc = res_d["exact"], res_d["mc"]
for part in ("logits", "feats"):
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

# %% [markdown]
# Both gradients against the fraction of items drawn, exact on the small problem (solid lines) and measured on
# the larger one (dashed, with two standard errors):

# %%
save_figure(plot_gradient_variance(res_d), out, "d_gradient_variance")
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
res_e = two_stage_curves(alpha, beta, f_t, cfg["n_two"], R, gen_e, SIGMAS)
for i, n in enumerate(res_e["n"]):
    print(f"n={n:3d}: one-stage with {res_e['one_with_analytic'][i]:.4f} | one-stage without "
          f"{res_e['one_without'][i]:.4f} | two-stage {res_e['two_stage'][i]:.4f} ± {res_e['two_stage_se'][i]:.4f} "
          f"(tile bound {res_e['between_tile_bound'][i]:.4f}) | N' {res_e['unique_measured'][i]:.2f} "
          f"(expected {res_e['unique_expected'][i]:.2f}) of T={cfg['tiles']}")

# %% [markdown]
# At the largest $n$ two stages must beat one stage with replacement, and one stage without replacement must
# beat both; the draws that reuse a tile, and so save a second-stage view, must grow with $n$.

# %%
saved = [n - u for n, u in zip(res_e["n"], res_e["unique_expected"])]  # draws that reuse a tile
assert all(x < y for x, y in zip(saved, saved[1:])), saved
se2 = res_e["two_stage_se"][-1]
assert res_e["two_stage"][-1] + SIGMAS * se2 < res_e["one_with_analytic"][-1]
assert res_e["one_without"][-1] + SIGMAS * res_e["one_without_se"][-1] < res_e["two_stage"][-1] - SIGMAS * se2
metrics["e_two_stage"] = res_e

# %% [markdown]
# Left, the variances against $n$ with the two-stage floor (dotted); right, the distinct tiles $N'$ whose
# second stage is computed:

# %%
save_figure(plot_two_stage(res_e, R), out, "e_one_vs_two_stage")
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

# %% [markdown]
# ## (f) Beyond the paper: N from the data, at an equal average number of draws
#
# Every estimator above draws the same $n$ for every image. `zoomin_lib.beyond.adaptive` lets each image
# choose: $P$ pilot **rounds** (each an independent call of an unbiased estimator on $r$ draws) estimate the
# per-round variance $s_b^2$, the image takes $M_b = \mathrm{clip}(\lceil s_b^2/\mathrm{tol}^2\rceil, 1,
# \text{budget} - P)$ fresh rounds, and the estimate is their mean (chapter 01 proves it unbiased; the pilot
# only decides). An image spends $N_b = r(P + M_b)$ draws. We run it on a batch of images drawn like the
# problems of (c) (one stage, rounds of one draw from the attention, ATS eq. 4) and (e) (Zoom-In's two
# stages, rounds of `round_two` draws), with the tolerance set so that the average image's per-round
# variance $\bar\sigma^2$ asks for `target` fresh rounds, $\mathrm{tol}^2 = \bar\sigma^2/\text{target}$. The
# comparison gives every image the same number of rounds at the rule's average cost $\bar N$, pilot
# included: variance $\sigma_b^2 r/\bar N$, with fractional rounds allowed (the best any rounding of
# $\bar N$ could do). The rule is checked unbiased for every image within its Monte-Carlo error.

# %%
ad = cfg["adaptive"]
gen_f = torch.Generator().manual_seed(seed + 4)
setups = {"one stage": (one_stage_images(ad["images"], k_c, D, SCALE, gen_f), 1),
          "two stages": (two_stage_images(ad["images"], cfg["tiles"], cfg["subtiles"], D, SCALE, gen_f),
                         ad["round_two"])}
res_f = [adaptive_study(kind, batch, ad["pilot"], r, ad["target"], ad["budget"], ad["repeats"], gen_f)
         for kind, (batch, r) in setups.items()]
for res in res_f:
    n_img = res["per_image_mean_draws"]
    print(f"{res['kind']}: average N {res['mean_draws']:.1f} draws (pilot {res['pilot_rounds'] * res['round_size']}); "
          f"per image {min(n_img):.1f} to {max(n_img):.1f}; per run p10/p50/p90 "
          f"{'/'.join(f'{q:.0f}' for q in res['draws_p10_p50_p90'])}; per-round variance "
          f"{min(res['sigma2']):.3f} to {max(res['sigma2']):.3f}")
    print(f"   variance, mean over images: rule {res['mean_var_adaptive']:.4f} | fixed N {res['mean_var_fixed']:.4f} "
          f"(x{res['mean_var_ratio']:.2f}); worst image: rule {res['max_var_adaptive']:.4f} | fixed N "
          f"{res['max_var_fixed']:.4f} (x{res['max_var_ratio']:.2f}); tol^2 {res['tol'] ** 2:.4f}")
    print(f"   with sigma_b^2 known (no pilot): mean {res['oracle_mean_var']:.4f} vs fixed {res['oracle_fixed_mean_var']:.4f}, "
          f"worst {res['oracle_max_var']:.4f} vs fixed {res['oracle_fixed_max_var']:.4f} at N {res['oracle_mean_draws']:.1f}")
metrics["f_adaptive"] = res_f

# %% [markdown]
# Each image's mean $N$ against its per-round variance (left), and each image's variance under both rules
# (right):

# %%
save_figure(plot_adaptive(res_f), out, "f_adaptive_n")
plt.show()

# %% [markdown]
# The rule does choose a different $N$ for each image. Does it pay? Checked below, within `MC_SIGMAS`
# standard errors: with the pilot, the rule's variance is **above** the fixed rule's at the same average cost,
# on average over the images and on the worst image; with each image's $\sigma_b^2$ known (no pilot), the
# same tolerance would bound the worst image by $\mathrm{tol}^2$, below the fixed rule's worst image, at the
# same average variance (within 5 %).

# %%
for res in res_f:
    n_img, b = res["per_image_mean_draws"], res["images"]
    assert max(n_img) - min(n_img) > 1  # N differs between images
    se_rule = math.sqrt(sum(x * x for x in res["adaptive_var_se"])) / b
    se_fixed = math.sqrt(sum(x * x for x in res["fixed_var_se"])) / b
    assert V.clearly_below(res["mean_var_fixed"], se_fixed, res["mean_var_adaptive"], se_rule), res["kind"]
    worst = res["adaptive_var"].index(res["max_var_adaptive"])
    worst_fixed = res["fixed_var"].index(res["max_var_fixed"])
    assert V.clearly_below(res["max_var_fixed"], res["fixed_var_se"][worst_fixed], res["max_var_adaptive"],
                           res["adaptive_var_se"][worst]), res["kind"]
    assert res["oracle_max_var"] <= res["tol"] ** 2 * (1 + 1e-12) < res["oracle_fixed_max_var"]
    assert math.isclose(res["oracle_mean_var"], res["oracle_fixed_mean_var"], rel_tol=0.05)

# %% [markdown]
# On these problems, choosing $N$ from the data does not pay; the fixed $N$ wins, by the factors printed
# above. Two causes, both measured:
#
# - the pilot's $P$ rounds are spent on the decision and not averaged (averaging them in would bias the
#   estimate, chapter 01);
# - $s_b^2$ from a few rounds is noisy, and an image whose pilot happens to agree (with a peaked attention,
#   pilot draws that hit the same item give $s_b^2 = 0$) takes too few rounds. The variance it gets,
#   $\mathbb{E}[\sigma_b^2 / M_b] \approx \mathrm{tol}^2\, \mathbb{E}[\sigma_b^2/s_b^2]$, is above
#   $\mathrm{tol}^2$ (Jensen), which is where the rule's points sit in the right panel.
#
# Even with $\sigma_b^2$ known, a tolerance on the standard error buys an *even* precision over images, not a
# lower average: with $M_b \propto \sigma_b^2$ the mean of $\sigma_b^2/M_b$ is $\mathrm{tol}^2$ either way.
# What it buys is the worst image: here the per-round variances of the images spread by the factors printed
# above, and the gain on the worst image (printed as "with sigma_b^2 known") is smaller than what the pilot
# costs. A rule aimed at the average would
# take $M_b \propto \sigma_b$ (Neyman's allocation) across a batch. The comparison is close to even-handed:
# the fixed rule is allowed fractional rounds (slightly in its favour), and on two stages it is made of
# the same rounds of `round_two` draws, where one Zoom-In call of $\bar N$ draws would do better still
# (in its favour again, were it used).

# %%
metrics["runtime_s"] = time.perf_counter() - t_start
write_json(out / "metrics.json", metrics)
print(f"wrote {out / 'metrics.json'} and 6 figures; {metrics['runtime_s']:.1f} s")
