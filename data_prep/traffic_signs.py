"""Swedish traffic signs: the speed-limit subset of ATS sec. 4.4, and a synthetic stand-in in the same format.

Real format (Larsson & Felsberg, SCIA 2011, "STS"; https://www.cvl.isy.liu.se/research/trafficSigns/):
`Set1/annotations.txt` and `Set2/annotations.txt`, beside the 1280x960 JPEGs of each set. One line per
image: `<file>:` then `;`-terminated entries, each either `MISC_SIGNS` (other signs, no box) or
`VISIBILITY, lrx, lry, ulx, uly, TYPE, NAME` -- the lower-right corner comes first. VISIBILITY is one of
VISIBLE, BLURRED, SIDE_ROAD, OCCLUDED; TYPE e.g. PROHIBITORY, MANDATORY, WARNING, INFORMATION, OTHER;
NAME e.g. 50_SIGN, 70_SIGN, 80_SIGN, PEDESTRIAN_CROSSING, GIVE_WAY. A line may have no entries, and a
few numbers in the real files carry a stray trailing character (`1024.5l`): both are accepted.

Speed-limit subset (Katharopoulos & Fleuret, ICML 2019, sec. 4.4; used again by Kong & Henao, sec. 4):
classes EMPTY, 50, 70, 80. An image with no entries, or only MISC_SIGNS, is EMPTY; otherwise only the
50/70/80 signs are kept, the image is dropped when none remain, the kept signs are sorted by visibility
(VISIBLE, BLURRED, SIDE_ROAD, OCCLUDED) then by decreasing area, the image is dropped when the first is not
VISIBLE, and its label is the first sign's class. Set1 is the training split, Set2 the test split
(747 / 684 images on the real data). CLASS_WEIGHTS are the weighted cross-entropy weights of the
Zoom-In paper's appendix G.

Synthetic stand-in (no download possible at run time): road scenes of 1280x960 JPEG in exactly that
layout, marked by `SYNTHETIC_STAND_IN.json` at the root: a sky gradient with clouds, a road in
perspective with lane markings, roadside ground textured with scikit-image's `grass()` and `gravel()`
(CC0; see `skimage.data`), buildings (walls textured with `brick()`, CC0) and trees as textured blocks,
sign-like distractors, and in non-EMPTY images a small speed-limit sign (red ring, white disc, black
50/70/80) of 20-45 px diameter, legible only at full resolution (ATS fig. 1). Every annotation written
describes what is drawn; some lines exercise each subset rule (MISC_SIGNS, other prohibitory signs,
BLURRED / OCCLUDED / SIDE_ROAD speed signs, a smaller second sign, lines the rules drop, stray
characters). As in the real subset, EMPTY images hold no boxed sign (at most unboxed boards, listed as
MISC_SIGNS). `n_train` / `n_test` count the images of the subset (classes in SYNTHETIC_FREQUENCIES);
about 10% more lines are written that the rules drop. Images are also looked for in `SetNPart*/`
subfolders, in case a set's archive was unpacked into one.

Damaged downloads (`data_prep.problems`). A malformed annotation line, an image named but missing,
and an image that is not readable (truncated, garbled: found without decoding it, from its header
and its end) are each reported (a warning naming the file, collected in `TrafficSigns.problems`) and
skipped; the rest loads. A split left with no usable image stops with one `DataSetError`. A class
absent from a split is not an error (`absent_classes` names it); the notebook says so.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from data_prep.problems import DataSetError, check_image, report, summarize_problems
from data_prep.problems import read_rgb as _read_rgb
from data_prep.statistics import NOT_REPORTED, MeasuredStatistics, Quoted, RealStatistics, measured_from_boxes
from data_prep.textures import coarse_noise
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, write_json

CLASSES = ("EMPTY", "50_SIGN", "70_SIGN", "80_SIGN")
CLASS_WEIGHTS = (0.1843, 2.3639, 1.5183, 3.1653)  # Zoom-In appendix G: empty, 50, 70, 80
VISIBILITIES = ("VISIBLE", "BLURRED", "SIDE_ROAD", "OCCLUDED")  # also the subset's sort order
MISC = "MISC_SIGNS"
SPLITS = {"train": "Set1", "test": "Set2"}
ANNOTATIONS = "annotations.txt"
IMAGE_HEIGHT, IMAGE_WIDTH = 960, 1280
MARKER = "SYNTHETIC_STAND_IN.json"
SYNTHETIC_NOTE = "synthetic stand-in, not the Swedish traffic signs data"
# EMPTY share from ATS sec. 4.4 (~400 of ~700 images); the sign shares split the rest in proportion
# to the inverse Zoom-In class weights (1/2.3639 : 1/1.5183 : 1/3.1653), so EMPTY > 70 > 50 > 80.
SYNTHETIC_FREQUENCIES = (0.54, 0.14, 0.22, 0.10)
SYNTHETIC_VERSION = 1
LAYOUT = (
    "expected the Swedish traffic signs layout: <root>/Set1/annotations.txt and <root>/Set2/annotations.txt, "
    "each beside the JPEGs it names (or in a Set1Part0/ subfolder)"
)


# ----------------------------------------------------------------------------------------------------
# The annotation grammar
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sign:
    """One boxed sign of an annotation line; corners are (x, y) in pixels."""

    visibility: str
    lower_right: tuple[float, float]
    upper_left: tuple[float, float]
    type: str
    name: str

    @property
    def box(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) with x0 <= x1 and y0 <= y1."""
        (ax, ay), (bx, by) = self.upper_left, self.lower_right
        return min(ax, bx), min(ay, by), max(ax, bx), max(ay, by)

    @property
    def area(self) -> float:
        """Box area in square pixels."""
        x0, y0, x1, y1 = self.box
        return (x1 - x0) * (y1 - y0)


@dataclass(frozen=True)
class ImageAnnotation:
    """One line of annotations.txt: the image's file name, its boxed signs and its MISC_SIGNS count."""

    file: str
    signs: tuple[Sign, ...]
    misc_signs: int = 0


_NUMBER = re.compile(r"([-+]?(?:\d+\.?\d*|\.\d+))[^\d\s.,;:]?")  # one stray trailing character allowed


def _parse_number(text: str) -> float:
    """A coordinate, tolerating one stray trailing character (`1024.5l`)."""
    match = _NUMBER.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a number: {text.strip()!r}")
    return float(match.group(1))


def _parse_sign(entry: str) -> Sign:
    """`VISIBILITY, lrx, lry, ulx, uly, TYPE, NAME` -> Sign."""
    fields = [f.strip() for f in entry.split(",")]
    if len(fields) != 7:
        raise ValueError(f"expected 7 comma-separated fields or {MISC}, got {len(fields)} in {entry.strip()!r}")
    visibility, type_, name = fields[0], fields[5], fields[6]
    if visibility not in VISIBILITIES:
        raise ValueError(f"unknown visibility {visibility!r} (expected one of {', '.join(VISIBILITIES)})")
    if not type_ or not name:
        raise ValueError("empty sign type or name")
    lrx, lry, ulx, uly = (_parse_number(f) for f in fields[1:5])
    return Sign(visibility, (lrx, lry), (ulx, uly), type_, name)


def parse_line(line: str) -> ImageAnnotation:
    """Parse one non-empty annotation line; raises ValueError saying what is wrong."""
    file, sep, rest = line.strip().partition(":")
    if not sep or not file.strip():
        raise ValueError("expected '<file>:' at the start of the line")
    entries = rest.split(";")  # the piece after the last ';' is empty when every entry is terminated
    signs, misc = [], 0
    for entry in entries:
        if not entry.strip():
            continue
        if entry.strip() == MISC:
            misc += 1
        else:
            signs.append(_parse_sign(entry))
    return ImageAnnotation(file.strip(), tuple(signs), misc)


def parse_annotations(path: str | Path, problems: list[str] | None = None) -> list[ImageAnnotation]:
    """All lines of an STS annotations.txt (empty lines skipped); a malformed line names file and line.

    Without `problems` a malformed line raises ValueError; with a list, it is reported there (and
    warned about) and skipped.
    """
    path = Path(path)
    out = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                out.append(parse_line(line))
            except ValueError as err:
                message = f"{path}, line {number}: {err}: {line.rstrip()!r}"
                if problems is None:
                    raise ValueError(message) from None
                report(problems, f"{message}; line skipped", stacklevel=2)
    return out


# ----------------------------------------------------------------------------------------------------
# The speed-limit subset (ATS sec. 4.4)
# ----------------------------------------------------------------------------------------------------


def _speed_class(sign: Sign) -> int | None:
    """Class index of a 50/70/80 sign, else None."""
    return CLASSES.index(sign.name) if sign.name in CLASSES[1:] else None


def _priority(sign: Sign) -> tuple[int, float]:
    """Sort key: visibility order first, then larger area first."""
    return VISIBILITIES.index(sign.visibility), -sign.area


def speed_limit_signs(annotation: ImageAnnotation) -> tuple[Sign, ...]:
    """The 50/70/80 signs of a line, sorted by visibility then by decreasing area."""
    kept = [s for s in annotation.signs if _speed_class(s) is not None]
    return tuple(sorted(kept, key=_priority))


def speed_limit_label(annotation: ImageAnnotation) -> int | None:
    """The subset label (index into CLASSES) of a line, or None when the rules drop the image."""
    if not annotation.signs:
        return 0  # no entries, or only MISC_SIGNS
    kept = speed_limit_signs(annotation)
    if not kept or kept[0].visibility != "VISIBLE":
        return None
    return _speed_class(kept[0])


# ----------------------------------------------------------------------------------------------------
# The loader
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    """One image of the subset: its path, label (index into CLASSES) and kept signs (boxes in pixels)."""

    path: Path
    label: int
    signs: tuple[Sign, ...]


@dataclass
class TrafficSigns:
    """The speed-limit subset of one split; images are read lazily, one at a time."""

    root: Path
    split: str
    samples: list[Sample]
    missing: tuple[str, ...] = ()
    dropped: int = 0
    synthetic: bool = False
    problems: list[str] = field(default_factory=list)  # '<file>: <problem>; skipped', one per problem

    def __len__(self) -> int:
        """Number of images in the subset."""
        return len(self.samples)

    @property
    def labels(self) -> np.ndarray:
        """Labels of all samples, int64 [N]."""
        return np.array([s.label for s in self.samples], dtype=np.int64)

    @property
    def n_missing(self) -> int:
        """How many images named in the annotations were absent (and skipped)."""
        return len(self.missing)

    def class_counts(self) -> dict[str, int]:
        """Images per class name."""
        counts = np.bincount(self.labels, minlength=len(CLASSES))
        return {name: int(c) for name, c in zip(CLASSES, counts)}

    def absent_classes(self) -> list[str]:
        """Names of the classes no image of this split has."""
        return [name for name, n in self.class_counts().items() if n == 0]

    def roi_boxes(self, i: int) -> list[tuple[float, float, float, float]]:
        """The box (x0, y0, x1, y1) of the sign that gives image i its label; none for EMPTY."""
        sample = self.samples[i]
        return [sample.signs[0].box] if sample.label > 0 and sample.signs else []

    def read_image(self, i: int) -> np.ndarray:
        """Image i as uint8 [H, W, 3] (960 x 1280 on the real data)."""
        return read_rgb(self.samples[i].path)

    def load_batch(self, indices: Sequence[int], scale: float = 1.0) -> torch.Tensor:
        """Images `indices` resized by `scale`, float32 [B, 3, H, W] in [0, 1]."""
        arrays = [_rescale(self.read_image(int(i)), scale) for i in indices]  # each [H, W, 3]
        shapes = {a.shape for a in arrays}
        if len(shapes) > 1:
            raise ValueError(f"images of different sizes cannot be batched: {sorted(shapes)}")
        batch = torch.from_numpy(np.stack(arrays))  # [B, H, W, 3] uint8
        return batch.permute(0, 3, 1, 2).float().div_(255.0)  # [B, 3, H, W]


def read_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as uint8 [H, W, 3]; an unreadable one raises naming the file (`problems.read_rgb`)."""
    return _read_rgb(path)


def _rescale(image: np.ndarray, scale: float) -> np.ndarray:
    """Resize uint8 [H, W, 3] by `scale` (antialiased bilinear); scale 1 returns it unchanged."""
    if scale == 1.0:
        return image
    if scale <= 0:
        raise ValueError(f"scale must be positive, got {scale}")
    h, w = image.shape[:2]
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BILINEAR))


def is_synthetic(root: str | Path) -> bool:
    """True when `root` carries the synthetic stand-in's marker."""
    return (Path(root) / MARKER).is_file()


def _annotations_file(root: Path, split: str) -> Path:
    """`<root>/SetN/annotations.txt` for a split, with errors that say what layout is expected."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; {LAYOUT}")
    path = root / SPLITS[split] / ANNOTATIONS
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; {LAYOUT}")
    return path


def _image_folders(set_dir: Path) -> list[Path]:
    """Where a set's JPEGs may lie: the set folder, then its `SetNPart*` subfolders."""
    return [set_dir, *sorted(p for p in set_dir.glob(f"{set_dir.name}Part*") if p.is_dir())]


def _locate(name: str, folders: Sequence[Path]) -> Path | None:
    """The first folder holding `name`, or None."""
    for folder in folders:
        if (folder / name).is_file():
            return folder / name
    return None


def load_traffic_signs(root: str | Path, split: str, check_images: bool = True) -> TrafficSigns:
    """The speed-limit subset of `split` ("train" = Set1, "test" = Set2) under `root`; images stay on disk.

    Malformed lines, missing images and (with `check_images`, from each file's header and end,
    without decoding) unreadable ones are reported in `problems` and skipped; a split with no
    usable image raises DataSetError.
    """
    root = Path(root)
    annotations = _annotations_file(root, split)
    folders = _image_folders(annotations.parent)
    samples, missing, dropped, problems = [], [], 0, []
    lines = parse_annotations(annotations, problems)
    for ann in lines:
        label = speed_limit_label(ann)
        if label is None:
            dropped += 1
            continue
        path = _locate(ann.file, folders)
        if path is None:
            missing.append(ann.file)
            report(problems, f"{annotations.parent / ann.file}: image named in {annotations} is missing; skipped")
            continue
        problem = check_image(path) if check_images else None
        if problem is not None:
            report(problems, f"{path}: {problem}; skipped")
            continue
        samples.append(Sample(path, label, speed_limit_signs(ann)))
    if not samples:
        raise DataSetError(
            f"{annotations}: no usable image ({len(lines)} readable lines, {dropped} dropped by the speed-limit subset "
            f"rules, {len(problems)} problem(s))" + (f":\n{summarize_problems(problems)}" if problems else "")
        )
    return TrafficSigns(root, split, samples, tuple(missing), dropped, is_synthetic(root), problems)


# ----------------------------------------------------------------------------------------------------
# Synthetic stand-in: plan of a split
# ----------------------------------------------------------------------------------------------------

_NONEMPTY_VARIANTS = (  # what accompanies the labelled sign; cycled so that every case occurs
    "alone", "other_sign", "blurred", "other_prohibitory", "occluded", "alone", "smaller_visible", "side_road",
)
_DROP_VARIANTS = ("drop_other_sign", "drop_not_visible", "drop_other_prohibitory")
_DROP_SHARE = 0.1  # extra lines, dropped by the rules, per subset image
_STRAY_SHARE = 0.02  # lines with a stray character on a number


@dataclass(frozen=True)
class _Recipe:
    """What one synthetic image shows: label (None: the rules drop it), variant, MISC_SIGNS, stray character."""

    label: int | None
    variant: str
    misc: bool
    stray: bool = False


def synthetic_class_counts(n: int) -> tuple[int, ...]:
    """Images per class in a synthetic split of `n` (largest remainders of SYNTHETIC_FREQUENCIES)."""
    exact = np.asarray(SYNTHETIC_FREQUENCIES) * n
    counts = np.floor(exact).astype(int)
    order = np.argsort(-(exact - counts), kind="stable")
    counts[order[: n - counts.sum()]] += 1
    return tuple(int(c) for c in counts)


def _balanced(rng: np.random.Generator, options: Sequence, n: int) -> list:
    """`n` items cycling through `options` (each occurs once per cycle), shuffled."""
    items = [options[i % len(options)] for i in range(n)]
    return [items[i] for i in rng.permutation(n)]


def _plan_split(rng: np.random.Generator, n: int) -> list[_Recipe]:
    """Recipes of a split: `n` subset images plus ~10% lines the rules drop, in random order."""
    labels = [c for c, k in enumerate(synthetic_class_counts(n)) for _ in range(k)]
    n_signed = sum(1 for c in labels if c > 0)
    variants = iter(_balanced(rng, _NONEMPTY_VARIANTS, n_signed))
    empty_misc = iter(_balanced(rng, (False, True), n - n_signed))
    recipes = [
        _Recipe(c, next(variants), bool(rng.random() < 0.2)) if c else _Recipe(0, "none", next(empty_misc))
        for c in labels
    ]
    n_drop = math.ceil(_DROP_SHARE * n)
    recipes += [_Recipe(None, v, bool(rng.random() < 0.2)) for v in _balanced(rng, _DROP_VARIANTS, n_drop)]
    recipes = [recipes[i] for i in rng.permutation(len(recipes))]
    return _mark_stray(rng, recipes)


def _mark_stray(rng: np.random.Generator, recipes: list[_Recipe]) -> list[_Recipe]:
    """Flag a few lines that carry boxes to get a stray trailing character on a number."""
    boxed = [i for i, r in enumerate(recipes) if r.variant != "none"]
    if not boxed:
        return recipes
    k = max(1, round(_STRAY_SHARE * len(recipes)))
    chosen = set(rng.choice(boxed, size=min(k, len(boxed)), replace=False).tolist())
    return [_Recipe(r.label, r.variant, r.misc, i in chosen) for i, r in enumerate(recipes)]


# ----------------------------------------------------------------------------------------------------
# Synthetic stand-in: textures and the background (sky, road in perspective, roadside)
# ----------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    """A CC0 texture shipped with scikit-image (grass, gravel, brick), float32 [512, 512], mean 0, std 1."""
    import skimage.data

    tex = getattr(skimage.data, name)().astype(np.float32)
    return (tex - tex.mean()) / tex.std()


@dataclass(frozen=True)
class _Camera:
    """A pinhole camera above a flat road: focal length and height, horizon row, road geometry."""

    focal: float
    height: float
    horizon: float
    vx: float
    offset: float
    curve: float
    lane: float
    dash_phase: float

    def road_centre(self, z: np.ndarray | float) -> np.ndarray | float:
        """Lateral position (m) of the centre line at depth z; the camera drives in the right lane."""
        return -self.lane / 2 + self.offset + self.curve * np.square(z)

    def ground_row(self, z: float) -> float:
        """Image row of the ground at depth z."""
        return self.horizon + self.focal * self.height / z

    def column(self, x: float, z: float) -> float:
        """Image column of lateral position x at depth z."""
        return self.vx + x * self.focal / z


def _camera(rng: np.random.Generator) -> _Camera:
    """Random camera and road."""
    return _Camera(
        focal=rng.uniform(950, 1100), height=rng.uniform(1.35, 1.65), horizon=rng.uniform(0.40, 0.48) * IMAGE_HEIGHT,
        vx=IMAGE_WIDTH / 2 + rng.normal(0, 40), offset=rng.normal(0, 0.25), curve=rng.normal(0, 0.0012),
        lane=rng.uniform(3.0, 3.7), dash_phase=rng.uniform(0, 12),
    )


def _wrap(coord: np.ndarray) -> np.ndarray:
    """Texture index of a coordinate in texels: the integer part modulo 512 (textures repeat)."""
    return coord.astype(np.int32) & 511


def _coverage(inside: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Antialiased mask from a signed distance `inside` (m, > 0 inside) and the pixel size (m)."""
    return np.clip(inside / pixel + 0.5, 0.0, 1.0)


def _jitter(rng: np.random.Generator, colour: Sequence[float], spread: float) -> np.ndarray:
    """`colour` with Gaussian noise of `spread` per channel, as float32 [3] in [0, 255]."""
    return np.clip(np.asarray(colour) + rng.normal(0, spread, 3), 0, 255).astype(np.float32)


def _palette(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Colours of one scene (RGB float32 [3]): sky, haze, grass, verge, asphalt, forest."""
    grasses = ((80, 115, 45), (120, 120, 60), (95, 105, 55))  # green, dry, dark
    return {
        "zenith": _jitter(rng, (70, 120, 200), 15),
        "haze": _jitter(rng, (200, 210, 220), 12),
        "grass": _jitter(rng, grasses[rng.integers(len(grasses))], 10),
        "shoulder": _jitter(rng, (128, 124, 116), 5),
        "asphalt": _jitter(rng, (rng.uniform(70, 100),) * 3, 2),
        "forest": _jitter(rng, (45, 62, 40), 6),
    }


def _ground(cam: _Camera, pal: dict[str, np.ndarray], top: int) -> np.ndarray:
    """Rows `top`..H of the ground plane: grass, gravel verge, asphalt, lane markings, haze; float [H - top, W, 3]."""
    dy = np.arange(top, IMAGE_HEIGHT, dtype=np.float32) + 0.5 - cam.horizon  # [Hg]
    z = cam.focal * cam.height / dy  # depth of each row (m), [Hg]
    pixel = (z / cam.focal)[:, None]  # metres per pixel, [Hg, 1]
    x = (np.arange(IMAGE_WIDTH, dtype=np.float32) + 0.5 - cam.vx)[None, :] * pixel  # lateral metres, [Hg, W]
    across = np.abs(x - cam.road_centre(z)[:, None])  # distance from the centre line, [Hg, W]
    road = _coverage(cam.lane + 0.3 - across, pixel)
    verge = _coverage(cam.lane + 1.3 - across, pixel) - road
    grass = (1 - road - verge) * (1 + 0.35 * _texture("grass")[_wrap(z * 150)[:, None], _wrap(x * 150)])
    fine = _texture("gravel")[_wrap(z * 400)[:, None], _wrap(x * 400)]
    verge *= 1 + 0.15 * fine
    road *= 1 + 0.06 * fine
    paint = _lane_marks(cam, z, across, pixel)  # [Hg, W]
    haze = (1 - np.exp(-z / 300.0))[:, None]  # [Hg, 1]
    out = np.empty((len(z), IMAGE_WIDTH, 3), np.float32)
    for c in range(3):  # one channel at a time: contiguous [Hg, W] arithmetic is much faster than [..., 3]
        chan = grass * pal["grass"][c] + verge * pal["shoulder"][c] + road * pal["asphalt"][c]
        chan += (225.0 - chan) * paint
        out[..., c] = chan + (pal["haze"][c] - chan) * haze
    return out


def _lane_marks(cam: _Camera, z: np.ndarray, across: np.ndarray, pixel: np.ndarray) -> np.ndarray:
    """Paint coverage [Hg, W] of the dashed white centre line and the edge lines (antialiased)."""
    dashes = (((z + cam.dash_phase) % 12.0) < 3.0)[:, None]  # 3 m dash, 9 m gap
    centre = _coverage(0.07 - across, pixel) * dashes
    edge = _coverage(0.08 - np.abs(across - (cam.lane - 0.12)), pixel)
    return np.minimum(centre + edge, 1) * np.exp(-z / 150.0)[:, None]  # fade out before they alias


def _sky(rng: np.random.Generator, pal: dict[str, np.ndarray], rows: int) -> np.ndarray:
    """Sky gradient from zenith to haze with soft clouds; float [rows, W, 3]."""
    t = (np.arange(rows, dtype=np.float32) / max(rows - 1, 1))[:, None, None] ** 0.8  # [rows, 1, 1]
    sky = pal["zenith"] * (1 - t) + pal["haze"] * t
    cover = rng.uniform(0.3, 0.75)
    clouds = np.clip((coarse_noise(rng, (rows, IMAGE_WIDTH), (4, 9)) - cover) * 3.0, 0, 1)[..., None]
    return sky * (1 - clouds) + np.float32(235) * clouds


def _treeline(rng: np.random.Generator, canvas: np.ndarray, cam: _Camera, pal: dict[str, np.ndarray]) -> None:
    """A distant forest edge standing on the horizon, in place on canvas [H, W, 3]."""
    walk = np.cumsum(rng.normal(0, 1.5, IMAGE_WIDTH + 60))
    height = np.convolve(walk - walk.mean(), np.ones(60) / 60, mode="valid")[:IMAGE_WIDTH]  # [W]
    height = np.clip(rng.uniform(12, 40) + height + 6 * rng.random(IMAGE_WIDTH), 2, 90)
    top, bottom = int(cam.horizon - height.max()), int(cam.horizon) + 1
    rows = np.arange(top, bottom)[:, None]  # [R, 1]
    mask = (rows >= cam.horizon - height[None, :]).astype(np.float32)[..., None]  # [R, W, 1]
    tex = _texture("grass")[_wrap(rows * 3), _wrap(np.arange(IMAGE_WIDTH) * 3)][..., None]
    forest = (pal["forest"] * (1 + 0.3 * tex)) * 0.7 + pal["haze"] * 0.3
    canvas[top:bottom] = canvas[top:bottom] * (1 - mask) + forest * mask


def _background(rng: np.random.Generator, cam: _Camera, pal: dict[str, np.ndarray]) -> np.ndarray:
    """Sky, distant trees and the textured ground plane; float32 [H, W, 3]."""
    top = int(math.floor(cam.horizon)) + 1
    canvas = np.empty((IMAGE_HEIGHT, IMAGE_WIDTH, 3), np.float32)
    canvas[:top] = _sky(rng, pal, top)
    canvas[top:] = _ground(cam, pal, top)
    _treeline(rng, canvas, cam, pal)
    return canvas


# ----------------------------------------------------------------------------------------------------
# Synthetic stand-in: buildings and trees as textured blocks
# ----------------------------------------------------------------------------------------------------


def _region(x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice, np.ndarray, np.ndarray] | None:
    """Clipped pixel slices of a box and its pixel-centre grids (ys [h, 1], xs [1, w]), or None if off-image."""
    c0, r0 = max(int(x0), 0), max(int(y0), 0)
    c1, r1 = min(int(math.ceil(x1)), IMAGE_WIDTH), min(int(math.ceil(y1)), IMAGE_HEIGHT)
    if c1 <= c0 or r1 <= r0:
        return None
    ys = np.arange(r0, r1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(c0, c1, dtype=np.float32)[None, :] + 0.5
    return slice(r0, r1), slice(c0, c1), ys, xs


def _paint(canvas: np.ndarray, region: tuple, mask: np.ndarray, colour: np.ndarray | float) -> None:
    """Blend `colour` ([h, w, 3], [3] or a grey level) into canvas[region] where `mask` ([h, w]) is set."""
    rows, cols = region[0], region[1]
    m = mask.astype(np.float32)[..., None]  # [h, w, 1]
    canvas[rows, cols] = canvas[rows, cols] * (1 - m) + colour * m


def _fill(canvas: np.ndarray, x0: float, y0: float, x1: float, y1: float, colour: np.ndarray | float) -> None:
    """Fill the box (x0, y0, x1, y1), clipped to the image, with `colour`."""
    region = _region(x0, y0, x1, y1)
    if region:
        canvas[region[0], region[1]] = colour


def _tree(rng: np.random.Generator, canvas: np.ndarray, sx: float, gy: float, s: float) -> None:
    """A deciduous or conifer tree standing at column sx, ground row gy, s pixels per metre."""
    trunk_h, half = rng.uniform(1.5, 3.0) * s, 0.18 * s
    _fill(canvas, sx - half, gy - trunk_h, sx + half, gy, np.array([70, 55, 40], np.float32))
    conifer = rng.random() < 0.4
    rx, ry = rng.uniform(1.4, 2.8) * s, rng.uniform(2.0, 4.5) * s
    cy = gy - trunk_h - (0.2 if conifer else 0.7) * ry
    region = _region(sx - rx, cy - ry, sx + rx, cy + ry)
    if region is None:
        return
    ys, xs = region[2], region[3]
    if conifer:
        mask = np.abs(xs - sx) < rx * np.clip((ys - (cy - ry)) / (2 * ry), 0, 1)
    else:
        mask = ((xs - sx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
    tex = _texture("grass")[_wrap(ys * 60 / s), _wrap(xs * 60 / s)]
    shade = 0.75 + 0.35 * (xs - sx + rx) / (2 * rx)  # lit from the right
    green = np.array([40, 75, 30] if not conifer else [25, 55, 30], np.float32) * rng.uniform(0.8, 1.2)
    _paint(canvas, region, mask, green * (shade * (1 + 0.45 * tex))[..., None])


def _building(rng: np.random.Generator, canvas: np.ndarray, sx: float, gy: float, s: float) -> None:
    """A house or block: textured wall with a window grid and a dark roof, standing at (sx, gy)."""
    width, height = rng.uniform(6, 16) * s, rng.uniform(3.5, 11) * s
    region = _region(sx - width / 2, gy - height, sx + width / 2, gy)
    if region is None:
        return
    ys, xs = region[2], region[3]
    u, v = (xs - (sx - width / 2)) / s, (gy - ys) / s  # metres along the wall and above the ground
    walls = ((150, 45, 35), (215, 185, 100), (220, 218, 210), (150, 150, 152), (170, 90, 60))
    wall = np.asarray(walls[rng.integers(len(walls))], np.float32)
    name, per_metre = ("brick", 160) if rng.random() < 0.4 else ("gravel", 100)  # texels per metre of wall
    grain = _texture(name)[_wrap(v * per_metre), _wrap(u * per_metre)]
    colour = wall * (1 + 0.12 * grain)[..., None]
    pitch = rng.uniform(2.5, 3.5)
    windows = ((u % pitch) > 0.9) & ((u % pitch) < 2.0) & ((v % 3.0) > 1.0) & ((v % 3.0) < 2.3) & (v > 0.8)
    canvas[region[0], region[1]] = np.where(windows[..., None], np.float32(50 + 30 * rng.random()), colour)
    _roof(rng, canvas, sx, gy - height, width, s)


def _roof(rng: np.random.Generator, canvas: np.ndarray, sx: float, base: float, width: float, s: float) -> None:
    """A dark pitched roof over a wall whose top row is `base`."""
    rise = rng.uniform(1.0, 3.0) * s
    region = _region(sx - width / 2 - 0.3 * s, base - rise, sx + width / 2 + 0.3 * s, base + 1)
    if region is None:
        return
    ys, xs = region[2], region[3]
    mask = np.abs(xs - sx) < (width / 2 + 0.3 * s) * np.clip((ys - (base - rise)) / rise, 0, 1)
    _paint(canvas, region, mask, np.array([55, 45, 45], np.float32) * rng.uniform(0.7, 1.3))


def _bare_pole(rng: np.random.Generator, canvas: np.ndarray, sx: float, gy: float, s: float) -> None:
    """A grey pole without a sign (lamp post, marker), so that a pole alone does not give a sign away."""
    height, half = rng.uniform(1.5, 8.0) * s, max(0.5, 0.05 * s)
    _fill(canvas, sx - half, gy - height, sx + half, gy, np.float32(rng.uniform(90, 150)))


def _roadside_objects(rng: np.random.Generator, canvas: np.ndarray, cam: _Camera) -> None:
    """Buildings, trees and bare poles beside the road, painted far to near, in place on canvas."""
    n = rng.integers(8, 26)
    depths = np.sort(10 * np.exp(rng.uniform(0, math.log(200 / 10), n)))[::-1]  # far first
    for z in depths:
        side = 1 if rng.random() < 0.5 else -1
        kind = rng.choice(3, p=(0.25, 0.6, 0.15))
        margin = rng.uniform(0.5, 3.0) if kind == 2 else rng.uniform(3.0, 25.0)
        x = cam.road_centre(z) + side * (cam.lane + margin)
        draw = (_building, _tree, _bare_pole)[kind]
        draw(rng, canvas, cam.column(x, z), cam.ground_row(z), cam.focal / z)


# ----------------------------------------------------------------------------------------------------
# Synthetic stand-in: sign sprites
# ----------------------------------------------------------------------------------------------------

_SPRITE = 200  # sprites are drawn at this size, then resized (antialiased) to a few tens of pixels
_RED, _BLUE, _YELLOW, _WHITE, _BLACK = (200, 25, 35), (10, 80, 170), (245, 200, 30), (245, 245, 240), (20, 20, 20)
# kind -> (TYPE, NAME, physical size in m) written to the annotations
_SIGNS = {
    **{n: ("PROHIBITORY", f"{n}_SIGN", 0.7) for n in ("30", "50", "70", "80", "90", "100", "110")},
    "no_parking": ("PROHIBITORY", "NO_PARKING", 0.7),
    "no_stopping": ("PROHIBITORY", "NO_STOPPING_NO_STANDING", 0.7),
    "pass_right": ("MANDATORY", "PASS_RIGHT_SIDE", 0.7),
    "warning": ("WARNING", "OTHER", 0.9),
    "give_way": ("WARNING", "GIVE_WAY", 0.9),
    "pedestrian": ("INFORMATION", "PEDESTRIAN_CROSSING", 0.7),
    "priority": ("OTHER", "PRIORITY_ROAD", 0.7),
}
_SPEED_KINDS = ("50", "70", "80")
_OTHER_PROHIBITORY = ("30", "90", "100", "110", "no_parking", "no_stopping")
_OTHER_SIGNS = ("pass_right", "warning", "give_way", "pedestrian", "priority")


@functools.lru_cache(maxsize=None)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's built-in font at `size` pixels."""
    return ImageFont.load_default(size=size)


def _number_sprite(text: str, box_w: int, box_h: int) -> Image.Image:
    """Bold black `text` on transparent ground, stretched to fit box_w x box_h like road-sign digits."""
    font = _font(120)
    x0, y0, x1, y1 = font.getbbox(text, stroke_width=7)
    canvas = Image.new("L", (x1 - x0 + 4, y1 - y0 + 4), 0)
    ImageDraw.Draw(canvas).text((2 - x0, 2 - y0), text, fill=255, font=font, stroke_width=7, stroke_fill=255)
    width = min(box_w, round(box_h * canvas.width / canvas.height * 1.1))
    return canvas.resize((width, box_h), Image.Resampling.LANCZOS)


def _disc(draw: ImageDraw.ImageDraw, inset: float, fill: tuple[int, int, int]) -> None:
    """A filled circle inset from the sprite's edge by `inset` pixels."""
    draw.ellipse((inset, inset, _SPRITE - 1 - inset, _SPRITE - 1 - inset), fill=fill)


def _ring_sign(inner: tuple[int, int, int]) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A round prohibitory sign: thin grey rim, red ring, `inner` disc."""
    img = Image.new("RGBA", (_SPRITE, _SPRITE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    _disc(draw, 0, (90, 90, 90))
    _disc(draw, 3, _RED)
    _disc(draw, 0.12 * _SPRITE, inner)
    return img, draw


def _speed_sprite(text: str) -> Image.Image:
    """Red ring, white disc, black speed number."""
    img, _ = _ring_sign(_WHITE)
    digits = _number_sprite(text, int(0.62 * _SPRITE), int(0.42 * _SPRITE))
    ink = Image.new("RGBA", digits.size, _BLACK + (255,))
    img.paste(ink, ((_SPRITE - digits.width) // 2, (_SPRITE - digits.height) // 2), digits)
    return img


def _slash_sprite(cross: bool) -> Image.Image:
    """No parking (one red slash) or no stopping (red cross) on a blue disc inside a red ring."""
    img, draw = _ring_sign(_BLUE)
    a, b, w = 0.2 * _SPRITE, 0.8 * _SPRITE, int(0.11 * _SPRITE)
    draw.line((a, a, b, b), fill=_RED, width=w)
    if cross:
        draw.line((a, b, b, a), fill=_RED, width=w)
    return img


def _pass_right_sprite() -> Image.Image:
    """Blue disc, white rim, white arrow pointing down-right."""
    img = Image.new("RGBA", (_SPRITE, _SPRITE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    _disc(draw, 0, _WHITE)
    _disc(draw, 6, _BLUE)
    s = _SPRITE
    draw.line((0.3 * s, 0.3 * s, 0.62 * s, 0.62 * s), fill=_WHITE, width=int(0.1 * s))
    draw.polygon([(0.72 * s, 0.72 * s), (0.72 * s, 0.42 * s), (0.42 * s, 0.72 * s)], fill=_WHITE)
    return img


def _triangle_sprite(up: bool) -> Image.Image:
    """Yellow triangle with a red border: a warning sign (point up, with '!') or give way (point down)."""
    img = Image.new("RGBA", (_SPRITE, _SPRITE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    s = _SPRITE
    outer = [(s / 2, 0.04 * s), (0.98 * s, 0.9 * s), (0.02 * s, 0.9 * s)]
    inner = [(s / 2, 0.25 * s), (0.8 * s, 0.79 * s), (0.2 * s, 0.79 * s)]
    if not up:  # give way: the same triangle upside down
        outer, inner = ([(x, s - y) for x, y in points] for points in (outer, inner))
    draw.polygon(outer, fill=_RED)
    draw.polygon(inner, fill=_YELLOW)
    if up:
        draw.rectangle((0.46 * s, 0.38 * s, 0.54 * s, 0.62 * s), fill=_BLACK)
        draw.ellipse((0.46 * s, 0.66 * s, 0.54 * s, 0.74 * s), fill=_BLACK)
    return img


def _pedestrian_sprite() -> Image.Image:
    """Blue square, white triangle, black walking figure."""
    img = Image.new("RGBA", (_SPRITE, _SPRITE), _BLUE + (255,))
    draw = ImageDraw.Draw(img)
    s = _SPRITE
    draw.rectangle((0, 0, s - 1, s - 1), outline=_WHITE, width=6)
    draw.polygon([(s / 2, 0.12 * s), (0.9 * s, 0.86 * s), (0.1 * s, 0.86 * s)], fill=_WHITE)
    draw.ellipse((0.45 * s, 0.35 * s, 0.55 * s, 0.45 * s), fill=_BLACK)
    w = int(0.05 * s)
    draw.line((0.5 * s, 0.45 * s, 0.47 * s, 0.64 * s), fill=_BLACK, width=w)
    draw.line((0.47 * s, 0.64 * s, 0.4 * s, 0.8 * s), fill=_BLACK, width=w)
    draw.line((0.47 * s, 0.64 * s, 0.58 * s, 0.8 * s), fill=_BLACK, width=w)
    draw.line((0.38 * s, 0.56 * s, 0.62 * s, 0.5 * s), fill=_BLACK, width=w)
    return img


def _priority_sprite() -> Image.Image:
    """Yellow diamond with a white border."""
    img = Image.new("RGBA", (_SPRITE, _SPRITE), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    s = _SPRITE
    for inset, colour in ((0, (90, 90, 90)), (3, _WHITE), (0.16 * s, _YELLOW)):
        draw.polygon([(s / 2, inset), (s - 1 - inset, s / 2), (s / 2, s - 1 - inset), (inset, s / 2)], fill=colour)
    return img


@functools.lru_cache(maxsize=None)
def _sprite(kind: str) -> Image.Image:
    """The full-size RGBA sprite of a sign kind (cached)."""
    if kind in _SIGNS and kind[0].isdigit():
        return _speed_sprite(kind)
    makers = {
        "no_parking": lambda: _slash_sprite(False), "no_stopping": lambda: _slash_sprite(True),
        "pass_right": _pass_right_sprite, "warning": lambda: _triangle_sprite(True),
        "give_way": lambda: _triangle_sprite(False), "pedestrian": _pedestrian_sprite, "priority": _priority_sprite,
    }
    return makers[kind]()


def _sized_sprite(rng: np.random.Generator, kind: str, diameter: float, squash: float) -> Image.Image:
    """The sprite resized to `diameter` px high (width times `squash`), tilted a little and lit."""
    size = (max(3, round(diameter * squash)), max(3, round(diameter)))
    img = _sprite(kind).resize(size, Image.Resampling.LANCZOS)
    img = img.rotate(rng.uniform(-4, 4), resample=Image.Resampling.BICUBIC, expand=True)
    arr = np.asarray(img).astype(np.float32)  # [h, w, 4]
    arr[..., :3] *= rng.uniform(0.72, 1.05)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))  # RGBA


def _blurred(img: Image.Image, radius: float, pad: int) -> Image.Image:
    """`img` padded by `pad` px on every side, then Gaussian-blurred (alpha included)."""
    padded = Image.new("RGBA", (img.width + 2 * pad, img.height + 2 * pad), (0, 0, 0, 0))
    padded.paste(img, (pad, pad))
    return padded.filter(ImageFilter.GaussianBlur(radius))


def _alpha_box(img: Image.Image, threshold: int = 96) -> tuple[int, int, int, int]:
    """Bounding box (x0, y0, x1, y1) of a sprite's pixels with alpha >= threshold."""
    box = img.getchannel("A").point(lambda a: 255 if a >= threshold else 0).getbbox()
    return box or (0, 0, img.width, img.height)


# ----------------------------------------------------------------------------------------------------
# Synthetic stand-in: placing signs and boards, writing their entries
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """The image being drawn, its camera, the boxes already taken and the annotation entries."""

    image: Image.Image
    cam: _Camera
    taken: list[tuple[float, float, float, float]] = field(default_factory=list)
    entries: list[str] = field(default_factory=list)
    misc: bool = False


def _free(box: tuple[float, float, float, float], taken: Sequence[tuple[float, float, float, float]]) -> bool:
    """True when `box` lies inside the image (2 px margin) and 6 px clear of every taken box."""
    x0, y0, x1, y1 = box
    if x0 < 2 or y0 < 2 or x1 > IMAGE_WIDTH - 2 or y1 > IMAGE_HEIGHT - 2:
        return False
    return all(x1 + 6 < a or a1 + 6 < x0 or y1 + 6 < b or b1 + 6 < y0 for a, b, a1, b1 in taken)


def _free_on_pole(cx: float, cy: float, w: float, h: float, ground: float, taken: Sequence) -> bool:
    """True when a w x h object centred at (cx, cy) and its pole down to row `ground` are free."""
    return _free((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), taken) and _free(
        (cx - 1, cy, cx + 1, min(ground, IMAGE_HEIGHT - 3)), taken)


def _spot(rng: np.random.Generator, scene: _Scene, w: float, h: float, metres: float) -> tuple[float, float, float]:
    """Centre (cx, cy) and ground row of a pole-mounted object w x h px of physical height `metres`."""
    cam = scene.cam
    z = cam.focal * metres / h
    gy, s = cam.ground_row(z), cam.focal / z
    for _ in range(60):
        side = 1 if rng.random() < 0.7 else -1  # right-hand traffic: most signs on the right
        x = cam.road_centre(z) + side * (cam.lane + rng.uniform(0.6, 4.5))
        cx, cy = cam.column(x, z), gy - (rng.uniform(1.4, 2.6) + metres / 2) * s
        if _free_on_pole(cx, cy, w, h, gy, scene.taken):
            return cx, cy, gy
    for _ in range(200):  # fall back to anywhere in a band around the horizon
        cx, cy = rng.uniform(w, IMAGE_WIDTH - w), rng.uniform(cam.horizon - 4 * h, cam.horizon)
        if _free_on_pole(cx, cy, w, h, cy + 3 * h, scene.taken):
            return cx, cy, cy + 3 * h
    raise RuntimeError("no free place for a sign")  # pragma: no cover - the image has room for far more


def _pole(scene: _Scene, cx: float, top: float, bottom: float, width: float) -> None:
    """A grey pole from row `top` down to the ground row `bottom`."""
    ImageDraw.Draw(scene.image).line((cx, top, cx, bottom), fill=(120, 120, 125), width=max(1, round(width)))


def _format_entry(visibility: str, box: tuple[float, float, float, float], kind: str) -> str:
    """`VISIBILITY, lrx, lry, ulx, uly, TYPE, NAME` for a box (x0, y0, x1, y1)."""
    type_, name, _ = _SIGNS[kind]
    x0, y0, x1, y1 = box
    return f"{visibility}, {x1:.2f}, {y1:.2f}, {x0:.2f}, {y0:.2f}, {type_}, {name}"


def _occlude(rng: np.random.Generator, scene: _Scene, box: tuple[float, float, float, float]) -> None:
    """Cover 35-60% of `box` with a leafy branch coming in from one side."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    cover, from_left = rng.uniform(0.35, 0.6), rng.random() < 0.5
    rx, ry, cy = 1.2 * w, 0.9 * h, (y0 + y1) / 2
    cx = x0 + cover * w - rx if from_left else x1 - cover * w + rx
    region = _region(cx - rx, cy - ry, cx + rx, cy + ry)
    rows, cols, ys, xs = region
    crop = np.asarray(scene.image)[rows, cols].astype(np.float32)  # [h, w, 3]
    mask = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 < 1
    tex = _texture("grass")[_wrap(ys * 4), _wrap(xs * 4)]
    leaves = np.array([45, 80, 35], np.float32) * (1 + 0.4 * tex)[..., None]
    _paint(crop, (slice(None), slice(None)), mask, leaves)
    scene.image.paste(Image.fromarray(np.clip(crop, 0, 255).astype(np.uint8)), (cols.start, rows.start))
    scene.taken.append((float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)))


def _place_sign(rng: np.random.Generator, scene: _Scene, kind: str, visibility: str, diameter: float) -> None:
    """Draw one pole-mounted sign (blurred, squashed or occluded as `visibility` says) and append its entry."""
    squash = rng.uniform(0.35, 0.6) if visibility == "SIDE_ROAD" else 1.0
    sprite = _sized_sprite(rng, kind, diameter, squash)
    bx0, by0, bx1, by1 = _alpha_box(sprite)
    metres = _SIGNS[kind][2]
    cx, cy, ground = _spot(rng, scene, bx1 - bx0, by1 - by0, metres)
    left, top = round(cx - (bx0 + bx1) / 2), round(cy - (by0 + by1) / 2)  # sprite origin in the image
    box = (float(left + bx0), float(top + by0), float(left + bx1), float(top + by1))
    _pole(scene, (box[0] + box[2]) / 2, box[3] - 1, ground, 0.08 * (by1 - by0) / metres)
    if visibility == "BLURRED":
        pad = max(2, round(0.3 * diameter))
        blurred = _blurred(sprite, rng.uniform(0.1, 0.16) * diameter, pad)
        scene.image.paste(blurred, (left - pad, top - pad), blurred)
    else:
        scene.image.paste(sprite, (left, top), sprite)
    scene.taken.append(box)
    if visibility == "OCCLUDED":
        _occlude(rng, scene, box)
    scene.entries.append(_format_entry(visibility, box, kind))


def _misc_board(rng: np.random.Generator, scene: _Scene) -> None:
    """An unannotated rectangular board (street name, direction, tourist sign), covered by MISC_SIGNS."""
    h = rng.uniform(12, 30)
    w = h * rng.uniform(1.8, 4.0)
    cx, cy, ground = _spot(rng, scene, w, h, 0.5)
    box = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    plates = ((245, 245, 240), (20, 90, 170), (120, 70, 40), (20, 110, 60))
    plate = plates[rng.integers(len(plates))]
    ink = (20, 20, 20) if plate[0] > 200 else (240, 240, 240)
    _pole(scene, cx, box[3], ground, max(1.0, h / 10))
    draw = ImageDraw.Draw(scene.image)
    draw.rectangle(box, fill=plate, outline=ink, width=1)
    for k in range(int(rng.integers(1, 3))):  # text-like strokes
        y = box[1] + h * (0.3 + 0.35 * k)
        draw.line((box[0] + 0.15 * w, y, box[0] + rng.uniform(0.5, 0.85) * w, y), fill=ink, width=max(1, round(h / 8)))
    scene.taken.append(box)


def _sign_specs(rng: np.random.Generator, recipe: _Recipe) -> list[tuple[str, str, float]]:
    """(kind, visibility, diameter px) of every boxed sign a recipe asks for; OCCLUDED ones first."""
    specs = []
    main = CLASSES[recipe.label].split("_")[0] if recipe.label else None
    if main:  # diameter log-uniform in [20, 45] px: most signs small, as far signs are more frequent
        low = 28 if recipe.variant == "smaller_visible" else 20
        specs.append((main, "VISIBLE", low * (45 / low) ** rng.random()))
    others = [k for k in _SPEED_KINDS if k != main]
    v = recipe.variant
    if v == "other_sign":
        specs.append((str(rng.choice(_OTHER_SIGNS)), "VISIBLE", rng.uniform(22, 55)))
    elif v == "drop_other_sign":
        specs += [(str(k), "VISIBLE", rng.uniform(22, 55)) for k in rng.choice(_OTHER_SIGNS, 2, replace=False)]
    elif v in ("other_prohibitory", "drop_other_prohibitory"):
        specs.append((str(rng.choice(_OTHER_PROHIBITORY)), "VISIBLE", rng.uniform(20, 50)))
    elif v in ("blurred", "occluded", "side_road"):
        specs.append((str(rng.choice(others)), v.upper(), rng.uniform(20, 50)))
    elif v == "smaller_visible":
        specs.append((str(rng.choice(others)), "VISIBLE", specs[0][2] * rng.uniform(0.55, 0.72)))
    elif v == "drop_not_visible":
        specs.append((str(rng.choice(_SPEED_KINDS)), str(rng.choice(VISIBILITIES[1:])), rng.uniform(20, 50)))
    order = rng.permutation(len(specs))
    return sorted((specs[i] for i in order), key=lambda spec: spec[1] != "OCCLUDED")  # occluders drawn before the rest


def _add_stray(entry: str, rng: np.random.Generator) -> str:
    """Append a stray 'l' to one of the entry's four numbers."""
    fields = entry.split(", ")
    k = 1 + int(rng.integers(4))
    fields[k] += "l"
    return ", ".join(fields)


def _annotation_line(rng: np.random.Generator, name: str, scene: _Scene, recipe: _Recipe) -> str:
    """`<file>:` then the scene's entries (and MISC_SIGNS) in random order, each ';'-terminated."""
    entries = list(scene.entries)
    if recipe.stray and entries:
        entries[0] = _add_stray(entries[0], rng)
    if scene.misc:
        entries.append(MISC)
    order = rng.permutation(len(entries))
    return f"{name}:" + "".join(entries[i] + ";" for i in order)


def _photometric(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Exposure and colour cast (in place on float [H, W, 3]); returns uint8 [H, W, 3]."""
    gain = rng.uniform(0.8, 1.12) * (1 + rng.normal(0, 0.03, 3))
    for c in range(3):
        canvas[..., c] *= np.float32(gain[c])
    return np.clip(canvas, 0, 255, out=canvas).astype(np.uint8)


def _render(rng: np.random.Generator, recipe: _Recipe, name: str) -> tuple[Image.Image, str]:
    """One synthetic road scene and its annotation line."""
    cam = _camera(rng)
    canvas = _background(rng, cam, _palette(rng))
    _roadside_objects(rng, canvas, cam)
    scene = _Scene(Image.fromarray(_photometric(rng, canvas)), cam, misc=recipe.misc)
    for _ in range(int(rng.integers(1, 3)) if recipe.misc else 0):
        _misc_board(rng, scene)
    for spec in _sign_specs(rng, recipe):
        _place_sign(rng, scene, *spec)
    return scene.image, _annotation_line(rng, name, scene, recipe)


# ----------------------------------------------------------------------------------------------------
# Synthetic stand-in: writing a dataset
# ----------------------------------------------------------------------------------------------------


def _synthetic_parameters(n_train: int, n_test: int, seed: int) -> dict:
    """The parameters recorded in the marker (a cached copy is reused only if they match)."""
    return {"n_train": int(n_train), "n_test": int(n_test), "seed": int(seed), "version": SYNTHETIC_VERSION}


def _write_split(folder: Path, split_index: int, n: int, seed: int) -> None:
    """Write one set folder: its JPEGs and annotations.txt."""
    folder.mkdir(parents=True)
    recipes = _plan_split(np.random.default_rng([seed, split_index]), n)
    lines = []
    for i, recipe in enumerate(recipes):
        rng = np.random.default_rng([seed, split_index, i])
        name = f"synth{split_index + 1}Image{i:06d}.jpg"
        image, line = _render(rng, recipe, name)
        image.save(folder / name, "JPEG", quality=int(rng.integers(88, 95)))
        lines.append(line)
    (folder / ANNOTATIONS).write_text("\n".join(lines) + "\n\n")  # a trailing empty line, as parsers must allow


def write_synthetic(root: str | Path, n_train: int, n_test: int, seed: int = 0) -> Path:
    """Write the synthetic stand-in (STS layout, `n_train` / `n_test` subset images) at `root`, atomically."""
    if n_train < 0 or n_test < 0:
        raise ValueError(f"image counts must be non-negative, got n_train={n_train}, n_test={n_test}")
    root = Path(root)
    with atomic_dir(root) as tmp:
        for split_index, (split, n) in enumerate((("train", n_train), ("test", n_test))):
            _write_split(tmp / SPLITS[split], split_index, n, seed)
        marker = {
            **_synthetic_parameters(n_train, n_test, seed), "note": SYNTHETIC_NOTE,
            "image_size": [IMAGE_HEIGHT, IMAGE_WIDTH], "class_frequencies": dict(zip(CLASSES, SYNTHETIC_FREQUENCIES)),
            "textures": "scikit-image data grass(), gravel(), brick(): CC0 (see skimage.data docstrings)",
        }
        write_json(tmp / MARKER, marker)
    return root


def default_dataset(n_train: int, n_test: int, seed: int = 0) -> Path:
    """The synthetic stand-in cached under data_dir('traffic_signs_synthetic'), written once per parameters."""
    return stand_in("traffic_signs_synthetic", _synthetic_parameters(n_train, n_test, seed),
                    lambda folder: write_synthetic(folder, n_train, n_test, seed))


# ----------------------------------------------------------------------------------------------------
# The real data's statistics, and the stand-in's
# ----------------------------------------------------------------------------------------------------

REAL_STATISTICS = RealStatistics(
    dataset="Swedish traffic signs (speed-limit subset)",
    object_name="speed-limit sign",
    image_size=Quoted("960 x 1280 ('1.3 megapixels'); 747 training, 684 test images", "ATS sec. 4.4; Zoom-In sec. 4 (iii)"),
    object_side=Quoted(NOT_REPORTED, "ATS sec. 4.4, Zoom-In sec. 4 and the thesis sec. 3.2 give no sign size"),
    object_fraction=Quoted(NOT_REPORTED),
    objects_per_image=Quoted("not reported; 'approximately 100 images for each speed limit sign and 400 for the "
                             "background class' (ATS fig. 5 shows an image with two signs)", "ATS sec. 4.4, fig. 5"),
    extra=(("what the low-resolution view shows",
            Quoted("'one can deduce the existence of a speed limit sign, without being able to identify the number "
                   "of kilometers written on it'", "ATS sec. 4.4, fig. 1")),),
)


def measure_stand_in(data: TrafficSigns) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics on a loaded split, from its annotation boxes and image headers (no decoding).

    The objects are each image's 50/70/80 signs as the subset keeps them (`Sample.signs`, visible or not);
    EMPTY images count with none.
    """
    hw = []
    for sample in data.samples:
        with Image.open(sample.path) as im:  # reads the header only
            hw.append((im.height, im.width))
    boxes = [np.array([[x1 - x0, y1 - y0] for x0, y0, x1, y1 in (s.box for s in sample.signs)], dtype=np.float64)
             for sample in data.samples]  # per image [K_i, 2] (width, height)
    return measured_from_boxes(REAL_STATISTICS.dataset, REAL_STATISTICS.object_name, np.array(hw).reshape(-1, 2), boxes)
