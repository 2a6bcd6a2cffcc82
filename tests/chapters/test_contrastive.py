"""What the contrastive term does to the attention: the runs with and without it, the draws' sources, the spread."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoomin_lib import builders
from zoomin_lib.chapters.attention import LazyInputs, attention_map, attention_on_objects, attention_spread
from zoomin_lib.chapters.contrastive import (WITH, WITHOUT, contrastive_figure, curve, draw_source_rows, source_gaps, study_text,
                                             with_and_without)
from zoomin_lib.geometry import view_size
from zoomin_lib.train.checkpoints import settings_differences
from zoomin_lib.train.protocol import FoldResult, TrainSettings, lazy_batches


class _Peaked(torch.nn.Module):
    """An ATS-like stand-in on V(x, 0.25): scores `peak` inside a fixed [h, w] mask, 0 elsewhere."""

    def __init__(self, mask: torch.Tensor, peak: float) -> None:
        super().__init__()
        self.attention, self.scale = True, 0.25
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.mask, self.peak = mask, peak

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return (self.mask.flatten().float() * self.peak).expand(x.shape[0], -1)  # [B, h*w]


def _spread_reference(a: torch.Tensor) -> tuple[float, list[float]]:
    """exp(H) / K and the mass per third of the rows, location by location, of a renormalised to sum 1."""
    a = a.double() / a.double().sum()
    h, w = a.shape
    entropy, thirds = 0.0, [0.0, 0.0, 0.0]
    for r in range(h):
        for c in range(w):
            p = float(a[r, c])
            entropy -= p * math.log(p) if p > 0 else 0.0
            thirds[(3 * r) // h] += p
    return math.exp(entropy) / (h * w), thirds


def test_attention_spread_matches_a_location_by_location_reference():
    hw = view_size((120, 160), 0.25)  # (30, 40)
    mask = torch.zeros(hw, dtype=torch.bool)
    mask[:6, 10:20] = True  # 60 locations in the top third
    x = torch.zeros(1, 3, 120, 160)
    rows = {r["method"]: r for r in attention_spread({"flat": _Peaked(mask, 0.0), "top": _Peaked(mask, 40.0)}, [x, x])}
    assert rows["flat"]["locations used (exp H / K)"] == pytest.approx(1.0, abs=1e-6)  # float32 softmax
    assert [rows["flat"][f"mass in the {k} third"] for k in ("top", "middle", "bottom")] == pytest.approx([1 / 3] * 3, abs=1e-6)
    assert rows["top"]["locations used (exp H / K)"] == pytest.approx(60 / 1200, rel=1e-6)
    assert rows["top"]["mass in the top third"] == pytest.approx(1.0, abs=1e-6)
    torch.manual_seed(0)
    model = builders.ats(in_channels=3, n_classes=2, scale=0.2, patch_size=8, n_patches=2)
    images = [torch.randn(1, 3, 70, 50), torch.randn(1, 3, 40, 90)]  # 14 and 8 rows: thirds of unequal size
    used, thirds = zip(*[_spread_reference(attention_map(model.eval(), x)[0]) for x in images])
    (row,) = attention_spread({"ats": model}, images)
    assert row["images"] == 2
    assert row["locations used (exp H / K)"] == pytest.approx(np.mean(used), rel=1e-9)
    assert [row[f"mass in the {k} third"] for k in ("top", "middle", "bottom")] == pytest.approx(np.mean(thirds, axis=0))
    zoom = builders.zoomin(in_channels=3, n_classes=2, scale1=0.1, scale2=0.2, tile_size=40, patch_size=8, n_patches=2)
    x = torch.randn(1, 3, 70, 50)  # not a multiple of the tile: the map is cropped to the image
    cropped = attention_map(zoom.eval(), x)[0]  # [14, 10] of the [16, 16] grid of 2x2 tiles at s2
    assert tuple(cropped.shape) == (14, 10)
    (row,) = attention_spread({"zoom": zoom}, [x])
    used, thirds = _spread_reference(cropped)
    assert row["locations used (exp H / K)"] == pytest.approx(used, rel=1e-9)
    assert [row[f"mass in the {k} third"] for k in ("top", "middle", "bottom")] == pytest.approx(thirds)
    assert sum(thirds) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="at least one image"):
        attention_spread({"ats": model}, [])


class _BySource(torch.nn.Module):
    """p(class 0) is the image's fill value for the training forward and 1 minus it for the contrastive one; counts calls."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))
        self.calls = {False: 0, True: 0}

    def forward(self, x, mode="sample", generator=None, contrastive=False):
        assert mode == "sample" and not self.training
        self.calls[contrastive] += 1
        fill = float(x.flatten()[0])
        p0 = 1 - fill if contrastive else fill
        return type("Out", (), {"logits": torch.tensor([[p0, 1 - p0]]).log()})()


def test_draw_source_rows_average_each_source_per_group():
    stub = _BySource()
    fills = [0.1, 0.6, 0.2, 0.3, 0.8]
    images = [torch.full((1, 3, 8, 8), f) for f in fills]
    rows = draw_source_rows({"stub": stub}, images, [True, False, True, True, False], 0, "EMPTY", draws=3)
    assert [(r["test images"], r["images"]) for r in rows] == [("without it", 2), ("with the object", 3)]
    for r, group in zip(rows, ([0.6, 0.8], [0.1, 0.2, 0.3])):
        assert r["p(EMPTY) from the attention's draws"] == pytest.approx(np.mean(group))
        assert r["p(EMPTY) from the complement's draws"] == pytest.approx(1 - np.mean(group))
    assert stub.calls == {False: 15, True: 15}  # draws per image and source
    only_with = draw_source_rows({"stub": stub}, images[:1], [True], 0, "EMPTY", draws=1)
    assert [r["test images"] for r in only_with] == ["with the object"]
    with pytest.raises(ValueError, match="one has_object flag per image"):
        draw_source_rows({"stub": stub}, images, [True], 0, "EMPTY")


def test_draw_source_rows_of_a_real_model_are_its_mean_softmax_per_source():
    torch.manual_seed(1)
    model = builders.ats(in_channels=3, n_classes=3, scale=0.25, patch_size=8, n_patches=2).eval()
    images = [torch.randn(1, 3, 40, 40), torch.randn(1, 3, 40, 40)]
    (row,) = draw_source_rows({"ats": model}, images[:1], [False], 2, "normal", draws=2, seed=5)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        expect = []
        for con in (False, True):
            expect.append(np.mean([float(torch.softmax(model(images[0], mode="sample", generator=g, contrastive=con).logits, 1)[0, 2])
                                   for _ in range(2)]))
    assert row["p(normal) from the attention's draws"] == pytest.approx(expect[0], rel=1e-6)
    assert row["p(normal) from the complement's draws"] == pytest.approx(expect[1], rel=1e-6)


def test_with_and_without_share_the_warm_up_and_their_settings_differ_only_in_the_contrastive_term(tmp_path):
    gen = torch.Generator().manual_seed(3)
    x, y = torch.rand(8, 3, 40, 40, generator=gen), torch.tensor([0, 1, 1, 0, 1, 0, 1, 1])
    batches = lazy_batches(lambda idx: x[list(idx)], y, 4, 0)
    test = lambda: lazy_batches(lambda idx: x[list(idx)], y, 4, 0, shuffle=False)(0)
    boxes = [[(5.0, 5.0, 20.0, 20.0)], [(20.0, 10.0, 40.0, 40.0)]]  # (x0, y0, x1, y1), as the readers give them
    factory = lambda: builders.ats(in_channels=3, n_classes=2, scale=0.25, patch_size=8, n_patches=2)
    settings = TrainSettings(epochs=3, lr=1e-2, batch_size=4, warmup_epochs=1)
    runs = with_and_without("ATS", factory, settings, batches, test, [x[:1], x[1:2]], boxes, seed=0, out=tmp_path)
    assert list(runs) == [WITH, WITHOUT]
    (with_result, with_model), (without_result, without_model) = runs[WITH], runs[WITHOUT]
    assert with_result.history[0]["ce"] == without_result.history[0]["ce"]  # warm-up: same weights, batches, loss
    assert with_result.history[0]["val_mass_ratio"] == without_result.history[0]["val_mass_ratio"]
    assert all(v == 0.0 for v in curve(without_result, "contrastive"))
    assert curve(with_result, "contrastive")[0] == 0.0 and (curve(with_result, "contrastive")[1:] > 0).all()
    for result, model in runs.values():
        last = attention_on_objects({"m": model}, [x[:1], x[1:2]], boxes)[0]
        assert curve(result, "val_mass_ratio")[-1] == pytest.approx(last["mass / uniform"], rel=1e-6)
        assert curve(result, "val_peak_on")[-1] == pytest.approx(last["peak on the object %"])
    assert with_result.n_test == without_result.n_test == 8  # each run read the whole test set
    saved = {label: torch.load(tmp_path / "checkpoints" / f"ATS, {label}_r0_f0.pt", weights_only=True)["settings"]
             for label in (WITH, WITHOUT)}
    assert sorted(d.split(":")[0] for d in settings_differences(saved[WITH], saved[WITHOUT])) == [
        "method", "training.contrastive"]  # the name, and the term
    assert (tmp_path / "runs" / f"ATS, {WITHOUT}_r0_f0.json").is_file()
    fig = contrastive_figure(runs, 0.69, "t")
    left, right = fig.axes
    assert len(left.get_lines()) == 4  # two cross-entropies, L_con of the run with it, the constant
    assert list(right.get_lines()[1].get_ydata()) == list(curve(without_result, "val_mass_ratio"))
    with pytest.raises(ValueError, match="contrastive term on"):
        with_and_without("ATS", factory, TrainSettings(epochs=1, lr=1e-2, batch_size=4, contrastive=False), batches, test, [x[:1]], boxes[:1],
                         seed=0)


def test_curve_reads_a_key_per_epoch_and_nan_where_missing():
    result = FoldResult("m", 0, 0, 0.5, None, 4, 0.7, [{"ce": 1.0}, {"ce": 0.5, "x": 2.0}])
    assert list(curve(result, "ce")) == [1.0, 0.5]
    assert np.isnan(curve(result, "x")[0]) and curve(result, "x")[1] == 2.0



def test_with_and_without_without_probe_images_records_no_probe():
    x, y = torch.rand(4, 3, 40, 40, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 1, 1, 0])
    factory = lambda: builders.ats(in_channels=3, n_classes=2, scale=0.25, patch_size=8, n_patches=2)
    runs = with_and_without("ATS", factory, TrainSettings(epochs=2, lr=1e-2, batch_size=2, warmup_epochs=1),
                            lazy_batches(lambda idx: x[list(idx)], y, 2, 0),
                            lambda: lazy_batches(lambda idx: x[list(idx)], y, 2, 0, shuffle=False)(0), [], [], seed=0)
    for result, _ in runs.values():
        assert not any(k.startswith("val_") for h in result.history for k in h)
        assert np.isnan(curve(result, "val_mass_ratio")).all()


def test_lazy_inputs_read_each_image_when_indexed():
    reads = []
    load = lambda idx: (reads.append(list(idx)), torch.full((1, 1, 2, 2), float(idx[0])))[1]
    images = LazyInputs(load, [4, 7, 9])
    assert len(images) == 3 and reads == []
    assert float(images[1][0, 0, 0, 0]) == 7.0 and reads == [[7]]
    assert [float(t[0, 0, 0, 0]) for t in images] == [4.0, 7.0, 9.0]
    tail = images[1:]
    assert isinstance(tail, LazyInputs) and len(tail) == 2 and float(tail[-1][0, 0, 0, 0]) == 9.0


def test_source_gaps_and_study_text_read_the_rows_and_histories():
    stub = _BySource()
    images = [torch.full((1, 3, 8, 8), f) for f in (0.1, 0.6, 0.3)]
    rows = draw_source_rows({"stub": stub}, images, [True, False, True], 0, "EMPTY", draws=1)
    assert source_gaps(rows, "EMPTY") == pytest.approx({("stub", "without it"): 0.4 - 0.6,
                                                       ("stub", "with the object"): 0.8 - 0.2})
    run = lambda h: (FoldResult("m", 0, 0, 0.5, None, 4, 0.7, h), None)
    runs = {WITH: run([{"ce": 1.4, "contrastive": 0.0, "val_mass_ratio": 0.9},
                       {"ce": 1.5, "contrastive": 0.6, "val_mass_ratio": 0.5},
                       {"ce": 1.45, "contrastive": 0.1, "val_mass_ratio": 0.2}]),
            WITHOUT: run([{"ce": 1.4, "contrastive": 0.0, "val_mass_ratio": 0.9}, {"ce": 1.4, "val_mass_ratio": 0.9}])}
    assert study_text(runs, 1.3, "the sign") == (
        "best constant prediction 1.300; with L_con: cross-entropy 1.400 (first epoch) to 1.450 (last), L_con 0.600 "
        "(highest) to 0.100, attention on the sign 0.90 to 0.20 x uniform; without L_con: cross-entropy 1.400 (first "
        "epoch) to 1.400 (last), L_con 0.000 (highest) to nan, attention on the sign 0.90 to 0.90 x uniform")  # no L_con in epoch 2
