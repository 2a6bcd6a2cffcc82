"""Where pixels come from: the one interface through which `ZoomInNet` and `ATSNet` read an image.

Zoom-In (sec. 2.1) never needs the full-resolution image at once. It reads

- the low-resolution view V(x, s1) (the input of a, eq. 1; ATS's V(x, s), ATS eq. 18),
- the views V(x, s2, c) of the tiles it drew (the input of b, eq. 4),
- the full-resolution sub-tiles T(x, c) it drew (the input of f),

each zero beyond the image border (sec. 2.1 iii). A `PixelSource` answers exactly these questions
for a batch of B images of one size (H, W), and says which tiles may be drawn at all (a slide's
tissue; every tile of an in-memory image). The models run the same code whatever answers:

- `TensorSource`: a batch of images in memory [B, C, H, W] on any device (`zoomin_lib.geometry`:
  one batched resampling for all tile views, one gather for all patches);
- `zoomin_lib.wsi.reader.SlideSource`: one lazy whole-slide image, read from its pyramid on the
  host and moved to the model's device; it also serves the first stage strip by strip
  (`strip_pixels`), so that V(x, s1) of a gigapixel slide is never held whole at inference.

Reading in chunks (`tile_view_chunks`, `patch_chunks`, `view_strips`) lets a source bound its
memory and fetch the next chunk while the device computes on the current one.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import torch
from torch import Tensor

from zoomin_lib.geometry import extract_patches, grid_tile_views, tile_grid, tile_views, view, view_size
from zoomin_lib.syncs import Checks

__all__ = ["PixelSource", "TensorSource", "as_source"]


class PixelSource:
    """The pixels of B images of one size, as the models ask for them (subclasses answer `view`, `tile_views`, `patches`)."""

    #: view pixels per strip of a strip-wise first stage (None: read the whole view at once)
    strip_pixels: int | None = None

    @property
    def batch_size(self) -> int:
        """B, the number of images."""
        raise NotImplementedError

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) at full resolution, the same for every image."""
        raise NotImplementedError

    @property
    def channels(self) -> int:
        """C, colour channels."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the returned tensors live."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        """Their floating-point type."""
        raise NotImplementedError

    def view(self, scale: float) -> Tensor:
        """V(x, s) [B, C, floor(sH), floor(sW)]."""
        raise NotImplementedError

    def view_rows(self, scale: float, r0: int, r1: int) -> Tensor:
        """Rows r0..r1 of V(x, s): [B, C, r1 - r0, w], equal to those rows of `view(scale)`."""
        return self.view(scale)[:, :, r0:r1]

    def view_strips(self, scale: float, ranges: Sequence[tuple[int, int]]) -> Iterator[Tensor]:
        """`view_rows` for each (r0, r1) of `ranges`, in order."""
        for r0, r1 in ranges:
            yield self.view_rows(scale, r0, r1)

    def tile_views(self, batch: Tensor, tiles: Tensor, tile_size: tuple[int, int], scale: float) -> Tensor:
        """V(x, s, c) [U, C, u, v] of tiles `tiles` [U] of images `batch` [U]; zero beyond the border."""
        raise NotImplementedError

    def tile_view_chunks(
        self, batch: Tensor, tiles: Tensor, tile_size: tuple[int, int], scale: float, chunk: int
    ) -> Iterator[Tensor]:
        """`tile_views` of `chunk` tiles at a time, in order."""
        for start in range(0, batch.numel(), chunk):
            yield self.tile_views(batch[start : start + chunk], tiles[start : start + chunk], tile_size, scale)

    def patches(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
        """Full-resolution patches [M, C, ph, pw] with top-left (r - ph // 2, c - pw // 2); zero beyond the border."""
        raise NotImplementedError

    def patch_chunks(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int], chunk: int) -> Iterator[Tensor]:
        """`patches` of `chunk` patches at a time, in order."""
        for start in range(0, batch.numel(), chunk):
            sl = slice(start, start + chunk)
            yield self.patches(batch[sl], rows[sl], cols[sl], size)

    def allowed_tiles(self, tile_size: tuple[int, int]) -> Tensor | None:
        """bool [B, T]: the tiles that may be drawn (None: every tile)."""
        return None

    def allowed_tiles_host(self, tile_size: tuple[int, int]) -> Tensor | None:
        """bool [B, n_rows, n_cols] on the host: `allowed_tiles` where the host knows it without asking the device (None: every tile)."""
        return None

    def check_pixels(self, checks: Checks) -> None:
        """Add a check that the pixels are finite where that is cheap to know (nothing to add by default)."""

    def tile_count(self, tile_size: tuple[int, int]) -> int:
        """T, the number of tiles of the grid (appendix F)."""
        n_rows, n_cols = tile_grid(self.size, tile_size)
        return n_rows * n_cols

    def view_size(self, scale: float) -> tuple[int, int]:
        """(h, w) of V(x, s)."""
        return view_size(self.size, scale)


class TensorSource(PixelSource):
    """A batch of images in memory, x [B, C, H, W] floating point, on any device.

    Tile views come from one of two exact computations: when tiles divide the image, the views of
    every tile of every image are few enough (B T <= GRID_FACTOR x the tiles asked for) and they may
    all be held (one chunk), `geometry.grid_tile_views` resamples all of them in one pass over the
    image (kept for the rest of the forward); otherwise `geometry.tile_views` gathers the asked
    tiles band by band, never holding a full-resolution tile.
    """

    GRID_FACTOR = 4  # all tiles are worth computing when at most this many times the tiles asked for

    def __init__(self, x: Tensor) -> None:
        if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
            raise ValueError(f"x must be a floating-point [B, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")
        self.x = x
        self._grids: dict[tuple[tuple[int, int], float], Tensor] = {}

    @property
    def batch_size(self) -> int:
        """B."""
        return int(self.x.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.x.shape[2]), int(self.x.shape[3])

    @property
    def channels(self) -> int:
        """C."""
        return int(self.x.shape[1])

    @property
    def device(self) -> torch.device:
        """x's device."""
        return self.x.device

    @property
    def dtype(self) -> torch.dtype:
        """x's dtype."""
        return self.x.dtype

    def view(self, scale: float) -> Tensor:
        """`geometry.view(x, s)`."""
        return view(self.x, scale)

    def tile_views(self, batch: Tensor, tiles: Tensor, tile_size: tuple[int, int], scale: float) -> Tensor:
        """`geometry.tile_views`: all tiles in one batched resampling, no full-resolution copy of any."""
        return tile_views(self.x, batch, tiles, tile_size, scale, check=False)

    def tile_view_chunks(
        self, batch: Tensor, tiles: Tensor, tile_size: tuple[int, int], scale: float, chunk: int
    ) -> Iterator[Tensor]:
        """All at once from the views of every tile when that is cheaper (see the class), else chunk by chunk."""
        H, W = self.size
        th, tw = tile_size
        n_tiles = (H // th) * (W // tw)
        whole = H % th == 0 and W % tw == 0
        if whole and chunk >= batch.numel() and self.batch_size * n_tiles <= self.GRID_FACTOR * batch.numel():
            key = (tuple(tile_size), float(scale))
            if key not in self._grids:
                self._grids[key] = grid_tile_views(self.x, tile_size, scale)  # [B, nR, nC, C, u, v]
            grid = self._grids[key]
            n_cols = W // tw
            yield grid[batch, torch.div(tiles, n_cols, rounding_mode="floor"), tiles % n_cols]  # [U, C, u, v]
            return
        yield from super().tile_view_chunks(batch, tiles, tile_size, scale, chunk)

    def patches(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
        """`geometry.extract_patches`: one gather."""
        return extract_patches(self.x, batch, rows, cols, size, check=False)

    def check_pixels(self, checks: Checks) -> None:
        """x must be finite."""
        checks.add(torch.isfinite(self.x), f"x contains NaN or inf (shape {tuple(self.x.shape)})")


def as_source(x: Tensor | PixelSource, device: torch.device | None = None) -> PixelSource:
    """`x` itself if it is a PixelSource, a `TensorSource` for a [B, C, H, W] tensor (moved to `device`); ValueError otherwise.

    A model passes its own device: images kept on the host move to it batch by batch.
    """
    if isinstance(x, PixelSource):
        return x
    if isinstance(x, Tensor) and device is not None and x.device != device:
        x = x.to(device, non_blocking=x.device.type == "cpu" and x.is_pinned())
    return TensorSource(x)
