"""The statistics of a data set that matter to the sampling methods, quoted for the real data and measured on a stand-in.

Issue 16 asks each chapter to put, beside its synthetic stand-in, the real data's statistics that decide
whether a method that looks first at a low-resolution view can see the object: the image size, the
object's size in pixels and as a fraction of the image, the objects per image. Each data_prep module
with a stand-in holds

- `REAL_STATISTICS`, a `RealStatistics`: the values as the papers in `shared/papers/` (or the data
  set's own description, as they quote it) state them, each with its source; where they give none,
  the value is `NOT_REPORTED`. Nothing here is invented.
- a function `measure_stand_in(...)` that measures the same statistics on a loaded data set from its
  annotations (boxes, masks, digit corners, nucleus detections), without re-generating any pixels,
  and returns a `MeasuredStatistics`.

Conventions, the same for every data set. The object's *side* is the square root of its area in
pixels (a w x h box has side sqrt(w h); a mask of A pixels sqrt(A)); its *area fraction* is its area
over the image's area. `chapters.standin` renders the two side by side.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

NOT_REPORTED = "not reported"


@dataclass(frozen=True)
class Quoted:
    """One statistic of the real data: its value as a source states it (or NOT_REPORTED), and that source."""

    value: str
    source: str = ""

    def text(self) -> str:
        """'value (source)', or the value alone when no source is named."""
        return f"{self.value} ({self.source})" if self.source else self.value


@dataclass(frozen=True)
class RealStatistics:
    """What the sources say about the real data set's images and objects.

    `object_side_px` is the object's side in pixels as a (low, high) range where a source gives it (or
    it follows from a source by arithmetic named in `object_side_source`), None where none does; the
    table's rows per method scale it.
    """

    dataset: str
    object_name: str  # what counts as one object, e.g. "speed-limit sign"
    image_size: Quoted
    object_side: Quoted
    object_fraction: Quoted
    objects_per_image: Quoted
    object_side_px: tuple[float, float] | None = None
    object_side_source: str = ""
    extra: tuple[tuple[str, Quoted], ...] = ()  # further (statistic, quoted value) rows


@dataclass(frozen=True)
class MeasuredStatistics:
    """The same statistics measured on a loaded data set (here: a stand-in), from its annotations.

    `objects_per_image` counts, for every image measured, its objects (0 for an image without one);
    `object_side` and `object_fraction` hold one value per object.
    """

    dataset: str
    object_name: str
    image_hw: np.ndarray  # [M, 2] int (height, width) per image measured
    object_side: np.ndarray  # [K] float, sqrt(object area) in pixels
    object_fraction: np.ndarray  # [K] float, object area / image area
    objects_per_image: np.ndarray  # [M] int
    extra: tuple[tuple[str, str], ...] = field(default=())  # further (statistic, measured value) rows

    def __post_init__(self) -> None:
        """Check the shapes agree: one size per image, one side and fraction per object, counts summing to K."""
        hw, side = np.asarray(self.image_hw), np.asarray(self.object_side)
        frac, per = np.asarray(self.object_fraction), np.asarray(self.objects_per_image)
        if hw.ndim != 2 or hw.shape[1] != 2:
            raise ValueError(f"image_hw must be [M, 2] (height, width), got shape {hw.shape}")
        if per.shape != (len(hw),):
            raise ValueError(f"objects_per_image must hold one count per image ({len(hw)}), got shape {per.shape}")
        if side.shape != frac.shape or side.ndim != 1:
            raise ValueError(f"object_side {side.shape} and object_fraction {frac.shape} must be [K] alike")
        if int(per.sum()) != len(side):
            raise ValueError(f"objects_per_image sums to {int(per.sum())} but {len(side)} objects were measured")


def spread(values: np.ndarray, fmt: str = "{:.1f}", scale: float = 1.0) -> str:
    """'median m (min-max)' of `values` x `scale`, or 'none' when empty; a constant is shown once."""
    v = np.asarray(values, dtype=np.float64).ravel() * scale
    if v.size == 0:
        return "none"
    lo, med, hi = float(v.min()), float(np.median(v)), float(v.max())
    if fmt.format(lo) == fmt.format(hi):
        return fmt.format(lo)
    return f"median {fmt.format(med)} ({fmt.format(lo)}-{fmt.format(hi)})"


def measured_from_boxes(
    dataset: str, object_name: str, image_hw: np.ndarray, boxes: list[np.ndarray],
    extra: tuple[tuple[str, str], ...] = (),
) -> MeasuredStatistics:
    """Statistics from per-image boxes: `image_hw` [M, 2] and, per image, its boxes [K_i, 2] as (width, height) in px."""
    image_hw = np.asarray(image_hw, dtype=np.int64).reshape(-1, 2)
    if len(boxes) != len(image_hw):
        raise ValueError(f"{len(boxes)} box lists for {len(image_hw)} images")
    sides, fractions = [], []
    for (h, w), b in zip(image_hw, boxes):
        wh = np.asarray(b, dtype=np.float64).reshape(-1, 2)  # [K_i, 2] (width, height)
        if (wh < 0).any():
            raise ValueError(f"negative box extent in {wh.tolist()}")
        area = wh[:, 0] * wh[:, 1]  # [K_i]
        sides.append(np.sqrt(area))
        fractions.append(area / float(h * w))
    return MeasuredStatistics(
        dataset, object_name, image_hw,
        np.concatenate([np.zeros(0)] + sides), np.concatenate([np.zeros(0)] + fractions),
        np.array([len(np.asarray(b).reshape(-1, 2)) for b in boxes], dtype=np.int64), extra,
    )
