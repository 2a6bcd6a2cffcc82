"""Chapter 04's third level: the geometry rule, the table and the memory model's view terms."""

from __future__ import annotations

import pytest
import torch

from zoomin_lib.chapters.levels_slides import (
    NAME, SlideRun, comparison_rows, largest_views, slide_levels, three_level_settings, view_terms,
)

CFG = dict(tile=1024, s1=1 / 32, s2=1 / 8, patch=50, n=16, strip_pixels=2**16)


def _metrics(unique: float) -> dict:
    return {"accuracy": 0.5, "auc": 0.25, "n": 4, "patch_hit_fraction": 0.125, "bytes_mean": 2**20,
            "bytes_by_kind_mean": {"view": 0.0, "tile": 3 * 2**10, "patch": 2**11}, "reads_mean": 9.0,
            "cpu_seconds_median": 0.2, "seconds_median": 0.4, "unique_tiles_mean": unique, "torch_mb": 3.5,
            "numpy_mb": 7.0}


def test_the_rule_keeps_the_first_stage_the_leaf_grid_and_the_patches():
    geo = three_level_settings(CFG)
    assert geo["scales"] == (1 / 32, 1 / 16, 1 / 8) and geo["cells"] == (1024, 256)
    assert geo["n"] * geo["children"][0] == CFG["n"] and geo["patch"] == 50
    net = slide_levels(CFG, (torch.zeros(3), torch.ones(3)), seed=0).net
    assert net.child_counts == [16, 32 * 32]  # 4 x 4 cells a tile; V(cell, 1/8) is 32 x 32, 8 px apart as V(tile, 1/8)
    with pytest.raises(ValueError, match="4 x 4 cells"):
        three_level_settings({**CFG, "tile": 1022})


def test_view_terms_are_the_memory_models_and_the_table_has_both_models():
    runs = {"Zoom-In": SlideRun(_metrics(10.0), []), NAME: SlideRun(_metrics(6.0), [])}
    terms = view_terms(CFG, runs, "Zoom-In", NAME)
    assert terms["two"] == pytest.approx(10 * 128**2)  # N' (s2 c1)^2
    assert terms["three"] == pytest.approx(6 * 64**2 + 8 * 32**2)  # N' (s2 / 2 c1)^2 + M2 (s2 c2)^2, M2 = N / 2
    rows = comparison_rows(runs, {"Zoom-In": {"accuracy": 0.75, "auc": None}})
    assert [r["model"] for r in rows] == ["Zoom-In", NAME]
    assert rows[0]["accuracy % (top-k)"] == 75.0 and rows[0]["AUC (top-k)"] == "" and rows[1]["accuracy % (top-k)"] == ""
    assert rows[1]["read, tile and cell views (KiB)"] == 3.0 and rows[1]["patches on a metastasis %"] == 12.5


def test_largest_views_after_the_first_stage():
    assert largest_views(CFG) == {"two": 128**2, "three": 64**2}  # a tile at 1/8; a tile at 1/16 (a cell at 1/8: 32^2)
