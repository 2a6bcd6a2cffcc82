"""Chapter 05's helpers: crops, settings, memory ratios and boxes against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoomin_lib.chapters.needles import (
    bagnet_name,
    crop_loader,
    mask_box,
    memory_ratios,
    method_factories,
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
