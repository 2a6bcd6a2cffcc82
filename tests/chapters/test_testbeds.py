"""Tests of zoomin_lib.chapters.testbeds: canvases, the patch encoder and ROI detector, needle maps, multi-task IPS, O2I helpers."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from data_prep import needle_mnist as nm
from data_prep import o2i
from zoomin_lib.chapters import testbeds as tb
from zoomin_lib.infra.io import read_json


@pytest.fixture(scope="module")
def needle(tmp_path_factory) -> Path:
    """A small NeedleMNIST at 256 px (25 distractors)."""
    return nm.generate(tmp_path_factory.mktemp("needle") / "data", 6, 0, 4, seed=2, canvas_size=256)


def test_canvas_set_loads_scaled_canvases_with_and_without_cache(needle):
    data = nm.NeedleMNIST(needle, "train")
    lazy, cached = tb.CanvasSet(data, [4, 1, 2]), tb.CanvasSet(data, [4, 1, 2], cache=True)
    x = lazy.load([0, 2])
    assert x.shape == (2, 1, 256, 256) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert torch.equal(x[0, 0], torch.from_numpy(data.canvas(4)).float() / 255)
    assert torch.equal(x, cached.load([0, 2])) and len(lazy) == 3


def test_patch_encoder_sees_a_32px_window_at_stride_8():
    torch.manual_seed(0)
    enc = tb.PatchEncoder(1, dim=12)
    assert enc(torch.rand(5, 1, 32, 32)).shape == (5, 12) and enc.out_features == 12
    assert enc.feature_map(torch.rand(1, 1, 50, 50)).shape == (1, 12, 3, 3)
    x = torch.rand(1, 1, 64, 64)
    fmap = enc.feature_map(x)  # [1, 12, 5, 5]
    for i, j in ((0, 0), (2, 3), (4, 4)):
        window = x[..., 8 * i : 8 * i + 32, 8 * j : 8 * j + 32]
        assert torch.allclose(fmap[0, :, i, j], enc.feature_map(window)[0, :, 0, 0], atol=1e-5)
    with pytest.raises(ValueError):
        enc(torch.rand(1, 1, 20, 40))
    normed = tb.PatchEncoder(1, dim=12, layer_norm=True)
    p = torch.rand(5, 1, 32, 32)
    raw = normed.feature_map(p).amax(dim=(2, 3))  # [5, 12]
    assert torch.allclose(normed(p), torch.nn.functional.layer_norm(raw, (12,)), atol=1e-6)
    assert torch.allclose(normed(p).mean(dim=1), torch.zeros(5), atol=1e-5)


def test_dense_detector_map_is_the_window_classifier_at_every_cell():
    torch.manual_seed(1)
    det = tb.RoiDetector()
    x = torch.rand(2, 1, 48, 64)
    dense = det.dense(x)  # [2, 11, 6, 8]
    assert dense.shape == (2, 11, 6, 8)
    padded = torch.nn.functional.pad(x, (12,) * 4)
    for i, j in ((0, 0), (3, 5), (5, 7)):  # cell (i, j): the window centred at (8i + 4, 8j + 4)
        window = padded[..., 8 * i : 8 * i + 32, 8 * j : 8 * j + 32]
        assert torch.allclose(dense[:, :, i, j], det(window), atol=1e-5)
    with pytest.raises(ValueError, match="multiples"):
        det.dense(torch.rand(1, 1, 50, 64))


def test_needle_centers_point_at_the_three(needle):
    data = nm.NeedleMNIST(needle, "test")
    centers = tb.needle_centers(data)
    for i in range(len(data)):
        if data.label(i):
            k = int(np.flatnonzero(data.classes[i] == 3)[0])
            assert np.array_equal(centers[i], data.positions[i, k] + 14)
        else:
            assert (centers[i] == -1).all()


def test_roi_windows_hold_labelled_digits_and_correct_none_windows(needle):
    data = nm.NeedleMNIST(needle, "train")
    windows, labels = tb.roi_windows(data, range(len(data)), per_canvas=20, none_per_canvas=10,
                                     rng=np.random.default_rng(0), needle_share=0.5)
    assert windows.shape == (len(data) * 30, 32, 32) and windows.dtype == np.uint8
    assert set(np.unique(labels)) <= set(range(11)) and (labels == 3).sum() > 0 and (labels == tb.NONE).sum() > 0
    center = np.array([100, 100])
    digits = np.array([[103, 98], [160, 160]])
    assert tb._window_label(center, digits, np.array([7, 3]), jitter=4) == 7
    assert tb._window_label(center, np.array([[106, 100]]), np.array([3]), jitter=4) is None
    assert tb._window_label(center, np.array([[110, 100]]), np.array([3]), jitter=4) == tb.NONE


def test_roi_windows_pasted_digits_are_exact_when_centred(needle):
    data = nm.NeedleMNIST(needle, "train")
    windows, labels = tb.roi_windows(data, [0], per_canvas=40, none_per_canvas=0, rng=np.random.default_rng(3), jitter=0)
    images, pool_labels = tb.train_pool(data)
    for w, lab in zip(windows, labels):
        box = w[2:30, 2:30]
        assert any(np.array_equal(box, d) for d in images[pool_labels == lab])


def test_train_roi_detector_and_needle_maps_shapes(needle):
    data = nm.NeedleMNIST(needle, "train")
    windows, labels = tb.roi_windows(data, range(3), 8, 4, np.random.default_rng(1))
    det, losses = tb.train_roi_detector(windows, labels, epochs=2, batch_size=16)
    assert len(losses) == 2 and all(np.isfinite(losses))
    maps = tb.needle_maps(det, tb.CanvasSet(data, [0, 1, 2]), batch_size=2)
    assert maps.shape == (3, 1, 32, 32) and float(maps.min()) >= 0
    raw = tb.needle_maps(det, tb.CanvasSet(data, [1]), dilate=1)  # [1, 1, 32, 32]
    padded = torch.nn.functional.pad(tb.CanvasSet(data, [1]).load([0]), (12,) * 4)
    with torch.no_grad():
        logp = torch.log_softmax(det(padded[..., 8 * 5 : 8 * 5 + 32, 8 * 9 : 8 * 9 + 32]), dim=1)[0]  # cell (5, 9)
    odds = logp[3] - torch.logsumexp(torch.cat((logp[:3], logp[4:])), dim=0)
    assert float(raw[0, 0, 5, 9]) == pytest.approx(max(float(odds), 0.0), abs=1e-4)
    assert torch.equal(maps[1:2], torch.nn.functional.max_pool2d(raw, 3, 1, 1))
    rank = tb.needle_rank(maps, tb.needle_centers(data)[:3])
    assert set(rank) == {"needle_mean", "elsewhere_mean", "louder", "negatives_max"}


def test_needle_rank_on_a_hand_made_map():
    maps = torch.zeros(3, 1, 16, 16)
    maps[0, 0, 5, 6] = 0.9  # needle of canvas 0 at pixel (5*8+4, 6*8+4): loudest
    maps[0, 0, 12, 12] = 0.5
    maps[1, 0, 2, 2] = 0.8  # canvas 1: the needle is quiet, something else is loud
    maps[1, 0, 10, 10] = 0.1
    maps[2, 0, 0, 0] = 0.4  # canvas 2 has no needle
    centers = np.array([[44, 52], [84, 84], [-1, -1]])
    r = tb.needle_rank(maps, centers)
    assert r["louder"] == 0.5 and r["needle_mean"] == pytest.approx(0.5) and r["negatives_max"] == pytest.approx(0.4)


class _FixedSelector(nn.Module):
    """A fake model whose selected patch centres are given."""

    eval_mode = "topk"

    def __init__(self, centers: torch.Tensor, patch: int) -> None:
        super().__init__()
        self.c, self.patch_size = centers, (patch, patch)

    def forward(self, x, mode="topk"):
        return SimpleNamespace(centers=self.c[: x.shape[0]])


def test_needle_found_maps_centres_and_patch_extents():
    load = lambda idx: torch.zeros(len(idx), 1, 8, 8)  # noqa: E731
    needles = np.array([[100, 100], [300, 40]])
    model = _FixedSelector(torch.tensor([[[110, 90], [0, 0]], [[0, 0], [0, 0]]]), patch=32)
    assert tb.needle_found(model, load, [0, 1], needles) == 0.5  # |(100,100)-(110,90)| within [-16, 16)
    far = _FixedSelector(torch.tensor([[[117, 100]], [[300, 40]]]), patch=32)
    assert tb.needle_found(far, load, [0, 1], needles) == 0.5  # 100 < 117 - 16: outside
    on_map = _FixedSelector(torch.tensor([[[12, 12]], [[37, 4]]]), patch=8)  # map cells; image = 8 * cell + 4
    assert tb.needle_found(on_map, load, [0, 1], needles, scale=8, offset=4) == 1.0


def test_found_by_chance_is_the_covered_share():
    one = _FixedSelector(torch.zeros(1, 1, 2), patch=32)
    one.n_patches = 1
    assert tb.found_by_chance(one, 1024) == pytest.approx(32**2 / 1024**2)
    zoom = tb.zoomin_with_encoder(scale1=0.25, scale2=0.5, tile_size=64, patch_size=32, n_patches=30)
    assert tb.found_by_chance(zoom, 1024) == pytest.approx(30 * 32**2 / 1024**2)
    ips = tb.ips_with_encoder(patch_size=8, memory_size=10, iter_size=4)
    assert tb.found_by_chance(ips, 1024, scale=8) == pytest.approx(10 * 64**2 / 1024**2)
    assert tb.found_by_chance(ips, 16, scale=8) == 1.0


def test_builders_run_forward_on_small_canvases():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 128, 128)
    zoom = tb.zoomin_with_encoder(scale1=0.25, scale2=0.5, tile_size=64, patch_size=32, n_patches=3)
    assert zoom(x, mode="topk").logits.shape == (2, 2) and zoom(x, mode="sample").logits.shape == (2, 2)
    ips = tb.ips_with_encoder(n_classes=[10, 10], patch_size=32, memory_size=4, iter_size=5)
    out = ips(x)
    assert [t.shape for t in out.logits] == [(2, 10), (2, 10)] and out.indices.shape == (2, 4)


def test_o2i_noise_scales_with_area_and_dataset_is_cached(tmp_path, monkeypatch):
    assert tb.o2i_noise_for(28, 3000) == 800 and tb.o2i_noise_for(112, 3000) == 200
    assert tb.o2i_noise_for(28, 300) == 8 and tb.o2i_noise_for(56, 300) == 6
    assert tb.o2i_noise_for(28, 300, reference_canvas=1500, reference_count=800) == 32
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    root = tb.o2i_dataset(28, 3, 2, canvas_size=300, thickness=1.4)
    params = read_json(root / "parameters.json")
    assert params["canvas_size"] == 300 and params["noise"]["count"] == 8 and params["noise"]["thickness"] == 1.4
    data = o2i.O2IMNIST(root, "val")
    assert len(data) == 2 and data.canvas(1).shape == (300, 300)
    stamp = (root / "train.npz").stat().st_mtime_ns
    assert tb.o2i_dataset(28, 3, 2, canvas_size=300, thickness=1.4) == root
    assert (root / "train.npz").stat().st_mtime_ns == stamp


def test_figure8_views_and_crops_cut_the_needle_at_both_scales():
    x = torch.zeros(1, 1, 64, 64)
    x[0, 0, 20:48, 8:36] = 1.0  # the needle's box: centre (34, 22)
    fig = tb.plot_views(x, (34, 22))
    assert [ax.get_title() for ax in fig.axes] == ["canvas, 64x64", "view V(x, 0.25), 16x16", "ROI mask: the 3"]
    mask = fig.axes[2].images[0].get_array()
    assert mask.shape == (64, 64) and mask.sum() == 28 * 28 and mask[20:48, 8:36].all()
    data = SimpleNamespace(positions=np.array([[[20, 8], [0, 36], [32, 28]]]), classes=np.array([[3, 7, 1]]))
    fig = tb.plot_needle_crops(x, data, 0, (34, 22), n_neighbours=2)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["the 3, full resolution", "the 3 at s1 = 0.25", "a 1 at s1", "a 7 at s1"]
    shapes = [ax.images[0].get_array().shape for ax in fig.axes]
    assert shapes == [(28, 28), (7, 7), (7, 7), (7, 7)]
    assert np.asarray(fig.axes[0].images[0].get_array()).min() == 1.0  # the full-resolution crop is the needle


def test_sorted_attention_sorts_each_canvas_pooling_weights_in_eval_mode():
    torch.manual_seed(0)
    x = torch.rand(5, 1, 96, 96)
    ips = tb.ips_with_encoder(n_classes=[10, 10], patch_size=32, memory_size=4, iter_size=5, mask_top_k=2, mask_prob=1.0)
    weights = tb.sorted_attention(ips, lambda idx: x[idx], range(5), batch_size=2)  # [5, M]
    assert weights.shape == (5, 4) and torch.allclose(weights.sum(1), torch.ones(5))
    assert (weights[:, :-1] >= weights[:, 1:]).all() and (weights > 0).all()  # sorted; STKIM masks nothing in eval
    with torch.no_grad():
        by_hand = ips.eval()(x).weights.sort(dim=1, descending=True).values
    torch.testing.assert_close(weights, by_hand)
    ips.train()
    tb.sorted_attention(ips, lambda idx: x[idx], [0])
    assert ips.training  # its mode restored
    with pytest.raises(ValueError, match="at least one"):
        tb.sorted_attention(ips, lambda idx: x[idx], [])


def test_attention_density_figure_has_one_panel_per_group_and_one_line_per_configuration():
    curves = {"none": np.array([0.7, 0.2, 0.1]), "K=1": np.array([0.5, 0.3, 0.2]), "P=0.6": np.array([0.4, 0.4, 0.2])}
    fig = tb.plot_attention_densities(curves, {"K varies": ["none", "K=1"], "P varies": ["none", "P=0.6"]})
    assert [ax.get_title() for ax in fig.axes] == ["K varies", "P varies"]
    assert [len(ax.lines) for ax in fig.axes] == [2, 2]
    assert list(fig.axes[1].lines[1].get_ydata()) == [0.4, 0.4, 0.2] and list(fig.axes[0].lines[0].get_xdata()) == [1, 2, 3]


def test_o2i_split_takes_the_first_training_canvases_and_all_validation_ones(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    root = tb.o2i_dataset(28, 4, 2, canvas_size=300)
    train, val, y_train, y_val = tb.o2i_split(root, 3)
    assert len(train) == 3 and len(val) == 2 and y_train.shape == (3, 13) and y_val.shape == (2, 13)
    data = o2i.O2IMNIST(root, "train")
    assert y_train[:, 0].tolist() == list(data.targets["maj"][:3])
    assert torch.equal(train.load([2])[0, 0], torch.from_numpy(data.canvas(2)).float() / 255)
    with pytest.raises(ValueError, match="4 training canvases"):
        tb.o2i_split(root, 5)


def test_train_ips_tasks_trains_what_part_2_trains_and_takes_the_regularisers(tmp_path, monkeypatch):
    from zoomin_lib.chapters import multitask as mt
    from zoomin_lib.train.protocol import TrainSettings, lazy_batches

    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    split = tb.o2i_split(tb.o2i_dataset(28, 4, 2, canvas_size=300), 4)
    train, val, y_train, y_val = split
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-3)
    run, model = tb.train_ips_tasks("plain", split, settings, memory_size=3, iter_size=36, seed=1)
    by_hand, _ = mt.train_tasks(  # chapter 10's Part 2, written out
        "plain", lambda: tb.ips_with_encoder(n_classes=[10] * 4, patch_size=50, memory_size=3, iter_size=36), settings,
        lazy_batches(train.load, y_train, 2, 1), lazy_batches(val.load, y_val, 16, 1, shuffle=False), run_seed=1)
    assert run.metrics == by_hand.metrics and run.bag_loss().tolist() == by_hand.bag_loss().tolist()
    assert model.head_mlps is None and model.pool.mask_top_k == 0
    reg, model = tb.train_ips_tasks("reg", split, settings, memory_size=3, iter_size=36, seed=1, semantic=True,
                                    mask_top_k=1, mask_prob=0.5, extra_terms=mt.regulariser_terms(1.0, 2.0))
    assert model.head_mlps is not None and model.pool.mask_top_k == 1
    assert {"semantic", "diversity"} <= set(reg.history[0])
