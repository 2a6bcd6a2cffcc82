"""Chapter code of "N from the data" (`chapters.adaptive_n`): equal mean cost, and the table's accuracy, AUC,
variance and per-class N against a per-item reference on a tiny Zoom-In."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from zoomin_lib.chapters.adaptive_n import class_rows, compare_on_images, image_rows, method_rows, n_figure
from zoomin_lib.models import ZoomInNet
from zoomin_lib.train.loop import binary_auc


class Features(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.out_features = 3
        self.lin = nn.Linear(9, 3)

    def forward(self, p):
        return torch.tanh(self.lin(p.flatten(1)))


def test_comparison_tables_match_a_per_item_reference():
    torch.manual_seed(0)
    model = ZoomInNet(nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1), Features(), 2, 0.5, 0.5, 8, 3, 4)
    x = torch.randn(6, 1, 16, 16, generator=torch.Generator().manual_seed(1))
    labels = [0, 1, 0, 1, 1, 0]
    c = compare_on_images(model, x, labels, [f"i{k}" for k in range(6)], 6, round_size=1, pilot=2, budget=12,
                          repeats=20, seed=0, exact=True)
    fixed, adaptive = c.rules
    assert (c.patches[fixed] == 6).all() and 5 <= c.patches[adaptive].mean() <= 6
    assert len(np.unique(c.patches[adaptive])) > 1
    rows = method_rows(c)
    y = np.array(labels)
    for row, rule in zip(rows, c.rules):
        m = c.margin[rule]  # [6, 20]
        acc = [np.mean([(m[i, j] > 0) == (y[i] == 1) for i in range(6)]) for j in range(20)]
        assert math.isclose(row["accuracy %"], 100 * np.mean(acc))
        assert math.isclose(row["AUC"], np.mean([binary_auc(m[:, j], y) for j in range(20)]))
        assert math.isclose(row["margin variance (mean over images)"], np.mean([np.var(m[i], ddof=1) for i in range(6)]))
        assert math.isclose(row["decisions unlike exact %"],
                            100 * np.mean([(m[i, j] > 0) != (c.exact_margin[i] > 0) for i in range(6) for j in range(20)]))
    by_class = class_rows(c, ["a", "b"])
    assert [r["images"] for r in by_class] == [3, 3]
    assert math.isclose(by_class[1]["adaptive N (mean)"], c.patches[adaptive][y == 1].mean())
    assert len(image_rows(c)) == 6
    n_figure(c, ["a", "b"], "t")


def test_mean_patches_by_rule_and_class():
    from zoomin_lib.chapters.adaptive_n import NComparison

    c = NComparison(n=10, round_size=2, pilot=3, budget=15, tol=1.0, labels=np.array([0, 1]), names=["a", "b"],
                    margin={}, patches={"fixed": np.full((2, 2), 10.0), "adaptive": np.array([[6.0, 8.0], [12.0, 14.0]])},
                    tile_views={}, cpu_seconds=0.0, rules=["fixed", "adaptive"])
    assert c.mean_patches() == 10.0 and c.mean_patches("fixed") == 10.0
    assert c.mean_patches(label=0) == 7.0 and c.mean_patches(label=1) == 13.0
