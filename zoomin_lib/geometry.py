"""Views, the view-to-image location map, batched patch extraction and the tile grid.

- `view` is the low-resolution view V(x, s) of Zoom-In sec. 2.1 / ATS sec. 3.3 (eq. 18):
  h = floor(s H), w = floor(s W) (computed exactly for the decimal s, so 0.29 * 100 gives 29),
  antialiased bilinear resampling.
- `view_to_full` is the location map of T_s(x, c) in Zoom-In sec. 2.1, written 0-based:
  view row i -> floor(i (H - 1) / (h - 1)) (the paper's 1-based
  floor(1 + (i - 1)(H - 1)/(h - 1)) shifted by one); it depends only on H, W, h, w.
- `extract_patches` is T_s(x, c) / ATS P(x, i): the patch around a full-resolution centre,
  zero outside the image (the zero padding of Zoom-In sec. 2.1 iii), for many patches at once
  with one gather; the image is never padded or copied.
- `tile_grid`, `tile_top_left`, `tile_views` are the non-overlapping first-stage tiles of
  Zoom-In appendix F and their views V(x, s2, c) (eq. 4); `tile_pool` average-pools a score
  map of the s1 view over those tiles (the GlobalAveragePooling row of table 5/6 a).
"""

from __future__ import annotations

import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "view_size",
    "view",
    "view_to_full",
    "extract_patches",
    "tile_grid",
    "tile_top_left",
    "tile_views",
    "tile_pool_weights",
    "tile_pool",
]


def _pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Return `value` as a pair of positive ints, or raise ValueError naming `name`."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def _check_image(x: Tensor, name: str = "x") -> None:
    """Raise ValueError unless `x` is a floating-point [B, C, H, W] tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a [B, C, H, W] tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")


def _floor_scaled(scale: float, n: int) -> int:
    """floor(scale * n) exactly for the decimal the user wrote: 0.29 * 100 is 29, not 28.

    The float product 0.29 * 100 = 28.999999999999996 floors to 28. The scale is taken as the
    shortest decimal that reads back as the same float (Fraction(repr(scale))), so the floor is
    exact for every scale written as a decimal literal.
    """
    return math.floor(Fraction(repr(float(scale))) * n)


def view_size(full_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The view size (floor(s H), floor(s W)) of Zoom-In sec. 2.1; ValueError if empty or s not in (0, 1]."""
    H, W = _pair(full_size, "full_size")
    if not isinstance(scale, (int, float)) or not (0 < scale <= 1):
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    h, w = _floor_scaled(scale, H), _floor_scaled(scale, W)
    if h < 1 or w < 1:
        raise ValueError(f"scale {scale} of an image of size {(H, W)} gives an empty view {(h, w)}")
    return h, w


def view(x: Tensor, scale: float) -> Tensor:
    """Low-resolution view V(x, s) [B, C, floor(sH), floor(sW)] by antialiased bilinear resampling (x itself if the size is kept)."""
    _check_image(x)
    h, w = view_size(tuple(x.shape[-2:]), scale)
    if (h, w) == tuple(x.shape[-2:]):
        return x  # scale 1 (or a scale that keeps the size): the view is the image
    return F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)  # [B, C, h, w]


def _axis_to_full(i: Tensor, n_view: int, n_full: int) -> Tensor:
    """Map 0-based view indices along one axis to full-resolution indices (exact integer floor)."""
    if n_view == 1:
        return torch.full_like(i, (n_full - 1) // 2)  # one location: the centre pixel
    return torch.div(i * (n_full - 1), n_view - 1, rounding_mode="floor")


def view_to_full(
    idx_rows: Tensor,
    idx_cols: Tensor,
    view_size: tuple[int, int],
    full_size: tuple[int, int],
) -> tuple[Tensor, Tensor]:
    """Full-resolution (rows, cols) of view locations: floor(i (H-1)/(h-1)); the centre pixel when h == 1."""
    h, w = _pair(view_size, "view_size")
    H, W = _pair(full_size, "full_size")
    for name, t, n in (("idx_rows", idx_rows, h), ("idx_cols", idx_cols, w)):
        if not isinstance(t, Tensor) or t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be an integer tensor, got {getattr(t, 'dtype', type(t))}")
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise ValueError(f"{name} has entries outside [0, {n}) (view size {(h, w)})")
    if idx_rows.shape != idx_cols.shape:
        raise ValueError(f"idx_rows {tuple(idx_rows.shape)} and idx_cols {tuple(idx_cols.shape)} differ in shape")
    return _axis_to_full(idx_rows.long(), h, H), _axis_to_full(idx_cols.long(), w, W)


def extract_patches(
    x: Tensor,
    batch_idx: Tensor,
    centers_rows: Tensor,
    centers_cols: Tensor,
    size: int | tuple[int, int],
) -> Tensor:
    """Patches [M, C, ph, pw] with top-left (r - ph//2, c - pw//2) of image batch_idx, zero outside the image."""
    _check_image(x)
    ph, pw = _pair(size, "size")
    B, C, H, W = x.shape
    if ph > H or pw > W:
        raise ValueError(f"patch size {(ph, pw)} is larger than the image {(H, W)}")
    for name, t in (("batch_idx", batch_idx), ("centers_rows", centers_rows), ("centers_cols", centers_cols)):
        if not isinstance(t, Tensor) or t.dim() != 1 or t.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"{name} must be a 1-d integer tensor [M], got {getattr(t, 'shape', type(t))}")
    if not (batch_idx.shape == centers_rows.shape == centers_cols.shape):
        raise ValueError(
            f"batch_idx {tuple(batch_idx.shape)}, centers_rows {tuple(centers_rows.shape)} and "
            f"centers_cols {tuple(centers_cols.shape)} must all be [M]"
        )
    if batch_idx.numel() and (int(batch_idx.min()) < 0 or int(batch_idx.max()) >= B):
        raise ValueError(f"batch_idx has entries outside [0, {B})")
    dev = x.device
    rows = centers_rows.to(dev).long().unsqueeze(1) - ph // 2 + torch.arange(ph, device=dev)  # [M, ph]
    cols = centers_cols.to(dev).long().unsqueeze(1) - pw // 2 + torch.arange(pw, device=dev)  # [M, pw]
    inside = ((rows >= 0) & (rows < H)).unsqueeze(2) & ((cols >= 0) & (cols < W)).unsqueeze(1)  # [M, ph, pw]
    r = rows.clamp(0, H - 1).unsqueeze(2)  # [M, ph, 1]
    c = cols.clamp(0, W - 1).unsqueeze(1)  # [M, 1, pw]
    b = batch_idx.to(dev).long().view(-1, 1, 1)  # [M, 1, 1]
    # Advanced indices separated by a slice put the broadcast index dims first: [M, ph, pw, C].
    gathered = x[b, :, r, c]  # [M, ph, pw, C], a fresh copy (advanced indexing never views)
    # Zero outside the image in place: no second [M, ph, pw, C] temporary. Autograd allows it
    # (the gather's backward does not need its output) and masks the gradient the same way.
    gathered.masked_fill_(~inside.unsqueeze(-1), 0)
    return gathered.permute(0, 3, 1, 2)  # [M, C, ph, pw]


def tile_grid(full_size: tuple[int, int], tile_size: int | tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the non-overlapping tile grid of appendix F; a partial last row/col is a tile (ceil)."""
    H, W = _pair(full_size, "full_size")
    th, tw = _pair(tile_size, "tile_size")
    if th > H or tw > W:
        raise ValueError(f"tile size {(th, tw)} is larger than the image {(H, W)}")
    return -(-H // th), -(-W // tw)


def tile_top_left(
    tile_idx: Tensor, full_size: tuple[int, int], tile_size: int | tuple[int, int]
) -> tuple[Tensor, Tensor]:
    """Top-left full-resolution (rows, cols) of tiles given by their row-major index in the tile grid."""
    n_rows, n_cols = tile_grid(full_size, tile_size)
    th, tw = _pair(tile_size, "tile_size")
    if not isinstance(tile_idx, Tensor) or tile_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tile_idx must be an integer tensor, got {getattr(tile_idx, 'dtype', type(tile_idx))}")
    if tile_idx.numel() and (int(tile_idx.min()) < 0 or int(tile_idx.max()) >= n_rows * n_cols):
        raise ValueError(f"tile_idx has entries outside [0, {n_rows * n_cols}) (grid {(n_rows, n_cols)})")
    t = tile_idx.long()
    return torch.div(t, n_cols, rounding_mode="floor") * th, (t % n_cols) * tw


def tile_views(
    x: Tensor,
    batch_idx: Tensor,
    tile_idx: Tensor,
    tile_size: int | tuple[int, int],
    scale: float,
) -> Tensor:
    """Views V(x, s2, c) [U, C, u, v] of tiles (image batch_idx[k], tile tile_idx[k]); zero beyond the border."""
    _check_image(x)
    th, tw = _pair(tile_size, "tile_size")
    H, W = x.shape[-2:]
    top, left = tile_top_left(tile_idx, (H, W), (th, tw))  # [U], [U]
    if batch_idx.shape != tile_idx.shape or batch_idx.dim() != 1:
        raise ValueError(f"batch_idx {tuple(batch_idx.shape)} and tile_idx {tuple(tile_idx.shape)} must both be [U]")
    views = []
    for b, r, c in zip(batch_idx.tolist(), top.tolist(), left.tolist()):
        if r + th <= H and c + tw <= W:
            # a whole tile: resample the slice of x in place, never copying the full-resolution tile
            views.append(view(x[b : b + 1, :, r : r + th, c : c + tw], scale))  # [1, C, u, v]
        else:  # a partial edge tile: zero-pad it to the tile size first (a copy of this tile only)
            one = torch.tensor([b], device=x.device)
            tile = extract_patches(x, one, torch.tensor([r + th // 2], device=x.device),
                                   torch.tensor([c + tw // 2], device=x.device), (th, tw))  # [1, C, th, tw]
            views.append(view(tile, scale))
    if not views:
        return x.new_zeros(0, x.shape[1], *view_size((th, tw), scale))
    return torch.cat(views)  # [U, C, u, v]


def tile_pool_weights(n_view: int, n_full: int, tile: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[n_tiles, n_view] area weights of view pixels in each tile along one axis; rows sum to 1."""
    edges = torch.arange(n_view + 1, dtype=torch.float64) * (n_full / n_view)  # view pixel i covers [e_i, e_i+1)
    n_tiles = -(-n_full // tile)
    t0 = torch.arange(n_tiles, dtype=torch.float64) * tile  # tile r covers [t0_r, t1_r)
    t1 = (t0 + tile).clamp(max=n_full)
    lo = torch.maximum(t0.unsqueeze(1), edges[:-1].unsqueeze(0))  # [n_tiles, n_view]
    hi = torch.minimum(t1.unsqueeze(1), edges[1:].unsqueeze(0))
    overlap = (hi - lo).clamp(min=0)
    return (overlap / overlap.sum(dim=1, keepdim=True)).to(dtype=dtype, device=device)


def tile_pool(scores: Tensor, full_size: tuple[int, int], tile_size: int | tuple[int, int]) -> Tensor:
    """Average a view's score map [B, h, w] over the full-resolution tile grid -> [B, n_rows, n_cols].

    Each view pixel stands for the full-resolution area it was resampled from, (H/h) x (W/w);
    a tile's score is the area-weighted mean of the view pixels it overlaps. When every tile
    covers a whole number of view pixels this is plain average pooling; a partial edge tile
    averages only the view pixels over the part of it that lies inside the image.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be a [B, h, w] map, got {tuple(scores.shape)}")
    H, W = _pair(full_size, "full_size")
    th, tw = _pair(tile_size, "tile_size")
    tile_grid((H, W), (th, tw))  # validates the tile size
    h, w = scores.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"score map {(h, w)} is larger than the image {(H, W)}")
    rows = tile_pool_weights(h, H, th, scores.dtype, scores.device)  # [n_rows, h]
    cols = tile_pool_weights(w, W, tw, scores.dtype, scores.device)  # [n_cols, w]
    return torch.einsum("rh,bhw,cw->brc", rows, scores, cols)  # [B, n_rows, n_cols]
