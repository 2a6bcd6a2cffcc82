"""Tests of zoomin_lib.chapters.proofs: chapter 01's tables of eq. 8, eq. 9 and the gradient rules, and its figures."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from zoomin_lib.chapters import proofs
from zoomin_lib.theory.estimator_variants import RULES


def test_eq8_symbolic_finds_the_corrected_form_and_the_minus_sign():
    rows = proofs.eq8_symbolic(3)
    assert [r["K"] for r in rows] == [2, 3]
    for r in rows:
        assert r["corrected eq. 8 holds"] and not r["printed eq. 8 holds"]
        assert r["eq. 11 line 2 with minus holds"] and not r["eq. 11 line 2 with plus holds"]


def test_eq8_numeric_separates_the_readings_and_repeats_with_its_seed():
    rows = proofs.eq8_numeric(4, seed=3)
    assert [r["K"] for r in rows] == [2, 3, 4]
    assert all(r["max abs error, corrected"] < 1e-14 < 1e-3 < r["max abs error, printed"] for r in rows)
    assert proofs.eq8_numeric(4, seed=3) == rows


def test_estimator_symbolic_covers_every_draw_count_up_to_max_n():
    rows = proofs.estimator_symbolic(3, max_n=2)
    assert [(r["K"], r["n"]) for r in rows] == [(2, 1), (2, 2), (3, 1), (3, 2)]
    assert all(r["mean of Y_k unbiased"] and r["Y_n alone unbiased"] for r in rows)


def test_two_stage_symbolic_tells_the_readings_apart_at_a_fixed_point():
    (row,) = proofs.two_stage_symbolic([(2, 2, 2)], seed=0)
    assert (row["T"], row["K2"], row["N"]) == (2, 2, 2)
    assert row["within-tile reading unbiased"] and not row["literal reading unbiased"]
    assert row["literal relative bias at a random point"] != 0
    assert proofs.two_stage_symbolic([(2, 2, 2)], seed=0)[0]["literal relative bias at a random point"] == \
        row["literal relative bias at a random point"]


def test_gradient_bias_rows_rename_the_three_errors():
    table = {"rule A": {"value": 0.0, "grad_logits": 0.5, "grad_features": 0.25}}
    assert proofs.gradient_bias_rows(table) == [
        {"rule": "rule A", "E[value]": 0.0, "E[d/d logits]": 0.5, "E[d/d features]": 0.25}]


def test_gradient_bias_grid_holds_the_worst_error_per_case_and_its_figure_draws_every_rule():
    grid = proofs.gradient_bias_grid([3], seed=0, problems=1)
    assert list(grid) == list(RULES)
    assert all(list(cases) == ["K=3, n=2", "K=3, n=3"] for cases in grid.values())
    assert max(grid[proofs.OURS].values()) < 1e-10 < min(grid["ATS hand-written rule"].values())
    fig = proofs.plot_gradient_bias_grid(grid)
    assert isinstance(fig, Figure) and len(fig.axes[0].get_lines()) == len(RULES) + 1  # and the dashed line
    plt.close(fig)


def test_monte_carlo_gradient_gives_one_error_per_repeat_count():
    curves = proofs.monte_carlo_gradient([10, 1000], seed=0)
    assert list(curves) == list(RULES) and all(len(c) == 2 and min(c) > 0 for c in curves.values())
    assert curves[proofs.OURS][1] < curves[proofs.OURS][0]  # more draws, a closer mean for the unbiased rule
    assert proofs.monte_carlo_gradient([10, 1000], seed=0) == curves
    fig = proofs.plot_monte_carlo_gradient([10, 1000], curves)
    assert len(fig.axes[0].get_lines()) == len(RULES) + 1  # and the 1/sqrt(R) line
    plt.close(fig)


def test_adaptive_rows_show_the_pilot_rule_exact_and_the_naive_rule_biased():
    results = proofs.adaptive_cases(0, {"tiny": dict(k=2, pilot=2, budget=4, tol=0.4)})
    rows = proofs.adaptive_rows(results)
    assert [r["rule"] for r in rows] == ["adaptive", "naive"]
    assert rows[0]["E[value] rel. error"] < 1e-10 and rows[0]["worst E[gradient] rel. error"] < 1e-10
    assert rows[1]["worst E[gradient] rel. error"] > 1e-3
