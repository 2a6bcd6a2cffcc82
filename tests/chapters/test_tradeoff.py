"""Chapter 08's helpers: bounds on N', the tables and the fitted lines against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from zoomin_lib.chapters.tradeoff import (
    PAIRS,
    accuracy_text,
    configs,
    crossover_rows,
    fit_lines,
    line_crossings,
    sweep_rows,
    table4_rows,
    unique_tile_bounds,
)
from zoomin_lib.hierarchical import expected_unique
from zoomin_lib.theory.memory_model import MemoryFit

CFG = dict(epochs=2, warmup=1, lr=1e-3, cosine=False)


def test_unique_tile_bounds():
    """The uniform bound is E[N'] of a uniform alpha; the tanh floor is the chapter's ~2.91 for 4 tiles, N = 10."""
    uniform, floor = unique_tile_bounds(tiles=4, n=10)
    assert uniform == pytest.approx(float(expected_unique(torch.full((1, 4), 0.25), 10)[0]))
    top = math.e / (math.e + 3 / math.e)
    assert floor == pytest.approx(1 + 3 * (1 - (1 - (1 - top) / 3) ** 10)) and round(floor, 2) == 2.91
    assert floor < uniform


def test_accuracy_text_and_table4():
    one = {"runs": 1, "accuracy_mean": 0.5, "accuracy_std": math.nan, "auc_mean": 0.25}
    assert accuracy_text(one) == "50.0"
    assert accuracy_text({"runs": 3, "accuracy_mean": 0.9, "accuracy_std": 0.05}) == "90.0 ± 5.0"
    cs = configs(CFG)
    assert cs["Zoom-In N=10 lambda=0"].settings.lam == 0.0 and not cs["Zoom-In N=10 no contrastive"].contrastive
    paper = {(lam, n, con): 90 + n for lam in (0.0, 1e-5, 1.0) for n in (5, 10, 50) for con in (True, False)}
    rows = table4_rows({name: one for name in cs}, cs, paper)
    assert rows[1] == {"lambda": 0.0, "N": 10, "contrastive": True, "accuracy % (measured)": "50.0",
                       "AUC (measured)": 0.25, "accuracy % (paper, table 4)": 100}
    assert [r["N"] for r in rows] == [10, 10, 10, 10, 5, 50]


def test_fitted_lines_and_their_crossings():
    """CNN: 4 + 1e-4 HW, ATS-10 lean: 10 + 1e-5 HW: they cross where HW = 6 / 9e-5, a side of about 258 px."""
    sides = {name: [500, 1000] for name in {n for pair in PAIRS for n in pair}}
    lines_in = {name: (1e-5, 10.0) for name in sides}
    lines_in["CNN (s=1)"] = (1e-4, 4.0)
    curves = {name: [b + a * s * s for s in sides[name]] for name, (a, b) in lines_in.items()}
    lines = fit_lines(curves, sides)
    for name, (a, b) in lines_in.items():
        assert lines[name] == pytest.approx((a, b), rel=1e-6)
    crossings = line_crossings(lines, sides, [500, 1000], 31623)
    assert len(crossings) == 4  # the CNN against each of the others; the others coincide and never cross
    c = crossings[0]
    assert c["curves"] == "CNN (s=1) / ATS-10 all at once" and c["side (px)"] == round(math.sqrt(6 / 9e-5))
    assert c["from"] == "fitted lines, outside the measured range"


def test_sweep_rows_mark_what_was_not_measured():
    curves = {"CNN (s=1)": [1.0], "Zoom-In lean": [0.1, 0.2]}
    sides = {"CNN (s=1)": [500], "Zoom-In lean": [500, 1000]}
    assert sweep_rows(curves, sides, [500, 1000]) == [
        {"side": 500, "CNN (s=1)": 1.0, "Zoom-In lean": 0.1},
        {"side": 1000, "CNN (s=1)": "not measured", "Zoom-In lean": 0.2}]


def test_crossover_rows_find_where_zoomin_needs_less():
    """Only the tile term costs Zoom-In (1 byte a pixel), only the view ATS (1 byte a pixel of V(x, 0.2)).

    Zoom-In: N' x 0.04 x 250^2 = 2500 N' bytes; ATS: 0.04 side^2; equal at side = 250 sqrt(N'), capped by the
    tiles the image has; Zoom-In is below from the next multiple of 10 on.
    """
    fit_z = MemoryFit(("view", "tiles", "patches"), 0.0, (0.0, 1.0, 0.0))
    fit_a = MemoryFit(("view", "patches"), 0.0, (1.0, 0.0))
    rows = crossover_rows(fit_z, fit_a, n_uniques=(1, 4))
    assert [r["Zoom-In below ATS for every side from (px)"] for r in rows] == [260, 510]
    assert rows[0]["at 500x500: ATS MiB"] == pytest.approx(0.04 * 500**2 / 2**20)
    assert rows[1]["at 500x500: Zoom-In MiB"] == pytest.approx(4 * 2500 / 2**20)
    assert np.isfinite(rows[0]["at 500x500: Zoom-In MiB"])


def test_levels_terms_by_hand_and_reduce_to_two_levels():
    from zoomin_lib.theory.memory_model import levels_terms, zoomin_terms

    two = levels_terms(500, 500, [0.1, 0.2], [250], 27, [3], 10)
    assert list(two.values()) == pytest.approx(list(zoomin_terms(500, 500, 0.1, 0.2, 250, 27, 10, 3).values()))
    three = levels_terms(1000, 500, [0.1, 0.1, 0.5], [250, 50], 27, [4, 5], 10)
    assert three == pytest.approx({"view": 0.01 * 1000 * 500, "level2": 4 * 0.01 * 250**2, "level3": 5 * 0.25 * 50**2,
                                   "patches": 10 * 27**2})
    with pytest.raises(ValueError, match="cell sizes and node counts"):
        levels_terms(500, 500, [0.1, 0.2, 0.5], [250], 27, [3], 10)


def test_three_levels_read_as_many_patches_and_rows_pair_the_measurements():
    from zoomin_lib.chapters.tradeoff import levels_rows, three_levels

    model = three_levels(10)
    out = model(torch.randn(1, 3, 500, 500), generator=torch.Generator().manual_seed(0))
    assert out.centers.shape == (1, 10, 2) and model.n_patches == 5
    rows = levels_rows([500, 750], [5, 10], [4 * 2**20, 8 * 2**20, 6 * 2**20, 10 * 2**20], [2 * 2**20, 8 * 2**20,
                                                                                        3 * 2**20, 20 * 2**20])
    assert [(r["side (px)"], r["patches read (two levels)"], r["patches read (three levels)"], r["three / two"])
            for r in rows] == [(500, 5, 4, 0.5), (500, 10, 10, 1.0), (750, 5, 4, 0.5), (750, 10, 10, 2.0)]
    odd = three_levels(5)(torch.randn(1, 3, 500, 500), generator=torch.Generator().manual_seed(0))
    assert odd.centers.shape == (1, 4, 2)  # 2 cells of 2 patches: one patch fewer than N = 5
