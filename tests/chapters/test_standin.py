"""Tests of zoomin_lib.chapters.standin: the table of the real data beside its stand-in, and its rows per view."""

from __future__ import annotations

import numpy as np
import pytest

from data_prep.statistics import NOT_REPORTED, Quoted, RealStatistics, measured_from_boxes
from zoomin_lib.chapters.standin import COLUMNS, image_sizes, standin_rows, standin_table

REAL = RealStatistics(
    dataset="toy", object_name="box", image_size=Quoted("100 x 100", "paper sec. 1"),
    object_side=Quoted("10", "paper sec. 2"), object_fraction=Quoted("1", "paper sec. 2"),
    objects_per_image=Quoted(NOT_REPORTED), object_side_px=(10.0, 20.0), object_side_source="10-20 px",
    extra=(("noise", Quoted("5", "paper sec. 3")),),
)


def _measured():
    """Two 100x100 images: one with boxes of side 10 and 30, one with none."""
    return measured_from_boxes("toy", "box", np.array([[100, 100], [100, 100]]),
                               [np.array([[10, 10], [30, 30]]), np.zeros((0, 2))], extra=(("noise", "2"),))


def test_rows_statistics_and_views() -> None:
    """One row per statistic and per view; real values quoted with their source, the stand-in's measured."""
    rows = standin_rows(REAL, _measured(), {"first view": 0.1, "second view": (0.2, 0.5)})
    assert all(tuple(r) == COLUMNS for r in rows)
    by = {r["statistic"]: r for r in rows}
    assert by["image size (px, H x W)"]["real data (source)"] == "100 x 100 (paper sec. 1)"
    assert by["image size (px, H x W)"]["stand-in (measured here)"] == "100 x 100 (2 images)"
    assert by["box: side (px, sqrt of area)"]["stand-in (measured here)"] == "median 20.0 (10.0-30.0)"
    assert by["box: area / image area (%)"]["stand-in (measured here)"] == "median 5 (1-9)"
    assert by["objects per image (box)"]["real data (source)"] == NOT_REPORTED
    assert by["objects per image (box)"]["stand-in (measured here)"] == "2; 1 of 2 images hold none"
    assert by["noise"] == {"statistic": "noise", "real data (source)": "5 (paper sec. 3)", "stand-in (measured here)": "2"}
    first = by["box side at first view (s = 0.1)"]
    assert first["real data (source)"] == "1.0-2.0 px (10-20 px x 0.1)"
    assert first["stand-in (measured here)"] == "median 2.0 (1.0-3.0) px; 50% of objects >= 2 px"
    second = by["box side at second view (s = 0.2 here, 0.5 on the real data)"]
    assert second["real data (source)"] == "5.0-10.0 px (10-20 px x 0.5)"  # the real data's scale
    assert second["stand-in (measured here)"].endswith("100% of objects >= 2 px")  # this run's scale on the stand-in


def test_not_reported_sizes_and_mismatch() -> None:
    """Without a quoted size the real rows per view say so; a stand-in of another data set is refused."""
    real = RealStatistics("toy", "box", Quoted("a"), Quoted(NOT_REPORTED), Quoted(NOT_REPORTED), Quoted(NOT_REPORTED))
    rows = standin_rows(real, _measured(), {"v": 0.5})
    assert rows[-1]["real data (source)"] == NOT_REPORTED
    assert rows[-1]["stand-in (measured here)"] == "median 10.0 (5.0-15.0) px; 100% of objects >= 2 px"
    assert "| statistic | real data (source) | stand-in (measured here) |" in str(standin_table(real, _measured(), {"v": 0.5}))
    other = measured_from_boxes("other", "box", np.array([[10, 10]]), [np.zeros((0, 2))])
    with pytest.raises(ValueError, match="beside a stand-in"):
        standin_rows(real, other, {})
    with pytest.raises(ValueError, match="positive"):
        standin_rows(real, _measured(), {"v": 0.0})


def test_image_sizes_range() -> None:
    """Several sizes: the smallest and the largest by area."""
    assert image_sizes(np.array([[500, 600], [100, 100], [900, 900]])) == "100 x 100 to 900 x 900 (3 images)"


def test_standin_table_names_real_measurements_by_their_data_label() -> None:
    """Run on the real data, the measured column is named by the data's label, never "stand-in"."""
    text = str(standin_table(REAL, _measured(), {"v": 0.5}, data_label="fMoW (/data/fmow)"))
    assert "| statistic | real data (source) | fMoW (/data/fmow) (measured here) |" in text
    assert "stand-in" not in text and "median 20.0 (10.0-30.0)" in text


def test_a_numpy_scale_is_one_scale() -> None:
    """A view's scale may be a numpy scalar (e.g. read from a config array), not only a Python float."""
    rows = standin_rows(REAL, _measured(), {"v": np.float32(0.5)})
    assert rows[-1]["statistic"] == "box side at v (s = 0.5)"
