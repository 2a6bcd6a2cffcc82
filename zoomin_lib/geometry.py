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
  map of the s1 view over those tiles (the GlobalAveragePooling row of table 5/6 a), and
  `tile_pool_strip` adds one strip of view rows to that pooling (the slide path's first stage).
- `resize_weights` / `resize_matrix` are the weights of the antialiased bilinear resampling of
  `view` along one axis (PyTorch's, after Pillow's: a triangle filter stretched by the
  downscale factor, normalised per output), so that any range of output rows can be computed
  from its input rows alone. `tile_views` uses them to resample every drawn tile in one batched
  pass of row bands, never holding a full-resolution copy of a tile.

Functions on the model's hot path take `check=False` from the models: their argument checks
read tensor values (a host synchronisation on a GPU), which the models replace by checks of
their own resolved once per forward (`zoomin_lib.syncs`).
"""

from __future__ import annotations

import functools
import math
from fractions import Fraction

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "as_pair",
    "check_image",
    "view_size",
    "view",
    "view_to_full",
    "extract_patches",
    "tile_grid",
    "tile_top_left",
    "tile_views",
    "grid_tile_views",
    "tile_pool_weights",
    "tile_pool",
    "tile_pool_strip",
    "resize_weights",
    "resize_matrix",
]


def as_pair(value: int | tuple[int, int], name: str) -> tuple[int, int]:
    """Return `value` as a pair of positive ints, or raise ValueError naming `name`."""
    pair = (value, value) if isinstance(value, int) else tuple(value)
    if len(pair) != 2 or not all(isinstance(v, int) and v >= 1 for v in pair):
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {value!r}")
    return int(pair[0]), int(pair[1])


def check_image(x: Tensor, name: str = "x") -> None:
    """Raise ValueError unless `x` is a floating-point [B, C, H, W] tensor."""
    if not isinstance(x, Tensor) or x.dim() != 4:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be a [B, C, H, W] tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point [B, C, H, W] tensor, got {x.dtype}")


def _floor_scaled(scale: float, n: int) -> int:
    """floor(scale * n) as the user means it: 0.29 * 100 is 29, not 28, and (1 / 3) * 300 is 100, not 99.

    The float product 0.29 * 100 = 28.999999999999996 floors to 28, and 1 / 3 is stored as
    0.33333333333333331, so 300 of it is just under 100. The scale is taken as the shortest decimal
    that reads back as the same float (Fraction(repr(scale))), and a product within 1e-9 (relative)
    of an integer is that integer: a float scale cannot say more precisely which one was meant.
    """
    product = Fraction(repr(float(scale))) * n
    nearest = round(product)
    if abs(product - nearest) <= Fraction(1, 10**9) * max(1, nearest):
        return int(nearest)
    return math.floor(product)


def view_size(full_size: tuple[int, int], scale: float) -> tuple[int, int]:
    """The view size (floor(s H), floor(s W)) of Zoom-In sec. 2.1; ValueError if empty or s not in (0, 1]."""
    H, W = as_pair(full_size, "full_size")
    if not isinstance(scale, (int, float)) or not (0 < scale <= 1):
        raise ValueError(f"scale must be in (0, 1], got {scale!r}")
    h, w = _floor_scaled(scale, H), _floor_scaled(scale, W)
    if h < 1 or w < 1:
        raise ValueError(f"scale {scale} of an image of size {(H, W)} gives an empty view {(h, w)}")
    return h, w


def view(x: Tensor, scale: float) -> Tensor:
    """Low-resolution view V(x, s) [B, C, floor(sH), floor(sW)] by antialiased bilinear resampling (x itself if the size is kept)."""
    check_image(x)
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
    *,
    check: bool = True,
) -> tuple[Tensor, Tensor]:
    """Full-resolution (rows, cols) of view locations: floor(i (H-1)/(h-1)); the centre pixel when h == 1."""
    h, w = as_pair(view_size, "view_size")
    H, W = as_pair(full_size, "full_size")
    if check:
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
    *,
    check: bool = True,
) -> Tensor:
    """Patches [M, C, ph, pw] with top-left (r - ph//2, c - pw//2) of image batch_idx, zero outside the image."""
    check_image(x)
    ph, pw = as_pair(size, "size")
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
    if check and batch_idx.numel() and (int(batch_idx.min()) < 0 or int(batch_idx.max()) >= B):
        raise ValueError(f"batch_idx has entries outside [0, {B})")
    dev = x.device
    rows = centers_rows.to(dev).long().unsqueeze(1) - ph // 2 + torch.arange(ph, device=dev)  # [M, ph]
    cols = centers_cols.to(dev).long().unsqueeze(1) - pw // 2 + torch.arange(pw, device=dev)  # [M, pw]
    inside = ((rows >= 0) & (rows < H)).view(-1, 1, ph, 1) & ((cols >= 0) & (cols < W)).view(-1, 1, 1, pw)
    r = rows.clamp(0, H - 1).view(-1, 1, ph, 1)  # [M, 1, ph, 1]
    c = cols.clamp(0, W - 1).view(-1, 1, 1, pw)  # [M, 1, 1, pw]
    b = batch_idx.to(dev).long().view(-1, 1, 1, 1)  # [M, 1, 1, 1]
    ch = torch.arange(C, device=dev).view(1, C, 1, 1)  # [1, C, 1, 1]
    gathered = x[b, ch, r, c]  # [M, C, ph, pw]: one gather, a fresh (contiguous) copy of the patches only
    # Zero outside the image in place: no second [M, C, ph, pw] temporary. Autograd allows it
    # (the gather's backward does not need its output) and masks the gradient the same way.
    return gathered.masked_fill_(~inside, 0)  # inside: [M, 1, ph, pw]


def tile_grid(full_size: tuple[int, int], tile_size: int | tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the non-overlapping tile grid of appendix F; a partial last row/col is a tile (ceil)."""
    H, W = as_pair(full_size, "full_size")
    th, tw = as_pair(tile_size, "tile_size")
    if th > H or tw > W:
        raise ValueError(f"tile size {(th, tw)} is larger than the image {(H, W)}")
    return -(-H // th), -(-W // tw)


def tile_top_left(
    tile_idx: Tensor, full_size: tuple[int, int], tile_size: int | tuple[int, int], *, check: bool = True
) -> tuple[Tensor, Tensor]:
    """Top-left full-resolution (rows, cols) of tiles given by their row-major index in the tile grid."""
    n_rows, n_cols = tile_grid(full_size, tile_size)
    th, tw = as_pair(tile_size, "tile_size")
    if not isinstance(tile_idx, Tensor) or tile_idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tile_idx must be an integer tensor, got {getattr(tile_idx, 'dtype', type(tile_idx))}")
    if check and tile_idx.numel() and (int(tile_idx.min()) < 0 or int(tile_idx.max()) >= n_rows * n_cols):
        raise ValueError(f"tile_idx has entries outside [0, {n_rows * n_cols}) (grid {(n_rows, n_cols)})")
    t = tile_idx.long()
    return torch.div(t, n_cols, rounding_mode="floor") * th, (t % n_cols) * tw


# -------------------------------------------------------------------- antialiased resampling by rows


def resize_weights(n_in: int, n_out: int, start: int, stop: int) -> tuple[int, Tensor]:
    """(first input index, weights float64 [stop - start, span]) of outputs start..stop of an antialiased bilinear resize.

    The weights of `F.interpolate(..., mode="bilinear", align_corners=False, antialias=True)` along
    one axis: output i is centred at scale (i + 0.5) in input coordinates (scale = n_in / n_out), and
    weighs input j by a triangle of half-width max(scale, 1) around it (the input pixel's centre is
    j + 0.5), the taps cut at the border and normalised to sum 1. Output rows start..stop need
    input rows first .. first + span only.
    """
    if not (0 <= start < stop <= n_out) or n_in < 1:
        raise ValueError(f"output rows {start}..{stop} of a resize {n_in} -> {n_out} are out of range")
    scale = n_in / n_out
    support, inv = (scale, 1.0 / scale) if scale >= 1 else (1.0, 1.0)
    center = scale * (torch.arange(start, stop, dtype=torch.float64) + 0.5)  # [m]
    lo = (center - support + 0.5).long().clamp(min=0)  # truncation, as PyTorch's kernel
    hi = (center + support + 0.5).long().clamp(max=n_in)
    first, last = int(lo.min()), int(hi.max())
    j = torch.arange(first, last, dtype=torch.float64)[None]  # [1, span]
    w = (1 - ((j - center[:, None] + 0.5) * inv).abs()).clamp(min=0)  # [m, span]
    w = w * ((j >= lo[:, None]) & (j < hi[:, None]))
    return first, w / w.sum(dim=1, keepdim=True)


@functools.lru_cache(maxsize=256)
def _resize_matrix_cpu(n_in: int, n_out: int) -> Tensor:
    """The dense [n_out, n_in] float64 resize matrix (cached)."""
    first, w = resize_weights(n_in, n_out, 0, n_out)
    out = torch.zeros(n_out, n_in, dtype=torch.float64)
    out[:, first : first + w.shape[1]] = w
    return out


@functools.lru_cache(maxsize=256)
def _resize_matrix_on(n_in: int, n_out: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """The resize matrix in `dtype` on `device`, uploaded once (a constant table: later forwards copy nothing)."""
    return _resize_matrix_cpu(n_in, n_out).to(dtype=dtype, device=device)


def resize_matrix(n_in: int, n_out: int, dtype: torch.dtype = torch.float64, device: torch.device | str = "cpu") -> Tensor:
    """[n_out, n_in]: row i holds the weights of output i of the antialiased bilinear resize n_in -> n_out (`resize_weights`)."""
    return _resize_matrix_on(int(n_in), int(n_out), dtype, torch.device(device))


@functools.lru_cache(maxsize=256)
def _bands(n_in: int, n_out: int, band: int) -> tuple[tuple[int, int, int, int], ...]:
    """(i0, i1, o0, o1) per band of `band` input rows: the output rows o0..o1 whose taps touch inputs i0..i1."""
    nz = _resize_matrix_cpu(n_in, n_out) != 0  # [n_out, n_in]
    out = []
    for i0 in range(0, n_in, band):
        i1 = min(n_in, i0 + band)
        rows = nz[:, i0:i1].any(dim=1).nonzero().flatten()
        if rows.numel():
            out.append((i0, i1, int(rows.min()), int(rows.max()) + 1))
    return tuple(out)


def tile_views(
    x: Tensor,
    batch_idx: Tensor,
    tile_idx: Tensor,
    tile_size: int | tuple[int, int],
    scale: float,
    *,
    band_rows: int | None = None,
    check: bool = True,
) -> Tensor:
    """Views V(x, s2, c) [U, C, u, v] of tiles (image batch_idx[k], tile tile_idx[k]); zero beyond the border.

    All U tiles are resampled together, `band_rows` full-resolution rows of every tile at a time:
    a band is gathered ([U, C, band, tw], zero beyond the image), resampled along its columns
    (`F.interpolate`, rows kept) and added into the output rows its taps reach (`resize_matrix`).
    No full-resolution copy of a tile exists at any time; by default a band holds about twice the
    pixels of the views themselves. A partial edge tile is the zero-padded tile, as everywhere else.
    """
    check_image(x)
    th, tw = as_pair(tile_size, "tile_size")
    H, W = x.shape[-2:]
    if batch_idx.shape != tile_idx.shape or batch_idx.dim() != 1:
        raise ValueError(f"batch_idx {tuple(batch_idx.shape)} and tile_idx {tuple(tile_idx.shape)} must both be [U]")
    u, v = view_size((th, tw), scale)
    U, C = batch_idx.numel(), x.shape[1]
    top, left = tile_top_left(tile_idx, (H, W), (th, tw), check=check)  # [U], [U]
    if U == 0:
        return x.new_zeros(0, C, u, v)
    if band_rows is None:
        band_rows = -(-2 * u * v // tw)  # a band of about twice the views' pixels
    band = max(1, min(th, int(band_rows)))
    dev = x.device
    cols = left.unsqueeze(1) + torch.arange(tw, device=dev)  # [U, tw]
    col_in = (cols < W).view(U, 1, 1, tw)
    c_idx = cols.clamp(max=W - 1).view(U, 1, 1, tw)
    b_idx = batch_idx.long().view(U, 1, 1, 1)
    ch = torch.arange(C, device=dev).view(1, C, 1, 1)
    rows_w = resize_matrix(th, u, x.dtype, dev)  # [u, th]
    out = x.new_zeros(U, C, u, v)
    for i0, i1, o0, o1 in _bands(th, u, band):
        rows = top.unsqueeze(1) + torch.arange(i0, i1, device=dev)  # [U, k]
        r_idx = rows.clamp(max=H - 1).view(U, 1, i1 - i0, 1)
        g = x[b_idx, ch, r_idx, c_idx]  # [U, C, k, tw]: this band of every tile
        g = g.masked_fill_(~((rows < H).view(U, 1, i1 - i0, 1) & col_in), 0)
        if tw != v:
            g = F.interpolate(g, size=(i1 - i0, v), mode="bilinear", align_corners=False, antialias=True)  # [U, C, k, v]
        out[:, :, o0:o1] += torch.matmul(rows_w[o0:o1, i0:i1], g)  # [o, k] @ [U, C, k, v]
    return out  # [U, C, u, v]


def grid_tile_views(x: Tensor, tile_size: int | tuple[int, int], scale: float) -> Tensor:
    """Views V(x, s, c) of every whole tile of every image: [B, nR, nC, C, u, v], nR x nC the whole tiles of the grid.

    The tiles of x [B, C, H, W] are a strided view [B * C * nR, nC, th, tw] of it (a row of tiles,
    its nC tiles as "channels"), which one antialiased resampling turns into every tile's view at
    once, with no copy of the image and no tile mixing with its neighbours: each output is exactly
    `view` of its own tile. When the tiles do not divide H, the rows of tiles are resampled one
    row at a time (the strides then do not merge). Partial edge tiles are left out: `tile_views`
    reads those. Cheaper than `tile_views` when most tiles are drawn (one pass over the image, no
    gather), at the memory of every tile's view.
    """
    check_image(x)
    th, tw = as_pair(tile_size, "tile_size")
    B, C, H, W = x.shape
    nR, nC = H // th, W // tw
    u, v = view_size((th, tw), scale)
    if nR == 0 or nC == 0:
        return x.new_zeros(B, nR, nC, C, u, v)

    def resample(rows: Tensor) -> Tensor:
        """[N, th, nC * tw] rows of tiles -> their views [N, nC, u, v]."""
        tiles = rows.unflatten(2, (nC, tw)).transpose(1, 2)  # [N, nC, th, tw], a view
        if (th, tw) == (u, v):
            return tiles
        return F.interpolate(tiles, size=(u, v), mode="bilinear", align_corners=False, antialias=True)

    full = x[:, :, : nR * th, : nC * tw]  # [B, C, nR*th, nC*tw], a view
    if H == nR * th and x.stride(0) == C * x.stride(1):  # rows of tiles merge into the batch: one call
        out = resample(full.reshape(B * C * nR, th, nC * tw))  # [B*C*nR, nC, u, v]
        return out.reshape(B, C, nR, nC, u, v).permute(0, 2, 3, 1, 4, 5)  # [B, nR, nC, C, u, v]
    rows = [resample(full[:, :, r * th : (r + 1) * th].reshape(B * C, th, nC * tw)) for r in range(nR)]  # [B*C, nC, u, v]
    return torch.stack(rows, dim=1).reshape(B, C, nR, nC, u, v).permute(0, 2, 3, 1, 4, 5)


def tile_pool_weights(n_view: int, n_full: int, tile: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """[n_tiles, n_view] area weights of view pixels in each tile along one axis; rows sum to 1."""
    return _tile_pool_weights(int(n_view), int(n_full), int(tile), dtype, torch.device(device))


@functools.lru_cache(maxsize=256)
def _tile_pool_weights(n_view: int, n_full: int, tile: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """`tile_pool_weights`, computed on the host once and uploaded once."""
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
    H, W = as_pair(full_size, "full_size")
    th, tw = as_pair(tile_size, "tile_size")
    tile_grid((H, W), (th, tw))  # validates the tile size
    h, w = scores.shape[-2:]
    if h > H or w > W:
        raise ValueError(f"score map {(h, w)} is larger than the image {(H, W)}")
    rows = tile_pool_weights(h, H, th, scores.dtype, scores.device)  # [n_rows, h]
    cols = tile_pool_weights(w, W, tw, scores.dtype, scores.device)  # [n_cols, w]
    return torch.einsum("rh,bhw,cw->brc", rows, scores, cols)  # [B, n_rows, n_cols]


def _pool_index(n_view: int, n_full: int, tile: int, start: int, stop: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """For view pixels start..stop on one axis: the two tiles each overlaps and its area weight in them, [m, 2] each.

    The weights of `tile_pool_weights` (overlap / tile extent inside the image), kept as O(view)
    index pairs instead of an [n_tiles, n_view] matrix; a view pixel no larger than a tile meets
    at most two tiles.
    """
    step = n_full / n_view
    if step > tile:
        raise ValueError(f"a view pixel ({step:.1f} pixels) is larger than a tile ({tile}); raise the scale")
    n_tiles = -(-n_full // tile)
    j = torch.arange(start, stop, dtype=torch.float64, device=device)
    e0, e1 = j * step, (j + 1) * step  # the full-resolution extent of each view pixel
    c0 = torch.div(e0, tile, rounding_mode="floor").long().clamp(max=n_tiles - 1)  # [m]
    c1 = (c0 + 1).clamp(max=n_tiles - 1)
    end0 = ((c0 + 1) * tile).double()

    def extent(c: Tensor) -> Tensor:
        """Full-resolution extent of tile c inside the image."""
        return ((c + 1) * tile).clamp(max=n_full).double() - c.double() * tile

    w0 = (torch.minimum(e1, end0) - e0) / extent(c0)
    w1 = (e1 - end0).clamp(min=0) / extent(c1)
    return torch.stack([c0, c1], dim=1), torch.stack([w0, w1], dim=1)


def tile_pool_strip(
    scores: Tensor,
    full_size: tuple[int, int],
    tile_size: int | tuple[int, int],
    view_size: int | tuple[int, int],
    row_start: int,
    col_start: int = 0,
) -> Tensor:
    """The contribution [B, n_rows, n_cols] of a block of view pixels (scores [B, m, k], rows row_start.., columns
    col_start..) to `tile_pool` of the whole score map of size `view_size` (h, w; an int is the height of a map
    whose block spans its whole width).

    Summed over blocks that cover the view once, it equals `tile_pool` of the whole map, while only one
    block of the map (and O(block) pooling indices) exists at a time. Blocks that leave some tiles out
    simply add nothing to them.
    """
    if scores.dim() != 3:
        raise ValueError(f"scores must be a [B, m, k] block, got {tuple(scores.shape)}")
    H, W = as_pair(full_size, "full_size")
    th, tw = as_pair(tile_size, "tile_size")
    n_rows, n_cols = tile_grid((H, W), (th, tw))
    B, m, k = scores.shape
    h, w = (view_size, k) if isinstance(view_size, int) else view_size
    if row_start < 0 or row_start + m > h or col_start < 0 or col_start + k > w:
        raise ValueError(f"block rows {row_start}..{row_start + m}, columns {col_start}..{col_start + k} "
                         f"lie outside the view {(h, w)}")
    ri, rw = _pool_index(h, H, th, row_start, row_start + m, scores.device)  # [m, 2] each
    ci, cw = _pool_index(w, W, tw, col_start, col_start + k, scores.device)  # [k, 2] each
    rw, cw = rw.to(scores.dtype), cw.to(scores.dtype)
    by_col = scores.new_zeros(B, m, n_cols)
    for t in range(2):  # each view column adds to its (at most) two tiles
        by_col = by_col.index_add(2, ci[:, t], scores * cw[:, t])
    out = scores.new_zeros(B, n_rows, n_cols)
    for t in range(2):  # and each view row
        out = out.index_add(1, ri[:, t], by_col * rw[:, t, None])
    return out  # [B, n_rows, n_cols]
