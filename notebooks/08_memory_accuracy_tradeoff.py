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
# # The memory/accuracy trade-off
#
# What does the second stage buy, and what does it cost? On the colon-cancer task (chapter 03) this
# chapter measures:
#
# 1. **Table 3**: Zoom-In and ATS with $N \in \{5, 10, 50\}$: accuracy, peak memory, time;
# 2. **Table 4**: the ablation of the entropy weight $\lambda \in \{0, 10^{-5}, 1\}$, the contrastive loss and $N$;
# 3. **Figure 4**: peak memory of a training step and the number $N'$ of distinct first-stage tiles over the
#    training epochs;
# 4. **The memory model** of sec. 2.1 / appendix A, $O(s^2HW + Nhw)$ for ATS against
#    $O(s_1^2HW + N's_2^2h_1w_1 + Nh_2w_2)$ for Zoom-In, fitted to measured peak memory;
# 5. **Peak memory against image size**, from 500x500 towards a gigapixel, for the CNN, ATS and Zoom-In, with
#    the crossover points.
#
# **Data**: the synthetic colon-cancer stand-in of chapter 03 (or the real set with `-p data_dir ...`).
# Every number below is measured by this run unless its column says "paper".

# %% tags=["parameters"]
import os

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | gpu | paper
data_dir = None  # a CRCHistoPhenotypes_2016_04_28 folder; None: the synthetic stand-in
seed = 0

# %% [markdown]
# The chapter's tools: the colon-cancer data (`data_prep.colon_cancer`), training and profiling
# (`zoomin_lib.train`), the memory model (`zoomin_lib.theory.memory_model`), this chapter's helpers
# (`zoomin_lib.chapters.tradeoff`), the paper's numbers, and the book's tables and figures.

# %%
import torch
from scipy.stats import spearmanr

from data_prep import colon_cancer
from zoomin_lib.book.paper_numbers import ZOOMIN_TABLE3, ZOOMIN_TABLE4_COLON
from zoomin_lib.book.plotting import save_figure
from zoomin_lib.book.report import markdown_table
from zoomin_lib.chapters import tradeoff
from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib.infra.io import write_json
from zoomin_lib.theory import memory_model as mm
from zoomin_lib.train.profiling import profile_methods
from zoomin_lib.train.protocol import run_folds, standardize, summarize

# %% [markdown]
# ## Settings
#
# **smoke** checks the mechanics in seconds: one epoch, and small images in the sweep over image sizes.

# %%
SMOKE = dict(folds=1, epochs=1, warmup=0, lr=1e-3, cosine=False, model_sides=[500, 750], model_n=[5, 10, 50],
             sweep_sides=[500, 1000, 2000], cnn_max_side=1000)

# %% [markdown]
# **cpu**, the book's default, trains on one fold of the ten as chapter 03's cpu profile does (lr $3 \cdot 10^{-3}$
# with cosine decay, the contrastive term from the seventh epoch), but for 12 epochs, not 20. The ten
# configurations are the chapter's cost, and figure 4 needs the epochs after the warm-up: $E[N']$ stays at its
# uniform value until the contrastive term starts, then falls. Fewer epochs did not show it here: with 10 (or 9 at
# a fixed rate, or 6 with the contrastive term from the third) the fall stayed under the half tile asserted
# below. The sweep over image sizes stops at 8000 px a side (the CNN at 2000): the fitted lines carry it to a
# gigapixel.

# %%
CPU = dict(folds=1, epochs=12, warmup=6, lr=3e-3, cosine=True, model_sides=[500, 750, 1000, 1500], model_n=[5, 10, 20, 50],
           sweep_sides=[500, 1000, 2000, 4000, 8000], cnn_max_side=2000)

# %% [markdown]
# **gpu**, for one H100-class GPU, trains as chapter 03's gpu profile does (50 epochs at lr $10^{-3}$ with cosine
# decay, the contrastive term after 10) on two folds of the ten, and measures the paper's image sides and $N$ (up
# to 2000 and 100). Estimate: the ten configurations cost about three minutes a fold at 50 epochs (chapter 03's
# H200 timing: 45 s for Zoom-In, 20 s for ATS-10 at 100 epochs). These settings are sized by estimate (from this
# chapter's `cpu` costs and one colon run timed by hand on an H200, issue 16); this project has not yet run them on
# a GPU.

# %%
GPU = dict(folds=2, epochs=50, warmup=10, lr=1e-3, cosine=True, model_sides=[500, 750, 1000, 1500, 2000],
           model_n=[5, 10, 20, 50, 100], sweep_sides=[500, 1000, 2000, 4000, 8000, 16000], cnn_max_side=4000)

# %% [markdown]
# **paper** is the paper's protocol: ten folds, 100 epochs at lr $10^{-3}$. The sweep over image sizes is bounded
# by the host's memory, not by the profile.

# %%
PAPER = dict(folds=10, epochs=100, warmup=10, lr=1e-3, cosine=False, model_sides=[500, 750, 1000, 1500, 2000],
             model_n=[5, 10, 20, 50, 100], sweep_sides=[500, 1000, 2000, 4000, 8000, 16000], cnn_max_side=4000)

# %% [markdown]
# The chapter opens with the profile's settings: it checks the profile, makes the results folder and seeds
# everything.

# %%
cfg, out, device = open_chapter("08_memory_accuracy_tradeoff", {"smoke": SMOKE, "cpu": CPU, "gpu": GPU, "paper": PAPER},
                                profile, seed)

# %% [markdown]
# ## The data
#
# Chapter 03's images, standardized with their own channel statistics (no labels used), and its ten
# cross-validation folds, of which the profile keeps the first.
# How the stand-in compares with the real CRCHistoPhenotypes images (image size, epithelial nuclei per image,
# a nucleus's size at each method's view) is tabulated in chapter 03's data section, on these same images.

# %%
root = data_dir if data_dir is not None else colon_cancer.default_dataset(seed=seed)
data = colon_cancer.load_colon_cancer(root)
x, y = colon_cancer.to_tensors(data)
x = standardize(x)
DATA_LABEL = "synthetic stand-in" if data.synthetic else f"CRCHistoPhenotypes ({root})"
folds = [f for f in colon_cancer.cross_validation_folds(data.labels, 10, 1, seed) if f.fold < cfg["folds"]]
print(f"{len(data)} images, data: {DATA_LABEL}; {len(folds)} fold(s), {cfg['epochs']} epochs, lr {cfg['lr']}")

# %% [markdown]
# ## Tables 3 and 4: sample size, entropy weight, contrastive loss
#
# Each configuration is trained on the same fold(s) with the same seed and mini-batch order. Figure 4's
# quantities are recorded after every epoch of every run: the peak memory of one training step on a fixed
# training image, and the mean $N'$ over the test images.

# %%
CONFIGS = tradeoff.configs(cfg)  # name: (factory, settings, lambda, N, contrastive)
probe = tradeoff.make_probe(x[folds[0].train[:1]], y[folds[0].train[:1]], x[folds[0].test], seed)
results, trained = run_folds({k: v.factory for k, v in CONFIGS.items()}, {k: v.settings for k, v in CONFIGS.items()},
                             x, y, folds, seed=seed, probe=probe)
summary = {name: summarize(runs) for name, runs in results.items()}

# %% [markdown]
# Table 3 sets accuracy against cost: the peak memory and time of one test image at inference, measured two
# ways, reading one patch and one tile at a time (lean) and holding them all at once.

# %%
costs = profile_methods(trained, x[folds[0].test[:1]], generator=torch.Generator().manual_seed(seed))
costs_all = profile_methods(trained, x[folds[0].test[:1]], lean=False, generator=torch.Generator().manual_seed(seed))
table3 = tradeoff.table3_rows(summary, costs, costs_all, CONFIGS, ZOOMIN_TABLE3["rows"])
print(f"Table 3. Measured: {DATA_LABEL}, {profile!r} profile, {costs[next(iter(costs))]['device']}, one image; "
      f"'lean' reads one patch and one tile "
      f"at a time, 'all at once' holds the N patches and N' tiles together (top-k inference). "
      f"Paper: {ZOOMIN_TABLE3['source']}, GPU; {ZOOMIN_TABLE3['note']}.")
markdown_table(table3)

# %% [markdown]
# Table 4 is Zoom-In's ablation: the entropy weight $\lambda$, the contrastive loss and $N$, one at a time.

# %%
table4 = tradeoff.table4_rows(summary, CONFIGS, ZOOMIN_TABLE4_COLON["rows"])
print(f"Table 4 (Zoom-In ablation). Measured: {DATA_LABEL}, {len(folds)} fold(s). Paper: {ZOOMIN_TABLE4_COLON['source']}.")
markdown_table(table4)

# %% [markdown]
# ## Figure 4: memory and $N'$ over training
#
# At initialisation $\alpha$ is close to uniform and the $N$ draws spread over most tiles; as $\alpha$
# sharpens, fewer distinct tiles $N'$ are drawn and fewer tile views are held. ATS's memory does not
# depend on its attention. $N'$ is shown two ways: drawn (one draw per test image, noisy) and its exact
# expectation given $\alpha$, $E[N'] = \sum_c 1 - (1 - \alpha_c)^N$ (no sampling noise), which is largest for a
# uniform $\alpha$. A colon image has only 2x2 tiles of 250x250, so $N' \le 4$ here.
#
# Two first-stage networks are compared. Table 5 ends $a$ in a tanh; averaged over a tile, its logits then
# differ by at most 2, so no tile can get more than $e/(e + 3e^{-1}) \approx 0.71$ of the mass and $E[N']$
# cannot fall below about 2.9 for $N = 10$. Appendix K's text describes $a$ as convolutions "followed by
# average pooling and a softmax", with no bound, and table 6's $a$ ends in an unbounded ReLU; that is our
# default (`builders.zoomin(bounded_a=False)`), and the tanh version is trained alongside ("tanh on a").

# %%
histories = {name: results[name][0].history for name in ["Zoom-In N=10", "Zoom-In N=10 tanh on a", "ATS N=10"]}
fig, expected, sharpness = tradeoff.figure4(
    histories, cfg["epochs"], f"Measured here on the {device.type} ({DATA_LABEL}); cf. Zoom-In figure 4 (left, GPU, real data)")
save_figure(fig, out, "figure4_memory_and_unique_tiles");

# %% [markdown]
# Two checks on every epoch: $E[N']$ lies between one tile and its value for a uniform $\alpha$, and with the
# tanh on $a$ it stays above the floor worked out above (about 2.9). Then the first and last epochs of both
# versions:

# %%
uniform_bound, tanh_floor = tradeoff.unique_tile_bounds(tiles=4, n=10)  # 2x2 tiles of 250x250, N = 10
assert all(1 - 1e-6 <= e <= uniform_bound + 1e-6 for e in expected["Zoom-In N=10"]), expected
assert all(tanh_floor - 1e-6 <= e <= uniform_bound + 1e-6 for e in expected["Zoom-In N=10 tanh on a"]), (
    tanh_floor, expected)
for name in expected:
    e, m = expected[name], sharpness[name]
    print(f"{name}: E[N'] from {e[0]:.3f} (epoch 1) to {e[-1]:.3f} (epoch {len(e)}); mean max alpha from "
          f"{m[0]:.3f} to {m[-1]:.3f}")
print(f"bounds: E[N'] <= {uniform_bound:.2f} (uniform alpha); with the tanh, E[N'] >= {tanh_floor:.2f}")

# %% [markdown]
# Does $N'$ fall as $\alpha$ sharpens? The fall of $E[N']$ over training, and its rank correlation with the
# largest tile weight, epoch by epoch (one epoch, in `smoke`, cannot show a trend).

# %%
fell = expected["Zoom-In N=10"][0] - expected["Zoom-In N=10"][-1]
rho = spearmanr(sharpness["Zoom-In N=10"], expected["Zoom-In N=10"]).statistic
print(f"E[N'] fell by {fell:.2f} tiles; Spearman correlation of max alpha and E[N'] over the epochs: {rho:.2f}")
if profile != "smoke":  # one epoch cannot show a trend
    assert fell > 0.5, f"N' did not fall as alpha sharpened: E[N'] {expected['Zoom-In N=10']}"
    assert rho < -0.7, f"N' did not fall with sharper attention: rho = {rho:.2f}"

# %% [markdown]
# **What this measures.** Appendix A reports that $N'$ drops once $\alpha$ is trained, and with it the
# memory of the tile term. With the unbounded first stage it does here: $E[N']$ falls from the uniform
# value as the largest tile weight grows (the two move in opposite directions, epoch by epoch; the
# assertion above checks a fall of more than half a tile and a rank correlation below -0.7). With table 5's
# tanh the fall is capped at the bound printed above and, in our runs, hardly starts: a tile's logit is the
# mean of bounded scores over its whole area, and the glands of a stand-in positive, clustered round one
# hub, cover only part of it. The accuracy of both versions is in table 4's companion line below.

# %%
name = "Zoom-In N=10 tanh on a"
print(f"{name}: accuracy {tradeoff.accuracy_text(summary[name])}% (AUC {summary[name]['auc_mean']}), against "
      f"{tradeoff.accuracy_text(summary['Zoom-In N=10'])}% for the default a ({len(folds)} fold(s), {DATA_LABEL})")

# %% [markdown]
# ## The memory model, fitted to measurement
#
# In a training step every activation is kept for the backward pass, so the terms of the memory model are
# all held at once. We measure the peak of one training step (batch 1, forward and backward, every drawn
# tile's view and every patch in one batch) over image sizes and sample sizes $N$, record the $N'$ of that
# very draw, and fit the model's constants (bytes per pixel of each term) by non-negative least squares.

# %%
points = tradeoff.memory_model_points(cfg["model_sides"], cfg["model_n"])  # Zoom-In terms, peaks; ATS terms, peaks
terms_z, meas_z, terms_a, meas_a = points
fit_z, fit_a = mm.fit(terms_z, meas_z), mm.fit(terms_a, meas_a)
err_z, err_a = fit_z.relative_errors(terms_z, meas_z), fit_a.relative_errors(terms_a, meas_a)
markdown_table(tradeoff.fit_rows(fit_z, err_z, fit_a, err_a), digits=3)

# %% [markdown]
# Each measurement against what the fitted model predicts for it: on the diagonal, the model is exact. The
# claim, checked: no measurement is more than 30 % away from its prediction.

# %%
TOLERANCE = 0.30  # the largest relative error we accept between the fitted model and a measurement
fig = tradeoff.fit_figure(points, fit_z, fit_a)
save_figure(fig, out, "memory_model_fit");
assert err_z.max() < TOLERANCE and err_a.max() < TOLERANCE, (err_z.max(), err_a.max())
print(f"the memory model reproduces every measurement within {TOLERANCE:.0%}: "
      f"Zoom-In max {err_z.max():.2%}, ATS max {err_a.max():.2%}")

# %% [markdown]
# With the fitted constants, the model answers appendix A's question: for which image sizes does Zoom-In's
# training step need less memory than ATS's? The tile term $N' s_2^2 h_1 w_1$ does not grow with the image,
# while ATS's view term $s^2HW$ does; the sizes below are where the two fitted models are equal, for a few
# values of $N'$ ($N = 10$).

# %%
markdown_table(tradeoff.crossover_rows(fit_z, fit_a))

# %% [markdown]
# ## Peak memory at inference against image size
#
# Untrained networks (memory does not depend on the weights; Zoom-In's $N'$ does, and an untrained
# $\alpha$ is the worst case), one image, no gradients. Zoom-In and ATS are measured two ways: reading
# patches and tiles one at a time (`lean`, the library's inference setting) and holding all of them at once
# (the paper's accounting). The CNN runs at full resolution. Images larger than host memory allows are
# not measured: the lines beyond the last marker are the fitted linear model $c_0 + c_1 HW$ (dashed),
# extrapolated to a gigapixel.

# %%
curves, sides = tradeoff.inference_sweep(cfg["sweep_sides"], cfg["cnn_max_side"], device, seed)  # MiB, px by curve
markdown_table(tradeoff.sweep_rows(curves, sides, cfg["sweep_sides"]), digits=4)

# %% [markdown]
# Each curve is then fitted by a line in the number of pixels, $c_0 + c_1 HW$, and extended to a gigapixel.
# Where two methods' lines cross, the one that needed more memory on small images needs less beyond: the
# table lists those sizes, and says whether they lie within the measured range or only on the fitted lines.

# %%
GIGAPIXEL_SIDE = 31623  # 31623^2 = 1.0e9 pixels
lines = tradeoff.fit_lines(curves, sides)  # name: (MiB per pixel, MiB)
crossings = tradeoff.line_crossings(lines, sides, cfg["sweep_sides"], GIGAPIXEL_SIDE)
fig = tradeoff.sweep_figure(curves, sides, lines, crossings, min(cfg["sweep_sides"]), GIGAPIXEL_SIDE,
                            f"Markers measured here ({device.type}); dashed: fitted c0 + c1·HW extrapolated to 1e9 pixels")
save_figure(fig, out, "memory_vs_image_size");
markdown_table(crossings) if crossings else print("no crossover between 100 px and a gigapixel side")

# %% [markdown]
# The claim, checked: on a 500x500 image, Zoom-In needs less memory at inference than ATS, and ATS less than
# the CNN at full resolution. The fitted lines, extended to a gigapixel, say how far apart they end up.

# %%
first = cfg["sweep_sides"].index(500)
z500, a500, c500 = curves["Zoom-In lean"][first], curves["ATS-10 lean"][first], curves["CNN (s=1)"][first]
assert z500 < a500 < c500, (z500, a500, c500)
print(f"at 500x500: Zoom-In {z500:.2f} MiB < ATS-10 {a500:.2f} MiB < CNN {c500:.1f} MiB")
gig = {name: lines[name][1] + lines[name][0] * GIGAPIXEL_SIDE**2 for name in curves}
print("extrapolated to a gigapixel (MiB): " + ", ".join(f"{k} {v:,.0f}" for k, v in gig.items()))

# %% [markdown]
# ## Beyond the paper: a third level of zoom
#
# Zoom-In's conclusion names more levels as future work. `zoomin_lib.beyond.levels` adds them: a tile is
# cut into nested cells, each level's attention runs only inside the cells drawn above it, and eq. 9's
# estimator, folded level by level, stays exactly unbiased (checked by enumeration in the tests). Its
# memory model gains one term a level: level $l$ views the $M_{l-1}$ nodes drawn above it, each a cell of
# $c_{l-1}$ px at scale $s_l$, so $O(s_1^2HW + N' s_2^2 c_1^2 + M_2 s_3^2 c_2^2 + N h w)$.
#
# Here, on this chapter's geometry: tiles of 250 px chosen on $V(x, 0.1)$, cells of 50 px chosen on
# $V(\text{tile}, 0.1)$, and two locations of $V(\text{cell}, 0.5)$ per drawn cell, each a 27x27 patch. It
# reads as many patches as the two-level model with the same $N$ (half as many cells, two patches each; one
# patch fewer when $N$ is odd, as the table says), but views each drawn tile at half the two-level scale. Both are measured as above (one training step, untrained
# networks, everything held at once), and the extended model is fitted to the three-level peaks.

# %%
terms_l, meas_l = tradeoff.levels_memory_points(cfg["model_sides"], cfg["model_n"])
fit_l = mm.fit(terms_l, meas_l)
err_l = fit_l.relative_errors(terms_l, meas_l)
print(f"three levels, c0 + per-pixel bytes of s1²HW, N' s2² c1², M2 s3² c2², N hw: {fit_l.intercept:.0f} + "
      f"{', '.join(f'{c:.0f}' for c in fit_l.coef)}; max relative error {err_l.max():.2%} "
      f"over {len(meas_l)} measurements")
levels_table = tradeoff.levels_rows(cfg["model_sides"], cfg["model_n"], meas_z, meas_l)
markdown_table(levels_table, digits=3)

# %% [markdown]
# The claim, checked: the memory model with a term per level reproduces every measurement within the same
# 30 % as the two-level one. Whether a third level pays in memory is read off the last column: below 1, the
# cheaper view of each tile outweighs the extra level of cell views. Accuracy is a separate question, and an
# open one here: nothing in this chapter trains the three-level model.

# %%
assert err_l.max() < TOLERANCE, err_l.max()
ratios = [r["three / two"] for r in levels_table]
print(f"three levels against two, same N: peak ratio from {min(ratios):.2f} to {max(ratios):.2f}")

# %% [markdown]
# Last, everything measured goes to `metrics.json` in the results folder.

# %%
write_json(out / "metrics.json", {
    "profile": profile, "data": DATA_LABEL, "summary": summary, "costs": costs, "table3": table3, "table4": table4,
    "figure4": {name: results[name][0].history for name in ["Zoom-In N=10", "ATS N=10"]},
    "memory_model": {"zoomin": {"coef": fit_z.coef, "intercept": fit_z.intercept, "max_rel_error": float(err_z.max())},
                     "ats": {"coef": fit_a.coef, "intercept": fit_a.intercept, "max_rel_error": float(err_a.max())}},
    "sweep": {"sides": sides, "peak_mb": curves, "lines_mb_per_pixel": lines, "crossings": crossings,
              "gigapixel_extrapolated_mb": gig},
    "three_levels": {"coef": fit_l.coef, "intercept": fit_l.intercept, "max_rel_error": float(err_l.max()),
                     "peaks": levels_table},
})
