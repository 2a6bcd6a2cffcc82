"""What a model reads from a whole-slide image: `SlideReader` (lazy, counted reads) and `SlideSource` (the model's pixels).

Zoom-In (Kong & Henao, sec. 2.1, 4) classifies Camelyon16 slides of up to 217,088 x 111,104 pixels
by reading a low-resolution view V(x, s1), the views V(x, s2, c) of the tiles it samples and the
sampled sub-tiles at full resolution:

- `SlideReader` reads exactly that from one `zoomin_lib.infra.slides.Slide`: any row range of a
  view V(x, s) (the separable antialiased bilinear resampling of `zoomin_lib.geometry.view`, with
  `geometry.resize_weights`, so that strips of a view equal the whole view), a tile's view at the
  pyramid level nearest its scale, and sub-tiles at level 0. Pixels are standardised with the
  training statistics and everything beyond the slide is zero (sec. 2.1 iii), as `ZoomInNet` sees a
  tensor. It counts its reads.
- `SlideSource` is the `zoomin_lib.pixels.PixelSource` of one slide: the reader's answers, read on
  the host, moved to the model's device (pinned memory, non-blocking, on a GPU), the next strip,
  tile chunk or patch chunk read on a background thread while the device computes on the current
  one; drawable tiles restricted to tissue; the first stage served strip by strip at inference.

An ROI (annotation) is any object with `boxes()` and `window(...)` (`ROI`), e.g.
`data_prep.camelyon16.LesionROI`.
"""

from __future__ import annotations

import math
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from zoomin_lib.geometry import resize_weights, tile_top_left, view_size
from zoomin_lib.infra.slides import Slide, open_slide, tissue_mask, tissue_tiles
from zoomin_lib.pixels import PixelSource
from zoomin_lib.syncs import host_sync

Stats = tuple[Tensor, Tensor]  # per-channel mean, std [1, 3, 1, 1] in [0, 1] units


T = TypeVar("T")


class ROI(Protocol):
    """A slide's regions of interest (metastases), rasterised window by window."""

    def boxes(self) -> np.ndarray:
        """Level-0 bounding boxes (x0, y0, x1, y1) float [K, 4]."""

    def window(self, location: tuple[int, int], extent: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Mask bool [h, w] of the level-0 window at (x, y) of extent (W, H), rasterised at size (w, h)."""


class SlideReader:
    """What the models read from one slide: views (whole or by rows), tile views, sub-tiles; standardised, zero outside.

    `stats` are the training set's per-channel mean and std in [0, 1] units ([1, 3, 1, 1] each);
    `roi` an annotation (see `ROI`) or None; `cache_views` keeps each whole view it computes (for
    training on the small V(x, s1)); `strip_pixels` bounds the pixels of one strip; `record_reads`
    keeps (kind, level, x, y, w, h) of every read in `read_log`.
    """

    def __init__(
        self,
        slide: Slide | str | Path | np.ndarray,
        stats: Stats | None = None,
        *,
        name: str | None = None,
        label: int | None = None,
        roi: ROI | None = None,
        cache_views: bool = False,
        strip_pixels: int = 2**16,
        record_reads: bool = False,
    ) -> None:
        self._owns = not isinstance(slide, Slide)
        self.slide = open_slide(slide)
        self.path = self.slide.path
        self.name = name or (self.path.stem if self.path is not None else "<array>")
        mean, std = stats if stats is not None else (torch.zeros(3), torch.ones(3))
        self.mean = torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.label, self.roi = label, roi
        self.cache_views = cache_views
        self.strip_pixels = int(strip_pixels)
        self.record_reads = record_reads
        self.read_log: list[tuple[str, int, int, int, int, int]] = []
        self.reads = {"count": 0, "bytes": 0, "largest_bytes": 0}
        self.cache: dict[Any, Any] = {}

    # ---------------------------------------------------------------- basics
    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) at level 0."""
        return self.slide.shape

    def _log(self, kind: str, level: int, x: int, y: int, block: np.ndarray) -> np.ndarray:
        """Count one read (and keep it in read_log when asked)."""
        self.reads["count"] += 1
        self.reads["bytes"] += block.nbytes
        self.reads["largest_bytes"] = max(self.reads["largest_bytes"], block.nbytes)
        if self.record_reads:
            self.read_log.append((kind, level, x, y, block.shape[1], block.shape[0]))
        return block

    def _standardise(self, pixels: Tensor) -> Tensor:
        """Float pixels 0..255 [M, 3, h, w] -> (p / 255 - mean) / std."""
        return (pixels / 255 - self.mean) / self.std

    def close(self) -> None:
        """Close the slide if this reader opened it."""
        if self._owns:
            self.slide.close()

    def __enter__(self) -> SlideReader:
        """Context manager: the reader itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the block."""
        self.close()

    def __repr__(self) -> str:
        """Name, size and label."""
        return f"SlideReader({self.name!r}, shape={self.shape}, label={self.label})"

    # ---------------------------------------------------------------- views
    def view_rows(self, scale: float, r0: int, r1: int, standardise: bool = True) -> Tensor:
        """Rows r0..r1 of V(x, s): float [1, 3, r1 - r0, w], equal to those rows of the whole view.

        Read from the smallest pyramid level at least the view's size (`Slide.view_level`), `strip_pixels`
        level pixels at a time; columns resampled by `F.interpolate` (rows kept), then rows by `geometry.resize_weights`.
        """
        h, w = view_size(self.shape, scale)
        level = self.slide.view_level(scale)
        lw, lh = self.slide.level_dimensions[level]
        first, weights = resize_weights(lh, h, r0, r1)  # [r1 - r0, span]
        weights = weights.float()
        span = weights.shape[1]
        wide = torch.empty(3, span, w)  # [3, span, w]
        step = max(1, self.strip_pixels // lw)
        for y in range(0, span, step):
            n = min(step, span - y)
            block = self._log("view", level, 0, first + y, self.slide._read(level, 0, first + y, lw, n))  # [n, lw, 3]
            t = torch.from_numpy(np.ascontiguousarray(block)).permute(2, 0, 1)[None].float()  # [1, 3, n, lw]
            if lw != w:
                t = F.interpolate(t, size=(n, w), mode="bilinear", align_corners=False, antialias=True)
            wide[:, y : y + n] = t[0]
        rows = wide if (span == r1 - r0 and lh == h) else torch.matmul(weights, wide)  # [3, r1 - r0, w]
        return self._standardise(rows[None]) if standardise else rows[None]

    def view(self, scale: float) -> Tensor:
        """The whole V(x, s), standardised: float [1, 3, h, w] (kept when `cache_views`)."""
        key = ("view", float(scale))
        if key in self.cache:
            return self.cache[key]
        v = self.view_rows(scale, 0, view_size(self.shape, scale)[0])
        if self.cache_views:
            self.cache[key] = v
        return v

    def thumbnail(self, side: int = 512) -> np.ndarray:
        """An RGB uint8 thumbnail [h, w, 3] whose longer side is about `side`, computed strip by strip."""
        scale = min(1.0, side / max(self.shape))
        h, w = view_size(self.shape, scale)
        step = max(1, self.strip_pixels // w)
        strips = [self.view_rows(scale, r, min(h, r + step), standardise=False)[0].round_().clamp_(0, 255)
                  .to(torch.uint8).permute(1, 2, 0).numpy() for r in range(0, h, step)]
        return np.concatenate(strips)  # [h, w, 3]

    def tissue(self, tile_size: tuple[int, int], side: int = 512) -> Tensor:
        """Tiles holding tissue: bool [n_rows, n_cols] (Otsu on a thumbnail); every tile when none is found."""
        key = ("tissue", tuple(tile_size), side)
        if key not in self.cache:
            mask = tissue_tiles(tissue_mask(self.thumbnail(side)), tile_size, self.slide.dimensions)
            self.cache[key] = torch.from_numpy(mask if mask.any() else np.ones_like(mask))
        return self.cache[key]

    # ---------------------------------------------------------------- tiles and sub-tiles
    def tile_view(self, top: int, left: int, extent: tuple[int, int], scale: float, standardise: bool = True) -> Tensor:
        """V(x, s, c) of the level-0 box (top, left, extent): float [1, 3, u, v], zero beyond the slide (0..255 if not standardised).

        Read at the coarsest level whose downsample is at most 1 / s (OpenSlide's
        `get_best_level_for_downsample`), then resized to view_size(extent, s).
        """
        th, tw = extent
        u, v = view_size((th, tw), scale)
        level = self.slide.get_best_level_for_downsample(1 / scale)
        ds = self.slide.level_downsamples[level]
        lh, lw = max(1, round(th / ds)), max(1, round(tw / ds))
        block = self._log("tile", level, left, top, self.slide.read_region((left, top), level, (lw, lh)))  # [lh, lw, 3]
        x = torch.from_numpy(block).permute(2, 0, 1)[None].float()  # [1, 3, lh, lw]
        x = self._standardise(x) if standardise else x
        LW, LH = self.slide.level_dimensions[level]
        ly, lx = math.floor(top / ds), math.floor(left / ds)
        if ly + lh > LH or lx + lw > LW or ly < 0 or lx < 0:
            inside_r = ((ly + torch.arange(lh)) < LH) & ((ly + torch.arange(lh)) >= 0)  # [lh]
            inside_c = ((lx + torch.arange(lw)) < LW) & ((lx + torch.arange(lw)) >= 0)  # [lw]
            x = x * (inside_r[:, None] & inside_c[None, :])
        if (lh, lw) != (u, v):
            x = F.interpolate(x, size=(u, v), mode="bilinear", align_corners=False, antialias=True)
        return x  # [1, 3, u, v]

    def patches(self, rows: Tensor, cols: Tensor, size: tuple[int, int], standardise: bool = True) -> Tensor:
        """Level-0 patches [M, 3, ph, pw] with top-left (r - ph // 2, c - pw // 2), zero beyond the slide (0..255 if not standardised)."""
        ph, pw = size
        H, W = self.shape
        out = []
        for r, c in zip(rows.tolist(), cols.tolist()):
            top, left = r - ph // 2, c - pw // 2
            block = self._log("patch", 0, left, top, self.slide.read_region((left, top), 0, (pw, ph)))  # [ph, pw, 3]
            x = torch.from_numpy(block).permute(2, 0, 1)[None].float()  # [1, 3, ph, pw]
            x = self._standardise(x) if standardise else x
            if top < 0 or left < 0 or top + ph > H or left + pw > W:
                rr, cc = top + torch.arange(ph), left + torch.arange(pw)
                x = x * (((rr >= 0) & (rr < H))[:, None] & ((cc >= 0) & (cc < W))[None, :])
            out.append(x)
        return torch.cat(out) if out else torch.zeros(0, 3, ph, pw)


def reader_for(slide: Any, make: Callable[[Any], SlideReader]) -> tuple[SlideReader, bool]:
    """(a reader for `slide`, whether this call opened it)."""
    return (slide, False) if isinstance(slide, SlideReader) else (make(slide), True)


def slide_name(slide: Any) -> str:
    """The file (or name) of a slide argument, for messages."""
    if isinstance(slide, SlideReader):
        return str(slide.path or slide.name)
    if isinstance(slide, Slide):
        return str(slide.path or "<array>")
    return str(slide) if not isinstance(slide, np.ndarray) else "<array>"


def one_ahead(jobs: Sequence[Callable[[], T]], pool: ThreadPoolExecutor | None) -> Iterator[T]:
    """Run `jobs` in order, each one started on `pool` before the previous result is handed out (inline without a pool)."""
    if pool is None:
        for job in jobs:
            yield job()
        return
    pending: deque[Future] = deque()
    for job in jobs:
        pending.append(pool.submit(job))
        if len(pending) > 1:
            yield pending.popleft().result()
    while pending:
        yield pending.popleft().result()


class SlideSource(PixelSource):
    """One slide as the models' `PixelSource` (batch of one): read on the host, computed on `device`.

    Tensors are moved through pinned memory without blocking when `device` is a GPU. The chunked
    reads (`view_strips`, `tile_view_chunks`, `patch_chunks`) run on a background thread one chunk
    ahead, so the host reads while the device computes. The locations of tiles and patches chosen on
    the device are copied to the host once per request (a documented synchronisation: the host
    must know where to read). `strip_pixels` (None: whole views) serves the first stage in strips;
    `tissue_only` restricts the drawable tiles to those with tissue (on a `tissue_side` thumbnail).
    """

    def __init__(
        self,
        reader: SlideReader,
        device: torch.device | str = "cpu",
        *,
        strip_pixels: int | None = None,
        tissue_only: bool = True,
        tissue_side: int = 512,
        prefetch: bool = True,
    ) -> None:
        self.reader = reader
        self._device = torch.device(device)
        self.strip_pixels = strip_pixels
        self.tissue_only = tissue_only
        self.tissue_side = tissue_side
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="slide-read") if prefetch else None

    def close(self) -> None:
        """Stop the background reader."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __del__(self) -> None:
        """Stop the background reader when the source goes."""
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.shutdown(wait=False)

    @property
    def batch_size(self) -> int:
        """One slide."""
        return 1

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) at level 0."""
        return self.reader.shape

    @property
    def channels(self) -> int:
        """RGB."""
        return 3

    @property
    def device(self) -> torch.device:
        """The model's device."""
        return self._device

    @property
    def dtype(self) -> torch.dtype:
        """float32."""
        return torch.float32

    def _to_device(self, t: Tensor) -> Tensor:
        """A host tensor on the model's device (pinned and non-blocking on a GPU)."""
        if self._device.type == "cuda":
            return t.pin_memory().to(self._device, non_blocking=True)
        return t.to(self._device)

    def _host(self, *tensors: Tensor) -> list[Tensor]:
        """Device index tensors on the host (one synchronisation for all of them)."""
        if all(t.device.type == "cpu" for t in tensors):
            return list(tensors)
        with host_sync("slide reads: the host needs the locations to read"):
            return [t.cpu() for t in tensors]

    def view(self, scale: float) -> Tensor:
        """The whole V(x, s), standardised: [1, 3, h, w]."""
        return self._to_device(self.reader.view(scale))

    def view_rows(self, scale: float, r0: int, r1: int) -> Tensor:
        """Rows r0..r1 of V(x, s), standardised."""
        return self._to_device(self.reader.view_rows(scale, r0, r1))

    def view_strips(self, scale: float, ranges: Sequence[tuple[int, int]]) -> Iterator[Tensor]:
        """Strips of V(x, s), the next one read while the current one is computed on."""
        jobs = [lambda r0=r0, r1=r1: self._to_device(self.reader.view_rows(scale, r0, r1)) for r0, r1 in ranges]
        yield from one_ahead(jobs, self._pool)

    def _tile_views_host(self, tiles: Tensor, tile_size: tuple[int, int], scale: float) -> Tensor:
        """V(x, s, c) [U, 3, u, v] of host tiles, read one by one."""
        top, left = tile_top_left(tiles, self.size, tile_size, check=False)
        views = [self.reader.tile_view(t, l, tile_size, scale) for t, l in zip(top.tolist(), left.tolist())]
        return torch.cat(views) if views else torch.zeros(0, 3, *view_size(tile_size, scale))

    def tile_views(self, batch: Tensor, tiles: Tensor, tile_size: tuple[int, int], scale: float) -> Tensor:
        """V(x, s, c) [U, 3, u, v] of tiles [U] (all of this slide), each read at the pyramid level nearest s."""
        (tiles,) = self._host(tiles)
        return self._to_device(self._tile_views_host(tiles, tile_size, scale))

    def tile_view_chunks(
        self, batch: Tensor, tiles: Tensor, tile_size: tuple[int, int], scale: float, chunk: int
    ) -> Iterator[Tensor]:
        """`tile_views` of `chunk` tiles at a time, the next chunk read while the current one is computed on."""
        (tiles,) = self._host(tiles)
        jobs = [lambda s=s: self._to_device(self._tile_views_host(tiles[s : s + chunk], tile_size, scale))
                for s in range(0, tiles.numel(), chunk)]
        yield from one_ahead(jobs, self._pool)

    def patches(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
        """Level-0 patches [M, 3, ph, pw], standardised, zero beyond the slide."""
        rows, cols = self._host(rows, cols)
        return self._to_device(self.reader.patches(rows, cols, size))

    def patch_chunks(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int], chunk: int) -> Iterator[Tensor]:
        """`patches` of `chunk` patches at a time, the next chunk read while the current one is computed on."""
        rows, cols = self._host(rows, cols)
        jobs = [lambda s=s: self._to_device(self.reader.patches(rows[s : s + chunk], cols[s : s + chunk], size))
                for s in range(0, rows.numel(), chunk)]
        yield from one_ahead(jobs, self._pool)

    def allowed_tiles(self, tile_size: tuple[int, int]) -> Tensor | None:
        """bool [1, T]: the tiles with tissue (every tile when none is found), or None when not `tissue_only`."""
        if not self.tissue_only:
            return None
        return self._to_device(self.reader.tissue(tile_size, self.tissue_side).reshape(1, -1))

    def allowed_tiles_host(self, tile_size: tuple[int, int]) -> Tensor | None:
        """bool [1, n_rows, n_cols]: the tissue tiles, on the host (the first stage reads only their rows and columns)."""
        if not self.tissue_only:
            return None
        return self.reader.tissue(tile_size, self.tissue_side)[None]
