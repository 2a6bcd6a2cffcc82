"""Tests of zoomin_lib.chapters.variance_study: chapter 02's curves on small problems, checked by hand, and its figures."""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import torch

from zoomin_lib.chapters import variance_study as VS
from zoomin_lib.theory import variance as V

R = 2000


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_importance_curves_hold_the_formula_of_ats_eq_7_8_by_hand():
    a = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    f = torch.eye(3, dtype=torch.float64)  # mu = (0.5, 0.3, 0.2), |mu|^2 = 0.38
    uniform = V.uniform_proposal(3)
    res = VS.importance_curves(a, f, {"uniform": uniform}, [1, 2], R, _gen())
    # (1/n) (sum_i a_i^2 |f_i|^2 / p_i - |mu|^2) = (1/n) (3 (0.25 + 0.09 + 0.04) - 0.38)
    assert res["uniform"]["n"] == [1, 2]
    assert all(math.isclose(v, w, rel_tol=1e-12) for v, w in zip(res["uniform"]["analytic"], [0.76, 0.38]))
    assert len(res["uniform"]["mc"]) == len(res["uniform"]["se"]) == 2
    assert VS.importance_curves(a, f, {"uniform": uniform}, [1, 2], R, _gen()) == res  # the same draws again


def test_normalisation_sweep_starts_at_one_and_grows_with_the_spread():
    a = V.peaked_attention(16, 2.0, _gen(1))
    res = VS.normalisation_sweep(a, [0.0, 1.0], 4, 2, R, _gen(2), seed=0)
    assert math.isclose(res["ratio"][0], 1.0, rel_tol=1e-12) and res["ratio"][1] > 1.0
    assert all(len(res[key]) == 2 for key in ("var_a", "var_opt", "mc_a", "se_a", "mc_opt", "se_opt"))
    assert res["ratio"][1] == res["var_a"][1] / res["var_opt"][1]


def test_replacement_curves_and_exact_end_with_an_exact_last_term():
    gen = _gen(3)
    a = V.peaked_attention(6, 2.0, gen)
    f = V.random_features(6, 4, norm_spread=0.0, generator=gen)
    res = VS.replacement_curves(a, f, [1, 2, 6], R, gen)
    assert res["K"] == 6 and res["without_last"][-1] < 1e-12 < res["without_avg"][-1]
    assert res["with_analytic"][1] == V.importance_sampling_variance(a, f, a, 2)
    exact = VS.replacement_exact(a[:3] / a[:3].sum(), f[:3], R, gen)
    assert exact["n"] == [1, 2, 3] and exact["without_last"][-1] < 1e-20
    assert math.isclose(exact["without_avg"][0], exact["with"][0], rel_tol=1e-10)  # one draw from a either way
    fig = VS.plot_replacement(res, exact, R)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_gradient_variances_fall_as_one_over_n_with_replacement():
    gen = _gen(4)
    small = (V.peaked_attention(3, 2.0, gen), V.random_features(3, 4, 0.0, generator=gen))
    large = (V.peaked_attention(5, 2.0, gen), V.random_features(5, 4, 0.0, generator=gen))
    project = V.random_features(1, 4, 0.0, _gen(5))[0]
    res = VS.gradient_variances(small, large, project, [1, 5], R, gen)
    assert (res["exact"]["K"], res["exact"]["n"], res["mc"]["K"], res["mc"]["n"]) == (3, [1, 2, 3], 5, [1, 5])
    for part in ("logits", "feats"):
        ex = res["exact"][f"with_{part}"]
        assert all(math.isclose(v * n, ex[0], rel_tol=1e-9) for n, v in zip(res["exact"]["n"], ex))
        assert res["mc"][f"without_last_{part}"][-1] < 1e-12  # n = K: the last term's gradient is exact
    assert set(res["mc"]) == {"K", "n"} | {f"{s}_{p}{e}" for s in VS.SCHEMES for p in ("logits", "feats")
                                           for e in ("", "_se")}
    fig = VS.plot_gradient_variance(res)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_two_stage_curves_count_distinct_tiles():
    gen = _gen(6)
    alpha, beta, f = V.tiled_problem(4, 4, 4, tile_scale=2.0, subtile_scale=1.5, within_tile=1.0, generator=gen)
    res = VS.two_stage_curves(alpha, beta, f, [1, 2], R, gen)
    assert (res["T"], res["K2"], res["n"]) == (4, 4, [1, 2])
    assert math.isclose(res["unique_expected"][0], 1.0) and 1.0 < res["unique_expected"][1] < 2.0
    assert res["unique_expected"][1] == V.expected_unique_tiles(alpha, 2)
    fig = VS.plot_two_stage(res, R)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_the_figures_of_a_and_b_draw_every_curve():
    gen = _gen(7)
    a = V.peaked_attention(8, 2.0, gen)
    f = V.random_features(8, 4, norm_spread=0.75, generator=gen)
    res_a = VS.importance_curves(a, f, {"uniform": V.uniform_proposal(8), "attention a": a}, [1, 4], R, gen)
    fig = VS.plot_importance(res_a, 8, R)
    assert len(fig.axes[0].get_lines()) >= 2  # one formula line per proposal (and the error bars)
    plt.close(fig)
    fig = VS.plot_normalisation(a, f, VS.normalisation_sweep(a, [0.0, 0.5], 4, 4, R, gen, seed=0), 4)
    assert len(fig.axes) == 2
    plt.close(fig)


def test_adaptive_study_compares_the_rule_with_a_fixed_n_at_its_cost():
    gen = _gen(7)
    batch = VS.one_stage_images(3, 8, 4, 2.0, gen)
    assert batch["probs"].shape == (3, 8) and batch["feats"].shape == (3, 8, 4)
    res = VS.adaptive_study("one stage", batch, 3, 1, 4, 12, 200, gen)
    assert 4 <= min(res["per_image_mean_draws"]) and max(res["per_image_mean_draws"]) <= 12
    assert math.isclose(res["mean_var_fixed"], sum(res["sigma2"]) / 3 / res["mean_draws"], rel_tol=1e-12)
    assert res["oracle_max_var"] <= res["tol"] ** 2 * (1 + 1e-12)
    two = VS.two_stage_images(2, 3, 4, 4, 2.0, gen)
    res2 = VS.adaptive_study("two stages", two, 2, 2, 3, 8, 100, gen)
    assert res2["round_size"] == 2 and len(res2["adaptive_var"]) == 2
    fig = VS.plot_adaptive([res, res2])
    assert len(fig.axes) == 2
    plt.close(fig)
