"""Slides that are never materialised: lazy pyramidal whole-slide images, their views, tissue, and a pyramid writer.

Zoom-In (Kong & Henao) classifies gigapixel slides (Camelyon16: 45,056 x 35,840 to 217,088 x
111,104 pixels, sec. 4) by reading only a low-resolution view V(x, s1) (s1 = 0.03125), the views
V(x, s2, c) of the sampled tiles (s2 = 0.125; 3200 x 3200 level-0 tiles, appendix F) and the
sampled full-resolution sub-tiles; its memory is O(s1^2 HW + N' s1^2 s2^2 HW + N h2 w2) (sec. 2.1,
"Memory requirements") only if the slide itself is never held in memory. This module gives the
one protocol for slide files (ARCHITECTURE.md, the `infra` layer):

- `Slide`: the OpenSlide interface pathology users know: `dimensions` (width, height at level 0),
  `level_count`, `level_dimensions`, `level_downsamples`, `read_region(location, level, size)`
  with `location` = (x, y) in LEVEL-0 pixels and `size` = (w, h) at `level`, returning RGB uint8
  [h, w, 3] composited over white (OpenSlide's transparent background; regions beyond the slide
  are background), plus `view(scale)`: V(x, s) of Zoom-In sec. 2.1 at any scale, of size
  (floor(sH), floor(sW)) as `zoomin_lib.geometry.view_size`, taken from the nearest pyramid level
  at or above that resolution, read in row strips and resized by antialiased bilinear resampling
  (as `zoomin_lib.geometry.view`) without a float copy of that level.
- Backends: `OpenSlideSlide` (openslide-python + openslide-bin: Camelyon16's `.tif`, vendor
  formats), `TiffSlide` (tifffile + zarr: any tiled or stripped (pyramidal) TIFF; only the tiles
  a region touches are decoded), `ArraySlide` (an in-memory [H, W, 3] array, with optional lazy
  2x levels). `open_slide` picks OpenSlide, then tifffile, and names the file in every error;
  when neither reads it, the most specific reason (a truncated or corrupt file) comes first.
- `tissue_mask`: Otsu's threshold on the HSV saturation of a low-resolution view with a small
  morphological clean-up (the usual whole-slide pre-processing: "only a small portion of a slide
  contains biological tissue", Zoom-In sec. 4, Camelyon16); `tile_fraction` / `tissue_tiles`:
  which non-overlapping level-0 tiles (the ceil grid of `zoomin_lib.geometry.tile_grid`,
  appendix F) hold tissue, or how much of an annotation mask (appendix L, Fig. 7).
- `write_pyramid_tiff`: a generic tiled pyramidal TIFF written level by level from a tile
  function or row strips (nothing is downloaded), never holding level 0 whole; each level is the 2x2
  mean of the previous one as written, read back lazily. OpenSlide sees the reduced levels only
  as separate main IFDs flagged NewSubfileType = 1 (reduced image), not as SubIFDs, and writes
  are atomic (`zoomin_lib.infra.io.atomic_write`).
"""

from __future__ import annotations

import logging
import math
import os
import re
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import scipy.ndimage as ndi
import tifffile
import torch
import torch.nn.functional as F
import zarr
from skimage.filters import threshold_otsu

from zoomin_lib.geometry import tile_grid, view_size
from zoomin_lib.infra.io import atomic_write

try:  # openslide-bin ships libopenslide; without it the tifffile backend still reads TIFFs
    import openslide
except (ImportError, OSError):  # pragma: no cover - depends on the environment
    openslide = None

__all__ = [
    "BACKGROUND",
    "SlideError",
    "Slide",
    "ArraySlide",
    "TiffSlide",
    "OpenSlideSlide",
    "open_slide",
    "downsample2",
    "MIN_SATURATION",
    "hsv_saturation",
    "tissue_mask",
    "tile_fraction",
    "tissue_tiles",
    "write_pyramid_tiff",
    "write_periodic_slide",
]

BACKGROUND = 255  # white: OpenSlide's transparent pixels composited over white
_STRIP_BYTES = 1 << 24  # rows read per strip by `view`: about 16 MB of uint8 level pixels


class SlideError(ValueError):
    """A slide that cannot be read; the message names the file: 'cannot read slide <path>: <reason>'."""

    def __init__(self, path: str | os.PathLike | None, reason: str) -> None:
        """Keep the path and the reason apart (open_slide combines the reasons of several backends)."""
        self.path = None if path is None else Path(path)
        self.reason = reason
        super().__init__(f"cannot read slide {self.path if path is not None else '<array>'}: {reason}")


def _pair_ints(value: Any, name: str) -> tuple[int, int]:
    """`value` as a pair of Python ints, or ValueError naming `name`."""
    try:
        a, b = value
        if int(a) != a or int(b) != b:
            raise TypeError
        return int(a), int(b)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of integers, got {value!r}") from None


def _over_white(rgba: np.ndarray, background: int = BACKGROUND) -> np.ndarray:
    """Composite non-premultiplied RGBA uint8 [h, w, 4] over `background`: RGB uint8 [h, w, 3]."""
    rgb = rgba[..., :3].astype(np.uint32)  # [h, w, 3]
    alpha = rgba[..., 3:4].astype(np.uint32)  # [h, w, 1]
    out = (rgb * alpha + background * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)  # [h, w, 3]


def downsample2(image: np.ndarray) -> np.ndarray:
    """2x2 mean (rounded) of uint8 [h, w, C] -> [h // 2, w // 2, C]; an odd last row/column is dropped."""
    h, w = image.shape[0] // 2, image.shape[1] // 2
    b = image[: 2 * h, : 2 * w].astype(np.uint16)  # [2h, 2w, C]
    total = b[0::2, 0::2] + b[1::2, 0::2] + b[0::2, 1::2] + b[1::2, 1::2]  # [h, w, C]
    return ((total + 2) // 4).astype(np.uint8)


def _resize_strips(
    read_rows: Callable[[int, int], np.ndarray], h_in: int, w_in: int, h_out: int, w_out: int
) -> np.ndarray:
    """Antialiased bilinear resize of an image read in row strips: uint8 [h_out, w_out, 3].

    The same separable filter as `F.interpolate(..., antialias=True)` (so as
    `zoomin_lib.geometry.view`): columns strip by strip (rows kept, an exact identity), then rows
    on the [h_in, w_out] result, so the largest float array is [3, h_in, w_out].
    """
    rows = max(1, _STRIP_BYTES // max(1, 3 * w_in))
    wide = torch.empty((1, 3, h_in, w_out), dtype=torch.float32)  # [1, 3, h_in, w_out]
    for y in range(0, h_in, rows):
        n = min(rows, h_in - y)
        strip = torch.from_numpy(np.ascontiguousarray(read_rows(y, n))).permute(2, 0, 1)[None].float()  # [1, 3, n, w_in]
        if w_out != w_in:
            strip = F.interpolate(strip, size=(n, w_out), mode="bilinear", align_corners=False, antialias=True)
        wide[:, :, y : y + n] = strip
    if h_out != h_in:
        wide = F.interpolate(wide, size=(h_out, w_out), mode="bilinear", align_corners=False, antialias=True)
    return wide[0].permute(1, 2, 0).round_().clamp_(0, 255).to(torch.uint8).numpy()  # [h_out, w_out, 3]


class Slide:
    """An image too large to hold: OpenSlide's interface plus `view(scale)`; subclasses implement `_read`."""

    background: int = BACKGROUND
    path: Path | None = None

    def __init__(self, level_dimensions: Iterable[tuple[int, int]]) -> None:
        """Set the (width, height) of each level, level 0 first."""
        self._level_dimensions = tuple((int(w), int(h)) for w, h in level_dimensions)
        if not self._level_dimensions or min(min(d) for d in self._level_dimensions) < 1:
            raise SlideError(self.path, f"empty slide (level sizes {self._level_dimensions})")

    # ---------------------------------------------------------------- geometry
    @property
    def dimensions(self) -> tuple[int, int]:
        """(width, height) of level 0, as OpenSlide."""
        return self.level_dimensions[0]

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of level 0, numpy order."""
        w, h = self.dimensions
        return h, w

    @property
    def level_count(self) -> int:
        """Number of pyramid levels."""
        return len(self.level_dimensions)

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """(width, height) of each level, level 0 first."""
        return self._level_dimensions

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """Downsample of each level relative to level 0: the mean of the width and height ratios (OpenSlide's rule)."""
        w0, h0 = self.dimensions
        return tuple((w0 / w + h0 / h) / 2 for w, h in self.level_dimensions)

    def get_best_level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is at most `downsample` (OpenSlide's rule)."""
        best = 0
        for k, ds in enumerate(self.level_downsamples):
            if ds <= downsample + 1e-9:
                best = k
        return best

    def _check_level(self, level: int) -> int:
        """`level` as an int in [0, level_count), else ValueError."""
        if int(level) != level or not 0 <= level < self.level_count:
            raise ValueError(f"level must be an int in [0, {self.level_count}), got {level!r}")
        return int(level)

    # ---------------------------------------------------------------- reading
    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Pixels [h, w, 3] uint8 of `level` at level-`level` column x, row y, fully inside the level."""
        raise NotImplementedError

    def _region_args(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> tuple[int, int, int, int, int]:
        """(x0, y0, w, h, level) of a read_region call, validated."""
        x0, y0 = _pair_ints(location, "location")
        w, h = _pair_ints(size, "size")
        if w < 0 or h < 0:
            raise ValueError(f"size must be non-negative, got {size!r}")
        return x0, y0, w, h, self._check_level(level)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """RGB uint8 [h, w, 3] of `level` whose top-left is `location` = (x, y) in level-0 pixels; background outside."""
        x0, y0, w, h, level = self._region_args(location, level, size)
        ds = self.level_downsamples[level]
        lx, ly = math.floor(x0 / ds), math.floor(y0 / ds)  # top-left in level pixels
        lw, lh = self.level_dimensions[level]
        out = np.full((h, w, 3), self.background, dtype=np.uint8)  # [h, w, 3]
        ix0, iy0, ix1, iy1 = max(lx, 0), max(ly, 0), min(lx + w, lw), min(ly + h, lh)
        if ix0 < ix1 and iy0 < iy1:
            out[iy0 - ly : iy1 - ly, ix0 - lx : ix1 - lx] = self._read(level, ix0, iy0, ix1 - ix0, iy1 - iy0)
        return out

    def view_level(self, scale: float) -> int:
        """The level `view(scale)` reads: the smallest one at least floor(s W) x floor(s H)."""
        h, w = view_size(self.shape, scale)
        fits = [k for k, (lw, lh) in enumerate(self.level_dimensions) if lw >= w and lh >= h]
        return min(fits, key=lambda k: self.level_dimensions[k][0] * self.level_dimensions[k][1])

    def view(self, scale: float) -> np.ndarray:
        """V(x, s): uint8 [floor(s H), floor(s W), 3], antialiased bilinear from the nearest level at or above s."""
        h, w = view_size(self.shape, scale)
        level = self.view_level(scale)
        lw, lh = self.level_dimensions[level]
        return _resize_strips(lambda y, n: self._read(level, 0, y, lw, n), lh, lw, h, w)

    # ---------------------------------------------------------------- lifetime
    def close(self) -> None:
        """Release the file (no-op for arrays)."""

    def __enter__(self) -> Slide:
        """Context manager: the slide itself."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close on leaving the block."""
        self.close()

    def __repr__(self) -> str:
        """Class, file and level sizes."""
        where = f"{str(self.path)!r}, " if self.path is not None else ""
        return f"{type(self).__name__}({where}level_dimensions={self.level_dimensions})"


class ArraySlide(Slide):
    """An in-memory uint8 [H, W, 3] array as a slide; `levels` > 1 adds 2x2-mean levels, built lazily."""

    def __init__(self, array: np.ndarray, levels: int = 1, background: int = BACKGROUND) -> None:
        """Wrap `array` ([H, W, 3] uint8; [H, W] grey and [H, W, 4] RGBA are converted)."""
        a = np.asarray(array)
        if a.dtype != np.uint8:
            raise ValueError(f"an array slide must be uint8, got {a.dtype}")
        if a.ndim == 2:
            a = np.repeat(a[:, :, None], 3, axis=2)  # [H, W, 3]
        elif a.ndim == 3 and a.shape[2] == 4:
            a = _over_white(a, background)  # [H, W, 3]
        if a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"an array slide must be [H, W, 3], got shape {np.asarray(array).shape}")
        if int(levels) != levels or levels < 1:
            raise ValueError(f"levels must be a positive int, got {levels!r}")
        self.background = background
        dims = [(a.shape[1], a.shape[0])]
        for _ in range(int(levels) - 1):
            dims.append((dims[-1][0] // 2, dims[-1][1] // 2))
        super().__init__(dims)
        self._levels: list[np.ndarray | None] = [a] + [None] * (len(dims) - 1)

    def level_array(self, level: int) -> np.ndarray:
        """The whole level as uint8 [h, w, 3] (built from the level above on first use)."""
        level = self._check_level(level)
        if self._levels[level] is None:
            self._levels[level] = downsample2(self.level_array(level - 1))
        return self._levels[level]

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """A copy of the level's pixels [h, w, 3]."""
        return self.level_array(level)[y : y + h, x : x + w].copy()


class _CaptureWarnings(logging.Handler):
    """Collect tifffile's warnings while a file is parsed (a broken IFD chain is only logged)."""

    def __init__(self) -> None:
        """Start with no messages."""
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        """Keep the message."""
        self.messages.append(record.getMessage())


_FATAL_WORDS = ("invalid page offset", "truncat", "corrupt")  # tifffile warnings that mean a broken file


class TiffSlide(Slide):
    """A (pyramidal) TIFF read through tifffile + zarr: only the tiles or strips a region touches are decoded."""

    def __init__(self, path: str | os.PathLike, background: int = BACKGROUND) -> None:
        """Open `path`; SlideError naming the file if it is not a readable TIFF."""
        self.path = Path(path)
        self.background = background
        if not self.path.is_file():
            raise FileNotFoundError(f"cannot read slide {self.path}: no such file")
        log = logging.getLogger("tifffile")
        capture = _CaptureWarnings()  # tifffile parses pages lazily: capture until the levels are known
        log.addHandler(capture)
        self._stores: list[Any] = []
        self._tif = None
        try:
            try:
                self._tif = tifffile.TiffFile(self.path)
                series = self._tif.series[0] if self._tif.series else None
                levels = list(series.levels) if series is not None else []
            except Exception as err:  # tifffile raises TiffFileError, ValueError, struct.error, ...
                raise SlideError(self.path, f"not a readable TIFF ({type(err).__name__}: {err})") from err
            fatal = [m for m in capture.messages if any(word in m.lower() for word in _FATAL_WORDS)]
            if fatal:
                detail = re.sub(r"^<[^>]*>\s*", "", fatal[0])  # drop tifffile's "<TiffPages @8>" prefix
                raise SlideError(self.path, f"corrupt or truncated TIFF ({detail})")
            if not levels:
                raise SlideError(self.path, "the TIFF holds no image")
            self._check_offsets(levels)
            self._layouts, dims = [], []
            for k, lvl in enumerate(levels):
                layout = self._layout(lvl)
                if dims and (layout[2] > dims[-1][0] or layout[3] > dims[-1][1]):
                    break  # not a reduced copy of the level above
                if lvl.dtype != np.uint8:
                    raise SlideError(self.path, f"level {k} has dtype {lvl.dtype}; only uint8 slides are read")
                self._layouts.append(layout)
                dims.append((layout[2], layout[3]))
                self._stores.append(self._tif.aszarr(series=0, level=k, fillvalue=self.background))
            self._arrays = [zarr.open(store, mode="r") for store in self._stores]
            super().__init__(dims)
        except BaseException:
            self.close()
            raise
        finally:
            log.removeHandler(capture)

    def _check_offsets(self, levels: list[Any]) -> None:
        """SlideError if any tile or strip of any level lies beyond the end of the file (a truncated copy)."""
        size = self.path.stat().st_size
        for lvl in levels:
            for page in lvl.pages:
                if page is None:
                    raise SlideError(self.path, "corrupt TIFF (a page is missing)")
                offsets = np.asarray(page.dataoffsets, dtype=np.int64)
                counts = np.asarray(page.databytecounts, dtype=np.int64)
                ends = np.where(counts > 0, offsets + counts, 0)
                if ends.size and int(ends.max()) > size:
                    raise SlideError(
                        self.path,
                        f"truncated: image data up to byte {int(ends.max())} but the file has {size} bytes",
                    )

    def _layout(self, lvl: Any) -> tuple[str, tuple[int | str, ...], int, int, int]:
        """(kept axes among Y X S, per-axis index template, width, height, samples) of one level."""
        axes, shape = lvl.axes, lvl.shape
        if "Y" not in axes or "X" not in axes:
            raise SlideError(self.path, f"axes {axes!r} have no Y and X")
        template: list[int | str] = []
        for ax, n in zip(axes, shape):
            if ax in "YXS":
                template.append(ax)  # sliced when reading
            elif n == 1:
                template.append(0)
            else:
                raise SlideError(self.path, f"unsupported image layout: axes {axes!r}, shape {shape}")
        samples = shape[axes.index("S")] if "S" in axes else 1
        if samples not in (1, 3, 4):
            raise SlideError(self.path, f"{samples} samples per pixel; expected 1 (grey), 3 (RGB) or 4 (RGBA)")
        kept = "".join(a for a in axes if a in "YXS")
        return kept, tuple(template), shape[axes.index("X")], shape[axes.index("Y")], samples

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """Decode only the tiles under the window; RGB uint8 [h, w, 3]."""
        kept, template, _, _, samples = self._layouts[level]
        window = {"Y": slice(y, y + h), "X": slice(x, x + w), "S": slice(None)}
        index = tuple(window[t] if isinstance(t, str) else t for t in template)
        try:
            block = np.asarray(self._arrays[level][index])  # kept axes, e.g. [h, w, 3] or [3, h, w]
        except Exception as err:
            raise SlideError(
                self.path, f"level {level} region x={x} y={y} w={w} h={h}: {type(err).__name__}: {err}"
            ) from err
        block = np.transpose(block, [kept.index(a) for a in "YXS" if a in kept])  # [h, w(, S)]
        if samples == 1:
            block = block.reshape(h, w, 1).repeat(3, axis=2)  # [h, w, 3]
        elif samples == 4:
            block = _over_white(block, self.background)  # [h, w, 3]
        return np.ascontiguousarray(block)  # [h, w, 3]

    def close(self) -> None:
        """Close the zarr stores and the file."""
        for store in getattr(self, "_stores", []):
            try:
                store.close()
            except Exception:  # pragma: no cover - closing is best effort
                pass
        self._stores = []
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None


class OpenSlideSlide(Slide):
    """A slide read by OpenSlide (Camelyon16's `.tif`, Aperio, Hamamatsu, Philips, ...): RGBA composited over white."""

    def __init__(self, path: str | os.PathLike) -> None:
        """Open `path`; SlideError naming the file if OpenSlide cannot."""
        self.path = Path(path)
        if openslide is None:  # pragma: no cover - depends on the environment
            raise SlideError(self.path, "openslide is not installed")
        if not self.path.is_file():
            raise FileNotFoundError(f"cannot read slide {self.path}: no such file")
        try:
            self._osr = openslide.OpenSlide(str(self.path))
        except openslide.OpenSlideUnsupportedFormatError as err:
            raise SlideError(self.path, "not a format OpenSlide reads") from err
        except (openslide.OpenSlideError, OSError) as err:
            raise SlideError(self.path, f"corrupt or truncated ({err})") from err
        super().__init__(self._osr.level_dimensions)

    @property
    def level_downsamples(self) -> tuple[float, ...]:
        """OpenSlide's own downsamples (vendor formats may state them)."""
        return tuple(self._osr.level_downsamples)

    @property
    def properties(self) -> dict[str, str]:
        """OpenSlide's properties (vendor, `openslide.mpp-x`, ...)."""
        return dict(self._osr.properties)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """OpenSlide's read_region, RGBA composited over white: RGB uint8 [h, w, 3]."""
        x0, y0, w, h, level = self._region_args(location, level, size)
        if w == 0 or h == 0:
            return np.full((h, w, 3), self.background, dtype=np.uint8)
        try:
            rgba = np.asarray(self._osr.read_region((x0, y0), level, (w, h)))  # [h, w, 4]
        except openslide.OpenSlideError as err:
            raise SlideError(self.path, f"level {level} region at {location} size {size}: {err}") from err
        return _over_white(rgba, self.background)  # [h, w, 3]

    def _read(self, level: int, x: int, y: int, w: int, h: int) -> np.ndarray:
        """A window of `level` in level pixels, through read_region."""
        ds = self.level_downsamples[level]
        return self.read_region((round(x * ds), round(y * ds)), level, (w, h))

    def close(self) -> None:
        """Close the OpenSlide handle."""
        osr = getattr(self, "_osr", None)
        if osr is not None:
            osr.close()
            self._osr = None


def open_slide(path_or_array: str | os.PathLike | np.ndarray | Slide, backend: str | None = None) -> Slide:
    """A lazy slide: an array -> ArraySlide; a file -> OpenSlide if it can, else tifffile; errors name the file.

    A generic TIFF in which OpenSlide finds one level but tifffile finds more (levels stored as
    SubIFDs, or main IFDs without the reduced-image flag) is read by tifffile.
    """
    if isinstance(path_or_array, Slide):
        return path_or_array
    if isinstance(path_or_array, np.ndarray):
        return ArraySlide(path_or_array)
    path = Path(path_or_array)
    if backend not in (None, "openslide", "tifffile"):
        raise ValueError(f"backend must be None, 'openslide' or 'tifffile', got {backend!r}")
    if not path.exists():
        raise FileNotFoundError(f"cannot read slide {path}: no such file")
    if not path.is_file():
        raise SlideError(path, "not a file")
    if backend == "openslide":
        return OpenSlideSlide(path)
    if backend == "tifffile":
        return TiffSlide(path)
    reasons = []
    if openslide is not None:
        try:
            slide = OpenSlideSlide(path)
        except SlideError as err:
            reasons.append(f"OpenSlide: {err.reason}")
        else:
            if slide.level_count > 1 or slide.properties.get("openslide.vendor") != "generic-tiff":
                return slide
            try:  # a generic TIFF whose levels are SubIFDs or unflagged pages: OpenSlide sees level 0 only
                other = TiffSlide(path)
            except Exception:
                return slide
            if other.level_count > 1:
                slide.close()
                return other
            other.close()
            return slide
    try:
        return TiffSlide(path)
    except SlideError as err:
        reasons.append(f"tifffile: {err.reason}")
    raise SlideError(path, "; ".join(sorted(reasons, key=_specificity)))


_SPECIFIC_WORDS = ("truncat", "corrupt", "offset", "page is missing", "beyond the end")
_GENERIC_REASONS = ("not a format OpenSlide reads", "not a readable TIFF")


def _specificity(reason: str) -> int:
    """Sort key of a backend's reason: 0 names a damaged file (truncated, corrupt), 2 only that the format is not read, 1 anything else.

    A truncated TIFF makes OpenSlide say only that it does not read the format, and tifffile
    say where the file breaks: the latter goes first.
    """
    text = reason.lower()
    if any(word in text for word in _SPECIFIC_WORDS):
        return 0
    return 2 if any(generic.lower() in text for generic in _GENERIC_REASONS) else 1


# -------------------------------------------------------------------- tissue


MIN_SATURATION = 0.05  # tissue_mask's floor: empty glass lies below it, stained tissue above


def hsv_saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation float32 [h, w] in [0, 1] of an RGB view [h, w, 3]: (max - min) / max of R, G, B; 0 if black."""
    hi = rgb.max(axis=2).astype(np.float32)  # [h, w]
    lo = rgb.min(axis=2).astype(np.float32)  # [h, w]
    return np.where(hi > 0, (hi - lo) / np.maximum(hi, 1), 0).astype(np.float32)  # [h, w]


def tissue_mask(
    slide_or_view: Slide | np.ndarray,
    scale: float | None = None,
    *,
    min_saturation: float = MIN_SATURATION,
    radius: int = 2,
    min_size: int = 16,
) -> np.ndarray:
    """Tissue bool [h, w] of a view: HSV saturation > max(Otsu, min_saturation), closed, opened, specks removed.

    `slide_or_view` is a Slide (its `view(scale)` is used) or an RGB uint8 [h, w, 3] view (resized
    by `scale` first if given). Saturation is (max - min) / max over R, G, B (skimage's HSV S,
    computed in float32). White glass and grey/black areas have low saturation; stained tissue
    high. `min_saturation` keeps an empty (all-glass) view empty; the closing and opening use a
    disk of `radius` pixels; connected parts under `min_size` pixels are dropped.
    """
    if isinstance(slide_or_view, Slide):
        if scale is None:
            raise ValueError("tissue_mask of a slide needs the scale of its view")
        rgb = slide_or_view.view(scale)  # [h, w, 3]
    else:
        rgb = np.asarray(slide_or_view)
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"a view must be uint8 [h, w, 3], got {rgb.dtype} {rgb.shape}")
        if scale is not None:
            rgb = ArraySlide(rgb).view(scale)  # [h, w, 3]
    sat = hsv_saturation(rgb)  # [h, w] in [0, 1]
    threshold = max(float(threshold_otsu(sat)) if sat.min() < sat.max() else 1.0, min_saturation)
    mask = sat > threshold  # [h, w]
    if radius > 0:
        disk = np.hypot(*np.mgrid[-radius : radius + 1, -radius : radius + 1]) <= radius  # [2r+1, 2r+1]
        pad = 3 * radius + 1  # beyond the reach of the erosions' zero border: edge tissue is kept
        padded = np.pad(mask, pad, mode="edge")
        padded = ndi.binary_opening(ndi.binary_closing(padded, structure=disk), structure=disk)
        mask = padded[pad:-pad, pad:-pad]
    if min_size > 1 and mask.any():
        labels, n = ndi.label(mask)
        sizes = np.bincount(labels.ravel(), minlength=n + 1)  # [n + 1]
        keep = sizes >= min_size
        keep[0] = False
        mask = keep[labels]
    return mask


def tile_fraction(
    mask: np.ndarray, tile_size: int | tuple[int, int], slide_dimensions: tuple[int, int]
) -> np.ndarray:
    """Fraction of True mask pixels over each non-overlapping level-0 tile's footprint: float64 [n_rows, n_cols].

    `mask` [h, w] covers the whole slide of `slide_dimensions` = (W, H) (OpenSlide order) at any
    scale; `tile_size` is in level-0 pixels (an int or (tile_h, tile_w)); the grid is the ceil grid
    of `zoomin_lib.geometry.tile_grid`. A tile's footprint is every mask pixel that overlaps it
    (mask pixel i covers level-0 rows [i H / h, (i + 1) H / h)), so no tile has an empty footprint.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"mask must be 2-d [h, w], got shape {mask.shape}")
    W, H = _pair_ints(slide_dimensions, "slide_dimensions")
    th, tw = (tile_size, tile_size) if isinstance(tile_size, (int, np.integer)) else _pair_ints(tile_size, "tile_size")
    n_rows, n_cols = tile_grid((H, W), (int(th), int(tw)))
    h, w = mask.shape

    def bounds(n_tiles: int, t: int, full: int, small: int) -> tuple[np.ndarray, np.ndarray]:
        """First and one-past-last mask index overlapping each tile along one axis."""
        a = np.arange(n_tiles, dtype=np.int64) * t  # [n] level-0 start
        b = np.minimum(a + t, full)  # [n] level-0 end
        return a * small // full, -(-b * small // full)

    r0, r1 = bounds(n_rows, th, H, h)  # [n_rows]
    c0, c1 = bounds(n_cols, tw, W, w)  # [n_cols]
    integral = np.zeros((h + 1, w + 1), dtype=np.int64)  # [h + 1, w + 1]
    integral[1:, 1:] = mask.cumsum(0).cumsum(1)
    count = (
        integral[r1][:, c1] - integral[r0][:, c1] - integral[r1][:, c0] + integral[r0][:, c0]
    )  # [n_rows, n_cols]
    area = (r1 - r0)[:, None] * (c1 - c0)[None, :]  # [n_rows, n_cols]
    return count / area


def tissue_tiles(
    mask: np.ndarray,
    tile_size_level0: int | tuple[int, int],
    slide_dimensions: tuple[int, int],
    min_fraction: float = 0.0,
) -> np.ndarray:
    """Which non-overlapping level-0 tiles hold tissue: bool [n_rows, n_cols] (any mask pixel by default)."""
    return tile_fraction(mask, tile_size_level0, slide_dimensions) > min_fraction


# -------------------------------------------------------------------- writing


def _level_sizes(H: int, W: int, tile: int, levels: int | None) -> list[tuple[int, int]]:
    """(height, width) of each level: halved (floor) until it fits one tile, or exactly `levels` of them."""
    sizes = [(H, W)]
    while (levels is None and max(sizes[-1]) > tile) or (levels is not None and len(sizes) < levels):
        h, w = sizes[-1][0] // 2, sizes[-1][1] // 2
        if min(h, w) < 1:
            if levels is None:
                break
            raise ValueError(f"an image of {H}x{W} has fewer than {levels} levels of 2x downsampling")
        sizes.append((h, w))
    return sizes


def _check_block(block: Any, h: int, w: int, where: str) -> np.ndarray:
    """`block` as uint8 [h, w, 3], or ValueError saying where."""
    a = np.asarray(block)
    if a.shape != (h, w, 3) or a.dtype != np.uint8:
        raise ValueError(f"{where}: expected uint8 {(h, w, 3)}, got {a.dtype} {a.shape}")
    return a


def _tiles_from_function(
    tile_fn: Callable[[int, int, int, int], np.ndarray], H: int, W: int, t: int
) -> Iterator[np.ndarray]:
    """Row-major tiles [<=t, <=t, 3] of level 0 from `tile_fn(y, x, h, w)`."""
    for y in range(0, H, t):
        for x in range(0, W, t):
            h, w = min(t, H - y), min(t, W - x)
            yield _check_block(tile_fn(y, x, h, w), h, w, f"tile(y={y}, x={x}, h={h}, w={w})")


def _tiles_from_strips(strips: Iterable[np.ndarray], H: int, W: int, t: int) -> Iterator[np.ndarray]:
    """Row-major tiles of level 0 from row strips [rows_i, W, 3] of any heights summing to H."""
    pending: list[np.ndarray] = []
    have = done = 0

    def emit(block: np.ndarray) -> Iterator[np.ndarray]:
        """The tiles of one tile row [<=t, W, 3]."""
        for x in range(0, W, t):
            yield block[:, x : x + t]

    for i, strip in enumerate(strips):
        s = np.asarray(strip)
        if s.ndim != 3 or s.shape[1:] != (W, 3) or s.dtype != np.uint8:
            raise ValueError(f"strip {i}: expected uint8 [rows, {W}, 3], got {s.dtype} {s.shape}")
        if done + have + len(s) > H:
            raise ValueError(f"strip {i}: the strips hold more than the {H} rows of the image")
        pending.append(s)
        have += len(s)
        while have >= t:
            block = np.concatenate(pending) if len(pending) > 1 else pending[0]  # [have, W, 3]
            yield from emit(block[:t])
            pending, have, done = ([block[t:]] if have > t else []), have - t, done + t
    if done + have != H:
        raise ValueError(f"the strips hold {done + have} rows, expected {H}")
    if have:
        yield from emit(np.concatenate(pending))


def _fill(block: np.ndarray) -> tuple[int, ...] | None:
    """The colour of a tile whose pixels all share one, else None (three probes first, so tissue exits early)."""
    first = block[0, 0]
    h, w = block.shape[:2]
    if not (np.array_equal(block[-1, -1], first) and np.array_equal(block[h // 2, w // 2], first)):
        return None
    return tuple(int(v) for v in first) if bool((block == first).all()) else None


def _noting_fills(tiles: Iterable[np.ndarray], fills: list[tuple[int, ...] | None]) -> Iterator[np.ndarray]:
    """Pass the tiles through, appending each one's `_fill` to `fills` (row-major).

    A tile that is the very read-only array object of the one before (a writer's shared glass tile)
    reuses its fill; a writable one is checked each time, as a reused buffer may have changed.
    """
    last: tuple[np.ndarray | None, tuple[int, ...] | None] = (None, None)
    for block in tiles:
        if block is not last[0] or block.flags.writeable:
            last = (block, _fill(block))
        fills.append(last[1])
        yield block


def _half_tiles(
    src: Any, h: int, w: int, t: int, below: list[tuple[int, ...] | None], fills: list[tuple[int, ...] | None]
) -> Iterator[np.ndarray]:
    """Row-major tiles of the level below `src` ([2h.., 2w.., 3], read lazily): 2x2 means.

    `below` holds the fill colour (or None) of each tile of `src`, row-major; a tile whose source
    tiles all share one colour is that colour (its 2x2 mean) and is neither read nor averaged:
    a slide's glass costs nothing past level 0. Each tile's own fill is appended to `fills`.
    """
    cols_below = -(-src.shape[1] // t)  # tiles per row of the level below
    constant: dict[tuple[int, int, tuple[int, ...]], np.ndarray] = {}
    for y in range(0, h, t):
        for x in range(0, w, t):
            th, tw = min(t, h - y), min(t, w - x)
            rows = range(2 * y // t, (2 * (y + th) - 1) // t + 1)  # the tiles of src under this one
            cols = range(2 * x // t, (2 * (x + tw) - 1) // t + 1)
            under = {below[r * cols_below + c] for r in rows for c in cols}
            colour = under.pop() if len(under) == 1 else None
            if colour is not None:
                key = (th, tw, colour)
                if key not in constant:
                    constant[key] = np.full((th, tw, 3), colour, np.uint8)
                fills.append(colour)
                yield constant[key]  # [th, tw, 3], shared read-only
            else:
                block = downsample2(np.asarray(src[2 * y : 2 * (y + th), 2 * x : 2 * (x + tw)]))  # [th, tw, 3]
                fills.append(_fill(block))
                yield block


def write_pyramid_tiff(
    path: str | os.PathLike,
    level0: np.ndarray | Callable[[int, int, int, int], np.ndarray] | Iterable[np.ndarray],
    shape: tuple[int, int] | None = None,
    *,
    tile: int = 256,
    levels: int | None = None,
    compression: str = "zlib",
    quality: int = 90,
    mpp: float | None = None,
    bigtiff: bool | None = None,
) -> Path:
    """Write a tiled pyramidal TIFF level by level, atomically; OpenSlide and tifffile both read its levels.

    `level0` is an array-like [H, W, 3] uint8 (sliced tile by tile: a memmap or zarr array is never
    loaded whole), a function `tile(y, x, h, w) -> uint8 [h, w, 3]` (rows y.., columns x.., at most
    `tile` each), or an iterable of row strips [rows_i, W, 3]; `shape` = (H, W) is needed for the
    last two. Level k + 1 is `downsample2` of level k as written (read back tile by tile), with
    size floor(h_k / 2) x floor(w_k / 2); by default levels are added until one fits a tile. A tile
    whose source tiles are all one colour (glass) is that colour without being read back or averaged,
    so past level 0 a slide's glass costs nothing (with JPEG, where the read-back glass would carry
    its compression error of a unit or two, it keeps its exact colour instead).
    Each level is a main IFD, levels > 0 with NewSubfileType = 1 (reduced image): OpenSlide ignores
    SubIFDs and unflagged pages. `compression` is 'zlib' (lossless, the default) or 'jpeg'
    (`quality`); `mpp` (micrometres per pixel) sets the resolution tags (OpenSlide's mpp).
    """
    if hasattr(level0, "shape") and hasattr(level0, "__getitem__"):
        array = level0
        if len(array.shape) != 3 or array.shape[2] != 3:
            raise ValueError(f"level 0 must be [H, W, 3] uint8, got shape {tuple(array.shape)}")
        H, W = int(array.shape[0]), int(array.shape[1])
        if shape is not None and tuple(shape) != (H, W):
            raise ValueError(f"shape {shape} differs from the array's {(H, W)}")
        tiles = lambda: _tiles_from_function(lambda y, x, h, w: array[y : y + h, x : x + w], H, W, tile)  # noqa: E731
    else:
        if shape is None:
            raise ValueError("shape=(H, W) is needed when level 0 is a function or row strips")
        H, W = _pair_ints(shape, "shape")
        if callable(level0):
            tiles = lambda: _tiles_from_function(level0, H, W, tile)  # noqa: E731
        else:
            tiles = lambda: _tiles_from_strips(level0, H, W, tile)  # noqa: E731
    if min(H, W) < 1:
        raise ValueError(f"empty image {(H, W)}")
    if tile < 16 or tile % 16:
        raise ValueError(f"tile must be a positive multiple of 16 (TIFF), got {tile}")
    if compression not in ("zlib", "jpeg"):
        raise ValueError(f"compression must be 'zlib' or 'jpeg', got {compression!r}")
    sizes = _level_sizes(H, W, tile, levels)
    if bigtiff is None:
        bigtiff = H * W * 3 * 4 // 3 >= 2**31  # uncompressed pyramid past 2 GiB: 64-bit offsets
    options: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "compression": compression,
        "metadata": None,  # no tifffile JSON description: a plain generic TIFF
    }
    if compression == "jpeg":
        options["compressionargs"] = {"level": int(quality)}
    if mpp is not None:
        options["resolution"] = (1e4 / mpp, 1e4 / mpp)
        options["resolutionunit"] = "CENTIMETER"

    def write(tmp: str) -> None:
        """Stream level 0, then each reduced level from the one just written."""
        fills: list[tuple[int, ...] | None] = []  # per tile of the level just written: its one colour, or None
        with open(tmp, "wb") as fh, tifffile.TiffWriter(fh, bigtiff=bigtiff) as tw:
            tw.write(_noting_fills(tiles(), fills), shape=(H, W, 3), subfiletype=0, **options)
            for k in range(1, len(sizes)):
                fh.flush()
                below, fills = fills, []
                with tifffile.TiffFile(tmp) as back:
                    src = zarr.open(back.pages[k - 1].aszarr(), mode="r")  # level k - 1, lazily
                    h, w = sizes[k]
                    tw.write(_half_tiles(src, h, w, tile, below, fills), shape=(h, w, 3), subfiletype=1, **options)

    return atomic_write(path, write)


def _periodic_pattern(period: int, seed: int) -> np.ndarray:
    """One period [P, P, 3] uint8 of a tissue-like pattern: pink blobs with dark nuclei on white glass; wraps around."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:period, 0:period].astype(np.float32) / period  # [P, P] in [0, 1)
    field = np.zeros((period, period), np.float32)
    for _ in range(6):  # smooth periodic blobs: sums of low-frequency sines
        fy, fx = rng.integers(1, 4, size=2)
        phase = rng.uniform(0, 2 * np.pi, size=2)
        field += np.sin(2 * np.pi * fy * yy + phase[0]) * np.cos(2 * np.pi * fx * xx + phase[1])
    tissue = field > np.quantile(field, 0.5)  # about half the area holds tissue
    out = np.full((period, period, 3), BACKGROUND, np.uint8)
    out[tissue] = (216, 160, 196)  # eosin pink
    n = period * period // 4096  # nuclei: small dark discs inside the tissue
    cy, cx = rng.integers(0, period, size=(2, n))
    r = 6
    dy, dx = np.mgrid[-r : r + 1, -r : r + 1]
    disc = dy**2 + dx**2 <= r * r
    for y, x in zip(cy, cx):
        if tissue[y, x]:
            out[(y + dy[disc]) % period, (x + dx[disc]) % period] = (88, 60, 140)  # haematoxylin
    return out


def write_periodic_slide(
    path: str | os.PathLike,
    side: int | tuple[int, int],
    *,
    tissue: float = 0.3,
    period: int = 4096,
    tile: int = 256,
    seed: int = 0,
) -> Path:
    """Write a pyramidal TIFF of any size (10^10 pixels in seconds): tissue sections on glass, each distinct tile encoded once.

    The slide is cut into blocks (about a twelfth of its side, a power-of-two multiple of `tile`);
    the blocks inside a central ellipse covering about `tissue` of the area hold tissue, the others
    glass, as a real slide's sections do. Tissue repeats one `period` x `period` pattern (pink with
    dark nuclei); level k is its 2x2 mean applied k times. Where a level's tiles lie inside single
    blocks, each distinct tile (a few pattern tiles and the glass tile) is zlib-encoded once and
    written as often as it occurs; the coarser levels, whose tiles span blocks, are small and
    rendered whole. Readers (tifffile, OpenSlide) see an ordinary tiled pyramidal TIFF, and decoding
    costs what real tiles of this content cost. For benchmarks of time and memory against a slide's
    size: its content carries no signal. Written atomically.
    """
    import zlib

    H, W = (side, side) if isinstance(side, (int, np.integer)) else (int(side[0]), int(side[1]))
    if tile < 16 or tile % 16 or period % tile:
        raise ValueError(f"tile must be a multiple of 16 dividing the period {period}, got {tile}")
    if not 0 < tissue <= 1:
        raise ValueError(f"tissue must be a fraction in (0, 1], got {tissue}")
    sizes = _level_sizes(H, W, tile, None)
    K = max(0, min(len(sizes) - 1, int(math.floor(math.log2(max(1.0, min(H, W) / 12 / tile))))))
    block = tile * 2**K  # level-0 pixels of a block: level k <= K tiles never straddle two blocks
    nby, nbx = -(-H // block), -(-W // block)
    by, bx = np.mgrid[0:nby, 0:nbx]
    ry, rx = (by + 0.5) * block / H - 0.5, (bx + 0.5) * block / W - 0.5  # block centres, -0.5..0.5
    layout = (ry / 0.5) ** 2 + (rx / 0.5) ** 2 <= 4 * tissue / math.pi  # ellipse of area `tissue`
    if not layout.any():
        layout[nby // 2, nbx // 2] = True
    glass = np.full((tile, tile, 3), BACKGROUND, np.uint8)
    pattern = _periodic_pattern(period, seed)  # level k's pattern after k 2x2 means
    level_tiles: list[Callable[[int, int], bytes]] = []
    for k, (h, w) in enumerate(sizes):
        p = pattern.shape[0]
        if k <= K:  # every tile lies in one block
            reps = max(1, tile // p)
            cells = {(i, j): zlib.compress(np.tile(pattern, (reps, reps, 1))[i * tile : (i + 1) * tile,
                                                                             j * tile : (j + 1) * tile].tobytes(), 6)
                      for i in range(max(1, p // tile)) for j in range(max(1, p // tile))}
            n, per_block = max(1, p // tile), 2 ** (K - k)
            empty = zlib.compress(glass.tobytes(), 6)
            level_tiles.append(lambda ty, tx, cells=cells, n=n, per=per_block, empty=empty:
                               cells[(ty % n, tx % n)] if layout[ty // per, tx // per] else empty)
        else:  # small: render the level whole, then cut it
            reps = (-(-h // p), -(-w // p))
            image = np.tile(pattern, (*reps, 1))[:h, :w]
            b = max(1, block >> k)  # level-k pixels of a block
            mask = np.kron(layout, np.ones((b, b), bool))[:h, :w]
            image = np.where(mask[..., None], image, np.uint8(BACKGROUND))
            padded = np.full((-(-h // tile) * tile, -(-w // tile) * tile, 3), BACKGROUND, np.uint8)
            padded[:h, :w] = image
            level_tiles.append(lambda ty, tx, im=padded: zlib.compress(
                np.ascontiguousarray(im[ty * tile : (ty + 1) * tile, tx * tile : (tx + 1) * tile]).tobytes(), 6))
        if p >= 2:
            pattern = downsample2(pattern)

    def tiles_of(k: int) -> Iterator[bytes]:
        """Encoded tiles of level k, row-major."""
        h, w = sizes[k]
        for ty in range(-(-h // tile)):
            for tx in range(-(-w // tile)):
                yield level_tiles[k](ty, tx)

    options = {"dtype": np.uint8, "tile": (tile, tile), "photometric": "rgb", "compression": "zlib", "metadata": None}

    def write(tmp: str) -> None:
        with tifffile.TiffWriter(tmp, bigtiff=H * W * 3 >= 2**31) as tw:
            for k, (h, w) in enumerate(sizes):
                tw.write(tiles_of(k), shape=(h, w, 3), subfiletype=0 if k == 0 else 1, **options)

    return atomic_write(path, write)
