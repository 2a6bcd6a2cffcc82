"""The fMoW (Functional Map of the World) subset of Zoom-In, in its distributed format, and a synthetic stand-in.

Real data. Christie et al., "Functional Map of the World" (CVPR 2018; ref. [5] of the Zoom-In
paper), https://github.com/fMoW/dataset. fMoW-rgb is laid out as

    <root>/{train,val}/<category>/<category>_<id>/<category>_<id>_<k>_rgb.jpg
    <root>/{train,val}/<category>/<category>_<id>/<category>_<id>_<k>_rgb.json

one folder per location (instance), k = 0, 1, ... its temporal views, and a JSON beside each
image with `bounding_boxes` (a list of dicts, or a single dict) whose `box` is [x, y, w, h] in
pixels (top-left corner, width, height) and whose `category` names the class, plus `gsd` (ground
sample distance, metres per pixel), `img_width`, `img_height`, `timestamp`, `cloud_cover`, ...
Only the `_rgb` files are read (fMoW-full also holds `_msrgb` files; they are ignored). The
held-out fMoW `test/` folder (no public labels) is not used.

The Zoom-In subset. Sec. 4 (iv): "we extract a class-balanced subset from the original fMoW
dataset ... Our constructed subset consists of 15,000 training images and 9,571 test image[s]
from 10 classes", with images from about 500x500 to 9,000x9,000 pixels. Appendix E: "We randomly
choose 10 categories from the original 63 categories. The chosen categories are airport,
amusement, aquaculture, archaeological, barn, border, burial, car, construction and crop. Then,
we randomly select 1,500 high-resolution images from the training set within the above classes
as our training set and use all data belongs to the above categories in the validation set of
original fMoW as our test set." Implemented here:

- `CATEGORIES`: the ten official fMoW folder names those abbreviations stand for; the label of an
  image is the index of its category folder in `CATEGORIES`; every other category is ignored.
- "1,500 ... images": per class (15,000 / 10, "class-balanced"), `PAPER_TRAIN_PER_CLASS`.
- "high-resolution images": read as the pan-sharpened `_rgb` files (not `_msrgb`).
- "randomly select": the paper is silent on how; here uniformly without replacement among all
  `_rgb` images (every temporal view of every location counts as one image: some classes have
  fewer than 1,500 locations, e.g. 463 airports in train), independently per class with
  `np.random.default_rng([seed, class_index])` over the images sorted by path, so one class's
  selection does not depend on the others. A class with fewer images keeps all (with a warning).
- test set: all `val/` images of the ten classes (`load_fmow(root, "test")`).

Synthetic stand-in (no download possible at run time). `write_synthetic` writes the same layout,
so the same loader reads it, and marks it with `SYNTHETIC_STAND_IN.json`. Each image has sides
drawn independently in [min_size, max_size]. The background is a large aerial-like field: a
low-frequency colour field (vegetation, soil, sand), solid field parcels, roads and generic
distractors common to every class (houses, tree clumps, bare patches, ponds), all modulated by
real texture, `skimage.data.grass()` (DeviantArt "Grass-01" by linolafett, CC0) and
`skimage.data.gravel()` (CC0Textures "Gravel04", CC0), both shipped in the scikit-image wheel.
The class is set by one small object (its box 0.2-2.5% of the image area for sides drawn in
500-3000 px, up to 5% for images near 500 px) with one pattern per category, rotated at random:
airport a runway with markings and an apron; amusement park a wheel with spokes and coloured
rides; aquaculture a grid of ponds; archaeological site a ruin outline of thin walls; barn a red roof with a ridge and a
silo; border checkpoint a road through a plaza with booths and red-white gate bars; burial site
rows of small markers on a lawn; car dealership rows of coloured cars beside a showroom;
construction site a bare patch with a crane cross; crop field striped parcels. Its box is
written as the object's `bounding_boxes` entry (list or single dict, alternating at random).
It is a stand-in for the method's mechanics, not the fMoW data.

Damaged downloads (`data_prep.problems`). An image's label and box come from its JSON's
`bounding_boxes`; without it, or without a readable `.jpg` beside it, the image is skipped. A JSON
that lacks only `gsd` (not used here) or the image size (read from the `.jpg` instead), or whose
size differs from the `.jpg`'s (the image's own is used), keeps its image. Every such problem, and every unpaired, malformed or truncated file, is reported (a warning
naming the file, collected in `FMoW.problems`). A split left with no usable image stops with one
`DataSetError`; a category absent from a split is not an error (`absent_classes` names it).
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from data_prep.problems import DataFileError, DataSetError, check_image, describe, read_rgb, report, summarize_problems
from data_prep.statistics import NOT_REPORTED, MeasuredStatistics, Quoted, RealStatistics, measured_from_boxes
from data_prep.textures import coarse_noise
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, read_json, write_json
from zoomin_lib.infra.progress import tqdm

__all__ = [
    "CATEGORIES",
    "PAPER_TRAIN_PER_CLASS",
    "PAPER_N_TRAIN",
    "PAPER_N_TEST",
    "MARKER",
    "MARKER_TEXT",
    "ImageMeta",
    "FMoW",
    "parse_metadata",
    "select_per_class",
    "load_fmow",
    "render_scene",
    "write_synthetic",
    "read_marker",
    "default_dataset",
]

CATEGORIES = (
    "airport",
    "amusement_park",
    "aquaculture",
    "archaeological_site",
    "barn",
    "border_checkpoint",
    "burial_site",
    "car_dealership",
    "construction_site",
    "crop_field",
)
PAPER_TRAIN_PER_CLASS = 1500  # appendix E; 15,000 training images over 10 classes (sec. 4)
PAPER_N_TRAIN = 15000  # sec. 4 (iv)
PAPER_N_TEST = 9571  # sec. 4 (iv): all val/ images of the ten classes
SPLIT_FOLDERS = {"train": "train", "test": "val"}
MARKER = "SYNTHETIC_STAND_IN.json"
MARKER_TEXT = "synthetic stand-in, not the fMoW data"
GENERATOR_VERSION = 1
EXPECTED_LAYOUT = "<root>/{train,val}/<category>/<category>_<id>/<category>_<id>_<k>_rgb.jpg with a .json beside each"
REQUIRED_KEYS = ("bounding_boxes", "gsd", "img_width", "img_height")
LABEL_KEYS = ("bounding_boxes",)  # what an image's label and box need; the loader does without the others
_RGB_SUFFIX = "_rgb"
_TEXTURE_CREDIT = (
    "skimage.data.grass() (DeviantArt Grass-01 by linolafett, CC0) and "
    "skimage.data.gravel() (CC0Textures Gravel04, CC0), shipped with scikit-image"
)

Colour = tuple[int, int, int]
Point = tuple[float, float]
Draws = tuple[ImageDraw.ImageDraw, ImageDraw.ImageDraw]  # (colour canvas, built-surface mask)


# --------------------------------------------------------------------------------------------
# Real format: metadata, discovery, selection, the dataset
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageMeta:
    """One fMoW image: its jpg path and what its JSON says about it."""

    path: Path  # the _rgb.jpg beside the JSON
    category: str  # category of the first bounding box
    boxes: np.ndarray  # [M, 4] int64 (x, y, w, h) in pixels
    box_categories: tuple[str, ...]  # [M]
    gsd: float  # metres per pixel
    width: int
    height: int


def _read_metadata_json(path: Path, required: tuple[str, ...] = REQUIRED_KEYS) -> dict:
    """The JSON object in `path`; ValueError naming the file and the line of a syntax error, or the missing keys."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataFileError(path, f"malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise DataFileError(path, f"not a readable JSON file ({describe(err)})") from err
    if not isinstance(obj, dict):
        raise DataFileError(path, f"expected a JSON object, got {type(obj).__name__}")
    missing = [key for key in required if key not in obj]
    if missing:
        raise DataFileError(path, f"missing key(s) {', '.join(missing)}")
    return obj


def _box_entries(path: Path, value: object) -> list[dict]:
    """`bounding_boxes` as a non-empty list of dicts (a single dict is wrapped)."""
    entries = [value] if isinstance(value, dict) else value
    if not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError(f"{path}: bounding_boxes must be a dict or a non-empty list of dicts")
    return entries


def _parse_box(path: Path, k: int, entry: dict) -> tuple[list[int], str]:
    """The [x, y, w, h] and category of bounding box `k`; ValueError naming the file if malformed."""
    box, category = entry.get("box"), entry.get("category")
    if not isinstance(box, list) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        raise ValueError(f"{path}: bounding_boxes[{k}] needs 'box' = [x, y, w, h], got {box!r}")
    if not isinstance(category, str):
        raise ValueError(f"{path}: bounding_boxes[{k}] needs a string 'category', got {category!r}")
    if box[2] < 0 or box[3] < 0:
        raise ValueError(f"{path}: bounding_boxes[{k}] has a negative width or height: {box}")
    return [int(round(v)) for v in box], category


def _positive_int(path: Path, obj: dict, key: str) -> int:
    """obj[key] as a positive int; ValueError naming the file otherwise."""
    value = obj[key]
    if not isinstance(value, (int, float)) or value <= 0 or value != int(value):
        raise ValueError(f"{path}: {key} must be a positive integer, got {value!r}")
    return int(value)


def _size_from_image(path: Path, problems: list[str], missing: list[str]) -> tuple[int, int]:
    """(width, height) from the header of the .jpg beside `path`, reporting the keys it stands in for."""
    jpg = path.with_suffix(".jpg")
    try:
        with Image.open(jpg) as im:
            width, height = im.size
    except (OSError, ValueError, SyntaxError) as err:
        raise DataFileError(path, f"missing key(s) {', '.join(missing)}, and {jpg.name} is not readable "
                                  f"({describe(err)})") from err
    report(problems, f"{path}: missing key(s) {', '.join(missing)}; the size is read from {jpg.name}", stacklevel=4)
    return width, height


def parse_metadata(json_path: str | Path, problems: list[str] | None = None) -> ImageMeta:
    """Read one fMoW `_rgb.json` (list or single-dict `bounding_boxes`) into an ImageMeta.

    Without `problems` every key of REQUIRED_KEYS must be there. With a list, only LABEL_KEYS must:
    a missing `gsd` becomes NaN and a missing size is read from the .jpg, each reported there.
    Errors are DataFileErrors (ValueErrors) naming the file.
    """
    path = Path(json_path)
    obj = _read_metadata_json(path, REQUIRED_KEYS if problems is None else LABEL_KEYS)
    parsed = [_parse_box(path, k, e) for k, e in enumerate(_box_entries(path, obj["bounding_boxes"]))]
    if "gsd" not in obj:
        report(problems, f"{path}: missing key gsd (not needed for the label); gsd left as NaN", stacklevel=3)
        obj["gsd"] = math.nan
    if not isinstance(obj["gsd"], (int, float)):
        raise DataFileError(path, f"gsd must be a number, got {obj['gsd']!r}")
    size_keys = [k for k in ("img_width", "img_height") if k not in obj]
    if size_keys:
        obj["img_width"], obj["img_height"] = _size_from_image(path, problems, size_keys)
    return ImageMeta(
        path=path.with_suffix(".jpg"),
        category=parsed[0][1],
        boxes=np.array([b for b, _ in parsed], dtype=np.int64).reshape(-1, 4),  # [M, 4]
        box_categories=tuple(c for _, c in parsed),
        gsd=float(obj["gsd"]),
        width=_positive_int(path, obj, "img_width"),
        height=_positive_int(path, obj, "img_height"),
    )


def _split_dir(root: Path, split: str) -> Path:
    """`root/train` or `root/val` (for split "test"); FileNotFoundError explaining the layout."""
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"split must be 'train' or 'test' (the val/ folder), got {split!r}")
    if not (root / "train").is_dir():
        raise FileNotFoundError(f"{root} has no train/ folder; expected the fMoW-rgb layout {EXPECTED_LAYOUT}")
    folder = root / SPLIT_FOLDERS[split]
    if not folder.is_dir():
        raise FileNotFoundError(f"{root} has no {folder.name}/ folder; expected the fMoW-rgb layout {EXPECTED_LAYOUT}")
    return folder


def _paired_stems(category_dir: Path, problems: list[str]) -> list[Path]:
    """Sorted `<...>_rgb` stems with both a .jpg and a .json; each unpaired file is reported."""
    jpgs = {p.with_suffix("") for p in category_dir.glob(f"*/*{_RGB_SUFFIX}.jpg")}
    jsons = {p.with_suffix("") for p in category_dir.glob(f"*/*{_RGB_SUFFIX}.json")}
    for stem in sorted(jpgs - jsons):
        report(problems, f"{stem}.jpg: no .json beside it (its label and box are there); skipped", stacklevel=3)
    for stem in sorted(jsons - jpgs):
        report(problems, f"{stem}.json: no .jpg beside it; skipped", stacklevel=3)
    return sorted(jpgs & jsons)


def _usable(stem: Path, problems: list[str], check_images: bool) -> ImageMeta | None:
    """The metadata of `stem` when its JSON gives a label and its .jpg is readable (of that size), else None, reported."""
    try:
        meta = parse_metadata(stem.with_suffix(".json"), problems)
    except ValueError as err:
        report(problems, f"{err}; skipped", stacklevel=3)
        return None
    if not check_images:
        return meta
    problem = check_image(meta.path)
    if problem is not None:
        report(problems, f"{meta.path}: {problem}; skipped", stacklevel=3)
        return None
    with Image.open(meta.path) as im:  # the header only
        width, height = im.size
    if (width, height) != (meta.width, meta.height):
        report(problems, f"{meta.path}: the image is {width}x{height}, its JSON says {meta.width}x{meta.height}; kept at "
                         "the image's size (its boxes may be off)", stacklevel=3)
        meta = replace(meta, width=width, height=height)
    return meta


def select_per_class(labels: np.ndarray, per_class: int, seed: int = 0) -> np.ndarray:
    """Indices of up to `per_class` items of each class, uniform without replacement, sorted."""
    labels = np.asarray(labels)  # [N]
    chosen = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)  # sorted
        if len(members) < per_class:
            name = CATEGORIES[c] if 0 <= c < len(CATEGORIES) else str(c)
            msg = f"class {name} has {len(members)} images, fewer than per_class={per_class}; all kept"
            warnings.warn(msg, stacklevel=2)
            chosen.append(members)
        else:
            rng = np.random.default_rng([seed, int(c)])
            chosen.append(np.sort(rng.choice(members, size=per_class, replace=False)))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


@dataclass
class FMoW:
    """One split of the fMoW subset: metadata in memory, pixels read lazily one image at a time."""

    root: Path
    split: str  # "train" or "test" (the val/ folder)
    items: list[ImageMeta]
    labels: np.ndarray  # [N] int64, indices into CATEGORIES
    synthetic: bool  # True when root carries the stand-in's marker
    problems: list[str] = field(default_factory=list)  # '<file>: <problem>; <what was done>', one per problem

    def __len__(self) -> int:
        """Number of images."""
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        """(image [H, W, 3] uint8, label) of image i."""
        return self.read_image(i), int(self.labels[i])

    @property
    def paths(self) -> list[Path]:
        """The jpg paths."""
        return [m.path for m in self.items]

    @property
    def boxes(self) -> list[np.ndarray]:
        """Per image, its boxes [M, 4] int64 (x, y, w, h)."""
        return [m.boxes for m in self.items]

    def roi_boxes(self, i: int) -> list[tuple[int, int, int, int]]:
        """Image i's boxes as (x0, y0, x1, y1) = (x, y, x + w, y + h)."""
        return [(int(x), int(y), int(x + w), int(y + h)) for x, y, w, h in self.items[i].boxes]

    @property
    def sizes(self) -> np.ndarray:
        """[N, 2] int64 (height, width) from the metadata."""
        return np.array([(m.height, m.width) for m in self.items], dtype=np.int64).reshape(-1, 2)

    def read_image(self, i: int) -> np.ndarray:
        """Decode image i from disk as uint8 [H, W, 3] RGB; nothing is cached; errors name the file."""
        return read_rgb(self.items[i].path)  # [H, W, 3]

    def absent_classes(self) -> list[str]:
        """Names of the CATEGORIES no image of this split has."""
        present = set(self.labels.tolist())
        return [name for c, name in enumerate(CATEGORIES) if c not in present]


def load_fmow(root: str | Path, split: str, per_class: int | None = None, seed: int = 0,
              check_images: bool = True) -> FMoW:
    """The images of CATEGORIES in root/train or root/val (split "test"), all or `per_class` chosen by `seed`.

    Unpaired files, malformed JSON and (with `check_images`, from each file's header and end,
    without decoding) unreadable images are reported in `problems` and skipped before the per-class
    choice; a split with no usable image raises DataSetError.
    """
    root = Path(root)
    split_dir = _split_dir(root, split)
    items, labels, problems = [], [], []
    for label, category in enumerate(CATEGORIES):
        for stem in _paired_stems(split_dir / category, problems):
            meta = _usable(stem, problems, check_images)
            if meta is not None:
                items.append(meta)
                labels.append(label)
    if not items:
        detail = f"; {len(problems)} problem(s):\n{summarize_problems(problems)}" if problems else ""
        raise DataSetError(f"{split_dir} holds no usable image of {', '.join(CATEGORIES)}; expected {EXPECTED_LAYOUT}"
                           + detail)
    labels_arr = np.array(labels, dtype=np.int64)  # [N]
    if per_class is not None:
        keep = select_per_class(labels_arr, per_class, seed)
        items, labels_arr = [items[i] for i in keep], labels_arr[keep]
    return FMoW(root=root, split=split, items=items, labels=labels_arr, synthetic=(root / MARKER).is_file(),
                problems=problems)


# --------------------------------------------------------------------------------------------
# Synthetic stand-in: drawing helpers
# --------------------------------------------------------------------------------------------


def _jitter(rng: np.random.Generator, colour: Colour, amount: int = 12) -> Colour:
    """`colour` with each channel shifted by up to +-amount."""
    c = np.clip(np.asarray(colour) + rng.integers(-amount, amount + 1, 3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


def _rect(cx: float, cy: float, w: float, h: float, angle: float) -> list[Point]:
    """Corners of a w x h rectangle centred at (cx, cy), rotated by `angle` radians."""
    c, s = math.cos(angle), math.sin(angle)
    corners = ((-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2))
    return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in corners]


def _blob(rng: np.random.Generator, cx: float, cy: float, r: float, n: int = 14) -> list[Point]:
    """An irregular roundish polygon of mean radius r."""
    t = np.sort(rng.uniform(0, 2 * np.pi, n))  # [n]
    rad = r * rng.uniform(0.7, 1.2, n)  # [n]
    return list(zip((cx + rad * np.cos(t)).tolist(), (cy + rad * np.sin(t)).tolist()))


def _width(value: float) -> int:
    """A line width in pixels, at least 1."""
    return max(1, int(round(value)))


def _patch(w: float, h: float) -> tuple[Image.Image, ImageDraw.ImageDraw]:
    """A transparent RGBA patch of about w x h pixels and a drawer for it."""
    patch = Image.new("RGBA", (max(4, int(round(w))), max(4, int(round(h)))), (0, 0, 0, 0))
    return patch, ImageDraw.Draw(patch)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1], [H, W] float32: a cells-wide random grid upsampled bicubically."""
    gh = max(2, round(cells * height / max(height, width)))
    gw = max(2, round(cells * width / max(height, width)))
    return coarse_noise(rng, (height, width), (gh, gw))  # [H, W]


# --------------------------------------------------------------------------------------------
# Synthetic stand-in: the ten class objects (each an RGBA patch, long side about s pixels)
# --------------------------------------------------------------------------------------------


def _airport(rng: np.random.Generator, s: float) -> Image.Image:
    """A runway with a dashed centreline and threshold bars, a taxiway, an apron and a terminal."""
    rw = max(4.0, 0.09 * s)
    patch, d = _patch(s, rw + 0.32 * s)
    h = patch.height
    d.rectangle((0, 0, s, rw), fill=_jitter(rng, (72, 72, 76), 6))
    white = (236, 236, 232)
    for x in np.arange(0.12 * s, 0.88 * s, 0.06 * s):
        d.line((x, rw / 2, x + 0.03 * s, rw / 2), fill=white, width=_width(rw / 10))
    for x0 in (0.015 * s, 0.935 * s):
        for y in np.linspace(0.15 * rw, 0.85 * rw, 6):
            d.line((x0, y, x0 + 0.05 * s, y), fill=white, width=_width(rw / 14))
    ty = rw + 0.05 * s
    d.line((0.15 * s, ty, 0.85 * s, ty), fill=(98, 98, 98), width=_width(0.35 * rw))
    for x in (0.15 * s, 0.85 * s):
        d.line((x, rw / 2, x, ty), fill=(98, 98, 98), width=_width(0.35 * rw))
    d.rectangle((0.32 * s, ty + 0.02 * s, 0.68 * s, h - 1), fill=_jitter(rng, (172, 172, 166), 8))
    d.rectangle((0.38 * s, h - 0.11 * s, 0.62 * s, h - 1), fill=_jitter(rng, (214, 214, 220), 8))
    return patch


def _amusement_park(rng: np.random.Generator, s: float) -> Image.Image:
    """A paved plaza with a spoked wheel, a coaster loop and coloured round rides."""
    patch, d = _patch(s, s)
    d.ellipse((0.02 * s, 0.02 * s, 0.98 * s, 0.98 * s), fill=_jitter(rng, (192, 172, 140), 8))
    cx, cy, r = 0.38 * s, 0.38 * s, 0.25 * s
    white = (242, 242, 240)
    n_spokes = int(rng.integers(8, 13))
    for t in np.linspace(0, 2 * np.pi, n_spokes, endpoint=False):
        d.line((cx, cy, cx + r * math.cos(t), cy + r * math.sin(t)), fill=white, width=_width(s / 90))
    d.ellipse((cx - r, cy - r, cx + r, cy + r), outline=white, width=_width(s / 40))
    d.ellipse((cx - 0.03 * s, cy - 0.03 * s, cx + 0.03 * s, cy + 0.03 * s), fill=(200, 40, 40))
    d.arc((0.45 * s, 0.5 * s, 0.92 * s, 0.9 * s), 0, 300, fill=(205, 45, 45), width=_width(s / 60))
    colours = [(225, 50, 50), (50, 90, 225), (245, 205, 40), (60, 185, 90), (230, 120, 205)]
    for (x, y), col in zip([(0.78, 0.25), (0.82, 0.45), (0.2, 0.75), (0.42, 0.8), (0.65, 0.7)], colours):
        rr = rng.uniform(0.045, 0.07) * s
        d.ellipse((x * s - rr, y * s - rr, x * s + rr, y * s + rr), fill=col)
    return patch


def _aquaculture(rng: np.random.Generator, s: float) -> Image.Image:
    """A grid of rectangular ponds separated by light dikes."""
    patch, d = _patch(s, 0.7 * s)
    d.rectangle((0, 0, patch.width - 1, patch.height - 1), fill=_jitter(rng, (168, 152, 116), 8))
    rows, cols, gap = int(rng.integers(2, 4)), int(rng.integers(3, 6)), max(2.0, s / 35)
    water = [(45, 92, 86), (58, 96, 70), (50, 76, 96)][int(rng.integers(3))]
    ph, pw = (patch.height - gap) / rows, (patch.width - gap) / cols
    for i in range(rows):
        for j in range(cols):
            x0, y0 = gap + j * pw, gap + i * ph
            d.rectangle((x0, y0, x0 + pw - gap, y0 + ph - gap), fill=_jitter(rng, water, 10))
    return patch


def _archaeological_site(rng: np.random.Generator, s: float) -> Image.Image:
    """A sandy patch with the broken outline of thin walls of rooms."""
    patch, d = _patch(s, s)
    d.polygon(_blob(rng, s / 2, s / 2, 0.46 * s, 18), fill=_jitter(rng, (192, 172, 132), 8))
    lo, hi = 0.18 * s, 0.82 * s
    xs = np.sort(rng.uniform(lo + 0.12 * s, hi - 0.12 * s, 2))
    ys = np.sort(rng.uniform(lo + 0.12 * s, hi - 0.12 * s, 1 + int(rng.integers(2))))
    walls = [(lo, lo, hi, lo), (hi, lo, hi, hi), (hi, hi, lo, hi), (lo, hi, lo, lo)]
    walls += [(x, lo, x, hi) for x in xs] + [(lo, y, hi, y) for y in ys]
    w = _width(s / 60)
    for x0, y0, x1, y1 in walls:
        cuts = np.linspace(0, 1, int(rng.integers(3, 6)))
        for a, b in zip(cuts[:-1], cuts[1:]):
            if rng.random() < 0.25:
                continue  # a collapsed stretch
            seg = (x0 + a * (x1 - x0), y0 + a * (y1 - y0), x0 + b * (x1 - x0), y0 + b * (y1 - y0))
            d.line(tuple(v + w for v in seg), fill=(118, 104, 80), width=w)  # shadow
            d.line(seg, fill=(228, 218, 194), width=w)
    return patch


def _barn(rng: np.random.Generator, s: float) -> Image.Image:
    """A farmyard with a red rectangular roof (with ridge and shadow), a silo and a shed."""
    patch, d = _patch(s, 0.8 * s)
    d.polygon(_blob(rng, s / 2, 0.4 * s, 0.4 * s, 12), fill=_jitter(rng, (142, 122, 92), 8))
    rx0, ry0, rx1, ry1 = 0.15 * s, 0.25 * s, 0.72 * s, 0.5 * s
    off = 0.035 * s
    d.rectangle((rx0 + off, ry0 + off, rx1 + off, ry1 + off), fill=(46, 44, 40))
    d.rectangle((rx0, ry0, rx1, ry1), fill=_jitter(rng, (172, 36, 30), 10))
    d.line((rx0, (ry0 + ry1) / 2, rx1, (ry0 + ry1) / 2), fill=(112, 24, 20), width=_width(s / 60))
    sx, sy, sr = 0.84 * s, 0.3 * s, 0.075 * s
    d.ellipse((sx - sr + off, sy - sr + off, sx + sr + off, sy + sr + off), fill=(46, 44, 40))
    d.ellipse((sx - sr, sy - sr, sx + sr, sy + sr), fill=_jitter(rng, (186, 186, 184), 6))
    d.rectangle((0.3 * s, 0.58 * s, 0.48 * s, 0.7 * s), fill=_jitter(rng, (128, 112, 96), 8))
    return patch


def _border_checkpoint(rng: np.random.Generator, s: float) -> Image.Image:
    """A road through a concrete plaza with a row of booths and red-white gate bars across the lanes."""
    patch, d = _patch(s, 0.75 * s)
    h = patch.height
    d.rectangle((0.22 * s, 0.1 * h, 0.78 * s, 0.9 * h), fill=_jitter(rng, (164, 164, 160), 6))
    d.rectangle((0, 0.36 * h, s, 0.64 * h), fill=_jitter(rng, (88, 88, 92), 6))
    d.rectangle((0.3 * s, 0.18 * h, 0.7 * s, 0.82 * h), fill=_jitter(rng, (88, 88, 92), 6))
    b = 0.06 * s
    for y in np.linspace(0.22 * h, 0.78 * h, 4):
        booth = (0.5 * s - b / 2, y - b / 2, 0.5 * s + b / 2, y + b / 2)
        d.rectangle(booth, fill=(238, 238, 236), outline=(60, 60, 60))
    for x in (0.4 * s, 0.6 * s):
        ys = np.linspace(0.18 * h, 0.82 * h, 11)
        for k, (y0, y1) in enumerate(zip(ys[:-1], ys[1:])):
            d.line((x, y0, x, y1), fill=(214, 30, 30) if k % 2 == 0 else (246, 246, 246), width=_width(s / 45))
    return patch


def _burial_site(rng: np.random.Generator, s: float) -> Image.Image:
    """A lawn with a bordering path and rows of small grave markers."""
    patch, d = _patch(s, 0.75 * s)
    w, h = patch.size
    lawn = _jitter(rng, (108, 138, 82), 8)
    d.rectangle((0, 0, w - 1, h - 1), fill=lawn, outline=(184, 178, 160), width=_width(s / 40))
    d.line((w / 2, 0, w / 2, h), fill=(184, 178, 160), width=_width(s / 50))
    mw, mh = max(1.0, s / 45), max(1.0, s / 75)
    for y in np.linspace(0.1 * h, 0.9 * h, int(rng.integers(7, 10))):
        for x in np.linspace(0.07 * w, 0.93 * w, int(rng.integers(14, 19))):
            if abs(x - w / 2) < s / 30 or rng.random() < 0.12:
                continue
            d.rectangle((x - mw / 2, y - mh / 2, x + mw / 2, y + mh / 2), fill=_jitter(rng, (226, 226, 222), 10))
    return patch


def _car_dealership(rng: np.random.Generator, s: float) -> Image.Image:
    """An asphalt lot with a showroom roof and rows of small cars in many colours."""
    patch, d = _patch(s, 0.7 * s)
    w, h = patch.size
    d.rectangle((0, 0, w - 1, h - 1), fill=_jitter(rng, (82, 82, 86), 6))
    d.rectangle((0.08 * w, 0.04 * h, 0.6 * w, 0.24 * h), fill=_jitter(rng, (226, 226, 232), 6))
    palette = [(220, 30, 30), (30, 70, 210), (240, 240, 240), (20, 20, 22), (180, 180, 186), (245, 200, 30),
               (30, 140, 60)]
    cw, ch = max(1.0, s / 40), max(2.0, s / 22)
    for y in np.linspace(0.36 * h, 0.9 * h, int(rng.integers(3, 5))):
        for x in np.linspace(0.05 * w, 0.95 * w, int(rng.integers(16, 22))):
            if rng.random() < 0.1:
                continue  # an empty bay
            col = palette[int(rng.integers(len(palette)))]
            d.rectangle((x - cw / 2, y - ch / 2, x + cw / 2, y + ch / 2), fill=col)
    return patch


def _construction_site(rng: np.random.Generator, s: float) -> Image.Image:
    """A bare earth patch with a foundation outline, material piles and a crane cross with its shadow."""
    patch, d = _patch(s, s)
    d.polygon(_blob(rng, s / 2, s / 2, 0.45 * s, 12), fill=_jitter(rng, (160, 128, 92), 8))
    d.rectangle((0.22 * s, 0.25 * s, 0.58 * s, 0.6 * s), outline=(150, 150, 150), width=_width(s / 40))
    for x, y in [(0.7, 0.7), (0.3, 0.75), (0.75, 0.3)]:
        d.rectangle((x * s, y * s, (x + 0.06) * s, (y + 0.04) * s), fill=_jitter(rng, (205, 120, 50), 15))
    cx, cy, t = 0.5 * s, 0.5 * s, rng.uniform(0, np.pi)
    arms = [(0.42 * s, -0.4 * s, t), (0.14 * s, -0.14 * s, t + np.pi / 2)]
    for colour, off in (((40, 38, 34), 0.07 * s), ((240, 194, 30), 0.0)):
        for a, b, ang in arms:
            p0 = (cx + off + b * math.cos(ang), cy + off + b * math.sin(ang))
            p1 = (cx + off + a * math.cos(ang), cy + off + a * math.sin(ang))
            d.line((p0, p1), fill=colour, width=_width(s / 45))
    m = 0.03 * s
    d.rectangle((cx - m, cy - m, cx + m, cy + m), fill=(200, 150, 20))
    return patch


def _crop_field(rng: np.random.Generator, s: float) -> Image.Image:
    """Adjacent parcels of alternating crop stripes, each parcel with its own direction."""
    patch, d = _patch(s, 0.8 * s)
    w, h = patch.size
    d.rectangle((0, 0, w - 1, h - 1), fill=(150, 130, 100))  # tracks between parcels
    pairs = [((64, 116, 40), (184, 172, 98)), ((122, 92, 60), (78, 134, 52)), ((204, 186, 96), (96, 130, 54))]
    cols, period, gap = int(rng.integers(2, 4)), max(3.0, s / 24), max(2.0, s / 50)
    for j in range(cols):
        for i in range(2):
            x0, x1 = j * w / cols + gap, (j + 1) * w / cols - gap
            y0, y1 = i * h / 2 + gap, (i + 1) * h / 2 - gap
            a, b = pairs[int(rng.integers(len(pairs)))]
            d.rectangle((x0, y0, x1, y1), fill=a)
            if rng.random() < 0.5:
                for x in np.arange(x0, x1 - period / 2, period):
                    d.rectangle((x, y0, x + period / 2, y1), fill=b)
            else:
                for y in np.arange(y0, y1 - period / 2, period):
                    d.rectangle((x0, y, x1, y + period / 2), fill=b)
    return patch


_OBJECTS: dict[str, Callable[[np.random.Generator, float], Image.Image]] = {
    "airport": _airport,
    "amusement_park": _amusement_park,
    "aquaculture": _aquaculture,
    "archaeological_site": _archaeological_site,
    "barn": _barn,
    "border_checkpoint": _border_checkpoint,
    "burial_site": _burial_site,
    "car_dealership": _car_dealership,
    "construction_site": _construction_site,
    "crop_field": _crop_field,
}


# --------------------------------------------------------------------------------------------
# Synthetic stand-in: the field, distractors, texture, one scene
# --------------------------------------------------------------------------------------------

_TERRAIN = np.array(
    [(86, 112, 60), (150, 140, 96), (122, 98, 72), (58, 82, 48), (186, 172, 136), (110, 120, 80)], dtype=np.float32
)  # [6, 3] vegetation, dry grass, soil, forest, sand, scrub
_ROOFS = [(150, 150, 150), (118, 108, 100), (204, 198, 188), (94, 86, 82), (164, 142, 120)]


def _terrain(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A low-frequency colour field of natural tones, [H, W] RGB."""
    cells = int(rng.integers(3, 7))
    gh = max(2, round(cells * height / max(height, width)))
    gw = max(2, round(cells * width / max(height, width)))
    idx = rng.integers(0, len(_TERRAIN), (gh, gw))  # [gh, gw]
    grid = _TERRAIN[idx] + rng.normal(0, 8, (gh, gw, 3)).astype(np.float32)  # [gh, gw, 3]
    small = Image.fromarray(np.clip(grid, 0, 255).astype(np.uint8), mode="RGB")
    return small.resize((width, height), Image.Resampling.BICUBIC)


def _draw_fields(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int) -> None:
    """Solid-coloured field parcels (rotated rectangles) of natural tones."""
    side, mp = min(height, width), height * width / 1e6
    for _ in range(int(rng.poisson(3 * mp)) + 2):
        w, h = rng.uniform(0.12, 0.4, 2) * side
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        colour = _jitter(rng, tuple(int(v) for v in _TERRAIN[rng.integers(len(_TERRAIN))]), 14)
        draw.polygon(_rect(cx, cy, w, h, rng.uniform(0, np.pi)), fill=colour)


def _draw_roads(rng: np.random.Generator, draws: Draws, height: int, width: int) -> None:
    """Roads (grey) and tracks (brown) crossing the image as gently bent polylines."""
    side = min(height, width)
    for _ in range(int(rng.integers(1, 4))):
        asphalt = rng.random() < 0.6
        colour = _jitter(rng, (108, 108, 104) if asphalt else (150, 128, 98), 8)
        w = _width(rng.uniform(0.006, 0.012) * side if asphalt else 0.004 * side)
        if rng.random() < 0.5:
            pts = [(x, rng.uniform(0, height)) for x in np.linspace(-0.05 * width, 1.05 * width, 4)]
        else:
            pts = [(rng.uniform(0, width), y) for y in np.linspace(-0.05 * height, 1.05 * height, 4)]
        draws[0].line(pts, fill=colour, width=w, joint="curve")
        draws[1].line(pts, fill=255, width=w, joint="curve")


def _draw_houses(rng: np.random.Generator, draws: Draws, height: int, width: int) -> None:
    """Small houses with neutral roofs and a shadow, in loose groups."""
    side, mp = min(height, width), height * width / 1e6
    for _ in range(int(rng.poisson(2 * mp)) + 1):
        gx, gy, spread = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.02, 0.08) * side
        for _ in range(int(rng.integers(2, 8))):
            a, b = rng.uniform(0.008, 0.02, 2) * side
            cx, cy, t = gx + rng.normal(0, spread), gy + rng.normal(0, spread), rng.uniform(0, np.pi)
            off = max(1.0, 0.25 * min(a, b))
            draws[0].polygon(_rect(cx + off, cy + off, a, b, t), fill=(48, 46, 42))
            roof = _rect(cx, cy, a, b, t)
            draws[0].polygon(roof, fill=_jitter(rng, _ROOFS[int(rng.integers(len(_ROOFS)))], 10))
            draws[1].polygon(roof, fill=255)


def _draw_trees(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int) -> None:
    """Clumps of dark-green tree crowns."""
    side, mp = min(height, width), height * width / 1e6
    for _ in range(int(rng.poisson(4 * mp)) + 2):
        gx, gy, spread = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(0.01, 0.05) * side
        for _ in range(int(rng.integers(5, 20))):
            r = rng.uniform(0.004, 0.011) * side
            x, y = gx + rng.normal(0, spread), gy + rng.normal(0, spread)
            draw.ellipse((x - r, y - r, x + r, y + r), fill=_jitter(rng, (40, 64, 36), 8))


def _draw_patches(rng: np.random.Generator, draw: ImageDraw.ImageDraw, height: int, width: int) -> None:
    """A few bare-earth patches and small ponds, common to every class."""
    side, mp = min(height, width), height * width / 1e6
    for _ in range(int(rng.poisson(1.5 * mp)) + 1):
        r = rng.uniform(0.015, 0.05) * side
        pond = rng.random() < 0.3
        colour = _jitter(rng, (52, 80, 86) if pond else (156, 128, 96), 10)
        draw.polygon(_blob(rng, rng.uniform(0, width), rng.uniform(0, height), r), fill=colour)


def _object_side(rng: np.random.Generator, height: int, width: int) -> float:
    """The class object's long side: 9-14% of the short image side, at least min(96, 45%) of it."""
    side = min(height, width)
    return max(rng.uniform(0.09, 0.14) * side, min(96.0, 0.45 * side))


def _place_object(rng: np.random.Generator, canvas: Image.Image, built: Image.Image, category: str) -> np.ndarray:
    """Draw the class object at a random place and angle; return its box [4] (x, y, w, h)."""
    patch = _OBJECTS[category](rng, _object_side(rng, canvas.height, canvas.width))
    patch = patch.rotate(float(rng.uniform(0, 360)), resample=Image.Resampling.BICUBIC, expand=True)
    fit = min(1.0, 0.95 * canvas.width / patch.width, 0.95 * canvas.height / patch.height)
    if fit < 1.0:
        size = (max(1, int(patch.width * fit)), max(1, int(patch.height * fit)))
        patch = patch.resize(size, Image.Resampling.BILINEAR)
    alpha = patch.getchannel("A")
    x0 = int(rng.integers(0, canvas.width - patch.width + 1))
    y0 = int(rng.integers(0, canvas.height - patch.height + 1))
    canvas.paste(patch.convert("RGB"), (x0, y0), mask=alpha)
    built.paste(255, (x0, y0), mask=alpha)
    left, top, right, bottom = alpha.getbbox()
    return np.array([x0 + left, y0 + top, right - left, bottom - top], dtype=np.int64)  # [4]


@lru_cache(maxsize=1)
def _textures() -> tuple[np.ndarray, np.ndarray]:
    """skimage grass and gravel, each [512, 512] float32 with zero mean and unit std."""
    from skimage import data

    out = []
    for image in (data.grass(), data.gravel()):
        t = image.astype(np.float32)
        out.append((t - t.mean()) / t.std())
    return out[0], out[1]


def _tiled(rng: np.random.Generator, texture: np.ndarray, height: int, width: int) -> np.ndarray:
    """`texture` rescaled (finer in smaller images), rotated and mirror-tiled over [H, W] from a random offset."""
    zoom = rng.uniform(0.7, 1.3) * float(np.clip(min(height, width) / 2000, 0.35, 1.0))
    size = max(8, int(texture.shape[0] * zoom))
    t = np.asarray(Image.fromarray(texture, mode="F").resize((size, size), Image.Resampling.BILINEAR))  # [size, size]
    t = np.rot90(t, int(rng.integers(4)))
    oy, ox = rng.integers(0, size, 2)
    tiled = np.pad(t, ((0, height + oy), (0, width + ox)), mode="symmetric")  # mirrored, seamless
    return tiled[oy : oy + height, ox : ox + width]  # [H, W]


def _texture_factor(rng: np.random.Generator, built: np.ndarray) -> np.ndarray:
    """Brightness factor [H, W]: grass/gravel texture (weaker on built surfaces) times slow light variation."""
    height, width = built.shape
    grass, gravel = _textures()
    mix = _smooth_noise(rng, height, width, int(rng.integers(3, 7)))  # [H, W]
    grass_t, gravel_t = _tiled(rng, grass, height, width), _tiled(rng, gravel, height, width)
    tex = np.subtract(grass_t, gravel_t, dtype=np.float32)
    tex *= mix
    tex += gravel_t  # [H, W] mix * grass + (1 - mix) * gravel, about unit std
    amp = built.astype(np.float32)
    amp *= -0.2 * 0.7 / 255.0
    amp += 0.2  # [H, W] 0.2 on open ground, 0.06 on built surfaces
    tex *= amp
    tex += 1.0
    tex *= 0.85 + 0.3 * _smooth_noise(rng, height, width, 4)  # slow light variation
    return tex  # [H, W]


def render_scene(category: str, height: int, width: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One stand-in image of `category`: (uint8 [H, W, 3], object box [4] int64 (x, y, w, h))."""
    if category not in _OBJECTS:
        raise ValueError(f"unknown category {category!r}; expected one of {', '.join(CATEGORIES)}")
    canvas = _terrain(rng, height, width)
    built = Image.new("L", (width, height), 0)  # 255 on man-made surfaces
    draw, draw_built = ImageDraw.Draw(canvas), ImageDraw.Draw(built)
    _draw_fields(rng, draw, height, width)
    _draw_patches(rng, draw, height, width)
    _draw_roads(rng, (draw, draw_built), height, width)
    _draw_trees(rng, draw, height, width)
    _draw_houses(rng, (draw, draw_built), height, width)
    box = _place_object(rng, canvas, built, category)
    factor = _texture_factor(rng, np.asarray(built))  # [H, W]
    image = np.asarray(canvas, dtype=np.float32)  # [H, W, 3]
    image *= factor[..., None]
    np.clip(image, 0, 255, out=image)
    return image.astype(np.uint8), box


# --------------------------------------------------------------------------------------------
# Synthetic stand-in: writing it in the fMoW-rgb layout
# --------------------------------------------------------------------------------------------


def _timestamp(rng: np.random.Generator) -> str:
    """A plausible acquisition time, ISO 8601 UTC."""
    ranges = ((2009, 2018), (1, 13), (1, 29), (8, 17), (0, 60), (0, 60))
    y, m, d, hh, mm, ss = (int(rng.integers(a, b)) for a, b in ranges)
    return f"{y:04d}-{m:02d}-{d:02d}T{hh:02d}:{mm:02d}:{ss:02d}Z"


def _metadata(rng: np.random.Generator, category: str, box: np.ndarray, height: int, width: int, box_id: int) -> dict:
    """The fMoW-schema JSON of one stand-in image (bounding_boxes a list or a single dict)."""
    entry = {"box": [int(v) for v in box], "category": category, "ID": box_id}
    return {
        "bounding_boxes": entry if rng.random() < 0.5 else [entry],
        "gsd": round(float(rng.uniform(0.3, 1.2)), 4),
        "img_width": width,
        "img_height": height,
        "timestamp": _timestamp(rng),
        "cloud_cover": int(rng.integers(0, 20)),
        "off_nadir_angle_dbl": round(float(rng.uniform(5, 35)), 3),
        "sun_elevation_dbl": round(float(rng.uniform(25, 75)), 3),
    }


def _write_example(split_dir: Path, category: str, index: int, rng: np.random.Generator,
                   min_size: int, max_size: int, box_id: int) -> None:
    """Render and write `<category>_<index>/<category>_<index>_0_rgb.{jpg,json}` under split_dir."""
    height, width = (int(v) for v in rng.integers(min_size, max_size + 1, 2))
    image, box = render_scene(category, height, width, rng)
    stem = split_dir / category / f"{category}_{index}" / f"{category}_{index}_0{_RGB_SUFFIX}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(stem.with_suffix(".jpg"), quality=88)
    write_json(stem.with_suffix(".json"), _metadata(rng, category, box, height, width, box_id))


def _marker(n_train_per_class: int, n_test_per_class: int, min_size: int, max_size: int, seed: int) -> dict:
    """The marker's content: what the folder is and the parameters that made it."""
    return {
        "description": MARKER_TEXT,
        "generator": "zoomin data_prep.fmow.write_synthetic",
        "generator_version": GENERATOR_VERSION,
        "textures": _TEXTURE_CREDIT,
        "categories": list(CATEGORIES),
        "n_train_per_class": n_train_per_class,
        "n_test_per_class": n_test_per_class,
        "min_size": min_size,
        "max_size": max_size,
        "seed": seed,
    }


def _check_synthetic_args(n_train_per_class: int, n_test_per_class: int, min_size: int, max_size: int) -> None:
    """ValueError unless the counts are >= 0 (train >= 1) and 32 <= min_size <= max_size."""
    if n_train_per_class < 1 or n_test_per_class < 0:
        got = f"{n_train_per_class}, {n_test_per_class}"
        raise ValueError(f"need n_train_per_class >= 1 and n_test_per_class >= 0, got {got}")
    if not 32 <= min_size <= max_size:
        raise ValueError(f"need 32 <= min_size <= max_size, got {min_size}, {max_size}")


def write_synthetic(root: str | Path, n_train_per_class: int, n_test_per_class: int, min_size: int, max_size: int,
                    seed: int = 0, progress: bool = False) -> Path:
    """Write the stand-in as `root/{train,val}/...` in the fMoW-rgb layout plus the marker; returns `root`."""
    _check_synthetic_args(n_train_per_class, n_test_per_class, min_size, max_size)
    root = Path(root)
    jobs = [(s, c, i) for s, n in enumerate((n_train_per_class, n_test_per_class))
            for c in range(len(CATEGORIES)) for i in range(n)]
    with atomic_dir(root) as tmp:
        for s, c, i in tqdm(jobs, desc="synthetic fMoW", unit="img", disable=not progress):
            rng = np.random.default_rng([seed, s, c, i])
            split_dir = tmp / ("train", "val")[s]
            _write_example(split_dir, CATEGORIES[c], i, rng, min_size, max_size, box_id=(s * 100 + c) * 100_000 + i)
        (tmp / "val").mkdir(exist_ok=True)
        write_json(tmp / MARKER, _marker(n_train_per_class, n_test_per_class, min_size, max_size, seed))
    return root


def read_marker(root: str | Path) -> dict | None:
    """The stand-in marker of `root` (the folder holding train/ and val/), or None."""
    path = Path(root) / MARKER
    return read_json(path) if path.is_file() else None


def default_dataset(n_train_per_class: int = 20, n_test_per_class: int = 10, min_size: int = 500,
                    max_size: int = 3000, seed: int = 0) -> Path:
    """The cached stand-in under data_dir('fmow_synthetic'), generated on first use or when parameters differ."""
    return stand_in("fmow_synthetic", _marker(n_train_per_class, n_test_per_class, min_size, max_size, seed),
                     lambda folder: write_synthetic(folder, n_train_per_class, n_test_per_class, min_size, max_size,
                                                    seed=seed, progress=True))


# ---------------------------------------------------------------- the real data's statistics, and the stand-in's


REAL_STATISTICS = RealStatistics(
    dataset="fMoW (10-category subset)",
    object_name="object box",
    image_size=Quoted("about 500 x 500 to 9,000 x 9,000", "Zoom-In sec. 4 (iv) and 'Functional Map of the World'"),
    object_side=Quoted(NOT_REPORTED, "Zoom-In sec. 4 and appendix E give no box size"),
    object_fraction=Quoted(NOT_REPORTED),
    objects_per_image=Quoted(NOT_REPORTED),
    extra=(("images", Quoted(f"{PAPER_N_TRAIN:,} training, {PAPER_N_TEST:,} test, 10 categories", "Zoom-In sec. 4 (iv)")),
           ("the CNN's input", Quoted("EfficientNet-B0 on images resized to 896 x 896",
                                      "Zoom-In sec. 4, 'Functional Map of the World'"))),
)


def measure_stand_in(data: FMoW) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics measured on a loaded split, from its JSON metadata (sizes and boxes; no pixels)."""
    boxes = [np.asarray(m.boxes, dtype=np.float64).reshape(-1, 4)[:, 2:4] for m in data.items]  # [K_i, 2] (w, h)
    extra = (("images", f"{len(data)} ({data.split} split)"),)
    return measured_from_boxes(REAL_STATISTICS.dataset, REAL_STATISTICS.object_name, data.sizes, boxes, extra)
