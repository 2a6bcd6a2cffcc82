"""NeedleMNIST (Pawlowski et al. 2019, "Needles in haystacks"), as used in the Zoom-In paper's appendix J.

Zoom-In appendix J: "images with a size of 1024x1024 are generated via randomly placing 401 MNIST
digits on a black image canvas. The task ... is to classify whether there is a digit 3 in a given
image. The positive samples ... contain only one digit 3 and 400 distracting digits, that is, any
MNIST digits belong to a set of labels {0, 1, 2, 4, 5, 6, 7, 8, 9}. The negative samples ... have
401 distracting digits." The smaller canvases keep the same structure with the distractor counts
DISTRACTORS = {64: 2, 128: 6, 256: 25, 512: 100, 1024: 400}: a positive holds one 3 and
n_distractors other digits, a negative n_distractors + 1 other digits, so both hold the same number
of digits (only the 3 tells them apart). Each split is balanced (ceil(n/2) positives, shuffled).

Placement: digits keep MNIST's native 28x28 size and their boxes never overlap (`place_boxes`:
uniform sequential placement, restarts, then a random grid layout when a crowded canvas jams). All
five sizes allow it (64x64 holds at most 4 disjoint 28x28 boxes and needs 3). When the digits cannot
fit disjointly (more than floor(S/28)^2), `generate` raises a ValueError unless `allow_overlap=True`;
then the digits are placed independently and uniformly and may overlap, composited by pixel-wise
maximum (Pawlowski et al.'s public generator, by contrast, adds overlapping digits and clips).

Files: `parameters.json` and `<split>.npz` with, per canvas, the label, the digits' pool indices,
classes and top-left corners; `NeedleMNIST.canvas(i)` rebuilds canvas i.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from data_prep.mnist_digits import (
    DEFAULT_FRACTIONS,
    DIGIT_SIZE,
    MNIST_SOURCE,
    PARAMETERS,
    SPLIT_INDEX,
    SPLITS,
    CanvasSplit,
    canvas_statistics,
    check_count,
    compose,
    digit_pools,
    grid_capacity,
    place_boxes,
    pools_checksum,
    save_npz,
)
from data_prep.statistics import MeasuredStatistics, Quoted, RealStatistics
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.io import atomic_dir, write_json

TESTBED = "needle_mnist"
VERSION = 1
NEEDLE = 3  # the digit to detect
DISTRACTORS = {64: 2, 128: 6, 256: 25, 512: 100, 1024: 400}
_STREAM = 0x4E44  # keeps these draws apart from the other testbeds' for equal seeds


def n_distractors_for(canvas_size: int) -> int:
    """The distractor count of a canvas size (64..1024), ValueError for other sizes."""
    if canvas_size not in DISTRACTORS:
        sizes = ", ".join(map(str, DISTRACTORS))
        raise ValueError(f"no distractor count for a {canvas_size}px canvas (known: {sizes}); pass n_distractors")
    return DISTRACTORS[canvas_size]


def _check_layout(canvas_size: int, n_digits: int, allow_overlap: bool) -> None:
    """Raise a ValueError when the digits cannot be laid out on the canvas as asked."""
    if canvas_size < DIGIT_SIZE:
        raise ValueError(f"a {canvas_size}px canvas cannot hold a {DIGIT_SIZE}px digit")
    capacity = grid_capacity(DIGIT_SIZE, canvas_size, canvas_size)
    if n_digits > capacity and not allow_overlap:
        raise ValueError(
            f"{n_digits} non-overlapping {DIGIT_SIZE}px digits do not fit in {canvas_size}x{canvas_size} "
            f"(at most {capacity}); pass allow_overlap=True to let them overlap"
        )


def parameters(
    n_train: int, n_val: int, n_test: int, seed: int = 0, canvas_size: int = 1024, n_distractors: int | None = None,
    allow_overlap: bool = False, pool_seed: int = 0,
) -> dict:
    """The `parameters.json` content of a NeedleMNIST dataset."""
    if n_distractors is None:
        distractors = n_distractors_for(canvas_size)
    else:
        distractors = check_count("n_distractors", n_distractors)
    _check_layout(canvas_size, distractors + 1, allow_overlap)
    sizes = {f"n_{split}": check_count(f"n_{split}", n) for split, n in zip(SPLITS, (n_train, n_val, n_test))}
    return {
        "testbed": TESTBED, "version": VERSION, **sizes, "seed": int(seed), "canvas_size": int(canvas_size),
        "digit_size": DIGIT_SIZE, "n_distractors": distractors, "n_digits": distractors + 1, "needle": NEEDLE,
        "allow_overlap": bool(allow_overlap),
        "pool": {"seed": int(pool_seed), "fractions": list(DEFAULT_FRACTIONS),
                 "checksum": pools_checksum(pool_seed, DEFAULT_FRACTIONS)},
        "source": MNIST_SOURCE,
        "paper": "Pawlowski et al. 2019 (arXiv:1908.06037); Kong & Henao, Zoom-In network, appendix J",
    }


def balanced_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Shuffled labels int8 [n]: ceil(n/2) positives (1), the rest negatives (0)."""
    return rng.permutation(np.arange(n) < (n + 1) // 2).astype(np.int8)


def _corners(rng: np.random.Generator, n: int, canvas_size: int, allow_overlap: bool) -> np.ndarray:
    """Top-left corners [n, 2]: disjoint when they fit, else (with allow_overlap) independent and uniform."""
    if n <= grid_capacity(DIGIT_SIZE, canvas_size, canvas_size):
        return place_boxes(rng, n, DIGIT_SIZE, canvas_size, canvas_size)
    if not allow_overlap:
        raise ValueError(f"{n} digits do not fit without overlap in {canvas_size}x{canvas_size}")
    return rng.integers(0, canvas_size - DIGIT_SIZE + 1, size=(n, 2))


def plan_canvas(
    rng: np.random.Generator, positive: bool, needles: np.ndarray, others: np.ndarray, n_digits: int,
    canvas_size: int, allow_overlap: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """One canvas's pool indices [D] (one 3 if positive, no 3 otherwise, in random order) and corners [D, 2]."""
    n_others = n_digits - int(positive)
    chosen = rng.choice(others, size=n_others, replace=n_others > len(others))
    if positive:
        chosen = np.r_[chosen, rng.choice(needles)]
    return rng.permutation(chosen), _corners(rng, n_digits, canvas_size, allow_overlap)


def plan_split(params: dict, split: str) -> dict[str, np.ndarray]:
    """The arrays of one split's file: labels [N], digit pool indices and classes [N, D], corners [N, D, 2]."""
    n, d, size = params[f"n_{split}"], params["n_digits"], params["canvas_size"]
    _, labels = digit_pools(params["pool"]["seed"], params["pool"]["fractions"])[split]
    needles, others = np.flatnonzero(labels == NEEDLE), np.flatnonzero(labels != NEEDLE)
    base = [params["seed"], _STREAM, SPLIT_INDEX[split]]
    targets = balanced_labels(np.random.default_rng(base), n)
    planned = [
        plan_canvas(np.random.default_rng([*base, i]), bool(targets[i]), needles, others, d, size,
                    params["allow_overlap"])
        for i in range(n)
    ]
    index = np.array([p[0] for p in planned], dtype=np.int16).reshape(n, d)  # [N, D]
    return {
        "label": targets,  # [N]
        "digit_index": index,
        "classes": labels[index].astype(np.int8).reshape(n, d),  # [N, D]
        "positions": np.array([p[1] for p in planned], dtype=np.int16).reshape(n, d, 2),  # [N, D, 2]
    }


def generate(
    root: str | Path, n_train: int, n_val: int, n_test: int, seed: int = 0, canvas_size: int = 1024,
    n_distractors: int | None = None, allow_overlap: bool = False, pool_seed: int = 0,
) -> Path:
    """Generate NeedleMNIST at `root` (parameters.json plus train/val/test .npz), atomically; return `root`."""
    params = parameters(n_train, n_val, n_test, seed, canvas_size, n_distractors, allow_overlap, pool_seed)
    return _write(Path(root), params)


def _write(root: Path, params: dict) -> Path:
    """Write the files of `params` at `root` through atomic_dir."""
    with atomic_dir(root) as tmp:
        for split in SPLITS:
            save_npz(tmp / f"{split}.npz", plan_split(params, split))
        write_json(tmp / PARAMETERS, params)
    return root


def default_dataset(canvas_size: int = 1024, n_train: int = 2000, n_val: int = 500, n_test: int = 500,
                    seed: int = 0) -> Path:
    """NeedleMNIST cached under data_dir('needle_mnist_<size>'), regenerated only when the parameters differ."""
    params = parameters(n_train, n_val, n_test, seed, canvas_size)
    return stand_in(f"{TESTBED}_{canvas_size}", params, lambda root: _write(root, params))


class NeedleMNIST(CanvasSplit):
    """One split of a generated NeedleMNIST dataset; canvases are rebuilt on demand."""

    testbed = TESTBED

    def __init__(self, root: str | Path, split: str = "train") -> None:
        """Open split `split` of the NeedleMNIST dataset at `root` (ValueError if it is not one or is stale)."""
        super().__init__(root, split)
        self.targets = self.arrays["label"].astype(np.int64)  # [N], 1 when a 3 is present
        self.digit_index = self.arrays["digit_index"].astype(np.int64)  # [N, D]

    def label(self, i: int) -> int:
        """1 when canvas i holds a 3, else 0."""
        return int(self.targets[self.check_index(i)])

    def digit_boxes(self, i: int) -> np.ndarray:
        """Digit boxes of canvas i [D, 4] as (top, left, bottom, right), bottom/right exclusive."""
        corners = self.positions[self.check_index(i)]
        return np.concatenate([corners, corners + DIGIT_SIZE], axis=1)

    def canvas(self, i: int) -> np.ndarray:
        """Canvas i, uint8 [S, S]: its digits on black."""
        i = self.check_index(i)
        return compose(self.canvas_size, self.canvas_size, self._images[self.digit_index[i]], self.positions[i])

    def __getitem__(self, i: int) -> tuple[np.ndarray, int]:
        """(canvas uint8 [S, S], label) of canvas i."""
        return self.canvas(i), self.label(i)


REAL_STATISTICS = RealStatistics(
    dataset="NeedleMNIST",
    object_name="needle digit 3",
    image_size=Quoted("1024 x 1024", "Zoom-In appendix J"),
    object_side=Quoted("28 ('maintaining the digits at 28x28 pixels')", "thesis sec. 3.1.2, after Pawlowski et al."),
    object_fraction=Quoted("0.075 at 1024 x 1024 (19.1, 4.8, 1.2, 0.3 at 64 to 512)", "thesis sec. 3.1.2"),
    objects_per_image=Quoted("positives: one 3 among 401 digits; negatives: none, 401 other digits", "Zoom-In appendix J"),
    object_side_px=(28.0, 28.0),
    object_side_source="28 px",
    extra=(("digits per image", Quoted("401", "Zoom-In appendix J")),
           ("what the low-resolution view shows",
            Quoted("'we can hardly recognize the ROI of the downsampled view ... at scale s1 = 0.25'",
                   "Zoom-In appendix J, fig. 8")),),
)


def measure_stand_in(split: NeedleMNIST) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics measured on a generated split, from its digit classes and corners."""
    digits = split.classes.shape[1]
    return canvas_statistics(split, REAL_STATISTICS.dataset, REAL_STATISTICS.object_name,
                             objects=split.classes == NEEDLE, extra=(("digits per image", str(digits)),))
