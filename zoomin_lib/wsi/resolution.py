"""Physical resolution: a slide's microns per pixel, and settings given in microns turned into pixels.

Scanners record the size of a level-0 pixel: OpenSlide exposes it as `openslide.mpp-x` /
`openslide.mpp-y` (from the vendor's metadata, or a generic TIFF's resolution tags), and a TIFF read
by tifffile carries it in its XResolution / YResolution / ResolutionUnit tags (pixels per inch or
centimetre). `slide_mpp` reads either; `resolve_mpp` lets an explicit value (`--mpp`) override a
missing or wrong one and stops with the file's name when neither exists.

`in_pixels` turns the micron settings of a profile into the pixel settings the model is built with:
`tile_um` and `patch_um` (sides in microns) set `tile` and `patch`; `s1_mpp` and `s2_mpp` (microns per
pixel of the views V(x, s1), V(x, s2, c)) set the scales `s1` and `s2` = mpp / s_mpp.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import tifffile

from zoomin_lib.infra.slides import Slide, SlideError

__all__ = ["MICRON_KEYS", "slide_mpp", "resolve_mpp", "in_pixels"]

MICRON_KEYS = {"tile_um": "tile", "patch_um": "patch", "s1_mpp": "s1", "s2_mpp": "s2"}
_UNIT_MICRONS = {2: 25_400.0, 3: 10_000.0}  # TIFF ResolutionUnit: 2 inch, 3 centimetre


def _positive(value: Any) -> float | None:
    """`value` as a finite positive float, else None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _tiff_mpp(path: Path) -> tuple[float, float] | None:
    """(mpp_x, mpp_y) from the first page's resolution tags, or None (no tags, or no unit: ResolutionUnit 1)."""
    try:
        with tifffile.TiffFile(path) as tif:
            page = tif.pages[0]
            unit = int(page.resolutionunit)
            xres, yres = page.resolution  # pixels per unit
    except Exception:  # not a TIFF, or tags missing: no resolution known
        return None
    if unit not in _UNIT_MICRONS:
        return None
    x, y = _positive(xres), _positive(yres)
    return (_UNIT_MICRONS[unit] / x, _UNIT_MICRONS[unit] / y) if x and y else None


def slide_mpp(slide: Slide) -> tuple[float, float] | None:
    """(microns per pixel along x, along y) at level 0 from the slide's properties, or None when it records none."""
    props = getattr(slide, "properties", None)
    if isinstance(props, Mapping):
        x, y = _positive(props.get("openslide.mpp-x")), _positive(props.get("openslide.mpp-y"))
        if x and y:
            return x, y
    path = getattr(slide, "path", None)
    return _tiff_mpp(Path(path)) if path is not None else None


def resolve_mpp(slide: Slide, override: float | None = None) -> float:
    """The slide's microns per pixel: `override` when given, else its own (mean of x and y); SlideError naming the file when neither."""
    if override is not None:
        if not _positive(override):
            raise ValueError(f"--mpp must be a positive number of microns per pixel, got {override}")
        return float(override)
    mpp = slide_mpp(slide)
    if mpp is None:
        raise SlideError(getattr(slide, "path", None),
                         "settings are given in microns but the slide records no microns per pixel "
                         "(no OpenSlide mpp-x/mpp-y, no TIFF resolution tags); pass --mpp")
    return (mpp[0] + mpp[1]) / 2


def in_pixels(cfg: Mapping[str, Any], mpp: float) -> dict[str, Any]:
    """`cfg` with its micron settings (`MICRON_KEYS`, those not None) turned into pixels at `mpp` microns per pixel."""
    out = dict(cfg)
    for key, target in MICRON_KEYS.items():
        value = cfg.get(key)
        if value is None:
            continue
        if not _positive(value):
            raise ValueError(f"{key} must be a positive number, got {value!r}")
        if key.endswith("_um"):
            out[target] = max(1, round(float(value) / mpp))
        else:
            out[target] = mpp / float(value)
            if out[target] > 1:
                raise ValueError(f"{key} = {value} microns per pixel is finer than the slide's {mpp:g}: a view cannot be "
                                 "sharper than level 0")
    return out
