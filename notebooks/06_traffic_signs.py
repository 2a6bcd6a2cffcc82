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
# # Road scenes: speed-limit signs that are legible only at full resolution
#
# The task of ATS sec. 4.4 and Zoom-In sec. 4: is there a 50, 70 or 80 km/h sign in a 1280x960 road
# scene, and which? Four classes (EMPTY, 50, 70, 80), weighted cross-entropy with the weights of Zoom-In
# appendix G. A sign covers a fraction of a per cent of the image, and its number cannot be read once the
# image is downsampled (ATS fig. 1): a method must find the sign at low resolution and read it at high.
#
# | method | what it sees (paper settings) |
# |---|---|
# | **Zoom-In** (LeNet, table 5) and **Zoom-In (Res)** (ResNet16, table 6) | $\alpha$ over tiles on $V(x, 0.125)$, $\beta$ over each drawn tile at $s_2 = 0.3$, $N = 10$ sub-tiles of 100x100 |
# | **ATS-10** | attention on $V(x, 0.3)$, 10 patches of 100x100 |
# | **U-10** | 10 uniformly drawn 100x100 patches |
# | **CNN** | the ResNet of chapter 03 on the image at scale 0.5 and 1 (the paper used EfficientNet-B0; there is no torchvision here) |
# | **IPS-10** (the IPS thesis, sec. 2.7 and 4) | the top $M = 10$ of all non-overlapping 100x100 patches at full resolution, read $I = 32$ at a time, pooled by cross-attention |
# | **Zoom-In + boxes** (ours, not in the papers) | Zoom-In (LeNet) that also learns from the box of the sign: a, b and f pre-trained on it, then the attention cross-entropy against it during training (`train.supervision`) |
#
# **Zoom-In + boxes** uses annotations the papers' models do not: the box of the sign that gives the label.
# Appendix L does the same with the metastases' outlines on Camelyon16 (chapter 04). On a CPU budget the
# plain methods have to find a sign covering 0.1 % of the image from the class label alone, and a
# uniformly drawn sub-tile holds the sign in a few per cent of the images; the boxes tell the attention
# where to look from the start. Its row says what the architecture can do once it looks in the right
# place, not what the papers' training achieves.
#
# The paper does not give Zoom-In's first-stage tile size for this data set (appendix F lists the
# others); we use 320x320, a 4x3 grid over the image.
#
# IPS is not in Zoom-In's or ATS's tables; Riffi-Aslett's thesis (file 003) runs it on this data set, and
# also tests two regularisers of its attention and the size of its patches there. The last part of the
# chapter repeats those three studies. IPS never looks at a downsampled image: it reads *every* pixel at full
# resolution with its patch encoder (no gradient), keeps the $M$ patches its attention scores highest, and
# learns from those. Its encoder here is chapter 09's cheap `StridedLeNet` (the thesis's is a pre-trained
# ResNet-18, which needs torchvision), its transformer the IPS code's (8 heads, dropout 0.1), without the
# position encoding: which sign a scene holds does not depend on where the sign stands.
#
# **Data.** With no `data_dir` the notebook runs on a **synthetic stand-in** generated here in the real
# format (`data_prep.traffic_signs`): rendered road scenes with sign-like distractors and, in three
# classes, a small red-ringed speed-limit sign. It is not the Swedish traffic signs data, and no accuracy
# below is comparable to the paper's. With `-p data_dir /path/to/STS` (holding `Set1/` and `Set2/`) the
# same notebook runs on the real data.

# %% tags=["parameters"]
import os

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | gpu | paper
data_dir = None  # a folder with Set1/annotations.txt and Set2/annotations.txt; None: the synthetic stand-in
seed = 0
resume = False  # continue interrupted runs from their checkpoints under results/06_traffic_signs/

# %% [markdown]
# The chapter's tools: the data set's reader, the builders of the methods, the training protocol and
# profiler, and the chapter helpers that train the methods in turn, draw where Zoom-In looks and set up and
# read the IPS studies (`zoomin_lib.chapters.signs`).

# %%
import numpy as np
import torch

from data_prep import traffic_signs
from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib import builders
from zoomin_lib.train.supervision import box_mask
from zoomin_lib.train.protocol import TrainSettings, channel_stats, lazy_batches, standardize
from zoomin_lib.train.fingerprint import fingerprint
from zoomin_lib.train.profiling import profile_methods
from zoomin_lib.chapters.attention import attention_on_objects
from zoomin_lib.chapters.results import beats, constant_loss, report_above_majority, result_rows, training_curves
from zoomin_lib.chapters.signs import (BOXES, IPSVariant, add_box_method, batch_loader, box_fit_text, budget_text,
                                       diversity_rows, examples_figure, ips_factory, ips_variants, ips_verdicts,
                                       patch_rows, save_zoom_figures, sign_sides, stkim_rows, train_methods)
from zoomin_lib.infra.io import write_json
from zoomin_lib.book.paper_numbers import (ATS_TABLE2_SPEED_LIMITS, THESIS_TABLE2_TRAFFIC, THESIS_TABLE3_PATCH,
                                           THESIS_TABLE7_DIVERSITY, THESIS_TABLE9_STKIM, THESIS_TRAFFIC_SETUP,
                                           ZOOMIN_TABLE1_TRAFFIC, paper_rows)
from zoomin_lib.chapters.per_class import absent_note, per_class_rows
from zoomin_lib.book.plotting import plot_curves, save_figure
from zoomin_lib.book.report import markdown_table

# %% [markdown]
# ## Settings
#
# The `smoke` profile runs in seconds: a few images and one epoch, to check the mechanics, not the accuracy.

# %%
SMOKE = dict(synthetic=dict(n_train=24, n_test=12), train_subset=12, test_subset=8, n_patches=5, patch=50,
             batch=4, epochs=1, lr=1e-3, warmup=0, cosine=False, cnn_scales=[0.3], cnn_epochs=1, timing=0.01,
             boxes=dict(pretrain={"a": 1, "b": 1, "f": 1}, epochs=1, lr=1e-4),
             ips=dict(epochs=1, iter=32, diversity=[0.1], stkim=[(10, 0.1)], patches=[25, 50]),
             contrastive=dict(epochs=2, cosine=False))

# %% [markdown]
# The `cpu` profile, the book's default on a 2-core CPU, keeps the paper's architecture and the stand-in's
# 1280x960 scenes, so a sign keeps its size in pixels, its fraction of the image and what each method's
# low-resolution view shows of it; it trains on 100 scenes (not 747) and tests on 100 (the always-EMPTY
# margin below needs them). $N = 5$ sub-tiles of 50x50 (not 10 of 100x100: a sixth of the feature cost),
# batch 8 and 4 epochs (not 150; one of warm-up) at the paper's lr $10^{-3}$ with cosine decay; the CNN sees
# the image at scale 0.3 for 2 epochs. Zoom-In + boxes is pre-trained from the boxes (20, 15 and 20 epochs for
# a, b and f), then trained for 2 epochs at lr $10^{-4}$, a tenth of the others': in an earlier, longer trial
# (6 epochs after pre-training on 200 scenes)
# the training took the pre-trained model from 83 % to 76 % test accuracy, and at lr $10^{-3}$ an earlier
# version lost more. Each scene is decoded once and kept in memory, standardized per mini-batch
# (`batch_loader`'s cache): before, decoding and standardizing every scene again each epoch cost about as
# much as training Zoom-In on it.
#
# IPS keeps $M = N = 5$ patches of 50x50 (the pixels the others classify from), reads them $I = 32$ at a time,
# and trains 2 epochs, half the others' 4: an IPS epoch encodes every pixel of the training scenes at full
# resolution, and the studies at the end train four more IPS models. Everything else is the others' training:
# mini-batches, lr, decay, class weights. The studies run one L_d weight (0.1, table 7's best), one masking
# (K = 10, P = 0.1, table 9's first) and patches of 20, 50 and 100 pixels: the smallest sign of the stand-in,
# just above its largest, and twice that.
#
# The study of the contrastive term trains the plain Zoom-In twice more, with and without it, for 12 epochs at the
# constant lr $10^{-3}$ (no decay; one epoch of warm-up, as above): within the 4 decaying epochs above, the attention
# stays where it starts (the measurements below), so the study trains long enough to see whether it moves.
#
# Would the plain methods learn with longer training on more scenes? We ran the plain Zoom-In and ATS-5 once each by
# hand, outside the book (one seed, on a 2-core CPU), with this profile's model and optimiser settings ($N = 5$
# sub-tiles of 50x50, batch 8, lr $10^{-3}$ with cosine decay) but the `gpu` profile's 600 training scenes and 40
# epochs, the first 10 without the contrastive term, and tested them on this profile's 100 test scenes. Neither
# run's training cross-entropy went below the best constant's; each answered one speed-limit class for almost every
# test scene, which puts it below the always-EMPTY rate; and each put less attention on the test signs than its
# initial weights did. So ten times the epochs on six times the scenes learned nothing that the measurements below
# can see. The `gpu` profile takes this measurement in the book, with $N = 10$ sub-tiles of 100x100 and batch 16.
# (The runs above were made by hand, not by this chapter, so the chapter quotes no figure from them.)

# %%
CPU = dict(synthetic=dict(n_train=100, n_test=100), train_subset=None, test_subset=None, n_patches=5, patch=50,
           batch=8, epochs=4, lr=1e-3, warmup=1, cosine=True, cnn_scales=[0.3], cnn_epochs=2, timing=0.1,
           boxes=dict(pretrain={"a": 20, "b": 15, "f": 20}, epochs=2, lr=1e-4),
           ips=dict(epochs=2, iter=32, diversity=[0.1], stkim=[(10, 0.1)], patches=[20, 50, 100]),
           contrastive=dict(epochs=12, cosine=False))

# %% [markdown]
# The `gpu` profile, for one H100-class GPU: the `paper` profile's stand-in (600 training and 300 test images,
# six times `cpu`'s training scenes, three times its test scenes) and appendix G's $N = 10$ sub-tiles of 100x100, batch 16 (not 32), 40 epochs (not 150) at lr
# $10^{-3}$ with cosine decay and 10 warm-up epochs; the CNN at scale 0.5 for 20 epochs; Zoom-In + boxes
# pre-trained twice as long as in `cpu` and trained for 20 epochs at lr $10^{-4}$; IPS and its studies train the
# other methods' 40 epochs (not `cpu`'s 2), with two Diversity weights, two STKIM settings and the thesis's four
# patch sizes; the study of the contrastive term trains the plain Zoom-In as the others, 40 epochs with decay, with
# and without it. These settings are sized by
# estimate (from this chapter's `cpu` costs and one colon run timed by hand on an H200, issue 16); this project has
# not yet run them on a GPU.

# %%
GPU = dict(synthetic=dict(n_train=600, n_test=300), train_subset=None, test_subset=None, n_patches=10, patch=100,
           batch=16, epochs=40, lr=1e-3, warmup=10, cosine=True, cnn_scales=[0.5], cnn_epochs=20, timing=0.3,
           boxes=dict(pretrain={"a": 60, "b": 40, "f": 60}, epochs=20, lr=1e-4),
           ips=dict(epochs=40, iter=32, diversity=[0.1, 0.5], stkim=[(10, 0.1), (10, 0.05)], patches=[25, 50, 75, 100]),
           contrastive=dict(epochs=40, cosine=True))

# %% [markdown]
# The `paper` profile holds Zoom-In's appendix G: $N = 10$ sub-tiles of 100x100, batch 32, 150 epochs at lr
# $10^{-3}$ with 10 warm-up epochs; the CNN at scales 0.5 and 1. IPS gets the thesis's $M = 10$ patches of
# 100x100 read $I = 32$ at a time, for 150 epochs, and the thesis's grids: the L_d weights of table 7, the
# $(K, P)$ of table 9 and the patch sizes of table 3 (one seed each, not five; batch 32, not 16; no
# learning-rate warm-up). The study of the contrastive term trains the plain Zoom-In as the others, 150 epochs.

# %%
PAPER = dict(synthetic=dict(n_train=600, n_test=300), train_subset=None, test_subset=None, n_patches=10, patch=100,
             batch=32, epochs=150, lr=1e-3, warmup=10, cosine=False, cnn_scales=[0.5, 1.0], cnn_epochs=150,
             timing=0.3, boxes=dict(pretrain={"a": 100, "b": 50, "f": 100}, epochs=150, lr=1e-4),
             ips=dict(epochs=150, iter=32, diversity=[0.1, 0.25, 0.5, 0.75, 1.0],
                      stkim=[(10, 0.1), (10, 0.05), (20, 0.1), (20, 0.05), (30, 0.1), (30, 0.05)],
                      patches=[25, 50, 75, 100]),
             contrastive=dict(epochs=150, cosine=False))

# %% [markdown]
# The opening picks the settings of the chosen profile, makes the chapter's results folder and seeds every
# random number generator.

# %%
cfg, out, device = open_chapter("06_traffic_signs", {"smoke": SMOKE, "cpu": CPU, "gpu": GPU, "paper": PAPER},
                                profile, seed)

# %% [markdown]
# ## The data
#
# `annotations.txt` is parsed and the subset rules of ATS are applied (a visible 50/70/80 sign, the
# largest visible one giving the label; images with other signs only are dropped); images are read from
# disk batch by batch, never all at once (and kept, decoded, as the next cell says). A malformed line, a missing or unreadable image is reported
# (listed below) and skipped; a class the data lack is named, and the figures and tables below cover the
# classes present.

# %%
root = data_dir if data_dir is not None else traffic_signs.default_dataset(**cfg["synthetic"], seed=seed)
train_set = traffic_signs.load_traffic_signs(root, "train")
test_set = traffic_signs.load_traffic_signs(root, "test")
DATA_LABEL = "synthetic stand-in" if train_set.synthetic else f"Swedish traffic signs ({root})"
train_idx = np.arange(len(train_set))[: cfg["train_subset"]]
test_idx = np.arange(len(test_set))[: cfg["test_subset"]]
problems = train_set.problems + test_set.problems
for p in problems:
    print("problem:", p)
CLASSES_ABSENT = absent_note({"train": train_set.labels[train_idx], "test": test_set.labels[test_idx]},
                             traffic_signs.CLASSES)
print(f"data: {DATA_LABEL}; train {train_set.class_counts()} ({len(train_idx)} used), "
      f"test {test_set.class_counts()} ({len(test_idx)} used); dropped by the rules: "
      f"{train_set.dropped} + {test_set.dropped}; images skipped for a problem above: {len(problems)}")
print(CLASSES_ABSENT)

# %% [markdown]
# **The real data beside the stand-in.** The table quotes what the papers say about the real images and signs
# beside the same statistics measured on this split's annotation boxes (the training images; a sign's side is the
# square root of its box's area), then a sign's side in pixels at each method's first view: Zoom-In's $s_1$ and
# $s_2$, ATS's $s$, the CNN's $s$ (IPS scores full-resolution patches). The stand-in keeps the real image size.
# The papers give no sign size and no number of signs per image, so the stand-in's signs (drawn a few tens of
# pixels wide by its camera model) cannot be checked against the real ones; ATS (sec. 4.4) says only that at low
# resolution a sign can be seen but its number cannot be read, which is what the rows per method let one check
# here. The stand-in has fewer images than the real subset, for the budget (see the settings).

# %%
from zoomin_lib.chapters.standin import standin_table

VIEWS = {"Zoom-In's first stage": 0.125, "Zoom-In's second stage": 0.3, "ATS": 0.3,
         **{"the CNN" + (f" #{k + 1}" if len(cfg["cnn_scales"]) > 1 else ""): s for k, s in enumerate(cfg["cnn_scales"])}}
standin_table(traffic_signs.REAL_STATISTICS, traffic_signs.measure_stand_in(train_set), VIEWS, data_label=None if train_set.synthetic else DATA_LABEL)

# %% [markdown]
# The checkpoints record which images they were trained and tested on, so that a run on another subset or
# other files is never resumed from them. Every image is standardized with the colour statistics of a few
# training images, and read from disk when its mini-batch first is: the decoded images are kept in memory (up to
# 2 GiB per split), so later epochs and methods decode nothing.

# %%
DATA_ID = fingerprint([train_set.samples[i].path.name for i in train_idx], train_set.labels[train_idx],
                      [test_set.samples[i].path.name for i in test_idx], test_set.labels[test_idx])
stats = channel_stats(train_set.load_batch(train_idx[:16].tolist()))  # [1, 3, 1, 1] mean and std
CACHE = 2 * 2**30  # bytes of decoded images kept in memory per split (uint8; a 1280x960 image takes 3.7 MB)
load_train, load_test = (batch_loader(train_set, train_idx, stats, cache_bytes=CACHE),
                         batch_loader(test_set, test_idx, stats, cache_bytes=CACHE))

# %% [markdown]
# One training image of each class present, with the box of its sign: at this size the number on the sign
# is already hard to read.

# %%
save_figure(examples_figure(train_set, DATA_LABEL), out, "examples");

# %% [markdown]
# ## Training
#
# The methods of the table at the top, with this profile's $N$ sub-tiles of $P \times P$ pixels; the CNN once
# per scale of the profile. Every method uses the class weights of appendix G; the CNN trains at lr
# $10^{-3}$ without warm-up.

# %%
C = dict(in_channels=3, n_classes=len(traffic_signs.CLASSES))
N, P = cfg["n_patches"], cfg["patch"]
methods = {
    "Zoom-In": lambda: builders.zoomin(**C, scale1=0.125, scale2=0.3, tile_size=320, patch_size=P, n_patches=N),
    "Zoom-In (Res)": lambda: builders.zoomin(**C, scale1=0.125, scale2=0.3, tile_size=320, patch_size=P,
                                             n_patches=N, backbone="resnet16"),
    f"ATS-{N}": lambda: builders.ats(**C, scale=0.3, patch_size=P, n_patches=N),
    f"U-{N}": lambda: builders.uniform(**C, scale=0.3, patch_size=P, n_patches=N),
}
for s in cfg["cnn_scales"]:
    methods[f"CNN s={s}"] = lambda s=s: builders.cnn(**C, scale=s)
common = dict(batch_size=cfg["batch"], class_weights=traffic_signs.CLASS_WEIGHTS, cosine_decay=cfg["cosine"])
settings = {name: TrainSettings(epochs=cfg["cnn_epochs"], lr=1e-3, **common) if name.startswith("CNN") else
            TrainSettings(epochs=cfg["epochs"], lr=cfg["lr"], warmup_epochs=cfg["warmup"], **common)
            for name in methods}

# %% [markdown]
# Zoom-In + boxes is the same network, pre-trained on the signs' boxes and then trained with the attention
# loss on them. A box becomes a mask over the image; an image without a sign gives the background class
# (EMPTY) to the pre-training.

# %%
IMAGE_HW = tuple(load_train([0]).shape[-2:])  # (960, 1280): a batch holds images of one size
sign_mask = lambda i: box_mask(train_set.roi_boxes(int(train_idx[i])), *IMAGE_HW)  # [H, W]
train_images = lambda: ((load_train([i]), sign_mask(i), int(train_set.labels[train_idx[i]]))
                        for i in range(len(train_idx)))
add_box_method(methods, settings, train_images, cfg["boxes"], seed=seed, background_class=0)
train_masks = lambda idx: torch.stack([sign_mask(i) for i in idx])  # [b, H, W]
print(budget_text(cfg, f"N = {N} sub-tiles of {P}x{P}", "CNN"))

# %% [markdown]
# Every method is trained in turn on the same mini-batches and tested on the same test images; the
# pre-training of Zoom-In + boxes runs when its turn comes, and the last line says how well it fitted the boxes.

# %%
results, trained = train_methods(methods, settings, load_train=load_train, train_labels=train_set.labels[train_idx],
                                 load_test=load_test, test_labels=test_set.labels[test_idx], batch=cfg["batch"],
                                 seed=seed, out=out, resume=resume, record={"profile": profile, "data": DATA_ID},
                                 box_masks=train_masks)
print(box_fit_text(trained[BOXES], "the sign", "the training images with one", "the tiles with one"))

# %% [markdown]
# IPS trains the same way, on the same mini-batches, with its own number of epochs (see the settings). The
# other IPS models of the studies at the end are set up here too; the first, this one, is their baseline.

# %%
IC = cfg["ips"]
variants = ips_variants(P, IC["diversity"], IC["stkim"], IC["patches"])  # the baseline IPS first
IPS = variants[0].name(N, P)
ips_methods = {v.name(N, P): ips_factory(v, **C, memory=N, iter_size=IC["iter"]) for v in variants}
ips_settings = TrainSettings(epochs=IC["epochs"], lr=cfg["lr"], warmup_epochs=0, contrastive=False, **common)
train_kw = dict(load_train=load_train, train_labels=train_set.labels[train_idx], load_test=load_test,
                test_labels=test_set.labels[test_idx], batch=cfg["batch"], seed=seed, out=out, resume=resume,
                record={"profile": profile, "data": DATA_ID})
ips_results, ips_trained = train_methods({IPS: ips_methods[IPS]}, {IPS: ips_settings}, **train_kw)
results.update(ips_results)
trained.update(ips_trained)
print(f"{IPS}: M = {N} patches of {P}x{P}, I = {IC['iter']}, {IC['epochs']} epochs")

# %% [markdown]
# ## Accuracy and cost
#
# Cost is measured on one 1280x960 test image, batch 1, reading patches and tiles one at a time
# (`lean_inference`). The first table profiles the trained models (this profile's settings); the second
# profiles the paper's settings ($N = 10$ sub-tiles of 100x100, CNN at scales 0.5 and 1, IPS with the thesis's
# $M = 10$ patches of 100x100; cost does not depend on training, except Zoom-In's top-k search, which is
# measured here untrained).

# %%
example = load_test([0])
costs = profile_methods(trained, example, generator=torch.Generator().manual_seed(seed), min_run_time=cfg["timing"])
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, trained with N = {N}, {P}x{P}; every method trained "
      f"{cfg['epochs']} epochs except {IPS}, {IC['epochs']} (see the settings)")
markdown_table(result_rows(results, costs), digits=3)

# %% [markdown]
# The same profile for the paper's settings, with untrained weights: what a sample costs does not depend
# on what the model has learned.

# %%
paper_config = {
    "Zoom-In (N=10, 100x100)": builders.zoomin(**C, scale1=0.125, scale2=0.3, tile_size=320, patch_size=100, n_patches=10),
    "Zoom-In (Res) (N=10, 100x100)": builders.zoomin(**C, scale1=0.125, scale2=0.3, tile_size=320, patch_size=100,
                                                     n_patches=10, backbone="resnet16"),
    "ATS-10 (100x100)": builders.ats(**C, scale=0.3, patch_size=100, n_patches=10),
    "CNN s=0.5": builders.cnn(**C, scale=0.5),
    "CNN s=1": builders.cnn(**C, scale=1.0),
    "IPS-10 (100x100)": ips_factory(IPSVariant(100), **C, memory=10, iter_size=32)(),
}
paper_costs = profile_methods(paper_config, example, generator=torch.Generator().manual_seed(seed),
                              min_run_time=cfg["timing"])
print("Measured here: the cost of the paper's settings (untrained weights)")
markdown_table(result_rows({}, paper_costs), digits=3)

# %% [markdown]
# How far did training get? A classifier that always answers EMPTY is right as often as EMPTY images
# occur; weighted cross-entropy (which up-weights the rare signs) can pull a weak model below that rate.
# A method has learned something about the signs only when it beats that rate by more than chance allows
# (two binomial standard errors on this test set).
#
# The claim this profile checks is the boxes' gain: Zoom-In + boxes beats the plain Zoom-In by more than two
# standard errors of their difference. Whether it also clears the always-EMPTY bar in this budget is reported, not
# asserted: it is near the bar, and builds on different CPUs (whose floating-point rounding leads training along
# other paths) have landed on both sides of it. The
# section "Why the plain methods stay at the always-EMPTY rate" below measures where each method stopped.

# %%
learned = report_above_majority(results, test_set.labels[test_idx], "always-EMPTY",
                                f"this profile's budget ({cfg['epochs']} epochs of {len(train_idx)} images, "
                                f"{IPS} {IC['epochs']}; the paper "
                                f"trains {PAPER['epochs']} epochs of 747)")
boxes_acc, plain_acc, n_test = results[BOXES][0].accuracy, results["Zoom-In"][0].accuracy, len(test_idx)
print(f"{BOXES} {100 * boxes_acc:.1f} % against the plain Zoom-In's {100 * plain_acc:.1f} %: "
      f"{'more' if beats(boxes_acc, n_test, plain_acc, n_test, z=2.0) else 'not more'} than two standard errors apart")
if profile == "cpu" and train_set.synthetic:  # the claim this profile was sized for
    assert beats(boxes_acc, n_test, plain_acc, n_test, z=2.0), f"{BOXES} should beat the plain Zoom-In: {boxes_acc:.3f}"

# %% [markdown]
# Per class: the recall of each class the test images have, and its mean over those classes (balanced
# accuracy); a class with no test image has no recall and is left out of the mean, and named.

# %%
print(f"Measured here: {DATA_LABEL}, profile {profile!r}; {CLASSES_ABSENT}")
per_class = per_class_rows(results, traffic_signs.CLASSES)
markdown_table(per_class, digits=1)

# %% [markdown]
# What the papers report on the real data (GPU). Zoom-In's "FLOPs (B)" count multiply-accumulates (eq. 10).

# %%
markdown_table(paper_rows(ZOOMIN_TABLE1_TRAFFIC, ATS_TABLE2_SPEED_LIMITS))

# %% [markdown]
# The thesis's IPS on the same task (table 2; validation accuracy, mean and standard deviation over 5 seeds, on
# nested subsets of the training set). Its studies use the 25 % subset, 184 training images (the `cpu` stand-in
# has 100): there IPS reaches 80 %, against 98 % with all 747.

# %%
print(f"{THESIS_TABLE2_TRAFFIC['source']}: IPS with M = {THESIS_TRAFFIC_SETUP['memory_size']}, I = "
      f"{THESIS_TRAFFIC_SETUP['iter_size']}, {THESIS_TRAFFIC_SETUP['patch_size']}x{THESIS_TRAFFIC_SETUP['patch_size']} "
      f"patches, {THESIS_TRAFFIC_SETUP['encoder']}, {THESIS_TRAFFIC_SETUP['epochs']} epochs")
markdown_table([{"training subset": k, **v} for k, v in THESIS_TABLE2_TRAFFIC["rows"].items()])

# %% [markdown]
# The memory claims of the papers, checked on both tables: Zoom-In needs less memory than ATS with the same
# patches, and at the paper's settings ATS needs less than the CNN at full resolution.

# %%
for table, zoom, ats, cnn in ((costs, "Zoom-In", f"ATS-{N}", None), (paper_costs, "Zoom-In (N=10, 100x100)",
                              "ATS-10 (100x100)", "CNN s=1")):
    z, a = table[zoom]["peak_memory_mb"], table[ats]["peak_memory_mb"]
    assert z < a, f"{zoom} {z:.2f} MiB should need less memory than {ats} {a:.2f} MiB"
    if cnn is not None:
        c = table[cnn]["peak_memory_mb"]
        assert a < c, f"{ats} {a:.2f} MiB should need less memory than {cnn} {c:.1f} MiB"
        print(f"paper settings: Zoom-In {z:.2f} MiB < ATS-10 {a:.2f} MiB < full-resolution CNN {c:.1f} MiB")
    else:
        print(f"trained settings: Zoom-In {z:.2f} MiB < {ats} {a:.2f} MiB")

# %% [markdown]
# ## Where Zoom-In looks (figure 3)
#
# For test images with a sign: the image with the tile of highest $\alpha$ (yellow), that tile with its
# sub-tile of highest $\beta$ (green), and the sub-tile at full resolution. The ground-truth box of the sign
# is drawn in cyan on the image. First the plain Zoom-In, then the one that learned from the boxes.

# %%
with_sign = [int(test_idx[i]) for i in np.flatnonzero(test_set.labels[test_idx] > 0)[:3]]
truth = [[(x0, y0, x1 - x0, y1 - y0) for x0, y0, x1, y1 in test_set.roi_boxes(k)] for k in with_sign]
if not with_sign:
    print("no test image in this subset holds a sign: figure 3 is not drawn")
save_zoom_figures(trained, {"Zoom-In": "figure3_top_tile_subtile", BOXES: "figure3_top_tile_subtile_boxes"}
                  if with_sign else {}, [standardize(test_set.load_batch([k]), stats) for k in with_sign],
                  [test_set.read_image(k) for k in with_sign], truth, [test_set.labels[k] for k in with_sign],
                  traffic_signs.CLASSES, DATA_LABEL, out)

# %% [markdown]
# ## Why the plain methods stay at the always-EMPTY rate, measured
#
# Two measurements say where training stopped, instead of a guess. First, each method's training
# cross-entropy per epoch (the classification term alone, class-weighted as trained) beside the loss of the
# best constant prediction, the entropy of the class-weighted label frequencies (`results.constant_loss`): a
# curve that stays on that line has learned nothing from the pixels; one below it has.

# %%
curves = training_curves(results)
flat = constant_loss(train_set.labels[train_idx], len(traffic_signs.CLASSES), traffic_signs.CLASS_WEIGHTS)
save_figure(plot_curves(curves, flat, "best constant prediction", ylabel="training cross-entropy (weighted)",
                        title=f"training loss per epoch ({DATA_LABEL}, profile {profile!r})", ylim=(0, 2 * flat)),
            out, "training_loss")
print(f"best constant prediction {flat:.3f}; last epoch: "
      + ", ".join(f"{name} {c[-1]:.3f}" for name, c in curves.items()))

# %% [markdown]
# Second, where the trained attention lands on the test images with a sign (`attention.attention_on_objects`):
# its mass on the sign's box, the box's share of the attention map (the mass a uniform attention would put
# there), their ratio, and how often the map's highest location lies on the sign. For Zoom-In the map is
# $\alpha_c \beta^c_{c'}$ over the sub-tiles of every tile, for ATS its $\alpha$.

# %%
signed = [int(i) for i in np.flatnonzero(test_set.labels[test_idx] > 0)]  # positions in the test subset
attending = {name: trained[name] for name in ("Zoom-In", "Zoom-In (Res)", f"ATS-{N}", BOXES)}
on_sign = attention_on_objects(attending, [load_test([i]) for i in signed],
                               [test_set.roi_boxes(int(test_idx[i])) for i in signed]) if signed else []
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, {len(signed)} test images with a sign")
markdown_table(on_sign, digits=3) if on_sign else print("no test image with a sign: nothing to measure")

# %% [markdown]
# How to read the two. A loss that does not go below the constant's line says that the classifier has learned
# nothing it can use; an attention mass near the uniform one (ratio about 1, the peak rarely on the sign) says that
# the attention has not found the sign either, so the sub-tiles or patches the classifier is given rarely hold it.
# Each waits on the other, and in this budget neither starts (nor in the hand runs of ten times the epochs described
# in the settings, where the attention moved further off the signs). The boxes break that loop from outside:
# pre-trained on where the sign is, Zoom-In + boxes puts many times the uniform mass on it. The check, in the `cpu`
# profile on the stand-in: the plain Zoom-In's last-epoch loss is not below the constant's by more than 0.05, its
# attention on the sign is less than twice the uniform one, and Zoom-In + boxes's is more than ten times.

# %%
ratio = {r["method"]: r["mass / uniform"] for r in on_sign}
if on_sign:
    print(f"plain Zoom-In: last-epoch loss {curves['Zoom-In'][-1]:.3f} (best constant {flat:.3f}), attention on the sign "
          f"{ratio['Zoom-In']:.2f} times uniform; {BOXES}: {ratio[BOXES]:.1f} times uniform")
if profile == "cpu" and train_set.synthetic:
    assert curves["Zoom-In"][-1] > flat - 0.05, f"plain Zoom-In's loss went below the constant's: {curves['Zoom-In']}"
    assert ratio["Zoom-In"] < 2.0 < 10.0 < ratio[BOXES], f"attention on the sign, times uniform: {ratio}"

# %% [markdown]
# ## Trained longer: what the contrastive term does to an attention that has not found the sign
#
# The paper introduces its contrastive term "to improve the quality of the attention mechanisms used for sampling"
# (sec. 1) and credits "accurate target object localization achieved by the attention mechanism and contrastive
# learning" (sec. 4); its evidence is the ablation of table 4 (appendix I) on colon, NeedleCamelyon and Camelyon16,
# none on traffic signs (chapter 08 repeats the colon rows). For every image with a sign, $N$ sub-tiles are drawn
# from the complements $(1 - \alpha)/(T - 1)$ and $(1 - \beta)/(K_2 - 1)$ (our normalised reading of the paper's
# "$1 - a$") and the classifier is asked to call them EMPTY, the reference class of the paper's multi-class extension
# ($\mathcal{L}_{con}$, sec. 2.2; after the profile's warm-up, in `cpu` from the second epoch on). Once the attention
# holds the sign, the complement's draws miss it and EMPTY is their right answer. Before that, the term has another
# way down: an attention that gathers on one kind of region lets the classifier tell a complement draw from an
# attention draw by what the draw shows, and call the first EMPTY whatever the scene holds.
#
# Which of the two happens here is measured by training the plain Zoom-In twice more from the same initial weights
# on the same mini-batches, with and without $\mathcal{L}_{con}$ (`contrastive.with_and_without`; the profile's
# epochs and rate are in the settings; after the warm-up the two also differ in their random draws, which the
# contrastive forward shares), its attention on the signs of the test images probed after each epoch.

# %%
from dataclasses import replace
from zoomin_lib.chapters import contrastive
from zoomin_lib.chapters.attention import LazyInputs, attention_spread

CC = cfg["contrastive"]
study_settings = replace(settings["Zoom-In"], epochs=CC["epochs"], cosine_decay=CC["cosine"])
con_study = contrastive.with_and_without(
    "Zoom-In", methods["Zoom-In"], study_settings, lazy_batches(load_train, train_set.labels[train_idx], cfg["batch"], seed),
    lambda: lazy_batches(load_test, test_set.labels[test_idx], 8, seed, shuffle=False)(0), LazyInputs(load_test, signed),
    [test_set.roi_boxes(int(test_idx[i])) for i in signed],
    seed=seed, out=out, resume=resume, record={"profile": profile, "data": DATA_ID})
save_figure(contrastive.contrastive_figure(con_study, flat, f"plain Zoom-In, {CC['epochs']} epochs ({DATA_LABEL}, profile "
                                           f"{profile!r})"), out, "contrastive_study")
print(f"{len(signed)} test images with a sign; " + contrastive.study_text(con_study, flat, "the sign"))

# %% [markdown]
# Where each run's attention went, on every test image: the share of the locations it effectively uses
# ($e^{H(a)}$ over their number: 1 for a uniform attention) and its mass in the top, middle and bottom third of the
# scene (sky, horizon, near road; on a 1280x960 scene, the three rows of 320-pixel tiles, so this is $\alpha$'s mass
# per row of tiles). Then, for scenes with a sign and without, the probability of EMPTY that the classifier gives
# (sample mode, 2 draws of each kind per scene) to draws of the attention and to draws of the complement, the
# contrastive samples (`contrastive.draw_source_rows`). A classifier that reads the sign calls the attention's draws
# of an empty scene EMPTY as well; one that has learned to tell the two kinds of draw apart answers by the kind.

# %%
study_models = {k: m for k, (_, m) in con_study.items()}
test_inputs = LazyInputs(load_test, range(len(test_idx)))
spread = attention_spread(study_models, test_inputs)
display(markdown_table(spread, digits=3))
sources = contrastive.draw_source_rows(study_models, test_inputs, list(test_set.labels[test_idx] > 0), 0, "EMPTY",
                                       draws=2, seed=seed)
markdown_table(sources, digits=3)

# %% [markdown]
# How to read it. Without $\mathcal{L}_{con}$ the cross-entropy stays at the constant's and the attention where it
# started: nothing is learned, as above, only for longer. With it, $\mathcal{L}_{con}$ falls while the attention
# gathers on fewer locations in one part of the scene (the first table), where the signs are not: it puts less and
# less on them. The classifier then answers by the kind of draw: EMPTY for the complement's, not for the attention's,
# in scenes with a sign and without alike (the second table). The term is lowered without the sign, and the
# cross-entropy ends above the constant's: in this run the term works against the localisation the paper credits it
# with. It works here on a classifier that cannot yet read a sign (the first epoch's cross-entropy, not below
# the constant's; the paper's warm-up is 10 epochs of 747 scenes, `cpu`'s one of 100). One run, one seed; whether the
# term helps once the attention holds the sign is not measured here. The check, in the `cpu` profile on the
# stand-in: with the term, the last epoch's attention on the signs is below half the uniform one, its
# $\mathcal{L}_{con}$ below half its first, it uses less than 0.7 times the locations of the run without the term
# and holds more than half its mass in one third of the scene; without the term, the attention stays above 0.7 times
# uniform and the cross-entropy within 0.05 of the constant's or above; with the term, p(EMPTY) is at least 0.3
# higher for the complement's draws than for the attention's in both groups of scenes, without it less than 0.1 apart.

# %%
gap = contrastive.source_gaps(sources, "EMPTY")
curve = lambda label, key: contrastive.curve(con_study[label][0], key)  # per epoch
print("p(EMPTY), complement's draws minus attention's: " + ", ".join(f"{k[0]}, {k[1]}: {v:+.2f}" for k, v in gap.items()))
if profile == "cpu" and train_set.synthetic:
    W, WO = contrastive.WITH, contrastive.WITHOUT
    con, ratio_end = curve(W, "contrastive"), {k: curve(k, "val_mass_ratio")[-1] for k in (W, WO)}
    assert ratio_end[W] < 0.5 and con[-1] < 0.5 * con[study_settings.warmup_epochs], f"with L_con: {ratio_end}, {con}"
    assert ratio_end[WO] > 0.7 and curve(WO, "ce")[-1] > flat - 0.05, f"without L_con: {ratio_end}, {curve(WO, 'ce')}"
    where = {r["method"]: r for r in spread}
    thirds = [where[W][f"mass in the {t} third"] for t in ("top", "middle", "bottom")]
    used = {k: where[k]["locations used (exp H / K)"] for k in (W, WO)}
    assert used[W] < 0.7 * used[WO] and max(thirds) > 0.5, f"locations used: {used}; thirds with L_con: {thirds}"
    assert len(gap) == 4 and all(v > 0.3 for k, v in gap.items() if k[0] == W), gap
    assert all(abs(v) < 0.1 for k, v in gap.items() if k[0] == WO), gap

# %% [markdown]
# ## IPS on traffic signs: the thesis's regularisers and patch sizes (sec. 4.3, 4.5, 4.6)
#
# The thesis finds IPS struggling with little data (80 % validation accuracy from 184 images, table 2) and tries
# three remedies there:
#
# - **Semantic and Diversity losses** (sec. 3.3, after Zhang et al. 2024). Each of the 8 attention heads gets its
#   own MLP (eq. 12) that predicts the class from that head's output alone; the Semantic loss $L_p$ is the heads'
#   mean cross-entropy. The Diversity loss $L_d$ (eq. 10) is the mean cosine similarity of the heads' attention
#   maps over the $M$ patches: 1 when all heads attend alike, 0 when they attend to disjoint patches. The
#   objective is eq. 13, $L = L_b + L_p + w L_d$ (`ips.regulariser_terms`). Table 7: $w = 0.1$ and $0.25$ raise the
#   mean accuracy from 80 % to 84 % and 83 %, with twice the spread over seeds; larger weights lower it.
# - **Stochastic Top-K Instance Masking** (sec. 3.4). In training, each of the $K$ patches of highest attention
#   logit is masked (attention 0) with probability $P$, so that the model cannot lean on the same few patches.
#   With $M = 10$ every $K$ of table 9 makes all patches candidates (here: all but the lowest, `ips.top_k_mask`).
#   Table 9: every $(K, P)$ lowers the accuracy, to 44-57 %.
# - **The patch size** (sec. 4.3, table 3), $M$ fixed. On traffic signs 75x75 is best (85 %), IPS's own 100x100
#   gives 79 % and 25x25, about the smallest sign (27 px, sec. 9.6.2), the worst (71 %). From the attention maps
#   of sec. 9.6.2 and megapixel MNIST (fig. 6) the thesis concludes that **the classifier benefits from a patch
#   size equal to or lower than the smallest region of interest** (abstract; "a good rule of thumb", sec. 9.6.2);
#   its own table 3 on traffic signs does not show it.
#
# Each model below differs from IPS above in that one setting, and trains on the same mini-batches from the
# same seed. First the stand-in's signs, in pixels (the side of the smallest square holding each box):

# %%
sides = sign_sides(train_set.roi_boxes(int(i)) for i in train_idx)  # [signs], px
SMALLEST = float(sides.min()) if sides.size else float("nan")
print(f"{DATA_LABEL}: {sides.size} signs in the training images, {SMALLEST:.0f} to "
      f"{sides.max() if sides.size else float('nan'):.0f} px (median {np.median(sides) if sides.size else float('nan'):.0f}); "
      f"the thesis's smallest: {THESIS_TABLE3_PATCH['smallest_sign_px']} px; here, patches of "
      + ", ".join(f"{q} px ({q / SMALLEST:.1f}x the smallest)" for q in sorted(v.patch for v in variants
                                                                               if v.study == "patch")))

# %% [markdown]
# The studies' models, each trained and tested as IPS was (its regulariser terms added to the loss):

# %%
study = {name: ips_methods[name] for name in list(ips_methods)[1:]}
study_results, study_trained = train_methods(study, {name: ips_settings for name in study}, **train_kw,
                                             extra_terms={v.name(N, P): v.extra_terms() for v in variants})
ips_runs = {IPS: results[IPS], **study_results}

# %% [markdown]
# **Semantic + Diversity** measured here beside table 7 (quoted, its own columns; mean and std over 5 seeds,
# 150 epochs). $L_p$ and $w L_d$ are the training loss terms at the last epoch; $L_d$ near 1 means the heads
# still attend alike.

# %%
print(f"here: {DATA_LABEL}, {len(train_idx)} training and {len(test_idx)} test images, {IC['epochs']} epochs, "
      f"M = {N}, {P}x{P}; thesis: {THESIS_TABLE7_DIVERSITY['source']}, {THESIS_TABLE7_DIVERSITY['note']}")
markdown_table(diversity_rows(ips_runs, variants, N, THESIS_TABLE7_DIVERSITY), digits=3)

# %% [markdown]
# **STKIM** measured here beside table 9 (quoted; $K = P = 0$ is IPS without masking):

# %%
print(f"here: M = {N}, so min(K, M - 1) = {N - 1} of the {N} patches can be masked; thesis: "
      f"{THESIS_TABLE9_STKIM['source']}; {THESIS_TABLE9_STKIM['note']}")
markdown_table(stkim_rows(ips_runs, variants, N, THESIS_TABLE9_STKIM), digits=3)

# %% [markdown]
# **Patch sizes** measured here beside table 3. The cost of one inference (batch 1, as the table at the top) is
# measured for each patch size: with $M$ fixed, a smaller patch keeps fewer pixels in memory (the thesis's
# 1.65 GB at 100 px against 0.97 GB at 25 px, with its ResNet-18 and batch 16).

# %%
ips_models = {**ips_trained, **study_trained}
patch_models = {v.name(N, P): ips_models[v.name(N, P)] for v in variants if v.study == "patch"}
patch_costs = profile_methods(patch_models, example, generator=torch.Generator().manual_seed(seed),
                              min_run_time=cfg["timing"])
print(f"here: signs {SMALLEST:.0f} px and up; thesis: {THESIS_TABLE3_PATCH['source']}; {THESIS_TABLE3_PATCH['note']}")
markdown_table(patch_rows(ips_runs, variants, N, SMALLEST, THESIS_TABLE3_PATCH, patch_costs), digits=3)

# %% [markdown]
# ### The thesis's conclusions, checked at this scale
#
# By the book's rules: a model has learned something when it beats the always-EMPTY rate by two binomial
# standard errors; a variant beats IPS (or IPS beats it) when the difference exceeds three standard errors of
# the difference of two accuracies (`chapters.results.beats`).
#
# - Sec. 4.5: **the Semantic and Diversity losses improve IPS** on traffic signs. Checked as: the L_d variants
#   that beat IPS.
# - Sec. 4.6: **STKIM gives no improvement, and lowers the accuracy**. Checked as: no masking variant beats IPS;
#   the ones IPS beats.
# - Sec. 4.3 and 9.6.2: **a patch equal to or smaller than the smallest sign is best**. Checked as: the patch
#   sizes at most the smallest sign's that beat every larger one; and the best patch size.
# - Sec. 4.3: **a smaller patch needs less memory** ($M$ being fixed). Checked as: the peak memory of one
#   inference grows with the patch size.

# %%
verdicts = ips_verdicts(ips_runs, variants, N, test_set.labels[test_idx], SMALLEST)
by_patch = sorted((v.patch, patch_costs[v.name(N, P)]["peak_memory_mb"]) for v in variants if v.study == "patch")
verdicts["peak memory (MiB) by patch"] = dict(by_patch)
verdicts["memory grows with the patch"] = all(a[1] < b[1] for a, b in zip(by_patch, by_patch[1:]))
for key, value in verdicts.items():
    print(f"{key}: {value}")

# %% [markdown]
# What the `cpu` profile measured when this text was written, read against the thesis (the lines above are this
# run's own; the asserts below pin the outcomes, not the exact figures):
#
# - **Nothing was learned, so none of the accuracy claims can be decided at this scale.** After 2 epochs every
#   IPS model scores 22 % on the 100 test images, below the always-EMPTY rate of 54 %: the baseline, the L_d,
#   the masked and the 100x100 models answer 70 km/h for every image, the 20x20 one for all but one.
#   The class weights of appendix G make a sign class the cheapest constant answer, as for the other methods
#   above. The thesis's IPS had 150 epochs and a pre-trained ResNet-18.
# - **Semantic + Diversity improve IPS (table 7): not decidable.** 0.1xD scores what IPS does. Its $w L_d$
#   stays at 0.1, i.e. $L_d \approx 1$: the eight heads still attend alike.
# - **STKIM gives no gain and lowers the accuracy (table 9): "no gain" agrees, trivially; "lowers" does not
#   show** (the same 22 %). Where nothing is learned there is nothing to mask away.
# - **A patch at most the smallest sign is best: does not hold here, and is not decidable.** The 20 px patch,
#   the stand-in's smallest sign, scores what 50 and 100 px do. The thesis's own traffic-sign table 3 does not
#   show it either: 75 px is best there, 25 px (about its smallest sign) worst.
# - **A smaller patch needs less memory: holds.** One inference's peak grows with the patch (about 0.7, 4 and
#   16 MiB at 20, 50 and 100 px), as table 3's 0.97 to 1.65 GB does. Time does not follow: the 20 px patch is
#   the slowest here (thousands of small patches), as 25 px is in table 3.
#
# The asserts pin these outcomes for the `cpu` profile on the stand-in; `smoke` only runs the code, `paper`
# reports its verdicts without asserting them.

# %%
assert all(0.0 <= r[0].accuracy <= 1.0 for r in ips_runs.values())
if profile == "cpu" and train_set.synthetic:
    assert not verdicts["learned"], f"no IPS model beats the always-EMPTY rate in 2 epochs here: {verdicts}"
    assert not verdicts["diversity gains"] and not verdicts["stkim gains"], f"no regulariser gains: {verdicts}"
    assert not verdicts["stkim losses"], f"masking costs nothing where nothing is learned: {verdicts}"
    assert not verdicts["small patches win"], f"the smallest patch does not win here: {verdicts}"
    assert verdicts["memory grows with the patch"], f"peak memory should grow with the patch: {by_patch}"

# %% [markdown]
# Everything measured here goes to `metrics.json`: the settings, the data's problems, accuracy and confusion
# per method, per-class recall, both cost tables, how the box pre-training went and the IPS studies.

# %%
write_json(out / "metrics.json", {
    "profile": profile, "data": DATA_LABEL, "seed": seed, "settings": cfg, "problems": problems,
    "classes_absent": CLASSES_ABSENT, "per_class": per_class,
    "results": {n: {"accuracy": r[0].accuracy, "confusion": r[0].confusion} for n, r in results.items()},
    "costs_trained": costs, "costs_paper_settings": paper_costs, "box_pretraining": trained[BOXES].box_pretraining,
    "training_ce": curves, "constant_loss": flat, "attention_on_sign": on_sign,
    "contrastive_study": {"settings": CC, "history": {k: r.history for k, (r, _) in con_study.items()}, "spread": spread,
                          "draw_sources": sources},
    "ips_study": {"sign_sides_px": sides.tolist(), "verdicts": verdicts, "patch_costs": patch_costs,
                  "diversity": diversity_rows(ips_runs, variants, N, THESIS_TABLE7_DIVERSITY),
                  "stkim": stkim_rows(ips_runs, variants, N, THESIS_TABLE9_STKIM),
                  "patch": patch_rows(ips_runs, variants, N, SMALLEST, THESIS_TABLE3_PATCH, patch_costs)},
})
print("wrote", out / "metrics.json")
