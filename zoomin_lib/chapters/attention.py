"""What the chapters draw of where a model looks: attention maps and Zoom-In's picks (Zoom-In fig. 3, 6; ATS fig. 4).

`attention_map`: ATS's alpha on V(x, s), or Zoom-In's alpha_c beta^c_c' over the s2 grid of every tile;
`top_tile_and_subtile` / `zoom_picks`: the highest-alpha tile and its highest-beta sub-tile;
`unique_tiles`: N', the distinct tiles among N draws (appendix A, fig. 4).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import Tensor, nn

from zoomin_lib.hierarchical import unique_draws
from zoomin_lib.train.loop import evaluating


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
