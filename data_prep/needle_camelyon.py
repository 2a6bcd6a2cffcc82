"""NeedleCamelyon: fixed-size crops of Camelyon16-layout slides with a tiny metastasis-to-crop ratio.

Zoom-In (Kong & Henao, sec. 4 "NeedleCamelyon" and appendix D), after Pawlowski et al. 2019
("Needles in haystacks", ref. [37]): "we generate datasets for ROI-to-image ratios in the range of
[0.1, 1]%, and we crop each image with size of 1,024 x 1,024 pixels. Positive examples are created
by taking 50 random crops from every annotated cancer metastasis area if the ROI-to-image ratio
falls within the range [0.1, 1]%. Negative examples are taken by randomly cropping normal
whole-slide images and filtering out image crops that mostly contain background. Further, we
ensure the class balance by sampling an equal amount of positive and negative crops." Appendix D:
"We first split the unique metastases ... for positive samples in training set, validation set and
test set" (122, 41 and 41 metastases: 60:20:20), giving 6000 / 2000 / 2000 crops.

The recipe here, on any folder in the Camelyon16 layout (`data_prep.camelyon16`; the real data or
`data_prep.synthetic_slides`' stand-in):

- A metastasis is one ASAP annotation polygon of a tumour group (`_0`, `_1`, `Tumor`) of a tumour
  slide, training or test. Its ROI-to-image ratio in a crop is the number of metastasis pixels in
  the crop (every tumour polygon, `_2` holes cleared: `annotation_mask`'s pixel-centre rule at the
  crop's level) over the crop's pixels. As in the public generator of [37]
  (`extract_basic_pos_crops.py`), a positive crop contains its metastasis whole and lies inside
  the slide; a metastasis larger than the crop or than the upper ratio yields no crop. Up to
  `per_metastasis` (50) crops are drawn uniformly without replacement among all valid positions
  (an exact enumeration by summed-area table, not rejection sampling).
- Splits are 60:20:20 **by metastasis**. Metastases of one slide whose drawn crops overlap form a
  group that goes to one split, so no pixel of a positive crop appears in two splits; groups are
  dealt to the split furthest below its share, so with isolated metastases the counts are exactly
  the rounded 60:20:20 (`split_counts(204)` is the paper's 122 / 41 / 41).
- Negatives come from normal slides (training normal and test 'Normal'), split 60:20:20 by slide;
  random crops inside the slide whose tissue fraction (`zoomin_lib.infra.slides.tissue_mask` on a
  low-resolution view, over the crop's footprint) is at least `min_tissue` ("filtering out image
  crops that mostly contain background"). Each split gets exactly as many negatives as positives,
  dealt round-robin over its slides.
- Crops are read lazily (`open_slide(...).read_region`) and written atomically
  (`zoomin_lib.infra.io.atomic_dir`) as PNG under `crops/<split>/`, positives' metastasis masks under
  `masks/<split>/`, with `index.csv` (file, split, label, slide, level-0 location, level, size,
  ratio, metastasis, group, tissue) and `parameters.json`. `load_needle_camelyon` returns a torch
  Dataset of float [3, S, S] images in [0, 1] and int64 labels.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import skimage.draw
import torch
from PIL import Image

from data_prep.camelyon16 import (
    HOLE_GROUPS,
    TUMOUR_GROUPS,
    Camelyon16,
    Polygon,
    SlideRecord,
    load_camelyon16,
    parse_asap_xml,
)
from data_prep.problems import DataFileError, describe, read_rgb
from data_prep.statistics import MeasuredStatistics, Quoted, RealStatistics
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, read_json, write_json
from zoomin_lib.infra.progress import tqdm
from zoomin_lib.infra.slides import Slide, open_slide, tissue_mask

__all__ = [
    "VERSION",
    "SPLITS",
    "PROFILES",
    "Metastasis",
    "Crop",
    "annotation_window",
    "find_metastases",
    "positive_positions",
    "overlap_groups",
    "split_counts",
    "assign_splits",
    "crop_tissue_fraction",
    "prepare_needle_camelyon",
    "needle_camelyon",
    "NeedleCamelyon",
    "load_needle_camelyon",
    "REAL_STATISTICS",
    "measure_stand_in",
]

VERSION = 1
SPLITS = ("train", "val", "test")
FRACTIONS = (0.6, 0.2, 0.2)
INDEX = "index.csv"
PNG_LEVEL = 1  # zlib level of the crops' PNGs: lossless, and several times faster to write than the default 6
COLUMNS = ("file", "split", "label", "slide_id", "x", "y", "level", "size", "ratio", "metastasis", "group", "tissue")
PROFILES: dict[str, dict[str, Any]] = {  # crop parameters per profile (the source comes from synthetic_slides)
    "smoke": dict(crop=256, per_metastasis=50),
    "cpu": dict(crop=1024, per_metastasis=50),
    "gpu": dict(crop=1024, per_metastasis=50),  # cut from synthetic_slides' larger gpu stand-in
    "paper": dict(crop=1024, per_metastasis=50, max_positives=(3000, 1000, 1000)),
}
_FILLED = {"polygon", "spline", "rectangle"}  # ASAP types with an area, as annotation_mask
_GLOBAL_RASTER = 4  # polygons whose box is at most this many windows are rasterised in slide coordinates


@dataclass(frozen=True, eq=False)
class Metastasis:
    """One tumour polygon of one slide: the slide, its index among the XML's annotations, its vertices."""

    slide: SlideRecord
    index: int
    name: str
    coordinates: np.ndarray  # [K, 2] level-0 (x, y)

    @property
    def id(self) -> str:
        """'<slide id>/<annotation index>', e.g. 'tumor_001/3'."""
        return f"{self.slide.slide_id}/{self.index}"


@dataclass(frozen=True)
class Crop:
    """One crop of the prepared data set (a row of index.csv)."""

    file: str
    split: str
    label: int
    slide_id: str
    x: int  # level-0 column of the top-left corner
    y: int  # level-0 row
    level: int
    size: int
    ratio: float  # metastasis pixels / crop pixels (0 for negatives)
    metastasis: str  # Metastasis.id, '' for negatives
    group: int  # overlap group of the metastasis, -1 for negatives
    tissue: float  # tissue fraction of the crop's footprint (negatives), nan for positives


# -------------------------------------------------------------------- masks


def _wanted(p: Polygon, groups: frozenset[str] | set[str]) -> bool:
    """True for a filled polygon (>= 3 vertices) of one of `groups`."""
    return p.group in groups and p.type.lower() in _FILLED and len(p.coordinates) >= 3


def annotation_window(
    polygons: Sequence[Polygon], x0: int, y0: int, w: int, h: int, downsample: float = 1.0
) -> np.ndarray:
    """Metastasis bool [h, w] of the window at level pixels (x0, y0): `annotation_mask(...)[y0:y0+h, x0:x0+w]`.

    Tumour polygons are filled, then holes cleared, with `annotation_mask`'s arithmetic (vertex /
    downsample - 0.5, pixel centres inside). Polygons whose box is at most a few windows are
    rasterised in slide coordinates, so the pixels equal the whole-slide mask's bit for bit; larger
    ones in window coordinates (memory O(window)), which can differ on pixels whose centres lie on
    an edge up to rounding.
    """
    mask = np.zeros((h, w), dtype=bool)
    for groups, value in ((TUMOUR_GROUPS, True), (HOLE_GROUPS, False)):
        for p in polygons:
            if not _wanted(p, groups):
                continue
            rows = p.coordinates[:, 1] / downsample - 0.5
            cols = p.coordinates[:, 0] / downsample - 0.5
            if rows.max() < y0 - 1 or cols.max() < x0 - 1 or rows.min() > y0 + h or cols.min() > x0 + w:
                continue
            box = (rows.max() - rows.min() + 2) * (cols.max() - cols.min() + 2)
            if box <= _GLOBAL_RASTER * max(h * w, 1):
                rr, cc = skimage.draw.polygon(rows, cols, shape=(y0 + h, x0 + w))
                keep = (rr >= y0) & (cc >= x0)
                rr, cc = rr[keep] - y0, cc[keep] - x0
            else:
                rr, cc = skimage.draw.polygon(rows - y0, cols - x0, shape=(h, w))
            mask[rr, cc] = value
    return mask


def _integral(mask: np.ndarray) -> np.ndarray:
    """Summed-area table int64 [h + 1, w + 1] of a 2-d array."""
    table = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    table[1:, 1:] = np.asarray(mask, dtype=np.int64).cumsum(0).cumsum(1)
    return table


def _box_sums(table: np.ndarray, r0: np.ndarray, c0: np.ndarray, r1: np.ndarray, c1: np.ndarray) -> np.ndarray:
    """Sums over boxes [r0, r1) x [c0, c1) from a summed-area table (broadcasting index arrays)."""
    return table[r1, c1] - table[r0, c1] - table[r1, c0] + table[r0, c0]


# -------------------------------------------------------------------- metastases


def find_metastases(dataset: Camelyon16 | Iterable[SlideRecord], strict: bool = True) -> list[Metastasis]:
    """Every tumour polygon of every tumour slide; a tumour slide without its XML is an error naming the file.

    With `strict=False` such slides are skipped (they give no positives and are never negatives).
    """
    records = dataset.slides if isinstance(dataset, Camelyon16) else list(dataset)
    found = []
    for record in records:
        if record.label != 1:
            continue
        if record.annotation is None or not Path(record.annotation).is_file():
            if strict:
                raise FileNotFoundError(
                    f"{record.path}: tumour slide without its lesion annotation XML "
                    f"(expected lesion_annotations/{record.slide_id}.xml beside its split's images); "
                    "NeedleCamelyon needs the metastasis polygons (pass strict=False to skip it)"
                )
            continue
        for k, p in enumerate(parse_asap_xml(record.annotation)):
            if _wanted(p, TUMOUR_GROUPS):
                found.append(Metastasis(record, k, p.name, p.coordinates))
    return found


def positive_positions(
    metastasis: Metastasis,
    polygons: Sequence[Polygon],
    level_size: tuple[int, int],
    downsample: float,
    crop: int,
    ratio: tuple[float, float],
) -> tuple[np.ndarray, np.ndarray]:
    """(top-left corners int64 [n, 2] (x, y) at the level, ratios float64 [n]) of every valid crop of a metastasis.

    Valid: the crop lies inside the level of size `level_size` = (w, h), holds every pixel of the
    metastasis, and its ratio of metastasis pixels (all tumour polygons) lies in [ratio[0], ratio[1]].
    """
    empty = np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    lw, lh = level_size
    xy = metastasis.coordinates / downsample - 0.5  # [K, 2] in level pixel-centre coordinates
    (bx0, by0), (bx1, by1) = np.floor(xy.min(axis=0)).astype(int), np.ceil(xy.max(axis=0)).astype(int)
    if bx1 - bx0 > crop + 2 or by1 - by0 > crop + 2 or crop > min(lw, lh):
        return empty  # cannot lie inside one crop
    wx0, wy0 = max(bx0 - crop, 0), max(by0 - crop, 0)
    wx1, wy1 = min(bx1 + crop + 1, lw), min(by1 + crop + 1, lh)
    own = annotation_window([Polygon("_0", metastasis.name, "Polygon", metastasis.coordinates)],
                            wx0, wy0, wx1 - wx0, wy1 - wy0, downsample)
    if not own.any() or own.sum() > ratio[1] * crop * crop:
        return empty
    rows, cols = np.nonzero(own.any(axis=1))[0], np.nonzero(own.any(axis=0))[0]
    r_first, r_last, c_first, c_last = rows[0] + wy0, rows[-1] + wy0, cols[0] + wx0, cols[-1] + wx0
    ys = np.arange(max(r_last - crop + 1, 0), min(r_first, lh - crop) + 1)  # level rows of valid tops
    xs = np.arange(max(c_last - crop + 1, 0), min(c_first, lw - crop) + 1)
    if len(ys) == 0 or len(xs) == 0:
        return empty
    table = _integral(annotation_window(polygons, wx0, wy0, wx1 - wx0, wy1 - wy0, downsample))
    r0, c0 = (ys - wy0)[:, None], (xs - wx0)[None, :]
    ratios = _box_sums(table, r0, c0, r0 + crop, c0 + crop) / float(crop * crop)  # [ny, nx]
    iy, ix = np.nonzero((ratios >= ratio[0]) & (ratios <= ratio[1]))
    return np.stack([xs[ix], ys[iy]], axis=1).astype(np.int64), ratios[iy, ix]


def _overlap(a: np.ndarray, b: np.ndarray, crop: int) -> bool:
    """True when some crop of corners a [n, 2] overlaps some crop of corners b [m, 2] (squares of side `crop`)."""
    d = np.abs(a[:, None, :] - b[None, :, :])  # [n, m, 2]
    return bool(((d[..., 0] < crop) & (d[..., 1] < crop)).any())


def overlap_groups(slide_ids: Sequence[str], corners: Sequence[np.ndarray], crop: int) -> list[int]:
    """Group index per metastasis: metastases of one slide with overlapping crops are joined (union-find)."""
    parent = list(range(len(corners)))

    def find(i: int) -> int:
        """The root of i's group."""
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lo = [c.min(axis=0) for c in corners]
    hi = [c.max(axis=0) for c in corners]
    for i in range(len(corners)):
        for j in range(i):
            near = slide_ids[i] == slide_ids[j] and (lo[i] - hi[j] < crop).all() and (lo[j] - hi[i] < crop).all()
            if near and _overlap(corners[i], corners[j], crop):
                parent[find(i)] = find(j)
    roots = [find(i) for i in range(len(corners))]
    first = {r: k for k, r in enumerate(dict.fromkeys(roots))}
    return [first[r] for r in roots]


# -------------------------------------------------------------------- splits


def split_counts(n: int, fractions: Sequence[float] = FRACTIONS) -> list[int]:
    """`n` items dealt to the splits by `fractions` (largest remainder; every split >= 1 when n allows)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or len(f) != len(SPLITS) or (f <= 0).any() or abs(f.sum() - 1) > 1e-9:
        raise ValueError(f"fractions must be {len(SPLITS)} positive numbers summing to 1 {SPLITS}, got {fractions}")
    raw = n * f
    counts = np.floor(raw).astype(int)
    for k in np.argsort(-(raw - counts), kind="stable")[: n - counts.sum()]:
        counts[k] += 1
    while n >= len(f) and (counts == 0).any():
        counts[np.argmax(counts)] -= 1
        counts[np.argmin(counts)] += 1
    return counts.tolist()


def assign_splits(group_sizes: Sequence[int], fractions: Sequence[float], rng: np.random.Generator) -> list[str]:
    """A split per group: groups in random order (largest first) go to the split furthest below its share of items."""
    sizes = np.asarray(group_sizes, dtype=np.int64)
    target = np.asarray(split_counts(int(sizes.sum()), fractions), dtype=np.float64)
    have = np.zeros(len(SPLITS))
    out = [""] * len(sizes)
    order = rng.permutation(len(sizes))
    order = order[np.argsort(-sizes[order], kind="stable")]
    for g in order:
        k = int(np.argmax(target - have))
        out[g] = SPLITS[k]
        have[k] += sizes[g]
    return out


# -------------------------------------------------------------------- negatives


def _tissue_scale(crop: int, downsample: float) -> float:
    """The view scale for tissue masks: about 16 mask pixels across a crop, at most 1."""
    return min(1.0, 16.0 / (crop * downsample))


def crop_tissue_fraction(
    mask: np.ndarray, xs: np.ndarray, ys: np.ndarray, footprint: float, slide_dimensions: tuple[int, int]
) -> np.ndarray:
    """Tissue fraction float64 [n] of level-0 boxes at (xs, ys) of side `footprint`, over the mask pixels they touch.

    As `zoomin_lib.infra.slides.tile_fraction`: mask pixel i covers level-0 [i W / w, (i + 1) W / w).
    """
    W, H = slide_dimensions
    h, w = mask.shape
    r0, c0 = ys * h // H, xs * w // W
    r1 = np.minimum(-(-(ys + int(np.ceil(footprint))) * h // H), h)
    c1 = np.minimum(-(-(xs + int(np.ceil(footprint))) * w // W), w)
    r1, c1 = np.maximum(r1, r0 + 1), np.maximum(c1, c0 + 1)
    return _box_sums(_integral(mask), r0, c0, r1, c1) / ((r1 - r0) * (c1 - c0))


def _negative_candidates(
    slide: Slide, crop: int, level: int, min_tissue: float, n: int, rng: np.random.Generator, batches: int = 64
) -> tuple[np.ndarray, np.ndarray]:
    """Up to `n` distinct level corners [m, 2] (x, y) of crops with tissue >= min_tissue, and their fractions [m]."""
    ds = slide.level_downsamples[level]
    lw, lh = slide.level_dimensions[level]
    if crop > min(lw, lh):
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    mask = tissue_mask(slide, _tissue_scale(crop, ds))
    if not mask.any():
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    chosen: dict[tuple[int, int], float] = {}
    for _ in range(batches):
        xs = rng.integers(0, lw - crop + 1, size=4096)
        ys = rng.integers(0, lh - crop + 1, size=4096)
        x0 = np.rint(xs * ds).astype(np.int64)
        y0 = np.rint(ys * ds).astype(np.int64)
        frac = crop_tissue_fraction(mask, x0, y0, crop * ds, slide.dimensions)
        for k in np.nonzero(frac >= min_tissue)[0]:
            chosen.setdefault((int(xs[k]), int(ys[k])), float(frac[k]))
            if len(chosen) >= n:
                break
        if len(chosen) >= n:
            break
    corners = np.array(list(chosen), dtype=np.int64).reshape(-1, 2)
    return corners, np.array(list(chosen.values()))


def _level0(c: int, downsample: float) -> int:
    """The level-0 coordinate that read_region maps back to level coordinate `c` (floor(x / downsample) == c)."""
    x = int(np.ceil(c * downsample))
    while np.floor(x / downsample) > c:
        x -= 1
    while np.floor(x / downsample) < c:
        x += 1
    return x


def _deal(pools: list[int], total: int) -> list[int]:
    """How many to take from each pool (round-robin, a pool giving at most its size) to reach `total`."""
    take = [0] * len(pools)
    while sum(take) < total:
        progressed = False
        for i, size in enumerate(pools):
            if sum(take) < total and take[i] < size:
                take[i] += 1
                progressed = True
        if not progressed:
            break
    return take


# -------------------------------------------------------------------- preparing


def _check_params(crop: int, ratio: tuple[float, float], per_metastasis: int, min_tissue: float, level: int) -> None:
    """ValueError naming a parameter out of range."""
    if int(crop) != crop or crop < 16:
        raise ValueError(f"crop must be an int >= 16, got {crop!r}")
    if not 0 <= ratio[0] <= ratio[1] <= 1:
        raise ValueError(f"ratio must be (low, high) with 0 <= low <= high <= 1, got {ratio!r}")
    if int(per_metastasis) != per_metastasis or per_metastasis < 1:
        raise ValueError(f"per_metastasis must be a positive int, got {per_metastasis!r}")
    if not 0 <= min_tissue <= 1:
        raise ValueError(f"min_tissue must lie in [0, 1], got {min_tissue!r}")
    if int(level) != level or level < 0:
        raise ValueError(f"level must be a non-negative int, got {level!r}")


def _draw_positions(
    mets: list[Metastasis], crop: int, level: int, ratio: tuple[float, float], per_metastasis: int, seed: int,
    progress: bool,
) -> list[tuple[Metastasis, np.ndarray, np.ndarray, float]]:
    """(metastasis, level corners [n, 2], ratios [n], downsample) for each metastasis with a valid crop."""
    by_slide: dict[str, list[Metastasis]] = {}
    for m in mets:
        by_slide.setdefault(m.slide.slide_id, []).append(m)
    picked = []
    for items in tqdm(by_slide.values(), desc="metastases", unit="slide", disable=not progress):
        record = items[0].slide
        polygons = parse_asap_xml(record.annotation)
        with open_slide(record.path) as slide:
            if level >= slide.level_count:
                raise ValueError(f"{record.path}: has {slide.level_count} levels, level {level} requested")
            ds, size = slide.level_downsamples[level], slide.level_dimensions[level]
        for m in items:
            corners, ratios = positive_positions(m, polygons, size, ds, crop, ratio)
            if len(corners):
                rng = np.random.default_rng([seed, 1, *m.id.encode()])
                pick = np.sort(rng.choice(len(corners), size=min(per_metastasis, len(corners)), replace=False))
                picked.append((m, corners[pick], ratios[pick], ds))
    return picked


def _positives(
    dataset: Camelyon16, crop: int, level: int, ratio: tuple[float, float], per_metastasis: int,
    fractions: Sequence[float], seed: int, strict: bool, progress: bool,
) -> tuple[list[Crop], dict[str, Any]]:
    """Positive crops with their split (metastases with overlapping crops kept together), and a summary."""
    mets = find_metastases(dataset, strict=strict)
    picked = _draw_positions(mets, crop, level, ratio, per_metastasis, seed, progress)
    if len(picked) < len(SPLITS):
        raise ValueError(
            f"{dataset.root}: {len(picked)} of {len(mets)} metastases give a {crop} x {crop} crop with a "
            f"metastasis ratio in [{ratio[0]:.4%}, {ratio[1]:.4%}]; a 60:20:20 split needs at least {len(SPLITS)}"
        )
    groups = overlap_groups([m.slide.slide_id for m, *_ in picked], [c for _, c, _, _ in picked], crop)
    sizes = np.bincount(groups)
    split_of_group = assign_splits(sizes, fractions, np.random.default_rng([seed, 2]))
    crops = []
    for (m, corners, ratios, ds), g in zip(picked, groups):
        for (cx, cy), r in zip(corners, ratios):
            x, y = _level0(int(cx), ds), _level0(int(cy), ds)
            file = f"{split_of_group[g]}/{m.slide.slide_id}_x{x}_y{y}_m{m.index}.png"
            crops.append(Crop(file, split_of_group[g], 1, m.slide.slide_id, x, y, level, crop, float(r), m.id, g,
                              float("nan")))
    summary = {
        "metastases": len(mets),
        "metastases_with_crops": len(picked),
        "metastases_per_split": {s: sum(split_of_group[g] == s for g in groups) for s in SPLITS},
        "groups": int(len(sizes)),
    }
    return crops, summary


def _cap(crops: list[Crop], max_positives: Sequence[int] | None, seed: int) -> list[Crop]:
    """At most max_positives[k] positives in split k, a random subset (all when None)."""
    if max_positives is None:
        return crops
    out = []
    for k, split in enumerate(SPLITS):
        mine = [c for c in crops if c.split == split]
        if len(mine) > max_positives[k]:
            keep = np.random.default_rng([seed, 3, k]).choice(len(mine), size=int(max_positives[k]), replace=False)
            mine = [mine[i] for i in np.sort(keep)]
        out += mine
    return out


def _negatives(
    dataset: Camelyon16, wanted: dict[str, int], crop: int, level: int, min_tissue: float,
    fractions: Sequence[float], seed: int, progress: bool,
) -> list[Crop]:
    """As many negative crops per split as `wanted`, from normal slides split by slide."""
    normals = sorted((r for r in dataset.slides if r.label == 0), key=lambda r: r.slide_id)
    if len(normals) < len(SPLITS):
        raise ValueError(
            f"{dataset.root}: {len(normals)} normal slides; negatives split by slide need at least {len(SPLITS)}"
        )
    order = np.random.default_rng([seed, 4]).permutation(len(normals))
    bounds = np.cumsum([0, *split_counts(len(normals), fractions)])
    crops = []
    for k, split in enumerate(SPLITS):
        records = [normals[i] for i in order[bounds[k] : bounds[k + 1]]]
        pools = []
        for record in tqdm(records, desc=f"negatives ({split})", unit="slide", disable=not progress):
            with open_slide(record.path) as slide:
                if level >= slide.level_count:
                    raise ValueError(f"{record.path}: has {slide.level_count} levels, level {level} requested")
                ds = slide.level_downsamples[level]
                rng = np.random.default_rng([seed, 5, *record.slide_id.encode()])
                corners, frac = _negative_candidates(slide, crop, level, min_tissue, wanted[split], rng)
            pools.append((record, corners, frac, ds))
        take = _deal([len(p[1]) for p in pools], wanted[split])
        if sum(take) < wanted[split]:
            names = ", ".join(r.slide_id for r in records)
            raise ValueError(
                f"{dataset.root}: split {split!r} needs {wanted[split]} negative crops with tissue >= {min_tissue:.0%} "
                f"but its normal slides ({names}) give {sum(take)}"
            )
        for (record, corners, frac, ds), n in zip(pools, take):
            for (cx, cy), t in zip(corners[:n], frac[:n]):
                x, y = _level0(int(cx), ds), _level0(int(cy), ds)
                file = f"{split}/{record.slide_id}_x{x}_y{y}.png"
                crops.append(Crop(file, split, 0, record.slide_id, x, y, level, crop, 0.0, "", -1, float(t)))
    return crops


def _write_crops(tmp: Path, dataset: Camelyon16, crops: list[Crop], progress: bool) -> None:
    """Read each crop lazily from its slide and write it (and a positive's metastasis mask) as PNG."""
    records = {r.slide_id: r for r in dataset.slides}
    by_slide: dict[str, list[Crop]] = {}
    for c in crops:
        by_slide.setdefault(c.slide_id, []).append(c)
    bar = tqdm(total=len(crops), desc="crops", unit="crop", disable=not progress)
    for slide_id, items in by_slide.items():
        record = records[slide_id]
        polygons = parse_asap_xml(record.annotation) if record.label == 1 else []
        with open_slide(record.path) as slide:
            ds = slide.level_downsamples[items[0].level]
            for c in items:
                image = slide.read_region((c.x, c.y), c.level, (c.size, c.size))  # [S, S, 3]
                (tmp / "crops" / c.file).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(image).save(tmp / "crops" / c.file, compress_level=PNG_LEVEL)
                if c.label == 1:
                    lx, ly = int(np.floor(c.x / ds)), int(np.floor(c.y / ds))  # read_region's rule
                    mask = annotation_window(polygons, lx, ly, c.size, c.size, ds)  # [S, S]
                    (tmp / "masks" / c.file).parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(mask).save(tmp / "masks" / c.file, compress_level=PNG_LEVEL)
                bar.update()
    bar.close()


def _write_index(path: Path, crops: list[Crop]) -> None:
    """index.csv: one row per crop, COLUMNS in order."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(COLUMNS)
        for c in crops:
            ratio = f"{c.ratio:.8f}"
            tissue = "" if np.isnan(c.tissue) else f"{c.tissue:.6f}"
            writer.writerow([c.file, c.split, c.label, c.slide_id, c.x, c.y, c.level, c.size, ratio, c.metastasis,
                             c.group, tissue])


def _source_description(root: Path) -> str:
    """'synthetic stand-in ...' when the source folder is data_prep.synthetic_slides' stand-in, else 'Camelyon16'."""
    path = root / "parameters.json"
    try:
        params = read_json(path) if path.is_file() else {}
    except ValueError:
        params = {}
    return str(params.get("description", "Camelyon16")) if isinstance(params, dict) else "Camelyon16"


def prepare_needle_camelyon(
    source: str | os.PathLike | Camelyon16,
    out: str | os.PathLike,
    *,
    crop: int = 1024,
    level: int = 0,
    ratio: tuple[float, float] = (0.001, 0.01),
    per_metastasis: int = 50,
    fractions: Sequence[float] = FRACTIONS,
    min_tissue: float = 0.5,
    max_positives: Sequence[int] | None = None,
    seed: int = 0,
    strict: bool = True,
    progress: bool = False,
    extra_parameters: dict[str, Any] | None = None,
) -> Path:
    """Crop NeedleCamelyon from a Camelyon16-layout folder (or a loaded `Camelyon16`) into `out`, atomically.

    `crop` is the side in pixels of `level`; `ratio` the closed range of metastasis pixels per
    crop pixel; `per_metastasis` the most crops per metastasis; `fractions` the train/val/test
    shares of metastases (and of normal slides); `min_tissue` the least tissue fraction of a
    negative crop; `max_positives` optional caps per split (the paper's 6000/2000/2000 crops are
    (3000, 1000, 1000) positives). Returns `out`.
    """
    _check_params(crop, ratio, per_metastasis, min_tissue, level)
    split_counts(10, fractions)  # validates the fractions
    dataset = source if isinstance(source, Camelyon16) else load_camelyon16(source)
    positives, summary = _positives(dataset, crop, level, ratio, per_metastasis, fractions, seed, strict, progress)
    positives = _cap(positives, max_positives, seed)
    wanted = {s: sum(1 for c in positives if c.split == s) for s in SPLITS}
    negatives = _negatives(dataset, wanted, crop, level, min_tissue, fractions, seed, progress)
    crops = sorted(positives + negatives, key=lambda c: (SPLITS.index(c.split), -c.label, c.file))
    described = _source_description(Path(dataset.root))
    params = {
        "description": f"NeedleCamelyon crops (Zoom-In appendix D) of {described}",
        "generator": "data_prep.needle_camelyon.prepare_needle_camelyon",
        "version": VERSION,
        "source": str(Path(dataset.root)),
        "source_description": described,
        "crop": int(crop), "level": int(level), "ratio": [float(r) for r in ratio],
        "per_metastasis": int(per_metastasis), "fractions": [float(f) for f in fractions],
        "min_tissue": float(min_tissue), "max_positives": None if max_positives is None else list(max_positives),
        "seed": int(seed), "strict": bool(strict),
        "counts": {s: {"positive": wanted[s], "negative": wanted[s]} for s in SPLITS},
        **summary,
        **(extra_parameters or {}),
    }
    with atomic_dir(out) as tmp:
        _write_crops(tmp, dataset, crops, progress)
        _write_index(tmp / INDEX, crops)
        write_json(tmp / "parameters.json", params)
        (tmp / "README.txt").write_text(
            f"NeedleCamelyon crops (Zoom-In appendix D) prepared by data_prep.needle_camelyon from {described}.\n"
            "index.csv lists every crop; crops/<split>/ holds the images, masks/<split>/ the positives'\n"
            "metastasis masks.\n"
        )
    return Path(out)


def _source_key(root: Path) -> str:
    """A digest of a source folder's slide and XML names and sizes, and its parameters.json (cache key)."""
    h = hashlib.sha1()
    kept = (".tif", ".xml", ".csv", ".json")
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in kept):
        h.update(f"{path.relative_to(root)}:{path.stat().st_size};".encode())
    return h.hexdigest()[:12]


def needle_camelyon(
    source: str | os.PathLike | None = None,
    profile: str = "smoke",
    cache_dir: str | os.PathLike | None = None,
    *,
    progress: bool = True,
    **params: Any,
) -> Path:
    """The prepared NeedleCamelyon folder, cached under data/needle_camelyon/<key>; regenerated when anything changes.

    `source` is a Camelyon16-layout folder; None uses `data_prep.synthetic_slides.synthetic_camelyon(profile)`
    (the stand-in; 'paper' needs the real folder). `params` override the profile's crop parameters
    (`prepare_needle_camelyon` keyword arguments).
    """
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    if source is None:
        from data_prep.synthetic_slides import synthetic_camelyon

        source = synthetic_camelyon(profile, progress=progress)
    root = Path(source)
    kwargs = {**PROFILES[profile], **params}
    cache = {"profile": profile, "kwargs": kwargs, "source": str(root.resolve()), "files": _source_key(root),
             "version": VERSION}
    return stand_in("needle_camelyon", cache, base=cache_dir,
                    write=lambda out: prepare_needle_camelyon(root, out, progress=progress, **kwargs))


# -------------------------------------------------------------------- loading


def _read_index(root: Path) -> list[dict[str, str]]:
    """The rows of index.csv, or an error naming the file."""
    path = root / INDEX
    if not path.is_file():
        raise FileNotFoundError(f"{path}: missing; not a prepared NeedleCamelyon folder (see prepare_needle_camelyon)")
    with path.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != COLUMNS:
            raise ValueError(f"{path}: columns {reader.fieldnames}, expected {list(COLUMNS)}")
        return list(reader)


class NeedleCamelyon(torch.utils.data.Dataset):
    """One split of a prepared folder: item i is (image float32 [3, S, S] in [0, 1], label int64 [])."""

    def __init__(self, root: str | os.PathLike, split: str) -> None:
        """Read the index rows of `split` ('train', 'val' or 'test')."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split = split
        self.rows = [r for r in _read_index(self.root) if r["split"] == split]
        self.labels = torch.tensor([int(r["label"]) for r in self.rows], dtype=torch.int64)  # [N]
        self.parameters = read_json(self.root / "parameters.json") if (self.root / "parameters.json").is_file() else {}

    @property
    def synthetic(self) -> bool:
        """True when the crops come from the synthetic stand-in."""
        return "synthetic" in str(self.parameters.get("source_description", ""))

    def __len__(self) -> int:
        """Number of crops in the split."""
        return len(self.rows)

    def image(self, i: int) -> np.ndarray:
        """Crop i as uint8 [S, S, 3]."""
        path = self.root / "crops" / self.rows[i]["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: crop listed in {self.root / INDEX} is missing")
        return read_rgb(path)  # errors name the file

    def mask(self, i: int) -> np.ndarray:
        """The metastasis mask of crop i, bool [S, S] (all False for a negative)."""
        size = int(self.rows[i]["size"])
        if self.rows[i]["label"] != "1":
            return np.zeros((size, size), dtype=bool)
        path = self.root / "masks" / self.rows[i]["file"]
        if not path.is_file():
            raise FileNotFoundError(f"{path}: mask of a positive crop listed in {self.root / INDEX} is missing")
        try:
            with Image.open(path) as img:
                return np.asarray(img.convert("L")) > 127
        except (OSError, ValueError, SyntaxError) as err:
            raise DataFileError(path, f"not a readable mask image ({describe(err)})") from err

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image float32 [3, S, S] in [0, 1], label int64 [])."""
        x = torch.from_numpy(self.image(i)).permute(2, 0, 1).float().div_(255)  # [3, S, S]
        return x, self.labels[i]

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All crops as float32 [N, 3, S, S] and labels int64 [N] (small splits only: N S^2 x 12 bytes)."""
        if not self.rows:
            return torch.zeros((0, 3, 0, 0)), self.labels
        return torch.stack([self[i][0] for i in range(len(self))]), self.labels


def load_needle_camelyon(root: str | os.PathLike, split: str) -> NeedleCamelyon:
    """A split of a prepared NeedleCamelyon folder as a torch Dataset."""
    return NeedleCamelyon(root, split)


REAL_STATISTICS = RealStatistics(
    dataset="NeedleCamelyon",
    object_name="metastasis",
    image_size=Quoted("1,024 x 1,024 crops", "Zoom-In sec. 4 (ii)"),
    object_side=Quoted("32-102 (sqrt of 0.1-1 % of 1,024^2, from the two statistics beside it)", "Zoom-In sec. 4 (ii)"),
    object_fraction=Quoted("0.1-1 (the ROI-to-image ratio)", "Zoom-In sec. 4 (ii)"),
    objects_per_image=Quoted("positives: a crop of one annotated metastasis area (50 per metastasis); negatives: "
                             "none (crops of normal slides)", "Zoom-In sec. 4 (ii)"),
    object_side_px=(1024 * 0.001 ** 0.5, 1024 * 0.01 ** 0.5),
    object_side_source="sqrt(0.1-1 %) x 1,024 px",
    extra=(("what the low-resolution view shows",
            Quoted("s1 = 0.25, s2 = 0.5 were set larger than for colon cancer 'to ensure the down-sampling will not "
                   "wash out the discriminative information'", "Zoom-In sec. 4, NeedleCamelyon")),),
)


def measure_stand_in(data: NeedleCamelyon) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics measured on a prepared split, from its index (crop sizes, metastasis ratios; no pixels).

    A positive crop holds one metastasis whole; its area is the recorded ratio (metastasis pixels over the crop's,
    every tumour polygon counted) times the crop's area. A negative holds none.
    """
    sizes = np.array([int(r["size"]) for r in data.rows], dtype=np.int64)  # [M]
    positive = np.array([r["label"] == "1" for r in data.rows], dtype=bool)  # [M]
    ratios = np.array([float(r["ratio"]) for r in data.rows], dtype=np.float64)[positive]  # [K]
    return MeasuredStatistics(REAL_STATISTICS.dataset, REAL_STATISTICS.object_name, np.stack([sizes, sizes], axis=1),
                              np.sqrt(ratios) * sizes[positive], ratios, positive.astype(np.int64))
