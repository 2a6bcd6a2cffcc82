"""Chapters 03, 06 and 07 run (smoke profile) on data in the real formats with a class missing and damaged files.

Each test writes a small data set in the chapter's real on-disk format (with the data set's own
stand-in writer), damages it the way real downloads are damaged, runs the chapter with papermill
(`-p data_dir ...`) and checks that it ran to the end, printed each problem naming its file, said
which classes are absent, and wrote its metrics. The kernel imports this checkout (PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import nbformat
import pytest

from data_prep import colon_cancer, fmow, traffic_signs
from data_prep.problems import DataProblemWarning

REPO = Path(__file__).resolve().parents[2]


def _run_chapter(name: str, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """Execute notebooks/<name>.ipynb in the smoke profile on `data_dir`; (all text it printed, its results folder)."""
    import papermill

    results = tmp_path / "results"
    monkeypatch.setenv("ZOOMIN_PROFILE", "smoke")
    monkeypatch.setenv("ZOOMIN_RESULTS", str(results))
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path / "cache"))
    monkeypatch.setenv("PYTHONPATH", str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    out = tmp_path / f"{name}.ipynb"
    papermill.execute_notebook(str(REPO / "notebooks" / f"{name}.ipynb"), str(out),
                               parameters={"profile": "smoke", "data_dir": str(data_dir)},
                               cwd=str(REPO), progress_bar=False, log_output=False, kernel_name="python3")
    nb = nbformat.read(out, as_version=4)
    texts = []
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream":
                texts.append(output.get("text", ""))
            elif "data" in output:
                texts.append(output["data"].get("text/markdown", "") or output["data"].get("text/plain", ""))
    return "\n".join(texts), results / name


def _metrics(results: Path) -> dict:
    return json.loads((results / "metrics.json").read_text())


def test_chapter_03_runs_with_a_nucleus_class_absent_and_damaged_files(tmp_path, monkeypatch):
    """Colon cancer: no `others` annotation anywhere, one truncated .bmp, one garbage epithelial .mat among good ones."""
    root = colon_cancer.write_synthetic(tmp_path / "CRC", n_images=13, size=500, seed=0)
    cls_dir = root / "Classification"
    for mat in cls_dir.glob("img*/img*_others.mat"):
        mat.unlink()  # the "others" nucleus class is absent from the data set
    bmp = cls_dir / "img3" / "img3.bmp"
    bmp.write_bytes(bmp.read_bytes()[: bmp.stat().st_size // 2])
    (cls_dir / "img5" / "img5_epithelial.mat").write_bytes(b"0123456789")
    (root / colon_cancer.MARKER).unlink()  # read as a user's data set, not as the stand-in

    text, results = _run_chapter("03_colon_cancer", root, tmp_path, monkeypatch)

    assert f"problem: {bmp}: not a readable image (OSError: image file is truncated" in text
    assert (f"problem: {cls_dir / 'img5' / 'img5_epithelial.mat'}: not a readable MATLAB file (MatReadError: "
            "Mat file appears to be truncated); img5 skipped") in text
    assert f"problem: {cls_dir / 'img7' / 'img7_others.mat'}: annotation file missing; not needed for the label" in text
    assert "11 images of (500, 500)" in text  # 13 less the two whose image or label file is damaged
    assert "| others | 0 of 11 | absent |" in text and "| epithelial | 11 of 11 | decides the label |" in text
    metrics = _metrics(results)
    assert len(metrics["problems"]) == 2 + 13 - 2  # two skipped images, the others file of each image kept
    assert metrics["annotated_images_per_cell_type"] == {"epithelial": 11, "fibroblast": 11, "inflammatory": 11,
                                                         "others": 0}
    assert set(metrics["summary"]) == {"Zoom-In", "ATS-10", "U-10", "CNN s=0.25"}
    assert (results / "examples.png").is_file() and (results / "attention.png").is_file()


def _drop_class(annotations: Path, name: str) -> int:
    """Remove every line mentioning sign `name` from an annotations.txt; the number removed."""
    lines = annotations.read_text().splitlines()
    kept = [line for line in lines if name not in line]
    annotations.write_text("\n".join(kept) + "\n")
    return len(lines) - len(kept)


def test_chapter_06_runs_with_a_class_absent_and_damaged_files(tmp_path, monkeypatch):
    """Swedish traffic signs: no 80 km/h sign in either set, a truncated JPEG, a bad annotation line, a missing image."""
    root = traffic_signs.write_synthetic(tmp_path / "STS", n_train=16, n_test=8, seed=0)
    (root / traffic_signs.MARKER).unlink()
    set1 = root / "Set1"
    assert _drop_class(set1 / "annotations.txt", "80_SIGN") > 0
    assert _drop_class(root / "Set2" / "annotations.txt", "80_SIGN") > 0
    annotations = set1 / "annotations.txt"
    with annotations.open("a") as fh:
        fh.write("broken.jpg:VISIBLE, 1, 2, 3, PROHIBITORY, 50_SIGN;\n")  # six fields
        fh.write("absent.jpg:MISC_SIGNS;\n")
    with pytest.warns(DataProblemWarning, match="broken.jpg"):
        lines = traffic_signs.parse_annotations(annotations, [])
    cut = set1 / next(a.file for a in lines if traffic_signs.speed_limit_label(a) is not None and (set1 / a.file).is_file())
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    text, results = _run_chapter("06_traffic_signs", root, tmp_path, monkeypatch)

    assert f"problem: {cut}: not a readable image (OSError: image file is truncated" in text
    assert f"problem: {annotations}, line " in text and "expected 7 comma-separated fields" in text
    assert f"problem: {set1 / 'absent.jpg'}: image named in {annotations} is missing; skipped" in text
    assert "classes absent from train: 80_SIGN" in text
    metrics = _metrics(results)
    assert len(metrics["problems"]) == 3
    assert "80_SIGN" in metrics["classes_absent"]
    for row in metrics["per_class"]:
        assert "recall 80_SIGN %" not in row and "80_SIGN" in row["classes absent from the test set"]
    assert (results / "examples.png").is_file()


def test_chapter_07_runs_with_3_of_10_categories_and_damaged_files(tmp_path, monkeypatch):
    """fMoW: 3 of the 10 categories, a JSON without bounding_boxes, one without gsd, a truncated JPEG."""
    root = fmow.write_synthetic(tmp_path / "fmow-rgb", n_train_per_class=2, n_test_per_class=1, min_size=500,
                                max_size=600, seed=0)
    (root / fmow.MARKER).unlink()
    kept = ("airport", "barn", "crop_field")
    for split in ("train", "val"):
        for category in fmow.CATEGORIES:
            if category not in kept:
                shutil.rmtree(root / split / category)
    train = root / "train"
    no_boxes = train / "airport" / "airport_1" / "airport_1_0_rgb.json"
    meta = json.loads(no_boxes.read_text())
    del meta["bounding_boxes"]
    no_boxes.write_text(json.dumps(meta))
    no_gsd = train / "barn" / "barn_1" / "barn_1_0_rgb.json"
    meta = json.loads(no_gsd.read_text())
    del meta["gsd"]
    no_gsd.write_text(json.dumps(meta))
    cut = train / "crop_field" / "crop_field_1" / "crop_field_1_0_rgb.jpg"
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])

    text, results = _run_chapter("07_fmow", root, tmp_path, monkeypatch)

    assert f"problem: {no_boxes}: missing key(s) bounding_boxes; skipped" in text
    assert f"problem: {no_gsd}: missing key gsd (not needed for the label); gsd left as NaN" in text
    assert f"problem: {cut}: not a readable image (OSError: image file is truncated" in text
    absent = [c for c in fmow.CATEGORIES if c not in kept]
    assert f"classes absent from train: {', '.join(absent)}" in text
    metrics = _metrics(results)
    assert len(metrics["problems"]) == 3
    for row in metrics["per_class"]:
        assert {k for k in row if k.startswith("recall ")} <= {f"recall {c} %" for c in kept}
    assert (results / "examples.png").is_file()
