"""The real data beside its stand-in: the statistics that matter to the methods, and the object at each method's first view.

One home for the table every dataset chapter shows in its "The data" section (issue 16): a row per
statistic, "real data (source)" quoted from the papers (`data_prep.<data set>.REAL_STATISTICS`) beside
"stand-in (measured here)" (`data_prep.<data set>.measure_stand_in`), then one row per method giving the
object's side in pixels at the scale where that method looks first (Zoom-In's s1 and s2, ATS's s, the
CNN's s): the object's side times the scale. Below about 1-2 pixels a method cannot see the object
where it looks first; the rows say what share of the stand-in's objects reach `VISIBLE_PX`.

The two columns never mix: a real value is only ever quoted (or, where `RealStatistics.object_side_source`
says so, multiplied by a scale), a stand-in value only ever measured.
"""

from __future__ import annotations

import numbers
from typing import Mapping

import numpy as np

from data_prep.statistics import NOT_REPORTED, MeasuredStatistics, RealStatistics, spread
from zoomin_lib.book.report import MarkdownTable, markdown_table

__all__ = ["VISIBLE_PX", "COLUMNS", "image_sizes", "standin_rows", "standin_table"]

VISIBLE_PX = 2.0  # an object's side at a view must reach this many pixels to count as visible there
COLUMNS = ("statistic", "real data (source)", "stand-in (measured here)")


def image_sizes(image_hw: np.ndarray) -> str:
    """'H x W' when every image has that size, else the smallest and largest by area; with the count."""
    hw = np.asarray(image_hw).reshape(-1, 2)
    if len(hw) == 0:
        return "no images"
    sizes = sorted({(int(h), int(w)) for h, w in hw}, key=lambda s: (s[0] * s[1], s))
    shown = f"{sizes[0][0]} x {sizes[0][1]}" if len(sizes) == 1 else \
        f"{sizes[0][0]} x {sizes[0][1]} to {sizes[-1][0]} x {sizes[-1][1]}"
    return f"{shown} ({len(hw)} images)"


def _per_image(counts: np.ndarray) -> str:
    """Objects per image over the images that hold any, and how many hold none."""
    c = np.asarray(counts)
    held = c[c > 0]
    text = spread(held, "{:.0f}") if held.size else "none"
    return f"{text}; {int((c == 0).sum())} of {len(c)} images hold none"


def _at_view_real(real: RealStatistics, scale: float) -> str:
    """The real object's side at `scale`, from the quoted range, or NOT_REPORTED."""
    if real.object_side_px is None:
        return NOT_REPORTED
    lo, hi = (v * scale for v in real.object_side_px)
    text = f"{lo:.1f} px" if f"{lo:.1f}" == f"{hi:.1f}" else f"{lo:.1f}-{hi:.1f} px"
    return f"{text} ({real.object_side_source} x {scale:g})"


def _at_view_measured(measured: MeasuredStatistics, scale: float, visible_px: float) -> str:
    """The stand-in's object sides at `scale`, and the share of its objects that reach `visible_px` there."""
    side = np.asarray(measured.object_side, dtype=np.float64) * scale
    if side.size == 0:
        return "no objects"
    share = float((side >= visible_px).mean())
    return f"{spread(side)} px; {share:.0%} of objects >= {visible_px:g} px"


def standin_rows(
    real: RealStatistics, measured: MeasuredStatistics, views: Mapping[str, float | tuple[float, float]],
    visible_px: float = VISIBLE_PX,
) -> list[dict[str, str]]:
    """Rows of the table: image size, object side and area fraction, objects per image, extra rows, then one per view.

    `views` maps a label (e.g. "Zoom-In's first stage") to the scale of that view, or to (scale here, scale on
    the real data: the paper's, or the `paper` profile's) where the two differ; each gives the object's side at
    that view, for the real data at its scale (from `real.object_side_px`, or NOT_REPORTED) and for the stand-in
    at this run's.
    """
    if real.dataset != measured.dataset:
        raise ValueError(f"real statistics of {real.dataset!r} beside a stand-in of {measured.dataset!r}")
    name = measured.object_name
    rows = [
        ("image size (px, H x W)", real.image_size.text(), image_sizes(measured.image_hw)),
        (f"{name}: side (px, sqrt of area)", real.object_side.text(), spread(measured.object_side)),
        (f"{name}: area / image area (%)", real.object_fraction.text(),
         spread(measured.object_fraction, "{:.3g}", scale=100.0)),
        (f"objects per image ({name})", real.objects_per_image.text(), _per_image(measured.objects_per_image)),
    ]
    measured_extra = dict(measured.extra)
    for statistic, quoted in real.extra:
        rows.append((statistic, quoted.text(), measured_extra.pop(statistic, "-")))
    rows += [(statistic, "-", value) for statistic, value in measured_extra.items()]
    for label, scales in views.items():
        here, paper = (scales, scales) if isinstance(scales, numbers.Real) else scales
        if not (here > 0 and paper > 0):
            raise ValueError(f"view {label!r}: scales must be positive, got {scales}")
        at = f"s = {here:g}" if here == paper else f"s = {here:g} here, {paper:g} on the real data"
        rows.append((f"{name} side at {label} ({at})", _at_view_real(real, paper),
                     _at_view_measured(measured, here, visible_px)))
    return [dict(zip(COLUMNS, r)) for r in rows]


def standin_table(
    real: RealStatistics, measured: MeasuredStatistics, views: Mapping[str, float | tuple[float, float]],
    visible_px: float = VISIBLE_PX, data_label: str | None = None,
) -> MarkdownTable:
    """`standin_rows` as a Markdown table (displays as a table in Jupyter and the book).

    `data_label` names what was measured when it is not a stand-in (a chapter run on the real data): the third
    column is then "<data_label> (measured here)", so that real measurements are never labelled a stand-in.
    """
    rows = standin_rows(real, measured, views, visible_px)
    if data_label is None:
        return markdown_table(rows, list(COLUMNS))
    column = f"{data_label} (measured here)"
    return markdown_table([{**{k: v for k, v in r.items() if k != COLUMNS[2]}, column: r[COLUMNS[2]]} for r in rows],
                          [*COLUMNS[:2], column])
