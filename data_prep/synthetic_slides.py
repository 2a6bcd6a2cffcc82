"""A synthetic stand-in for Camelyon16: lazily rendered whole-slide images with tiny "metastases".

Zoom-In (Kong & Henao) classifies Camelyon16 slides of 45,056 x 35,840 to 217,088 x 111,104
pixels (sec. 4, "Camelyon16") and crops NeedleCamelyon from their annotated metastases
(sec. 4 and appendix D). Nothing can be downloaded at run time (nothing downloads at run time), so this
module writes a **synthetic stand-in, not the Camelyon16 data**, in exactly the distributed layout
that `data_prep.camelyon16.load_camelyon16` reads:

    <root>/training/normal/normal_NNN.tif
    <root>/training/tumor/tumor_NNN.tif
    <root>/training/lesion_annotations/tumor_NNN.xml      ASAP XML, tumour group `_0`
    <root>/testing/images/test_NNN.tif
    <root>/testing/reference.csv                          no header: test_001,Tumor / test_002,Normal
    <root>/testing/lesion_annotations/test_NNN.xml        the test tumour slides' annotations
    <root>/README.txt, <root>/parameters.json             "synthetic stand-in", and how it was made

A slide is mostly empty glass (a constant near-white, which compresses to almost nothing) with a
few tissue blobs: a smooth random field on a coarse grid (about 512 nodes a side), bilinearly
upsampled and thresholded, so the blobs have smooth, slightly ragged outlines at every scale.
Each blob is textured with real tissue: scikit-image's `ihc.png`
(`skimage.data.immunohistochemistry()`, colonic glands, IHC with hematoxylin counterstain,
acquired at the Center for Microscopy And Molecular Imaging (CMMI), "No known copyright
restrictions" per its docstring), re-tinted towards H&E as in `data_prep.colon_cancer`, mirrored
and tiled from a random offset per blob (the mirrored tiling repeats every 1024 pixels and shows
its symmetry as a faint lattice in low-resolution views, and where two blobs meet the texture
switches along a seam: a stand-in, not a texture model). A tumour slide holds a few tiny metastases: smooth
star-shaped polygons of a denser, darker purple texture (the same stains shrunk and with more
hematoxylin), well inside the tissue and far under 1% of it; their polygons are the ASAP
annotations, and the painted pixels are exactly `annotation_mask` of them (pixel-centre rule).

`SyntheticSlide.region(y, x, h, w)` renders any level-0 window on demand (vectorised numpy per
tile, glass tiles short-cut), so `write_pyramid_tiff` writes a slide tile by tile with memory
O(tile), whatever its size: `write_large_slide` writes a >= 10-gigapixel slide for the memory
chapter. Everything is deterministic in the seed (same seed, byte-identical files).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import skimage.draw
from PIL import Image

from data_prep.textures import blurred_noise, ihc_stains, stain_vectors
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, read_json, write_json, write_text
from zoomin_lib.infra.progress import tqdm
from zoomin_lib.infra.slides import write_pyramid_tiff

__all__ = [
    "GENERATOR_VERSION",
    "STAND_IN",
    "GLASS",
    "PROFILES",
    "SyntheticSlide",
    "asap_xml",
    "generate",
    "synthetic_camelyon",
    "read_parameters",
    "reference_labels",
    "rebuild",
    "write_large_slide",
]

GENERATOR_VERSION = 1
STAND_IN = "synthetic stand-in, not the Camelyon16 data"
TEXTURE_SOURCE = (
    "skimage.data.immunohistochemistry() (ihc.png shipped with scikit-image; colonic glands, IHC with "
    "hematoxylin counterstain, acquired at the Center for Microscopy And Molecular Imaging (CMMI); "
    "'No known copyright restrictions')"
)
GLASS = (241, 241, 243)  # empty glass: HSV saturation 0.008, below tissue_mask's floor of 0.05
MPP = 0.243  # micrometres per level-0 pixel, about Camelyon16's 40x scanners
TEXTURE = 512  # side of the tissue texture (ihc.png), mirrored to a period of 1024
TUMOUR_TEXTURE = 320  # the tumour texture: ihc.png shrunk, so its nuclei are smaller and denser
GRID_NODES = 512  # the tissue field's coarse grid has at most GRID_NODES + 1 nodes along a side
THRESHOLD = math.exp(-0.5)  # tissue where the field exceeds it: a blob's 1-sigma ellipse, perturbed
VERTICES = 32  # vertices of a metastasis polygon
PROFILES: dict[str, dict[str, Any]] = {
    "smoke": dict(n_train_normal=3, n_train_tumor=3, n_test_normal=2, n_test_tumor=2, side=4096,
                  metastasis_radius=(5.0, 13.0), tile=256, compression="jpeg"),
    # cpu: metastases from isolated-cell to micrometastasis size (radius 20-150 px, 10-70 um at MPP), 4-8 a
    # slide, 1200 px apart: the small ones give NeedleCamelyon crops (ratio <= 1 % of 1024^2), the large ones
    # are a few pixels of V(x, 1/32), as chapter 04 needs to learn anything; together well under 1 % of tissue
    "cpu": dict(n_train_normal=10, n_train_tumor=10, n_test_normal=5, n_test_tumor=5, side=16384,
                metastases=(4, 8), metastasis_radius=(20.0, 150.0), spacing=1200.0, tile=512, compression="jpeg"),
    # gpu: the cpu stand-in's slides, twice as many (20 + 20 training, 10 + 10 test), for chapters 04 and 05's
    # gpu profile: more training slides and test slides (accuracy in steps of 5 points, not 10)
    "gpu": dict(n_train_normal=20, n_train_tumor=20, n_test_normal=10, n_test_tumor=10, side=16384,
                metastases=(4, 8), metastasis_radius=(20.0, 150.0), spacing=1200.0, tile=512, compression="jpeg"),
}
_KINDS = {"normal": 0, "tumor": 1, "test": 2}  # separate random streams per kind of slide


# -------------------------------------------------------------------- textures


def _to_uint8(rgb: np.ndarray) -> np.ndarray:
    """Float 0..255 RGB -> uint8, rounded and clipped."""
    return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)


def _stain_crop(rng: np.random.Generator, size: int) -> np.ndarray:
    """A random square crop (78-100% of the side) of ihc.png's stain densities [size, size, 2], flipped or rotated.

    Drawn here rather than with `data_prep.colon_cancer`'s helpers, so that the stand-in's bytes
    depend only on this module (and GENERATOR_VERSION) and on ihc.png itself.
    """
    stains = ihc_stains()  # [512, 512, 2] hematoxylin, DAB optical densities
    n = min(stains.shape[:2])
    side = int(rng.integers(int(0.78 * n), n + 1))
    r, c = rng.integers(0, np.array(stains.shape[:2]) - side + 1)
    crop = stains[r : r + side, c : c + side]  # [side, side, 2]
    channels = [np.asarray(Image.fromarray(np.ascontiguousarray(crop[..., k])).resize((size, size), Image.BILINEAR))
                for k in range(2)]
    out = np.rot90(np.stack(channels, axis=-1), k=int(rng.integers(4)))  # [size, size, 2]
    return np.ascontiguousarray(out[:, ::-1] if rng.random() < 0.5 else out)


def _tissue_texture(rng: np.random.Generator) -> np.ndarray:
    """One H&E-tinted crop of ihc.png, uint8 [TEXTURE, TEXTURE, 3]: the colon cancer background, pinker.

    The eosin floor is higher than `data_prep.colon_cancer`'s, so that even pale tissue is clearly
    more saturated than glass and Otsu's threshold of `tissue_mask` falls between the two.
    """
    crop = _stain_crop(rng, TEXTURE)  # [T, T, 2]
    gains = np.array([rng.uniform(0.55, 0.9), rng.uniform(0.25, 0.45)], dtype=np.float32)
    dens = crop * gains + np.array([rng.uniform(0.0, 0.06), rng.uniform(0.24, 0.3)], dtype=np.float32)
    od = dens @ stain_vectors().astype(np.float32)  # [T, T, 3]
    return _to_uint8(255 * np.exp(-od) * rng.uniform(0.96, 1.0, size=3).astype(np.float32))


def _tumour_texture(rng: np.random.Generator) -> np.ndarray:
    """Dense, dark purple 'tumour' texture uint8 [Tt, Tt, 3]: shrunk stains, much more hematoxylin."""
    crop = _stain_crop(rng, TUMOUR_TEXTURE)  # [Tt, Tt, 2] hematoxylin, DAB densities
    gains = np.array([rng.uniform(1.8, 2.2), rng.uniform(0.2, 0.3)], dtype=np.float32)
    dens = crop * gains + np.array([0.8, 0.12], dtype=np.float32)  # a dark purple floor: crowded nuclei
    od = dens @ stain_vectors().astype(np.float32)  # [T, T, 3]
    return _to_uint8(255 * np.exp(-od))


@lru_cache(maxsize=4)
def _mirror_index(size: int) -> np.ndarray:
    """Index table [2 size] of a mirrored tiling: 0..size-1, size-1..0 (seamless)."""
    i = np.arange(2 * size)
    return np.where(i < size, i, 2 * size - 1 - i).astype(np.intp)


# -------------------------------------------------------------------- geometry


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Gaussian-filtered white noise float64 [shape], unit standard deviation, tiling seamlessly."""
    noise = blurred_noise(rng, shape, sigma, mode="wrap")
    return noise / (noise.std() + 1e-12)


def _blob_field(
    rng: np.random.Generator, n_rows: int, n_cols: int, step: int, height: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """(field float32 [n_rows, n_cols], blob label int8 [n_rows, n_cols]) on the coarse grid of `step` pixels."""
    k = int(rng.integers(2, 5))  # a few blobs
    side = min(height, width)
    yy = np.arange(n_rows, dtype=np.float64)[:, None] * step  # [n_rows, 1] level-0 rows
    xx = np.arange(n_cols, dtype=np.float64)[None, :] * step  # [1, n_cols]
    blobs = []
    for _ in range(k):
        cy, cx = rng.uniform(0.22, 0.78) * height, rng.uniform(0.22, 0.78) * width
        a, b = rng.uniform(0.07, 0.16, size=2) * side
        t = rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = (yy - cy) * np.cos(t) - (xx - cx) * np.sin(t)
        blobs.append(np.exp(-0.5 * ((u / a) ** 2 + (v / b) ** 2)))  # [n_rows, n_cols]
    stack = np.stack(blobs)  # [k, n_rows, n_cols]
    nodes = max(n_rows, n_cols)
    wobble = 0.3 * _smooth_noise(rng, (n_rows, n_cols), 0.02 * nodes) + 0.06 * _smooth_noise(
        rng, (n_rows, n_cols), 0.004 * nodes
    )
    border = np.minimum(np.minimum(yy, height - yy) / height, np.minimum(xx, width - xx) / width)  # [n_rows, n_cols]
    taper = np.clip(border / 0.05, 0, 1)  # no tissue touches the slide's edge
    field = stack.max(axis=0) * np.exp(wobble) * taper
    return field.astype(np.float32), stack.argmax(axis=0).astype(np.int8)


def _star_polygon(rng: np.random.Generator, cx: float, cy: float, radius: float) -> np.ndarray:
    """A smooth star-shaped polygon [VERTICES, 2] (x, y), vertices rounded to 2 decimals as the XML stores them."""
    theta = np.linspace(0, 2 * np.pi, VERTICES, endpoint=False)
    r = radius * (1 + 0.15 * np.sin(2 * theta + rng.uniform(0, 7)) + 0.08 * np.sin(3 * theta + rng.uniform(0, 7)))
    coords = np.stack([cx + r * np.cos(theta), cy + r * np.sin(theta)], axis=1)  # [V, 2]
    return np.array([[float(f"{v:.2f}") for v in p] for p in coords], dtype=np.float64)


def _polygon_pixels(coords: np.ndarray, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Window-relative (rows, cols) of the level-0 pixels whose centres lie in the polygon (annotation_mask's rule).

    Rasterised in slide coordinates (the same arithmetic as `data_prep.camelyon16.annotation_mask`,
    so the pixels agree exactly), clipped to the window; the polygon must be small.
    """
    rr, cc = skimage.draw.polygon(coords[:, 1] - 0.5, coords[:, 0] - 0.5, shape=(y + h, x + w))
    keep = (rr >= y) & (cc >= x)
    return rr[keep] - y, cc[keep] - x


# -------------------------------------------------------------------- one slide


class SyntheticSlide:
    """One stand-in slide, rendered on demand: `region(y, x, h, w)` -> uint8 [h, w, 3] at level 0."""

    def __init__(
        self,
        height: int,
        width: int | None = None,
        seed: int | Sequence[int] = 0,
        *,
        tumour: bool = False,
        metastases: tuple[int, int] = (2, 4),
        metastasis_radius: tuple[float, float] = (20.0, 52.0),
        spacing: float | None = None,
    ) -> None:
        """Draw the tissue field, textures and (for a tumour slide) the metastasis polygons from `seed`."""
        width = height if width is None else width
        if min(height, width) < 256:
            raise ValueError(f"a synthetic slide needs at least 256 x 256 pixels, got {height} x {width}")
        lo, hi = metastases
        r_lo, r_hi = metastasis_radius
        if not 1 <= lo <= hi or not 1 <= r_lo <= r_hi:
            raise ValueError(f"metastases {metastases} and metastasis_radius {metastasis_radius} must be ordered, >= 1")
        self.shape = (int(height), int(width))
        self.tumour = bool(tumour)
        rng = np.random.default_rng(seed)
        self.step = max(1, math.ceil(max(self.shape) / GRID_NODES))  # level-0 pixels between grid nodes
        n_rows, n_cols = self.shape[0] // self.step + 2, self.shape[1] // self.step + 2
        self._field, self._labels = _blob_field(rng, n_rows, n_cols, self.step, *self.shape)
        n_blobs = int(self._labels.max()) + 1
        self._textures = np.stack([_tissue_texture(rng) for _ in range(n_blobs)])  # [k, T, T, 3]
        self._offsets = rng.integers(0, 2 * TEXTURE, size=(n_blobs, 2))  # [k, 2] (dy, dx) per blob
        self._tumour_texture = _tumour_texture(rng)  # [Tt, Tt, 3]
        self._tumour_offset = rng.integers(0, 2 * TUMOUR_TEXTURE, size=2)
        self.polygons: list[np.ndarray] = []  # [V, 2] (x, y) level-0 vertices per metastasis
        if self.tumour:
            gap = 40 * r_hi if spacing is None else float(spacing)
            self._place_metastases(rng, int(rng.integers(lo, hi + 1)), (r_lo, r_hi), gap)

    # ---------------------------------------------------------------- tissue
    def _node_range(self, start: int, length: int) -> tuple[int, int]:
        """First and one-past-last coarse node a span of level-0 pixels interpolates from."""
        return start // self.step, (start + length - 1) // self.step + 2

    def may_hold_tissue(self, y: int, x: int, h: int, w: int) -> bool:
        """False only when the window is certainly glass (every node it interpolates is below the threshold)."""
        r0, r1 = self._node_range(y, h)
        c0, c1 = self._node_range(x, w)
        return bool(self._field[r0:r1, c0:c1].max(initial=0) > THRESHOLD)

    def field(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The tissue field float32 [h, w] at level-0 pixels: bilinear between the coarse nodes."""
        r0, r1 = self._node_range(y, h)
        c0, c1 = self._node_range(x, w)
        sub = self._field[r0:r1, c0:c1].astype(np.float64)  # [nr, nc]
        rows, cols = y + np.arange(h), x + np.arange(w)
        ri, ci = rows // self.step - r0, cols // self.step - c0  # [h], [w] node below / left
        rt, ct = (rows % self.step) / self.step, (cols % self.step) / self.step  # [h], [w] in [0, 1)
        along = sub[ri] * (1 - rt)[:, None] + sub[ri + 1] * rt[:, None]  # [h, nc]
        return (along[:, ci] * (1 - ct) + along[:, ci + 1] * ct).astype(np.float32)  # [h, w]

    def tissue(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Tissue bool [h, w] of a level-0 window (the field above the threshold)."""
        if not self.may_hold_tissue(y, x, h, w):
            return np.zeros((h, w), dtype=bool)
        return self.field(y, x, h, w) > THRESHOLD

    def _blob(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Which blob's texture each pixel takes: the nearest coarse node's label, int8 [h, w]."""
        half = self.step // 2
        ri = (y + np.arange(h) + half) // self.step
        ci = (x + np.arange(w) + half) // self.step
        return self._labels[ri][:, ci]

    # ---------------------------------------------------------------- metastases
    def _place_metastases(
        self, rng: np.random.Generator, n: int, radius: tuple[float, float], gap: float
    ) -> None:
        """Up to `n` metastases, each well inside tissue and `gap` pixels from the others; ValueError if none fits."""
        inner = np.argwhere(self._field > THRESHOLD * 1.25)  # [m, 2] coarse nodes deep in tissue
        centres: list[tuple[float, float]] = []
        for _ in range(200 * n):
            if len(self.polygons) == n or len(inner) == 0:
                break
            i, j = inner[rng.integers(len(inner))]
            cy = min((i + rng.uniform(-0.5, 0.5)) * self.step, self.shape[0] - 1)
            cx = min((j + rng.uniform(-0.5, 0.5)) * self.step, self.shape[1] - 1)
            r = float(np.exp(rng.uniform(np.log(radius[0]), np.log(radius[1]))))  # log-uniform radius
            if any(math.hypot(cx - px, cy - py) < gap for px, py in centres):
                continue
            coords = _star_polygon(rng, cx, cy, r)
            if self._inside_tissue(coords):
                self.polygons.append(coords)
                centres.append((cx, cy))
        if not self.polygons:
            raise ValueError(f"no metastasis fits the tissue of a {self.shape[0]} x {self.shape[1]} slide")

    def _bbox(self, coords: np.ndarray) -> tuple[int, int, int, int]:
        """(y, x, h, w) of the level-0 pixels a polygon can cover, clipped to the slide."""
        x0, y0 = np.floor(coords.min(axis=0)).astype(int) - 1
        x1, y1 = np.ceil(coords.max(axis=0)).astype(int) + 1
        x0, y0 = max(x0, 0), max(y0, 0)
        x1, y1 = min(x1, self.shape[1]), min(y1, self.shape[0])
        return y0, x0, max(y1 - y0, 0), max(x1 - x0, 0)

    def _inside_tissue(self, coords: np.ndarray) -> bool:
        """True when every pixel of the polygon is tissue, with a margin of a quarter radius."""
        y, x, h, w = self._bbox(coords)
        if h == 0 or w == 0 or y == 0 or x == 0 or y + h >= self.shape[0] or x + w >= self.shape[1]:
            return False
        m = int(max(h, w) // 4) + 2
        y0, x0 = max(y - m, 0), max(x - m, 0)
        hh, ww = min(y + h + m, self.shape[0]) - y0, min(x + w + m, self.shape[1]) - x0
        rr, cc = _polygon_pixels(coords, y0, x0, hh, ww)
        return len(rr) > 0 and bool(self.tissue(y0, x0, hh, ww).all())

    def metastasis_mask(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Metastasis bool [h, w] of a level-0 window: exactly annotation_mask of `polygons` there."""
        mask = np.zeros((h, w), dtype=bool)
        for coords in self.polygons:
            by, bx, bh, bw = self._bbox(coords)
            if by < y + h and bx < x + w and by + bh > y and bx + bw > x:
                rr, cc = _polygon_pixels(coords, y, x, h, w)
                mask[rr, cc] = True
        return mask

    # ---------------------------------------------------------------- pixels
    def region(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """RGB uint8 [h, w, 3] of level-0 rows y..y+h, columns x..x+w (glass outside tissue)."""
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = GLASS
        if h == 0 or w == 0 or not self.may_hold_tissue(y, x, h, w):
            return out
        tissue = self.field(y, x, h, w) > THRESHOLD  # [h, w] tissue pixels, window-relative
        if tissue.any():
            half = self.step // 2
            n0, n1 = (y + half) // self.step, (y + h - 1 + half) // self.step  # nearest-node rows and columns
            m0, m1 = (x + half) // self.step, (x + w - 1 + half) // self.step
            blobs = np.unique(self._labels[n0 : n1 + 1, m0 : m1 + 1])  # a window meets a blob or two
            whole = len(blobs) == 1 and bool(tissue.all())  # one blob's texture fills the window
            blob = None if whole else self._blob(y, x, h, w)  # [h, w] which blob's texture each pixel takes
            mirror = _mirror_index(TEXTURE)
            rows, cols = y + np.arange(h), x + np.arange(w)  # [h], [w] level-0 coordinates
            for b in blobs:  # one separable gather per blob
                ty = mirror[(rows + self._offsets[b, 0]) % (2 * TEXTURE)]  # [h] texture row of each row
                tx = mirror[(cols + self._offsets[b, 1]) % (2 * TEXTURE)]  # [w]
                texture = self._textures[b].take(ty, axis=0).take(tx, axis=1)  # [h, w, 3]
                if whole:
                    out = texture
                else:
                    np.copyto(out, texture, where=(tissue & (blob == b))[..., None])
        if self.polygons:
            mr, mc = np.nonzero(self.metastasis_mask(y, x, h, w))
            if len(mr):
                mirror = _mirror_index(TUMOUR_TEXTURE)
                ty = mirror[(mr + y + self._tumour_offset[0]) % (2 * TUMOUR_TEXTURE)]
                tx = mirror[(mc + x + self._tumour_offset[1]) % (2 * TUMOUR_TEXTURE)]
                out[mr, mc] = self._tumour_texture[ty, tx]
        return out

    def tissue_pixels(self, rows: int = 1024) -> int:
        """Number of tissue pixels at level 0, counted in row strips."""
        H, W = self.shape
        return sum(int(self.tissue(y, 0, min(rows, H - y), W).sum()) for y in range(0, H, rows))

    def metastasis_pixels(self) -> int:
        """Number of metastasis pixels at level 0 (each polygon rasterised in its bounding box)."""
        total = 0
        for coords in self.polygons:
            total += int(self.metastasis_mask(*self._bbox(coords)).sum())
        return total

    # ---------------------------------------------------------------- files
    def write(
        self,
        path: str | os.PathLike,
        *,
        tile: int = 512,
        compression: str = "jpeg",
        quality: int = 85,
        mpp: float | None = MPP,
        progress: bool = False,
    ) -> Path:
        """Write the slide as a tiled pyramidal TIFF (OpenSlide-readable), tile by tile, atomically."""
        H, W = self.shape
        n_tiles = math.ceil(H / tile) * math.ceil(W / tile)
        bar = tqdm(total=n_tiles, desc=Path(path).name, unit="tile", disable=not progress, mininterval=2)
        glass: dict[tuple[int, int], np.ndarray] = {}

        def tile_fn(y: int, x: int, h: int, w: int) -> np.ndarray:
            """One level-0 tile; shared read-only glass for empty tiles."""
            bar.update()
            if self.may_hold_tissue(y, x, h, w):
                return self.region(y, x, h, w)
            if (h, w) not in glass:
                glass[(h, w)] = self.region(y, x, h, w)
                glass[(h, w)].flags.writeable = False  # shared: the writer may trust it unchanged
            return glass[(h, w)]

        try:
            return write_pyramid_tiff(
                path, tile_fn, (H, W), tile=tile, compression=compression, quality=quality, mpp=mpp
            )
        finally:
            bar.close()

    def write_annotation(self, path: str | os.PathLike) -> Path:
        """Write the metastasis polygons as ASAP XML (group `_0`), atomically."""
        return write_text(path, asap_xml(self.polygons))


def asap_xml(polygons: Sequence[np.ndarray], group: str = "_0") -> str:
    """ASAP XML text of level-0 polygons [V, 2] (x, y), all in `group` (Camelyon16's tumour group `_0`)."""
    lines = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    for k, coords in enumerate(polygons):
        lines.append(f'\t\t<Annotation Name="Annotation {k}" Type="Polygon" PartOfGroup="{group}" Color="#F4FA58">')
        lines.append("\t\t\t<Coordinates>")
        for order, (x, y) in enumerate(np.asarray(coords, dtype=np.float64)):
            lines.append(f'\t\t\t\t<Coordinate Order="{order}" X="{x:.2f}" Y="{y:.2f}" />')
        lines += ["\t\t\t</Coordinates>", "\t\t</Annotation>"]
    lines += [
        "\t</Annotations>",
        "\t<AnnotationGroups>",
        f'\t\t<Group Name="{group}" PartOfGroup="None" Color="#FF0000">',
        "\t\t\t<Attributes />",
        "\t\t</Group>",
        "\t</AnnotationGroups>",
        "</ASAP_Annotations>",
        "",
    ]
    return "\n".join(lines)


# -------------------------------------------------------------------- a data set


def _slide_seed(seed: int, kind: str, index: int) -> list[int]:
    """The random stream of one slide: (seed, kind, index)."""
    return [int(seed), _KINDS[kind], int(index)]


def _parameters(sizes: dict[str, Any], seed: int) -> dict[str, Any]:
    """parameters.json: what was generated, from what, by which version (JSON-normalised)."""
    params = {
        "description": STAND_IN,
        "generator": "data_prep.synthetic_slides.generate",
        "version": GENERATOR_VERSION,
        "seed": int(seed),
        **{k: sizes[k] for k in sorted(sizes)},
        "texture": TEXTURE_SOURCE,
        "annotations": "ASAP XML, level-0 (x, y) vertices, group _0; mask = pixel centres inside",
    }
    return json.loads(json.dumps(params))


_README = """SYNTHETIC STAND-IN, NOT THE CAMELYON16 DATA.

Written by data_prep.synthetic_slides (version {version}) in the Camelyon16 layout, so that
data_prep.camelyon16.load_camelyon16 reads it. Tissue texture: {texture}.
Tissue blobs on empty glass; tumour slides hold a few tiny synthetic "metastases" (denser, darker
purple texture) whose polygons are in the lesion_annotations XML files. Use it to exercise the
pipeline and measure memory and speed, never to report Camelyon16 accuracy.
Parameters: parameters.json.
"""


def _check_sizes(**counts: int) -> dict[str, int]:
    """The slide counts as non-negative ints, or ValueError naming the bad one."""
    out = {}
    for name, n in counts.items():
        if int(n) != n or n < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {n!r}")
        out[name] = int(n)
    if out["n_train_normal"] + out["n_train_tumor"] == 0 or out["n_test_normal"] + out["n_test_tumor"] == 0:
        raise ValueError(f"each split needs at least one slide, got {out}")
    return out


def reference_labels(n_normal: int, n_tumour: int, seed: int) -> list[str]:
    """'Tumor' / 'Normal' for test_001.., shuffled by `seed` (the real test set interleaves them)."""
    labels = ["Tumor"] * n_tumour + ["Normal"] * n_normal
    order = np.random.default_rng([int(seed), 9]).permutation(len(labels))
    return [labels[i] for i in order]


def _files(slide_id: str) -> tuple[str, str]:
    """(slide path, annotation path) of a slide id, relative to the data set's root."""
    kind = slide_id.split("_")[0]
    if kind == "test":
        return f"testing/images/{slide_id}.tif", f"testing/lesion_annotations/{slide_id}.xml"
    return f"training/{kind}/{slide_id}.tif", f"training/lesion_annotations/{slide_id}.xml"


def _slide_from(params: dict[str, Any], slide_id: str) -> SyntheticSlide:
    """The renderer of one slide of a data set described by its parameters.json content."""
    kind, _, number = slide_id.partition("_")
    if kind not in _KINDS or not number.isdigit():
        raise ValueError(f"{slide_id!r} is not a slide id of the layout (normal_NNN, tumor_NNN, test_NNN)")
    index = int(number)
    if kind == "test":
        labels = reference_labels(params["n_test_normal"], params["n_test_tumor"], params["seed"])
        if not 1 <= index <= len(labels):
            raise ValueError(f"{slide_id!r}: the data set has test_001..test_{len(labels):03d}")
        tumour = labels[index - 1] == "Tumor"
    else:
        n = params["n_train_normal" if kind == "normal" else "n_train_tumor"]
        if not 1 <= index <= n:
            raise ValueError(f"{slide_id!r}: the data set has {n} {kind} slides")
        tumour = kind == "tumor"
    H, W = params["side"]
    return SyntheticSlide(
        H, W, _slide_seed(params["seed"], kind, index), tumour=tumour, metastases=tuple(params["metastases"]),
        metastasis_radius=tuple(params["metastasis_radius"]), spacing=params["spacing"],
    )


def rebuild(root: str | os.PathLike, slide_id: str) -> SyntheticSlide:
    """The renderer of slide `slide_id` of a stand-in folder (its ground truth: pixels, tissue, metastases)."""
    params = read_parameters(root)
    if params is None:
        raise ValueError(f"{Path(root) / 'parameters.json'}: missing or not a {STAND_IN!r} folder")
    if params.get("version") != GENERATOR_VERSION:
        raise ValueError(f"{root}: written by generator version {params.get('version')}, this is {GENERATOR_VERSION}")
    return _slide_from(params, slide_id)


def generate(
    root: str | os.PathLike,
    *,
    n_train_normal: int = 3,
    n_train_tumor: int = 3,
    n_test_normal: int = 2,
    n_test_tumor: int = 2,
    side: int | tuple[int, int] = 4096,
    seed: int = 0,
    tile: int = 256,
    compression: str = "jpeg",
    quality: int = 85,
    metastases: tuple[int, int] = (2, 4),
    metastasis_radius: tuple[float, float] = (20.0, 52.0),
    spacing: float | None = None,
    mpp: float | None = MPP,
    progress: bool = False,
    extra_parameters: dict[str, Any] | None = None,
) -> Path:
    """Write a stand-in Camelyon16 folder at `root` (atomically, replacing it) and return `root`.

    `side` is the level-0 size (an int for square slides, or (height, width)); `metastases` the
    range of metastases per tumour slide, `metastasis_radius` their radius range in level-0 pixels
    (log-uniform; the default suits 1024 x 1024 NeedleCamelyon crops: areas of about 0.1-1% of a
    crop), `spacing` the least distance between metastasis centres (default 40 x the largest radius);
    `extra_parameters` are added to parameters.json.
    """
    counts = _check_sizes(n_train_normal=n_train_normal, n_train_tumor=n_train_tumor,
                          n_test_normal=n_test_normal, n_test_tumor=n_test_tumor)
    H, W = (side, side) if isinstance(side, (int, np.integer)) else (int(side[0]), int(side[1]))
    sizes = {**counts, "side": [H, W], "tile": tile, "compression": compression, "quality": quality,
             "metastases": list(metastases), "metastasis_radius": [float(r) for r in metastasis_radius],
             "spacing": spacing, "mpp": mpp}
    params = {**_parameters(sizes, seed), **(extra_parameters or {})}
    write_args = dict(tile=tile, compression=compression, quality=quality, mpp=mpp)
    labels = reference_labels(counts["n_test_normal"], counts["n_test_tumor"], seed)
    ids = [f"normal_{i:03d}" for i in range(1, counts["n_train_normal"] + 1)]
    ids += [f"tumor_{i:03d}" for i in range(1, counts["n_train_tumor"] + 1)]
    ids += [f"test_{i:03d}" for i in range(1, len(labels) + 1)]
    with atomic_dir(root) as tmp:
        for folder in ("training/normal", "training/tumor", "training/lesion_annotations",
                       "testing/images", "testing/lesion_annotations"):
            (tmp / folder).mkdir(parents=True, exist_ok=True)
        for slide_id in tqdm(ids, desc="synthetic slides", unit="slide", disable=not progress):
            slide = _slide_from(params, slide_id)
            tif, xml = _files(slide_id)
            slide.write(tmp / tif, **write_args)
            if slide.tumour:
                slide.write_annotation(tmp / xml)
        rows = [f"test_{i:03d},{label}" for i, label in enumerate(labels, start=1)]
        (tmp / "testing/reference.csv").write_text("\n".join(rows) + "\n")
        write_json(tmp / "parameters.json", params)
        (tmp / "README.txt").write_text(_README.format(version=GENERATOR_VERSION, texture=TEXTURE_SOURCE))
    return Path(root)


def read_parameters(root: str | os.PathLike) -> dict | None:
    """The parameters.json of a stand-in folder, or None (absent, unreadable, or not a stand-in)."""
    path = Path(root) / "parameters.json"
    try:
        params = read_json(path) if path.is_file() else None
    except ValueError:
        return None
    return params if isinstance(params, dict) and params.get("description") == STAND_IN else None


def _resolve(profile_or_sizes: str | dict[str, Any]) -> dict[str, Any]:
    """A profile name ('smoke', 'cpu') or a dict of `generate` keyword arguments -> keyword arguments."""
    if isinstance(profile_or_sizes, str):
        if profile_or_sizes == "paper":
            raise ValueError(
                "the 'paper' profile reads the real Camelyon16 (data_prep.camelyon16.load_camelyon16(root)); "
                "no stand-in is generated at its scale (400 slides of up to 24 gigapixels)"
            )
        if profile_or_sizes not in PROFILES:
            raise ValueError(f"unknown profile {profile_or_sizes!r}; expected one of {', '.join(PROFILES)} or a dict")
        return dict(PROFILES[profile_or_sizes])
    return dict(profile_or_sizes)


def synthetic_camelyon(
    profile_or_sizes: str | dict[str, Any] = "smoke",
    cache_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """The stand-in folder for a profile or `generate` arguments, cached under data/camelyon16_synthetic/<key>.

    The key hashes the arguments, the seed and GENERATOR_VERSION; an existing folder whose
    parameters.json matches is reused, anything else is (re)written atomically. `cache_dir`
    replaces `zoomin_lib.infra.config.data_dir('camelyon16_synthetic')`.
    """
    kwargs = _resolve(profile_or_sizes)
    kwargs.pop("seed", None)
    kwargs.pop("progress", None)
    cache = {"kwargs": kwargs, "seed": seed, "version": GENERATOR_VERSION}
    return stand_in("camelyon16_synthetic", cache, base=cache_dir,
                    write=lambda root: generate(root, seed=seed, progress=progress, **kwargs))


def write_large_slide(
    path: str | os.PathLike,
    side: int | tuple[int, int] = 100_000,
    seed: int = 0,
    *,
    tumour: bool = True,
    annotation: str | os.PathLike | None = None,
    tile: int = 512,
    compression: str = "jpeg",
    quality: int = 80,
    metastasis_radius: tuple[float, float] = (20.0, 52.0),
    progress: bool = True,
) -> Path:
    """Write one big stand-in slide (side 100,000: 10 gigapixels) in memory O(tile); its XML to `annotation`."""
    H, W = (side, side) if isinstance(side, (int, np.integer)) else (int(side[0]), int(side[1]))
    slide = SyntheticSlide(H, W, [int(seed), 7], tumour=tumour, metastases=(3, 6), metastasis_radius=metastasis_radius)
    out = slide.write(path, tile=tile, compression=compression, quality=quality, progress=progress)
    if annotation is not None and tumour:
        slide.write_annotation(annotation)
    return out
