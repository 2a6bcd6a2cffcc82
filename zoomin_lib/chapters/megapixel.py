"""Chapter 09's pieces: megapixel MNIST data as tensors, the five methods with four-task heads, cost scans, figures.

Methods (`Setup`, `methods`), each with 40 outputs (`multitask`: four blocks of 10):
- ATS-N (ATS sec. 3.3, supp. H.1): attention network a = three 3x3 convolutions (8, 8, 1 channels,
  tanh between them, none at the end: the authors' scripts/mnist.py) on V(x, s), N patches drawn
  without replacement.
- Zoom-In-N (Zoom-In sec. 2): alpha over square tiles on V(x, s1), beta^c on V(x, s2, c), the same a
  for both stages (no final tanh on a, as `builders.zoomin` defaults to).
- U-N: N patches drawn uniformly (ATS sec. 4.1.1).
- IPS (thesis sec. 2.7): the top M of all non-overlapping patches, I at a time, one query token and one
  head per task, a sinusoidal encoding of each patch's grid position (Top cannot be solved without
  it; the IPS code's mnist config sets use_pos: True), dropout 0.1 as in that config.
- CNN s: `builders.cnn` (a ResNet with 8 convolutions, 32 channels) on V(x, s).

The patch encoder f is shared by ATS, Zoom-In, U and IPS: "lenet" is table 5's f (`FeatureLeNet`; the
authors' megapixel MNIST f has the same layers with valid convolutions and global max pooling) and
"strided" is `StridedLeNet` below, a LeNet-1-like network about ten times cheaper per patch for CPU
runs (ATS supp. H.1 calls its f "inspired from LeNet-1"). ATS sec. 3.4 L2-normalises f's output in
all its models; `Setup.normalize` does so for ATS, Zoom-In and U (IPS feeds a transformer and does not).
ATS, Zoom-In and U aggregate features without their locations (ATS eq. 20), so they cannot tell where
a patch was: Top is open to them only through which digits their patches land on and with what weight
they are pooled (`picks_by_rank`).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from data_prep import megapixel_mnist as mp
from data_prep.mnist_digits import DIGIT_SIZE
from zoomin_lib.book.plotting import show_attention
from zoomin_lib.builders import cnn
from zoomin_lib.chapters.attention import attention_map, view_box_mask
from zoomin_lib.chapters.multitask import N_CLASSES, N_OUTPUTS, TASKS, TaskRun, pack_targets
from zoomin_lib.geometry import tile_grid, view_size
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.ips import IPSNet
from zoomin_lib.models import ATSNet, UniformNet, ZoomInNet
from zoomin_lib.networks import AttentionLeNet, FeatureLeNet, PatchEncoder
from zoomin_lib.train.loop import evaluating
from zoomin_lib.train.profiling import lean_inference, peak_memory

__all__ = [
    "StridedLeNet",
    "ENCODERS",
    "patch_encoder",
    "Setup",
    "methods",
    "dataset_root",
    "canvas_loader",
    "split_targets",
    "region_masks",
    "canvas_attention",
    "attention_masses",
    "plateau_exit",
    "picks",
    "RANK_NAMES",
    "digit_ranks",
    "picks_by_rank",
    "alpha_by_tile_row",
    "example_canvas",
    "memory_scan",
    "cost_rows",
    "paper_accuracy_rows",
    "show_canvas",
    "plot_error_vs_n",
    "plot_attention_evolution",
    "plot_learning",
    "plot_memory_scan",
    "plot_picks",
]

ENCODERS = ("strided", "lenet")


class StridedLeNet(PatchEncoder):
    """A LeNet-1-like patch encoder: Conv(5,2,2)-16 + ReLU, Conv(3,2,1)-32 + ReLU, Conv(3,1,1)-32 + ReLU, global max pool -> [M, 32]."""

    pool = "max"

    def __init__(self, in_channels: int = 1, normalize: bool = False) -> None:
        super().__init__(in_channels, normalize)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 16, 5, 2, 2), nn.ReLU(),
            nn.Conv2d(16, 32, 3, 2, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
        )

    def encode(self, x: Tensor) -> Tensor:
        """[M, 32, ph / 4, pw / 4]."""
        return self.net(x)


def patch_encoder(kind: str, normalize: bool = False) -> nn.Module:
    """The patch encoder f for one-channel patches: "strided" (StridedLeNet) or "lenet" (table 5's FeatureLeNet)."""
    if kind == "strided":
        return StridedLeNet(1, normalize)
    if kind == "lenet":
        return FeatureLeNet(1, normalize)
    raise ValueError(f"encoder must be one of {ENCODERS}, got {kind!r}")


@dataclass(frozen=True)
class Setup:
    """The settings of every method on one canvas size (see the module docstring)."""

    canvas: int  # canvas side, pixels
    ats_scale: float  # s of ATS's and U's view V(x, s)
    patch: int  # patch side of every patch method
    ns: tuple[int, ...]  # ATS's sample sizes N
    n: int  # N of Zoom-In and U
    zoom_scale1: float
    zoom_scale2: float
    zoom_tile: int
    ips_memory: int  # M
    ips_iter: int  # I
    cnn_scale: float
    encoder: str = "strided"
    normalize: bool = True  # L2-normalise f for ATS, Zoom-In and U (ATS sec. 3.4)

    def ats_name(self, n: int) -> str:
        """The table name of ATS with n patches."""
        return f"ATS-{n}"

    def names(self) -> dict[str, str]:
        """The table name of each method: zoom, uniform, ips, cnn."""
        return {"zoom": f"Zoom-In-{self.n}", "uniform": f"U-{self.n}",
                "ips": f"IPS (M={self.ips_memory}, I={self.ips_iter})", "cnn": f"CNN s={self.cnn_scale}"}

    zoom_name = property(lambda self: self.names()["zoom"], doc="The table name of Zoom-In.")
    uniform_name = property(lambda self: self.names()["uniform"], doc="The table name of uniform sampling.")
    ips_name = property(lambda self: self.names()["ips"], doc="The table name of IPS.")
    cnn_name = property(lambda self: self.names()["cnn"], doc="The table name of the CNN.")

    def view_size(self) -> tuple[int, int]:
        """(h, w) of ATS's view of a canvas."""
        return view_size((self.canvas, self.canvas), self.ats_scale)


def _attention() -> nn.Module:
    """The attention network of the authors' megapixel MNIST script: 3x3 convs 8, 8, 1 with tanh between, none at the end."""
    return AttentionLeNet(1, final_tanh=False)


def methods(
    setup: Setup, include: Sequence[str] = ("ats", "zoom", "uniform", "ips", "cnn")
) -> dict[str, Callable[[], nn.Module]]:
    """Name -> factory of each method of `setup` (ATS once per N), every one with 40 outputs."""
    s, out = setup, {}
    enc = lambda normalize: patch_encoder(s.encoder, normalize)  # noqa: E731
    if "ats" in include:
        for n in s.ns:
            out[s.ats_name(n)] = lambda n=n: ATSNet(_attention(), enc(s.normalize), N_OUTPUTS, s.ats_scale, s.patch, n)
    if "zoom" in include:
        out[s.zoom_name] = lambda: ZoomInNet(_attention(), _attention(), enc(s.normalize), N_OUTPUTS, s.zoom_scale1,
                                             s.zoom_scale2, s.zoom_tile, s.patch, s.n)
    if "uniform" in include:
        out[s.uniform_name] = lambda: UniformNet(enc(s.normalize), N_OUTPUTS, s.ats_scale, s.patch, s.n)
    if "ips" in include:
        out[s.ips_name] = lambda: IPSNet(enc(False), [N_CLASSES] * len(TASKS), s.patch, s.ips_memory, s.ips_iter,
                                         n_heads=8, dim_head=16, dropout=0.1, attn_dropout=0.1, pos_enc=True)
    if "cnn" in include:
        out[s.cnn_name] = lambda: cnn(in_channels=1, n_classes=N_OUTPUTS, scale=s.cnn_scale)
    return out


# ----------------------------------------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------------------------------------


def dataset_root(canvas: int, n_noise: int, n_train: int, n_test: int, seed: int = 0) -> Path:
    """A generated megapixel MNIST dataset (no validation split), cached under data/megapixel_mnist[_<canvas>px_<noise>noise]."""
    params = mp.parameters(n_train, 0, n_test, seed, canvas_size=canvas, n_noise=n_noise)
    paper = (canvas, n_noise) == (mp.CANVAS_SIZE, mp.N_NOISE)
    name = mp.TESTBED if paper else f"{mp.TESTBED}_{canvas}px_{n_noise}noise"
    return stand_in(name, params, lambda root: mp.write_dataset(root, params))


def canvas_loader(
    data: mp.MegapixelMNIST, indices: Sequence[int] | None = None, max_cache_mb: float = 0.0
) -> Callable[[Sequence[int]], Tensor]:
    """idx -> canvases [b, 1, S, S] in [0, 1]; idx counts within `indices` (default: all).

    Rendered on demand, or, when all the chosen canvases fit in `max_cache_mb` MiB as uint8, rendered once here
    and kept (the same pixels: a canvas is rendered deterministically from its stored digits and noise seed), so
    that training does not render every canvas again every epoch.
    """
    chosen = np.arange(len(data)) if indices is None else np.asarray(indices)
    cache = None
    if len(chosen) * data.canvas_size**2 <= max_cache_mb * 2**20:
        cache = np.stack([data.canvas(int(i)) for i in chosen]) if len(chosen) else None  # [n, S, S] uint8

    def load(idx: Sequence[int]) -> Tensor:
        if cache is not None:
            canvases = cache[np.asarray(idx, dtype=np.int64)]  # [b, S, S] uint8
        else:
            canvases = np.stack([data.canvas(int(chosen[i])) for i in idx])  # [b, S, S] uint8
        return torch.from_numpy(canvases).unsqueeze(1).float().div_(255)  # [b, 1, S, S]

    return load


def split_targets(data: mp.MegapixelMNIST, indices: Sequence[int] | None = None) -> np.ndarray:
    """The packed four-task targets int64 [N, 13] of the canvases (default: all)."""
    y = pack_targets(data.targets)
    return y if indices is None else y[np.asarray(indices)]


def example_canvas(canvas: int = mp.CANVAS_SIZE, n_noise: int = mp.N_NOISE, seed: int = 0) -> mp.MegapixelMNIST:
    """A one-canvas megapixel MNIST split (generated in a temporary folder, held in memory): to show a canvas size."""
    with tempfile.TemporaryDirectory() as folder:
        return mp.MegapixelMNIST(mp.generate(Path(folder) / "example", 1, 0, 0, seed, canvas, n_noise), "train")


def region_masks(data: mp.MegapixelMNIST, i: int, view_hw: tuple[int, int]) -> dict[str, Tensor]:
    """bool [h, w] masks of the view locations whose full-resolution centre lies on a digit, on noise, or on neither."""
    full = (data.canvas_size, data.canvas_size)
    corners = data.noise(i).positions  # [n, 2]
    noise_boxes = np.concatenate([corners, corners + DIGIT_SIZE], axis=1)  # [n, 4]
    digits = view_box_mask(view_hw, full, data.digit_boxes(i))
    noise = view_box_mask(view_hw, full, noise_boxes) & ~digits
    return {"digits": digits, "noise": noise, "empty": ~(digits | noise)}


def canvas_attention(model: nn.Module, x: Tensor) -> Tensor:
    """The attention distribution [h, w] over one canvas x [1, C, H, W]: ATS's on its view, Zoom-In's alpha beta on the s2 grid."""
    return attention_map(model, x)[0]


def attention_masses(
    models: Mapping[str, nn.Module], load: Callable[[Sequence[int]], Tensor], data: mp.MegapixelMNIST,
    indices: Sequence[int],
) -> list[dict[str, Any]]:
    """Where each trained attention lands, a row per model: its mean mass on digits, noise and empty space.

    The attention is `attention_map` (ATS: alpha on V(x, s); Zoom-In: alpha_c beta^c_c' over the s2 grid of
    every tile) on the canvases `indices` of `data` (loaded by `load`, positions within it), and each
    location counts for the region its full-resolution centre lies in (`region_masks`). The row also has the
    share of the locations in each region, the mass a uniform attention would put there.
    """
    x = load(list(range(len(indices))))  # [S, 1, H, W]
    rows = []
    for name, model in models.items():
        with evaluating(model):
            maps = attention_map(model, x.to(next(model.parameters()).device)).float().cpu()  # [S, h, w], sums 1
        masks = [region_masks(data, int(i), tuple(maps.shape[-2:])) for i in indices]
        row: dict[str, Any] = {"method": name}
        for region in ("digits", "noise", "empty"):
            row[f"mass on {region}"] = float(np.mean([float(m[k[region]].sum()) for m, k in zip(maps, masks)]))
            row[f"uniform on {region}"] = float(np.mean([float(k[region].float().mean()) for k in masks]))
        rows.append(row)
    return rows


def plateau_exit(mass: Sequence[float], share: float = 0.5) -> int | None:
    """The first epoch after which the attention mass on the digits exceeds `share`, or None if it never does.

    `mass` is a probe's curve: entry 0 before training, entry e after epoch e (`multitask.EpochProbe`).
    The answer is that entry's index, the number of epochs the attention took to leave the plateau
    on which it spreads over the canvas (0: already off it before training).
    """
    above = np.flatnonzero(np.asarray(mass, dtype=float) > share)
    return int(above[0]) if above.size else None


def plot_learning(runs: Mapping[str, TaskRun], chance_error: float, title: str = "") -> Figure:
    """Maj test error and the attention mass on the digits of the probe canvas after each epoch, one line per run.

    Runs without attention snapshots (no `mass_digits` in their history) get only the error curve.
    """
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, (name, run) in enumerate(runs.items()):
        _, error = run.curve("maj_error")
        left.plot(np.arange(len(error)), error, "o-", ms=3, color=f"C{k}", label=name)
        _, mass = run.curve("mass_digits")
        if np.isfinite(mass).any():
            right.plot(np.arange(len(mass)), mass, "o-", ms=3, color=f"C{k}", label=name)
    left.axhline(chance_error, color="grey", ls="--", lw=0.8, label="best constant prediction")
    left.set_xlabel("epoch (0: before training)")
    left.set_ylabel("Maj test error")
    left.set_ylim(0, 1)
    left.legend(fontsize=7)
    right.set_xlabel("epoch (0: before training)")
    return _finish(fig, right, "attention mass on the digits (probe canvas)", title)


def picks(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> tuple[np.ndarray, tuple[int, int]]:
    """(full-resolution centres [N, 2] (row, col) of the patches the model reads at inference on x [1, C, H, W], patch size)."""
    with evaluating(model):
        out = model(x, mode=getattr(model, "eval_mode", "topk"), generator=generator)
    return out.centers[0].numpy(), tuple(model.patch_size)


RANK_NAMES = ("top-most digit", "2nd from the top", "3rd", "4th", "5th")  # the columns of `picks_by_rank`


def digit_ranks(boxes: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Rank from the top of the digit each centre lies on: 0 the top-most digit, ..., -1 on no digit.

    boxes [k, 4] (top, left, bottom, right; bottom/right exclusive), centers [N, 2] (row, col). Digits are
    ranked by the Top task's rule (`megapixel_mnist.top_order`); a centre on two overlapping digits would
    count for the higher one (the generator never overlaps them).
    """
    ranked = boxes[mp.top_order(boxes[:, :2])]  # [k, 4], top-most first
    r, c = centers[:, 0:1], centers[:, 1:2]  # [N, 1]
    inside = (ranked[:, 0] <= r) & (r < ranked[:, 2]) & (ranked[:, 1] <= c) & (c < ranked[:, 3])  # [N, k]
    return np.where(inside.any(axis=1), inside.argmax(axis=1), -1)  # [N]


def picks_by_rank(
    models: Mapping[str, nn.Module], load: Callable[[Sequence[int]], Tensor], data: mp.MegapixelMNIST,
    indices: Sequence[int], seed: int = 0, batch: int = 32,
) -> list[dict[str, Any]]:
    """Which digits the patches a model reads at inference land on, and with what weight, a row per model.

    Per model (in its `eval_mode`, on the canvases `indices` of `data`, loaded by `load` by positions within
    it, `batch` at a time, each batch once for all models): the share of the weight with which it pools its
    patches (its `weights`, normalised per canvas; equal weights when it returns none, as a sampled mode
    does) that goes to patches centred on the top-most digit, the second from the top, ... (`digit_ranks`),
    and on no digit, averaged over the canvases; and the mean number of distinct digits it reads per canvas.
    A method that pools its patches without their positions can get the Top task right beyond what the
    majority class gives only if this weight leans to the top-most digit.
    """
    k = len(RANK_NAMES)
    shares = {name: [] for name in models}  # per model: [k + 1] per canvas, the last on no digit
    distinct: dict[str, list[int]] = {name: [] for name in models}
    generators = {name: torch.Generator().manual_seed(seed) for name in models}
    for start in range(0, len(indices), batch):
        chunk = list(range(start, min(start + batch, len(indices))))
        x = load(chunk)  # [b, 1, H, W]
        boxes = [data.digit_boxes(int(indices[i])) for i in chunk]
        for name, model in models.items():
            with evaluating(model):
                out = model(x.to(next(model.parameters()).device), mode=getattr(model, "eval_mode", "topk"),
                            generator=generators[name])
            centers = out.centers.cpu().numpy()  # [b, N, 2]
            weights = (out.weights.float().cpu().numpy() if out.weights is not None
                       else np.ones(centers.shape[:2]))  # [b, N]
            for b, c, w in zip(boxes, centers, weights):
                ranks = digit_ranks(b, c)  # [N]
                shares[name].append(np.bincount(np.where(ranks < 0, k, ranks), weights=w / w.sum(), minlength=k + 1))
                distinct[name].append(len(set(ranks[ranks >= 0].tolist())))
    rows = []
    for name in models:
        mean = np.mean(shares[name], axis=0)  # [k + 1]
        rows.append({"method": name, **dict(zip(RANK_NAMES, mean[:k].tolist())), "no digit": float(mean[k]),
                     "digits read per canvas": float(np.mean(distinct[name]))})
    return rows


def alpha_by_tile_row(
    model: ZoomInNet, load: Callable[[Sequence[int]], Tensor], data: mp.MegapixelMNIST, indices: Sequence[int],
    batch: int = 32,
) -> list[dict[str, Any]]:
    """Where Zoom-In's first stage puts its mass, a row per row of tiles, top row first.

    On the canvases `indices` of `data` (loaded by `load` by positions within it, `batch` at a time): alpha
    (`ZoomInNet.first_stage`, row-major over the tile grid) summed over the tiles of each row and averaged over
    the canvases, beside the share of the canvases whose top-most digit (`megapixel_mnist.top_order`) has its
    centre in that row of tiles, and the share of all digits that do.
    """
    rows_n, cols_n = tile_grid((data.canvas_size, data.canvas_size), model.tile_size)
    th = model.tile_size[0]
    alpha_rows, top_rows, digit_rows = [], [], []
    for start in range(0, len(indices), batch):
        chunk = list(range(start, min(start + batch, len(indices))))
        with evaluating(model):
            alpha = model.first_stage(load(chunk).to(next(model.parameters()).device)).float().cpu()  # [b, T]
        alpha_rows.append(alpha.reshape(len(chunk), rows_n, cols_n).sum(-1).numpy())  # [b, rows]
        for i in chunk:
            boxes = data.digit_boxes(int(indices[i]))  # [5, 4]
            centre_rows = ((boxes[:, 0] + boxes[:, 2]) // 2 // th).astype(int)  # [5] tile row of each digit's centre
            top_rows.append(centre_rows[mp.top_order(boxes[:, :2])[0]])
            digit_rows.extend(centre_rows.tolist())
    mean_alpha = np.concatenate(alpha_rows).mean(axis=0)  # [rows]
    top_share = np.bincount(top_rows, minlength=rows_n) / len(top_rows)
    digit_share = np.bincount(digit_rows, minlength=rows_n) / len(digit_rows)
    return [{"tile row (0: top)": r, "alpha (sum over the row)": float(mean_alpha[r]),
             "top-most digit in it (share of canvases)": float(top_share[r]),
             "digits in it (share of all digits)": float(digit_share[r])} for r in range(rows_n)]


# ----------------------------------------------------------------------------------------------------
# Cost
# ----------------------------------------------------------------------------------------------------


def memory_scan(
    factories: Mapping[str, Callable[[], nn.Module]], sizes: Sequence[int], seed: int = 0,
) -> list[dict[str, Any]]:
    """Inference peak memory (MiB, batch 1, patches and tiles read one at a time) of each model on random canvases of each side."""
    rows = []
    for side in sizes:
        x = torch.rand(1, 1, side, side, generator=torch.Generator().manual_seed(seed))  # [1, 1, S, S]
        for name, factory in factories.items():
            torch.manual_seed(seed)
            model = factory().eval()
            mode = getattr(model, "eval_mode", "topk")
            gen = torch.Generator().manual_seed(seed)
            with lean_inference(model), torch.no_grad():
                report = peak_memory(lambda: model(x, mode=mode, generator=gen), x.device)
            rows.append({"method": name, "canvas": side, "peak memory (MiB)": report.peak_mb})
    return rows


def cost_rows(
    costs: Mapping[str, Mapping[str, Any]], training_mb: Mapping[str, float] | None = None
) -> list[dict[str, Any]]:
    """One row per profiled model (`train.profiling.profile_methods`): inference peak memory, GFLOPs, GMACs, ms; training peak if measured."""
    rows = []
    for name, c in costs.items():
        rows.append({
            "method": name,
            "inference peak memory (MiB)": c["peak_memory_mb"],
            "training step peak memory (MiB)": "" if not training_mb or name not in training_mb else training_mb[name],
            "GFLOPs": c["mflops"] / 1e3,
            "GMACs": c["mmacs"] / 1e3,
            "time (ms)": c["ms_per_sample"],
            "inference": c["mode"],
        })
    return rows


def paper_accuracy_rows(*tables: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Rows for a "paper reports" table: per quoted setting its accuracy (%) per task or test error as printed, and the source."""
    rows = []
    for table in tables:
        for setting, v in table["rows"].items():
            row = {"method": v.get("method", ""), "setting": setting}
            row.update({f"{t.capitalize()} %": v.get(t, "") for t in TASKS})
            row["Maj test error"] = v.get("test_error", "")
            row["source"] = table["source"]
            rows.append(row)
    return rows


# ----------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------


def _rgb(canvas: np.ndarray) -> np.ndarray:
    """A grey uint8 canvas [S, S] as [S, S, 3]."""
    return np.repeat(np.asarray(canvas)[..., None], 3, axis=-1)


def _boxes(ax: plt.Axes, boxes: np.ndarray, color: str, lw: float = 0.8) -> None:
    """Draw boxes [k, 4] (top, left, bottom, right) on ax."""
    for top, left, bottom, right in np.asarray(boxes).reshape(-1, 4).tolist():
        ax.add_patch(plt.Rectangle((left, top), right - left, bottom - top, fill=False, ec=color, lw=lw))


def show_canvas(ax: plt.Axes, data: mp.MegapixelMNIST, i: int, attention: np.ndarray | None = None,
                title: str = "") -> None:
    """Canvas i with its digit boxes (cyan) and noise boxes (orange), under an optional attention map [h, w]."""
    show_attention(ax, _rgb(data.canvas(i)), attention, title=title)
    corners = data.noise(i).positions
    _boxes(ax, np.concatenate([corners, corners + DIGIT_SIZE], axis=1), "orange", 0.5)
    _boxes(ax, data.digit_boxes(i), "cyan")


def _finish(fig: Figure, ax: plt.Axes, ylabel: str, title: str) -> Figure:
    """A [0, 1] y axis labelled `ylabel` with a legend on ax; the figure titled (if any) and laid out."""
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_error_vs_n(runs: Mapping[int, TaskRun], chance_error: float, title: str = "") -> Figure:
    """ATS figure 2 measured here: Maj test error against N, and against cumulative training seconds, one curve per N."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    ns = sorted(runs)
    left.plot(ns, [runs[n].metrics["maj_error"] for n in ns], "o-", color="C0", label="ATS (measured here)")
    left.axhline(chance_error, color="grey", ls="--", lw=0.8, label="best constant prediction")
    left.set_xscale("log")
    left.minorticks_off()
    left.set_xticks(ns, [str(n) for n in ns])
    left.set_xlabel("patches sampled N")
    left.set_ylabel("Maj test error")
    left.set_ylim(0, 1)
    left.legend(fontsize=7)
    for k, n in enumerate(ns):
        seconds, values = runs[n].curve("maj_error")
        right.plot(seconds, values, "o-", ms=3, color=f"C{k}", label=f"ATS-{n}")
    right.axhline(chance_error, color="grey", ls="--", lw=0.8)
    right.set_xlabel("training wall-clock (s, this machine)")
    return _finish(fig, right, "Maj test error", title)


def plot_attention_evolution(
    maps: Sequence[np.ndarray], epochs: Sequence[int], data: mp.MegapixelMNIST, i: int,
    masses: Mapping[str, Sequence[float]], areas: Mapping[str, float], title: str = "",
) -> Figure:
    """ATS figure 3 measured here: the attention over canvas i at the given epochs, and its mass per region by epoch."""
    fig, axes = plt.subplots(1, len(epochs) + 1, figsize=(3.1 * (len(epochs) + 1), 3.3))
    for ax, e in zip(axes, epochs):
        show_canvas(ax, data, i, maps[e], title=f"epoch {e}")
        for top, left, bottom, right in data.digit_boxes(i).tolist():
            ax.plot([(left + right) / 2], [(top + bottom) / 2], "r.", ms=4)
    ax = axes[-1]
    for k, (name, values) in enumerate(masses.items()):
        ax.plot(np.arange(len(values)), values, "o-", ms=3, color=f"C{k}", label=f"on {name}")
        ax.axhline(areas[name], color=f"C{k}", ls=":", lw=0.8)
    ax.set_xlabel("epoch")
    return _finish(fig, ax, "attention mass (dotted: uniform)", title)


def plot_memory_scan(rows: Sequence[Mapping[str, Any]], title: str = "") -> Figure:
    """Inference peak memory (log scale) against the canvas side, one line per method."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    names = list(dict.fromkeys(r["method"] for r in rows))
    for k, name in enumerate(names):
        mine = [r for r in rows if r["method"] == name]
        ax.plot([r["canvas"] for r in mine], [max(r["peak memory (MiB)"], 1e-3) for r in mine], "o-", color=f"C{k}",
                label=name)
    ax.set_yscale("log")
    ax.set_xlabel("canvas side (pixels)")
    ax.set_ylabel("inference peak memory (MiB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    if title:
        ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def plot_picks(data: mp.MegapixelMNIST, i: int, chosen: Mapping[str, tuple[np.ndarray, tuple[int, int]]],
               title: str = "") -> Figure:
    """Canvas i once per method with the patches it reads at inference (green), digits in cyan, noise in orange."""
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.4), squeeze=False)
    for ax, (name, (centers, patch)) in zip(axes[0], chosen.items()):
        show_attention(ax, _rgb(data.canvas(i)), centers=centers, patch_size=patch, title=name)
        corners = data.noise(i).positions
        _boxes(ax, np.concatenate([corners, corners + DIGIT_SIZE], axis=1), "orange", 0.5)
        _boxes(ax, data.digit_boxes(i), "cyan")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
