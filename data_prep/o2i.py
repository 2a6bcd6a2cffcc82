"""The object-to-image (O2I) testbed of Riffi-Aslett (MSc thesis 2024): megapixel MNIST on a fixed 3000x3000 canvas.

Thesis sec. 3.1.4: the canvas is fixed at 3000x3000 and the digits are scaled up to 28, 56, 84 and
112 px, "which correspond to the following O2I ratios: {0.01, 0.034, 0.078, 0.13} %"; the noise
count falls linearly with the digit size, "noise = digit size x (-7.14) + 1000, resulting in 800
noise digits for the lowest O2I ratio and 200 for the highest"; training sets of {4000, 2000, 1000,
800} canvases (TRAIN_SIZES). Each canvas holds 5 digits, 3 of one class and 2 of others, with the
tasks Maj / Max / Top / Multi (sec. 3.1.3; all shared with `data_prep.megapixel_mnist`).

Checked and derived:
- O2I ratio = one digit's area / the canvas's area = s^2 / 3000^2 (`o2i_ratio`). This gives
  0.0087, 0.0348, 0.0784, 0.1394 %: the thesis prints 0.034, 0.078 and 0.13, i.e. these cut (not
  rounded) to its digits, and 0.01 for 0.0087 rounded (sec. 4.1 and fig. 4 write 0.14 for 112 px,
  and sec. 4.1 0.03 / 0.08 for 56 / 84 px: the same ratios, rounded). The same
  definition reproduces fig. 8's 1500x1500 ratios (14 px: 0.0087 %, 21: 0.0196, 46: 0.094, 64: 0.18);
  fig. 8's "0.34 %" for 28 px is 0.0348 % with a misplaced digit, and sec. 4.6's "0.0035 %" for 28 px
  on 1500x1500 is also 0.0348 % off by ten.
- noise count = round(s * (-7.14) + 1000) (`noise_count`): 800, 600, 400, 200 for 28..112 px.
- Bezier noise (sec. 3.1.5, algorithm 1, eq. 9): per curve, p control points with p in {4, 6, 8}
  drawn with probabilities {3/9, 5/9, 1/9} (table 1 prints them as 0.33, 0.56, 0.11), positions
  uniform on an N x N grid, B(t) = sum_i C(n, i) (1-t)^(n-i) t^i P_i with n = p - 1, and t
  discretised into 100 points. Algorithm 1 says "on an N x N canvas"; drawing 800 curves across the
  whole 3000x3000 canvas would cover it, and the thesis calls them "noise digits" of the digits' size
  (figs. 2, 3, 10), so N here is the 28 px MNIST grid: a curve is drawn as a 100-point polyline on a
  28x28 patch and then scaled up to the digit size exactly like the digits are, and the patches are
  placed uniformly on the canvas, off the digits' boxes (they may overlap each other).
- stroke thickness (sec. 4.8): the experiments vary it over {1.4, ..., 2.4}, note that near 2 the
  noise matches MNIST's strokes, and use 1.925 throughout (THICKNESS). The thesis gives no unit;
  it is read here as pixels of the 28 px grid (MNIST strokes are about 2-3 px wide there), so the
  stroke scales with the digit.

Files as in megapixel MNIST: `parameters.json` and `<split>.npz` with the digits, their corners, a
noise seed per canvas and the labels; `O2IMNIST.canvas(i)` rebuilds canvas i (the noise from its
seed). Canvas i depends only on (seed, split, i), so the thesis's nested training sizes are prefixes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import comb

from data_prep.megapixel_mnist import MegapixelMNIST, base_parameters, write_dataset
from data_prep.mnist_digits import (
    DIGIT_SIZE,
    canvas_statistics,
    check_count,
    resize_patches,
    scatter_avoiding,
    stroke_patch,
)
from data_prep.statistics import MeasuredStatistics, Quoted, RealStatistics
from zoomin_lib.infra.cache import stand_in

TESTBED = "o2i"
CANVAS_SIZE = 3000
DIGIT_SIZES = (28, 56, 84, 112)
THESIS_O2I_PERCENT = {28: 0.01, 56: 0.034, 84: 0.078, 112: 0.13}  # sec. 3.1.4 as printed
TRAIN_SIZES = (800, 1000, 2000, 4000)
NOISE_SLOPE, NOISE_INTERCEPT = -7.14, 1000.0
CONTROL_POINTS = (4, 6, 8)
CONTROL_PROBABILITIES = (3 / 9, 5 / 9, 1 / 9)
CURVE_POINTS = 100
THICKNESS = 1.925  # px on the 28 px grid, sec. 4.8
THESIS_THICKNESSES = (1.4, 1.6, 1.8, 2.0, 2.2, 2.4)  # sec. 4.8's sweep


# ----------------------------------------------------------------------------------------------------
# The formulas of sec. 3.1.4
# ----------------------------------------------------------------------------------------------------


def o2i_ratio(digit_size: int, canvas_size: int = CANVAS_SIZE) -> float:
    """One digit's share of the canvas area, s^2 / S^2 (a fraction; x100 for the thesis's percent)."""
    if digit_size < 1 or canvas_size < digit_size:
        raise ValueError(f"need 1 <= digit size <= canvas size, got {digit_size} and {canvas_size}")
    return digit_size**2 / canvas_size**2


def noise_count(digit_size: int) -> int:
    """Noise curves per canvas, round(digit_size * (-7.14) + 1000) (sec. 3.1.4)."""
    n = round(digit_size * NOISE_SLOPE + NOISE_INTERCEPT)
    if n < 0:
        raise ValueError(f"the noise formula gives {n} curves for {digit_size}px digits; pass n_noise")
    return n


# ----------------------------------------------------------------------------------------------------
# Bezier curves (sec. 3.1.5, algorithm 1, eq. 9)
# ----------------------------------------------------------------------------------------------------


def sample_control_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    """Control-point counts int64 [n], each 4, 6 or 8 with probabilities 3/9, 5/9, 1/9."""
    return rng.choice(np.array(CONTROL_POINTS), size=n, p=np.array(CONTROL_PROBABILITIES))


def bernstein(p: int, n_points: int = CURVE_POINTS) -> np.ndarray:
    """Bernstein weights [n_points, p] of a degree p-1 Bezier curve at t = linspace(0, 1, n_points)."""
    t = np.linspace(0.0, 1.0, n_points)[:, None]  # [T, 1]
    i = np.arange(p)[None, :]  # [1, p]
    return comb(p - 1, i) * t**i * (1 - t) ** (p - 1 - i)


def bezier_curve(control: np.ndarray, n_points: int = CURVE_POINTS) -> np.ndarray:
    """The curve B(t) [n_points, 2] of control points [p, 2] (eq. 9)."""
    control = np.asarray(control, dtype=np.float64)
    return bernstein(len(control), n_points) @ control


def bezier_patch(control: np.ndarray, thickness: float = THICKNESS, size: int = DIGIT_SIZE) -> np.ndarray:
    """One noise digit uint8 [size, size]: the 100-point Bezier polyline of control [p, 2] (x, y), `thickness` wide."""
    return stroke_patch([bezier_curve(control)], thickness, size)


@dataclass(frozen=True)
class BezierNoise:
    """One canvas's noise: patch corners [n, 2], control-point counts [n], control points [n, 8, 2] (first p used)."""

    positions: np.ndarray
    counts: np.ndarray
    control: np.ndarray

    def controls(self, j: int) -> np.ndarray:
        """The control points [p, 2] (x, y) of curve j."""
        return self.control[j, : self.counts[j]]


def sample_bezier_noise(
    rng: np.random.Generator, n: int, canvas_size: int, digit_positions: np.ndarray, digit_size: int
) -> BezierNoise:
    """One canvas's Bezier noise: n digit-sized patches off the digits, control points uniform on the 28 px grid."""
    positions = scatter_avoiding(rng, n, digit_size, canvas_size, canvas_size, digit_positions, digit_size)
    counts = sample_control_counts(rng, n)
    control = rng.uniform(0, DIGIT_SIZE - 1, size=(n, max(CONTROL_POINTS), 2))
    return BezierNoise(positions, counts, control)


# ----------------------------------------------------------------------------------------------------
# Writing and reading
# ----------------------------------------------------------------------------------------------------


def parameters(
    n_train: int, n_val: int, n_test: int, seed: int = 0, digit_size: int = 28, n_noise: int | None = None,
    thickness: float = THICKNESS, canvas_size: int = CANVAS_SIZE, distinct_others: bool = True, pool_seed: int = 0,
) -> dict:
    """The `parameters.json` content of an O2I dataset (thesis sec. 3.1.4-3.1.5)."""
    if not thickness > 0:
        raise ValueError(f"thickness must be positive, got {thickness}")
    counts = (n_train, n_val, n_test)
    params = base_parameters(TESTBED, counts, seed, canvas_size, digit_size, distinct_others, pool_seed)
    count = noise_count(digit_size) if n_noise is None else check_count("n_noise", n_noise)
    params["noise"] = {
        "kind": "bezier", "count": count, "thickness": float(thickness), "control_points": list(CONTROL_POINTS),
        "probabilities": list(CONTROL_PROBABILITIES), "curve_points": CURVE_POINTS, "grid": DIGIT_SIZE,
    }
    params["o2i_ratio"] = o2i_ratio(digit_size, canvas_size)
    params["paper"] = "Riffi-Aslett 2024 (MSc thesis), sec. 3.1.3-3.1.5, algorithm 1, sec. 4.8"
    return params


def generate(
    root: str | Path, n_train: int, n_val: int, n_test: int, seed: int = 0, digit_size: int = 28,
    n_noise: int | None = None, thickness: float = THICKNESS, canvas_size: int = CANVAS_SIZE,
    distinct_others: bool = True, pool_seed: int = 0,
) -> Path:
    """Generate the O2I testbed at `root` (n_noise defaults to `noise_count(digit_size)`); return `root`."""
    params = parameters(n_train, n_val, n_test, seed, digit_size, n_noise, thickness, canvas_size,
                        distinct_others, pool_seed)
    return write_dataset(root, params)


def default_dataset(
    digit_size: int = 28, n_train: int = 4000, n_val: int = 1000, n_test: int = 1000, seed: int = 0
) -> Path:
    """The O2I testbed cached under data_dir('o2i_mnist_<digit_size>'), regenerated only when the parameters differ."""
    params = parameters(n_train, n_val, n_test, seed, digit_size)
    return stand_in(f"o2i_mnist_{digit_size}", params, lambda root: write_dataset(root, params))


class O2IMNIST(MegapixelMNIST):
    """One split of a generated O2I dataset; canvases (digits and Bezier noise) are rebuilt on demand."""

    testbed = TESTBED

    def noise(self, i: int) -> BezierNoise:
        """The Bezier noise parameters of canvas i (rebuilt from its seed)."""
        return sample_bezier_noise(self._noise_rng(i), self.parameters["noise"]["count"], self.canvas_size,
                                   self.positions[i], self.digit_size)

    def noise_patches(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        """Canvas i's noise digits uint8 [n, s, s] (drawn at 28 px, scaled like the digits) and corners [n, 2]."""
        noise, thickness = self.noise(i), self.parameters["noise"]["thickness"]
        patches = np.array([bezier_patch(noise.controls(j), thickness) for j in range(len(noise.counts))],
                           dtype=np.uint8).reshape(-1, DIGIT_SIZE, DIGIT_SIZE)
        return resize_patches(patches, self.digit_size), noise.positions


REAL_STATISTICS = RealStatistics(
    dataset="O2I megapixel MNIST",
    object_name="digit",
    image_size=Quoted("3000 x 3000 (fixed)", "thesis sec. 3.1.4"),
    object_side=Quoted("28, 56, 84 or 112 (one size per data set)", "thesis sec. 3.1.4"),
    object_fraction=Quoted("0.01, 0.034, 0.078, 0.13 for the four sizes", "thesis sec. 3.1.4"),
    objects_per_image=Quoted("5 digits: 3 of one class, 2 of other classes", "thesis sec. 3.1.3"),
    object_side_px=(28.0, 112.0),
    object_side_source="28-112 px",
    extra=(("noise patches per image",
            Quoted("digit size x (-7.14) + 1000: 800 at 28 px, 200 at 112 px (Bezier curves)", "thesis sec. 3.1.4-3.1.5")),),
)


def measure_stand_in(split: O2IMNIST) -> MeasuredStatistics:
    """REAL_STATISTICS's statistics measured on a generated split, from its digit corners and parameters."""
    noise = split.parameters["noise"]["count"]
    return canvas_statistics(split, REAL_STATISTICS.dataset, REAL_STATISTICS.object_name,
                             extra=(("noise patches per image", f"{noise} (Bezier curves)"),))
