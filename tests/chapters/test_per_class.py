"""Per-class results cover the classes present and name the absent ones."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from zoomin_lib.chapters.per_class import absent_note, per_class_recall, per_class_rows, present_classes

NAMES = ("EMPTY", "50_SIGN", "70_SIGN", "80_SIGN")


def test_present_and_absent_classes():
    assert present_classes(np.array([2, 0, 2]), NAMES) == ([0, 2], ["50_SIGN", "80_SIGN"])
    note = absent_note({"train": [0, 1, 2], "test": [0, 0]}, NAMES)
    assert note == "classes absent from train: 80_SIGN; from test: 50_SIGN, 70_SIGN, 80_SIGN"
    assert absent_note({"train": [0, 1, 2, 3]}, NAMES) == "every class is present in train"


def test_recall_and_its_mean_skip_absent_classes():
    """80_SIGN has no test image: it is left out of the recall and of its mean (not counted as 0 or NaN)."""
    confusion = [[3, 1, 0, 0], [0, 1, 1, 0], [0, 0, 2, 0], [0, 0, 0, 0]]
    assert per_class_recall(confusion, NAMES) == {"EMPTY": 0.75, "50_SIGN": 0.5, "70_SIGN": 1.0}
    runs = [SimpleNamespace(confusion=confusion), SimpleNamespace(confusion=np.eye(4, dtype=int) * [1, 0, 0, 0])]
    (row,) = per_class_rows({"Zoom-In": runs}, NAMES)
    assert row["recall EMPTY %"] == pytest.approx(80.0)  # 4 of 5 over both runs
    assert "recall 80_SIGN %" not in row
    assert row["mean recall over present classes %"] == pytest.approx((80 + 50 + 100) / 3)
    assert row["classes absent from the test set"] == "80_SIGN"
    (empty,) = per_class_rows({"x": [SimpleNamespace(confusion=np.zeros((4, 4), int))]}, NAMES)
    assert math.isnan(empty["mean recall over present classes %"])
