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
# # Satellites: the functional map of the world (fMoW), images of every size
#
# Zoom-In sec. 4: ten fMoW categories (airport, amusement park, aquaculture, archaeological site, barn,
# border checkpoint, burial site, car dealership, construction site, crop field), from images between about
# 500x500 and 9000x9000 pixels. The class is set by a building or a layout that covers a small part of the
# image. Compared:
#
# | method | what it sees (paper settings) |
# |---|---|
# | **Zoom-In** (LeNet) | $\alpha$ over 250x250 tiles (appendix F) on $V(x, 0.25)$, $\beta$ over each drawn tile at $s_2 = 0.5$, $N = 30$ sub-tiles of 50x50; Adam lr $10^{-4}$, batch 32 |
# | **CNN** | the ResNet of chapter 03 on the image resized to 896x896 (the paper used EfficientNet-B0; no torchvision here) |
# | **Zoom-In + boxes** (ours, not in the paper) | Zoom-In that also learns from the object's box (fMoW ships one per image): a, b and f pre-trained on it, then the attention cross-entropy against it during training (`train.supervision`, as in chapter 06) |
#
# Zoom-In takes **each image at its own size**: the tile grid, the views and the number of tiles follow the
# image; nothing is resized to a common size. A mini-batch is a list of images, and the loss is the mean of
# the per-image losses (`train.protocol.per_image`). The contrastive loss of sec. 2.2 is left out here: it
# teaches the network to predict a reference class from low-attention regions, and fMoW has no
# background class to play that role.
#
# **Data.** With no `data_dir` the notebook runs on a **synthetic stand-in** generated here in the real
# fMoW layout (`data_prep.fmow`): aerial-like fields of varied size from CC0 textures with one small,
# class-specific object or layout per image. It is not fMoW, and no accuracy below is comparable to the
# paper's. With `-p data_dir /path/to/fmow-rgb` (holding `train/` and `val/`) the same notebook runs on the
# paper's subset of the real data (1,500 training images per class, all validation images as the test set).

# %% tags=["parameters"]
import os

profile = os.environ.get("ZOOMIN_PROFILE", "cpu")  # smoke | cpu | gpu | paper
data_dir = None  # an fMoW-rgb folder with train/ and val/; None: the synthetic stand-in
seed = 0
resume = False  # continue interrupted runs from their checkpoints under results/07_fmow/

# %% [markdown]
# The chapter's tools: the data set's reader, the builders of the methods, the training protocol for images
# of any size and the profiler, and the helpers it shares with chapter 06 (`zoomin_lib.chapters.signs`).

# %%
import numpy as np
import torch

from data_prep import fmow
from zoomin_lib.chapters.opening import open_chapter
from zoomin_lib import builders
from zoomin_lib.train.supervision import box_mask
from zoomin_lib.train.protocol import TrainSettings, image_stats, image_tensor, initial_model, standardize
from zoomin_lib.train.fingerprint import fingerprint
from zoomin_lib.train.profiling import profile_methods
from zoomin_lib.chapters.attention import attention_on_objects
from zoomin_lib.chapters.results import constant_loss, report_above_majority, result_rows, training_curves
from zoomin_lib.chapters.signs import (BOXES, add_box_method, box_fit_text, budget_text,
                                       save_zoom_figures, train_methods)
from zoomin_lib.chapters.fmow import examples_figure, image_loader
from zoomin_lib.infra.io import write_json
from zoomin_lib.book.paper_numbers import ZOOMIN_TABLE1_FMOW, paper_rows
from zoomin_lib.chapters.per_class import absent_note, per_class_rows
from zoomin_lib.book.plotting import plot_curves, save_figure
from zoomin_lib.book.report import markdown_table

# %% [markdown]
# ## Settings
#
# The `smoke` profile runs in seconds: a few images and one epoch, to check the mechanics, not the accuracy.

# %%
SMOKE = dict(synthetic=dict(n_train_per_class=1, n_test_per_class=1, min_size=500, max_size=1000),
             per_class=1, test_subset=10, n_patches=10, batch=4, epochs=1, lr=1e-3, cosine=False,
             cnn_size=224, cnn_epochs=1, timing=0.01, boxes=dict(pretrain={"a": 1, "b": 1, "f": 1}, epochs=1, lr=1e-4))

# %% [markdown]
# The `cpu` profile, the book's default on a 2-core CPU (8 minutes for the chapter), trains on a stand-in of
# 20 training and 8 test images per class with sides between 500 and 1250 pixels: still every size from a
# tile's two to five a side, each read at its own size, the object 96 pixels or more and a small part of its image, and
# the time of every method (the first-stage views, the CNN's resizing, the reading) grows with the pixels. It reads
# $N = 10$ sub-tiles (not 30), with batch 8 and 3 epochs at lr $10^{-3}$ with cosine decay: the paper's
# $10^{-4}$ is too slow for so few epochs, and $3 \cdot 10^{-3}$ killed every ReLU of f. Three epochs, as for
# every method here: when we tried more (on sides up to 1500 pixels), the plain Zoom-In's training loss stayed
# within 0.01 of $\ln 10$ (chance) over 5 epochs, so more epochs only cost time. The CNN trains on 448x448, also 3 epochs with
# cosine decay, and is profiled on 896x896 too. Zoom-In + boxes is pre-trained from the boxes (8, 6 and 12 epochs
# for a, b and f; a on whole views of every size, batch 1, is the costly part), then trained for 3 epochs at lr
# $10^{-4}$. Each method's cost is timed for 0.1 s per setting.

# %%
CPU = dict(synthetic=dict(n_train_per_class=20, n_test_per_class=8, min_size=500, max_size=1250),
           per_class=None, test_subset=None, n_patches=10, batch=8, epochs=3, lr=1e-3, cosine=True,
           cnn_size=448, cnn_epochs=3, timing=0.1, boxes=dict(pretrain={"a": 8, "b": 6, "f": 12}, epochs=3, lr=1e-4))

# %% [markdown]
# The `gpu` profile, for one H100-class GPU: a stand-in of 50 training and 20 test images per class (not 20 and 8)
# of up to 4000 pixels a side (not 1250; the paper's up to 6000), the paper's $N = 30$, batch 16 (not 32), 30
# epochs (not 200) at lr $10^{-3}$ with cosine decay, the CNN on the paper's 896x896 for 15 epochs, and Zoom-In +
# boxes pre-trained for 15, 10 and 20 epochs (a, b, f; a's batch-1 pass over whole views of every size is the
# costly part, on any device), then trained for 6 epochs at lr $10^{-4}$; its costs are timed for 0.3 s. These settings are sized by estimate (from this chapter's
# `cpu` costs and one colon run timed by hand on an H200, issue 16); this project has not yet run them on a GPU.

# %%
GPU = dict(synthetic=dict(n_train_per_class=50, n_test_per_class=20, min_size=500, max_size=4000),
           per_class=None, test_subset=None, n_patches=30, batch=16, epochs=30, lr=1e-3, cosine=True,
           cnn_size=896, cnn_epochs=15, timing=0.3, boxes=dict(pretrain={"a": 15, "b": 10, "f": 20}, epochs=6, lr=1e-4))

# %% [markdown]
# The `paper` profile holds the paper's settings: $N = 30$, batch 32, lr $10^{-4}$, 1,500 training images
# per class, the CNN on 896x896.

# %%
PAPER = dict(synthetic=dict(n_train_per_class=100, n_test_per_class=30, min_size=500, max_size=6000),
             per_class=fmow.PAPER_TRAIN_PER_CLASS, test_subset=None, n_patches=30, batch=32, epochs=200,
             lr=1e-4, cosine=False, cnn_size=896, cnn_epochs=200, timing=0.3,
             boxes=dict(pretrain={"a": 50, "b": 50, "f": 50}, epochs=200, lr=1e-4))

# %% [markdown]
# The opening picks the settings of the chosen profile, makes the chapter's results folder and seeds every
# random number generator.

# %%
cfg, out, device = open_chapter("07_fmow", {"smoke": SMOKE, "cpu": CPU, "gpu": GPU, "paper": PAPER}, profile, seed)

# %% [markdown]
# ## The data
#
# An image whose JSON lacks its `bounding_boxes` (its label and box), or whose `.jpg` is missing, truncated
# or of another size than its JSON says, is listed below and skipped; a JSON lacking only `gsd` or the size
# keeps its image. A category the data lack is named, and the figures and tables below cover the
# categories present.

# %%
root = data_dir if data_dir is not None else fmow.default_dataset(**cfg["synthetic"], seed=seed)
per_class = cfg["per_class"] if data_dir is not None else None  # the stand-in is used whole
train_set = fmow.load_fmow(root, "train", per_class=per_class, seed=seed)
test_set = fmow.load_fmow(root, "test")
DATA_LABEL = "synthetic stand-in" if train_set.synthetic else f"fMoW ({root})"
test_idx = np.arange(len(test_set))[: cfg["test_subset"]]
sides = train_set.sizes
problems = train_set.problems + test_set.problems
for p in problems:
    print("problem:", p)
CLASSES_ABSENT = absent_note({"train": train_set.labels, "test": test_set.labels[test_idx]}, fmow.CATEGORIES)
print(f"data: {DATA_LABEL}; {len(train_set)} training images, {len(test_idx)} test images, "
      f"{len(fmow.CATEGORIES)} classes; training image sides from {sides.min()} to {sides.max()} px; "
      f"{len(problems)} problem(s) above")
print(CLASSES_ABSENT)

# %% [markdown]
# **The real data beside the stand-in.** The table quotes what the paper says about the real images beside the
# same statistics measured on the training split's JSON metadata (image sizes and object boxes; a box's side is
# the square root of its area), then an object's side in pixels at Zoom-In's two views ($s_1 = 0.25$ and
# $s_2 = 0.5$, the paper's). The CNN has no single scale (it resizes every image to one size), so it has no row.
# The paper gives the range of image sizes but neither box sizes nor boxes per image, so only the image sizes
# can be compared: the stand-in's largest images are smaller than the real ones, for the budget (see the
# settings), and its objects were drawn to cover a small part of each image.

# %%
from zoomin_lib.chapters.standin import standin_table

VIEWS = {"Zoom-In's first stage": 0.25, "Zoom-In's second stage": 0.5}
standin_table(fmow.REAL_STATISTICS, fmow.measure_stand_in(train_set), VIEWS, data_label=None if train_set.synthetic else DATA_LABEL)

# %% [markdown]
# The checkpoints record which images they were trained and tested on, so that another selection or other
# files are never resumed from them. Every image is standardized with the colours of a few training images
# and read, at its own size, only when its mini-batch is.

# %%
DATA_ID = fingerprint([p.name for p in train_set.paths], train_set.labels, [test_set.paths[i].name for i in test_idx],
                      test_set.labels[test_idx])
stats = image_stats(train_set.read_image(i) for i in range(min(len(train_set), 20)))  # [1, 3, 1, 1] mean and std
train_idx = np.arange(len(train_set))
load_train, load_test = image_loader(train_set, train_idx, stats), image_loader(test_set, test_idx, stats)

# %% [markdown]
# One training image of each category present, with its size and the object's box: the object that sets
# the category covers a small part of an image whose size varies from one image to the next.

# %%
save_figure(examples_figure(train_set, DATA_LABEL), out, "examples");

# %% [markdown]
# ## Training
#
# Zoom-In with the tiles of appendix F and the CNN on a fixed size. Zoom-In trains without the contrastive
# loss (fMoW has no background class); the CNN at lr $10^{-3}$.

# %%
C = dict(in_channels=3, n_classes=len(fmow.CATEGORIES))
N = cfg["n_patches"]
CNN = f"CNN {cfg['cnn_size']}x{cfg['cnn_size']}"
methods = {
    "Zoom-In": lambda: builders.zoomin(**C, scale1=0.25, scale2=0.5, tile_size=250, patch_size=50, n_patches=N),
    CNN: lambda: builders.cnn(**C, size=cfg["cnn_size"]),
}
settings = {
    "Zoom-In": TrainSettings(epochs=cfg["epochs"], batch_size=cfg["batch"], lr=cfg["lr"], contrastive=False,
                             cosine_decay=cfg["cosine"]),
    CNN: TrainSettings(epochs=cfg["cnn_epochs"], batch_size=cfg["batch"], lr=1e-3, cosine_decay=cfg["cosine"]),
}

# %% [markdown]
# Zoom-In + boxes is the same network, pre-trained on the objects' boxes and then trained with the attention
# loss on them, as in chapter 06. A box becomes a mask over its image, of that image's size.

# %%
roi_mask = lambda k: box_mask(train_set.roi_boxes(k), *(int(v) for v in train_set.sizes[k]))  # [H, W]
train_images = lambda: ((load_train([i])[0], roi_mask(int(train_idx[i])), int(train_set.labels[train_idx[i]]))
                        for i in range(len(train_idx)))
add_box_method(methods, settings, train_images, cfg["boxes"], seed=seed)
train_masks = lambda idx: [roi_mask(int(train_idx[i]))[None] for i in idx]  # each [1, H_i, W_i]
print(budget_text(cfg, f"Zoom-In N = {N}", f"{CNN}:"))

# %% [markdown]
# Every method is trained in turn on the same mini-batches, a list of images of their own sizes whose loss is
# the mean of the per-image losses, and tested on the same test images; the last line says how well the
# pre-training of Zoom-In + boxes fitted the boxes.

# %%
results, trained = train_methods(methods, settings, load_train=load_train, train_labels=train_set.labels[train_idx],
                                 load_test=load_test, test_labels=test_set.labels[test_idx], batch=cfg["batch"],
                                 seed=seed, out=out, resume=resume, record={"profile": profile, "data": DATA_ID},
                                 box_masks=train_masks, images_of_any_size=True)
print(box_fit_text(trained[BOXES], "the object", "the training images", "the tiles holding some of it"))

# %% [markdown]
# ## Accuracy and cost
#
# Cost is measured on one test image at its own size (the first of the test set), batch 1, reading
# patches and tiles one at a time (`lean_inference`); the paper's settings ($N = 30$, CNN on 896x896) are
# profiled too. The CNN's cost does not depend on the image's size (it always sees 896x896 or 448x448);
# Zoom-In's grows only with the first-stage view.

# %%
example = load_test([0])[0]
to_profile = dict(trained)
to_profile["Zoom-In (N=30, paper)"] = builders.zoomin(**C, scale1=0.25, scale2=0.5, tile_size=250, patch_size=50, n_patches=30)
if cfg["cnn_size"] != 896:
    to_profile["CNN 896x896 (paper, profile only)"] = builders.cnn(**C, size=896)
costs = profile_methods(to_profile, example, generator=torch.Generator().manual_seed(seed), min_run_time=cfg["timing"])
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, example image {tuple(example.shape[-2:])}")
markdown_table(result_rows(results, costs), digits=3)

# %% [markdown]
# With ten balanced classes, guessing is right one time in ten; a method has learned something only when
# it beats the majority-class rate of the test set by more than chance allows (two binomial standard errors).

# %%
learned = report_above_majority(results, test_set.labels[test_idx], "majority-class",
                                f"this profile's budget ({cfg['epochs']} epochs of {len(train_idx)} images)")
if profile == "cpu" and train_set.synthetic:  # the claim this profile was sized for
    assert BOXES in learned, f"{BOXES} should beat the majority rate on the stand-in: {results[BOXES][0].accuracy:.3f}"

# %% [markdown]
# Per class: the recall of each category the test images have, and its mean over those categories (balanced
# accuracy); a category with no test image has no recall and is left out of the mean, and named.

# %%
print(f"Measured here: {DATA_LABEL}, profile {profile!r}; {CLASSES_ABSENT}")
per_class = per_class_rows(results, fmow.CATEGORIES)
markdown_table(per_class, digits=1)

# %% [markdown]
# What the paper reports on the real fMoW subset (GPU). Zoom-In's "FLOPs (B)" count multiply-accumulates
# (eq. 10).

# %%
markdown_table(paper_rows(ZOOMIN_TABLE1_FMOW))

# %% [markdown]
# The paper's memory claim, checked at its settings: Zoom-In with $N = 30$ needs less memory than the CNN on
# 896x896.

# %%
z, c = costs["Zoom-In (N=30, paper)"]["peak_memory_mb"], costs[next(k for k in costs if "896" in k)]["peak_memory_mb"]
assert z < c, f"Zoom-In {z:.2f} MiB should need less memory than the CNN on 896x896 {c:.1f} MiB"
print(f"paper settings: Zoom-In (N=30) {z:.2f} MiB < CNN on 896x896 {c:.1f} MiB")

# %% [markdown]
# ## Where Zoom-In looks
#
# For one test image per class (as far as the test set allows): the tile of highest $\alpha$ (yellow), its
# sub-tile of highest $\beta$ (green), and that sub-tile at full resolution; the object's box in cyan. First
# the plain Zoom-In, then the one that learned from the boxes.

# %%
shown = [int(np.flatnonzero(test_set.labels[test_idx] == c)[0]) for c in range(len(fmow.CATEGORIES))
         if (test_set.labels[test_idx] == c).any()][:4]
keys = [int(test_idx[i]) for i in shown]
save_zoom_figures(trained, {"Zoom-In": "top_tile_subtile", BOXES: "top_tile_subtile_boxes"},
                  [standardize(image_tensor(test_set.read_image(k)), stats) for k in keys],
                  [test_set.read_image(k) for k in keys], [test_set.boxes[k] for k in keys],
                  [test_set.labels[k] for k in keys], fmow.CATEGORIES, DATA_LABEL, out)

# %% [markdown]
# ## Why plain Zoom-In stays at chance, measured
#
# Two measurements say where training stopped. First, each method's training cross-entropy per epoch (the
# classification term alone) beside the loss of the best constant prediction, the entropy of the training labels
# ($\ln 10$ for ten balanced classes): a curve on that line has learned nothing from the pixels.

# %%
curves = training_curves(results)
flat = constant_loss(train_set.labels, len(fmow.CATEGORIES))
save_figure(plot_curves(curves, flat, "best constant prediction", ylabel="training cross-entropy",
                        title=f"training loss per epoch ({DATA_LABEL}, profile {profile!r})"), out, "training_loss")
print(f"best constant prediction {flat:.3f}; last epoch: "
      + ", ".join(f"{name} {c[-1]:.3f}" for name, c in curves.items()))

# %% [markdown]
# Second, where Zoom-In's attention $\alpha_c \beta^c_{c'}$ (over the sub-tiles of every tile) lands on the test
# images (`attention.attention_on_objects`): its mass on the object's box, the box's share of the map (the mass a
# uniform attention would put there), their ratio, and how often the map's highest location lies on the object.
# The first row is the plain Zoom-In before training: the weights its run started from, drawn again from the
# same seed (`protocol.initial_model`), so the table shows what training changed.

# %%
INITIAL = "Zoom-In, initial weights"
attending = {INITIAL: initial_model(methods["Zoom-In"], seed, "cpu")[0],
             **{name: trained[name] for name in ("Zoom-In", BOXES)}}
on_object = attention_on_objects(attending, [load_test([i])[0] for i in range(len(test_idx))],
                                 [test_set.roi_boxes(int(k)) for k in test_idx])
print(f"Measured here: {DATA_LABEL}, profile {profile!r}, {len(test_idx)} test images, each at its own size")
markdown_table(on_object, digits=3)

# %% [markdown]
# How to read the two. A training loss on the constant's line says that the classifier $f$ has learned nothing it
# can use from the sub-tiles it is given; an attention mass near the uniform one (ratio about 1, the peak rarely on
# the object) says that $a$ and $b$ have not found the object either, so the sub-tiles $f$ is given rarely hold it.
# Each stage waits on the other: the plateau that chapter 09 measures on megapixel MNIST, where ATS leaves it after a
# few epochs and Zoom-In within that budget does not. The boxes attack the loop from outside, by telling $a$ and $b$
# where the object is; how far they moved the attention within this profile's budget is the last row against the
# first. Zoom-In + boxes starts from the same initial weights (its pre-training begins with the
# network the plain run begins with), so the first row is where both runs start.
#
# Why the loop is hard to leave here. "$N$ x mass" below is $N$ times the attention's mass on the object's box:
# about how many of the $N$ sub-tiles drawn from an image are centred on the object (exactly so for independent
# draws from the map; Zoom-In draws its tiles with replacement and distinct sub-tiles within a tile, which
# changes it little while no location holds much of the mass). It is measured on the test images, whose objects
# are drawn as the training images' are. Where it is well under one, most training images' draws miss the
# object, and the loss that should teach $a$ and $b$ where it lies is taken on sub-tiles of background. That is
# our reading of the measurements, not a measurement of the gradient.
#
# The checks, in the `cpu` profile on the stand-in: the plain Zoom-In's last-epoch loss lies within 0.05 of the
# constant's; its attention on the object is less than twice the uniform one; training moved that ratio less than
# half as far from its start as the boxes did; and its initial $N$ x mass is under one.

# %%
plain, before, boxed = (next(r for r in on_object if r["method"] == name) for name in ("Zoom-In", INITIAL, BOXES))
share = plain["uniform mass (object's share)"]
print(f"the object's share of the map {100 * share:.1f} % (mean over {plain['images']} test images)")
for r in (before, plain, boxed):
    print(f"{r['method']}: attention on the object {r['mass / uniform']:.2f} times the uniform mass, peak on it in "
          f"{r['peak on the object %']:.0f} % of the test images; N x mass on the object {N * r['mass on the object']:.2f} of {N}")
print(f"plain Zoom-In: last-epoch training loss {curves['Zoom-In'][-1]:.3f} (best constant {flat:.3f})")
if profile == "cpu" and train_set.synthetic:
    moved, guided = abs(plain["mass / uniform"] - before["mass / uniform"]), boxed["mass / uniform"] - before["mass / uniform"]
    assert abs(curves["Zoom-In"][-1] - flat) < 0.05, f"plain Zoom-In's loss left the constant's: {curves['Zoom-In']}"
    assert plain["mass / uniform"] < 2.0, f"plain Zoom-In's attention found the object: {plain}"
    assert moved < 0.5 * guided, f"training moved the plain attention as far as the boxes did: {on_object}"
    assert N * before["mass on the object"] < 1, f"the initial draws often hold the object: {before}"

# %% [markdown]
# Everything measured here goes to `metrics.json`: the settings, the data's problems, accuracy and confusion
# per method, per-class recall, the cost table, the example's size and how the box pre-training went.

# %%
write_json(out / "metrics.json", {
    "profile": profile, "data": DATA_LABEL, "seed": seed, "settings": cfg, "problems": problems,
    "classes_absent": CLASSES_ABSENT, "per_class": per_class,
    "results": {n: {"accuracy": r[0].accuracy, "confusion": r[0].confusion} for n, r in results.items()},
    "costs": costs, "example_size": list(example.shape[-2:]), "box_pretraining": trained[BOXES].box_pretraining,
    "training_ce": curves, "constant_loss": flat, "attention_on_object": on_object,
})
print("wrote", out / "metrics.json")
