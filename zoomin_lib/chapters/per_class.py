"""Per-class results over the classes a data set actually has: which are absent, and recall per present class.

A real download may lack a class (a subset of the Swedish traffic signs without 80 km/h signs; an
fMoW folder with 3 of the 10 categories). Accuracy over the images is still defined; a per-class
figure or table then covers the classes present and says which are absent, and the mean recall
(balanced accuracy) is taken over the classes the test set has, never over empty ones.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["present_classes", "absent_note", "per_class_recall", "per_class_rows"]


def present_classes(labels: Sequence[int] | np.ndarray, names: Sequence[str]) -> tuple[list[int], list[str]]:
    """(indices of the classes some label has, sorted; names of those none has, in class order)."""
    have = set(np.asarray(labels, dtype=np.int64).ravel().tolist())
    return sorted(c for c in have if 0 <= c < len(names)), [name for c, name in enumerate(names) if c not in have]


def absent_note(split_labels: Mapping[str, Sequence[int] | np.ndarray], names: Sequence[str]) -> str:
    """One line saying which classes each split lacks, e.g. 'absent from train: 80_SIGN; from test: 50_SIGN, 80_SIGN'.

    'every class is present in train and test' when none is absent.
    """
    parts = []
    for split, labels in split_labels.items():
        _, absent = present_classes(labels, names)
        if absent:
            parts.append(f"{split}: {', '.join(absent)}")
    if not parts:
        return f"every class is present in {' and '.join(split_labels)}"
    return "classes absent from " + "; from ".join(parts)


def per_class_recall(confusion: Sequence[Sequence[int]] | np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Recall of each class the confusion matrix [true][predicted] has examples of (absent classes left out)."""
    matrix = np.asarray(confusion, dtype=np.float64)  # [C, C]
    support = matrix.sum(axis=1)  # [C]
    return {names[c]: float(matrix[c, c] / support[c]) for c in range(len(names)) if support[c] > 0}


def per_class_rows(results: Mapping[str, Sequence[Any]], names: Sequence[str]) -> list[dict[str, Any]]:
    """One row per method: recall (%) of each class present in its test set(s), their mean, and the classes absent.

    `results` maps a method to its runs (objects with a `confusion` [true][predicted]); the
    confusion matrices of a method's runs are summed first.
    """
    rows = []
    for method, runs in results.items():
        total = np.sum([np.asarray(r.confusion, dtype=np.int64) for r in runs], axis=0)  # [C, C]
        recall = per_class_recall(total, names)
        row: dict[str, Any] = {"method": method}
        row.update({f"recall {name} %": 100 * value for name, value in recall.items()})
        row["mean recall over present classes %"] = 100 * float(np.mean(list(recall.values()))) if recall else float("nan")
        row["classes absent from the test set"] = ", ".join(n for n in names if n not in recall) or "none"
        rows.append(row)
    return rows
