"""The attention explorer: pick an image (or a slide) and a trained model, and see where it looks and why.

For Zoom-In (Kong & Henao, sec. 2.1, eq. 5 and 9) one look shows:

1. the low-resolution view with alpha over the tiles (min-max normalised), the tiles the prediction used
   (N draws with replacement in "sample" mode, the tiles of the exact top N of alpha_c beta^c_c' in
   "topk" mode) and the chosen one among them;
2. the chosen tile at a display scale with beta^c over its s2 grid and the sub-tiles read in it;
3. the N sub-tiles as read at full resolution (with their weights in top-k mode, up to 25 of them);
4. the class probabilities.

A one-stage model (ATS, sec. 3.3) shows alpha over V(x, s), its N patches and the prediction. The same
look works on a tensor image and on a lazy slide (a slide's path or `SlideReader`, with a `SlideZoomIn`/`SlideATS`):
only the pixel source differs, as in the models themselves.

`attention_explorer` is the one entry point: in a live Jupyter kernel it returns ipywidgets controls
(image, method, mode, N, which used tile to open, seed); unattended ($ZOOMIN_BATCH, which the book's
runner and scripts/test.sh set) or without ipywidgets it returns the static snapshot, one row per method on the
first image. `save_to` writes that snapshot in both cases.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from zoomin_lib.book.plotting import save_figure
from zoomin_lib.geometry import tile_grid, tile_top_left, view_size
from zoomin_lib.infra.progress import BATCH_ENV
from zoomin_lib.models import module_device
from zoomin_lib.pixels import PixelSource, as_source
from zoomin_lib.train.loop import evaluating
from zoomin_lib.wsi.reader import SlideReader

__all__ = ["Look", "attention_explorer", "draw_look", "look"]

MODES = ("topk", "sample")


@dataclass
class Look:
    """What one model does with one image at one N: everything the explorer draws, on the host."""

    method: str
    image: str
    mode: str
    n: int
    size: tuple[int, int]  # (H, W) at full resolution
    overview: np.ndarray  # [h, w, 3] in [0, 1]: the image at the display scale
    attention: np.ndarray | None  # Zoom-In: alpha [n_rows, n_cols] over tiles; one stage: alpha [h, w] over V(x, s)
    tile_size: tuple[int, int] | None  # Zoom-In's tiles; None for one stage
    tiles: np.ndarray  # [N] tile of each patch (Zoom-In), empty for one stage
    centers: np.ndarray  # [N, 2] full-resolution centres (row, col)
    patch_size: tuple[int, int]
    weights: np.ndarray | None  # [N] aggregation weights (topk), None when sampled
    chosen: int | None  # the tile opened in panel 2 (Zoom-In)
    tile_image: np.ndarray | None  # [u', v', 3] the chosen tile at the display scale
    beta: np.ndarray | None  # [u, v] beta^c of the chosen tile (0 where a sub-tile lies outside the image)
    patches: np.ndarray  # [N, ph, pw, 3] in [0, 1], as read at full resolution
    probs: np.ndarray  # [C]

    @property
    def used_tiles(self) -> np.ndarray:
        """The distinct tiles of the N patches, by decreasing alpha (Zoom-In); empty for one stage."""
        if self.tile_size is None or self.attention is None or len(self.tiles) == 0:
            return np.zeros(0, dtype=np.int64)
        uniq = np.unique(self.tiles)
        return uniq[np.argsort(-self.attention.reshape(-1)[uniq], kind="stable")]


@contextmanager
def _n_patches(net: nn.Module, n: int) -> Iterator[None]:
    """The net draws (or keeps) n patches inside the block, its own number again after it."""
    old = net.n_patches
    net.n_patches = int(n)
    try:
        yield
    finally:
        net.n_patches = old


def _net_and_source(
    model: nn.Module, item: Tensor | PixelSource | SlideReader | str | os.PathLike
) -> tuple[nn.Module, PixelSource, SlideReader | None, list[Any]]:
    """(the network, its pixel source, the slide's reader or None, what to close afterwards) for one item.

    An item is an image [C, H, W] or [1, C, H, W], a `PixelSource`, an open `SlideReader`, or a slide's
    path (opened here with the slide model's own statistics, closed after the look).
    """
    if isinstance(item, (str, os.PathLike)):
        if not hasattr(model, "open"):
            raise ValueError(f"{type(model).__name__} does not read slides; give a SlideZoomIn or SlideATS for {item}")
        reader = model.open(item)
        net, src, _, closing = _net_and_source(model, reader)
        return net, src, reader, closing + [reader]
    if isinstance(item, SlideReader):
        if not hasattr(model, "net"):
            raise ValueError(f"{type(model).__name__} does not read slides; give a SlideZoomIn or SlideATS for a SlideReader")
        from zoomin_lib.wsi.reader import SlideSource

        src = SlideSource(item, module_device(model), strip_pixels=model.strip_pixels,
                          tissue_only=getattr(model, "tissue_only", False), tissue_side=getattr(model, "tissue_side", 512))
        return model.net, src, item, [src]
    net = getattr(model, "net", model)
    if isinstance(item, Tensor):
        item = item if item.dim() == 4 else item.unsqueeze(0)  # [1, C, H, W]
        if item.shape[0] != 1:
            raise ValueError(f"the explorer looks at one image at a time, got a batch of {item.shape[0]}")
    return net, as_source(item, module_device(net)), None, []


def _display(t: Tensor, lo: Tensor, hi: Tensor) -> np.ndarray:
    """[..., C, h, w] standardised pixels -> [..., h, w, 3] in [0, 1], stretched between lo and hi per channel."""
    t = ((t.float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    if t.shape[-3] == 1:
        t = t.expand(*t.shape[:-3], 3, *t.shape[-2:])
    return t.movedim(-3, -1).numpy()


def look(
    model: nn.Module,
    item: Tensor | PixelSource | SlideReader | str | os.PathLike,
    *,
    n: int | None = None,
    mode: str | None = None,
    rank: int = 0,
    seed: int = 0,
    method: str = "",
    image: str = "",
    display_side: int = 640,
) -> Look:
    """One look of `model` at `item` with `n` patches (default: the model's own) in `mode`, opening the `rank`-th used tile
    by alpha (0: the highest; past the last: the last).

    `mode` is "topk" or "sample" (default: the model's `eval_mode`, "sample" for uniform sampling).
    Runs the model once in eval mode without gradients (a seeded generator in "sample" mode), then
    the second stage once more on the chosen tile to show its beta; nothing about the model changes.
    """
    net, src, reader, closing = _net_and_source(model, item)
    try:
        if not hasattr(net, "n_patches") or not hasattr(net, "patch_size"):
            raise ValueError(f"{type(net).__name__} reads no patches: the explorer shows sampling models (Zoom-In, ATS, uniform)")
        mode = getattr(net, "eval_mode", "topk") if mode is None else mode
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        n = int(net.n_patches if n is None else n)
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        H, W = src.size
        gen = torch.Generator(device=src.device).manual_seed(int(seed))
        with evaluating(net), torch.no_grad(), _n_patches(net, n):
            out = net(src, mode=mode, generator=gen if mode == "sample" else None)
            small = src.view(min(1.0, display_side / max(H, W)))[0].float().cpu()  # [C, h, w]
            if reader is not None:  # undo the reader's standardisation: the slide's own colours
                mean, std = reader.mean.reshape(-1, 1, 1).float().cpu(), reader.std.reshape(-1, 1, 1).float().cpu()
                lo, hi = -mean / std, (1 - mean) / std
            else:  # a standardised image: each channel stretched between its 1st and 99th percentile
                flat = small.flatten(1)
                lo = flat.quantile(0.01, dim=1).view(-1, 1, 1)
                hi = torch.maximum(flat.quantile(0.99, dim=1).view(-1, 1, 1), lo + 1e-6)
            centers = out.centers[0].cpu()  # [N, 2]
            zeros = torch.zeros(centers.shape[0], dtype=torch.long, device=src.device)
            patches = src.patches(zeros, out.centers[0, :, 0], out.centers[0, :, 1], net.patch_size)  # [N, C, ph, pw]
            chosen = tile_image = beta = None
            tiles = np.zeros(0, dtype=np.int64)
            if out.tiles is not None:  # Zoom-In
                n_rows, n_cols = tile_grid((H, W), net.tile_size)
                attention = out.alpha[0].reshape(n_rows, n_cols).float().cpu().numpy()
                tiles = out.tiles[0].cpu().numpy()
                uniq = np.unique(tiles)
                used = uniq[np.argsort(-attention.reshape(-1)[uniq], kind="stable")]
                chosen = int(used[min(max(rank, 0), len(used) - 1)])  # past the last used tile: the last
                c = torch.tensor([chosen], device=src.device)
                b = torch.zeros_like(c)
                u, v = net.subview_size
                beta = net.second_stage(src, b, c)[0].reshape(u, v).float().cpu().numpy()
                scale = min(1.0, 320 / max(net.tile_size))
                tile_image = _display(src.tile_views(b, c, net.tile_size, scale)[0], lo, hi)
            elif getattr(net, "attention", None) is not None and out.alpha is not None:  # ATS: alpha over V(x, s)
                h, w = view_size((H, W), net.scale)
                attention = out.alpha[0].float().reshape(h, w).cpu().numpy()
            else:  # uniform sampling: no attention to show
                attention = None
        return Look(
            method=method or type(net).__name__, image=image, mode=mode, n=n, size=(H, W),
            overview=_display(small, lo, hi), attention=attention,
            tile_size=tuple(net.tile_size) if out.tiles is not None else None, tiles=tiles,
            centers=centers.numpy(), patch_size=tuple(net.patch_size),
            weights=None if out.weights is None else out.weights[0].float().cpu().numpy(),
            chosen=chosen, tile_image=tile_image, beta=beta, patches=_display(patches, lo, hi),
            probs=torch.softmax(out.logits.float(), dim=1)[0].cpu().numpy(),
        )
    finally:
        for thing in closing:
            thing.close()


def _normalised(a: np.ndarray) -> np.ndarray:
    """Min-max normalised (ATS sec. 4.3), zeros where the values are all equal."""
    span = float(a.max() - a.min())
    return (a - a.min()) / span if span > 0 else np.zeros_like(a)


def _grid_extent(cells: tuple[int, int], full: tuple[int, int]) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) putting cell (i, j) of a [cells] map at `view_to_full`'s
    centre floor(i (H-1)/(h-1)) of a region of `full` pixels (its middle when a side has one cell)."""
    def side(n: int, N: int) -> tuple[float, float]:
        if n == 1:
            return 0.0, float(N)
        d = (N - 1) / (n - 1)
        return -d / 2, (n - 1) * d + d / 2

    (h, w), (H, W) = cells, full
    left, right = side(w, W)
    top, bottom = side(h, H)
    return left, right, bottom, top


def _frame(ax: plt.Axes, title: str) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)


def draw_look(lk: Look, axes: Sequence[plt.Axes] | None = None, classes: Sequence[str] | None = None) -> Figure:
    """The four panels of a look (see the module docstring) on `axes` (4 of them; new ones if None)."""
    if axes is None:
        fig, axes = plt.subplots(1, 4, figsize=(13, 3.4), gridspec_kw={"width_ratios": [1.3, 1, 1, 0.8]})
    fig = axes[0].figure
    H, W = lk.size
    ax = axes[0]
    ax.imshow(lk.overview, extent=(0, W, H, 0))
    if lk.attention is not None:
        shown = _normalised(lk.attention)
        if lk.tile_size is not None:  # alpha over the tile grid, which may pass the image's edge
            th, tw = lk.tile_size
            n_rows, n_cols = lk.attention.shape
            extent = (0, n_cols * tw, n_rows * th, 0)
            drawable = lk.attention > 0  # tiles alpha may not draw (a slide's glass) stay clear
            shown = np.full(lk.attention.shape, np.nan)
            shown[drawable] = _normalised(lk.attention[drawable])
        else:  # ATS: view location (i, j) is the patch centred at view_to_full((i, j))
            extent = _grid_extent(lk.attention.shape, (H, W))
        ax.imshow(shown, cmap="inferno", alpha=0.45, extent=extent, interpolation="nearest")
    if lk.tile_size is not None:
        th, tw = lk.tile_size
        for t in lk.used_tiles:
            top, left = tile_top_left(torch.tensor([int(t)]), (H, W), (th, tw))
            chosen = int(t) == lk.chosen
            ax.add_patch(plt.Rectangle((int(left), int(top)), tw, th, fill=False, ec="cyan" if chosen else "yellow",
                                       lw=2.0 if chosen else 1.0))
    ph, pw = lk.patch_size
    for r, c in lk.centers:
        ax.add_patch(plt.Rectangle((c - pw // 2, r - ph // 2), pw, ph, fill=False, ec="lime", lw=0.8))
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    what = "tiles used (yellow), opened (cyan)" if lk.tile_size is not None else f"{len(lk.centers)} patches"
    _frame(ax, f"{lk.image} {lk.method}: alpha, {what}")

    ax = axes[1]
    if lk.tile_image is not None and lk.beta is not None and lk.tile_size is not None:
        th, tw = lk.tile_size
        ax.imshow(lk.tile_image, extent=(0, tw, th, 0))
        ax.imshow(_normalised(lk.beta), cmap="inferno", alpha=0.45, extent=_grid_extent(lk.beta.shape, (th, tw)),
                  interpolation="nearest")  # sub-tile (i', j') centred where Zoom-In reads it
        top, left = tile_top_left(torch.tensor([lk.chosen]), (H, W), (th, tw))
        inside = lk.tiles == lk.chosen
        for r, c in lk.centers[inside]:
            ax.add_patch(plt.Rectangle((c - pw // 2 - int(left), r - ph // 2 - int(top)), pw, ph, fill=False,
                                       ec="lime", lw=1.2))
        ax.set_xlim(0, tw)
        ax.set_ylim(th, 0)
        rank = int(np.flatnonzero(lk.used_tiles == lk.chosen)[0]) + 1
        _frame(ax, f"tile {lk.chosen} (alpha rank {rank} of {len(lk.used_tiles)} used): beta, "
                   f"{int(inside.sum())} of the {lk.n} sub-tiles")
    else:
        ax.axis("off")
        ax.text(0.5, 0.5, "one stage: no tiles", ha="center", va="center", transform=ax.transAxes, fontsize=9)

    ax = axes[2]
    k = len(lk.patches)
    cols = int(np.ceil(np.sqrt(k)))
    rows = int(np.ceil(k / cols))
    sheet = np.ones((rows * (ph + 2), cols * (pw + 2), 3))
    for i, p in enumerate(lk.patches):
        r, c = divmod(i, cols)
        sheet[r * (ph + 2) + 1 : r * (ph + 2) + 1 + ph, c * (pw + 2) + 1 : c * (pw + 2) + 1 + pw] = p
    ax.imshow(sheet, interpolation="nearest")
    if lk.weights is not None and k <= 25:
        for i, w in enumerate(lk.weights):
            r, c = divmod(i, cols)
            ax.text(c * (pw + 2) + 2, r * (ph + 2) + 3, f"{w:.2f}", color="yellow", fontsize=6, va="top")
    how = "top-k, with weights" if lk.mode == "topk" else "sampled, equal weights"
    _frame(ax, f"the N = {lk.n} patches at full resolution ({how})")

    ax = axes[3]
    names = list(classes) if classes is not None else [str(i) for i in range(len(lk.probs))]
    ax.barh(np.arange(len(lk.probs)), lk.probs, color="C0")
    ax.set_yticks(np.arange(len(lk.probs)), names, fontsize=7)
    ax.set_xlim(0, 1)
    ax.invert_yaxis()
    ax.tick_params(axis="x", labelsize=7)
    distinct = f", N' = {len(lk.used_tiles)} tiles" if lk.tile_size is not None else ""
    ax.set_title(f"prediction ({lk.mode}{distinct})", fontsize=8)
    return fig


def _snapshot(models: Mapping[str, nn.Module], name: str, item: Any, classes: Sequence[str] | None) -> Figure:
    """One row per method on one image, at each model's own N and evaluation mode (top-k where it has one)."""
    fig, axes = plt.subplots(len(models), 4, figsize=(13, 3.4 * len(models)), squeeze=False,
                             gridspec_kw={"width_ratios": [1.3, 1, 1, 0.8]})
    for row, (method, model) in zip(axes, models.items()):
        draw_look(look(model, item, method=method, image=name), row, classes)
    fig.tight_layout()
    return fig


def _live_possible() -> bool:
    """True in a Jupyter kernel with ipywidgets, unless the notebook runs unattended ($ZOOMIN_BATCH)."""
    if os.environ.get(BATCH_ENV):
        return False
    try:
        import ipywidgets  # noqa: F401
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


def attention_explorer(
    models: Mapping[str, nn.Module],
    images: Mapping[str, Tensor | PixelSource | SlideReader | str | os.PathLike],
    *,
    classes: Sequence[str] | None = None,
    max_n: int | None = None,
    save_to: tuple[str | os.PathLike, str] | None = None,
    live: bool | None = None,
) -> Any:
    """Explore where trained `models` look on `images` (name -> image [C, H, W], source, slide reader or slide path).

    Live (the default in a Jupyter kernel with ipywidgets, when not run unattended): returns a widget
    with a choice of image, method and mode, a slider for N (1 to `max_n`, default four times the
    largest model's N), a slider for which used tile to open, and the seed of "sample". Otherwise
    returns the snapshot: one row per method on the first image, each at its own N and evaluation mode.
    `save_to=(folder, name)` writes that snapshot as folder/name.png in both cases.
    """
    if not models or not images:
        raise ValueError("the explorer needs at least one model and one image")
    first = next(iter(images))
    live = _live_possible() if live is None else live
    if save_to is not None or not live:
        fig = _snapshot(models, first, images[first], classes)
        if save_to is not None:
            save_figure(fig, save_to[0], save_to[1])
        plt.close(fig)  # shown once: as the returned object, not again by the inline backend
        if not live:
            return fig
    import ipywidgets as widgets
    from IPython.display import display

    top_n = max_n or 4 * max(int(getattr(getattr(m, "net", m), "n_patches", 1)) for m in models.values())
    pick_image = widgets.Dropdown(options=list(images), description="image")
    pick_method = widgets.Dropdown(options=list(models), description="method")
    pick_mode = widgets.ToggleButtons(options=list(MODES), description="mode")
    first_n = int(getattr(getattr(models[pick_method.value], "net", models[pick_method.value]), "n_patches", 1))
    pick_n = widgets.IntSlider(value=min(first_n, top_n), min=1, max=top_n, description="N", continuous_update=False)
    pick_rank = widgets.IntSlider(value=0, min=0, max=top_n - 1, description="tile rank", continuous_update=False)
    pick_seed = widgets.IntText(value=0, description="seed")
    shown = widgets.Output()

    def redraw(_: Any = None) -> None:
        with shown:
            shown.clear_output(wait=True)
            try:
                lk = look(models[pick_method.value], images[pick_image.value], n=pick_n.value, mode=pick_mode.value,
                          rank=pick_rank.value, seed=pick_seed.value, method=pick_method.value, image=pick_image.value)
            except ValueError as err:  # e.g. N beyond what the image's tiles hold: say so, keep the controls
                print(f"cannot show this choice: {err}")
                return
            fig = draw_look(lk, classes=classes)
            fig.tight_layout()
            display(fig)
            plt.close(fig)

    def follow_method(_: Any = None) -> None:  # a new method starts at its own mode and N (one redraw)
        net = getattr(models[pick_method.value], "net", models[pick_method.value])
        mode = getattr(net, "eval_mode", "topk")
        pick_mode.unobserve(redraw, names="value")
        pick_n.unobserve(redraw, names="value")
        pick_mode.value = mode if mode in MODES else "topk"
        pick_n.value = min(int(getattr(net, "n_patches", 1)), top_n)
        pick_mode.observe(redraw, names="value")
        pick_n.observe(redraw, names="value")
        redraw()

    for w in (pick_image, pick_mode, pick_n, pick_rank, pick_seed):
        w.observe(redraw, names="value")
    pick_method.observe(follow_method, names="value")
    redraw()
    return widgets.VBox([widgets.HBox([pick_image, pick_method, pick_mode]), widgets.HBox([pick_n, pick_rank, pick_seed]),
                         shown])

