"""Chapter 08 (the memory/accuracy trade-off): the machinery behind its cells, so that each cell reads as one step.

On the colon-cancer task (chapter 03's geometry: 500x500 images, Zoom-In on V(x, 0.1) with 250x250
tiles and V(x, 0.2, c), 27x27 patches; ATS on V(x, 0.2)):

- tables 3 and 4 of Zoom-In's appendices H and I (sample size N, entropy weight lambda, contrastive
  loss): `configs`, `make_probe`, `accuracy_text`, `table3_rows`, `table4_rows`;
- figure 4 (memory of a training step and N' over the epochs) with E[N'] = sum_c 1 - (1 - alpha_c)^N
  and its bounds: `figure4`, `unique_tile_bounds`;
- the memory model of sec. 2.1 / appendix A, O(s^2 HW + N hw) for ATS against
  O(s1^2 HW + N' s2^2 h1 w1 + N h2 w2) for Zoom-In, fitted to measured peaks (`theory.memory_model`):
  `memory_model_points`, `fit_rows`, `fit_figure`, `crossover_rows`;
- peak inference memory against image size, its fitted lines and their crossings: `inference_sweep`,
  `sweep_rows`, `fit_lines`, `line_crossings`, `sweep_figure`;
- beyond the paper, a third level of zoom (`beyond.levels`): its memory model, one term a level,
  fitted to measured training-step peaks beside the two-level model's (`levels_memory_points`,
  `levels_rows`).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, NamedTuple, Sequence

import numpy as np
import torch
from torch import nn

from zoomin_lib import builders
from zoomin_lib.beyond.levels import build_levels
from zoomin_lib.chapters.attention import unique_tiles
from zoomin_lib.hierarchical import expected_unique
from zoomin_lib.theory import memory_model as mm
from zoomin_lib.train.profiling import lean_inference, peak_memory, training_step_peak_mb
from zoomin_lib.train.protocol import TrainSettings

__all__ = [
    "COMMON", "S1", "S2", "TILE", "PATCH", "zoom", "ats", "Config", "configs", "make_probe", "accuracy_text",
    "table3_rows", "table4_rows", "figure4", "unique_tile_bounds", "memory_model_points", "fit_rows", "fit_figure",
    "crossover_rows", "inference_sweep", "sweep_rows", "fit_lines", "line_crossings", "sweep_figure", "PAIRS",
    "LEVEL_SCALES", "LEVEL_CELLS", "LEVEL_CHILDREN", "three_levels", "three_level_patches", "levels_memory_points", "levels_rows",
]

COMMON = dict(in_channels=3, n_classes=2)
S1, S2, TILE, PATCH = 0.1, 0.2, 250, 27  # chapter 03's geometry: Zoom-In's scales and tiles, the patch size
TABLE3 = ["Zoom-In N=5", "Zoom-In N=10", "Zoom-In N=50", "ATS N=5", "ATS N=10", "ATS N=50"]
TABLE4 = ["Zoom-In N=10", "Zoom-In N=10 lambda=0", "Zoom-In N=10 lambda=1", "Zoom-In N=10 no contrastive",
          "Zoom-In N=5", "Zoom-In N=50"]
# the sweep's curves compared pairwise: methods against each other, in the same setting
PAIRS = [("CNN (s=1)", "ATS-10 all at once"), ("CNN (s=1)", "Zoom-In all at once"), ("CNN (s=1)", "ATS-10 lean"),
         ("CNN (s=1)", "Zoom-In lean"), ("ATS-10 all at once", "Zoom-In all at once"), ("ATS-10 lean", "Zoom-In lean")]


# ---------------------------------------------------------------------------------------- tables 3, 4
def zoom(n: int, bounded_a: bool = False) -> Callable[[], nn.Module]:
    """A factory of Zoom-In with N = n on the colon geometry (`bounded_a`: table 5's tanh on a)."""
    return lambda: builders.zoomin(**COMMON, scale1=S1, scale2=S2, tile_size=TILE, patch_size=PATCH, n_patches=n,
                                   bounded_a=bounded_a)


def ats(n: int) -> Callable[[], nn.Module]:
    """A factory of ATS with N = n on V(x, 0.2), 27x27 patches."""
    return lambda: builders.ats(**COMMON, scale=S2, patch_size=PATCH, n_patches=n)


class Config(NamedTuple):
    """One trained configuration of tables 3 and 4."""

    factory: Callable[[], nn.Module]
    settings: TrainSettings
    lam: float  # the entropy weight lambda
    n: int  # N
    contrastive: bool


def configs(cfg: Mapping[str, Any]) -> dict[str, Config]:
    """Every configuration the tables and figure 4 need, by name, with the profile's epochs, lr and schedule."""
    def settings(lam: float = 1e-5, contrastive: bool = True) -> TrainSettings:
        return TrainSettings(epochs=cfg["epochs"], batch_size=5, lr=cfg["lr"], warmup_epochs=cfg["warmup"],
                             lam=lam, contrastive=contrastive, cosine_decay=cfg["cosine"])

    return {
        "Zoom-In N=5": Config(zoom(5), settings(), 1e-5, 5, True),
        "Zoom-In N=10": Config(zoom(10), settings(), 1e-5, 10, True),
        "Zoom-In N=50": Config(zoom(50), settings(), 1e-5, 50, True),
        "Zoom-In N=10 lambda=0": Config(zoom(10), settings(lam=0.0), 0.0, 10, True),
        "Zoom-In N=10 lambda=1": Config(zoom(10), settings(lam=1.0), 1.0, 10, True),
        "Zoom-In N=10 no contrastive": Config(zoom(10), settings(contrastive=False), 1e-5, 10, False),
        "Zoom-In N=10 tanh on a": Config(zoom(10, bounded_a=True), settings(), 1e-5, 10, True),
        "ATS N=5": Config(ats(5), settings(), 1e-5, 5, True),
        "ATS N=10": Config(ats(10), settings(), 1e-5, 10, True),
        "ATS N=50": Config(ats(50), settings(), 1e-5, 50, True),
    }


def make_probe(probe_x: torch.Tensor, probe_y: torch.Tensor, test_x: torch.Tensor,
               seed: int) -> Callable[[nn.Module, torch.Generator], dict[str, float]]:
    """Figure 4's record after an epoch: a training step's peak on `probe_x` [1, 3, H, W]; for Zoom-In, N' on `test_x`.

    N' twice: the mean drawn N' over `test_x` [B, 3, H, W] (one draw each) and its expectation given alpha; and
    the mean largest alpha_c, how sharp the first stage is.
    """
    def probe(model: nn.Module, generator: torch.Generator) -> dict[str, float]:
        record = {"train_peak_mb": training_step_peak_mb(model, probe_x, probe_y, torch.Generator().manual_seed(seed))}
        if hasattr(model, "first_stage"):
            record["n_unique"] = float(unique_tiles(model, test_x, torch.Generator().manual_seed(seed)).float().mean())
            with torch.no_grad():
                alpha = model.first_stage(test_x)  # [B, T]
            record["expected_n_unique"] = float(expected_unique(alpha, model.n_patches).mean())
            record["max_alpha"] = float(alpha.max(dim=1).values.mean())
        return record

    return probe


def accuracy_text(summary: Mapping[str, Any]) -> str:
    """Accuracy in %, with ± its standard deviation over runs when there is more than one run."""
    return (f"{100 * summary['accuracy_mean']:.1f}"
            + (f" ± {100 * summary['accuracy_std']:.1f}" if summary["runs"] > 1 else ""))


def table3_rows(summary: Mapping[str, Mapping[str, Any]], costs: Mapping[str, Mapping[str, Any]],
                costs_all: Mapping[str, Mapping[str, Any]], configs: Mapping[str, Config],
                paper: Mapping[tuple[str, int], Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Table 3: accuracy, AUC, peak memory (lean and all at once) and time per method and N, beside the paper's."""
    rows = []
    for name in TABLE3:
        method, n = name.split()[0], configs[name].n
        reported = paper.get((method, n), {})
        rows.append({"method": method, "N": n, "accuracy % (measured)": accuracy_text(summary[name]),
                     "AUC (measured)": summary[name]["auc_mean"],
                     "peak MiB, lean (measured)": costs[name]["peak_memory_mb"],
                     "peak MiB, all at once (measured)": costs_all[name]["peak_memory_mb"],
                     "ms, all at once (measured)": costs_all[name]["ms_per_sample"],
                     "accuracy % (paper)": reported.get("accuracy", "—"), "MB (paper)": reported.get("memory_mb", "—"),
                     "ms (paper)": reported.get("time_ms", "—")})
    return rows


def table4_rows(summary: Mapping[str, Mapping[str, Any]], configs: Mapping[str, Config],
                paper: Mapping[tuple[float, int, bool], Any]) -> list[dict[str, Any]]:
    """Table 4, Zoom-In's ablation: accuracy and AUC per (lambda, N, contrastive), beside the paper's accuracy."""
    rows = []
    for name in TABLE4:
        c = configs[name]
        rows.append({"lambda": c.lam, "N": c.n, "contrastive": c.contrastive,
                     "accuracy % (measured)": accuracy_text(summary[name]), "AUC (measured)": summary[name]["auc_mean"],
                     "accuracy % (paper, table 4)": paper[(c.lam, c.n, c.contrastive)]})
    return rows


# ------------------------------------------------------------------------------------------ figure 4
def figure4(histories: Mapping[str, Sequence[Mapping[str, float]]], epochs: int,
            title: str) -> tuple[Any, dict[str, list[float]], dict[str, list[float]]]:
    """Figure 4 from the probes' epoch records: a training step's peak (N = 10) and N' over the epochs.

    Left: the peak of Zoom-In (both first stages) and ATS; right: the drawn N' of the default Zoom-In and E[N']
    given alpha of both. Returns the figure, E[N'] and the mean largest alpha_c per epoch of the two Zoom-Ins.
    """
    import matplotlib.pyplot as plt

    epochs = np.arange(1, epochs + 1)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.4))
    for name in ["Zoom-In N=10", "Zoom-In N=10 tanh on a", "ATS N=10"]:
        ax1.plot(epochs, [h["val_train_peak_mb"] for h in histories[name]], marker="o", ms=3, label=name)
    curves = {name: histories[name] for name in ["Zoom-In N=10", "Zoom-In N=10 tanh on a"]}
    expected = {name: [h["val_expected_n_unique"] for h in hist] for name, hist in curves.items()}
    sharpness = {name: [h["val_max_alpha"] for h in hist] for name, hist in curves.items()}
    n_unique = [h["val_n_unique"] for h in curves["Zoom-In N=10"]]
    ax2.plot(epochs, n_unique, marker="o", ms=3, color="C0", alpha=0.4, label="drawn N' (mean over test images)")
    for colour, name in zip(["C0", "C1"], curves):
        ax2.plot(epochs, expected[name], marker="s", ms=3, color=colour, label=f"E[N'] given alpha, {name}")
    ax1.set_xlabel("epoch")
    ax1.set_ylabel("peak memory of a training step (MiB)")
    ax1.legend(fontsize=7)
    ax2.set_xlabel("epoch")
    ax2.set_ylabel("distinct tiles drawn, N=10")
    ax2.legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig, expected, sharpness


def unique_tile_bounds(tiles: int, n: int) -> tuple[float, float]:
    """(largest E[N'], smallest E[N'] with table 5's tanh on a) for `tiles` tiles and N = n draws.

    E[N'] = sum_c 1 - (1 - alpha_c)^N is largest for a uniform alpha. With a tanh, a tile's logit lies in [-1, 1],
    so one tile gets at most e / (e + (T - 1) / e) of the mass; the floor counts that tile once and spreads the
    rest evenly over the other T - 1.
    """
    uniform_bound = tiles * (1 - (1 - 1 / tiles) ** n)
    top = np.e / (np.e + (tiles - 1) / np.e)
    tanh_floor = 1 + (tiles - 1) * (1 - (1 - (1 - top) / (tiles - 1)) ** n)
    return uniform_bound, tanh_floor


# ------------------------------------------------------------------------------------ memory model
def memory_model_points(sides: Sequence[int], ns: Sequence[int]) -> tuple[list, list, list, list]:
    """Peaks of one training step (bytes) over image sides and N, with the memory model's terms for each.

    Batch 1, every drawn tile's view and every patch in one batch (as the model assumes); the terms of Zoom-In
    use the N' of that very draw. Returns (Zoom-In terms, Zoom-In peaks, ATS terms, ATS peaks).
    """
    terms_z, meas_z, terms_a, meas_a = [], [], [], []
    target = torch.tensor([1])
    for side in sides:
        xs = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side))
        for n in ns:
            z, a = zoom(n)(), ats(n)()
            z.tile_chunk = z.chunk_size = a.chunk_size = 10**6  # everything at once, as the model assumes
            n_unique_draw = int(unique_tiles(z, xs, torch.Generator().manual_seed(n)))
            meas_z.append(training_step_peak_mb(z, xs, target, torch.Generator().manual_seed(n)) * 2**20)
            terms_z.append(mm.zoomin_terms(side, side, S1, S2, TILE, PATCH, n, n_unique_draw))
            meas_a.append(training_step_peak_mb(a, xs, target, torch.Generator().manual_seed(n)) * 2**20)
            terms_a.append(mm.ats_terms(side, side, S2, PATCH, n))
    return terms_z, meas_z, terms_a, meas_a


def fit_rows(fit_z: mm.MemoryFit, err_z: np.ndarray, fit_a: mm.MemoryFit, err_a: np.ndarray) -> list[dict[str, Any]]:
    """The two fitted memory models: bytes per pixel of each term, the constant, and their relative errors."""
    return [
        {"model": "Zoom-In: c0 + c1 s1²HW + c2 N' s2² h1w1 + c3 N h2w2",
         "bytes per pixel of each term": ", ".join(f"{c:.0f}" for c in fit_z.coef), "c0 (bytes)": fit_z.intercept,
         "measurements": len(err_z), "max relative error": float(err_z.max()), "median": float(np.median(err_z))},
        {"model": "ATS: c0 + c1 s²HW + c2 N hw",
         "bytes per pixel of each term": ", ".join(f"{c:.0f}" for c in fit_a.coef), "c0 (bytes)": fit_a.intercept,
         "measurements": len(err_a), "max relative error": float(err_a.max()), "median": float(np.median(err_a))},
    ]


def fit_figure(points: tuple[list, list, list, list], fit_z: mm.MemoryFit, fit_a: mm.MemoryFit) -> Any:
    """The fitted models against the measured peaks (MiB, log-log), with the diagonal of a perfect fit."""
    import matplotlib.pyplot as plt

    terms_z, meas_z, terms_a, meas_a = points
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(np.array(meas_z) / 2**20, fit_z.predict(terms_z) / 2**20, "o", label="Zoom-In")
    ax.loglog(np.array(meas_a) / 2**20, fit_a.predict(terms_a) / 2**20, "s", label="ATS")
    lim = [min(meas_z + meas_a) / 2**20 * 0.8, max(meas_z + meas_a) / 2**20 * 1.2]
    ax.plot(lim, lim, "k--", lw=0.8)
    ax.set_xlabel("measured peak of a training step (MiB)")
    ax.set_ylabel("memory model, fitted (MiB)")
    ax.legend()
    ax.set_title("Sec. 2.1 / appendix A memory model against measurement", fontsize=9)
    return fig


def _training_mb(fit: mm.MemoryFit, terms: dict[str, float]) -> float:
    """A fitted model's training-step memory (MiB) for one set of terms."""
    return float(fit.predict([terms])[0]) / 2**20


def crossover_rows(fit_z: mm.MemoryFit, fit_a: mm.MemoryFit, n_uniques: Sequence[int] = (1, 2, 4, 10),
                   n: int = 10) -> list[dict[str, Any]]:
    """Per N': the side (px, in steps of 10 up to 4000) from which Zoom-In's fitted step needs less than ATS's.

    N' is capped at the image's number of tiles; the row also gives both models at 500x500.
    """
    rows = []
    for n_u in n_uniques:
        za = [(side, _training_mb(fit_z, mm.zoomin_terms(side, side, S1, S2, TILE, PATCH, n,
                                                         min(n_u, math.ceil(side / TILE) ** 2))),
               _training_mb(fit_a, mm.ats_terms(side, side, S2, PATCH, n))) for side in range(250, 4001, 10)]
        above = [side for side, z, a in za if z >= a]  # sides where Zoom-In needs at least as much as ATS
        cross = 250 if not above else (above[-1] + 10 if above[-1] < 4000 else None)
        rows.append({"N'": n_u, "Zoom-In below ATS for every side from (px)": cross if cross is not None else "not up to 4000",
                     "at 500x500: Zoom-In MiB": _training_mb(fit_z, mm.zoomin_terms(500, 500, S1, S2, TILE, PATCH, n,
                                                                                   min(n_u, 4))),
                     "at 500x500: ATS MiB": _training_mb(fit_a, mm.ats_terms(500, 500, S2, PATCH, n))})
    return rows


# ------------------------------------------------------------------------ memory against image size
def _inference_peak_mb(model: nn.Module, xs: torch.Tensor, mode: str, device: torch.device, seed: int) -> float:
    """Peak memory (MiB) of one forward without gradients on `device`, its draws seeded with `seed`."""
    gen = torch.Generator(device).manual_seed(seed)
    with torch.no_grad():
        return peak_memory(lambda: model(xs, mode=mode, generator=gen), device, warmup=False).peak_mb


def inference_sweep(sweep_sides: Sequence[int], cnn_max_side: int, device: torch.device,
                    seed: int) -> tuple[dict[str, list[float]], dict[str, list[int]]]:
    """Peak inference memory (MiB) per image side of the CNN (s = 1), ATS-10 and Zoom-In (N = 10), untrained.

    ATS and Zoom-In are measured lean (one patch, one tile at a time) and all at once; the CNN up to
    `cnn_max_side`. Returns the peaks and the sides measured, by curve.
    """
    curves = {"CNN (s=1)": [], "ATS-10 lean": [], "ATS-10 all at once": [], "Zoom-In lean": [], "Zoom-In all at once": []}
    sides = {k: [] for k in curves}
    cnn = builders.cnn(**COMMON, scale=1.0).eval().to(device)
    z10, a10 = zoom(10)().eval().to(device), ats(10)().eval().to(device)
    for side in sweep_sides:
        xs = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side)).to(device)  # [1, 3, side, side]
        if side <= cnn_max_side:
            curves["CNN (s=1)"].append(_inference_peak_mb(cnn, xs, "exact", device, seed))
            sides["CNN (s=1)"].append(side)
        for name, model in (("ATS-10", a10), ("Zoom-In", z10)):
            with lean_inference(model):
                curves[f"{name} lean"].append(_inference_peak_mb(model, xs, "sample", device, seed))
            saved = {k: getattr(model, k) for k in ("chunk_size", "tile_chunk") if hasattr(model, k)}
            for k in saved:
                setattr(model, k, 10**6)
            curves[f"{name} all at once"].append(_inference_peak_mb(model, xs, "sample", device, seed))
            for k, v in saved.items():
                setattr(model, k, v)
            sides[f"{name} lean"].append(side)
            sides[f"{name} all at once"].append(side)
        del xs
    return curves, sides


def sweep_rows(curves: Mapping[str, Sequence[float]], sides: Mapping[str, Sequence[int]],
               sweep_sides: Sequence[int]) -> list[dict[str, Any]]:
    """The sweep as a table, a row per side ('not measured' where a curve stops)."""
    return [{"side": s, **{k: (curves[k][sides[k].index(s)] if s in sides[k] else "not measured") for k in curves}}
            for s in sweep_sides]


def fit_lines(curves: Mapping[str, Sequence[float]],
              sides: Mapping[str, Sequence[int]]) -> dict[str, tuple[float, float]]:
    """Per curve, the line c0 + c1 HW fitted to its peaks: (c1 in MiB per pixel, c0 in MiB)."""
    lines = {}
    for name in curves:
        area = np.array(sides[name], dtype=float) ** 2
        slope, intercept = np.polyfit(area, np.array(curves[name]), 1)  # MiB per pixel, MiB
        lines[name] = (float(slope), float(intercept))
    return lines


def line_crossings(lines: Mapping[str, tuple[float, float]], sides: Mapping[str, Sequence[int]],
                   sweep_sides: Sequence[int], max_side: float) -> list[dict[str, Any]]:
    """Where two fitted lines of `PAIRS` cross between 100 px and `max_side`, and whether inside the measured range."""
    crossings = []
    for a_name, b_name in PAIRS:
        side = mm.crossover_side(lines[a_name][0], lines[a_name][1], lines[b_name][0], lines[b_name][1])
        if np.isfinite(side) and 100 <= side <= max_side:
            measured = min(max(sides[a_name]), max(sides[b_name]))
            where = "measured range" if min(sweep_sides) <= side <= measured else "fitted lines, outside the measured range"
            crossings.append({"curves": f"{a_name} / {b_name}", "side (px)": round(side), "pixels": side**2, "from": where})
    return crossings


def sweep_figure(curves: Mapping[str, Sequence[float]], sides: Mapping[str, Sequence[int]],
                 lines: Mapping[str, tuple[float, float]], crossings: Sequence[Mapping[str, Any]], sides_from: int,
                 max_side: float, title: str) -> Any:
    """Peaks against image size (log-log): markers measured, dashed the fitted lines up to `max_side`; crossings marked."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    grid = np.geomspace(sides_from, max_side, 60)
    for k, name in enumerate(curves):
        color = f"C{k}"
        ax.loglog(np.array(sides[name]) ** 2, curves[name], "o", color=color, label=f"{name} (measured)")
        ax.loglog(grid**2, np.maximum(lines[name][1] + lines[name][0] * grid**2, 1e-3), "--", color=color, lw=0.9)
    for c in crossings:
        ax.axvline(c["pixels"], color="gray", lw=0.6, ls=":")
        ax.text(c["pixels"], ax.get_ylim()[1], c["curves"], rotation=90, fontsize=6, va="top", ha="right")
    ax.set_xlabel("image size (pixels)")
    ax.set_ylabel("peak inference memory (MiB)")
    ax.legend(fontsize=7, loc="upper left")
    ax.set_title(title, fontsize=9)
    return fig


# ------------------------------------------------------------------------ beyond the paper: a third level
# tiles of 250 px chosen on V(x, 0.1); within a tile, cells of 50 px chosen on V(tile, 0.1); within a cell,
# LEVEL_CHILDREN[0] locations of V(cell, 0.5) (2 px apart), each a 27x27 patch read at full resolution
LEVEL_SCALES, LEVEL_CELLS, LEVEL_CHILDREN = (S1, 0.1, 0.5), (TILE, 50), (2,)


def three_levels(n_leaves: int) -> nn.Module:
    """The three-level Zoom-In on the colon geometry: n_leaves // 2 cells (at least 1), 2 patches each.

    It reads `three_level_patches(n_leaves)` patches: n_leaves when that is even, one fewer when odd.
    """
    return build_levels(**COMMON, scales=LEVEL_SCALES, cell_sizes=LEVEL_CELLS, patch_size=PATCH,
                        n_patches=max(1, n_leaves // LEVEL_CHILDREN[0]), n_children=LEVEL_CHILDREN)


def three_level_patches(n_leaves: int) -> int:
    """The patches `three_levels(n_leaves)` reads."""
    return max(1, n_leaves // LEVEL_CHILDREN[0]) * LEVEL_CHILDREN[0]


def levels_memory_points(sides: Sequence[int], ns: Sequence[int]) -> tuple[list[dict[str, float]], list[float]]:
    """Peaks (bytes) of one training step of `three_levels(n)` over image sides and n, with its memory-model terms.

    As `memory_model_points`: batch 1, every view and patch in one batch, the terms counted on that very draw
    (N' distinct tiles; every drawn level-2 cell is distinct, so level 3 views N / 2 cells).
    """
    terms, measured = [], []
    target = torch.tensor([1])
    for side in sides:
        xs = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(side))
        for n in ns:
            model = three_levels(n)
            model.tile_chunk = model.chunk_size = 10**6  # everything at once, as the model assumes
            n_unique = int(unique_tiles(model, xs, torch.Generator().manual_seed(n)))
            measured.append(training_step_peak_mb(model, xs, target, torch.Generator().manual_seed(n)) * 2**20)
            cells = model.n_patches  # the level-2 cells drawn (distinct), whose level-3 views are computed
            terms.append(mm.levels_terms(side, side, LEVEL_SCALES, LEVEL_CELLS, PATCH, [n_unique, cells],
                                         cells * LEVEL_CHILDREN[0]))
    return terms, measured


def levels_rows(sides: Sequence[int], ns: Sequence[int], two_level_bytes: Sequence[float],
                three_level_bytes: Sequence[float]) -> list[dict[str, Any]]:
    """Per (side, N): the patches each model reads, their measured training-step peaks, and the peaks' ratio."""
    rows = []
    for (side, n), two, three in zip([(s, n) for s in sides for n in ns], two_level_bytes, three_level_bytes):
        rows.append({"side (px)": side, "patches read (two levels)": n,
                     "patches read (three levels)": three_level_patches(n), "two levels (MiB)": two / 2**20,
                     "three levels (MiB)": three / 2**20, "three / two": three / two})
    return rows
