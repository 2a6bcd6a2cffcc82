"""Chapter 04's helpers: the tables and the memory curve against hand-computed rows."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from zoomin_lib.chapters.camelyon import (
    MemoryCurve,
    checkpoint_name,
    contours,
    measured_rows,
    memory_rows_table,
    INITIAL,
    NO_CON,
    TermStudy,
    plateau_facts,
    plateau_rows,
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


def _study() -> TermStudy:
    """The four runs of chapter 04's table, by hand: no history before training, no L_con without it."""
    runs = _histories()
    histories = {INITIAL: [], "Zoom-In": runs["Zoom-In"],
                 NO_CON: [{"ce": c, "contrastive": 0.0} for c in (0.70, 0.69, 0.70, 0.69, 0.69, 0.69)],
                 "Zoom-In + annotations": runs["Zoom-In + annotations"]}
    warmups = {INITIAL: 0, "Zoom-In": 2, NO_CON: 6, "Zoom-In + annotations": 2}
    results = {INITIAL: {"accuracy": 0.5, "auc": 0.92}, "Zoom-In": {"accuracy": 0.5, "auc": 0.4},
               NO_CON: {"accuracy": 0.6, "auc": None}, "Zoom-In + annotations": {"accuracy": 0.8, "auc": 1.0}}
    spearman = {"Zoom-In": {"rho": -0.3, "per_slide": [-0.4, float("nan"), -0.2, 0.1]},
                NO_CON: {"rho": 0.25, "per_slide": [0.3, 0.2]}}
    return TermStudy(histories, warmups, results, spearman, {})


def test_plateau_facts_by_hand():
    facts = plateau_facts(_study(), last=3)
    assert list(facts) == [INITIAL, "Zoom-In", NO_CON, "Zoom-In + annotations"]
    plain = facts["Zoom-In"]
    assert plain["ce_first"] == 0.70 and plain["ce_last"] == pytest.approx((0.69 + 0.70 + 0.68) / 3)
    assert plain["con_highest"] == 0.40 and plain["con_last"] == 0.01
    assert (plain["rho"], plain["slides_above_zero"], plain["slides_below_zero"], plain["slides"]) == (-0.3, 1, 2, 4)
    late = _study()._replace(warmups={**_study().warmups, "Zoom-In": 5})  # L_con from the sixth epoch only
    assert plateau_facts(late, last=3)["Zoom-In"]["con_highest"] == 0.01  # not the fifth epoch's 0.02
    assert (plain["accuracy"], plain["auc"]) == (0.5, 0.4)
    before, without = facts[INITIAL], facts[NO_CON]
    assert np.isnan(before["ce_first"]) and np.isnan(before["con_highest"]) and before["auc"] == 0.92
    assert np.isnan(without["con_highest"]) and np.isnan(without["auc"])  # its warm-up is every epoch; AUC None
    assert (without["slides_above_zero"], without["slides"]) == (2, 2)
    annotated = facts["Zoom-In + annotations"]
    assert np.isnan(annotated["rho"]) and annotated["slides"] == 0 and annotated["ce_last"] == pytest.approx(0.3)


def test_plateau_rows_leave_what_a_run_lacks_empty():
    rows = plateau_rows(plateau_facts(_study(), last=3))
    assert rows[1] == {"run": "Zoom-In", "cross-entropy, first epoch": 0.70,
                       "cross-entropy, mean of the last 3 epochs": pytest.approx(0.69),
                       "L_con, highest": 0.40, "L_con, last": 0.01, "test accuracy % (top-k)": 50.0,
                       "AUC (top-k)": 0.4, "figure 7's rho": -0.3, "annotated slides with rho > 0 / < 0": "1 / 2 of 4"}
    assert [rows[0][k] for k in ("cross-entropy, first epoch", "L_con, highest", "figure 7's rho")] == ["", "", ""]
    assert (rows[2]["L_con, last"], rows[2]["AUC (top-k)"], rows[2]["annotated slides with rho > 0 / < 0"]) == \
        ("", "", "2 / 0 of 2")
    assert rows[3]["annotated slides with rho > 0 / < 0"] == ""


def test_training_figure_draws_the_cross_entropy_of_every_run_and_l_con_where_it_ran():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = {"Zoom-In": _histories()["Zoom-In"], NO_CON: _study().histories[NO_CON]}
    fig = training_figure(runs, 0.6931, warmups={"Zoom-In": 2, NO_CON: 6, INITIAL: 0}, title="t")  # INITIAL: no run
    ce_ax, con_ax = fig.axes
    assert [list(line.get_ydata()) for line in ce_ax.lines[:2]] == [[h["ce"] for h in v] for v in runs.values()]
    assert any(list(line.get_ydata()) == [0.6931, 0.6931] for line in ce_ax.lines)  # the constant's line
    curves = [line for line in con_ax.lines if len(line.get_xdata()) == 6]
    assert [list(line.get_ydata()) for line in curves] == [[h["contrastive"] for h in runs["Zoom-In"]]]  # not NO_CON's
    assert [list(line.get_xdata()) for line in con_ax.lines if line not in curves] == [[2.5, 2.5]]  # one warm-up's end
    plt.close(fig)


def test_term_study_on_smoke_slides_shares_the_warm_up_and_drops_only_l_con(tmp_path, monkeypatch):
    """On the smoke stand-in: the initial weights are those train_variants starts from, and the run without L_con
    repeats the chapter's warm-up epoch exactly, then has no L_con."""
    import copy

    import torch

    from zoomin_lib.chapters import camelyon
    from zoomin_lib.wsi.annotations import attention_roi_spearman

    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path / "data"))
    starts, fit = {}, camelyon.fit_slides

    def recording_fit(model, readers, **kw):  # the weights each training run starts from, by checkpoint
        starts[Path(kw["checkpoint_path"]).stem] = copy.deepcopy(model.net.state_dict())
        return fit(model, readers, **kw)

    monkeypatch.setattr(camelyon, "fit_slides", recording_fit)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        cfg = dict(synthetic="smoke", tile=512, s1=1 / 16, s2=1 / 4, patch=32, n=4, epochs=2, warmup=1, lr=1e-3,
                   batch=2, val_fraction=0.0, variants=("lenet",), pixel=False, strip_pixels=2**12)
        data = camelyon.slide_data(None, cfg, seed=0)
        stats = camelyon.slide_stats(data.train)
        template = camelyon.slide_zoomin(cfg, stats, "lenet")
        readers = [template.open(r.path, name=r.slide_id, label=r.label, roi=camelyon.roi_of(r), cache_views=True)
                   for r in data.train]
        trained = camelyon.train_variants(cfg, stats, readers, seed=0, out=tmp_path / "out")
        evaluation = camelyon.evaluate_variants(trained.models, data.test, [], memory_slides=1, seed=0)
        views = camelyon.slide_views(data.test, cfg["tile"], template.tissue_side)
        spearman, _ = camelyon.attention_vs_ratio(trained.models, evaluation.predictions, data.test, views, "t")
        study = camelyon.term_study(cfg, stats, readers, data.test, views, trained.histories, evaluation.results,
                                    spearman, seed=0, out=tmp_path / "out")
    finally:
        torch.set_num_threads(threads)
    assert list(study.histories) == [INITIAL, "Zoom-In", NO_CON]
    assert study.histories[INITIAL] == [] and study.warmups == {INITIAL: 0, "Zoom-In": 1, NO_CON: 2}
    initial = study.models[INITIAL].net.state_dict()
    for run in ("Zoom-In", "Zoom-In_without_L_con"):  # both training runs start from the measured initial weights
        assert all(torch.equal(initial[k], v) for k, v in starts[run].items())
    with_con, without = study.histories["Zoom-In"], study.histories[NO_CON]
    assert without[0]["ce"] == with_con[0]["ce"] and without[0]["loss"] == with_con[0]["loss"]  # the same warm-up
    assert all(h["contrastive"] == 0.0 for h in without) and with_con[1]["contrastive"] > 0
    assert (tmp_path / "out" / "checkpoints" / "Zoom-In_without_L_con.pt").is_file()
    assert study.results["Zoom-In"] is evaluation.results["Zoom-In"]
    for name in (INITIAL, NO_CON):
        assert study.results[name]["n"] == len(data.test) and study.results[name]["mode"] == "topk"
    assert spearman and set(study.spearman) == {INITIAL, "Zoom-In", NO_CON}  # the smoke test set has annotations
    assert study.spearman["Zoom-In"] is spearman["Zoom-In"]
    # rho matches predictions to slides by path: without its first prediction, the others keep their own alpha
    preds = evaluation.predictions["Zoom-In"]
    model = trained.models["Zoom-In"]
    full = camelyon.tile_attention_and_ratios(model, preds, data.test, views)
    assert attention_roi_spearman(*full)["rho"] == spearman["Zoom-In"]["rho"]
    annotated = [p for r, p in zip(data.test, preds) if views.rois[r.slide_id] is not None]
    short = camelyon.tile_attention_and_ratios(model, preds[1:], data.test, views)
    kept = annotated[1:] if preds[0] is annotated[0] else annotated
    assert len(short[0]) == len(kept) and all(a is p.alpha for a, p in zip(short[0], kept))
