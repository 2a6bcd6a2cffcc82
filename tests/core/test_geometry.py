"""Tests of zoomin_lib.geometry: views, the location map, patch extraction and tiles."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoomin_lib.geometry import (
    extract_patches,
    tile_grid,
    tile_pool,
    tile_pool_weights,
    tile_top_left,
    tile_views,
    view,
    view_size,
    view_to_full,
)
from zoomin_lib.train.profiling import peak_memory


def naive_patch(x: torch.Tensor, b: int, r: int, c: int, ph: int, pw: int) -> torch.Tensor:
    """Slice the patch with top-left (r - ph//2, c - pw//2) out of a zero-padded copy of image b."""
    H, W = x.shape[-2:]
    pad_r, pad_c = ph + 1, pw + 1
    padded = F.pad(x[b], (pad_c, pad_c, pad_r, pad_r))  # [C, H + 2 pad_r, W + 2 pad_c]
    top, left = r - ph // 2 + pad_r, c - pw // 2 + pad_c
    return padded[:, top : top + ph, left : left + pw]


def border_centres(H: int, W: int, n_random: int, gen: torch.Generator) -> list[tuple[int, int]]:
    """All corners, points on every edge and random interior centres."""
    pts = [(0, 0), (0, W - 1), (H - 1, 0), (H - 1, W - 1), (0, W // 2), (H - 1, W // 2), (H // 2, 0), (H // 2, W - 1)]
    pts += [(1, 1), (H - 2, W - 2)]
    rnd = torch.stack([torch.randint(0, H, (n_random,), generator=gen), torch.randint(0, W, (n_random,), generator=gen)], 1)
    return pts + [tuple(p) for p in rnd.tolist()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(3, 3), (4, 4), (5, 2), (2, 7), (1, 1), (11, 13)])
def test_extract_patches_matches_naive_slicing(dtype: torch.dtype, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    B, C, H, W = 3, 2, 11, 13
    x = torch.randn(B, C, H, W, generator=gen, dtype=dtype)
    pts = border_centres(H, W, 20, gen)
    b = torch.randint(0, B, (len(pts),), generator=gen)
    rows = torch.tensor([p[0] for p in pts])
    cols = torch.tensor([p[1] for p in pts])
    got = extract_patches(x, b, rows, cols, size)
    assert got.shape == (len(pts), C, *size) and got.dtype == dtype
    want = torch.stack([naive_patch(x, int(b[m]), int(rows[m]), int(cols[m]), *size) for m in range(len(pts))])
    assert torch.equal(got, want)


def test_extract_patches_gradient_matches_naive() -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 1, 6, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    b, r, c = torch.tensor([0, 1, 1]), torch.tensor([0, 5, 3]), torch.tensor([6, 0, 3])
    w = torch.randn(3, 1, 4, 3, generator=gen, dtype=torch.float64)
    (extract_patches(x, b, r, c, (4, 3)) * w).sum().backward()
    g1 = x.grad.clone()
    x.grad = None
    (torch.stack([naive_patch(x, int(b[m]), int(r[m]), int(c[m]), 4, 3) for m in range(3)]) * w).sum().backward()
    assert torch.allclose(g1, x.grad)


def test_extract_patches_peak_memory_is_one_copy_of_the_patches() -> None:
    """10 full-resolution tiles of a 2048 x 2048 x 3 image: no second full-size temporary (was ~2x)."""
    x = torch.rand(1, 3, 2048, 2048)
    top, left = tile_top_left(torch.arange(10), (2048, 2048), 256)
    b = torch.zeros(10, dtype=torch.long)
    out_bytes = 10 * 3 * 256 * 256 * 4
    for rows, cols in ((top + 128, left + 128), (top * 0 + 2047, left * 0 + 2047)):  # inside; mostly outside
        with torch.no_grad():
            report = peak_memory(lambda: extract_patches(x, b, rows, cols, 256), "cpu")
        assert out_bytes <= report.peak_bytes < 1.5 * out_bytes


def test_extract_patches_zero_fill_keeps_autograd_with_a_leaf_input() -> None:
    """In-place zero fill of the gathered patches: backward works and gives zero gradient outside."""
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64, requires_grad=True)
    out = extract_patches(x, torch.tensor([0]), torch.tensor([0]), torch.tensor([0]), 3)  # [1, 1, 3, 3]
    assert torch.equal(out[0, 0, 0], torch.zeros(3, dtype=torch.float64))  # row -1 is outside
    out.sum().backward()
    want = torch.zeros(5, 5, dtype=torch.float64)
    want[:2, :2] = 1
    assert torch.equal(x.grad[0, 0], want)
    assert torch.autograd.gradcheck(
        lambda t: extract_patches(t, torch.tensor([0, 0]), torch.tensor([4, 2]), torch.tensor([0, 3]), (3, 4)), (x,)
    )


def test_extract_patches_errors() -> None:
    x = torch.zeros(2, 1, 8, 8)
    one = torch.tensor([0])
    with pytest.raises(ValueError, match="larger than the image"):
        extract_patches(x, one, one, one, (9, 3))
    with pytest.raises(ValueError, match="larger than the image"):
        extract_patches(x, one, one, one, (3, 9))
    with pytest.raises(ValueError, match=r"\[M\]"):
        extract_patches(x, torch.tensor([0, 1]), one, one, 3)
    with pytest.raises(ValueError, match="batch_idx"):
        extract_patches(x, torch.tensor([2]), one, one, 3)
    with pytest.raises(ValueError, match="B, C, H, W"):
        extract_patches(torch.zeros(8, 8), one, one, one, 3)


@pytest.mark.parametrize("scale", [0.1, 0.25, 1 / 3, 0.5, 0.77, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_view_size_follows_floor(scale: float, dtype: torch.dtype) -> None:
    x = torch.rand(2, 3, 37, 50, dtype=dtype)
    v = view(x, scale)
    assert v.shape == (2, 3, math.floor(scale * 37), math.floor(scale * 50))
    assert v.dtype == dtype
    assert view_size((37, 50), scale) == tuple(v.shape[-2:])


@pytest.mark.parametrize(
    ("size", "scale", "want"),
    [((100, 100), 0.29, (29, 29)), ((100, 100), 0.57, (57, 57)), ((100, 300), 0.58, (58, 174)),
     ((2048, 2048), 0.0625, (128, 128)), ((37, 50), 1 / 3, (12, 16)), ((9, 9), 1.0, (9, 9))],
)
def test_view_size_is_exact_for_decimal_scales(size: tuple[int, int], scale: float, want: tuple[int, int]) -> None:
    """floor(s H) for the decimal s as written: the float product 0.29 * 100 = 28.999... must not give 28."""
    assert view_size(size, scale) == want
    assert view(torch.zeros(1, 1, *size), scale).shape[-2:] == want


def test_view_of_constant_is_constant() -> None:
    x = torch.full((1, 1, 40, 40), 0.3, dtype=torch.float64)
    assert torch.allclose(view(x, 0.2), torch.full((1, 1, 8, 8), 0.3, dtype=torch.float64))


@pytest.mark.parametrize("scale", [0.0, -0.5, 1.5, float("nan"), 0.01])
def test_view_bad_scale(scale: float) -> None:
    with pytest.raises(ValueError, match="scale"):
        view(torch.zeros(1, 1, 20, 20), scale)


def test_view_to_full_endpoints_and_formula() -> None:
    h, w, H, W = 7, 5, 100, 61
    i = torch.arange(h)
    j = torch.arange(w)
    rows, _ = view_to_full(i, torch.zeros_like(i), (h, w), (H, W))
    _, cols = view_to_full(torch.zeros_like(j), j, (h, w), (H, W))
    assert rows[0] == 0 and rows[-1] == H - 1 and cols[0] == 0 and cols[-1] == W - 1
    assert rows.tolist() == [k * (H - 1) // (h - 1) for k in range(h)]
    assert cols.tolist() == [k * (W - 1) // (w - 1) for k in range(w)]
    grid_r, grid_c = view_to_full(i.view(h, 1).expand(h, w), j.view(1, w).expand(h, w), (h, w), (H, W))
    assert grid_r.shape == (h, w) and grid_c.shape == (h, w)


def test_view_to_full_single_location_is_centre_and_errors() -> None:
    r, c = view_to_full(torch.tensor([0]), torch.tensor([0]), (1, 1), (9, 10))
    assert (int(r), int(c)) == (4, 4)
    with pytest.raises(ValueError, match="outside"):
        view_to_full(torch.tensor([3]), torch.tensor([0]), (3, 3), (9, 9))


def test_tile_grid_counts_partial_tiles() -> None:
    assert tile_grid((64, 64), 32) == (2, 2)
    assert tile_grid((70, 50), 32) == (3, 2)
    assert tile_grid((64, 65), (16, 64)) == (4, 2)
    with pytest.raises(ValueError, match="larger than the image"):
        tile_grid((30, 64), 32)


def test_tile_top_left_row_major() -> None:
    top, left = tile_top_left(torch.arange(6), (70, 50), 32)
    assert top.tolist() == [0, 0, 32, 32, 64, 64]
    assert left.tolist() == [0, 32, 0, 32, 0, 32]
    with pytest.raises(ValueError, match="outside"):
        tile_top_left(torch.tensor([6]), (70, 50), 32)


def test_tile_views_are_views_of_zero_padded_tiles() -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(2, 3, 40, 48, generator=gen, dtype=torch.float64)
    b, t = torch.tensor([0, 1, 1]), torch.tensor([0, 3, 2])  # grid (2, 2); tiles 2, 3 are partial rows
    got = tile_views(x, b, t, 32, 0.25)
    assert got.shape == (3, 3, 8, 8)
    padded = F.pad(x, (0, 64 - 48, 0, 64 - 40))
    for m, (bb, tt) in enumerate(zip(b.tolist(), t.tolist())):
        r0, c0 = (tt // 2) * 32, (tt % 2) * 32
        want = view(padded[bb : bb + 1, :, r0 : r0 + 32, c0 : c0 + 32], 0.25)[0]
        assert torch.allclose(got[m], want)


def test_tile_pool_is_average_pooling_when_aligned() -> None:
    s = torch.randn(2, 16, 12, dtype=torch.float64)  # view of a 64x48 image at 0.25, tiles 16 -> 4x4 view px
    got = tile_pool(s, (64, 48), 16)
    assert torch.allclose(got, F.avg_pool2d(s.unsqueeze(1), 4)[:, 0])


def test_tile_pool_partial_tiles() -> None:
    w = tile_pool_weights(9, 37, 16, torch.float64, torch.device("cpu"))  # 3 tiles, the last 5 px wide
    assert w.shape == (3, 9)
    assert torch.allclose(w.sum(dim=1), torch.ones(3, dtype=torch.float64))
    const = torch.full((1, 9, 9), 2.5)
    assert torch.allclose(tile_pool(const, (37, 37), 16), torch.full((1, 3, 3), 2.5))


def test_tile_views_match_the_padded_tile_resampled_without_copying_whole_tiles():
    """tile_views equals view(extract_patches(tile)) for whole and partial edge tiles, and copies no whole tile."""
    from zoomin_lib.geometry import extract_patches, tile_top_left, tile_views, view
    from zoomin_lib.train.profiling import peak_memory

    x = torch.rand(2, 3, 130, 110)
    batch = torch.tensor([0, 1, 1, 0, 1])
    tiles = torch.tensor([0, 3, 5, 4, 1])  # grid 3 x 3 of 50x50 tiles; row 2 and col 2 are partial
    top, left = tile_top_left(tiles, (130, 110), 50)
    reference = view(extract_patches(x, batch, top + 25, left + 25, (50, 50)), 0.2)
    torch.testing.assert_close(tile_views(x, batch, tiles, 50, 0.2), reference, rtol=0, atol=1e-6)
    big = torch.rand(1, 3, 1000, 1000)
    whole = torch.zeros(4, dtype=torch.long), torch.tensor([0, 1, 2, 3])
    peak = peak_memory(lambda: tile_views(big, *whole, 500, 0.1), "cpu").peak_bytes
    assert peak < 4 * 3 * 500 * 500 * 4 / 10  # far below one copy of the four 500x500 tiles (12 MB)


def test_resize_weights_are_pytorchs_antialiased_bilinear():
    """Any range of output rows, from its input rows alone, equals F.interpolate's rows (down and up)."""
    from zoomin_lib.geometry import resize_matrix, resize_weights

    x = torch.rand(1, 1, 301, 4, dtype=torch.float64)
    ref = F.interpolate(x, size=(37, 4), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    for start, stop in ((0, 37), (5, 12), (30, 37)):
        first, w = resize_weights(301, 37, start, stop)
        mine = w @ x[0, 0, first : first + w.shape[1]]
        assert torch.allclose(mine, ref[start:stop], atol=1e-12)
    assert torch.allclose(resize_matrix(301, 37) @ x[0, 0], ref, atol=1e-12)
    up = F.interpolate(x[..., :20, :], size=(45, 4), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    assert torch.allclose(resize_matrix(20, 45) @ x[0, 0, :20], up, atol=1e-12)
    assert torch.equal(resize_matrix(9, 9), torch.eye(9, dtype=torch.float64))


def test_view_size_of_scales_given_as_fractions():
    """1/3 of 300 is 100 (the float 1/3 is just below a third), 0.29 of 100 is 29; a genuine fraction still floors."""
    from zoomin_lib.geometry import view_size

    assert view_size((300, 300), 1 / 3) == (100, 100)
    assert view_size((100, 100), 0.29) == (29, 29)
    assert view_size((299, 301), 1 / 3) == (99, 100)
    assert view_size((16384, 16384), 1 / 32) == (512, 512)
    assert view_size((1000, 1000), 0.0015) == (1, 1)


@pytest.mark.parametrize("band", [1, 3, 11, None])
def test_tile_views_any_band_height_equals_the_reference(band):
    """The banded resampling is exact whatever the band height, for whole, partial and upsampled tiles."""
    from zoomin_lib.geometry import extract_patches, tile_top_left, tile_views, view

    x = torch.rand(3, 2, 75, 61, dtype=torch.float64)
    batch = torch.tensor([2, 0, 1, 2, 0])
    tiles = torch.tensor([0, 5, 8, 7, 3])  # grid 3 x 3 of 30x30 tiles; row 2 and col 2 partial
    top, left = tile_top_left(tiles, (75, 61), 30)
    for scale in (0.2, 1 / 3, 1.0):
        reference = view(extract_patches(x, batch, top + 15, left + 15, (30, 30)), scale)
        got = tile_views(x, batch, tiles, 30, scale, band_rows=band)
        torch.testing.assert_close(got, reference, rtol=0, atol=1e-12)


def test_tile_pool_strips_add_up_to_the_whole_pooling():
    from zoomin_lib.geometry import tile_pool_strip

    s = torch.randn(2, 40, 36, dtype=torch.float64)  # a score map of a 130 x 110 image
    whole = tile_pool(s, (130, 110), 16)
    for step in (1, 7, 40):
        parts = sum(tile_pool_strip(s[:, r : r + step], (130, 110), 16, 40, r) for r in range(0, 40, step))
        torch.testing.assert_close(parts, whole, rtol=0, atol=1e-12)
