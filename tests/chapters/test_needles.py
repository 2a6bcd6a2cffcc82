"""Chapter 05's helpers: crops, settings, memory ratios and boxes against hand-computed values."""

from __future__ import annotations

from types import SimpleNamespace

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
    crop_statistic_rows,
    mask_box,
    memory_ratios,
    method_factories,
    one_per_metastasis,
    split_sources,
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
    near_floor = np.array([[[200, 200, 191], [200, 200, 189]]], dtype=np.uint8)  # saturation 0.045 and 0.055
    assert background_share(near_floor) == 0.5  # the floor is tissue_mask's 0.05, strictly below


BLACK = (0, 0, 0)  # background (no saturation) and dark: the two statistics disagree on it


class _Split:
    """Crops of 4x4 pixels: the first `glass` rows glass, the next `black` rows black, the rest stained tissue."""

    def __init__(self, glass: list[int], black: list[int], labels: list[int]) -> None:
        self.glass, self.black, self.labels = glass, black, torch.tensor(labels)

    def image(self, i: int) -> np.ndarray:
        image = _crop(self.glass[i])
        image[self.glass[i]:self.glass[i] + self.black[i]] = BLACK
        return image


def test_crop_statistic_rows_against_per_crop_values():
    a = _Split([2, 0, 0, 1], [0, 0, 3, 0], [1, 1, 0, 0])  # negatives: more background (black), darker
    b = _Split([0, 3, 4], [0, 0, 0], [1, 0, 0])
    rows = crop_statistic_rows({"a": a, "b": b})
    assert [(r["split"], r["crops"]) for r in rows] == [("a", 4), ("b", 3)]
    for row, split in zip(rows, (a, b)):
        y = split.labels.numpy()
        share = [background_share(split.image(i)) for i in range(len(y))]
        bright = [float(np.mean(split.image(i))) for i in range(len(y))]
        for key, values in (("background", share), ("brightness", bright)):
            assert row[f"{key}, positives"] == pytest.approx(np.mean([v for v, t in zip(values, y) if t == 1]))
            assert row[f"{key}, negatives"] == pytest.approx(np.mean([v for v, t in zip(values, y) if t == 0]))
    # split a, by hand: background 0.5, 0 (positives) against 0.75, 0.25: 1 of 4 pairs ranked right;
    # brightness about 196, 150 against 38 (mostly black), 173: 3 of 4 right: the two statistics disagree
    assert rows[0]["AUC of background"] == 0.25 and rows[0]["AUC of brightness"] == 0.75
    assert rows[1]["AUC of background"] == 0.0 and rows[1]["AUC of brightness"] == 0.0


def test_before_after_rows_hand_computed():
    before = {"A": {"auc": 0.9, "mass / uniform": 1.5, "peak on the object %": 100.0, "mass on the object": 0.02},
              "B": {"auc": None}}
    after = [{"method": "A", "mass / uniform": 0.5, "peak on the object %": 0.0, "mass on the object": 0.01}]
    a, b = before_after_rows(before, {"A": 0.3}, after, 30)
    assert (a["AUC, initial"], a["AUC, trained"], a["mass / uniform, initial"], a["mass / uniform, trained"]) == (
        0.9, 0.3, 1.5, 0.5)
    assert (a["peak on it %, initial"], a["peak on it %, trained"]) == (100.0, 0.0)
    assert a["N x mass, initial"] == pytest.approx(0.6) and a["N x mass, trained"] == pytest.approx(0.3)
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
    seen = before_training({"ATS": factory, "again": factory}, load, labels, [load([i]) for i in (0, 2, 4)], boxes,
                           seed=5)
    # run_method with no epochs returns the model with the weights training would start from
    test = list(lazy_batches(load, labels, 8, 5, shuffle=False)(0))
    result, model = run_method("ATS", factory, TrainSettings(epochs=0, batch_size=2, lr=1e-3),
                               lazy_batches(load, labels, 2, 5), test, run_seed=5, tag="t", device="cpu")
    other = factory()  # other weights, another AUC: the check above can fail (everything here is seeded)
    assert seen["ATS"]["auc"] == pytest.approx(result.auc)
    assert evaluate(other, test, predictor(generator=torch.Generator()))["auc"] != pytest.approx(result.auc)
    assert {k: v for k, v in seen["ATS"].items() if k != "method"} == {
        k: v for k, v in seen["again"].items() if k != "method"}  # each network seeded afresh
    assert seen["ATS"]["images"] == 3 and 0 <= seen["ATS"]["peak on the object %"] <= 100


class _Scorer(nn.Module):
    """Top-N scores a crop by its mean; a draw by minus its mean, plus noise (draws rank the other way); counts draws."""

    eval_mode = "topk"

    def __init__(self) -> None:
        super().__init__()
        self.draws = 0

    def forward(self, x: torch.Tensor, mode: str = "topk", generator: torch.Generator | None = None) -> SimpleNamespace:
        score = x.mean(dim=(1, 2, 3))  # [B]
        if mode == "sample":
            self.draws += 1
            score = -score + 0.01 * torch.randn(score.shape, generator=generator)
        return SimpleNamespace(logits=torch.stack([torch.zeros_like(score), score], dim=1))  # [B, 2]


def test_auc_by_predictor_per_split_and_predictor():
    x = torch.arange(8, dtype=torch.float32).view(8, 1, 1, 1).expand(8, 1, 2, 2)  # crop i has mean i
    load = lambda idx: x[list(idx)]  # noqa: E731
    up, down = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1]), torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    scorer = _Scorer()
    rows = auc_by_predictor({"m": scorer}, {"a": (load, up), "b": (load, down)}, draws=3, seed=0)
    assert scorer.draws == 2 * 3  # one batch of 8 per split, three draws each
    assert [(r["method"], r["split"], r["crops"]) for r in rows] == [("m", "a", 8), ("m", "b", 8)]
    assert (rows[0]["AUC, top-N"], rows[0]["AUC, mean of 3 draws"]) == (1.0, 0.0)
    assert (rows[1]["AUC, top-N"], rows[1]["AUC, mean of 3 draws"]) == (0.0, 1.0)


def test_split_sources_counts_slides_of_negatives_and_metastases_of_positives():
    split = SimpleNamespace(labels=torch.tensor([1, 1, 0, 0, 0, 1]), rows=[
        {"slide_id": "t1", "metastasis": "t1/0"}, {"slide_id": "t1", "metastasis": "t1/0"},
        {"slide_id": "n1", "metastasis": ""}, {"slide_id": "n2", "metastasis": ""}, {"slide_id": "n1", "metastasis": ""},
        {"slide_id": "t2", "metastasis": "t2/3"}])
    assert split_sources(split) == {"negative slides": 2, "metastases": 2}
