"""Camelyon16 in its distributed format: the slides, the ASAP lesion annotations and the test reference.

Zoom-In (Kong & Henao, sec. 4 "Camelyon16"; Litjens et al., GigaScience 2018, ref. [30]) uses the
400 whole-slide images of Camelyon16 (sizes 45,056 x 35,840 to 217,088 x 111,104): 270 training
slides with pixel-level annotations of the metastases, split into train and validation "for
hyperparameter tuning", and 130 test slides; the task is whether a slide contains metastases.
The model reads V(x, s1 = 0.03125), 3200 x 3200 level-0 tiles (appendix F) and their views at
s2 = 0.125 (`zoomin_lib.infra.slides`, which never materialises a slide); the annotations give the
pixel-level masks of appendix L (MSE on the attention maps) and the metastasis-to-tile ratios of
Fig. 7 (`annotation_mask` with `zoomin_lib.infra.slides.tile_fraction`). The data are distributed as

    <root>/training/normal/normal_NNN.tif
    <root>/training/tumor/tumor_NNN.tif
    <root>/training/lesion_annotations/tumor_NNN.xml     one per tumour slide
    <root>/testing/images/test_NNN.tif
    <root>/testing/reference.csv                         no header: id, Tumor|Normal[, more columns]
    <root>/testing/lesion_annotations/test_NNN.xml       optional (test tumour slides)

The slides are multi-resolution TIFFs that OpenSlide reads. An annotation is ASAP XML:

    <ASAP_Annotations><Annotations>
      <Annotation Name="_0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
        <Coordinates><Coordinate Order="0" X="81920.5" Y="61440.2"/> ...</Coordinates>
      </Annotation> ...
    </Annotations><AnnotationGroups> ... </AnnotationGroups></ASAP_Annotations>

with X, Y in level-0 pixels (floats). Groups `_0`, `_1` and `Tumor` are metastases; `_2` marks
regions inside them that are not (holes, exclusions). A mask pixel at downsample d covers level-0
[j d, (j + 1) d) and lies in a polygon when its centre does (pixel-area convention: a square with
corners 10 and 50 covers exactly the 40 x 40 pixels 10..49 at level 0).
"""

from __future__ import annotations

import csv
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import skimage.draw

from data_prep.problems import DataSetError, report, summarize_problems
from data_prep.statistics import NOT_REPORTED, MeasuredStatistics, Quoted, RealStatistics
from zoomin_lib.infra.progress import tqdm
from zoomin_lib.infra.slides import SlideError, open_slide

__all__ = [
    "TUMOUR_GROUPS",
    "HOLE_GROUPS",
    "TILE_SIZE",
    "EXPECTED_LAYOUT",
    "Polygon",
    "LesionROI",
    "SlideRecord",
    "Camelyon16",
    "parse_asap_xml",
    "annotation_mask",
    "read_reference",
    "load_camelyon16",
    "require_classes",
    "train_validation_split",
    "check_slides",
]

TUMOUR_GROUPS = frozenset({"_0", "_1", "Tumor"})
HOLE_GROUPS = frozenset({"_2"})
TILE_SIZE = 3200  # level-0 first-stage tile of Zoom-In appendix F for Camelyon16
LABELS = {"normal": 0, "tumor": 1, "tumour": 1}
EXPECTED_LAYOUT = """<root>/training/normal/normal_NNN.tif
<root>/training/tumor/tumor_NNN.tif
<root>/training/lesion_annotations/tumor_NNN.xml
<root>/testing/images/test_NNN.tif
<root>/testing/reference.csv"""
_REQUIRED = {
    "train": ("training/normal", "training/tumor", "training/lesion_annotations"),
    "test": ("testing/images", "testing/reference.csv"),
}
_FILLED_TYPES = {"polygon", "spline", "rectangle"}  # ASAP types with an area (splines by their vertices)


@dataclass(frozen=True)
class Polygon:
    """One ASAP annotation: its group, name, type and vertices in level-0 pixels."""

    group: str
    name: str
    type: str
    coordinates: np.ndarray = field(repr=False)  # [K, 2] float64 (x, y), in `Order`


@dataclass(frozen=True)
class SlideRecord:
    """One slide: id, file, label (0 normal, 1 tumour), split ('train' or 'test') and lesion XML or None."""

    slide_id: str
    path: Path
    label: int
    split: str
    annotation: Path | None


@dataclass
class Camelyon16:
    """The slides of a Camelyon16 folder, and what was skipped (with strict=False)."""

    root: Path
    slides: list[SlideRecord]
    problems: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        """Number of slides."""
        return len(self.slides)

    def __iter__(self) -> Iterator[SlideRecord]:
        """The slide records in order."""
        return iter(self.slides)

    def __getitem__(self, i: int) -> SlideRecord:
        """The i-th record."""
        return self.slides[i]

    @property
    def ids(self) -> list[str]:
        """Slide ids, e.g. 'tumor_001'."""
        return [r.slide_id for r in self.slides]

    @property
    def labels(self) -> np.ndarray:
        """Labels int64 [N] (1 = metastases)."""
        return np.array([r.label for r in self.slides], dtype=np.int64)

    def split(self, name: str) -> Camelyon16:
        """The slides of one split ('train' or 'test')."""
        if name not in _REQUIRED:
            raise ValueError(f"split must be 'train' or 'test', got {name!r}")
        return Camelyon16(self.root, [r for r in self.slides if r.split == name], list(self.problems))


# -------------------------------------------------------------------- annotations


def _float_attr(path: Path, element: ET.Element, name: str, where: str) -> float:
    """A float attribute of a Coordinate, or ValueError naming the file and the annotation."""
    text = element.get(name)
    try:
        return float(text.replace(",", ".")) if text is not None else float("nan")
    except ValueError:
        raise ValueError(f"{path}: {where}: {name}={text!r} is not a number") from None


def parse_asap_xml(path: str | Path) -> list[Polygon]:
    """The annotations of an ASAP XML file in document order; ValueError naming the file if malformed."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: annotation file missing")
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ValueError(f"{path}: malformed XML ({err})") from err
    if root.tag != "ASAP_Annotations":
        raise ValueError(f"{path}: root element is <{root.tag}>, expected <ASAP_Annotations>")
    polygons = []
    for k, ann in enumerate(root.iter("Annotation")):
        name = ann.get("Name", f"#{k}")
        where = f"annotation {name!r}"
        points = []
        for c in ann.iter("Coordinate"):
            x, y = _float_attr(path, c, "X", where), _float_attr(path, c, "Y", where)
            if not (np.isfinite(x) and np.isfinite(y)):
                raise ValueError(f"{path}: {where}: a Coordinate without finite X and Y")
            try:
                order = int(c.get("Order", len(points)))
            except ValueError:
                raise ValueError(f"{path}: {where}: Order={c.get('Order')!r} is not an integer") from None
            points.append((order, x, y))
        points.sort(key=lambda p: p[0])
        coords = np.array([(x, y) for _, x, y in points], dtype=np.float64).reshape(-1, 2)  # [K, 2]
        polygons.append(Polygon(ann.get("PartOfGroup", "None"), name, ann.get("Type", "Polygon"), coords))
    return polygons


def _fill(mask: np.ndarray, coords: np.ndarray, dx: float, dy: float, value: bool) -> None:
    """Set the pixels of `mask` whose centres lie in the polygon (level-0 vertices, downsample dx, dy)."""
    rows = coords[:, 1] / dy - 0.5  # pixel j covers [j d, (j + 1) d): its centre is at (j + 0.5) d
    cols = coords[:, 0] / dx - 0.5
    rr, cc = skimage.draw.polygon(rows, cols, shape=mask.shape)
    mask[rr, cc] = value


def annotation_mask(
    polygons: Sequence[Polygon],
    size: tuple[int, int],
    downsample: float | tuple[float, float] = 1.0,
    tumour_groups: Iterable[str] = TUMOUR_GROUPS,
    hole_groups: Iterable[str] = HOLE_GROUPS,
) -> np.ndarray:
    """Metastasis mask bool [h, w]: tumour polygons filled, then hole polygons cleared.

    `size` = (w, h) in OpenSlide order (an entry of `level_dimensions`, or a view's size);
    `downsample` is a level's downsample, or (dx, dy) = (W / w, H / h) for a view at any scale;
    vertices are divided by it. Polygons of other groups and types without area (Dot, PointSet)
    are ignored.
    """
    w, h = (int(v) for v in size)
    dx, dy = (float(downsample), float(downsample)) if np.isscalar(downsample) else map(float, downsample)
    if w < 1 or h < 1 or dx <= 0 or dy <= 0:
        raise ValueError(f"size {size} and downsample {downsample} must be positive")
    tumour, holes = set(tumour_groups), set(hole_groups)
    mask = np.zeros((h, w), dtype=bool)  # [h, w]
    for wanted, value in ((tumour, True), (holes, False)):
        for p in polygons:
            if p.group in wanted and p.type.lower() in _FILLED_TYPES and len(p.coordinates) >= 3:
                _fill(mask, p.coordinates, dx, dy, value)
    return mask


@dataclass(frozen=True)
class LesionROI:
    """A slide's metastases, rasterised one window at a time (never the whole slide): appendix L's masks, Fig. 7's ratios."""

    polygons: tuple[Polygon, ...]
    tumour_groups: frozenset[str] = TUMOUR_GROUPS
    hole_groups: frozenset[str] = HOLE_GROUPS

    @classmethod
    def from_xml(cls, path: str | Path) -> LesionROI:
        """The annotation of an ASAP XML file (errors name the file)."""
        return cls(tuple(parse_asap_xml(path)))

    def boxes(self) -> np.ndarray:
        """Level-0 bounding boxes (x0, y0, x1, y1) of the tumour polygons: float64 [K, 4]."""
        boxes = [np.concatenate([p.coordinates.min(axis=0), p.coordinates.max(axis=0)])
                 for p in self.polygons
                 if p.group in self.tumour_groups and p.type.lower() in _FILLED_TYPES and len(p.coordinates) >= 3]
        return np.array(boxes, dtype=np.float64).reshape(-1, 4)

    def window(self, location: tuple[int, int], extent: tuple[int, int], size: tuple[int, int]) -> np.ndarray:
        """Mask bool [h, w] of the level-0 window at `location` = (x, y) of `extent` = (W, H) pixels, at `size` = (w, h)."""
        x, y = location
        shifted = [Polygon(p.group, p.name, p.type, p.coordinates - np.array([x, y], dtype=np.float64))
                   for p in self.polygons]
        downsample = (extent[0] / size[0], extent[1] / size[1])
        return annotation_mask(shifted, size, downsample, self.tumour_groups, self.hole_groups)


# -------------------------------------------------------------------- the folder


def read_reference(path: str | Path) -> dict[str, int]:
    """testing/reference.csv as {slide id (lower case): label}; extra columns ignored; errors name file and line."""
    path = Path(path)
    labels: dict[str, int] = {}
    with path.open(newline="") as fh:
        for line_no, row in enumerate(csv.reader(fh), start=1):
            if not row or not "".join(row).strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{path}:{line_no}: expected 'slide id, Tumor|Normal', got {','.join(row)!r}")
            slide_id = re.sub(r"\.tif$", "", row[0].strip(), flags=re.IGNORECASE).lower()
            label = row[1].strip().lower()
            if label not in LABELS:
                raise ValueError(
                    f"{path}:{line_no}: unknown label {row[1].strip()!r} for {row[0].strip()!r}; expected Tumor or Normal"
                )
            if slide_id in labels:
                raise ValueError(f"{path}:{line_no}: {slide_id} is listed twice")
            labels[slide_id] = LABELS[label]
    return labels


def _slides_in(folder: Path, prefix: str) -> list[Path]:
    """`prefix_NNN.tif` files of `folder`, sorted by NNN (case-insensitive names)."""
    pattern = re.compile(rf"{prefix}_(\d+)\.tif", re.IGNORECASE)
    found = [(int(m.group(1)), p) for p in folder.iterdir() if p.is_file() and (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


def _check_layout(root: Path, splits: Sequence[str]) -> None:
    """FileNotFoundError listing every missing folder or file of the layout at once."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; expected the Camelyon16 layout\n{EXPECTED_LAYOUT}")
    missing = [rel for split in splits for rel in _REQUIRED[split] if not (root / rel).exists()]
    if missing:
        raise FileNotFoundError(
            f"{root}: not the Camelyon16 layout; missing {', '.join(missing)}; expected\n{EXPECTED_LAYOUT}\n"
            "(to read one split only, pass splits=('train',) or splits=('test',))"
        )


def _problem(strict: bool, problems: list[str], message: str, exc: type[Exception] = FileNotFoundError,
             skipped: bool = True) -> None:
    """Raise `message` when strict (saying how to go on without it), else report it (recorded and warned), '; skipped' added."""
    if strict:
        raise exc(f"{message} (load_camelyon16(..., strict=False) reports it, skips it and loads the rest)")
    report(problems, f"{message}; skipped" if skipped else message, stacklevel=4)


def require_classes(records: Iterable[SlideRecord], what: str, problems: Sequence[str] = ()) -> None:
    """DataSetError unless `records` hold both normal and tumour slides (training needs both), naming the absent class.

    `what` names the records in the message (e.g. "training slides"); `problems` (what was skipped
    on the way) are listed after it.
    """
    records = list(records)
    labels = {r.label for r in records}
    absent = [name for label, name in ((0, "normal"), (1, "tumour")) if label not in labels]
    if absent:
        why = f"; skipped on the way:\n{summarize_problems(list(problems))}" if problems else ""
        raise DataSetError(f"no {' and no '.join(absent)} slide among the {len(records)} usable {what}: "
                           f"training needs both normal and tumour slides{why}")


def _training(root: Path, strict: bool, problems: list[str]) -> list[SlideRecord]:
    """The training slides: normal ones, and tumour ones with their lesion XML."""
    records = []
    xml_dir = root / "training/lesion_annotations"
    for label, folder, prefix in ((0, "training/normal", "normal"), (1, "training/tumor", "tumor")):
        paths = _slides_in(root / folder, prefix)
        if not paths:
            _problem(strict, problems, f"{root / folder}: no {prefix}_NNN.tif slides", skipped=False)
        for p in paths:
            xml = xml_dir / f"{p.stem}.xml"
            if label == 1 and not xml.is_file():
                _problem(strict, problems, f"{p}: tumour slide without its annotation {xml}")
                continue
            records.append(SlideRecord(p.stem, p, label, "train", xml if label == 1 else None))
    return records


def _testing(root: Path, strict: bool, problems: list[str]) -> list[SlideRecord]:
    """The test slides with their reference labels (and lesion XML where the optional folder has one)."""
    csv_path = root / "testing/reference.csv"
    reference = read_reference(csv_path)
    paths = _slides_in(root / "testing/images", "test")
    if not paths:
        _problem(strict, problems, f"{root / 'testing/images'}: no test_NNN.tif slides", skipped=False)
    records = []
    for p in paths:
        if p.stem.lower() not in reference:
            _problem(strict, problems, f"{p}: not listed in {csv_path}", ValueError)
            continue
        xml = root / "testing/lesion_annotations" / f"{p.stem}.xml"
        records.append(SlideRecord(p.stem, p, reference[p.stem.lower()], "test", xml if xml.is_file() else None))
    present = {p.stem.lower() for p in paths}
    for slide_id in sorted(set(reference) - present):
        missing = root / "testing/images" / f"{slide_id}.tif"
        _problem(strict, problems, f"{csv_path}: lists {slide_id} but {missing} is missing", skipped=False)
    return records


def load_camelyon16(root: str | Path, strict: bool = True, splits: Sequence[str] = ("train", "test")) -> Camelyon16:
    """The slides of a Camelyon16 folder; a missing part of the layout stops at once, naming it.

    With `strict=False` a tumour slide without its XML, a test slide missing from reference.csv
    (or a listed one without its file) is reported in `problems` (and warned about) and skipped
    instead of raising; if the training slides are then left without normal or without tumour
    slides, DataSetError says so at once (`require_classes`), not a later step that finds no
    annotated tile. Slides are not opened here (see `check_slides`).
    """
    root = Path(root)
    splits = tuple(splits)
    if not splits or any(s not in _REQUIRED for s in splits):
        raise ValueError(f"splits must be drawn from ('train', 'test'), got {splits!r}")
    _check_layout(root, splits)
    problems: list[str] = []
    training = _training(root, strict, problems) if "train" in splits else []
    if "train" in splits:
        require_classes(training, f"training slides of {root}", problems)
    slides = training + (_testing(root, strict, problems) if "test" in splits else [])
    return Camelyon16(root, slides, problems)


def train_validation_split(dataset: Camelyon16, fraction: float = 0.2, seed: int = 0) -> tuple[Camelyon16, Camelyon16]:
    """(train, validation) of the training slides, stratified by label and reproducible from `seed`.

    Each label's slides, sorted by id, are permuted by `numpy.random.default_rng(seed)`;
    round(fraction * n) of them (at least one and at most n - 1 when n >= 2) go to validation.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must lie in [0, 1), got {fraction}")
    records = sorted((r for r in dataset.slides if r.split == "train"), key=lambda r: r.slide_id)
    rng = np.random.default_rng(seed)
    validation_ids: set[str] = set()
    for label in sorted({r.label for r in records}):
        ids = [r.slide_id for r in records if r.label == label]
        n_val = int(round(fraction * len(ids)))
        if fraction > 0 and len(ids) >= 2:
            n_val = min(max(n_val, 1), len(ids) - 1)
        validation_ids.update(ids[i] for i in rng.permutation(len(ids))[:n_val])
    train = [r for r in records if r.slide_id not in validation_ids]
    validation = [r for r in records if r.slide_id in validation_ids]
    return (
        Camelyon16(dataset.root, train, list(dataset.problems)),
        Camelyon16(dataset.root, validation, list(dataset.problems)),
    )


def _check_one(record: SlideRecord, tile_size: int) -> str | None:
    """The problem with one slide (opened, probed at both ends, size, lesion XML), or None."""
    try:
        with open_slide(record.path) as slide:
            W, H = slide.dimensions
            if W < tile_size or H < tile_size:
                return f"{record.path}: smaller than one tile ({W}x{H} < {tile_size}x{tile_size})"
            last = slide.level_count - 1
            slide.read_region((0, 0), last, slide.level_dimensions[last])  # the smallest level, whole
            slide.read_region((W - 1, H - 1), 0, (1, 1))  # the last tile of level 0
    except FileNotFoundError:
        return f"{record.path}: missing"
    except SlideError as err:
        return f"{record.path}: corrupt/truncated: {err.reason}"
    except Exception as err:  # any other failure is reported, never raised: the run goes on
        return f"{record.path}: corrupt/truncated: {type(err).__name__}: {err}"
    if record.annotation is not None:
        try:
            parse_asap_xml(record.annotation)
        except (ValueError, OSError) as err:
            return f"{record.annotation}: malformed annotation: {err}"
    return None


def check_slides(
    dataset: Camelyon16 | Iterable[SlideRecord], tile_size: int = TILE_SIZE, progress: bool = False
) -> tuple[list[SlideRecord], list[str]]:
    """(slides that open and hold at least one tile, problems) without stopping at a bad slide.

    Problems read '<file>: corrupt/truncated: <reason>', '<file>: smaller than one tile (WxH < TxT)',
    '<file>: missing' or '<xml>: malformed annotation: <reason>'.
    """
    records = list(dataset.slides if isinstance(dataset, Camelyon16) else dataset)
    ok, problems = [], []
    for record in tqdm(records, desc="checking slides", unit="slide", disable=not progress):
        problem = _check_one(record, tile_size)
        if problem is None:
            ok.append(record)
        else:
            problems.append(problem)
    return ok, problems


# -------------------------------------------------------------------- the real data's statistics, and the stand-in's


REAL_STATISTICS = RealStatistics(
    dataset="Camelyon16",
    object_name="metastasis",
    image_size=Quoted("45,056 x 35,840 to 217,088 x 111,104 (as printed); 400 WSIs, 270 with "
                      "pixel-level annotations, 130 test", "Zoom-In sec. 4 (v), 'Camelyon16'"),
    object_side=Quoted(NOT_REPORTED, "the papers give no metastasis size; Zoom-In sec. 1 (fig. 1): annotated ROIs "
                       "'constitute a small proportion of the whole slide image'"),
    object_fraction=Quoted(NOT_REPORTED),
    objects_per_image=Quoted(NOT_REPORTED, "Zoom-In appendix D counts 122 / 41 / 41 unique metastases in "
                             "NeedleCamelyon's splits, not per slide"),
)


def polygon_area(coordinates: np.ndarray) -> float:
    """Area in square pixels of a simple polygon with vertices [K, 2] (x, y), by the shoelace formula."""
    xy = np.asarray(coordinates, dtype=np.float64).reshape(-1, 2)
    if len(xy) < 3:
        return 0.0
    x, y = xy[:, 0], xy[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def measure_stand_in(records: Sequence[SlideRecord]) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics on slides: level-0 sizes from each file's header, metastases from the XMLs.

    Each tumour polygon (TUMOUR_GROUPS, an area type, three vertices or more) is one metastasis; its area is
    the polygon's (shoelace), holes (`_2`) not subtracted. A slide without an XML counts with none.
    """
    hw, sides, fractions, counts = [], [], [], []
    for record in records:
        with open_slide(record.path) as slide:
            width, height = slide.dimensions
        polygons = parse_asap_xml(record.annotation) if record.annotation is not None else []
        areas = [polygon_area(p.coordinates) for p in polygons
                 if p.group in TUMOUR_GROUPS and p.type.lower() in _FILLED_TYPES and len(p.coordinates) >= 3]
        hw.append((height, width))
        sides += [a ** 0.5 for a in areas]
        fractions += [a / (height * width) for a in areas]
        counts.append(len(areas))
    return MeasuredStatistics(REAL_STATISTICS.dataset, REAL_STATISTICS.object_name,
                              np.array(hw, dtype=np.int64).reshape(-1, 2), np.array(sides), np.array(fractions),
                              np.array(counts, dtype=np.int64))
