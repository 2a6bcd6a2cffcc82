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
# # NeedleCamelyon: a metastasis covering 0.1-1 % of a megapixel crop
#
# Zoom-In sec. 4 ("NeedleCamelyon") and appendix D, after Pawlowski et al.'s *Needles in haystacks* [37]:
# 1024x1024 crops of Camelyon16 slides, positive when they hold a whole metastasis covering 0.1-1 % of the
# crop, negative when cut from tissue of a normal slide. At $s = 0.25$ a metastasis of 0.1 % is a spot of
# about 8x8 pixels; a method must find it at low resolution and look at it closely. The methods, with the
# paper's settings:
#
# | method | what it sees | settings (Zoom-In sec. 4, appendices F, G) |
# |---|---|---|
# | **Zoom-In** (LeNet, table 5) and **Zoom-In (Res)** (ResNet16, table 6) | $\alpha$ over 256x256 tiles on $V(x, 0.25)$, $\beta$ over each drawn tile at $s_2 = 0.5$, $N = 30$ sub-tiles of 32x32 at full resolution | Adam lr $10^{-4}$, batch 5, 150 epochs, contrastive after 10 epochs, $\lambda = 10^{-5}$ |
# | **ATS-30** | attention on $V(x, 0.5)$ ($s = s_2$), 30 patches of 32x32 | the same $f$ and training |
# | **BagNet** | a CNN whose every output sees one 33x33 patch; the local class logits are averaged over the crop | the network of [37] (`zoomin_lib.chapters.bagnet`) on the full-resolution crop |
#
# [37] used BagNets (Brendel & Bethge) for this task because their evidence is local: a small metastasis
# decides the logits of the few patches that contain it, whatever surrounds them. The price is that the
# network runs over every pixel of the crop at full resolution. The
# paper gives no configuration for its BagNet; `zoomin_lib.chapters.bagnet.BagNet` defaults to the BagNet-33 of [37]'s
# code (ResNet-50 bottlenecks (3, 4, 6, 3), width 64, stage strides (2, 2, 2, 1), one 3x3 block per stage).
#
# Cost is measured per crop at inference: peak memory, FLOPs (and MACs, the unit of the paper's eq. 10) and
# time; how, is in `zoomin_lib.train.profiling`.
#
# **Data.** With no `data_dir`, the crops are cut by `data_prep.needle_camelyon` with the recipe of
# appendix D from a **synthetic stand-in** for Camelyon16 (`data_prep.synthetic_slides`: real tissue texture
# from scikit-image's `ihc.png` on empty glass, with small star-shaped "metastases" of a denser, darker
# texture). It is not Camelyon16: its "metastases" are drawn polygons, not tumour, and no accuracy below is
# comparable with the paper's. With `-p data_dir /path/to/CAMELYON16` (the
# distributed layout: `training/normal`, `training/tumor`, `training/lesion_annotations`, `testing/images`,
# `testing/reference.csv`, `testing/lesion_annotations`) the same notebook cuts and uses the real crops; the
# `paper` profile needs it (no stand-in is generated at the paper's scale).

# %% tags=["parameters"]
import os

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | gpu | paper
data_dir = None  # a Camelyon16-layout folder (real data); None: the synthetic stand-in
seed = 0
resume = False  # continue interrupted runs from their checkpoints under results/05_needle_camelyon/

# %% [markdown]
# The chapter's tools: the crops (`data_prep.needle_camelyon`), the methods and their training
# (`zoomin_lib.builders`, `zoomin_lib.train`), this chapter's helpers (`zoomin_lib.chapters.needles`), the
# paper's numbers, and the book's tables and figures.

# %%
import time

import numpy as np
import torch
from torch.nn import functional as F

from data_prep.needle_camelyon import load_needle_camelyon, needle_camelyon
from zoomin_lib.book.paper_numbers import ZOOMIN_TABLE1_NEEDLE, ZOOMIN_TABLE4_NEEDLE, paper_rows
from zoomin_lib.book.plotting import plot_curves, save_figure, zoom_grid
from zoomin_lib.book.report import markdown_table
from zoomin_lib.chapters import needles
from zoomin_lib.chapters.attention import attention_on_objects, zoom_picks
from zoomin_lib.chapters.bagnet import bagnet_macs
from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib.chapters.results import above_majority, auc_standard_error, constant_loss, result_rows, training_curves
from zoomin_lib.infra.io import write_json
from zoomin_lib.train.fingerprint import fingerprint
from zoomin_lib.train.protocol import lazy_batches
from zoomin_lib.train.profiling import profile_methods

# %% [markdown]
# ## Settings
#
# **smoke** checks the mechanics in seconds: 256x256 crops (`needle_camelyon`'s smoke profile), a few of them,
# one epoch; the tiles and sub-tiles are scaled down with the crop, and $N = 5$.

# %%
SMOKE = dict(max_positives=(12, 4, 6), in_memory=True, tile=64, patch=16, n_patches=5, batch=4, epochs=1,
             warmup=0, lr=1e-3, cosine=False, bagnet=dict(scale=1.0, width=4, blocks=(1, 1, 1, 1)),
             bagnet_epochs=1, timing=0.01, contrastive=dict(epochs=1, cosine=False))

# %% [markdown]
# **cpu**, the book's default, fits a 2-core CPU (15 minutes for the chapter). It keeps the paper's crops
# (1024x1024), its Zoom-In and ATS architectures and $N = 30$, but trains on 60 crops and tests on 100 (not 6000
# and 2000), for 3 epochs (not 150) at lr $10^{-3}$ with cosine decay (not a fixed $10^{-4}$), with the
# contrastive loss in the last (from epoch 2, counting from 0). A crop-epoch of the four methods together costs
# over a second on one core, Zoom-In (Res) half of it, so the training crops and epochs are what this budget
# buys; the test crops are kept, for the accuracy's resolution. Its BagNet-33 is narrow (width 8, one block per
# stage, not width 64 and blocks (3, 4, 6, 3)) and sees $V(x, 0.25)$; it is profiled at full resolution too. The
# study of the contrastive term trains Zoom-In twice more, with and without it, for 6 epochs at the constant lr
# $10^{-3}$ (no decay; its first two without the term, as above), long enough to see whether the attention moves.

# %%
CPU = dict(max_positives=(30, 10, 50), in_memory=True, tile=256, patch=32, n_patches=30, batch=5, epochs=3,
           warmup=2, lr=1e-3, cosine=True, bagnet=dict(scale=0.25, width=8, blocks=(1, 1, 1, 1)),
           bagnet_epochs=3, timing=0.3, contrastive=dict(epochs=6, cosine=False))

# %% [markdown]
# **gpu** is for one H100-class GPU: crops cut from the larger gpu stand-in (`needle_camelyon`'s gpu profile, the
# same recipe), up to 300 positive crops to train on and 200 to test on (and as many negatives; not 6000 and 2000),
# the paper's architectures, $N = 30$ and batches of 5, 20 epochs (not 150) at lr $10^{-3}$ with cosine decay and
# the contrastive loss from epoch 5, and a wider BagNet-33 (width 16) on $V(x, 0.5)$, trained as long; the study of
# the contrastive term trains Zoom-In as the others, with and without it. These
# settings are sized by estimate (from this chapter's `cpu` costs and one colon run timed by hand on an H200, issue
# 16); this project has not yet run them on a GPU.

# %%
GPU = dict(max_positives=(300, 60, 200), in_memory=True, tile=256, patch=32, n_patches=30, batch=5, epochs=20,
           warmup=5, lr=1e-3, cosine=True, bagnet=dict(scale=0.5, width=16, blocks=(1, 1, 1, 1)),
           bagnet_epochs=20, timing=0.3, contrastive=dict(epochs=20, cosine=True))

# %% [markdown]
# **paper** is the paper's setting, on the real data only: 3000 / 1000 / 1000 positive crops and as many
# negatives, 150 epochs at lr $10^{-4}$, batches of 5, and the paper-sized BagNet-33 on the full-resolution
# crop; the crops are read from disk batch by batch. The study of the contrastive term trains Zoom-In as the
# others, 150 epochs, with and without it, in the setting of table 4's NeedleCamelyon rows ($\lambda = 10^{-5}$,
# $N = 30$; one seed).

# %%
PAPER = dict(max_positives=None, in_memory=False, tile=256, patch=32, n_patches=30, batch=5, epochs=150,
             warmup=10, lr=1e-4, cosine=False, bagnet=dict(scale=1.0), bagnet_epochs=150, timing=0.3,
             contrastive=dict(epochs=150, cosine=False))

# %% [markdown]
# The chapter opens with the profile's settings: it checks the profile, makes the results folder and seeds
# everything.

# %%
cfg, out, device = open_chapter("05_needle_camelyon", {"smoke": SMOKE, "cpu": CPU, "gpu": GPU, "paper": PAPER},
                                profile, seed)

# %% [markdown]
# ## The data
#
# `needle_camelyon` cuts the crops once and caches them under `data/needle_camelyon/` (positives: every
# valid position of a whole metastasis whose ratio lies in [0.1, 1] %, up to 50 per metastasis, split
# 60:20:20 by metastasis; negatives: crops of normal slides with at least 50 % tissue, as many as the
# positives, split by slide). The validation split is cut as in appendix D but not used here: nothing is
# tuned on it.

# %%
start = time.perf_counter()
caps = {} if cfg["max_positives"] is None else dict(max_positives=cfg["max_positives"])
root = needle_camelyon(data_dir, profile, progress=False, **caps)
prep_seconds = time.perf_counter() - start
train_set, test_set = load_needle_camelyon(root, "train"), load_needle_camelyon(root, "test")
DATA_LABEL = "synthetic stand-in" if train_set.synthetic else f"NeedleCamelyon from Camelyon16 ({data_dir})"
side = int(train_set.rows[0]["size"])
print(f"data: {DATA_LABEL}; crops {side}x{side}; train {len(train_set)} ({int(train_set.labels.sum())} positive), "
      f"test {len(test_set)} ({int(test_set.labels.sum())} positive); ready in {prep_seconds:.1f} s ({root})")
# what the checkpoints record as their data: other crops are not resumed from them
DATA_ID = fingerprint([r["file"] for r in train_set.rows], train_set.labels, [r["file"] for r in test_set.rows],
                      test_set.labels)

# %% [markdown]
# **The real data beside the stand-in.** The table quotes the paper's NeedleCamelyon beside the same statistics
# measured on the training split's index (crop sizes and each positive's metastasis-to-crop ratio; a metastasis's
# side is the square root of its area), then a metastasis's side in pixels at each method's first view: Zoom-In's
# $s_1$ and $s_2$, ATS's $s$ and the BagNet's (this profile's for the crops here, the paper's full resolution for the
# real data). The recipe keeps the paper's ratio range, so a metastasis covers the same fraction of its crop; the
# `cpu` profile keeps the paper's 1024x1024 crops, and with them the metastasis's size in pixels, while a profile
# that cuts smaller crops for its budget (`smoke`) has, at the same ratio, smaller metastases. There are far fewer
# crops than the paper's, for the budget (see the settings).

# %%
import data_prep.needle_camelyon as needle_camelyon_data
from zoomin_lib.chapters.standin import standin_table

VIEWS = {"Zoom-In's first stage": 0.25, "Zoom-In's second stage": 0.5, "ATS": 0.5,
         "the BagNet": (cfg["bagnet"]["scale"], 1.0)}
standin_table(needle_camelyon_data.REAL_STATISTICS, needle_camelyon_data.measure_stand_in(train_set), VIEWS, data_label=None if train_set.synthetic else DATA_LABEL)

# %% [markdown]
# The models see standardized crops: each channel shifted and scaled by the statistics of about 20 training
# crops (no labels used). The loaders read a batch of crops by their indices, from memory where the profile
# holds the crops there.

# %%
stats = needles.crop_stats(train_set)
load_train, load_test = (needles.crop_loader(train_set, cfg["in_memory"], stats),
                         needles.crop_loader(test_set, cfg["in_memory"], stats))

# %% [markdown]
# Four training crops: two positives, from two different metastases, with the metastasis outlined, and two
# negatives, cut from normal slides.

# %%
fig = needles.examples_figure(train_set, f"Training crops; cyan: the annotated metastasis ({DATA_LABEL})")
save_figure(fig, out, "examples");

# %% [markdown]
# ## Training
#
# Every method trains on the same mini-batches (one seed) and is tested on the test split. Zoom-In and
# ATS-30 predict deterministically from their top-$N$ locations; the BagNet is a plain CNN.

# %%
N, P, TILE = cfg["n_patches"], cfg["patch"], cfg["tile"]
BAGNET = needles.bagnet_name(cfg["bagnet"])
methods = needles.method_factories(cfg)  # Zoom-In, Zoom-In (Res), ATS-N, the BagNet
settings = needles.train_settings(cfg, list(methods))
print(f"N = {N} sub-tiles of {P}x{P}, tiles {TILE}x{TILE}, batch {cfg['batch']}, {cfg['epochs']} epochs, lr {cfg['lr']}"
      f"{' with cosine decay' if cfg['cosine'] else ''}, contrastive from epoch {cfg['warmup']}; {BAGNET}: "
      f"{cfg['bagnet_epochs']} epochs")

# %% [markdown]
# Each method is trained, then tested on the test split; a line each gives its test accuracy and AUC, and the
# checkpoints record the profile and the data, so that a resumed run continues only the same experiment.

# %%
results, trained, train_seconds = needles.train_methods(
    methods, settings, load_train, load_test, train_set.labels, test_set.labels, batch=cfg["batch"], seed=seed,
    out=out, resume=resume, record={"profile": profile, "data": DATA_ID})

# %% [markdown]
# ## Accuracy and inference cost
#
# Cost is measured on one test crop, batch 1, each sampling model reading its patches and tiles one at a time
# (`zoomin_lib.train.profiling.lean_inference`). When this profile trains the BagNet on a reduced view, the same network is
# also profiled on the full-resolution crop, the paper's setting.

# %%
example = load_test([0])  # [1, 3, S, S]
to_profile = dict(trained)
if cfg["bagnet"]["scale"] != 1:
    to_profile[needles.FULL_BAGNET] = needles.full_resolution_bagnet(cfg["bagnet"])
costs = profile_methods(to_profile, example, generator=torch.Generator().manual_seed(seed), min_run_time=cfg["timing"])
PAPER_RUN, PAPER_SIDE = needles.PAPER_RUN, needles.PAPER_SIDE
print(f"Measured here: {DATA_LABEL}, profile {profile!r}; trained on {len(train_set)} crops of {side}x{side} and tested on "
      f"{len(test_set)} (paper: {PAPER_RUN['train']} and {PAPER_RUN['test']} of {PAPER_SIDE}x{PAPER_SIDE}), {cfg['epochs']} "
      f"epochs at lr {cfg['lr']} (paper: {PAPER_RUN['epochs']} at {PAPER_RUN['lr']}), BagNet {cfg['bagnet']} (paper: "
      f"[37]'s, on the full crop); cost on one test crop, device {costs['Zoom-In']['device']}, "
      f"{costs['Zoom-In']['threads']} thread(s)")
markdown_table(result_rows(results, costs), digits=3)

# %% [markdown]
# How far did training get? The test split is balanced, so always answering one class is right half the time;
# a method has learned something about metastases only above that. The AUC says more than the accuracy of a
# model that answers one class: below 0.5, its scores rank the normal crops above the tumour crops, so what
# it responds to is not the metastasis but something else that tells the two kinds of crop apart.

# %%
majority, learned = above_majority(results, test_set.labels.numpy())
print(f"majority-class rate on this test set: {100 * majority:.1f} %")
print("above it: " + (", ".join(f"{k} {100 * v:.1f} %" for k, v in learned.items()) if learned else
      f"no method, within this profile's budget ({cfg['epochs']} epochs of {len(train_set)} crops)"))
inverted = {k: r[0].auc for k, r in results.items() if r[0].auc is not None and r[0].auc < 0.5}
if inverted:
    print("AUC below 0.5 (scores rank normal crops above tumour crops): "
          + ", ".join(f"{k} {v:.3f}" for k, v in inverted.items()))

# %% [markdown]
# What the paper reports for the real data (TITAN Xp GPU, its implementations; table 1, and table 4 for
# the ablation of contrastive learning). Its "FLOPs (B)" are eq. 10 counts, i.e. multiply-accumulates: compare
# them with the GMACs columns here.

# %%
markdown_table(paper_rows(ZOOMIN_TABLE1_NEEDLE))

# %% [markdown]
# And the paper's ablation of contrastive learning for Zoom-In (table 4):

# %%
print(f"{ZOOMIN_TABLE4_NEEDLE['source']}: Zoom-In (lambda 1e-5, N = 30) with contrastive learning "
      f"{ZOOMIN_TABLE4_NEEDLE['rows'][(1e-5, 30, True)]} %, without {ZOOMIN_TABLE4_NEEDLE['rows'][(1e-5, 30, False)]} %")

# %% [markdown]
# ## Why nothing learned here, measured
#
# Two measurements say where training stopped. First, each method's training cross-entropy per epoch (the
# classification term alone) beside the loss of the best constant prediction ($\ln 2$ on balanced crops): a curve on
# that line has learned nothing from the pixels.

# %%
curves = training_curves(results)
flat = constant_loss(train_set.labels.numpy(), 2)
save_figure(plot_curves(curves, flat, "best constant prediction", ylabel="training cross-entropy",
                        title=f"training loss per epoch ({DATA_LABEL}, profile {profile!r})"), out, "training_loss")
print(f"best constant prediction {flat:.3f}; last epoch: " + ", ".join(f"{k} {c[-1]:.3f}" for k, c in curves.items()))

# %% [markdown]
# Second, where the attention lands on the positive test crops: its mass on the box round the annotated metastasis,
# the box's share of the map (the mass a uniform attention would put there), their ratio, and how often the map's
# highest location lies in the box (`attention.attention_on_objects`; for Zoom-In the map is
# $\alpha_c \beta^c_{c'}$ over the sub-tiles of every tile, for ATS its $\alpha$). A model that has found the
# metastasis puts several times the uniform mass there; one near 1 is looking elsewhere, or nowhere in particular.

# %%
positives = [int(i) for i in np.flatnonzero(test_set.labels.numpy() == 1)]
boxes = [[(x0, y0, x0 + w, y0 + h) for x0, y0, w, h in needles.mask_box(test_set.mask(i))] for i in positives]
attending = {k: trained[k] for k in ("Zoom-In", "Zoom-In (Res)", f"ATS-{N}")}
positive_inputs = [load_test([i]) for i in positives]  # [1, 3, S, S] each
on_tumour = attention_on_objects(attending, positive_inputs, boxes) if positives else []
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, {len(positives)} positive test crops")
markdown_table(on_tumour, digits=3) if on_tumour else print("no positive test crop: nothing to measure")

# %% [markdown]
# How to read the two, method by method (the lines below). A loss on the constant's line means nothing learned; a loss
# below it while the test accuracy stays at chance means something learned from the few training crops that does not
# carry to the test crops (with tens of positive crops from a handful of metastases, memorising them is easier than
# finding what they share). An attention ratio near 1 means the attention has not found the metastasis; a peak often
# on it with a ratio near 1 means one location stands out while most of the mass is elsewhere. The check, in the
# `cpu` profile on the stand-in: the plain Zoom-In's attention on the metastasis is less than twice the uniform one.

# %%
ratio = {r["method"]: r for r in on_tumour}
for name, c in curves.items():
    seen = f"; attention {ratio[name]['mass / uniform']:.2f} x uniform, peak on it in {ratio[name]['peak on the object %']:.0f} %" \
        if name in ratio else ""
    print(f"{name}: last-epoch loss {c[-1]:.3f} ({c[-1] - flat:+.3f} against the constant), test AUC "
          f"{results[name][0].auc if results[name][0].auc is not None else float('nan'):.3f}{seen}")
if profile == "cpu" and train_set.synthetic:
    assert ratio["Zoom-In"]["mass / uniform"] < 2.0, f"plain Zoom-In's attention found the metastasis: {ratio['Zoom-In']}"

# %% [markdown]
# ### What the networks saw before training, and what else tells the crops apart
#
# The two measurements above say that training did not find the metastasis. Three more say where it started and
# what it could have learned instead. First, each sampling network with the weights it starts training from
# (built after the same seeding, so the same initial weights as the trained model above;
# `needles.before_training`): its test AUC with its own top-$N$ predictor, and where its attention lands on
# the positive test crops, beside the trained network's. "N x mass" is $N$ times the attention's mass on the
# metastasis's box: about how many of the $N$ locations a draw puts there (exactly so for independent draws
# from the map; ATS draws its $N$ without replacement and Zoom-In its sub-tiles within a tile, which changes it
# little while no location holds much of the mass). Training takes its loss on such draws, while the test reads
# the top $N$.

# %%
initial = needles.before_training({k: methods[k] for k in attending}, load_test, test_set.labels, positive_inputs,
                                  boxes, seed)
changes = needles.before_after_rows(initial, {k: results[k][0].auc for k in attending}, on_tumour, N)
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, {len(test_set)} test crops ({len(positives)} positive)")
markdown_table(changes, digits=3)

# %% [markdown]
# Second, two statistics of a whole crop that are not the metastasis: its share of background (HSV saturation
# below the tissue mask's floor of 0.05: glass) and its mean brightness, per split and class, with the AUC each
# would reach as a score for "metastasis" (`needles.crop_statistic_rows`). The paper's premise is a background
# that is "uncorrelated or non-informative of the label" (sec. 1): then both AUCs lie near 0.5 in every split.
# The recipe cuts negatives only where the tissue covers at least half the crop, and positives wherever a
# metastasis is, so the two classes need not hold the same share of glass; and each split's negatives come from
# a few normal slides.

# %%
crop_stats_by_split = needles.crop_statistic_rows({"train": train_set, "test": test_set})
for split, data in (("train", train_set), ("test", test_set)):
    sources = needles.split_sources(data)
    print(f"{split}: negatives from {sources['negative slides']} slides, positives from {sources['metastases']} metastases")
markdown_table(crop_stats_by_split, digits=3)

# %% [markdown]
# Third, what the trained networks learned from their draws: each one's AUC on the training crops and on the
# test crops, with its top-$N$ predictor (what the test reads) and with the mean of 3 draws (the prediction
# closest to what training takes its loss on; `needles.auc_by_predictor`). Zoom-In and ATS-30 only, for the
# budget. The line after the reading below gives each split's standard error of an AUC near 0.5 (Hanley and
# McNeil's formula, `results.auc_standard_error`: for independent crops; crops cut from a few slides and
# metastases vary together, so the real spread is larger).

# %%
by_predictor = needles.auc_by_predictor({k: trained[k] for k in ("Zoom-In", f"ATS-{N}")},
                                        {"train": (load_train, train_set.labels), "test": (load_test, test_set.labels)},
                                        draws=3, seed=seed)
markdown_table(by_predictor, digits=3)

# %% [markdown]
# How to read the three tables together. The tables measure what the networks score and where they look, not
# which feature each one uses, so what follows is a reading:
#
# - Where a network's initial AUC lies far from 0.5, its initial weights already tell the test crops apart; the
#   direction is its random head's (Zoom-In (Res)'s lies below 0.5). No crop statistic of the second table comes
#   near that, and where the initial attention also peaks on the metastasis (a darker, denser texture than the
#   tissue round it, as `data_prep.synthetic_slides` paints it), the metastasis is what tells them apart.
#   Training did not keep it (the trained columns): a trained AUC near 0.5 has lost it, and one far below 0.5
#   tells the crops apart the wrong way round (last bullet).
# - Where $N$ x mass is well under one, a positive crop's draws in a training step mostly miss the metastasis's
#   box (measured on the test crops, whose metastases have the training crops' size range): most of what it
#   contributes is ordinary tissue and glass.
# - Where the mean of draws ranks the test crops below 0.5, as the test crops' brightness does, what the draws
#   taught carries to the test split the wrong way round: it is not the metastasis, which is in every positive
#   crop of both splits. On the training split, the last line below gives how far they lie from 0.5, in standard
#   errors.
# - Where a network's top-$N$ AUC on its own training crops lies far below its draws' AUC, the two predictors
#   disagree on the crops it was trained on: the top $N$ rank them the wrong way round while the draws lean the
#   right way (how far, in standard errors, is printed below). That is a second way to a test AUC below 0.5,
#   besides what the draws taught.
#
# With the paper's 6,000 training crops from 122 metastases, and presumably negatives from more slides, a
# difference between a few slides would, we expect, weigh less; this was not measured.
#
# The checks, in the `cpu` profile on the stand-in: Zoom-In's and ATS-30's initial AUCs are above 0.9 and their
# initial attention peaks on the metastasis in at least half the positive test crops; both trained AUCs are
# lower; their initial $N$ x mass is under one; the test crops' brightness and both networks' means of draws rank
# the test crops below 0.5; and ATS-30's top-$N$ AUC on its training crops lies more than 0.3 below its draws'.

# %%
by_split = {r["split"]: r for r in crop_stats_by_split}
drawn = {(r["method"], r["split"]): r for r in by_predictor}
for r in changes:
    print(f"{r['method']}: N x mass on the metastasis {r['N x mass, initial']:.2f} of {N} with its initial weights, "
          f"{r['N x mass, trained']:.2f} trained (positive test crops)")
print(f"AUC of brightness: train {by_split['train']['AUC of brightness']:.3f}, test {by_split['test']['AUC of brightness']:.3f}")
se = {split: auc_standard_error(data.labels.numpy()) for split, data in (("train", train_set), ("test", test_set))}
print("training split, in standard errors from 0.5: brightness "
      f"{(by_split['train']['AUC of brightness'] - 0.5) / se['train']:+.1f}, mean of draws "
      + ", ".join(f"{m} {(drawn[(m, 'train')]['AUC, mean of 3 draws'] - 0.5) / se['train']:+.1f}"
                  for m in ("Zoom-In", f"ATS-{N}")) + f" (standard error {se['train']:.3f}; test {se['test']:.3f})")
if profile == "cpu" and train_set.synthetic:
    plain = {r["method"]: r for r in changes if r["method"] in ("Zoom-In", f"ATS-{N}")}
    assert all(r["AUC, initial"] > 0.9 and r["peak on it %, initial"] >= 50 for r in plain.values()), plain
    assert all(r["AUC, trained"] < r["AUC, initial"] and r["N x mass, initial"] < 1 for r in plain.values()), plain
    assert by_split["test"]["AUC of brightness"] < 0.5, by_split
    assert all(drawn[(m, "test")]["AUC, mean of 3 draws"] < 0.5 for m in plain), drawn
    ats = drawn[(f"ATS-{N}", "train")]
    assert ats["AUC, top-N"] < ats["AUC, mean of 3 draws"] - 0.3, ats

# %% [markdown]
# ### With and without the contrastive term
#
# The paper's table 4 (printed above) credits its contrastive term with part of Zoom-In's accuracy on
# NeedleCamelyon. Chapter 06 finds on its traffic-sign stand-in that the term, acting on an attention that has not
# found the object, is lowered by gathering the attention elsewhere, where the classifier can tell a complement draw
# from an attention draw whatever the image holds. The same study here (`contrastive.with_and_without`): Zoom-In
# trained twice more from the same initial weights on the same mini-batches, with and without $\mathcal{L}_{con}$
# (normal as the reference class), its attention on the positive test crops' metastases probed after each epoch.

# %%
from dataclasses import replace
from zoomin_lib.chapters import contrastive
from zoomin_lib.chapters.attention import LazyInputs, attention_spread

CC = cfg["contrastive"]
study_settings = replace(settings["Zoom-In"], epochs=CC["epochs"], cosine_decay=CC["cosine"])
con_study = contrastive.with_and_without(
    "Zoom-In", methods["Zoom-In"], study_settings, lazy_batches(load_train, train_set.labels, cfg["batch"], seed),
    lambda: lazy_batches(load_test, test_set.labels, 8, seed, shuffle=False)(0), LazyInputs(load_test, positives),
    boxes, seed=seed, out=out, resume=resume,
    record={"profile": profile, "data": DATA_ID})
save_figure(contrastive.contrastive_figure(con_study, flat, f"Zoom-In, {CC['epochs']} epochs ({DATA_LABEL}, "
                                           f"profile {profile!r})"), out, "contrastive_study")
print(f"{len(positives)} positive test crops; " + contrastive.study_text(con_study, flat, "the metastasis"))
print("test accuracy and AUC (top-N): " + ", ".join(f"{k} {100 * r.accuracy:.1f} %, {r.auc:.3f}"
                                                    for k, (r, _) in con_study.items()))

# %% [markdown]
# Then, on every test crop, the share of the locations each attention effectively uses ($e^{H(a)}$ over their
# number: 1 for a uniform attention), and the probability of normal that each classifier gives (sample mode, 2 draws
# of each kind per crop) to draws of the attention and to draws of the complement, on the crops with a metastasis
# and without (`contrastive.draw_source_rows`).

# %%
study_models = {k: m for k, (_, m) in con_study.items()}
test_inputs = LazyInputs(load_test, range(len(test_set)))
spread = attention_spread(study_models, test_inputs)
display(markdown_table(spread, columns=["method", "images", "locations used (exp H / K)"], digits=3))
draw_sources = contrastive.draw_source_rows(study_models, test_inputs, list(test_set.labels.numpy() == 1), 0,
                                            "normal", draws=2, seed=seed)
markdown_table(draw_sources, digits=3)

# %% [markdown]
# How to read it. With the term, $\mathcal{L}_{con}$ falls while the attention puts less and less on the metastases,
# and ends on fewer locations than the run without it; its cross-entropy ends above the constant's. The classifier
# answers by the kind of draw: normal for the complement's more than for the attention's, in crops with a metastasis
# and without alike, as in chapter 06. Without the term the attention also puts less and less on the metastases,
# more slowly, and stays spread: on this stand-in the term is not the only thing that takes the attention away (the
# subsection above measures what the draws teach instead); it takes it further. In `cpu` both test AUCs lie below
# 0.5 and close together (the test split's standard error is printed above), so they say nothing about the paper's
# table 4 (printed above; its accuracies come from 150 epochs on the real crops). One run, one seed. The check, in
# the `cpu` profile on the stand-in: with the term, $\mathcal{L}_{con}$ ends below half its first value, the last
# epoch's attention on the metastases is below half the uniform one and below the run without it, and it uses less
# than 0.7 times the locations of the run without it; without the term, the attention ends below 0.8 times where it
# was after the first epoch, on more than 0.8 of the locations; with the term, p(normal) is more than 0.2 higher
# for the complement's draws than for the attention's in both groups of crops, without it less than 0.1 apart.

# %%
gap = contrastive.source_gaps(draw_sources, "normal")
print("p(normal), complement's draws minus attention's: " + ", ".join(f"{k[0]}, {k[1]}: {v:+.2f}" for k, v in gap.items()))
if profile == "cpu" and train_set.synthetic:
    W, WO = contrastive.WITH, contrastive.WITHOUT
    curve = lambda label, key: contrastive.curve(con_study[label][0], key)  # per epoch
    con, ratio = curve(W, "contrastive"), {k: curve(k, "val_mass_ratio") for k in (W, WO)}
    used = {r["method"]: r["locations used (exp H / K)"] for r in spread}
    assert con[-1] < 0.5 * con[study_settings.warmup_epochs], f"L_con with the term: {con}"
    assert ratio[W][-1] < min(0.5, ratio[WO][-1]) and used[W] < 0.7 * used[WO], f"{ratio}; locations used {used}"
    assert ratio[WO][-1] < 0.8 * ratio[WO][0] and used[WO] > 0.8, f"without the term: {ratio[WO]}, {used}"
    assert len(gap) == 4 and all(v > 0.2 for k, v in gap.items() if k[0] == W), gap
    assert all(abs(v) < 0.1 for k, v in gap.items() if k[0] == WO), gap

# %% [markdown]
# ## Cost at the paper's crop size
#
# The memory claim of table 1 is about 1024x1024 crops. Where this profile's crops are smaller (smoke), the
# paper's settings are built afresh (untrained weights) and profiled on a test crop enlarged to 1024x1024;
# otherwise the trained models above already are the paper's settings. Untrained, Zoom-In's top-$N$ search
# visits more tiles than a trained model (its $\alpha$ is flat), so its FLOPs there are an upper bound.

# %%
if side == PAPER_SIDE:
    at_paper_size = costs  # the trained models: the paper's settings at the paper's size
else:
    big = F.interpolate(example, size=(PAPER_SIDE, PAPER_SIDE), mode="bilinear", align_corners=False)  # [1, 3, 1024, 1024]
    at_paper_size = profile_methods(needles.paper_settings(cfg["bagnet"]), big,
                                    generator=torch.Generator().manual_seed(seed), min_run_time=cfg["timing"])
FULL_BAGNET = needles.FULL_BAGNET if needles.FULL_BAGNET in at_paper_size else "BagNet-33"
print(f"Measured here at {PAPER_SIDE}x{PAPER_SIDE} ({'trained models' if side == PAPER_SIDE else 'untrained, paper settings'})")
trained_here = results if side == PAPER_SIDE else {}  # accuracies only for the models that were trained at this size
markdown_table(result_rows(trained_here, {k: at_paper_size[k] for k in ("Zoom-In", "Zoom-In (Res)", "ATS-30", FULL_BAGNET)}),
               digits=3)

# %% [markdown]
# The paper-sized BagNet-33 of [37] is too slow to run in a CPU profile, but its MACs can be counted without
# running it (shapes only, on PyTorch's meta device). The paper does not say which BagNet it ran, and its
# 222.72 B is not what [37]'s default network counts; the count below says how large such a CNN is, not which
# one the paper used.

# %%
paper_bagnet_gmacs = bagnet_macs(PAPER_SIDE) / 1e9
markdown_table([
    {"network": "BagNet-33 of [37] (width 64, blocks (3, 4, 6, 3)), counted here", "GMACs at 1024x1024": paper_bagnet_gmacs},
    {"network": f"this profile's BagNet ({cfg['bagnet']}), measured here at s=1",
     "GMACs at 1024x1024": at_paper_size[FULL_BAGNET]["mmacs"] / 1e3},
    {"network": "BagNet, paper reports (table 1, FLOPs (B) = MACs)", "GMACs at 1024x1024": ZOOMIN_TABLE1_NEEDLE["rows"]["BagNet"]["gmacs"]},
])

# %% [markdown]
# The memory ratios are what carries over from the paper: they depend on what each method holds at once,
# not on the GPU. The paper reports BagNet and ATS-30 needing at least 500x and 7x the memory of Zoom-In
# (sec. 4). Outside the `paper` profile the BagNet here is far narrower than [37]'s, so its memory understates
# what a paper-sized BagNet needs, and the last ratio understates the gap.

# %%
zoom_mb = at_paper_size["Zoom-In"]["peak_memory_mb"]
res_mb = at_paper_size["Zoom-In (Res)"]["peak_memory_mb"]
ats_mb = at_paper_size["ATS-30"]["peak_memory_mb"]
bag_mb = at_paper_size[FULL_BAGNET]["peak_memory_mb"]
ratios = needles.memory_ratios(at_paper_size, FULL_BAGNET, ZOOMIN_TABLE1_NEEDLE["rows"])
markdown_table(ratios)

# %% [markdown]
# The claim, checked: at 1024x1024, Zoom-In needs well under ATS-30's memory (Zoom-In (Res) less than it), and
# ATS-30 well under the full-resolution BagNet's.

# %%
assert 2 * zoom_mb < ats_mb, f"Zoom-In {zoom_mb:.2f} MiB should need well under ATS-30's {ats_mb:.2f} MiB at 1024x1024"
assert res_mb < ats_mb, f"Zoom-In (Res) {res_mb:.2f} MiB should need less than ATS-30's {ats_mb:.2f} MiB"
assert 2 * ats_mb < bag_mb, f"ATS-30 {ats_mb:.2f} MiB should need well under the full-resolution BagNet's {bag_mb:.1f} MiB"
print(f"Peak inference memory at 1024x1024: Zoom-In {zoom_mb:.2f} MiB, Zoom-In (Res) {res_mb:.2f} MiB < ATS-30 "
      f"{ats_mb:.2f} MiB < BagNet {bag_mb:.1f} MiB")

# %% [markdown]
# Why the order holds: at inference Zoom-In holds the first-stage view $V(x, 0.25)$ (256x256) and its
# attention map, then one tile's $V(x_c, 0.5)$ (128x128) at a time, and one 32x32 sub-tile at a time for $f$.
# ATS-30 holds the whole $V(x, 0.5)$ (512x512) and the attention network's activations over it: four times the
# pixels of Zoom-In's largest view. The BagNet holds activations over the full 1024x1024 crop.

# %% [markdown]
# ## Where the models look (figure 6b)
#
# For positive test crops: the crop with its metastasis (cyan outline); Zoom-In's attention
# $\alpha_c \beta^c_{c'}$ over the sub-tile grid with its top-$N$ sub-tiles (green boxes); ATS's attention over
# $V(x, 0.5)$ with its top-$N$ patches; and the BagNet's local evidence for "metastasis" (its positive logit
# minus the negative one, per 33x33 patch of the view it sees). Maps are min-max normalised.

# %%
positives = needles.one_per_metastasis(test_set, 3)
zoom, ats, bag = trained["Zoom-In"].eval(), trained[f"ATS-{N}"].eval(), trained[BAGNET].eval()
fig = needles.attention_figure({"Zoom-In": zoom, f"ATS-{N}": ats, BAGNET: bag}, positives, test_set, load_test,
                               f"Attention and evidence on positive test crops ({DATA_LABEL})")
save_figure(fig, out, "attention");

# %% [markdown]
# Zoom-In's two steps on the same crops (as the paper's figure 3 and 6b show them): the tile of highest
# $\alpha$ (yellow), its sub-tile of highest $\beta$ (green), and that sub-tile at full resolution; the
# metastasis's bounding box in cyan. How many of the 16 tiles Zoom-In's top-$N$ search had to open is printed
# below: the fewer, the fewer second-stage views it computes.

# %%
picks = zoom_picks(zoom, [load_test([i]) for i in positives])
titles = [f"predicted {'metastasis' if p[2] else 'normal'}" for p in picks]
fig = zoom_grid([test_set.image(i) for i in positives], picks, [needles.mask_box(test_set.mask(i)) for i in positives],
                titles, f"Zoom-In's highest-attention tile and sub-tile ({DATA_LABEL})")
save_figure(fig, out, "figure3_top_tile_subtile")
with torch.no_grad():
    opened = [zoom(load_test([i]), mode="topk").beta_tile.numel() for i in range(min(len(test_set), 20))]
print(f"tiles opened by Zoom-In's top-{N} search: mean {np.mean(opened):.1f} of {zoom.first_stage(example).shape[1]} "
      f"(first {len(opened)} test crops)")

# %% [markdown]
# Last, everything measured goes to `metrics.json` in the results folder, with the settings that produced it.

# %%
write_json(out / "metrics.json", {
    "profile": profile, "data": DATA_LABEL, "data_root": str(root), "seed": seed, "settings": cfg,
    "crop_side": side, "n_train": len(train_set), "n_test": len(test_set), "prep_seconds": prep_seconds,
    "results": {n: {"accuracy": r[0].accuracy, "auc": r[0].auc, "confusion": r[0].confusion} for n, r in results.items()},
    "train_seconds": train_seconds, "costs": costs, "costs_at_1024": at_paper_size,
    "paper_bagnet33_gmacs_counted": paper_bagnet_gmacs, "memory_ratios": ratios, "tiles_opened_mean": float(np.mean(opened)),
    "training_ce": curves, "constant_loss": flat, "attention_on_metastasis": on_tumour,
    "contrastive_study": {"settings": CC, "history": {k: r.history for k, (r, _) in con_study.items()},
                          "auc": {k: r.auc for k, (r, _) in con_study.items()}, "spread": spread,
                          "draw_sources": draw_sources, "accuracy": {k: r.accuracy for k, (r, _) in con_study.items()}},
    "initial_vs_trained": changes, "crop_statistics_by_split": crop_stats_by_split, "auc_by_predictor": by_predictor,
})
print("wrote", out / "metrics.json")
