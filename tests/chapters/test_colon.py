"""Tests of zoomin_lib.chapters.colon: chapter 03's table of cell types, memory ratios, run records and figures."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from zoomin_lib import builders
from zoomin_lib.book.paper_numbers import ZOOMIN_TABLE1_COLON
from zoomin_lib.chapters import colon
from zoomin_lib.train.protocol import FoldResult


def _data(n: int = 4, size: int = 500) -> SimpleNamespace:
    """A stand-in for ColonCancerData: n images, alternately positive and negative, one nucleus each."""
    return SimpleNamespace(
        labels=np.array([1, 0] * (n // 2)), ids=[f"img{i}" for i in range(n)],
        images=[np.full((size, size, 3), 0.5) for _ in range(n)],
        cells=[{"epithelial": np.array([[10.0, 20.0]])} for _ in range(n)],
    )


def test_annotation_rows_name_the_type_that_decides_the_label_and_the_absent_ones():
    rows = colon.annotation_rows({"epithelial": 3, "fibroblast": 0, "others": 2}, 5)
    assert rows == [
        {"cell type": "epithelial", "images with its annotation": "3 of 5", "note": "decides the label"},
        {"cell type": "fibroblast", "images with its annotation": "0 of 5", "note": "absent"},
        {"cell type": "others", "images with its annotation": "2 of 5", "note": ""},
    ]


def test_memory_ratios_divide_zoomin_by_the_others_here_and_in_table_1():
    paper = ZOOMIN_TABLE1_COLON["rows"]
    ats, cnn = colon.memory_ratios(1.0, 4.0, 10.0)
    assert (ats["ratio"], ats["measured here"]) == ("Zoom-In / ATS-10", 0.25)
    assert (cnn["ratio"], cnn["measured here"]) == ("Zoom-In / CNN (full resolution)", 0.1)
    assert ats["paper (table 1)"] == pytest.approx(paper["Zoom-In"]["memory_mb"] / paper["ATS-10"]["memory_mb"])
    assert cnn["paper (table 1)"] == pytest.approx(paper["Zoom-In"]["memory_mb"] / paper["CNN"]["memory_mb"])


def test_run_records_keep_repetition_fold_accuracy_and_auc_per_run():
    runs = {"ATS-10": [FoldResult("ATS-10", 0, 1, 0.75, None, 8, 0.5, history=[{"seconds": 3.0}])]}
    assert colon.run_records(runs) == {"ATS-10": [{"repetition": 0, "fold": 1, "accuracy": 0.75, "auc": None}]}


def test_examples_figure_shows_positives_then_negatives():
    fig = colon.examples_figure(_data(6), "stand-in")
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["img0: positive (stand-in)", "img2: positive (stand-in)",
                      "img1: negative (stand-in)", "img3: negative (stand-in)"]
    plt.close(fig)


def test_attention_figure_draws_a_row_per_image_and_leaves_the_models_in_eval_mode():
    torch.manual_seed(0)
    common = dict(in_channels=3, n_classes=2)
    zoom = builders.zoomin(**common, scale1=0.1, scale2=0.2, tile_size=250, patch_size=27, n_patches=10)
    ats = builders.ats(**common, scale=0.2, patch_size=27, n_patches=10)
    x = torch.randn(2, 3, 500, 500)  # [N, 3, H, W]
    fig = colon.attention_figure(zoom, ats, _data(2), x, [0], "stand-in")
    assert len(fig.axes) == 3 and fig.axes[0].get_title() == "img0 (label 1)"
    assert fig.axes[1].get_title().startswith("Zoom-In, p(pos) = ")
    assert fig.axes[2].get_title().startswith("ATS-10, p(pos) = ")
    assert not zoom.training and not ats.training
    plt.close(fig)
