"""Megapixel MNIST (ATS sec. 4.2, supp. H.1) with the four tasks of IPS / the thesis (sec. 3.1.3).

Recipe, as the papers state it:
- ATS sec. 4.2: "empty images of size 1500x1500", "patches of random noise at 50 random
  locations", "the size of each patch is equal to an MNIST digit", "5 digits sampled from the MNIST
  dataset, 3 belonging to the same class and 2 to a random class"; 5000 training / 1000 test images.
  ATS supp. H.1 describes only the networks; the noise is described in the thesis sec. 3.1.5: the
  original's "50 line patterns are created by sampling angles theta_i from a uniform distribution ...
  line coordinates (x_j, y_j) are generated based on these slopes".
- Thesis sec. 3.1.3: "3 digits belong to the same class, while the remaining 2 are from different
  classes", and the tasks of Bergner et al. (IPS): Maj (the majority class), Max (the largest digit
  value present), Top (the class of the top-most digit), Multi (presence or absence of each class,
  a 10-way multi-hot). Sec. 9.2 of the thesis computes Max's chance level assuming three different
  classes per canvas.

What is derived here (the texts leave it open):
- the 2 other digits are of classes different from the majority class; with `distinct_others`
  (default True, the thesis's reading, sec. 3.1.3 and 9.2) they also differ from each other;
  `distinct_others=False` draws them independently from the 9 other classes (ATS's "a random class"
  read per digit). The 3 majority digits are 3 different images of that class.
- digits keep MNIST's native 28x28 scale; their boxes never overlap (`place_boxes`).
- Top: the digit whose box has the smallest top row; a tie (side-by-side boxes) goes to the leftmost.
- noise: each of the 50 patches is a 28x28 pattern of LINES_PER_PATTERN straight lines, 1 px wide
  (anti-aliased), each through the patch at an angle theta ~ U[0, pi) and an offset ~ U[-7, 7] px
  from the centre along its normal, grey level 255 * U[0.8, 1]. The patches lie uniformly on the
  canvas, never over a digit's box (so no label is hidden), and may overlap one another.

Files (`generate`): `parameters.json` and one `<split>.npz` per split holding, per canvas, the pool
indices of its 5 digits, their classes and top-left corners (row, col), a noise seed, and the four
tasks' labels. The noise is a pure function of (noise seed, digit corners, parameters), so a split of
thousands of canvases is a few hundred kB; `MegapixelMNIST.canvas(i)` rebuilds canvas i on demand.
Canvas i of a split depends only on (seed, split, i): the first n canvases of a larger split are
exactly the n-canvas split.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from data_prep.mnist_digits import (
    DEFAULT_FRACTIONS,
    DIGIT_SIZE,
    MNIST_SOURCE,
    N_CLASSES,
    PARAMETERS,
    SPLIT_INDEX,
    SPLITS,
    CanvasSplit,
    boxes_disjoint,
    by_class,
    canvas_statistics,
    check_count,
    compose,
    digit_pools,
    place_boxes,
    pools_checksum,
    resize_patches,
    save_npz,
    scatter_avoiding,
    stroke_patch,
)
from data_prep.statistics import MeasuredStatistics, Quoted, RealStatistics
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, write_json

TESTBED = "megapixel_mnist"
VERSION = 1
CANVAS_SIZE = 1500  # ATS sec. 4.2
N_NOISE = 50  # ATS sec. 4.2
N_PER_CANVAS = 5  # digits per canvas
N_MAJORITY = 3  # digits of the majority class
TASKS = ("maj", "max", "top", "multi")
LINES_PER_PATTERN = 2
LINE_WIDTH = 1.0  # px
LINE_OFFSET = 7.0  # px, a quarter of the patch side
LINE_INTENSITY = (0.8, 1.0)  # grey level 255 * U[0.8, 1]
PAPER_SIZES = {"train": 5000, "test": 1000}  # ATS sec. 4.2
_STREAM = 0x4D50  # keeps these draws apart from the other testbeds' for equal seeds


# ----------------------------------------------------------------------------------------------------
# The four tasks
# ----------------------------------------------------------------------------------------------------


def _class_counts(classes: np.ndarray) -> np.ndarray:
    """Digits of each class per canvas [N, 10] from classes [N, k]."""
    return (classes[..., None] == np.arange(N_CLASSES)).sum(axis=-2)


def _majority(counts: np.ndarray) -> np.ndarray:
    """The most frequent class per canvas [N] (ValueError when two classes tie for it)."""
    top = counts.max(axis=-1, keepdims=True)
    if ((counts == top).sum(axis=-1) > 1).any():
        raise ValueError("a canvas has no single majority class")
    return counts.argmax(axis=-1)


def top_order(positions: np.ndarray) -> np.ndarray:
    """The digits of each canvas from the top-most down: indices [..., k] from top-left corners [..., k, 2].

    Digits are ordered by their top row, a tie (side-by-side boxes) by the smaller column, and an exact tie
    keeps the smaller index (a stable sort). The first index is the digit of the Top task.
    """
    positions = np.asarray(positions)
    return np.lexsort((positions[..., 1], positions[..., 0]), axis=-1)


def _top_most(classes: np.ndarray, positions: np.ndarray) -> np.ndarray:
    """The class of the top-most digit (`top_order`) per canvas [N]."""
    return np.take_along_axis(classes, top_order(positions)[:, :1], axis=-1)[:, 0]


def task_labels(classes: np.ndarray, positions: np.ndarray) -> dict[str, np.ndarray]:
    """Labels of the tasks Maj, Max, Top [N] and Multi [N, 10] from classes [N, k] and top-left corners [N, k, 2].

    A single canvas (classes [k], positions [k, 2]) gives scalars and a [10] multi-hot.
    """
    classes, positions = np.asarray(classes), np.asarray(positions)
    single = classes.ndim == 1
    classes, positions = np.atleast_2d(classes), positions.reshape(-1, classes.shape[-1], 2)
    if classes.size and (classes.min() < 0 or classes.max() >= N_CLASSES):
        raise ValueError(f"classes must lie in 0..{N_CLASSES - 1}")
    counts = _class_counts(classes)  # [N, 10]
    labels = {
        "maj": _majority(counts),
        "max": classes.max(axis=-1, initial=-1),
        "top": _top_most(classes, positions),
        "multi": (counts > 0).astype(np.uint8),
    }
    labels = {k: v.astype(np.int64) if k != "multi" else v for k, v in labels.items()}
    return {k: v[0] for k, v in labels.items()} if single else labels


# ----------------------------------------------------------------------------------------------------
# Digits and their placement
# ----------------------------------------------------------------------------------------------------


def sample_classes(rng: np.random.Generator, distinct_others: bool = True) -> np.ndarray:
    """Classes int64 [5] of one canvas in random order: 3 of a majority class, 2 of other classes."""
    majority = rng.integers(N_CLASSES)
    rest = np.delete(np.arange(N_CLASSES), majority)
    others = rng.choice(rest, size=N_PER_CANVAS - N_MAJORITY, replace=not distinct_others)
    return rng.permutation(np.r_[np.full(N_MAJORITY, majority), others]).astype(np.int64)


def sample_digits(rng: np.random.Generator, classes: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """Pool indices [k] of digits of the given classes [k], different images within one canvas."""
    index = np.empty(len(classes), dtype=np.int64)
    for c in np.unique(classes):
        slots = np.flatnonzero(classes == c)
        if len(members[c]) < len(slots):
            raise ValueError(f"the pool holds {len(members[c])} digits of class {c}; a canvas needs {len(slots)}")
        index[slots] = rng.choice(members[c], size=len(slots), replace=False)
    return index


def plan_canvas(
    rng: np.random.Generator, members: list[np.ndarray], digit_size: int, canvas_size: int, distinct_others: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """One canvas's pool indices [5], classes [5], digit corners [5, 2] and noise seed."""
    classes = sample_classes(rng, distinct_others)
    index = sample_digits(rng, classes, members)
    positions = place_boxes(rng, N_PER_CANVAS, digit_size, canvas_size, canvas_size)
    noise_seed = int(rng.integers(0, np.iinfo(np.int64).max))
    return index, classes, positions, noise_seed


def render_canvas(
    digits: np.ndarray, positions: np.ndarray, canvas_size: int,
    noise: np.ndarray | None = None, noise_positions: np.ndarray | None = None,
) -> np.ndarray:
    """A uint8 canvas [S, S]: digits [k, s, s] at corners [k, 2], optional noise patches [m, s', s'] at theirs."""
    digits, positions = np.asarray(digits), np.asarray(positions).reshape(-1, 2)
    if len(digits) != len(positions):
        raise ValueError(f"{len(digits)} digits but {len(positions)} positions")
    if not boxes_disjoint(positions, digits.shape[-1]):
        raise ValueError("digit boxes overlap")
    noise = np.zeros((0, 1, 1), np.uint8) if noise is None else np.asarray(noise)
    noise_positions = np.zeros((0, 2), np.int64) if noise_positions is None else np.asarray(noise_positions)
    patches = [*noise, *digits]
    return compose(canvas_size, canvas_size, patches, np.concatenate([noise_positions.reshape(-1, 2), positions]))


# ----------------------------------------------------------------------------------------------------
# Straight-line noise (the original megapixel MNIST's, thesis sec. 3.1.5)
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LineNoise:
    """The noise of one canvas: patch corners [n, 2], line angles and offsets [n, L], grey levels [n]."""

    positions: np.ndarray
    angles: np.ndarray
    offsets: np.ndarray
    intensity: np.ndarray


def line_endpoints(angle: float, offset: float, size: int = DIGIT_SIZE) -> np.ndarray:
    """Endpoints [2, 2] (x, y) of a line at `angle` through the patch, `offset` px from its centre along the normal."""
    centre = np.full(2, (size - 1) / 2)
    direction = np.array([np.cos(angle), np.sin(angle)])
    normal = np.array([-np.sin(angle), np.cos(angle)])
    anchor = centre + offset * normal
    return np.stack([anchor - size * direction, anchor + size * direction])  # long enough to cross the patch


def line_patch(angles: np.ndarray, offsets: np.ndarray, intensity: float, size: int = DIGIT_SIZE,
               width: float = LINE_WIDTH) -> np.ndarray:
    """One noise pattern uint8 [size, size]: straight lines (angles, offsets [L]) at grey level 255 * intensity."""
    lines = [line_endpoints(a, o, size) for a, o in zip(angles, offsets)]
    return np.round(stroke_patch(lines, width, size) * intensity).astype(np.uint8)


def sample_line_noise(
    rng: np.random.Generator, n: int, size: int, canvas_size: int, digit_positions: np.ndarray, digit_size: int
) -> LineNoise:
    """The line noise of one canvas: n patches placed off the digits, each with random lines."""
    positions = scatter_avoiding(rng, n, size, canvas_size, canvas_size, digit_positions, digit_size)
    angles = rng.uniform(0, np.pi, size=(n, LINES_PER_PATTERN))
    offsets = rng.uniform(-LINE_OFFSET, LINE_OFFSET, size=(n, LINES_PER_PATTERN))
    intensity = rng.uniform(*LINE_INTENSITY, size=n)
    return LineNoise(positions, angles, offsets, intensity)


# ----------------------------------------------------------------------------------------------------
# Writing a dataset
# ----------------------------------------------------------------------------------------------------


def _check_sizes(digit_size: int, canvas_size: int) -> None:
    """Raise a ValueError unless 5 disjoint digit_size boxes fit on the canvas."""
    if digit_size < 1 or canvas_size < 1:
        raise ValueError(f"sizes must be positive, got digit {digit_size}, canvas {canvas_size}")
    if (canvas_size // digit_size) ** 2 < N_PER_CANVAS:
        raise ValueError(f"{N_PER_CANVAS} non-overlapping {digit_size}px digits do not fit in a {canvas_size}px canvas")


def base_parameters(
    testbed: str, counts: tuple[int, int, int], seed: int, canvas_size: int, digit_size: int,
    distinct_others: bool, pool_seed: int,
) -> dict:
    """The parameters shared by megapixel MNIST and O2I (what `parameters.json` records)."""
    _check_sizes(digit_size, canvas_size)
    sizes = {f"n_{split}": check_count(f"n_{split}", n) for split, n in zip(SPLITS, counts)}
    return {
        "testbed": testbed, "version": VERSION, **sizes, "seed": int(seed),
        "canvas_size": int(canvas_size), "digit_size": int(digit_size), "n_digits": N_PER_CANVAS,
        "n_majority": N_MAJORITY, "distinct_others": bool(distinct_others), "tasks": list(TASKS),
        "pool": {"seed": int(pool_seed), "fractions": list(DEFAULT_FRACTIONS),
                 "checksum": pools_checksum(pool_seed, DEFAULT_FRACTIONS)},
        "source": MNIST_SOURCE,
    }


def parameters(
    n_train: int, n_val: int, n_test: int, seed: int = 0, canvas_size: int = CANVAS_SIZE, n_noise: int = N_NOISE,
    distinct_others: bool = True, pool_seed: int = 0,
) -> dict:
    """The `parameters.json` content of a megapixel MNIST dataset (ATS sec. 4.2)."""
    counts = (n_train, n_val, n_test)
    params = base_parameters(TESTBED, counts, seed, canvas_size, DIGIT_SIZE, distinct_others, pool_seed)
    params["noise"] = {"kind": "lines", "count": check_count("n_noise", n_noise), "width": LINE_WIDTH,
                       "lines_per_pattern": LINES_PER_PATTERN, "offset": LINE_OFFSET, "intensity": list(LINE_INTENSITY)}
    params["paper"] = "Katharopoulos & Fleuret, ICML 2019, sec. 4.2; tasks: Riffi-Aslett 2024, sec. 3.1.3"
    return params


def plan_split(params: dict, split: str) -> dict[str, np.ndarray]:
    """The arrays of one split's file: digit pool indices, classes, corners, noise seeds and the tasks' labels."""
    n = params[f"n_{split}"]
    _, labels = digit_pools(params["pool"]["seed"], params["pool"]["fractions"])[split]
    members = by_class(labels)
    planned = [
        plan_canvas(np.random.default_rng([params["seed"], _STREAM, SPLIT_INDEX[split], i]), members,
                    params["digit_size"], params["canvas_size"], params["distinct_others"])
        for i in range(n)
    ]
    k = N_PER_CANVAS
    arrays = {
        "digit_index": np.array([p[0] for p in planned], dtype=np.int32).reshape(n, k),  # [N, 5]
        "classes": np.array([p[1] for p in planned], dtype=np.int8).reshape(n, k),  # [N, 5]
        "positions": np.array([p[2] for p in planned], dtype=np.int32).reshape(n, k, 2),  # [N, 5, 2]
        "noise_seed": np.array([p[3] for p in planned], dtype=np.int64).reshape(n),  # [N]
    }
    tasks = task_labels(arrays["classes"].astype(np.int64), arrays["positions"])
    arrays.update({t: v.astype(np.int8) if t != "multi" else v for t, v in tasks.items()})
    return arrays


def write_dataset(root: str | Path, params: dict, plan: Callable[[dict, str], dict] = plan_split) -> Path:
    """Write `parameters.json` and one `<split>.npz` per split at `root`, atomically; return `root`."""
    root = Path(root)
    with atomic_dir(root) as tmp:
        for split in SPLITS:
            save_npz(tmp / f"{split}.npz", plan(params, split))
        write_json(tmp / PARAMETERS, params)
    return root


def generate(
    root: str | Path, n_train: int, n_val: int, n_test: int, seed: int = 0, canvas_size: int = CANVAS_SIZE,
    n_noise: int = N_NOISE, distinct_others: bool = True, pool_seed: int = 0,
) -> Path:
    """Generate megapixel MNIST (ATS sec. 4.2) at `root`: parameters.json plus train/val/test .npz; return `root`."""
    params = parameters(n_train, n_val, n_test, seed, canvas_size, n_noise, distinct_others, pool_seed)
    return write_dataset(root, params)


def default_dataset(n_train: int = 5000, n_val: int = 1000, n_test: int = 1000, seed: int = 0) -> Path:
    """Megapixel MNIST cached under data_dir('megapixel_mnist'), regenerated only when the parameters differ."""
    params = parameters(n_train, n_val, n_test, seed)
    return stand_in(TESTBED, params, lambda root: write_dataset(root, params))


# ----------------------------------------------------------------------------------------------------
# Reading a dataset
# ----------------------------------------------------------------------------------------------------


class MegapixelMNIST(CanvasSplit):
    """One split of a generated megapixel MNIST dataset; canvases are rebuilt on demand."""

    testbed = TESTBED

    def __init__(self, root: str | Path, split: str = "train") -> None:
        """Open split `split` of the dataset at `root` (ValueError if it is not this testbed's or is stale)."""
        super().__init__(root, split)
        self.digit_index = self.arrays["digit_index"]  # [N, 5]
        self.noise_seed = self.arrays["noise_seed"]  # [N]
        self.targets = {t: self.arrays[t].astype(np.int64) for t in TASKS}  # maj/max/top [N], multi [N, 10]

    @property
    def digit_size(self) -> int:
        """The digit side on the canvas in pixels."""
        return self.parameters["digit_size"]

    def labels(self, i: int) -> dict[str, int | np.ndarray]:
        """The four tasks' labels of canvas i: maj, max, top (ints) and multi (uint8 [10])."""
        i = self.check_index(i)
        return {t: (v[i] if t == "multi" else int(v[i])) for t, v in self.targets.items()}

    def digit_boxes(self, i: int) -> np.ndarray:
        """Digit boxes of canvas i [5, 4] as (top, left, bottom, right), bottom/right exclusive."""
        corners = self.positions[self.check_index(i)]
        return np.concatenate([corners, corners + self.digit_size], axis=1)

    def digits(self, i: int) -> np.ndarray:
        """The digit images of canvas i, uint8 [5, s, s] at the canvas's digit size."""
        return resize_patches(self._images[self.digit_index[self.check_index(i)]], self.digit_size)

    def _noise_rng(self, i: int) -> np.random.Generator:
        """The generator that canvas i's noise parameters are drawn from."""
        return np.random.default_rng(int(self.noise_seed[self.check_index(i)]))

    def noise(self, i: int) -> LineNoise:
        """The noise parameters of canvas i (rebuilt from its seed)."""
        spec = self.parameters["noise"]
        return sample_line_noise(self._noise_rng(i), spec["count"], DIGIT_SIZE, self.canvas_size,
                                 self.positions[i], self.digit_size)

    def noise_patches(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas i's noise patches uint8 [n, s, s] and their corners [n, 2]."""
        noise = self.noise(i)
        patches = [line_patch(a, o, v) for a, o, v in zip(noise.angles, noise.offsets, noise.intensity)]
        return np.array(patches, dtype=np.uint8).reshape(-1, DIGIT_SIZE, DIGIT_SIZE), noise.positions

    def canvas(self, i: int) -> np.ndarray:
        """Canvas i, uint8 [S, S]: its digits and noise on black."""
        patches, corners = self.noise_patches(i)
        return render_canvas(self.digits(i), self.positions[i], self.canvas_size, patches, corners)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, int | np.ndarray]]:
        """(canvas uint8 [S, S], labels) of canvas i."""
        return self.canvas(i), self.labels(i)


REAL_STATISTICS = RealStatistics(
    dataset="megapixel MNIST",
    object_name="digit",
    image_size=Quoted("1500 x 1500; 5000 training and 1000 test images", "ATS sec. 4.2"),
    object_side=Quoted("28 (MNIST digits; the thesis scales 'the original megapixel MNIST' digits up from 28 x 28)",
                       "ATS sec. 4.2; thesis sec. 3.1.4"),
    object_fraction=Quoted("0.035 (28^2 / 1500^2, from the two sizes above)", "ATS sec. 4.2"),
    objects_per_image=Quoted("5 digits: 3 of one class, 2 of other classes", "ATS sec. 4.2; thesis sec. 3.1.3"),
    object_side_px=(28.0, 28.0),
    object_side_source="28 px",
    extra=(("noise patches per image", Quoted("50, each the size of an MNIST digit", "ATS sec. 4.2")),),
)


def measure_stand_in(split: MegapixelMNIST) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics measured on a generated split, from its digit corners and parameters."""
    noise = split.parameters["noise"]["count"]
    return canvas_statistics(split, REAL_STATISTICS.dataset, REAL_STATISTICS.object_name,
                             extra=(("noise patches per image", f"{noise}, each the size of a digit"),))
