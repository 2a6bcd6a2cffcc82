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
# # Colon cancer: Zoom-In against one-stage ATS, a CNN and uniform sampling
#
# The task of Zoom-In sec. 4 and ATS sec. 4.3: is there at least one **epithelial** nucleus in a
# 500x500 H&E image? The methods, with the papers' settings:
#
# | method | what it sees | settings (Zoom-In sec. 4, appendix G) |
# |---|---|---|
# | **Zoom-In** | alpha over 250x250 tiles on $V(x, 0.1)$, then beta over each drawn tile at $s_2 = 0.2$, 27x27 sub-tiles at full resolution | $N = 10$, LeNet (table 5; $a$ without its final tanh, as appendix K's text has it: chapter 08 shows why), Adam lr $10^{-3}$, batch 5, contrastive after 10 epochs, $\lambda = 10^{-5}$ |
# | **ATS-10** | attention on $V(x, 0.2)$, 10 patches of 27x27 | the same $f$ and training |
# | **U-10** | 10 uniformly drawn 27x27 patches | the same $f$ |
# | **CNN** | a ResNet with 8 convolutional layers and 32 channels on the image | the same optimiser |
#
# Accuracy is the mean $\pm$ standard deviation over cross-validation folds and repetitions (the
# protocol is 10-fold cross-validation repeated five times; the `cpu` profile runs fewer folds and
# says so in the table). Cost is measured per image at inference: peak memory, FLOPs (and MACs, the
# unit of the paper's eq. 10) and time; how it is measured is in `zoomin_lib.train.profiling`.
#
# **Data.** With no `data_dir`, the notebook runs on a **synthetic stand-in** generated here in the real
# on-disk format (`data_prep.colon_cancer`): real tissue texture (scikit-image's `ihc.png`) with drawn
# nuclei, and in positives up to 30 small rings of epithelial-like nuclei (hundreds of nuclei, as in the real
# positives) crowded round one spot. It is not the CRCHistoPhenotypes data, and no accuracy below is
# comparable to the paper's. With `-p data_dir /path/to/CRCHistoPhenotypes_2016_04_28` the same
# notebook runs on the real data set.

# %% tags=["parameters"]
import os

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | gpu | paper
data_dir = None  # a CRCHistoPhenotypes_2016_04_28 folder; None: the synthetic stand-in
seed = 0
resume = False  # continue interrupted runs from their checkpoints under results/03_colon_cancer/

# %% [markdown]
# The chapter's tools: the data set's reader and its cross-validation folds, the builders of the methods, the
# training protocol and profiler, the papers' numbers, and this chapter's figures and records
# (`zoomin_lib.chapters.colon`).

# %%
import numpy as np
import torch

from data_prep import colon_cancer
from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib import builders
from zoomin_lib.train.protocol import TrainSettings, channel_stats, retest_runs, run_folds, standardize, summarize
from zoomin_lib.steps import predictor
from zoomin_lib.train.profiling import profile_methods
from zoomin_lib.chapters.colon import (annotation_rows, attention_figure, attention_on_epithelium, examples_figure,
                                      memory_ratios, run_records)
from zoomin_lib.chapters import adaptive_n
from zoomin_lib.chapters.results import (beats, difference_text, error_rows, extra_test_results, extra_test_rows,
                                         pooled_accuracy, predictor_rows, result_rows)
from zoomin_lib.infra.io import write_json
from zoomin_lib.book.paper_numbers import ATS_TABLE1_COLON, ZOOMIN_FIG5_STD, ZOOMIN_TABLE1_COLON, paper_rows
from zoomin_lib.book.explorer import attention_explorer
from zoomin_lib.book.plotting import error_bars, save_figure
from zoomin_lib.book.report import markdown_table
from zoomin_lib.chapters.standin import standin_table

# %% [markdown]
# ## Settings
#
# The `smoke` profile runs in seconds, as the tests do: two folds and one epoch check the mechanics, not the
# accuracy; the CNN sees the image at scale 0.25.

# %%
SMOKE = dict(folds=2, repetitions=1, epochs=1, warmup=0, lr=1e-3, cosine=False, cnn_epochs=1, cnn_scale=0.25,
             adaptive_ns=(10,), adaptive_repeats=3, extra_test=6, predictor_draws=2)

# %% [markdown]
# The `cpu` profile, the book's default on a 2-core CPU, runs three of the ten folds of one repetition for
# 20 epochs, not 100. With fewer epochs it takes a larger learning rate ($3 \cdot 10^{-3}$, not $10^{-3}$),
# decayed by a cosine, and starts the contrastive term after 6 epochs; the CNN trains for 6 epochs on
# $V(x, 0.5)$, as in ATS table 1. "N from the data" (a section below) compares its rule with fixed $N = 10$ and
# $N = 30$, each test image estimated 50 times. Three folds test only 30 images, too few to resolve a
# difference of the paper's size; so on the stand-in every fold's models are also tested on 300 more images
# drawn by the same generator with another seed (`extra_test`), the same 300 for every model. The check of the
# predictor (a section below) averages 5 draws per image.

# %%
CPU = dict(folds=3, repetitions=1, epochs=20, warmup=6, lr=3e-3, cosine=True, cnn_epochs=6, cnn_scale=0.5,
           adaptive_ns=(10, 30), adaptive_repeats=50, extra_test=300, predictor_draws=5)

# %% [markdown]
# The `gpu` profile runs all ten folds of one repetition, so that every one of the 100 images is tested once (not
# 30 of them, as in `cpu`): at about 90 % accuracy the standard error of a difference between two methods is then
# about 4 points, so a difference of 10 points shows, while the paper's 4 to 5 points (Zoom-In against ATS-10)
# would still be within about one standard error. It trains for 50 epochs (not the paper's 100, not `cpu`'s 20) at
# the paper's lr $10^{-3}$ with cosine decay, the contrastive term after 10 epochs as in the paper, and the CNN for
# 50 epochs at full resolution ($s = 1$, as `paper`). Estimate: on an H200 the paper's 100 epochs took 45 s
# (Zoom-In), 20 s (ATS-10) and 17 s (CNN) per fold; at 50 epochs, with U-10 besides, about a minute per fold, some
# ten minutes in all on one H100-class GPU. N from the data is compared at N = 10, 30 and 100, 100 estimates of each
# test image per rule, and every model is also tested on 300 more stand-in images (the predictor check averaging
# 20 draws). These settings are sized by
# estimate (from this chapter's `cpu` costs and one colon run timed by hand on an H200, issue 16); this project
# has not yet run them on a GPU.

# %%
GPU = dict(folds=10, repetitions=1, epochs=50, warmup=10, lr=1e-3, cosine=True, cnn_epochs=50, cnn_scale=1.0,
           adaptive_ns=(10, 30, 100), adaptive_repeats=100, extra_test=300,
           predictor_draws=20)

# %% [markdown]
# The `paper` profile is the papers' protocol: 10 folds repeated 5 times, 100 epochs at a fixed lr $10^{-3}$
# with the contrastive term after 10, and the CNN at full resolution; no extra test images (the predictor check
# retests each run on its own fold's test images, averaging 20 draws).

# %%
PAPER = dict(folds=10, repetitions=5, epochs=100, warmup=10, lr=1e-3, cosine=False, cnn_epochs=100, cnn_scale=1.0,
             adaptive_ns=(10, 30, 100), adaptive_repeats=200, extra_test=0,
             predictor_draws=20)

# %% [markdown]
# The opening picks the settings of the chosen profile, makes the chapter's results folder and seeds every
# random number generator.

# %%
cfg, out, device = open_chapter("03_colon_cancer", {"smoke": SMOKE, "cpu": CPU, "gpu": GPU, "paper": PAPER},
                                profile, seed)

# %% [markdown]
# ## The data
#
# The loader reads the distributed layout (`Classification/imgN/imgN.bmp` and one `.mat` per cell type);
# an image is positive when its epithelial `detection` is not empty. Only the image and its epithelial
# `.mat` decide the label: a missing or unreadable file of another cell type is listed below and that
# image kept without those nuclei; an image whose `.bmp` or epithelial `.mat` cannot be read is listed and
# skipped. The table says which cell types the data have.

# %%
root = data_dir if data_dir is not None else colon_cancer.default_dataset(seed=seed)
data = colon_cancer.load_colon_cancer(root)
for p in data.problems:
    print("problem:", p)
x, y = colon_cancer.to_tensors(data)  # [N, 3, 500, 500], [N]
stats = channel_stats(x)  # [1, 3, 1, 1] mean and std of each colour channel over the data set (no labels used)
x = standardize(x, stats)
DATA_LABEL = "synthetic stand-in" if data.synthetic else f"CRCHistoPhenotypes ({root})"
all_folds = colon_cancer.cross_validation_folds(data.labels, n_folds=10, repetitions=cfg["repetitions"], seed=seed)
folds = [f for f in all_folds if f.fold < cfg["folds"]]
print(f"{len(data)} images of {tuple(x.shape[-2:])}, {int(y.sum())} positive; data: {DATA_LABEL}")
print(f"runs per method: {len(folds)} ({cfg['folds']} of 10 folds x {cfg['repetitions']} repetition(s))")
annotated = data.annotated_counts()
markdown_table(annotation_rows(annotated, len(data)))

# %% [markdown]
# On the stand-in only, the extra test images: a second stand-in of this profile's `extra_test` images from another
# seed, standardised with the statistics above. No model trains on them; every fold's model is tested on all.

# %%
extra_test = None
if data.synthetic and cfg["extra_test"]:
    extra = colon_cancer.load_colon_cancer(colon_cancer.default_dataset(n_images=cfg["extra_test"], seed=seed + 1))
    xe, ye = colon_cancer.to_tensors(extra)  # [M, 3, 500, 500], [M]
    extra_test = (standardize(xe, stats), ye)
    print(f"extra test images: {len(extra)}, {int(ye.sum())} positive (synthetic stand-in, seed {seed + 1})")

# %% [markdown]
# **The real data beside the stand-in.** What a method can find depends on how large the object is where it
# looks first. The table quotes what the papers say about the real images and their epithelial nuclei beside
# the same statistics measured on the stand-in's annotations, then gives a nucleus's side in pixels at each
# method's first view (its side times the view's scale: Zoom-In's $s_1$ and $s_2$, ATS's $s$, the CNN's $s$).
# The stand-in keeps the real image size, the real positives' "hundreds" of epithelial nuclei (ATS sec. 4.3)
# and about the real number of nuclei of all types. Two rows check what a sampler meets rather than what the
# generator drew: how often all of 10 (or 50) uniformly drawn 27x27 patches miss every epithelial centre. The
# papers give no such number; what they give is the test error of ATS's uniform baselines U-10 and U-50 on the real
# images, 15.6 % and 12.4 % (ATS table 1). Our reading, not the papers': if the epithelium is what tells a positive,
# a positive none of whose patches shows it looks like a negative, so U-N errs on about that share of the images at
# least, and the stand-in's share should not be larger than U-N's error. (An earlier stand-in drew tens of nuclei in
# a 160 px square, and 10 uniform patches missed about 31 % of its images: a harder problem than the papers'.)
# The glands crowd round one spot, but that spot is now a large part of the image: the first stage still has
# tiles without epithelium to tell from tiles with it in most positives, not in all. The papers give no nucleus
# size, so the stand-in's drawn size (a property of its generator, not of its annotations) cannot be checked
# against the real one. Where a row per method puts a nucleus below a pixel or two, what that view can show is
# not a nucleus but a crowd of them: the extent row gives the size of a positive's crowd at full resolution.
# The table is shown for the stand-in only (the real detections carry no size).

# %%
VIEWS = {"Zoom-In's first stage": 0.1, "Zoom-In's second stage": 0.2, "ATS-10": 0.2, "the CNN": (cfg["cnn_scale"], 1.0)}
standin_table(colon_cancer.REAL_STATISTICS, colon_cancer.measure_stand_in(data), VIEWS) if data.synthetic else None

# %% [markdown]
# The first two positive and the first two negative images, with their annotated epithelial nuclei: a positive
# holds at least one, and the label says nothing about where.

# %%
save_figure(examples_figure(data, DATA_LABEL), out, "examples");

# %% [markdown]
# ## Training every method on every fold
#
# The four methods of the table at the top, at the papers' settings: 10 sub-tiles or patches of 27x27 for the
# sampling methods, the CNN at this profile's scale.

# %%
COMMON = dict(in_channels=3, n_classes=2)
methods = {
    "Zoom-In": lambda: builders.zoomin(**COMMON, scale1=0.1, scale2=0.2, tile_size=250, patch_size=27, n_patches=10),
    "ATS-10": lambda: builders.ats(**COMMON, scale=0.2, patch_size=27, n_patches=10),
    "U-10": lambda: builders.uniform(**COMMON, scale=0.2, patch_size=27, n_patches=10),
    f"CNN s={cfg['cnn_scale']}": lambda: builders.cnn(**COMMON, scale=cfg["cnn_scale"]),
}
CNN = f"CNN s={cfg['cnn_scale']}"

# %% [markdown]
# The sampling methods share one training: batch 5, this profile's epochs and learning rate, the contrastive
# loss from the warm-up epoch on, and the entropy regularisation of eq. 12 with $\lambda = 10^{-5}$. The CNN
# trains for its own number of epochs at lr $10^{-3}$.

# %%
sampled = TrainSettings(epochs=cfg["epochs"], batch_size=5, lr=cfg["lr"], warmup_epochs=cfg["warmup"], lam=1e-5,
                        cosine_decay=cfg["cosine"])
settings = {name: sampled for name in methods}
settings[CNN] = TrainSettings(epochs=cfg["cnn_epochs"], batch_size=5, lr=1e-3, cosine_decay=cfg["cosine"])
print(f"epochs {cfg['epochs']}, lr {cfg['lr']}{' with cosine decay' if cfg['cosine'] else ''}, contrastive from epoch "
      f"{cfg['warmup']}; CNN: {cfg['cnn_epochs']} epochs, lr 1e-3")

# %% [markdown]
# Every method is trained on every fold of the profile and tested on the fold's held-out images; each run is
# saved, and with `resume` an interrupted run continues from its checkpoint. A test fold that holds one class
# only has no AUC.

# %%
results, trained = run_folds(methods, settings, x, y, folds, seed=seed, out_dir=out, resume=resume,
                             record={"profile": profile}, extra_test=extra_test)
one_class = sum(r.auc is None for r in results["Zoom-In"])
if one_class:
    print(f"{one_class} of {len(folds)} test folds hold images of one class only: their AUC is undefined, and the "
          f"AUC below is the mean over the other {len(folds) - one_class}")

# %% [markdown]
# ## Inference cost per image
#
# One 500x500 image, batch 1, after training (first fold's models). Every sampling model reads its
# patches and tiles one at a time (`train.profiling.lean_inference`): the same result, the smallest peak.
# Zoom-In and ATS predict deterministically from their top-k locations, U-10 by sampling (a section below
# measures what the choice of predictor does to the accuracy).
# The CNN is also profiled at full resolution, the paper's setting, whatever scale it was trained at.

# %%
example = x[folds[0].test[:1]]
to_profile = dict(trained)
if cfg["cnn_scale"] != 1.0:
    to_profile["CNN s=1 (profile only)"] = builders.cnn(**COMMON, scale=1.0)
costs = profile_methods(to_profile, example, generator=torch.Generator().manual_seed(seed))
summary = {name: summarize(runs) for name, runs in results.items()}
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, device {costs['Zoom-In']['device']}, "
      f"{costs['Zoom-In']['threads']} threads; epochs {cfg['epochs']} (CNN {cfg['cnn_epochs']})")
markdown_table(result_rows(results, costs), digits=3)

# %% [markdown]
# What the papers report for the real data (GPU, their implementations). Zoom-In's "FLOPs (B)" are
# counted with its eq. 10, i.e. multiply-accumulates: compare them with the GMACs column above.

# %%
markdown_table(paper_rows(ZOOMIN_TABLE1_COLON, ATS_TABLE1_COLON))

# %% [markdown]
# The memory ratios are what carries over from the paper: they depend on what each method holds at
# once, not on the GPU.

# %%
zoom_mb = costs["Zoom-In"]["peak_memory_mb"]
ats_mb = costs["ATS-10"]["peak_memory_mb"]
cnn_full = "CNN s=1 (profile only)" if "CNN s=1 (profile only)" in costs else CNN
cnn_mb = costs[cnn_full]["peak_memory_mb"]
ratios = memory_ratios(zoom_mb, ats_mb, cnn_mb)
markdown_table(ratios)

# %% [markdown]
# The claim checked here: at 500x500, Zoom-In holds less memory at once than ATS-10, and ATS-10 less than the
# CNN at full resolution.

# %%
assert zoom_mb < ats_mb < cnn_mb, f"peak memory at 500x500 should order Zoom-In < ATS < CNN, got {zoom_mb}, {ats_mb}, {cnn_mb}"
print(f"Peak inference memory at 500x500: Zoom-In {zoom_mb:.2f} MiB < ATS-10 {ats_mb:.2f} MiB < CNN {cnn_mb:.1f} MiB")

# %% [markdown]
# ## Accuracy with its spread (figure 5)
#
# The error bars are one standard deviation over the runs of this profile; the paper's figure 5
# reports its standard deviations over five repetitions on the real data (printed below).

# %%
fig = error_bars({n: 100 * s["accuracy_mean"] for n, s in summary.items()},
                 {n: 100 * s["accuracy_std"] for n, s in summary.items()},
                 "test accuracy (%)", f"measured here: {DATA_LABEL}, {summary['Zoom-In']['runs']} runs per method")
save_figure(fig, out, "figure5_error_bars")
print("paper reports (" + ZOOMIN_FIG5_STD["source"] + "), accuracy std in %: "
      + ", ".join(f"{k} {v}" for k, v in ZOOMIN_FIG5_STD.items() if k != "source"))

# %% [markdown]
# On the stand-in, the same models on the extra test images: each method's accuracy pooled over its folds' models
# (all tested on the same images), with the binomial standard error of that many images.

# %%
extra_rows = extra_test_rows(results)
print(f"Measured here: {DATA_LABEL} (extra images, seed {seed + 1}), profile {profile!r}" if extra_rows else
      "no extra test images (real data, or this profile has none)")
markdown_table(extra_rows, digits=3) if extra_rows else None

# %% [markdown]
# Read the per-fold column first. The standard error is binomial: it counts only which test images happened to be
# drawn. Each fold's model is tested on the same images, so the spread between folds is the other noise, that of
# training (which images a model trained on, and where its attention settled); where it is larger than the standard
# error, the differences between methods on this stand-in are set by training runs as much as by test images, and
# resolving a paper-sized difference takes more runs as well as more images (the `gpu` profile trains all ten folds).

# %% [markdown]
# **The paper's accuracy claim, on the stand-in.** Zoom-In's table 1 has Zoom-In at 95.0 %, ATS-10 at 90.7 % and
# the CNN at 90.8 % on the real data: Zoom-In at least as accurate as ATS-10, at a fraction of the memory (checked
# above). The check here is the weaker half that this profile's test images can decide: ATS-10 is **not** better
# than Zoom-In by more than two standard errors of the difference, pooled over every test image of the runs. The
# lines below also say whether the test set is large enough for a difference of the paper's size (4.3 points) to
# exceed its standard error; with the folds' 30 test images it is not (at 90 % accuracy that takes about 100). On
# the stand-in the same models are also tested on the extra images; there every fold's model saw the same images,
# so they count once in the standard error (`pooled_accuracy(shared_test_set=True)`), and the claim is checked on
# them. These runs predict with top-k; a section below checks the same claims predicting from draws, as training does.

# %%
paper_acc = {k: float(v["accuracy"].split()[0]) for k, v in ZOOMIN_TABLE1_COLON["rows"].items()}
extra_results = extra_test_results(results)
for label, runs, shared in (("folds' test images", results, False), ("extra test images", extra_results, True)):
    if runs:
        print(f"{label}:")
        for other in ("ATS-10", CNN):
            print("  " + difference_text("Zoom-In", runs["Zoom-In"], other, runs[other],
                                         paper_acc["Zoom-In"] - paper_acc[other.split(" s=")[0]], shared))
checked, shared = (extra_results, True) if extra_results else (results, False)
(zoom_acc, n_zoom), (ats_acc, n_ats) = (pooled_accuracy(checked[k], shared) for k in ("Zoom-In", "ATS-10"))
if profile != "smoke":
    assert not beats(ats_acc, n_ats, zoom_acc, n_zoom, z=2.0), \
        f"ATS-10 {ats_acc:.3f} beats Zoom-In {zoom_acc:.3f} by more than two standard errors"

# %% [markdown]
# ## What the attention finds, and where the errors lie
#
# ATS's table 1 puts the learned samplers above uniform sampling on the real data: 9.3 % test error for ATS-10
# against 15.6 % for U-10 ("attention sampling learns to focus only on informative parts of the image"). Two
# measurements say what the learned attention does here. First, where it lands on positive test images: its mass on
# the locations whose 27x27 patch (or sub-tile) holds an annotated epithelial nucleus's centre, that region's share
# of the map (the mass a uniform attention puts there, as U-10's does), their ratio, and how often the map's highest
# location lies in it (`attention.attention_on_objects`; Zoom-In's map is $\alpha_c \beta^c_{c'}$ over the
# sub-tiles of every tile, ATS's its $\alpha$). Every run's model is rebuilt from its checkpoint
# (`protocol.load_run_model`) and looks at the same positives: up to 50 of the extra test images where there are
# any, else of the first fold's test images.

# %%
if extra_test is not None:
    cells, images, labels = extra.cells, extra_test[0], extra_test[1].tolist()
else:
    cells, images, labels = [data.cells[i] for i in folds[0].test], x[folds[0].test], y[folds[0].test].tolist()
positives = [i for i, label in enumerate(labels) if label == 1][:50]
on_epithelium = attention_on_epithelium({k: methods[k] for k in ("Zoom-In", "ATS-10")}, out, folds, images[positives],
                                        [cells[i] for i in positives], device)
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, every run's model, {len(positives)} positive test images")
markdown_table(on_epithelium, digits=3) if on_epithelium else None

# %% [markdown]
# Second, where each run's errors lie on the test images of the claim above (the extra ones on the stand-in):
# false positives (a negative called positive) and false negatives, beside the run's AUC (how well its scores rank
# the images, whatever the threshold) and its last epoch's training cross-entropy ($\ln 2 \approx 0.693$: nothing
# learned; near 0: the 90 training images are fitted). How to read them together: a run whose attention is on the
# epithelium, whose AUC is near 1 and whose errors are false positives ranks the images well and errs at the 0.5
# threshold, calling the negatives that score highest positive; a run at $\ln 2$ with AUC near 0.5 learned
# nothing. The lines below give each method's sums and the comparison ATS's table 1 makes; the next section
# measures where such false positives come from.

# %%
errors = error_rows(results, extra=extra_test is not None)
display(markdown_table(errors, digits=3))
for name in results:
    mine = [r for r in errors if r["method"] == name]
    seen = [r["mass / uniform"] for r in on_epithelium if r["method"] == name]
    print(f"{name}: {sum(r['false positives'] for r in mine)} false positives and "
          f"{sum(r['false negatives'] for r in mine)} false negatives over {len(mine)} runs; AUC "
          + ", ".join("-" if r["AUC"] is None else f"{r['AUC']:.3f}" for r in mine)
          + (f"; attention on the epithelium " + ", ".join(f"{v:.2f}" for v in seen) + " x uniform" if seen else ""))
ats_error = {k: float(v["test_error"].split()[0]) for k, v in ATS_TABLE1_COLON["rows"].items()}
print(difference_text("ATS-10", checked["ATS-10"], "U-10", checked["U-10"],
                      100 * (ats_error["U-10"] - ats_error["ATS-10"]), shared))

# %% [markdown]
# The check, in the `cpu` profile on the stand-in: Zoom-In's attention has found the epithelium, with more than
# twice the uniform mass on it on average over the runs (what ATS's figure 4 and Zoom-In's figure 6 show: the
# attention localises the informative parts without per-patch labels). Whether the learned samplers then beat U-10,
# as in ATS's table 1, is printed above, not asserted: the tables above show which runs learned and where their
# errors are.

# %%
zoom_seen = [r["mass / uniform"] for r in on_epithelium if r["method"] == "Zoom-In"]
if profile == "cpu" and data.synthetic:
    assert np.mean(zoom_seen) > 2.0, f"Zoom-In's attention did not find the epithelium: {zoom_seen} x uniform"

# %% [markdown]
# ## Where the false positives come from: the predictor
#
# Every run above was tested with the predictor the chapter fixed before any training: Zoom-In and ATS predict
# deterministically from their top-k locations (the $N$ of highest attention, their features averaged with the
# renormalised weights), U-10 from one uniform draw. Training never took its loss on that prediction. The loss of
# eq. 12 is taken on one prediction from $N$ locations *drawn* from the attention, through the estimator of the
# full model $\sum_i a_i f(x_i)$ (Zoom-In eq. 5, ATS eq. 19) that chapters 01 and 02 check is unbiased (drawn with
# replacement, or without it with ATS's weights): that is the prediction the classifier learned to read. The
# measurement: the same runs, rebuilt from their checkpoints, on the same test images, with only the predictor
# changed (`protocol.retest_runs`):
#
# - **as tested above**: each method's own predictor (top-k; U-10's one uniform draw);
# - **one draw**: $N$ locations drawn from the attention, the prediction training takes its loss on
#   (`mode="sample"`);
# - **mean of the draws**: the class probabilities of this profile's number of independent draws, averaged
#   (`steps.predictor(draws=)`): the expected one-draw prediction, estimated with less variance than one draw.
#
# The full model itself, which reads every location of the image, is too slow on this CPU for every run on
# these images; the mean of the draws is not the full model either (a mean of probabilities is not the
# classifier of the mean feature), but it is the average of what training optimised.

# %%
draws, mean_label = cfg["predictor_draws"], f"mean of {cfg['predictor_draws']} draws"
samplers = {k: methods[k] for k in ("Zoom-In", "ATS-10")}
# on the stand-in every run on the shared extra images; on the real data each run on its own fold's test images
retest_x, retest_y = extra_test if shared else (x, y)
by_predictor = {"as tested above": {k: checked[k] for k in (*samplers, "U-10")}}
by_predictor["one draw"] = retest_runs(samplers, out, folds, retest_x, retest_y,
                                       predictor("sample", torch.Generator(device).manual_seed(seed)), device,
                                       own_fold=not shared)
by_predictor[mean_label] = retest_runs(
    {**samplers, "U-10": methods["U-10"]}, out, folds, retest_x, retest_y,
    predictor("sample", torch.Generator(device).manual_seed(seed), draws=draws), device, own_fold=not shared)
predictor_table = predictor_rows(by_predictor, shared)
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, every run's model on "
      + ("the extra test images" if shared else "its fold's test images"))
display(markdown_table(predictor_table, digits=3))

# %% [markdown]
# The papers' comparisons again, each pair with the same kind of predictor: ATS-10 against U-10 as ATS's table 1
# makes it (one draw each; and the mean of the draws), Zoom-In against ATS-10, and Zoom-In against the CNN's one
# deterministic pass.

# %%
one_draw = {**by_predictor["one draw"], "U-10": checked["U-10"]}
comparisons = [("ATS-10", "U-10", one_draw, "one draw"), ("ATS-10", "U-10", by_predictor[mean_label], mean_label),
               ("Zoom-In", "ATS-10", one_draw, "one draw"), ("Zoom-In", "ATS-10", by_predictor[mean_label], mean_label)]
paper_gap = {("ATS-10", "U-10"): 100 * (ats_error["U-10"] - ats_error["ATS-10"]),
             ("Zoom-In", "ATS-10"): paper_acc["Zoom-In"] - paper_acc["ATS-10"]}
for a, b, runs, label in comparisons:
    print(f"{label}: " + difference_text(a, runs[a], b, runs[b], paper_gap[(a, b)], shared))
print(f"{mean_label} against the CNN's one pass: " + difference_text(
    "Zoom-In", by_predictor[mean_label]["Zoom-In"], CNN, checked[CNN], paper_acc["Zoom-In"] - paper_acc["CNN"], shared))

# %% [markdown]
# The check, in the `cpu` profile on the stand-in, for Zoom-In, the method of this chapter: with the mean of the
# draws it makes at most half the false positives of top-k, summed over the runs (when top-k made at least 10:
# fewer are too few to halve reliably), and its accuracy does not fall below top-k's by more than two standard
# errors (so the false positives are not traded for false negatives); and with that predictor ATS-10 does not beat
# Zoom-In by more than two standard errors. The same for ATS-10, and whether ATS-10 then beats U-10 as in ATS's
# table 1, are printed, not asserted: they depend on whether every ATS-10 run learned, which the error table above
# shows run by run and which differs between machines (their floating-point rounding leads training along
# different paths).

# %%
count = {(r["predictor"], r["method"]): (r["false positives"], r["false negatives"]) for r in predictor_table}
for name in samplers:
    print(f"{name}, false positives / false negatives summed over {len(folds)} runs: "
          + ", ".join(f"{label} {count[(label, name)][0]} / {count[(label, name)][1]}" for label in by_predictor))
if profile == "cpu" and data.synthetic:
    (top_fp, _), (mean_fp, _) = count[("as tested above", "Zoom-In")], count[(mean_label, "Zoom-In")]
    if top_fp >= 10:
        assert 2 * mean_fp <= top_fp, f"Zoom-In: {mean_fp} false positives with the {mean_label}, {top_fp} with top-k"
    (z_acc, z_n), (t_acc, t_n), (a_acc, a_n) = (pooled_accuracy(by_predictor[p][k], shared) for p, k in (
        (mean_label, "Zoom-In"), ("as tested above", "Zoom-In"), (mean_label, "ATS-10")))
    assert not beats(t_acc, t_n, z_acc, z_n, z=2.0), f"Zoom-In: top-k {t_acc:.3f} beats the {mean_label} {z_acc:.3f}"
    assert not beats(a_acc, a_n, z_acc, z_n, z=2.0), f"ATS-10 {a_acc:.3f} beats Zoom-In {z_acc:.3f} ({mean_label})"

# %% [markdown]
# **Reading.** The weights and the images are the same in every row; only the predictor differs. So where a run's
# false positives vanish when it predicts from draws, without false negatives taking their place (the table's last
# column), they came not from what the run learned but from how it was read: on the stand-in, its attention and its
# classifier had learned to tell the images apart, and top-k asked the classifier a question training never put to
# it. Our reading of why top-k errs on negatives, not a measured cause: on a negative image no epithelium holds the
# attention, so top-k collects the $N$ locations that look most like epithelium, and their average is a feature the
# classifier never met on a negative in training, where the negatives' features came from locations drawn across
# the whole attention. We found no statement in either paper of which predictor its tables use. The book keeps top-k
# as the protocol fixed before any run, and reports the other predictors beside it.

# %% [markdown]
# ## Beyond the paper: N from the data
#
# Zoom-In reads the same $N$ sub-tiles of every image; its limitations section names the fixed $N$. Chapter 01
# proves that a rule may choose $N$ per image from the estimator's own variance and stay exactly unbiased:
# $P$ pilot rounds of $r$ two-stage draws (each an estimate of eq. 9) estimate the per-round variance $s^2$ of
# the logit margin $\ell_1 - \ell_0$; the image then gets $M = \mathrm{clip}(\lceil s^2 / \mathrm{tol}^2 \rceil, 1,
# B - P)$ fresh rounds, and the estimate is the mean of the fresh rounds only (the pilot only chooses $M$;
# averaging it in would bias the estimate). An image reads $N = r (P + M)$ sub-tiles. Here the first fold's
# trained Zoom-In uses the rule at inference (`zoomin_lib.beyond.adaptive.adaptive_zoomin`), with rounds of
# $r = 2$, $P = 3$, at most $3N$ sub-tiles ($B = 3N / r$ rounds), and tol set from the test images' pilots so that the
# **average $N$, pilot included, is at most the fixed $N$** it is compared with: equal average cost. Each test
# image is estimated many times by both rules (from one $\alpha$), so that accuracy and AUC are means over
# the repeats and each image's margin has a measured spread.
#
# **The claim tested.** The rule puts $N$ where the estimate varies: positive images, whose epithelial rings
# make some sub-tiles heavy and unlike the rest, should get more than negatives. What it cannot do is
# lower the *average* variance at equal cost: with $M_b \propto \sigma_b^2$ the mean of $\sigma_b^2 / M_b$ is
# that of a fixed $N$ before the pilot is paid, and the pilot, which the estimate must discard, is paid by
# every image. So the expectation is that adaptive $N$ does **not** improve accuracy here; the measurement says
# by how much it costs.

# %%
test_idx = folds[0].test
adaptive_runs = [adaptive_n.compare_on_images(
    trained["Zoom-In"], x[test_idx], y[test_idx].tolist(), [data.ids[i] for i in test_idx], n, round_size=2, pilot=3,
    budget=3 * n // 2, repeats=cfg["adaptive_repeats"], seed=seed) for n in cfg["adaptive_ns"]]
adaptive_table = [row for c in adaptive_runs for row in adaptive_n.method_rows(c)]
print(f"first fold's {len(test_idx)} test images ({DATA_LABEL}), {cfg['adaptive_repeats']} estimates of each per rule; "
      f"both rules took {sum(c.cpu_seconds for c in adaptive_runs):.1f} s of CPU; tol: "
      + ", ".join(f"{c.tol:.3g} (N = {c.n})" for c in adaptive_runs))
markdown_table(adaptive_table, digits=3)

# %% [markdown]
# Where the rule put its sub-tiles, by class, at each $N$; then, at the largest $N$, the histogram of $N$ over
# every estimate and each image's spread of the margin under both rules (below the diagonal: the adaptive rule
# is the more precise on that image).

# %%
classes = ["negative", "positive"]
display(markdown_table([{"fixed N": c.n, **row} for c in adaptive_runs for row in adaptive_n.class_rows(c, classes)],
                     digits=3))
save_figure(adaptive_n.n_figure(adaptive_runs[-1], classes, f"N from the data at the mean cost of N = "
                                f"{adaptive_runs[-1].n} ({DATA_LABEL})"), out, "adaptive_n");

# %% [markdown]
# The claims, checked in the `cpu` profile (the smoke profile's one-epoch model only runs the code): the
# average cost is the fixed $N$ (to within one round); positive images get more sub-tiles than negatives;
# and the rule does not help: its margins vary more than fixed $N$'s on average, and its accuracy is not
# above fixed $N$'s beyond two standard errors of the repeats.

# %%
for c in adaptive_runs:
    rows, cost = adaptive_n.method_rows(c), c.mean_patches()
    assert c.n - c.round_size <= cost <= c.n, f"the adaptive rule's mean cost {cost} should be N = {c.n}"
    by_class = [c.mean_patches(label=k) for k in (0, 1)]
    print(f"N = {c.n}: adaptive N {by_class[0]:.1f} on negatives, {by_class[1]:.1f} on positives; margin variance "
          f"{rows[1]['margin variance (mean over images)']:.3g} (adaptive) vs {rows[0]['margin variance (mean over images)']:.3g}")
    if profile == "cpu":
        assert by_class[1] > by_class[0], f"positives should get more sub-tiles than negatives: {by_class}"
        assert rows[1]["margin variance (mean over images)"] > rows[0]["margin variance (mean over images)"], rows
        assert rows[1]["accuracy %"] <= rows[0]["accuracy %"] + 2 * rows[1]["s.e. (repeats)"], rows

# %% [markdown]
# ## Where the models look (ATS figure 4, Zoom-In figure 6a)
#
# For positive test images of the first fold: the image with its epithelial nuclei (cyan), Zoom-In's
# attention $\alpha_c \beta^c_{c'}$ over the sub-tile grid with its top-10 sub-tiles (green boxes), and
# ATS's attention over $V(x, 0.2)$ with its top-10 patches. Maps are min-max normalised, as in ATS fig. 4.

# %%
test_pos = [int(i) for i in folds[0].test if data.labels[i] == 1][:3]
if not test_pos:  # a small data set may leave the first fold's test set without a positive
    test_pos = [int(i) for i in np.flatnonzero(data.labels == 1)[:1]]
    print(f"no positive test image in the first fold: the attention is shown on training image {data.ids[test_pos[0]]}")
fig = attention_figure(trained["Zoom-In"], trained["ATS-10"], data, x, test_pos, DATA_LABEL)
save_figure(fig, out, "attention");

# %% [markdown]
# ### Explore it yourself
#
# The attention explorer (`zoomin_lib.book.explorer.attention_explorer`) shows one trained model on one
# image: $\alpha$ over the low-resolution view with the tiles the prediction used, $\beta$ inside one of
# them with its sub-tiles, the $N$ patches as read at full resolution, and the prediction. Run live
# (`jupyter lab notebooks/`, then this chapter), it has controls to pick the image, the method, top-k or
# sampling, $N$ and which used tile to open. The printed book shows its snapshot: each method on the first
# of these test images, at its own $N$.

# %%
attention_explorer({name: trained[name] for name in ("Zoom-In", "ATS-10", "U-10")},
                   {f"{data.ids[i]} (label {data.labels[i]})": x[i] for i in test_pos},
                   classes=["no epithelial nuclei", "epithelial nuclei"], save_to=(out, "explorer"))

# %% [markdown]
# Everything measured goes to the chapter's `metrics.json`: the data and their problems, the accuracy summary,
# the costs, every run's accuracy and AUC, the memory ratios and the accuracy per predictor.

# %%
write_json(out / "metrics.json", {
    "profile": profile, "data": DATA_LABEL, "seed": seed, "folds": cfg["folds"], "repetitions": cfg["repetitions"],
    "problems": data.problems, "annotated_images_per_cell_type": annotated, "summary": summary, "costs": costs,
    "runs": run_records(results),
    "extra_test": {"images": cfg["extra_test"] if extra_test is not None else 0, "methods": extra_rows},
    "memory_ratios": ratios, "predictors": predictor_table,
    "adaptive_n": {"methods": adaptive_table, "tol": [c.tol for c in adaptive_runs],
                   "cpu_seconds": sum(c.cpu_seconds for c in adaptive_runs)},
})
print("wrote", out / "metrics.json")
