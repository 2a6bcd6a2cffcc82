"""Chapter 04's helpers: the tables and the memory curve against hand-computed rows."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from zoomin_lib.chapters.camelyon import (
    MemoryCurve,
    checkpoint_name,
    contours,
    measured_rows,
    memory_rows_table,
    plateau_facts,
    plateau_text,
    pretraining_lines,
    spearman_rows,
    training_figure,
)


def _sweep() -> list[dict]:
    """Three sizes; ATS (tensors 1 + 2e-6 MiB per pixel, exactly a line) ran on the first two only."""
    peak = {"torch_mb": 2.0, "numpy_mb": 7.0, "seconds": 0.5}
    return [
        {"side": 1000, "pixels": 10**6, "zoomin": peak, "ats": {"torch_mb": 3.0, "numpy_mb": 1.0, "seconds": 1.0}},
        {"side": 2000, "pixels": 4 * 10**6, "zoomin": peak, "ats": {"torch_mb": 9.0, "numpy_mb": 1.5, "seconds": 2.0}},
        {"side": 4000, "pixels": 16 * 10**6, "zoomin": {**peak, "torch_mb": 2.2, "opened": 12, "tissue_tiles": 30}},
    ]


def test_memory_curve_fits_ats_by_a_line_and_extrapolates_it():
    curve = MemoryCurve.from_rows(_sweep())
    assert curve.slope == pytest.approx(2e-6) and curve.intercept == pytest.approx(1.0)
    np.testing.assert_allclose(curve.pixels, [1e6, 4e6, 16e6])
    np.testing.assert_allclose(curve.zoom_t, [2.0, 2.0, 2.2])
    np.testing.assert_allclose(curve.ats_px, [1e6, 4e6])
    np.testing.assert_allclose(curve.ats_line, [3.0, 9.0, 33.0])


def test_memory_table_marks_the_extrapolated_sizes():
    rows = _sweep()
    table = memory_rows_table(rows, MemoryCurve.from_rows(rows).ats_line)
    assert table[0] == {"pixels": "1.00e+06", "Zoom-In tensors (MiB)": 2.0, "Zoom-In numpy (MiB)": 7.0,
                        "Zoom-In time (s)": 0.5, "ATS tensors (MiB)": 3.0, "ATS numpy (MiB)": 1.0, "ATS time (s)": 1.0}
    assert table[2]["ATS tensors (MiB)"] == "33 (extrapolated)"
    assert table[2]["ATS numpy (MiB)"] == table[2]["ATS time (s)"] == ""
    assert table[2]["Zoom-In tiles opened"] == "12 of 30"  # how many tissue tiles the exact top-k opened


def test_memory_exponent_is_zero_for_a_flat_peak_and_one_for_a_linear_one():
    curve = MemoryCurve.from_rows(_sweep())
    assert curve.exponent(np.array([2.0, 2.0, 2.0])) == pytest.approx(0.0, abs=1e-12)
    assert curve.exponent(curve.pixels * 3e-6) == pytest.approx(1.0)
    assert curve.exponent(np.sqrt(curve.pixels)) == pytest.approx(0.5)
    # Zoom-In's measured 2.0, 2.0, 2.2 over 16 times the pixels: log(1.1) / log(16) spread by the fit
    assert 0 < curve.exponent(curve.zoom_t) < 0.05
    assert curve.exponent(curve.ats_t, curve.ats_px) == pytest.approx(np.log(3) / np.log(4))


def test_measured_rows_are_table_2_columns():
    results = {"Zoom-In + annotations": {"accuracy": 0.75, "auc": None, "accuracy_sampling": 0.5,
                                         "seconds_median": 1.5, "n": 4}}
    memory = {"Zoom-In + annotations": {"torch_mb": 2.5, "numpy_mb": 7.0, "device_mb": 3.0}}
    assert measured_rows(results, memory) == [{
        "method": "Zoom-In + annotations", "pixel-level annotation": "yes", "accuracy % (top-k)": 75.0,
        "AUC (top-k)": "", "accuracy % (sampling)": 50.0, "peak tensors (MiB)": 2.5, "peak numpy (MiB)": 7.0,
        "peak GPU (MiB)": 3.0, "time per slide (s)": 1.5, "test slides": 4}]
    memory["Zoom-In + annotations"].pop("device_mb")
    assert "peak GPU (MiB)" not in measured_rows(results, memory)[0]


def test_pretraining_lines_and_spearman_rows():
    fit = {"first_loss": 0.6931, "last_loss": 0.5, "train_accuracy": 0.755}
    info = {"tiles": 20, "positive_tiles": 10, "subtiles": 80, "fits": {"a": fit, "f": fit}}
    assert pretraining_lines({"Zoom-In + annotations": info}) == [
        "Zoom-In + annotations pre-training on 20 tiles (10 with metastases) and 80 sub-tiles: a: loss 0.693 -> "
        "0.500, training accuracy 0.76, f: loss 0.693 -> 0.500, training accuracy 0.76"]
    s = {"rho": 0.25, "p_value": 0.1, "n_tiles": 46, "n_tiles_with_roi": 6}
    rows = spearman_rows({"Zoom-In": s, "Zoom-In + annotations": s}, 0.357)
    assert [r["paper reports"] for r in rows] == [0.357, ""]
    assert rows[0]["tiles with metastasis"] == 6


def test_contours_keep_the_tumour_groups_and_names_become_file_names():
    square = np.array([[0, 0], [1, 0], [1, 1]])
    roi = SimpleNamespace(polygons=[SimpleNamespace(group="_0", coordinates=square),
                                    SimpleNamespace(group="_2", coordinates=square * 2)])  # _2: an exclusion
    assert len(contours(roi)) == 1 and contours(roi)[0] is square
    assert contours(None) == []
    assert checkpoint_name("Zoom-In (Res) + annotations") == "Zoom-In_Res_+_annotations"


def _histories() -> dict[str, list[dict]]:
    """Two runs of 6 epochs, L_con from the third (warm-up 2): one stays at log 2, one learns."""
    flat = [0.70, 0.69, 0.71, 0.69, 0.70, 0.68]
    learns = [0.70, 0.60, 0.50, 0.40, 0.30, 0.20]
    con = [0.0, 0.0, 0.40, 0.10, 0.02, 0.01]
    return {"Zoom-In": [{"ce": c, "contrastive": k} for c, k in zip(flat, con)],
            "Zoom-In + annotations": [{"ce": c, "contrastive": 0.0} for c in learns]}


def test_plateau_facts_by_hand():
    spearman = {"Zoom-In": {"rho": -0.3, "per_slide": [-0.4, float("nan"), -0.2, 0.1]}}
    facts = plateau_facts(_histories(), spearman, warmup=2, last=3)
    plain = facts["Zoom-In"]
    assert plain["ce_first"] == 0.70 and plain["ce_last"] == pytest.approx((0.69 + 0.70 + 0.68) / 3)
    assert plain["con_highest"] == 0.40 and plain["con_last"] == 0.01  # the warm-up's zeros are not L_con's first
    assert (plain["rho"], plain["slides_below_zero"], plain["slides"]) == (-0.3, 2, 3)  # a NaN slide is not counted
    other = facts["Zoom-In + annotations"]
    assert np.isnan(other["rho"]) and other["slides"] == 0 and other["ce_last"] == pytest.approx(0.3)
    lines = plateau_text(facts, 0.6931)
    assert lines[0] == ("Zoom-In: cross-entropy first epoch 0.700, mean of the last 3 0.690 (best constant 0.693); "
                        "L_con highest 0.400, last 0.0100; figure 7's rho -0.300, below 0 on 2 of 3 annotated test slides")
    assert lines[1].endswith("L_con highest 0.000, last 0.0000")
    no_warmup_left = plateau_facts(_histories(), {}, warmup=6)
    assert "no L_con" in plateau_text(no_warmup_left, 0.6931)[0]


def test_training_figure_draws_both_losses_of_every_run():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = training_figure(_histories(), 0.6931, warmup=2, title="t")
    ce_ax, con_ax = fig.axes
    assert [list(line.get_ydata()) for line in ce_ax.lines[:2]] == [[h["ce"] for h in v] for v in _histories().values()]
    assert [list(line.get_ydata()) for line in con_ax.lines[:2]] == [[h["contrastive"] for h in v]
                                                                    for v in _histories().values()]
    assert any(list(line.get_ydata()) == [0.6931, 0.6931] for line in ce_ax.lines)  # the constant's line
    plt.close(fig)
