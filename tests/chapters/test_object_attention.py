"""The measurements a chapter gives when a method stays at chance: attention on the object, loss per epoch."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from zoomin_lib import builders
from zoomin_lib.book.plotting import plot_curves
from zoomin_lib.chapters.attention import attention_map, attention_on_objects, object_attention, view_box_mask
from zoomin_lib.chapters.results import constant_loss, training_curves
from zoomin_lib.geometry import view_size, view_to_full
from zoomin_lib.train.protocol import FoldResult


def _reference_mask(view_hw, full_hw, boxes):
    """The same mask location by location, from view_to_full of one location at a time."""
    h, w = view_hw
    mask = torch.zeros(h, w, dtype=torch.bool)
    for i in range(h):
        for j in range(w):
            r, c = view_to_full(torch.tensor([i]), torch.tensor([j]), view_hw, full_hw)
            mask[i, j] = any(t <= int(r) < b and l <= int(c) < rt for t, l, b, rt in boxes)
    return mask


@pytest.mark.parametrize("view_hw, full_hw", [((7, 9), (50, 80)), ((1, 4), (10, 40)), ((12, 12), (12, 12))])
def test_view_box_mask_matches_a_location_by_location_reference(view_hw, full_hw):
    boxes = [(0, 0, 10, 15), (20, 30, 45, 80)]
    assert torch.equal(view_box_mask(view_hw, full_hw, boxes), _reference_mask(view_hw, full_hw, boxes))
    assert not view_box_mask(view_hw, full_hw, np.zeros((0, 4))).any()
    assert view_box_mask(view_hw, full_hw, [(0, 0) + full_hw]).all()


class _Peaked(torch.nn.Module):
    """An ATS-like stand-in on V(x, 0.25): scores `peak` inside a fixed [h, w] mask, 0 elsewhere."""

    def __init__(self, mask: torch.Tensor, peak: float) -> None:
        super().__init__()
        self.attention, self.scale = True, 0.25
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device
        self.mask, self.peak = mask, peak

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return (self.mask.flatten().float() * self.peak).expand(x.shape[0], -1)  # [B, h*w]


def test_object_attention_matches_a_per_image_reference_on_images_of_two_sizes():
    torch.manual_seed(0)
    images = [torch.randn(1, 3, 200, 240), torch.randn(1, 3, 160, 160)]
    boxes = [[(40, 60, 100, 120)], [(0, 0, 50, 50), (120, 120, 160, 160)]]
    models = {"Zoom-In": builders.zoomin(in_channels=3, n_classes=2, scale1=0.1, scale2=0.2, tile_size=80,
                                         patch_size=16, n_patches=3),
              "ATS": builders.ats(in_channels=3, n_classes=2, scale=0.2, patch_size=16, n_patches=3)}
    rows = {r["method"]: r for r in object_attention(models, images, boxes)}
    for name, model in models.items():
        masses, shares, peaks = [], [], []
        for x, b in zip(images, boxes):
            a = attention_map(model.eval(), x)[0]  # [h, w]
            on = _reference_mask(tuple(a.shape), tuple(x.shape[-2:]), b)
            masses.append(float(a[on].sum()))
            shares.append(float(on.float().mean()))
            peaks.append(bool(on.flatten()[a.argmax()]))
        row = rows[name]
        assert row["images"] == 2
        assert row["mass on the object"] == pytest.approx(np.mean(masses), abs=1e-6)
        assert row["uniform mass (object's share)"] == pytest.approx(np.mean(shares), abs=1e-9)
        assert row["mass / uniform"] == pytest.approx(np.mean(masses) / np.mean(shares), rel=1e-6)
        assert row["peak on the object %"] == pytest.approx(100 * np.mean(peaks))


def test_object_attention_tells_flat_from_peaked_attention():
    x = torch.zeros(1, 3, 120, 160)
    hw = view_size((120, 160), 0.25)
    box = [(30, 40, 90, 100)]
    mask = view_box_mask(hw, (120, 160), box)
    rows = {r["method"]: r for r in object_attention({"flat": _Peaked(mask, 0.0), "peaked": _Peaked(mask, 30.0)},
                                                     [x], [box])}
    share = float(mask.float().mean())
    assert rows["flat"]["mass on the object"] == pytest.approx(share, abs=1e-6)
    assert rows["flat"]["mass / uniform"] == pytest.approx(1.0, abs=1e-5)
    assert rows["peaked"]["mass on the object"] > 0.999
    assert rows["peaked"]["peak on the object %"] == 100.0
    with pytest.raises(ValueError, match="one box list per image"):
        object_attention({"flat": _Peaked(mask, 0.0)}, [x], [])


def test_attention_on_objects_reads_the_readers_x0_y0_x1_y1_boxes():
    x = torch.zeros(1, 3, 120, 160)
    hw = view_size((120, 160), 0.25)
    mask = view_box_mask(hw, (120, 160), [(30, 40, 90, 100)])  # (top, left, bottom, right)
    model = {"peaked": _Peaked(mask, 30.0)}
    via_readers = attention_on_objects(model, [x], [[(40, 30, 100, 90)]])  # (x0, y0, x1, y1) of the same box
    assert via_readers == object_attention(model, [x], [[(30, 40, 90, 100)]])


def test_constant_loss_is_the_smallest_weighted_cross_entropy_of_a_constant_prediction():
    assert constant_loss([0, 1, 2, 3] * 5, 4) == pytest.approx(math.log(4))
    assert constant_loss([0, 0, 0, 1], 2, [1.0, 3.0]) == pytest.approx(math.log(2))  # q = (3, 3) / 6
    assert constant_loss([1, 1, 1], 3) == pytest.approx(0.0)  # one class: a constant answer is never wrong
    labels = torch.tensor([0, 0, 0, 0, 1, 1, 2])
    weights = torch.tensor([0.5, 1.0, 4.0])
    best = constant_loss(labels.numpy(), 3, weights.numpy())
    for logits in (torch.zeros(3), torch.tensor([1.0, -2.0, 0.5]), torch.tensor([0.3, 0.1, 2.0])):
        ce = float(F.cross_entropy(logits.expand(len(labels), 3), labels, weight=weights))
        assert ce >= best - 1e-6
    q = weights * torch.bincount(labels, minlength=3)
    ce_at_q = float(F.cross_entropy(torch.log(q / q.sum()).expand(len(labels), 3), labels, weight=weights))
    assert ce_at_q == pytest.approx(best, abs=1e-6)
    with pytest.raises(ValueError):
        constant_loss([0, 3], 3)


def test_training_curves_read_each_first_run_and_skip_histories_without_the_key():
    run = lambda name, history: FoldResult(name, 0, 0, 0.5, None, 10, 0.7, history)
    results = {"a": [run("a", [{"ce": 2.3, "total": 2.4}, {"ce": 2.1, "total": 2.2}]), run("a", [{"ce": 9.0}])],
               "b": [run("b", [{"total": 1.0}])], "c": []}
    assert training_curves(results) == {"a": [2.3, 2.1]}
    fig = plot_curves(training_curves(results), 2.302, "best constant prediction", ylabel="loss")
    lines = fig.axes[0].get_lines()
    assert [list(line.get_ydata()) for line in lines[:1]] == [[2.3, 2.1]]
    assert list(lines[1].get_ydata()) == [2.302, 2.302]  # the reference line


def test_plot_curves_names_a_curve_that_leaves_the_range():
    fig = plot_curves({"near": [1.3, 1.2], "far": [7.4, 5.9]}, 1.3, "constant", ylim=(0, 2.6))
    labels = [t.get_text() for t in fig.axes[0].get_legend().get_texts()]
    assert labels[0] == "near" and labels[1] == "far (leaves the plot: 5.9 to 7.4)"
    assert fig.axes[0].get_ylim() == (0, 2.6)


def test_attention_on_epithelium_is_attention_on_objects_of_each_runs_rebuilt_model(tmp_path):
    """Every run's checkpoint, rebuilt, measured on one-patch boxes round the epithelial centres, as a direct call gives."""
    from types import SimpleNamespace

    from zoomin_lib.chapters.colon import attention_on_epithelium
    from zoomin_lib.train.protocol import TrainSettings, run_folds

    gen = torch.Generator().manual_seed(2)
    x, y = torch.rand(8, 1, 32, 32, generator=gen), torch.arange(8) % 2
    folds = [SimpleNamespace(repetition=0, fold=k, train=[i for i in range(8) if i // 4 != k],
                             test=[i for i in range(8) if i // 4 == k]) for k in range(2)]
    methods = {"ats": lambda: builders.ats(in_channels=1, n_classes=2, scale=0.25, patch_size=5, n_patches=2)}
    _, first = run_folds(methods, {"ats": TrainSettings(epochs=1, batch_size=2, lr=1e-2)}, x, y, folds,
                         out_dir=tmp_path, progress=False)
    cells = [{"epithelial": np.array([[3.0, 4.0], [20.0, 25.0]])}, {"epithelial": np.array([[30.0, 1.0]])}]
    rows = attention_on_epithelium(methods, tmp_path, folds, x[:2], cells, patch=5)
    assert [(r["fold"], r["method"]) for r in rows] == [(0, "ats"), (1, "ats")]
    boxes = [[(0.5, 1.5, 5.5, 6.5), (17.5, 22.5, 22.5, 27.5)], [(27.5, -1.5, 32.5, 3.5)]]  # (x0, y0, x1, y1)
    (direct,) = attention_on_objects(first, [x[:1], x[1:2]], boxes)
    assert {k: v for k, v in rows[0].items() if k not in ("repetition", "fold")} == pytest.approx(direct)
    assert attention_on_epithelium(methods, tmp_path, folds, x[:0], [], patch=5) == []
