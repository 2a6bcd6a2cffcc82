"""The colon cancer dataset (CRCHistoPhenotypes) in its distributed format, and a synthetic stand-in.

Real data. Sirinukunwattana et al. (IEEE TMI 35(5), 2016; ref. [42] of the Zoom-In paper)
released 100 H&E stained colon histology images of 500x500 pixels with about 22,000 annotated
nuclei. ATS (Katharopoulos & Fleuret 2019, sec. 4.3, after Ilse et al. 2018) labels an image
positive when it contains at least one epithelial nucleus; Zoom-In (Kong & Henao, sec. 4 "Colon
cancer") keeps that task and evaluates by 10-fold cross-validation with five repetitions, "the
same experimental setup as [16, 20]". The archive `CRCHistoPhenotypes_2016_04_28` is laid out as

    <root>/Classification/imgN/imgN.bmp                 500x500 RGB (some files RGBA)
    <root>/Classification/imgN/imgN_<type>.mat          type in epithelial, fibroblast,
                                                        inflammatory, others

where each .mat holds one variable `detection`: an M x 2 array of nucleus centres, (x, y) =
(column, row) as stored (possibly empty). An image is positive iff its epithelial `detection`
is non-empty.

Synthetic stand-in (no download possible at run time). `write_synthetic` writes the same layout:
the background is real tissue, `skimage.data.immunohistochemistry()` (`ihc.png`, shipped in the
scikit-image wheel; colonic glands, IHC with hematoxylin counterstain, acquired at the Center for
Microscopy And Molecular Imaging (CMMI), "No known copyright restrictions"), separated into stain
concentrations and re-tinted towards H&E, then randomly cropped, flipped, rotated by 90 degrees
and colour-jittered. Drawn nuclei on top: inflammatory (small, round, very dark), fibroblast
(spindles), others (medium, round, pale) in every image, and in positive images 10-30 gland-like
rings tried (as many as fit) of larger, radially oriented, dark-purple epithelial nuclei around a pale
lumen, crowded round one hub (a lesion over up to a third of the image, not a scatter over all of it).
The epithelial rings are clear at full resolution and faint after 10x downsampling, where small
inflammatory clumps (present in every image) look alike. Matched to what the papers say of the real
images (`REAL_STATISTICS`, `measure_stand_in`): a positive holds about 90-270 epithelial nuclei (median
about 150), the real positives' "hundreds" (ATS sec. 4.3); an image about 220 nuclei of all types
(22,000 over 100 images);
and ten uniformly drawn 27x27 patches miss a positive's epithelium in fewer images than ATS's U-10
baseline errs on (15.6 %, ATS table 1; `uniform_patch_misses` says why that error bounds the share, a
reading of ours, not the papers'). (Generator version 3 drew tens of
epithelial nuclei in a 160 px square: 10 uniform patches then missed about 31 % of all images.) It is a
stand-in for the method's mechanics, not the CRCHistoPhenotypes data, and is marked as such
(`SYNTHETIC_STAND_IN.json`); its `detection` centres are 0-based pixels.

Damaged downloads (`data_prep.problems`). Only the image and its epithelial `.mat` decide an item's
label; a missing or unreadable fibroblast, inflammatory or others `.mat` is reported (a warning
naming the file, collected in `ColonCancerData.problems`) and the image is kept without those
nuclei. An image whose `.bmp` or epithelial `.mat` is missing or unreadable, or whose size differs
from the others', is skipped with its reason. A folder left with no usable image, or without
positives or negatives (the task needs both), stops with one `DataSetError`. `strict=True`
stops at the first problem instead.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import scipy.io
import scipy.ndimage
import torch
from PIL import Image

from data_prep.problems import DataFileError, DataSetError, describe, read_rgb, report, summarize_problems
from data_prep.statistics import NOT_REPORTED, MeasuredStatistics, Quoted, RealStatistics, spread
from data_prep.textures import blurred_noise, ihc_stains, stain_vectors
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, read_json, write_json
from zoomin_lib.infra.progress import tqdm

CELL_TYPES = ("epithelial", "fibroblast", "inflammatory", "others")
POSITIVE_TYPE = "epithelial"
MARKER = "SYNTHETIC_STAND_IN.json"
MARKER_TEXT = "synthetic stand-in, not the CRCHistoPhenotypes data"
GENERATOR_VERSION = 4
# Epithelial rings tried per positive image (as many as fit round the hub; 7-12 nuclei each): about 90-270
# epithelial nuclei per positive, the real positives' "hundreds" (ATS sec. 4.3), and 10 uniform 27x27 patches miss
# the epithelium of fewer images than ATS's U-10 errs on (`uniform_patch_misses`). Version 3 drew 3-8 (tens).
GLANDS = (10, 30)
CLUSTER_RADIUS = 150  # px: a positive's glands lie within this of one hub (a square of at most 300 px, 36 % of the image)
UNIFORM_PATCH = 27  # px: the side of the papers' colon patches and sub-tiles (Zoom-In sec. 4, h2 = w2 = 27)
EPITHELIAL_SEMI_AXES = ((4.0, 5.0), (2.5, 3.2))  # px: a drawn epithelial nucleus's semi-axes (long, short) range
EXPECTED_LAYOUT = (
    "<root>/Classification/imgN/imgN.bmp with imgN_{epithelial,fibroblast,inflammatory,others}.mat"
)
_IMG_NAME = re.compile(r"img(\d+)")
_MAT_DESCRIPTION = b"MATLAB 5.0 MAT-file, synthetic stand-in written by zoomin data_prep.colon_cancer"


@dataclass
class ColonCancerData:
    """The images, labels and nucleus centres of one colon cancer folder, and what could not be used."""

    ids: list[str]
    images: np.ndarray  # [N, H, W, 3] uint8
    labels: np.ndarray  # [N] int64, 1 = contains epithelial nuclei
    cells: list[dict[str, np.ndarray]]  # per image: type -> [M, 2] float (x, y); a type whose file failed is absent
    root: Path
    synthetic: bool
    problems: list[str] = field(default_factory=list)  # '<file>: <problem>; <what was done>', one per problem

    def __len__(self) -> int:
        """Number of images."""
        return len(self.ids)

    def annotated_counts(self) -> dict[str, int]:
        """Per cell type, how many images have its annotation file read (0: the type is absent from the data)."""
        return {t: sum(t in c for c in self.cells) for t in CELL_TYPES}


@dataclass(frozen=True)
class Fold:
    """One train/test split of repeated k-fold cross-validation (index arrays into the dataset)."""

    repetition: int
    fold: int
    train: np.ndarray  # [N - n_test] int64
    test: np.ndarray  # [n_test] int64


# ---------------------------------------------------------------- reading the real format


def classification_dir(root: str | Path) -> Path:
    """The `Classification` folder: `root` itself or `root/Classification`."""
    root = Path(root)
    if root.name == "Classification" and root.is_dir():
        return root
    if (root / "Classification").is_dir():
        return root / "Classification"
    raise FileNotFoundError(f"{root}: no Classification folder; expected {EXPECTED_LAYOUT}")


def _image_folders(cls_dir: Path) -> list[Path]:
    """The `imgN` folders of `cls_dir`, sorted by N."""
    folders = [p for p in cls_dir.iterdir() if p.is_dir() and _IMG_NAME.fullmatch(p.name)]
    if not folders:
        raise FileNotFoundError(f"{cls_dir}: no imgN folders; expected {EXPECTED_LAYOUT}")
    return sorted(folders, key=lambda p: int(_IMG_NAME.fullmatch(p.name).group(1)))


def _read_bmp(path: Path) -> np.ndarray:
    """An image as uint8 RGB [H, W, 3] (alpha dropped, grey or palette expanded); errors name the file."""
    return read_rgb(path)


def _read_detection(path: Path) -> np.ndarray:
    """The `detection` centres of one .mat file as float64 [M, 2] (x, y); FileNotFoundError or DataFileError naming the file."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file missing")
    try:
        content = scipy.io.loadmat(path)
    except Exception as err:  # scipy raises MatReadError, ValueError, TypeError, OSError, ... on a damaged file
        raise DataFileError(path, f"not a readable MATLAB file ({describe(err)})") from err
    if "detection" not in content:
        names = sorted(k for k in content if not k.startswith("__"))
        raise DataFileError(path, f"no variable 'detection' (found {names})")
    try:
        det = np.asarray(content["detection"], dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise DataFileError(path, f"'detection' is not numeric ({describe(err)})") from err
    if det.size == 0:
        return np.zeros((0, 2))  # [0, 2]
    if det.ndim != 2 or det.shape[1] != 2:
        raise DataFileError(path, f"'detection' has shape {det.shape}, expected M x 2 (x, y)")
    return det  # [M, 2]


def _read_item(folder: Path, problems: list[str], strict: bool) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """(image [H, W, 3], cells by type) of one `imgN` folder, or None when its image or label cannot be read.

    The other cell types' files are optional: a missing or unreadable one is reported and left out.
    With `strict`, the first problem is raised instead.
    """
    name = folder.name
    try:
        image = _read_bmp(folder / f"{name}.bmp")
        cells = {POSITIVE_TYPE: _read_detection(folder / f"{name}_{POSITIVE_TYPE}.mat")}
    except (FileNotFoundError, DataFileError) as err:
        if strict:
            raise
        report(problems, f"{err}; {name} skipped (its image and epithelial detection give the label)", stacklevel=3)
        return None
    for t in CELL_TYPES:
        if t == POSITIVE_TYPE:
            continue
        try:
            cells[t] = _read_detection(folder / f"{name}_{t}.mat")
        except (FileNotFoundError, DataFileError) as err:
            if strict:
                raise
            report(problems, f"{err}; not needed for the label: {name} is kept without its {t} nuclei", stacklevel=3)
    return image, {t: cells[t] for t in CELL_TYPES if t in cells}


def _check_sizes(images: list[np.ndarray], folders: list[Path]) -> None:
    """Raise naming the first image whose size differs from the first one."""
    first = images[0].shape
    for img, folder in zip(images, folders):
        if img.shape != first:
            raise ValueError(
                f"{folder / (folder.name + '.bmp')}: size {img.shape[:2]} differs from "
                f"{folders[0].name}.bmp {first[:2]}; all images must have one size"
            )


def _common_size(images: list[np.ndarray], folders: list[Path], problems: list[str], strict: bool) -> list[int]:
    """Indices of the images of the most common size (the first seen among equals); the others are reported."""
    if strict:
        _check_sizes(images, folders)
        return list(range(len(images)))
    size = Counter(img.shape for img in images).most_common(1)[0][0]
    keep = []
    for i, (img, folder) in enumerate(zip(images, folders)):
        if img.shape == size:
            keep.append(i)
        else:
            report(problems, f"{folder / (folder.name + '.bmp')}: size {img.shape[:2]} differs from the other images' "
                             f"{size[:2]}; {folder.name} skipped (a batch needs one size)", stacklevel=3)
    return keep


def _require_both_labels(cls_dir: Path, labels: np.ndarray, problems: list[str]) -> None:
    """DataSetError unless both positives and negatives remain (the task separates them)."""
    for value, name in ((1, "positive (epithelial detection non-empty)"), (0, "negative (epithelial detection empty)")):
        if not (labels == value).any():
            skipped = f"; {len(problems)} problem(s) on the way:\n{summarize_problems(problems)}" if problems else ""
            raise DataSetError(f"{cls_dir}: no {name} image among the {len(labels)} usable ones; the task "
                               f"(epithelial nuclei or not) needs both classes{skipped}")


def load_colon_cancer(root: str | Path, progress: bool = True, strict: bool = False) -> ColonCancerData:
    """Read a CRCHistoPhenotypes-format folder (`root` holds `Classification/` or is it).

    Items that cannot be used are skipped and what else is missing is left out, each reported in
    `problems` (and as a DataProblemWarning); a folder with no usable image, or without positives
    or negatives, raises DataSetError. `strict=True` raises at the first problem instead.
    """
    cls_dir = classification_dir(root)
    folders = _image_folders(cls_dir)
    images, cells, kept, problems = [], [], [], []
    for folder in tqdm(folders, desc="colon cancer", unit="img", disable=not progress):
        item = _read_item(folder, problems, strict)
        if item is not None:
            images.append(item[0])
            cells.append(item[1])
            kept.append(folder)
    if not images:
        raise DataSetError(f"{cls_dir}: no usable image among {len(folders)} imgN folders; expected {EXPECTED_LAYOUT}:\n"
                           f"{summarize_problems(problems)}")
    keep = _common_size(images, kept, problems, strict)
    images, cells, kept = [images[i] for i in keep], [cells[i] for i in keep], [kept[i] for i in keep]
    labels = np.array([len(c[POSITIVE_TYPE]) > 0 for c in cells], dtype=np.int64)  # [N]
    _require_both_labels(cls_dir, labels, problems)
    return ColonCancerData(
        ids=[f.name for f in kept],
        images=np.stack(images),  # [N, H, W, 3]
        labels=labels,
        cells=cells,
        root=cls_dir.parent,
        synthetic=(cls_dir.parent / MARKER).is_file(),
        problems=problems,
    )


def to_tensors(data: ColonCancerData) -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 [N, 3, H, W] in [0, 1] and labels as int64 [N]."""
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).contiguous().float().div_(255)  # [N, 3, H, W]
    y = torch.from_numpy(np.asarray(data.labels, dtype=np.int64))  # [N]
    return x, y


# ---------------------------------------------------------------- evaluation protocol


def _stratified_fold_ids(labels: np.ndarray, n_folds: int, rng: np.random.Generator) -> np.ndarray:
    """A fold number per sample [N]: each class shuffled, then dealt round-robin."""
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)])
    ids = np.empty(len(labels), dtype=np.int64)
    ids[order] = np.arange(len(order)) % n_folds
    return rng.permutation(n_folds)[ids]  # shuffle which fold gets the remainders


def cross_validation_folds(
    labels: np.ndarray, n_folds: int = 10, repetitions: int = 5, seed: int = 0
) -> list[Fold]:
    """Stratified `n_folds`-fold cross-validation repeated `repetitions` times (the papers' protocol)."""
    labels = np.asarray(labels).ravel()  # [N]
    if not 2 <= n_folds <= len(labels):
        raise ValueError(f"n_folds={n_folds} must lie in [2, {len(labels)}] for {len(labels)} samples")
    folds = []
    for rep in range(repetitions):
        ids = _stratified_fold_ids(labels, n_folds, np.random.default_rng([seed, rep]))
        for k in range(n_folds):
            folds.append(Fold(rep, k, np.flatnonzero(ids != k), np.flatnonzero(ids == k)))
    return folds


# ---------------------------------------------------------------- synthetic stand-in: texture


def _zoomed_crop(rng: np.random.Generator, stains: np.ndarray, size: int) -> np.ndarray:
    """A random square crop of `stains` [h, w, 2] resized to [size, size, 2] (zoom 1-1.3x or more)."""
    side = int(rng.integers(int(0.78 * min(stains.shape[:2])), min(stains.shape[:2]) + 1))
    r, c = rng.integers(0, np.array(stains.shape[:2]) - side + 1)
    crop = stains[r : r + side, c : c + side]  # [side, side, 2]
    channels = [Image.fromarray(np.ascontiguousarray(crop[..., k])).resize((size, size), Image.BILINEAR)
                for k in range(crop.shape[-1])]
    return np.stack([np.asarray(ch) for ch in channels], axis=-1)  # [size, size, 2]


def _dihedral(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """`image` [S, S, C] under a random one of the 8 flips / 90-degree rotations."""
    image = np.rot90(image, k=int(rng.integers(4)))
    return image[:, ::-1] if rng.random() < 0.5 else image


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """An H&E-tinted tissue crop, float32 [size, size, 3] in 0..255."""
    crop = _dihedral(rng, _zoomed_crop(rng, ihc_stains(), size))  # [size, size, 2]
    gains = np.array([rng.uniform(0.55, 0.9), rng.uniform(0.25, 0.45)], dtype=np.float32)
    dens = crop * gains + np.array([0.0, rng.uniform(0.1, 0.18)], dtype=np.float32)  # eosin floor
    od = dens @ stain_vectors().astype(np.float32)  # [size, size, 3]
    rgb = 255 * np.exp(-od) * rng.uniform(0.95, 1.0, size=3).astype(np.float32)  # jitter per channel
    return np.ascontiguousarray(rgb, dtype=np.float32)


# ---------------------------------------------------------------- synthetic stand-in: drawing


def _ellipse_alpha(size: int, centres: np.ndarray, axes: np.ndarray, angles: np.ndarray,
                   opacity: np.ndarray, soft: float = 0.8) -> np.ndarray:
    """Anti-aliased coverage [size, size] of filled ellipses (max over overlaps).

    centres [M, 2] (x, y), axes [M, 2] (semi-axis along `angles`, across it), angles [M] radians.
    """
    canvas = np.zeros((size, size), dtype=np.float32)  # [H, W]
    if len(centres) == 0:
        return canvas
    half = int(np.ceil(axes.max())) + 2
    off = np.arange(-half, half + 1)  # [S]
    base = np.rint(centres).astype(np.int64)  # [M, 2]
    frac = centres - base  # [M, 2]
    dx = off[None, None, :] - frac[:, 0, None, None]  # [M, 1, S]
    dy = off[None, :, None] - frac[:, 1, None, None]  # [M, S, 1]
    cos, sin = np.cos(angles)[:, None, None], np.sin(angles)[:, None, None]
    u, v = dx * cos + dy * sin, dy * cos - dx * sin  # [M, S, S] along / across the ellipse
    a, b = axes[:, 0, None, None], axes[:, 1, None, None]
    f = (u / a) ** 2 + (v / b) ** 2 - 1
    grad = 2 * np.sqrt((u / a**2) ** 2 + (v / b**2) ** 2) + 1e-6
    alpha = np.clip(0.5 - f / grad / soft, 0, 1) * opacity[:, None, None]  # [M, S, S]
    rows = np.broadcast_to(base[:, 1, None, None] + off[None, :, None], alpha.shape)
    cols = np.broadcast_to(base[:, 0, None, None] + off[None, None, :], alpha.shape)
    inside = (rows >= 0) & (rows < size) & (cols >= 0) & (cols < size) & (alpha > 0)
    np.maximum.at(canvas, (rows[inside], cols[inside]), alpha[inside].astype(np.float32))
    return canvas


def _paint(image: np.ndarray, alpha: np.ndarray, colour: tuple[float, float, float]) -> None:
    """Stain `image` [H, W, 3] in place: where `alpha` [H, W] is 1, white would turn into `colour`."""
    od = -np.log(np.asarray(colour, dtype=np.float32) / 255)  # [3] Beer-Lambert optical density
    image *= np.exp(-alpha[..., None] * od)


def _far_from(points: np.ndarray, centres: np.ndarray, radius: float) -> np.ndarray:
    """Mask [M] of `points` [M, 2] farther than `radius` from every one of `centres` [K, 2]."""
    if len(centres) == 0:
        return np.ones(len(points), dtype=bool)
    dist = np.linalg.norm(points[:, None, :] - centres[None, :, :], axis=-1)  # [M, K]
    return (dist > radius).all(axis=1)


def _scatter(rng: np.random.Generator, n: int, size: int, avoid: np.ndarray, radius: float) -> np.ndarray:
    """Up to `n` uniform centres [n, 2] (x, y) inside the image, none within `radius` of `avoid`."""
    pts = rng.uniform(3, size - 3, size=(4 * n + 16, 2))  # over-draw, then keep the allowed ones
    return pts[_far_from(pts, avoid, radius)][:n]


@dataclass
class _Cells:
    """Centres, semi-axes, angles and opacities of one population of drawn nuclei."""

    centres: np.ndarray  # [M, 2] (x, y)
    axes: np.ndarray  # [M, 2] semi-axis along the angle, across it
    angles: np.ndarray  # [M] radians
    opacity: np.ndarray  # [M]


_COLOURS = {  # RGB a nucleus of each type stains white paper to (Beer-Lambert)
    "others": (135, 105, 170),
    "fibroblast": (85, 60, 130),
    "inflammatory": (38, 28, 70),
    "epithelial": (92, 18, 96),
}


def _round_cells(rng: np.random.Generator, centres: np.ndarray, radius: tuple[float, float],
                 opacity: tuple[float, float], stretch: float = 1.15) -> _Cells:
    """Nearly round nuclei with radius drawn from `radius` at `centres` [M, 2]."""
    m = len(centres)
    r = rng.uniform(*radius, m)
    axes = np.stack([r * rng.uniform(1.0, stretch, m), r], axis=1)  # [M, 2]
    return _Cells(centres, axes, rng.uniform(0, np.pi, m), rng.uniform(*opacity, m))


def _spindles(rng: np.random.Generator, centres: np.ndarray) -> _Cells:
    """Elongated fibroblast nuclei (about 3 x 10 px) at `centres` [M, 2], randomly oriented."""
    m = len(centres)
    axes = np.stack([rng.uniform(4.0, 6.0, m), rng.uniform(1.2, 1.8, m)], axis=1)  # [M, 2]
    return _Cells(centres, axes, rng.uniform(0, np.pi, m), rng.uniform(0.7, 0.9, m))


def _gland_sites(rng: np.random.Generator, size: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Centres [G, 2] and ring radii [G] of up to `n` separate glands in one cluster fully inside the image.

    The glands of an image crowd round one hub (within CLUSTER_RADIUS of it), as a lesion would, so
    part of the image holds none: the first-stage attention has somewhere to look.
    """
    margin = 28  # the largest ring (16) plus its cytoplasm (6) and a few pixels
    hub = rng.uniform(margin, size - margin, size=(1, 2))  # [1, 2]
    centres, radii = np.zeros((0, 2)), np.zeros(0)
    for _ in range(100 * n):  # the first always fits; later ones may not in a small cluster
        if len(centres) == n:
            break
        r = rng.uniform(10, 16)
        offset = rng.uniform(-CLUSTER_RADIUS, CLUSTER_RADIUS, size=(1, 2))
        c = np.clip(hub + offset, r + 12, size - r - 12)
        if _far_from(c, centres, r + radii.max(initial=0) + 24)[0]:
            centres, radii = np.vstack([centres, c]), np.append(radii, r)
    return centres, radii


def _gland_nuclei(
    rng: np.random.Generator, centre: np.ndarray, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Centres [K, 2] and radial angles [K] of the 7-12 nuclei lining one gland (ring radius 10-16 px)."""
    k = int(np.clip(round(2 * np.pi * radius / 8.5), 6, 12))
    theta = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.arange(k) / k + rng.normal(0, 0.08, k)  # [K]
    r = radius + rng.normal(0, 0.8, k)  # [K]
    pts = centre + np.stack([r * np.cos(theta), r * np.sin(theta)], axis=1)  # [K, 2]
    return pts, theta


def _epithelium(rng: np.random.Generator, sites: np.ndarray, radii: np.ndarray) -> _Cells:
    """Larger, radially oriented epithelial nuclei lining each gland (about 6 x 9 px)."""
    parts = [_gland_nuclei(rng, c, r) for c, r in zip(sites, radii)]
    centres = np.concatenate([np.zeros((0, 2))] + [p[0] for p in parts])  # [K, 2]
    angles = np.concatenate([np.zeros(0)] + [p[1] for p in parts])  # [K]
    m = len(centres)
    (long_lo, long_hi), (short_lo, short_hi) = EPITHELIAL_SEMI_AXES
    axes = np.stack([rng.uniform(long_lo, long_hi, m), rng.uniform(short_lo, short_hi, m)], axis=1)  # [K, 2] radial
    return _Cells(centres, axes, angles, rng.uniform(0.88, 1.0, m))


def _inflammatory_clumps(rng: np.random.Generator, size: int, avoid: np.ndarray) -> np.ndarray:
    """Centres [K, 2] of 0-3 tight lymphocyte clumps (they resemble glands at low resolution)."""
    hubs = _scatter(rng, int(rng.integers(0, 4)), size, avoid, 45)  # [C, 2]
    pts = [h + rng.normal(0, 5.5, size=(int(rng.integers(8, 16)), 2)) for h in hubs]
    return np.clip(np.concatenate([np.zeros((0, 2))] + pts), 3, size - 4)  # [K, 2]


def _populations(
    rng: np.random.Generator, size: int, sites: np.ndarray, radii: np.ndarray
) -> dict[str, _Cells]:
    """All drawn nuclei by type; only the epithelial ones lie on the glands."""
    keep_out = radii.max(initial=0) + 9  # other nuclei stay off the glands

    def scatter(low: int, high: int) -> np.ndarray:
        return _scatter(rng, int(rng.integers(low, high)), size, sites, keep_out)

    inflammatory = np.vstack([scatter(30, 70), _inflammatory_clumps(rng, size, sites)])  # [M, 2]
    return {
        "others": _round_cells(rng, scatter(25, 55), (3.5, 4.5), (0.5, 0.75), stretch=1.3),
        "fibroblast": _spindles(rng, scatter(25, 55)),
        "inflammatory": _round_cells(rng, inflammatory, (2.0, 3.0), (0.85, 1.0)),
        "epithelial": _epithelium(rng, sites, radii),
    }


def _smooth_noise(rng: np.random.Generator, size: int, low: float) -> np.ndarray:
    """Blotchy noise [size, size] in [low, 1], correlated over about a pixel."""
    noise = blurred_noise(rng, (size, size), 1.0, dtype=np.float32)
    noise = (noise - noise.min()) / (np.ptp(noise) + 1e-6)
    return low + (1 - low) * noise


def _disks(size: int, centres: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage [size, size] of filled disks."""
    g = len(centres)
    return _ellipse_alpha(size, centres, np.repeat(radii[:, None], 2, 1), np.zeros(g), np.ones(g))


def _draw_glands(image: np.ndarray, sites: np.ndarray, radii: np.ndarray, texture: np.ndarray) -> None:
    """Paint each gland's pink cytoplasm ring and pale lumen in place (nuclei come later)."""
    if len(sites) == 0:
        return
    size = image.shape[0]
    lumen = _disks(size, sites, radii - 5)  # [H, W]
    ring = np.clip(_disks(size, sites, radii + 6) - lumen, 0, 1)  # [H, W]
    _paint(image, 0.6 * ring * texture, (200, 105, 160))
    a = (0.8 * lumen * texture)[..., None]  # [H, W, 1] mix towards a pale, slightly pink lumen
    image *= 1 - a
    image += a * np.array([246, 234, 240], dtype=np.float32)


def _synthetic_image(
    rng: np.random.Generator, size: int, positive: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """One stand-in image uint8 [size, size, 3] and its nucleus centres [M, 2] by type."""
    image = _background(rng, size)  # [size, size, 3]
    sites, radii = _gland_sites(rng, size, int(rng.integers(GLANDS[0], GLANDS[1] + 1)) if positive else 0)
    pops = _populations(rng, size, sites, radii)
    chromatin = _smooth_noise(rng, size, low=0.7)  # [H, W] nuclear texture
    _draw_glands(image, sites, radii, chromatin)
    for name, cells in pops.items():
        alpha = _ellipse_alpha(size, cells.centres, cells.axes, cells.angles, cells.opacity)  # [H, W]
        _paint(image, alpha * chromatin, _COLOURS[name])
    image = scipy.ndimage.gaussian_filter(image, sigma=(0.6, 0.6, 0))  # optics
    image += rng.normal(0, 2.0, size=image.shape).astype(np.float32)  # sensor noise
    cells = {t: pops[t].centres.astype(np.float64).reshape(-1, 2) for t in CELL_TYPES}
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), cells


# ---------------------------------------------------------------- synthetic stand-in: files


def _mat_bytes(detection: np.ndarray) -> bytes:
    """A MATLAB v5 file holding `detection`, with a fixed header (savemat stamps the time)."""
    buf = io.BytesIO()
    scipy.io.savemat(buf, {"detection": detection})
    data = bytearray(buf.getvalue())
    data[:116] = _MAT_DESCRIPTION.ljust(116)  # the 116-byte description text of the header
    return bytes(data)


def _write_example(cls_dir: Path, name: str, image: np.ndarray, cells: dict[str, np.ndarray]) -> None:
    """Write one `imgN` folder: the bmp and one .mat per cell type."""
    folder = cls_dir / name
    folder.mkdir(parents=True)
    Image.fromarray(image).save(folder / f"{name}.bmp", format="BMP")
    for t in CELL_TYPES:
        det = np.asarray(cells[t], dtype=np.float64).reshape(-1, 2)  # [M, 2], empty as (0, 2)
        (folder / f"{name}_{t}.mat").write_bytes(_mat_bytes(det))


def _marker(n_images: int, size: int, seed: int) -> dict:
    """The marker's content: what was generated and how."""
    return {
        "description": MARKER_TEXT,
        "generator": "data_prep.colon_cancer.write_synthetic",
        "version": GENERATOR_VERSION,
        "n_images": n_images,
        "size": size,
        "seed": seed,
        "n_positive": n_images // 2,
        "texture": "skimage.data.immunohistochemistry() (ihc.png, CMMI, no known copyright restrictions)",
        "coordinates": "detection = [x, y] = [column, row], 0-based pixel centres",
    }


def synthetic_labels(n_images: int, seed: int = 0) -> np.ndarray:
    """Exactly n_images // 2 positives, shuffled by `seed`, int64 [n_images]."""
    labels = (np.arange(n_images) < n_images // 2).astype(np.int64)
    return np.random.default_rng([seed, 0]).permutation(labels)


def write_synthetic(root: str | Path, n_images: int = 100, size: int = 500, seed: int = 0,
                    progress: bool = False) -> Path:
    """Write the stand-in as `root/Classification/imgN/...` plus the marker; returns `root`."""
    if size < 64:
        raise ValueError(f"size={size} too small for the stand-in (need >= 64)")
    root = Path(root)
    labels = synthetic_labels(n_images, seed)
    with atomic_dir(root) as tmp:
        cls_dir = tmp / "Classification"
        for i in tqdm(range(n_images), desc="synthetic colon", unit="img", disable=not progress):
            rng = np.random.default_rng([seed, 1, i])
            image, cells = _synthetic_image(rng, size, bool(labels[i]))
            _write_example(cls_dir, f"img{i + 1}", image, cells)
        write_json(tmp / MARKER, _marker(n_images, size, seed))
    return root


def read_marker(root: str | Path) -> dict | None:
    """The stand-in marker of `root` (the folder holding Classification/), or None (absent or unreadable)."""
    path = Path(root) / MARKER
    try:
        return read_json(path) if path.is_file() else None
    except ValueError:
        return None


def default_dataset(n_images: int = 100, seed: int = 0) -> Path:
    """The cached stand-in under data_dir('colon_cancer_synthetic'), generated on first use."""
    params = _marker(n_images, 500, seed)
    root = stand_in("colon_cancer_synthetic", params,
                    lambda folder: write_synthetic(folder, n_images=n_images, size=500, seed=seed, progress=True))
    return root


# ---------------------------------------------------------------- the real data's statistics, and the stand-in's


REAL_STATISTICS = RealStatistics(
    dataset="colon cancer",
    object_name="epithelial nucleus",
    image_size=Quoted("500 x 500, 100 images", "ATS sec. 4.3; Zoom-In sec. 4 (i)"),
    object_side=Quoted(NOT_REPORTED, "ATS sec. 4.3 and Zoom-In sec. 4 give no nucleus size"),
    object_fraction=Quoted(NOT_REPORTED),
    objects_per_image=Quoted(
        "positives: 'hundreds of regions of interest, namely epithelial cells'; all types: approximately "
        "22,000 annotated cells over the 100 images", "ATS sec. 4.3"),
    extra=(("epithelial nuclei: extent (px, side of the box round a positive's detections)",
            Quoted(NOT_REPORTED, "ATS fig. 4b draws them for one image; no number is given")),
           ("annotated nuclei of all types per image", Quoted("about 220 (22,000 over 100 images)", "ATS sec. 4.3")),
           *((f"images whose epithelium {n} uniform {UNIFORM_PATCH}x{UNIFORM_PATCH} patches all miss (share of all images)",
              Quoted(f"not reported; U-{n}'s test error is {err} (our reading: the share should not exceed it)",
                     "ATS table 1")) for n, err in ((10, "15.6 %"), (50, "12.4 %")))),
)


def drawn_nucleus_side() -> float:
    """Side (px, sqrt of area) of the stand-in's mean epithelial nucleus: an ellipse of the mid semi-axes."""
    (long_lo, long_hi), (short_lo, short_hi) = EPITHELIAL_SEMI_AXES
    return float(np.sqrt(np.pi * (long_lo + long_hi) / 2 * (short_lo + short_hi) / 2))


def uniform_patch_misses(cells: Sequence[dict[str, np.ndarray]], hw: tuple[int, int], draws: int,
                         patch: int = UNIFORM_PATCH) -> np.ndarray:
    """Per image, the probability [M] that `draws` uniform patches all miss its epithelial nuclei.

    A patch is `patch` x `patch` pixels (odd) centred on a pixel drawn uniformly from the image; it
    finds the epithelium when it holds an epithelial detection's centre. With f the share of centres
    whose patch holds one, the miss probability is (1 - f)^draws, that of draws with replacement; a
    sampler without replacement (as ATS's U-N and `builders.uniform`) misses less often, so on the
    stand-in this errs on the side of more misses. 1 for an image without epithelium. Every image is
    `hw` in size (the loader checks that they agree); detections outside it count at the nearest pixel.

    Why it is compared with U-N's test error (our reading, not the papers'): if the epithelium is what
    tells a positive, a positive none of whose N patches shows it looks like a negative to U-N, so U-N
    errs on about that share of the images at least.
    """
    if patch < 1 or patch % 2 == 0:
        raise ValueError(f"patch must be a positive odd number of pixels (a window centred on a pixel), got {patch}")
    h, w = hw
    misses = np.ones(len(cells))  # [M]
    for i, c in enumerate(cells):
        epi = np.asarray(c.get(POSITIVE_TYPE, np.zeros((0, 2))), dtype=np.float64).reshape(-1, 2)  # [K, 2] (x, y)
        if len(epi) == 0:
            continue
        hit = np.zeros((h, w), dtype=bool)  # [H, W] pixels holding a detection centre
        cols = np.clip(np.rint(epi[:, 0]).astype(np.int64), 0, w - 1)
        rows = np.clip(np.rint(epi[:, 1]).astype(np.int64), 0, h - 1)
        hit[rows, cols] = True
        f = scipy.ndimage.maximum_filter(hit, size=patch, mode="constant").mean()  # share of centres that find one
        misses[i] = (1.0 - f) ** draws
    return misses


def measure_stand_in(data: ColonCancerData) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics measured on a loaded stand-in, from its epithelial detections (no pixels drawn).

    The detections are centres without a size, so every nucleus gets the stand-in's drawn mean size
    (`drawn_nucleus_side`, a property of the generator, stated as such in the table); their number per
    image and their extent (the box round a positive's detections) are measured. On the real data the
    detections carry no size either: call it only on a stand-in (`data.synthetic`).
    """
    if not data.synthetic:
        raise ValueError(f"{data.root}: the real detections carry no nucleus size; measure_stand_in needs the stand-in")
    hw = np.array([im.shape[:2] for im in data.images], dtype=np.int64).reshape(-1, 2)  # [M, 2]
    counts = np.array([len(c.get(POSITIVE_TYPE, np.zeros((0, 2)))) for c in data.cells], dtype=np.int64)  # [M]
    side = drawn_nucleus_side()
    sides = np.full(int(counts.sum()), side)  # [K]
    fractions = np.concatenate([np.zeros(0)] + [np.full(n, side ** 2 / (h * w)) for (h, w), n in zip(hw, counts)])
    positive = counts > 0  # [M]
    all_types = np.array([sum(len(v) for v in c.values()) for c in data.cells])  # [M] nuclei of every type
    extents = [np.sqrt(np.prod(np.ptp(c[POSITIVE_TYPE], axis=0) + 1.0))
               for c in data.cells if len(c.get(POSITIVE_TYPE, ())) > 0]  # side of each positive's box, px
    (long_lo, long_hi), (short_lo, short_hi) = EPITHELIAL_SEMI_AXES
    extra = (
        ("epithelial nuclei: extent (px, side of the box round a positive's detections)",
         spread(np.array(extents), "{:.0f}")),
        ("annotated nuclei of all types per image", f"mean {np.mean(all_types):.0f}; {spread(all_types, '{:.0f}')}"),
        *((f"images whose epithelium {n} uniform {UNIFORM_PATCH}x{UNIFORM_PATCH} patches all miss (share of all images)",
           f"{100 * np.mean(np.where(positive, uniform_patch_misses(data.cells, tuple(hw[0]), n), 0.0)):.1f} % "
           f"(expected; the patches' centres uniform, drawn with replacement)") for n in (10, 50)),
        ("epithelial nucleus: drawn size (generator, not annotations)",
         f"ellipse, semi-axes {long_lo:g}-{long_hi:g} x {short_lo:g}-{short_hi:g} px; side {side:.1f} px at the mid values"),
    )
    return MeasuredStatistics(REAL_STATISTICS.dataset, REAL_STATISTICS.object_name, hw, sides, fractions, counts, extra)

