"""Zoom-In on whole-slide images: the same `ZoomInNet` reads a lazy slide, in memory that does not grow with the slide.

Zoom-In (Kong & Henao) classifies Camelyon16 slides of up to 217,088 x 111,104 pixels (sec. 4) by
reading a low-resolution view V(x, s1), the views V(x, s2, c) of the tiles it samples and the
sampled sub-tiles at full resolution (sec. 2.1); alpha is pooled over non-overlapping 3200 x 3200
tiles (appendix F). Its memory, O(s1^2 HW + N' s2^2 h1 w1 + N h2 w2) ("Memory requirements",
sec. 2.1), still grows with the slide through the first term. Reading the first stage in strips
removes that term too. This module holds what is about files; the model's logic is
`zoomin_lib.models.ZoomInNet` alone, whatever the pixels come from:

- `SlideReader` reads what the models need from one `zoomin_lib.slides.Slide`, and only that: any
  row range of a view V(x, s) (the separable antialiased bilinear resampling of
  `zoomin_lib.geometry.view`, `geometry.resize_weights`, so that strips of a view equal the whole
  view), a tile's view at the pyramid level nearest its scale, and sub-tiles at level 0. Pixels
  are standardised with the training statistics, and everything beyond the slide is zero (the
  zero padding of sec. 2.1 iii), as `ZoomInNet` sees a tensor. It counts its reads.
- `SlideSource` is the `zoomin_lib.pixels.PixelSource` of one slide: the reader's answers, read
  on the host, moved to the model's device (through pinned memory, without blocking, on a GPU),
  the next strip, tile chunk or patch chunk read on a background thread while the device
  computes on the current one; tiles restricted to tissue (`zoomin_lib.slides.tissue_mask` on a
  fixed-size thumbnail); the first stage served strip by strip at inference.
- `SlideZoomIn` wraps a trained `ZoomInNet` (the same a, b, f, g) with the training set's
  statistics and the reading options: `forward(reader)` is the net on a `SlideSource`; "sample"
  is the two-stage estimator of eq. 9 (training), "topk" the exact deterministic top-k of the
  joint alpha_c beta^c_c' (inference). `predict` returns probabilities and locations per slide,
  preparing the next slide (opening, tissue) on a background thread.
- `SlideATS` is one-stage ATS (ATS sec. 3.3) on a slide: attention over the whole V(x, s), so its
  memory grows with the slide; the chapter measures the two side by side.
- `host_peak_memory`: tensor allocations (`zoomin_lib.profiling.peak_memory`) and numpy/Python
  allocations (tracemalloc: slide reads, thumbnails, masks), reported separately; with a GPU
  model, the device's peak too.
- Training on slides (`slide_loss`): eq. 12 per slide, with the cached V(x, s1) and lazily read
  tiles; with annotations, appendix L: tile-classifier pre-training of a, b and f
  (`pretrain_tile_classifiers`) and the MSE of eq. 13 on alpha and beta (`pixel_mse`). Fig. 7's
  metastasis-to-tile ratios and their Spearman correlation with alpha: `roi_tiles`,
  `attention_roi_spearman`.

An ROI (annotation) is any object with `boxes() -> [K, 4] (x0, y0, x1, y1)` level-0 bounding boxes
and `window(location, extent, size) -> bool [h, w]`, e.g. `data_prep.camelyon16.LesionROI`.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Protocol, Sequence, TypeVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import default_device
from .geometry import resize_weights, tile_grid, tile_top_left, view_size
from .losses import attention_mse, contrastive_loss, zoomin_objective
from .models import ATSNet, ModelOutput, ZoomInNet, module_device
from .pixels import PixelSource
from .profiling import MB, peak_memory
from .slides import Slide, SlideError, open_slide, tissue_mask, tissue_tiles
from .syncs import host_sync
from .training import binary_auc, evaluating, fit

__all__ = [
    "ROI",
    "window_examples",
    "SlideReader",
    "SlideSource",
    "SlidePrediction",
    "SlideZoomIn",
    "SlideATS",
    "host_peak_memory",
    "slide_loss",
    "fit_slides",
    "roi_tiles",
    "pixel_mse",
    "pretrain_tile_classifiers",
    "evaluate_slides",
    "attention_roi_spearman",
    "show_slide",
]

Stats = tuple[Tensor, Tensor]  # per-channel mean, std [1, 3, 1, 1] in [0, 1] units
T = TypeVar("T")


class ROI(Protocol):
    """A slide's regions of interest (metastases), rasterised window by window."""

    def boxes(self) -> np.ndarray:
        """Level-0 bounding boxes (x0, y0, x1, y1) float [K, 4]."""

    def window(self, location: tuple[int, int], extent: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Mask bool [h, w] of the level-0 window at (x, y) of extent (W, H), rasterised at size (w, h)."""


# -------------------------------------------------------------------- reading a slide


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


def _reader(slide: Any, make: Callable[[Any], SlideReader]) -> tuple[SlideReader, bool]:
    """(a reader for `slide`, whether this call opened it)."""
    return (slide, False) if isinstance(slide, SlideReader) else (make(slide), True)


def _where(slide: Any) -> str:
    """The file (or name) of a slide argument, for messages."""
    if isinstance(slide, SlideReader):
        return str(slide.path or slide.name)
    if isinstance(slide, Slide):
        return str(slide.path or "<array>")
    return str(slide) if not isinstance(slide, np.ndarray) else "<array>"


# -------------------------------------------------------------------- the pixel source of a slide


def _one_ahead(jobs: Sequence[Callable[[], T]], pool: ThreadPoolExecutor | None) -> Iterator[T]:
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
        yield from _one_ahead(jobs, self._pool)

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
        yield from _one_ahead(jobs, self._pool)

    def patches(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int]) -> Tensor:
        """Level-0 patches [M, 3, ph, pw], standardised, zero beyond the slide."""
        rows, cols = self._host(rows, cols)
        return self._to_device(self.reader.patches(rows, cols, size))

    def patch_chunks(self, batch: Tensor, rows: Tensor, cols: Tensor, size: tuple[int, int], chunk: int) -> Iterator[Tensor]:
        """`patches` of `chunk` patches at a time, the next chunk read while the current one is computed on."""
        rows, cols = self._host(rows, cols)
        jobs = [lambda s=s: self._to_device(self.reader.patches(rows[s : s + chunk], cols[s : s + chunk], size))
                for s in range(0, rows.numel(), chunk)]
        yield from _one_ahead(jobs, self._pool)

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


# -------------------------------------------------------------------- predictions




@dataclass
class SlidePrediction:
    """One slide's prediction: class probabilities and where the model looked (level-0 pixels)."""

    slide: str
    probs: np.ndarray  # [C]
    mode: str
    tiles: np.ndarray  # [N] row-major tile index of each sub-tile (Zoom-In); empty for ATS
    tile_size: tuple[int, int]
    centers: np.ndarray  # [N, 2] sub-tile centres (row, col)
    patch_size: tuple[int, int]
    weights: np.ndarray | None  # [N] aggregation weights (top-k); None when sampled
    alpha: np.ndarray | None  # [n_rows, n_cols] first-stage attention (Zoom-In)
    seconds: float = 0.0
    reads: dict[str, int] = field(default_factory=dict)

    @property
    def predicted(self) -> int:
        """The most probable class."""
        return int(np.argmax(self.probs))

    def tile_boxes(self) -> np.ndarray:
        """(x, y, w, h) level-0 boxes of the distinct sampled tiles: int [U, 4]."""
        th, tw = self.tile_size
        n_cols = self.alpha.shape[1] if self.alpha is not None else 1
        uniq = np.unique(self.tiles)
        return np.array([[(t % n_cols) * tw, (t // n_cols) * th, tw, th] for t in uniq], dtype=np.int64).reshape(-1, 4)

    def subtile_boxes(self) -> np.ndarray:
        """(x, y, w, h) level-0 boxes of the sub-tiles: int [N, 4]."""
        ph, pw = self.patch_size
        c = np.asarray(self.centers, dtype=np.int64).reshape(-1, 2)
        return np.stack([c[:, 1] - pw // 2, c[:, 0] - ph // 2, np.full(len(c), pw), np.full(len(c), ph)], axis=1)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (probabilities, counts, time, reads)."""
        return {"slide": self.slide, "probs": [float(p) for p in self.probs], "predicted": self.predicted,
                "mode": self.mode, "n_subtiles": int(len(self.centers)), "n_tiles": int(len(np.unique(self.tiles))),
                "seconds": self.seconds, "reads": dict(self.reads)}


def _as_stats(stats: Stats | None) -> tuple[Tensor, Tensor]:
    """Mean and std [1, 3, 1, 1] (0 and 1 when None)."""
    mean, std = stats if stats is not None else (torch.zeros(3), torch.ones(3))
    return (torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1).detach().cpu().clone(),
            torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1).detach().cpu().clone())


class _SlideModel(nn.Module):
    """What the slide wrappers share: the training statistics (buffers: they follow `.to(device)`) and opening slides."""

    def __init__(self, stats: Stats | None, strip_pixels: int) -> None:
        super().__init__()
        mean, std = _as_stats(stats)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.strip_pixels = int(strip_pixels)

    @property
    def stats(self) -> Stats:
        """(mean, std) on the host, for readers."""
        return self.mean.cpu(), self.std.cpu()

    def open(self, slide: Any, **kwargs: Any) -> SlideReader:
        """A reader for `slide` with this model's statistics."""
        return SlideReader(slide, self.stats, strip_pixels=self.strip_pixels, **kwargs)


class SlideZoomIn(_SlideModel):
    """A `ZoomInNet` on slides: strip-wise alpha over tissue tiles, beta of the drawn tiles, sub-tiles at level 0.

    The wrapped `net` keeps its meaning on tensors (training on in-memory images); here the same
    forward reads a `SlideSource` of the slide, on the device the model is on. With gradients
    (training) alpha comes from the reader's cached whole V(x, s1); without (inference) from strips of
    `strip_pixels` view pixels, halo included, so the first stage holds O(strip) whatever the slide's
    size. `tissue_only` restricts alpha (and its complement) to the tiles with tissue. "topk" is the
    exact top N of the joint alpha_c beta^c_c' (`ZoomInNet`): on an untrained, flat alpha it may open
    many tiles.
    """

    train_mode = "sample"
    eval_mode = "topk"
    supports_contrastive = True

    def __init__(
        self,
        net: ZoomInNet,
        stats: Stats | None = None,
        *,
        strip_pixels: int = 2**16,
        tissue_side: int = 512,
        tissue_only: bool = True,
    ) -> None:
        super().__init__(stats, strip_pixels)
        if not isinstance(net, ZoomInNet):
            raise ValueError(f"SlideZoomIn wraps a ZoomInNet, got {type(net).__name__}")
        self.net = net
        self.tissue_side = int(tissue_side)
        self.tissue_only = tissue_only

    # ---------------------------------------------------------------- reading
    def open(self, slide: Any, **kwargs: Any) -> SlideReader:
        """A reader for `slide` with this model's statistics; SlideError naming the file if it is smaller than a tile."""
        reader = super().open(slide, **kwargs)
        self.check(reader)
        return reader

    def check(self, reader: SlideReader) -> None:
        """SlideError naming the file unless the slide holds at least one tile."""
        H, W = reader.shape
        th, tw = self.net.tile_size
        if H < th or W < tw:
            reader.close()
            raise SlideError(reader.path, f"smaller than one tile: {W}x{H} pixels < {tw}x{th} (level 0)")

    def source(self, reader: SlideReader, strips: bool | None = None) -> SlideSource:
        """The slide as the net's pixel source, on the model's device; strips by default only without gradients."""
        strips = (not torch.is_grad_enabled()) if strips is None else strips
        return SlideSource(reader, module_device(self), strip_pixels=self.strip_pixels if strips else None,
                           tissue_only=self.tissue_only, tissue_side=self.tissue_side)

    def grid(self, reader: SlideReader) -> tuple[int, int]:
        """(n_rows, n_cols) of the tile grid."""
        return tile_grid(reader.shape, self.net.tile_size)

    def allowed(self, reader: SlideReader) -> Tensor:
        """Tiles alpha may select: bool [1, T] on the host (tissue tiles, or all)."""
        if not self.tissue_only:
            n_rows, n_cols = self.grid(reader)
            return torch.ones(1, n_rows * n_cols, dtype=torch.bool)
        return reader.tissue(self.net.tile_size, self.tissue_side).reshape(1, -1)

    # ---------------------------------------------------------------- the net on a slide
    def _on(self, reader: SlideReader, run: Callable[[SlideSource], T], strips: bool | None = None) -> T:
        """`run(source)` with errors that name the slide."""
        src = self.source(reader, strips)
        try:
            return run(src)
        except SlideError:
            raise
        except (OSError, ValueError) as err:  # a read error or a failed check that does not name the file yet
            raise SlideError(reader.path, f"{type(err).__name__}: {err}") from err
        finally:
            src.close()

    def tile_scores(self, reader: SlideReader, strips: bool = True) -> Tensor:
        """a's scores averaged over each tile: [T]; strip by strip, or from the whole (cached) view."""
        return self._on(reader, lambda src: self.net.tile_scores(src)[0], strips)

    def first_stage(self, reader: SlideReader, strips: bool | None = None) -> Tensor:
        """alpha [1, T] over the allowed tiles."""
        return self._on(reader, self.net.first_stage, strips)

    def second_stage(self, reader: SlideReader, tiles: Tensor) -> Tensor:
        """beta [U, K2] of tiles [U]."""
        return self._on(reader, lambda src: self.net.second_stage(src, torch.zeros_like(tiles), tiles))

    def centers(self, reader: SlideReader, tiles: Tensor, subtiles: Tensor) -> tuple[Tensor, Tensor]:
        """Level-0 centres (rows, cols) of sub-tiles of tiles (same shapes)."""
        return self.net.centers(tiles, subtiles, reader.shape)

    def forward(
        self,
        reader: SlideReader,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
        strips: bool | None = None,
    ) -> ModelOutput:
        """Classify one slide (batch of one): two-stage sampling ("sample", eq. 9) or top-k ("topk")."""
        if mode not in ("sample", "topk"):
            raise ValueError(f"on slides the modes are 'sample' and 'topk' (no 'exact' over every sub-tile), got {mode!r}")
        return self._on(reader, lambda src: self.net(src, mode=mode, generator=generator, contrastive=contrastive), strips)

    # ---------------------------------------------------------------- prediction
    def predict_one(self, slide: Any, mode: str = "topk", generator: torch.Generator | None = None) -> SlidePrediction:
        """Probabilities and locations for one slide (a path, Slide or SlideReader); errors name the file."""
        began = time.perf_counter()
        reader, opened = _reader(slide, self.open)
        try:
            with evaluating(self), torch.no_grad():
                out = self(reader, mode=mode, generator=generator)
            n_rows, n_cols = self.grid(reader)
            return SlidePrediction(
                slide=_where(slide), probs=torch.softmax(out.logits, dim=1)[0].cpu().numpy(), mode=mode,
                tiles=out.tiles[0].cpu().numpy(), tile_size=self.net.tile_size, centers=out.centers[0].cpu().numpy(),
                patch_size=self.net.patch_size, weights=None if out.weights is None else out.weights[0].cpu().numpy(),
                alpha=out.alpha[0].reshape(n_rows, n_cols).cpu().numpy(), seconds=time.perf_counter() - began,
                reads=dict(reader.reads),
            )
        finally:
            if opened:
                reader.close()

    def _prepared(self, slides: Sequence[Any]) -> Iterator[tuple[Any, SlideReader | Exception]]:
        """(slide, an open reader with its tissue found, or the error) for each slide, the next one prepared in the background."""

        def prepare(slide: Any) -> SlideReader | Exception:
            try:
                reader = slide if isinstance(slide, SlideReader) else self.open(slide)
                if self.tissue_only:
                    reader.tissue(self.net.tile_size, self.tissue_side)
                return reader
            except (SlideError, OSError, ValueError) as err:
                return err

        with ThreadPoolExecutor(1, thread_name_prefix="slide-open") as pool:
            jobs = [lambda s=s: (s, prepare(s)) for s in slides]
            yield from _one_ahead(jobs, pool)

    def predict_all(
        self, slides: Iterable[Any], mode: str = "topk", generator: torch.Generator | None = None
    ) -> tuple[list[SlidePrediction], list[str]]:
        """`predict_one` for each slide, reporting bad slides ('<file>: <reason>') and going on with the rest.

        The next slide is opened and its tissue found on a background thread while the current
        one is predicted.
        """
        preds, problems = [], []
        for slide, ready in self._prepared(list(slides)):
            if isinstance(ready, Exception):
                problems.append(str(ready) if _where(slide) in str(ready) else f"{_where(slide)}: {ready}")
                continue
            try:
                pred = self.predict_one(ready, mode, generator)
                pred.slide = _where(slide)
                preds.append(pred)
            except (SlideError, OSError, ValueError) as err:
                problems.append(str(err) if _where(slide) in str(err) else f"{_where(slide)}: {err}")
            finally:
                if not isinstance(slide, SlideReader):
                    ready.close()
        return preds, problems

    def predict(self, slides: Iterable[Any], mode: str = "topk", generator: torch.Generator | None = None) -> list[SlidePrediction]:
        """`predict_one` for each slide (the next one prepared in the background); the first bad slide raises (SlideError naming it)."""
        preds = []
        for slide, ready in self._prepared(list(slides)):
            if isinstance(ready, Exception):
                raise ready if isinstance(ready, SlideError) else SlideError(_where(slide), str(ready))
            try:
                pred = self.predict_one(ready, mode, generator)
            finally:
                if not isinstance(slide, SlideReader):
                    ready.close()
            pred.slide = _where(slide)
            preds.append(pred)
        return preds


class SlideATS(_SlideModel):
    """One-stage ATS on a slide (ATS sec. 3.3): attention over the whole V(x, s), top-N patches at level 0.

    Its view, and a's activations over it, grow with the slide: this is the baseline of the
    memory-against-size comparison, with s the scale at which Zoom-In's second stage picks sub-tiles.
    """

    def __init__(self, net: ATSNet, stats: Stats | None = None, *, strip_pixels: int = 2**16) -> None:
        super().__init__(stats, strip_pixels)
        self.net = net

    def forward(self, reader: SlideReader) -> ModelOutput:
        """Deterministic top-N prediction of one slide."""
        src = SlideSource(reader, module_device(self), tissue_only=False)
        try:
            return self.net(src, mode="topk")
        except (OSError, ValueError) as err:
            raise SlideError(reader.path, f"{type(err).__name__}: {err}") from err
        finally:
            src.close()

    def predict_one(self, slide: Any) -> SlidePrediction:
        """Probabilities and patch centres for one slide."""
        began = time.perf_counter()
        reader, opened = _reader(slide, self.open)
        try:
            with evaluating(self), torch.no_grad():
                out = self(reader)
        finally:
            if opened:
                reader.close()
        return SlidePrediction(
            slide=_where(slide), probs=torch.softmax(out.logits, dim=1)[0].cpu().numpy(), mode="topk",
            tiles=np.zeros(0, dtype=np.int64), tile_size=(0, 0), centers=out.centers[0].cpu().numpy(),
            patch_size=self.net.patch_size, weights=out.weights[0].cpu().numpy(), alpha=None,
            seconds=time.perf_counter() - began, reads=dict(reader.reads),
        )


# -------------------------------------------------------------------- measuring


def host_peak_memory(fn: Callable[[], Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """Peak host memory of `fn()`: torch tensor allocations and numpy/Python allocations, measured separately (MiB).

    `fn` runs three times: a timed warm-up (`seconds`, wall clock), then under the profiler for
    tensors (`profiling.peak_memory`: allocation events replayed), then under tracemalloc for
    numpy (numpy reports its buffers to tracemalloc: slide reads, thumbnails, masks). Neither sees
    the C libraries' own buffers (OpenSlide's and PIL's decode buffers). `sum_mb` bounds the
    combined peak from above (the two peaks need not coincide). With a CUDA `device` (the model's),
    a fourth run gives the device's peak (`device_mb`, `torch.cuda.max_memory_allocated`).
    """
    began = time.perf_counter()
    fn()
    seconds = time.perf_counter() - began
    extra: dict[str, Any] = {}
    if device is not None and torch.device(device).type == "cuda":
        extra["device_mb"] = peak_memory(fn, device, warmup=False).peak_mb
    torch_peak = peak_memory(fn, "cpu", warmup=False)
    tracemalloc.start()
    try:
        fn()
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"torch_mb": torch_peak.peak_mb, "numpy_mb": numpy_peak / MB, "sum_mb": torch_peak.peak_mb + numpy_peak / MB,
            "seconds": seconds, "method": f"{torch_peak.method} + tracemalloc", **extra}


# -------------------------------------------------------------------- annotations (appendix L, Fig. 7)


def roi_tiles(model: SlideZoomIn, reader: SlideReader) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(metastasis-to-tile ratio float [n_rows, n_cols], {tile: ROI mask bool [u, v] at s2}) of an annotated slide.

    Only tiles that meet an ROI bounding box are rasterised (at the s2 grid: pixel centres);
    a ratio is the ROI fraction of the tile's part inside the slide. No ROI: all zeros.
    """
    key = ("roi_tiles", model.net.tile_size, model.net.scale2)
    if key in reader.cache:
        return reader.cache[key]
    n_rows, n_cols = model.grid(reader)
    th, tw = model.net.tile_size
    u, v = model.net.subview_size
    H, W = reader.shape
    ratios, masks = np.zeros((n_rows, n_cols)), {}
    boxes = reader.roi.boxes() if reader.roi is not None else np.zeros((0, 4))
    touched = set()
    for x0, y0, x1, y1 in boxes:
        for r in range(max(0, int(y0 // th)), min(n_rows, int(y1 // th) + 1)):
            for c in range(max(0, int(x0 // tw)), min(n_cols, int(x1 // tw) + 1)):
                touched.add((r, c))
    for r, c in sorted(touched):
        mask = np.asarray(reader.roi.window((c * tw, r * th), (tw, th), (v, u)), dtype=bool)  # [u, v]
        inside = (((r * th + (np.arange(u) + 0.5) * th / u) < H)[:, None]
                  & ((c * tw + (np.arange(v) + 0.5) * tw / v) < W)[None, :])
        ratios[r, c] = mask[inside].mean() if inside.any() else 0.0
        if mask.any():
            masks[r * n_cols + c] = mask
    reader.cache[key] = (ratios, masks)
    return ratios, masks


def pixel_mse(model: SlideZoomIn, reader: SlideReader, out: ModelOutput) -> Tensor:
    """Eq. 13 of appendix L: ||M(V(x, s1), c) - alpha_c||^2 summed over tiles, plus the same for each computed beta^c (mean over tiles).

    M is 1 on tiles (and s2 view locations) holding any annotated pixel; a slide without an ROI
    (a normal slide) has M = 0 everywhere.
    """
    ratios, masks = roi_tiles(model, reader)
    m_alpha = torch.from_numpy(ratios.reshape(1, -1) > 0).float().to(out.alpha.device)  # [1, T]
    loss = attention_mse(out.alpha, m_alpha)
    if out.betas is not None and out.betas.numel():
        u, v = model.net.subview_size
        zero = np.zeros((u, v), dtype=bool)
        m_beta = torch.from_numpy(np.stack([masks.get(int(t), zero).reshape(-1) for t in out.beta_tile.tolist()]))
        m_beta = m_beta.float().to(out.betas.device)
        loss = loss + attention_mse(out.betas, m_beta)
    return loss


def slide_loss(
    *,
    warmup_epochs: int = 10,
    lam: float = 1e-5,
    class_weights: Sequence[float] | None = None,
    contrastive: bool = True,
    reference_class: int = 0,
    pixel_weight: float = 0.0,
    generator: torch.Generator | None = None,
) -> Callable[[SlideZoomIn, tuple[Sequence[SlideReader], Tensor], int], tuple[Tensor, dict[str, float]]]:
    """loss_fn(model, (readers, labels), epoch) for `training.fit`: eq. 12 per slide, averaged over the batch.

    The contrastive loss of sec. 2.2 joins from `warmup_epochs` on (for slides not of the reference
    class); `pixel_weight` > 0 adds the eq. 13 MSE of `pixel_mse` (appendix L).
    """

    def loss_fn(model: SlideZoomIn, batch: tuple[Sequence[SlideReader], Tensor], epoch: int) -> tuple[Tensor, dict[str, float]]:
        readers, labels = batch
        total, sums = None, {}
        for reader, y in zip(readers, labels):
            y1 = y.view(1)
            out = model(reader, mode="sample", generator=generator)
            loss, parts = zoomin_objective(out.logits, y1, out.alpha, out.betas, lam=lam, class_weights=class_weights,
                                           reference_class=reference_class)
            con = loss.new_zeros(())
            if contrastive and epoch >= warmup_epochs and int(y) != reference_class:
                low = model(reader, mode="sample", generator=generator, contrastive=True)
                con = contrastive_loss(low.logits, y1, reference_class, reduction="sum")
            pix = pixel_weight * pixel_mse(model, reader, out) if pixel_weight > 0 else loss.new_zeros(())
            parts.update(contrastive=float(con.detach()), pixel_mse=float(pix.detach()))
            loss = loss + con + pix
            total = loss if total is None else total + loss
            for k, val in parts.items():
                sums[k] = sums.get(k, 0.0) + val / len(readers)
        assert total is not None
        sums["total"] = float(total.detach()) / len(readers)
        return total / len(readers), sums

    return loss_fn


def fit_slides(
    model: SlideZoomIn,
    readers: Sequence[SlideReader],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    warmup_epochs: int = 10,
    lam: float = 1e-5,
    pixel_weight: float = 0.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    eval_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Adam on `slide_loss` over the readers (each with its `label`; mini-batches reshuffled per epoch); the history of `training.fit`.

    The model trains on `device` (None: a GPU when there is one); the slides are read on the host.
    """
    from .experiments import lazy_batches

    if any(r.label is None for r in readers):
        raise ValueError("every training reader needs a label (SlideReader(..., label=0 or 1))")
    batches = lazy_batches(lambda idx: [readers[i] for i in idx], [int(r.label) for r in readers], batch_size, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = slide_loss(warmup_epochs=warmup_epochs, lam=lam, pixel_weight=pixel_weight, generator=generator)
    return fit(model, batches, loss_fn, optimizer, epochs, eval_fn=eval_fn, checkpoint_path=checkpoint_path,
               resume=resume, progress=progress, generators=[generator] if generator is not None else [],
               device=device)


def _tile_examples(model: SlideZoomIn, readers: Sequence[SlideReader], generator: torch.Generator, negatives: int):
    """(reader, tile, label) for every tile holding ROI and `negatives` x as many random tissue tiles without."""
    pos, neg = [], []
    for reader in readers:
        ratios, _ = roi_tiles(model, reader)
        tissue = reader.tissue(model.net.tile_size, model.tissue_side).numpy().reshape(-1)
        flat = ratios.reshape(-1)
        pos += [(reader, t, 1) for t in np.flatnonzero(flat > 0)]
        neg += [(reader, t, 0) for t in np.flatnonzero(tissue & (flat == 0))]
    order = torch.randperm(len(neg), generator=generator).tolist()
    return pos + [neg[i] for i in order[: max(1, negatives * len(pos))]]


def _subtile_examples(model: SlideZoomIn, examples: list, per_tile: int, generator: torch.Generator):
    """(reader, row, col, label) sub-tile centres: inside the ROI for positive tiles, anywhere for negative ones."""
    u, v = model.net.subview_size
    out = []
    for reader, tile, label in examples:
        _, masks = roi_tiles(model, reader)
        where = np.flatnonzero(masks[tile].reshape(-1)) if label and tile in masks else np.arange(u * v)
        pick = torch.randint(len(where), (per_tile,), generator=generator).numpy()
        sub = torch.from_numpy(where[pick])
        rows, cols = model.centers(reader, torch.full_like(sub, int(tile)), sub)
        for r, c in zip(rows.tolist(), cols.tolist()):
            ph, pw = model.net.patch_size
            hit = label and reader.roi is not None and bool(reader.roi.window((c - pw // 2, r - ph // 2), (pw, ph), (pw, ph)).any())
            out.append((reader, r, c, int(hit)))
    return out


def window_examples(
    views: Tensor, masks: Sequence[np.ndarray | None], labels: Sequence[int], window: int, per_view: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Square windows of side `window` cut from tile views [n, C, h, w] and their labels (any ROI inside).

    A positive view's windows are centred on random ROI positions of its mask (bool [u, v] on the s2
    grid, mapped onto the view's own grid), a negative view's anywhere; windows are clamped inside the
    view. Returns (windows [n * per_view, C, k, k], labels [n * per_view]) with k = min(window, h, w).
    """
    _, _, h, w = views.shape
    k = min(int(window), h, w)
    xs, ys = [], []
    for view, mask, label in zip(views, masks, labels):
        u, v = mask.shape if mask is not None else (h, w)
        where = np.argwhere(mask) if label and mask is not None else np.zeros((0, 2), dtype=int)  # [m, 2] (row, col) on [u, v]
        for _ in range(per_view):
            if len(where):
                r, c = where[int(torch.randint(len(where), (1,), generator=generator))]
                cy, cx = (r + 0.5) * h / u, (c + 0.5) * w / v
            else:
                cy, cx = torch.randint(h, (1,), generator=generator).item(), torch.randint(w, (1,), generator=generator).item()
            r0 = min(max(int(cy) - k // 2, 0), h - k)
            c0 = min(max(int(cx) - k // 2, 0), w - k)
            hit = mask is not None and bool(mask[r0 * u // h : -(-(r0 + k) * u // h), c0 * v // w : -(-(c0 + k) * v // w)].any())
            xs.append(view[:, r0 : r0 + k, c0 : c0 + k])  # [C, k, k]
            ys.append(int(hit))
    return torch.stack(xs), torch.tensor(ys)


def _fit_classifier(net: Callable[[Tensor], Tensor], params: list, x: Tensor, y: Tensor, steps: int, lr: float,
                    generator: torch.Generator, batch_size: int) -> dict[str, Any]:
    """`steps` Adam steps on BCE of net(x) [M] against y [M] (mini-batches drawn with replacement); losses and training accuracy."""
    opt = torch.optim.Adam(params, lr=lr)
    device = params[0].device if params else torch.device("cpu")
    losses = []
    for _ in range(steps):
        idx = torch.randint(len(y), (min(batch_size, len(y)),), generator=generator)
        loss = F.binary_cross_entropy_with_logits(net(x[idx].to(device)), y[idx].float().to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    with torch.no_grad():
        scores = torch.cat([net(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(y), batch_size)])
        acc = float(((scores > 0) == (y > 0)).float().mean())
    tail = losses[-max(1, steps // 10):]
    return {"first_loss": losses[0] if losses else math.nan, "last_loss": float(np.mean(tail)) if losses else math.nan,
            "train_accuracy": acc, "steps": steps}


def pretrain_tile_classifiers(
    model: SlideZoomIn,
    readers: Sequence[SlideReader],
    *,
    steps: int | dict[str, int] = 100,
    lr: float = 3e-3,
    negatives: int = 1,
    subtiles_per_tile: int = 4,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    windows: dict[str, int] | None = None,
    windows_per_tile: int = 4,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Appendix L's pre-training: a, b and f as tile classifiers on annotated slides; returns example counts and fits.

    a sees each example tile's view at s1 and b at s2, f a sub-tile at level 0; a and b's score maps
    are averaged (global average pooling) into one logit, f gets a linear head discarded afterwards.
    Labels: 1 when any annotated pixel lies in the input. Tiles with ROI and `negatives` x as many
    tissue tiles without are used, `subtiles_per_tile` sub-tiles each. `steps` Adam steps per
    network (an int, or {"a": .., "b": .., "f": ..}): a's inputs are small, f's the costliest.
    `windows` ({"a": k1, "b": k2}) trains a or b on k x k windows of the tile views instead
    (`window_examples`, `windows_per_tile` a tile): appendix L's "patches consistent in size and scale
    with the view", small enough that a metastasis fills a fair part of a positive one, where
    average pooling over a whole tile view dilutes a small one below what a classifier can learn.
    The networks train on `device` (None: a GPU when there is one; the model is moved there);
    examples are read and picked on the host.
    """
    steps = steps if isinstance(steps, dict) else {"a": steps, "b": steps, "f": steps}
    # example picking runs on the host: a generator on another device seeds a host one (its initial seed)
    gen = torch.Generator().manual_seed(0 if generator is None else generator.initial_seed())
    if generator is not None and generator.device.type == "cpu":
        gen = generator
    model.to(default_device() if device is None else torch.device(device))
    net = model.net
    examples = _tile_examples(model, readers, gen, negatives)
    if not any(label for _, _, label in examples):
        raise ValueError("no annotated tile among the readers: pre-training needs slides with an ROI")
    windows = windows or {}
    xa, xb, ys, tile_masks = [], [], [], []
    for reader, tile, label in examples:
        tile_masks.append(roi_tiles(model, reader)[1].get(int(tile)) if label else None)
        top, left = tile_top_left(torch.tensor([int(tile)]), reader.shape, net.tile_size)
        xa.append(reader.tile_view(int(top), int(left), net.tile_size, net.scale1))
        xb.append(reader.tile_view(int(top), int(left), net.tile_size, net.scale2))
        ys.append(label)
    y_tile = torch.tensor(ys)
    inputs = {}
    for key, views in (("a", torch.cat(xa)), ("b", torch.cat(xb))):  # [n, 3, h, w] tile views at s1, s2
        inputs[key] = (window_examples(views, tile_masks, ys, windows[key], windows_per_tile, gen) if key in windows
                       else (views, y_tile))
    subs = _subtile_examples(model, examples, subtiles_per_tile, gen)
    xf = torch.cat([r.patches(torch.tensor([row]), torch.tensor([col]), net.patch_size) for r, row, col, _ in subs])
    y_sub = torch.tensor([label for *_, label in subs])
    head = nn.Linear(net.features.out_features, 1).to(module_device(net))
    was_training = model.training
    model.train()
    try:
        fits = {
            "a": _fit_classifier(lambda x: net.attention_a(x).mean(dim=(1, 2, 3)), list(net.attention_a.parameters()),
                                 *inputs["a"], steps.get("a", 0), lr, gen, batch_size),
            "b": _fit_classifier(lambda x: net.attention_b(x).mean(dim=(1, 2, 3)), list(net.attention_b.parameters()),
                                 *inputs["b"], steps.get("b", 0), lr, gen, batch_size),
            "f": _fit_classifier(lambda x: head(net.features(x))[:, 0], list(net.features.parameters()) + list(head.parameters()),
                                 xf, y_sub, steps.get("f", 0), lr, gen, batch_size),
        }
    finally:
        model.train(was_training)
    return {"tiles": len(examples), "positive_tiles": int(y_tile.sum()), "subtiles": len(subs),
            "positive_subtiles": int(y_sub.sum()), "fits": fits,
            "windows": {k: {"side": windows[k], "examples": len(inputs[k][1]), "positive": int(inputs[k][1].sum())}
                        for k in windows}}


# -------------------------------------------------------------------- evaluation


def evaluate_slides(
    model: SlideZoomIn | SlideATS,
    slides: Sequence[Any],
    labels: Sequence[int],
    *,
    mode: str = "topk",
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Any], list[SlidePrediction], list[str]]:
    """(accuracy, AUC, confusion and time per slide; the predictions; the slides that failed, named) over `slides`."""
    preds, problems, kept = [], [], []
    for slide, label in zip(slides, labels):
        try:
            p = model.predict_one(slide, mode, generator) if isinstance(model, SlideZoomIn) else model.predict_one(slide)
        except (SlideError, OSError, ValueError) as err:
            problems.append(str(err) if _where(slide) in str(err) else f"{_where(slide)}: {err}")
            continue
        preds.append(p)
        kept.append(int(label))
    if not preds:
        raise ValueError(f"no slide could be predicted: {problems}")
    y = np.array(kept)
    probs = np.stack([p.probs for p in preds])  # [n, C]
    pred = probs.argmax(axis=1)
    confusion = np.zeros((probs.shape[1], probs.shape[1]), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    auc = binary_auc(probs[:, 1], y) if probs.shape[1] == 2 else math.nan
    seconds = np.array([p.seconds for p in preds])
    metrics = {"n": len(preds), "accuracy": float((pred == y).mean()), "auc": None if math.isnan(auc) else auc,
               "confusion": confusion.tolist(), "seconds_median": float(np.median(seconds)),
               "seconds_mean": float(seconds.mean()), "mode": mode, "failed": len(problems)}
    return metrics, preds, problems


def attention_roi_spearman(
    alphas: Sequence[np.ndarray], ratios: Sequence[np.ndarray], tissue: Sequence[np.ndarray] | None = None
) -> dict[str, Any]:
    """Spearman's rho between alpha_c and the metastasis-to-tile ratio over the (tissue) tiles of annotated slides (Fig. 7)."""
    from scipy.stats import spearmanr

    xs, ys, per_slide = [], [], []
    for k, (a, r) in enumerate(zip(alphas, ratios)):
        keep = np.ones(a.shape, dtype=bool) if tissue is None else np.asarray(tissue[k], dtype=bool)
        xs.append(a[keep].ravel())
        ys.append(r[keep].ravel())
        rho_k = spearmanr(xs[-1], ys[-1]).statistic if np.ptp(ys[-1]) > 0 and np.ptp(xs[-1]) > 0 else math.nan
        per_slide.append(float(rho_k))
    x, y = np.concatenate(xs), np.concatenate(ys)
    res = spearmanr(x, y) if np.ptp(y) > 0 and np.ptp(x) > 0 else None
    return {"rho": math.nan if res is None else float(res.statistic), "p_value": math.nan if res is None else float(res.pvalue),
            "n_tiles": int(x.size), "n_tiles_with_roi": int((y > 0).sum()), "per_slide": per_slide}


# -------------------------------------------------------------------- figures


def show_slide(
    ax: Any,
    thumbnail: np.ndarray,
    dimensions: tuple[int, int],
    *,
    alpha: np.ndarray | None = None,
    tile_size: tuple[int, int] | None = None,
    tissue: np.ndarray | None = None,
    contours: Sequence[np.ndarray] = (),
    tile_boxes: np.ndarray | None = None,
    subtile_boxes: np.ndarray | None = None,
    title: str = "",
    heat: float = 0.5,
) -> None:
    """Zoom-In fig. 1 / 6: a slide's thumbnail, alpha over its tiles, annotation contours, drawn tiles and sub-tiles.

    Level-0 coordinates throughout: `dimensions` = (W, H); alpha [n_rows, n_cols] is min-max
    normalised over the tissue tiles (others transparent; `heat` its opacity); contours are [K, 2] (x, y) polygons
    (cyan), tile boxes (x, y, w, h) yellow, sub-tile boxes lime (with a dot at each centre, as they
    are a few thumbnail pixels wide).
    """
    import matplotlib.pyplot as plt

    W, H = dimensions
    ax.imshow(thumbnail, extent=(0, W, H, 0))
    if alpha is not None and tile_size is not None:
        th, tw = tile_size
        keep = np.ones(alpha.shape, dtype=bool) if tissue is None else np.asarray(tissue, dtype=bool)
        a = np.where(keep, alpha, np.nan)
        lo, hi = np.nanmin(a), np.nanmax(a)
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        ax.imshow(np.ma.masked_invalid(a), cmap="inferno", alpha=heat, interpolation="nearest",
                  extent=(0, alpha.shape[1] * tw, alpha.shape[0] * th, 0))
    for c in contours:
        closed = np.vstack([c, c[:1]])
        ax.plot(closed[:, 0], closed[:, 1], color="cyan", lw=1.0)
    for boxes, colour, lw in ((tile_boxes, "yellow", 1.0), (subtile_boxes, "lime", 0.8)):
        for x, y, w, h in ([] if boxes is None else boxes):
            ax.add_patch(plt.Rectangle((x, y), w, h, fill=False, ec=colour, lw=lw))
    if subtile_boxes is not None and len(subtile_boxes):
        b = np.asarray(subtile_boxes)
        ax.scatter(b[:, 0] + b[:, 2] / 2, b[:, 1] + b[:, 3] / 2, s=4, c="lime", marker="s", linewidths=0)
    ax.set_xlim(0, W)
    ax.set_ylim(H, 0)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
