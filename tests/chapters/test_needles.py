"""Chapter 05's helpers: crops, settings, memory ratios and boxes against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from zoomin_lib.chapters.needles import (
    auc_by_predictor,
    background_share,
    bagnet_name,
    before_after_rows,
    before_training,
    crop_loader,
    mask_box,
    memory_ratios,
    method_factories,
    nuisance_rows,
    one_per_metastasis,
    train_settings,
)

CFG = dict(n_patches=5, patch=16, tile=64, batch=4, epochs=3, warmup=1, lr=1e-3, cosine=True,
           bagnet=dict(scale=0.25, width=4, blocks=(1, 1, 1, 1)), bagnet_epochs=2)


class _Crops:
    """Four 2x2 'crops': two of metastasis m1, one negative, one of m2; pixel value = 10 x index."""

    labels = torch.tensor([1, 0, 1, 1])
    rows = [{"metastasis": "m1"}, {"metastasis": ""}, {"metastasis": "m1"}, {"metastasis": "m2"}]

    def image(self, i: int) -> np.ndarray:
        return np.full((2, 2, 3), 10 * i, dtype=np.uint8)  # [S, S, 3]

    def __len__(self) -> int:
        return 4


def test_one_positive_per_metastasis():
    assert one_per_metastasis(_Crops(), 5) == [0, 3]
    assert one_per_metastasis(_Crops(), 1) == [0]


@pytest.mark.parametrize("in_memory", [True, False])
def test_crop_loader_standardizes_with_the_given_stats(in_memory: bool):
    stats = (torch.full((1, 3, 1, 1), 10 / 255), torch.full((1, 3, 1, 1), 2.0))
    x = crop_loader(_Crops(), in_memory, stats)([3, 1])
    assert x.shape == (2, 3, 2, 2)
    torch.testing.assert_close(x[:, 0, 0, 0], torch.tensor([10 / 255, 0.0]))  # (30 - 10) / 255 / 2, (10 - 10) / 255 / 2
    from zoomin_lib.train.protocol import image_tensor, standardize

    crops = _Crops()
    want = standardize(torch.cat([image_tensor(crops.image(i)) for i in (3, 1)]), stats)  # the out-of-place reference
    assert torch.equal(x, want) and x.stride() == want.stride()


def test_methods_and_settings():
    assert bagnet_name(CFG["bagnet"]) == "BagNet-33 s=0.25" and bagnet_name({"scale": 1.0}) == "BagNet-33"
    names = list(method_factories(CFG))
    assert names == ["Zoom-In", "Zoom-In (Res)", "ATS-5", "BagNet-33 s=0.25"]
    settings = train_settings(CFG, names)
    assert (settings["Zoom-In"].epochs, settings["Zoom-In"].warmup_epochs) == (3, 1)
    bag = settings["BagNet-33 s=0.25"]
    assert (bag.epochs, bag.batch_size, bag.cosine_decay) == (2, 4, True)


def test_memory_ratios_measured_and_paper():
    costs = {"Zoom-In": {"peak_memory_mb": 1.0}, "Zoom-In (Res)": {"peak_memory_mb": 2.0},
             "ATS-30": {"peak_memory_mb": 4.0}, "big BagNet": {"peak_memory_mb": 50.0}}
    paper = {"Zoom-In": {"memory_mb": 3.0}, "Zoom-In (Res)": {"memory_mb": 6.0}, "ATS-30": {"memory_mb": 12.0},
             "BagNet": {"memory_mb": 300.0}}
    rows = memory_ratios(costs, "big BagNet", paper)
    assert [r["measured here"] for r in rows] == [0.25, 0.5, 0.02]
    assert [r["paper (table 1)"] for r in rows] == [0.25, 0.5, 0.01]


def test_mask_box():
    mask = np.zeros((6, 8), dtype=bool)
    mask[2:4, 3:7] = True
    assert mask_box(mask) == [(3, 2, 4, 2)]
    assert mask_box(np.zeros((3, 3), dtype=bool)) == []


GLASS, TISSUE = (241, 241, 243), (200, 100, 150)  # saturation 0.008 and 0.5


def _crop(glass_rows: int, side: int = 4) -> np.ndarray:
    """A side x side crop whose first `glass_rows` rows are glass and the rest stained tissue."""
    image = np.empty((side, side, 3), dtype=np.uint8)
    image[:glass_rows], image[glass_rows:] = GLASS, TISSUE
    return image


def test_background_share_counts_unsaturated_pixels():
    assert background_share(_crop(0)) == 0.0 and background_share(_crop(4)) == 1.0
    assert background_share(_crop(1)) == 0.25
    grey_and_black = np.zeros((2, 2, 3), dtype=np.uint8)
    grey_and_black[0] = 128  # grey: saturation 0; black: no brightness at all
    assert background_share(grey_and_black) == 1.0


class _Split:
    """Crops with given glass rows and labels."""

    def __init__(self, glass_rows: list[int], labels: list[int]) -> None:
        self.glass_rows, self.labels = glass_rows, torch.tensor(labels)

    def image(self, i: int) -> np.ndarray:
        return _crop(self.glass_rows[i])


def test_nuisance_rows_per_split_against_per_crop_values():
    rows = nuisance_rows({"a": _Split([4, 2, 0, 1], [1, 1, 0, 0]), "b": _Split([0, 3, 4], [1, 0, 0])})
    a, b = rows
    assert (a["split"], a["crops"], b["split"], b["crops"]) == ("a", 4, "b", 3)
    assert (a["background, positives"], a["background, negatives"]) == (0.75, 0.125)
    assert a["AUC of background"] == 1.0 and b["AUC of background"] == 0.0  # more glass: positive in a, negative in b
    glass_mean, tissue_mean = np.mean(GLASS), np.mean(TISSUE)
    for row, split in ((a, _Split([4, 2, 0, 1], [1, 1, 0, 0])),):
        want = np.mean([np.mean(split.image(i)) for i in (0, 1)])
        assert row["brightness, positives"] == pytest.approx(want)
    assert glass_mean > tissue_mean and a["AUC of brightness"] == 1.0 and b["AUC of brightness"] == 0.0


def test_before_after_rows_hand_computed():
    before = {"A": {"auc": 0.9, "mass / uniform": 1.5, "peak on the object %": 100.0, "mass on the object": 0.02},
              "B": {"auc": None}}
    after = [{"method": "A", "mass / uniform": 0.5, "peak on the object %": 0.0, "mass on the object": 0.01}]
    a, b = before_after_rows(before, {"A": 0.3}, after, 30)
    assert (a["AUC, initial"], a["AUC, trained"], a["mass / uniform, initial"], a["mass / uniform, trained"]) == (
        0.9, 0.3, 1.5, 0.5)
    assert (a["peak on it %, initial"], a["peak on it %, trained"]) == (100.0, 0.0)
    assert a["draws on it, initial"] == pytest.approx(0.6) and a["draws on it, trained"] == pytest.approx(0.3)
    assert b["method"] == "B" and all(np.isnan(v) for k, v in b.items() if k != "method")


def test_before_training_scores_the_weights_training_starts_from():
    from zoomin_lib import builders
    from zoomin_lib.steps import predictor
    from zoomin_lib.train.loop import evaluate
    from zoomin_lib.train.protocol import TrainSettings, lazy_batches, run_method

    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, 3, 32, 32, generator=gen)  # [20, 3, 32, 32]
    labels = torch.tensor([1, 0] * 10)  # 100 positive-negative pairs: the AUC tells weights apart
    load = lambda idx: x[list(idx)]  # noqa: E731
    factory = lambda: builders.ats(in_channels=3, n_classes=2, scale=0.5, patch_size=8, n_patches=3)  # noqa: E731
    boxes = [[(0, 0, 16, 16)], [(8, 8, 24, 24)], [(16, 0, 32, 16)]]
    seen = before_training({"ATS": factory, "again": factory}, load, labels, [0, 2, 4], boxes, seed=5)
    # run_method with no epochs returns the model with the weights training would start from
    test = list(lazy_batches(load, labels, 8, 5, shuffle=False)(0))
    result, model = run_method("ATS", factory, TrainSettings(epochs=0, batch_size=2, lr=1e-3),
                               lazy_batches(load, labels, 2, 5), test, run_seed=5, tag="t")
    other = factory()  # other weights, another AUC: the check above can fail (everything here is seeded)
    assert seen["ATS"]["auc"] == pytest.approx(result.auc)
    assert evaluate(other, test, predictor(generator=torch.Generator()))["auc"] != pytest.approx(result.auc)
    assert {k: v for k, v in seen["ATS"].items() if k != "method"} == {
        k: v for k, v in seen["again"].items() if k != "method"}  # each network seeded afresh
    assert seen["ATS"]["images"] == 3 and 0 <= seen["ATS"]["peak on the object %"] <= 100


class _Scorer(nn.Module):
    """Top-N scores a crop by its mean, a draw by its mean plus noise; both positive for class 1."""

    eval_mode = "topk"

    def forward(self, x, mode="topk", generator=None):
        from types import SimpleNamespace

        score = x.mean(dim=(1, 2, 3))  # [B]
        if mode == "sample":
            score = -score + 0.01 * torch.randn(score.shape, generator=generator)  # draws rank the other way
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(score), score], dim=1))  # [B, 2]


def test_auc_by_predictor_per_split_and_predictor():
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 2, 2)  # crop i has mean i
    load = lambda idx: x[list(idx)]  # noqa: E731
    up, down = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    rows = auc_by_predictor({"m": _Scorer()}, {"a": (load, up), "b": (load, down)}, draws=2, seed=0)
    assert [(r["method"], r["split"], r["crops"]) for r in rows] == [("m", "a", 8), ("m", "b", 8)]
    assert (rows[0]["AUC, top-N"], rows[0]["AUC, mean of 2 draws"]) == (1.0, 0.0)
    assert (rows[1]["AUC, top-N"], rows[1]["AUC, mean of 2 draws"]) == (0.0, 1.0)
