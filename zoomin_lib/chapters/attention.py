"""What the chapters draw of where a model looks: attention maps and Zoom-In's picks (Zoom-In fig. 3, 6; ATS fig. 4).

`attention_map`: ATS's alpha on V(x, s), or Zoom-In's alpha_c beta^c_c' over the s2 grid of every tile;
`top_tile_and_subtile` / `zoom_picks`: the highest-alpha tile and its highest-beta sub-tile;
`unique_tiles`: N', the distinct tiles among N draws (appendix A, fig. 4);
`view_box_mask` / `object_attention` (`attention_on_objects` for the readers' (x0, y0, x1, y1) boxes): how
much of that attention lands on an annotated object, beside what a uniform attention would put there (the
measurement a chapter gives when a method stays at chance);
`attention_spread`: how many locations an attention effectively uses (exp of its entropy) and its
mass in the top, middle and bottom third of the image;
`LazyInputs`: images read only when indexed, so that the measurements can run over a whole test set.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from zoomin_lib.geometry import view_to_full
from zoomin_lib.hierarchical import unique_draws
from zoomin_lib.train.loop import evaluating


class LazyInputs(Sequence[Tensor]):
    """The images [1, C, H, W] at `positions`, each read by `load([position])` when it is indexed, never kept."""

    def __init__(self, load: Callable[[Sequence[int]], Tensor], positions: Iterable[int]) -> None:
        self.load, self.positions = load, [int(p) for p in positions]

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, i):  # int -> [1, C, H, W]; slice -> LazyInputs
        if isinstance(i, slice):
            return LazyInputs(self.load, self.positions[i])
        return self.load([self.positions[i]])


def unique_tiles(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N' [B]: the number of distinct first-stage tiles among a ZoomInNet's n_patches draws, per image."""
    with torch.no_grad():
        tiles = model(x, mode="sample", generator=generator).tiles  # [B, N]
    if tiles is None:
        raise ValueError(f"{type(model).__name__} draws no tiles (N' is defined for ZoomInNet)")
    draws = unique_draws(tiles)
    return torch.bincount(draws.batch, minlength=x.shape[0])  # [B]


def attention_map(model: nn.Module, x: Tensor) -> Tensor:
    """The attention each location gets [B, h, w]: ATS alpha on V(x, s); Zoom-In alpha_c beta^c_c' on the s2 grid.

    For Zoom-In the second stage is computed for every tile (only sensible for small images),
    and the map covers the tile grid at scale s2, cropped to the image's extent.
    """
    with torch.no_grad():
        if hasattr(model, "first_stage"):
            from zoomin_lib.geometry import tile_grid

            alpha = model.first_stage(x)  # [B, T]
            B, T = alpha.shape
            n_rows, n_cols = tile_grid(tuple(x.shape[-2:]), model.tile_size)
            batch = torch.arange(B).repeat_interleave(T)
            tiles = torch.arange(T).repeat(B)
            betas = model.second_stage(x, batch, tiles)  # [B*T, K2]
            u, v = model.subview_size
            joint = alpha.reshape(B * T, 1) * betas  # [B*T, K2]
            grid = joint.reshape(B, n_rows, n_cols, u, v).permute(0, 1, 3, 2, 4).reshape(B, n_rows * u, n_cols * v)
            h = math.ceil(x.shape[-2] * u / model.tile_size[0])
            w = math.ceil(x.shape[-1] * v / model.tile_size[1])
            return grid[:, :h, :w]
        if getattr(model, "attention", None) is not None:
            from zoomin_lib.geometry import view_size

            h, w = view_size(tuple(x.shape[-2:]), model.scale)
            return torch.softmax(model.scores(x), dim=-1).reshape(x.shape[0], h, w)
    raise ValueError(f"{type(model).__name__} has no attention to map")


def top_tile_and_subtile(model: nn.Module, x: Tensor) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Boxes (top, left, height, width) in full-resolution pixels of a ZoomInNet's highest-alpha tile and highest-beta sub-tile in it (Zoom-In fig. 3), for x [1, C, H, W]."""
    from zoomin_lib.geometry import tile_top_left

    with torch.no_grad():
        alpha = model.first_stage(x)  # [1, T]
        tile = alpha.argmax(dim=1)  # [1]
        beta = model.second_stage(x, torch.zeros_like(tile), tile)  # [1, K2]
        sub = beta.argmax(dim=1)  # [1]
        top, left = tile_top_left(tile, tuple(x.shape[-2:]), model.tile_size)
        rows, cols = model.centers(tile.view(1, 1), sub.view(1, 1), tuple(x.shape[-2:]))
    th, tw = model.tile_size
    ph, pw = model.patch_size
    return ((int(top), int(left), th, tw), (int(rows) - ph // 2, int(cols) - pw // 2, ph, pw))


def zoom_picks(model: nn.Module, xs: Sequence[Tensor]) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """For each image x [1, C, H, W]: (top tile box, top sub-tile box, predicted class in top-k mode) of a ZoomInNet."""
    picks = []
    with evaluating(model):
        for x in xs:
            tile_box, sub_box = top_tile_and_subtile(model, x)
            pred = int(model(x, mode="topk").logits.argmax())
            picks.append((tile_box, sub_box, pred))
    return picks


def view_box_mask(view_hw: tuple[int, int], full_hw: tuple[int, int], boxes: np.ndarray | Sequence[Sequence[float]]) -> Tensor:
    """bool [h, w]: the view locations whose full-resolution centre (`view_to_full`) lies in one of the boxes.

    `boxes` [k, 4] are (top, left, bottom, right) in full-resolution pixels, bottom and right exclusive;
    no box gives an all-False mask.
    """
    h, w = view_hw
    rows, cols = view_to_full(torch.arange(h).view(-1, 1).expand(h, w), torch.arange(w).view(1, -1).expand(h, w),
                              (h, w), tuple(full_hw))  # [h, w] each
    hit = torch.zeros((h, w), dtype=torch.bool)
    for top, left, bottom, right in np.asarray(boxes, dtype=np.float64).reshape(-1, 4).tolist():
        hit |= (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)
    return hit


def object_attention(
    models: Mapping[str, nn.Module], inputs: Sequence[Tensor], boxes: Sequence[np.ndarray | Sequence[Sequence[float]]],
) -> list[dict[str, Any]]:
    """Where each trained attention lands on images with an annotated object, a row per model.

    For each image x [1, C, H, W] of `inputs` and its object boxes (top, left, bottom, right) in `boxes`,
    the model's `attention_map` (ATS: alpha on V(x, s); Zoom-In: alpha_c beta^c_c' over the s2 grid) is
    split by `view_box_mask`. The row gives, as means over the images: the attention mass on the object,
    the object's share of the map's locations (the mass a uniform attention would put there), their ratio
    (1: no better than uniform), and how often the map's highest location lies on the object.
    Images are taken one at a time, so they may differ in size.
    """
    if len(inputs) != len(boxes) or not inputs:
        raise ValueError(f"need one box list per image and at least one image, got {len(inputs)} images, {len(boxes)} box lists")
    rows = []
    for name, model in models.items():
        mass, share, peak = [], [], []
        with evaluating(model):
            device = next(model.parameters()).device
            for x, b in zip(inputs, boxes):
                a = attention_map(model, x.to(device))[0].float().cpu()  # [h, w], sums to 1
                on = view_box_mask(tuple(a.shape), tuple(x.shape[-2:]), b)  # [h, w]
                mass.append(float(a[on].sum()))
                share.append(float(on.float().mean()))
                peak.append(bool(on.flatten()[int(a.argmax())]))
        m, u = float(np.mean(mass)), float(np.mean(share))
        rows.append({"method": name, "images": len(inputs), "mass on the object": m, "uniform mass (object's share)": u,
                     "mass / uniform": m / u if u > 0 else math.nan, "peak on the object %": 100 * float(np.mean(peak))})
    return rows


def attention_on_objects(models: Mapping[str, nn.Module], inputs: Sequence[Tensor],
                         roi_boxes: Sequence[Sequence[tuple[float, float, float, float]]]) -> list[dict[str, Any]]:
    """`object_attention` for boxes given as the data readers give them, (x0, y0, x1, y1) in full-resolution pixels."""
    return object_attention(models, inputs, [[(y0, x0, y1, x1) for x0, y0, x1, y1 in b] for b in roi_boxes])


def attention_spread(models: Mapping[str, nn.Module], inputs: Sequence[Tensor]) -> list[dict[str, Any]]:
    """How far each attention spreads and along which part of the image's height, a row per model.

    For each image x [1, C, H, W] the `attention_map` a [h, w] (renormalised to sum 1, in case a
    Zoom-In map cropped to the image left some mass out) gives the share of its locations that
    the attention effectively uses, exp(H(a)) / (h w) (1: uniform; 1 / (h w): one location), and its
    mass in the top, middle and bottom third of the rows (row r is in third floor(3 r / h)). The row
    gives the means over the images.
    """
    if not inputs:
        raise ValueError("need at least one image")
    rows = []
    for name, model in models.items():
        used, thirds = [], []
        with evaluating(model):
            device = next(model.parameters()).device
            for x in inputs:
                a = attention_map(model, x.to(device))[0].double().cpu()  # [h, w]
                a = a / a.sum()  # a guard: Zoom-In's map is cropped to the image
                entropy = -(a * a.clamp_min(1e-300).log()).sum()
                used.append(float(entropy.exp()) / a.numel())
                third = torch.div(torch.arange(a.shape[0]) * 3, a.shape[0], rounding_mode="floor")  # [h]
                thirds.append([float(a[third == k].sum()) for k in range(3)])
        top, middle, bottom = np.mean(thirds, axis=0)
        rows.append({"method": name, "images": len(inputs), "locations used (exp H / K)": float(np.mean(used)),
                     "mass in the top third": float(top), "mass in the middle third": float(middle),
                     "mass in the bottom third": float(bottom)})
    return rows
