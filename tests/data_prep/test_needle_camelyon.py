"""NeedleCamelyon (Zoom-In appendix D): ratio rule, per-metastasis cap, balance, splits by metastasis, loader."""

from __future__ import annotations

import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from slide_fixtures import square

from data_prep.camelyon16 import Polygon, annotation_mask, load_camelyon16, parse_asap_xml
from data_prep.needle_camelyon import (
    SPLITS,
    annotation_window,
    assign_splits,
    find_metastases,
    load_needle_camelyon,
    needle_camelyon,
    overlap_groups,
    prepare_needle_camelyon,
    split_counts,
)
from data_prep.synthetic_slides import generate, rebuild
from zoomin_lib.infra.slides import open_slide

SIDE, CROP, PER_METASTASIS, MIN_TISSUE = 4096, 256, 20, 0.5
RATIO = (0.001, 0.01)


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A lossless stand-in in the Camelyon16 layout: 3 + 3 training, 4 test slides of 4096 x 4096, tiny metastases."""
    return generate(tmp_path_factory.mktemp("needle") / "camelyon16", n_train_normal=3, n_train_tumor=3,
                    n_test_normal=2, n_test_tumor=2, side=SIDE, metastasis_radius=(5.0, 13.0),
                    compression="zlib", seed=0)


@pytest.fixture(scope="module")
def prepared(source: Path) -> Path:
    """NeedleCamelyon with 256 x 256 crops (the 1024 crops scaled like the slides), 20 per metastasis."""
    return prepare_needle_camelyon(source, source.parent / "needle", crop=CROP, per_metastasis=PER_METASTASIS,
                                   min_tissue=MIN_TISSUE, seed=0)


@pytest.fixture(scope="module")
def rows(prepared: Path) -> list[dict[str, str]]:
    """The rows of index.csv."""
    with (prepared / "index.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def masks(source: Path) -> dict[str, np.ndarray]:
    """Whole-slide metastasis masks [H, W] of every tumour slide, from annotation_mask (independent of the recipe)."""
    return {r.slide_id: annotation_mask(parse_asap_xml(r.annotation), (SIDE, SIDE))
            for r in load_camelyon16(source) if r.label == 1}


def test_every_positive_crop_obeys_the_ratio_rule(
    rows: list[dict[str, str]], masks: dict[str, np.ndarray], source: Path
) -> None:
    """Ratio = metastasis pixels / crop pixels of the whole-slide mask: in [0.1%, 1%], as recorded; metastasis whole."""
    positives = [r for r in rows if r["label"] == "1"]
    assert positives
    polygons = {}
    for r in positives:
        x, y, s = int(r["x"]), int(r["y"]), int(r["size"])
        assert s == CROP and 0 <= x <= SIDE - s and 0 <= y <= SIDE - s
        ratio = masks[r["slide_id"]][y : y + s, x : x + s].mean()
        assert RATIO[0] <= ratio <= RATIO[1]
        assert ratio == pytest.approx(float(r["ratio"]), abs=1e-8)
        slide_id, index = r["metastasis"].split("/")
        if r["metastasis"] not in polygons:
            record = next(d for d in load_camelyon16(source) if d.slide_id == slide_id)
            polygons[r["metastasis"]] = annotation_mask([parse_asap_xml(record.annotation)[int(index)]], (SIDE, SIDE))
        own = polygons[r["metastasis"]]
        assert own[y : y + s, x : x + s].sum() == own.sum() > 0  # the whole metastasis lies in the crop


def test_at_most_50_crops_per_metastasis_and_distinct(rows: list[dict[str, str]], prepared: Path) -> None:
    """No metastasis gives more than per_metastasis crops, none twice at one place; all metastases are used."""
    per = Counter(r["metastasis"] for r in rows if r["label"] == "1")
    assert max(per.values()) <= PER_METASTASIS and min(per.values()) >= 1
    places = [(r["metastasis"], r["x"], r["y"]) for r in rows if r["label"] == "1"]
    assert len(places) == len(set(places))
    params = load_needle_camelyon(prepared, "train").parameters
    assert params["metastases_with_crops"] == len(per) == params["metastases"]


def test_classes_are_balanced_in_every_split(rows: list[dict[str, str]]) -> None:
    """Each split holds exactly as many negatives as positives."""
    for split in SPLITS:
        labels = Counter(r["label"] for r in rows if r["split"] == split)
        assert labels["1"] == labels["0"] > 0


def test_splits_are_disjoint_by_metastasis_and_60_20_20(rows: list[dict[str, str]]) -> None:
    """A metastasis (and a normal slide) lies in one split; metastases split 60:20:20; no cross-split crops overlap."""
    split_of: dict[str, set[str]] = {}
    for r in rows:
        key = r["metastasis"] if r["label"] == "1" else "slide:" + r["slide_id"]
        split_of.setdefault(key, set()).add(r["split"])
    assert all(len(s) == 1 for s in split_of.values())
    mets = [k for k in split_of if not k.startswith("slide:")]
    counts = [sum(split_of[m] == {s} for m in mets) for s in SPLITS]
    assert counts == split_counts(len(mets))  # every metastasis here is isolated: exact rounded 60:20:20
    normals = [k for k in split_of if k.startswith("slide:")]
    assert all(any(split_of[k] == {s} for k in normals) for s in SPLITS)
    pos = [r for r in rows if r["label"] == "1"]
    for a in pos:
        for b in pos:
            if a["split"] < b["split"] and a["slide_id"] == b["slide_id"]:
                assert abs(int(a["x"]) - int(b["x"])) >= CROP or abs(int(a["y"]) - int(b["y"])) >= CROP


def test_negatives_come_from_tissue_of_normal_slides(rows: list[dict[str, str]], source: Path) -> None:
    """Negatives are from normal slides only and mostly tissue (by the renderer's ground truth, not tissue_mask)."""
    labels = {r.slide_id: r.label for r in load_camelyon16(source)}
    negatives = [r for r in rows if r["label"] == "0"]
    assert {labels[r["slide_id"]] for r in negatives} == {0}
    truths = {}
    fractions = []
    for r in negatives[::7]:
        truth = truths.setdefault(r["slide_id"], rebuild(source, r["slide_id"]))
        fractions.append(truth.tissue(int(r["y"]), int(r["x"]), CROP, CROP).mean())
        assert float(r["tissue"]) >= MIN_TISSUE
    assert min(fractions) > MIN_TISSUE - 0.2 and np.mean(fractions) > MIN_TISSUE


def test_crops_and_masks_are_the_slide_pixels(prepared: Path, source: Path, masks: dict[str, np.ndarray]) -> None:
    """A crop's PNG is read_region of its slide (lossless); a positive's mask PNG is its window of annotation_mask."""
    data = load_needle_camelyon(prepared, "val")
    records = {r.slide_id: r for r in load_camelyon16(source)}
    for i in (0, len(data) - 1):
        row = data.rows[i]
        x, y = int(row["x"]), int(row["y"])
        with open_slide(records[row["slide_id"]].path) as slide:
            np.testing.assert_array_equal(data.image(i), slide.read_region((x, y), 0, (CROP, CROP)))
        expected = np.zeros((CROP, CROP), bool)
        if row["label"] == "1":
            expected = masks[row["slide_id"]][y : y + CROP, x : x + CROP]
        np.testing.assert_array_equal(data.mask(i), expected)


def test_loader_returns_tensors(prepared: Path) -> None:
    """Items are float32 [3, S, S] in [0, 1] with int64 labels; tensors() stacks a split; the source is synthetic."""
    data = load_needle_camelyon(prepared, "test")
    x, y = data[0]
    assert x.shape == (3, CROP, CROP) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert y.dtype == torch.int64 and y.ndim == 0
    xs, ys = data.tensors()
    assert xs.shape == (len(data), 3, CROP, CROP) and ys.tolist() == data.labels.tolist()
    assert ys.float().mean() == 0.5 and data.synthetic
    assert "synthetic stand-in" in (prepared / "README.txt").read_text()
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        load_needle_camelyon(prepared, "valid")
    with pytest.raises(FileNotFoundError, match="index.csv"):
        load_needle_camelyon(prepared / "crops", "train")


def test_same_seed_same_crops(source: Path, tmp_path: Path) -> None:
    """Preparing twice with one seed gives the same index and the same PNG bytes."""
    a = prepare_needle_camelyon(source, tmp_path / "a", crop=CROP, per_metastasis=2, seed=4)
    b = prepare_needle_camelyon(source, tmp_path / "b", crop=CROP, per_metastasis=2, seed=4)
    assert (a / "index.csv").read_bytes() == (b / "index.csv").read_bytes()
    for path in sorted((a / "crops").rglob("*.png"))[:6]:
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()


def test_tumour_slide_without_xml_is_named(source: Path, tmp_path: Path) -> None:
    """A test tumour slide whose XML is missing stops the recipe naming the slide; strict=False skips it."""
    copy = Path(shutil.copytree(source, tmp_path / "copy"))
    tumour_test = next(r for r in load_camelyon16(copy) if r.split == "test" and r.label == 1)
    tumour_test.annotation.unlink()
    expected = f"{tumour_test.slide_id}.tif: tumour slide without its lesion annotation"
    with pytest.raises(FileNotFoundError, match=expected):
        prepare_needle_camelyon(copy, tmp_path / "out", crop=CROP)
    assert not (tmp_path / "out").exists()
    kept = find_metastases(load_camelyon16(copy), strict=False)
    assert kept and tumour_test.slide_id not in {m.slide.slide_id for m in kept}


def test_too_few_normal_slides_or_metastases_are_refused(source: Path) -> None:
    """Negatives split by slide need three normal slides; a 60:20:20 split needs three metastases with crops."""
    data = load_camelyon16(source)
    two_normals = type(data)(data.root, [r for r in data if r.label == 1 or r.slide_id in ("normal_001", "normal_002")])
    with pytest.raises(ValueError, match="2 normal slides"):
        prepare_needle_camelyon(two_normals, source.parent / "never", crop=CROP, per_metastasis=1)
    with pytest.raises(ValueError, match=r"give a 256 x 256 crop with a metastasis ratio in \[0.0000%, 0.0010%\]"):
        prepare_needle_camelyon(data, source.parent / "never", crop=CROP, ratio=(0.0, 0.00001))
    assert not (source.parent / "never").exists()


def test_annotation_window_equals_the_whole_mask() -> None:
    """Windows of annotation_window equal slices of annotation_mask (a hole, a big polygon, a level downsample)."""
    polygons = [
        Polygon("_0", "a", "Polygon", np.array(square(10.3, 12.7, 60.1, 58.9))),
        Polygon("_2", "hole", "Polygon", np.array(square(20, 20, 30.5, 30.5))),
        Polygon("Tumor", "big", "Polygon", np.array([(70.2, 5.1), (190.7, 40.3), (120.4, 150.9)])),
        Polygon("None", "other", "Polygon", np.array(square(0, 0, 200, 200))),
    ]
    for ds in (1.0, 2.0):
        whole = annotation_mask(polygons, (int(200 / ds), int(160 / ds)), ds)
        for x0, y0, w, h in [(0, 0, 100, 80), (15, 18, 9, 7), (60, 30, 40, 50), (5, 3, 2, 2)]:
            window = annotation_window(polygons, x0, y0, w, h, ds)
            np.testing.assert_array_equal(window, whole[y0 : y0 + h, x0 : x0 + w])


def test_split_arithmetic() -> None:
    """split_counts gives the paper's 122 / 41 / 41 of 204 metastases; assign_splits follows the shares; groups join."""
    assert split_counts(204) == [122, 41, 41]
    assert split_counts(10) == [6, 2, 2] and split_counts(3) == [1, 1, 1] and sum(split_counts(7)) == 7
    with pytest.raises(ValueError, match="fractions"):
        split_counts(10, (0.5, 0.5))
    out = assign_splits([1] * 10, (0.6, 0.2, 0.2), np.random.default_rng(0))
    assert Counter(out) == {"train": 6, "val": 2, "test": 2}
    corners = [np.array([[0, 0]]), np.array([[100, 50]]), np.array([[300, 0]]), np.array([[100, 50]])]
    assert overlap_groups(["s", "s", "s", "t"], corners, crop=128) == [0, 0, 1, 2]


def test_crops_at_a_reduced_level(source: Path, tmp_path: Path) -> None:
    """At level 1 the ratio counts level-1 pixels (annotation_mask at downsample 2); crops are level-1 reads."""
    out = prepare_needle_camelyon(source, tmp_path / "level1", crop=CROP // 2, level=1, per_metastasis=3, seed=1)
    data = load_needle_camelyon(out, "train")
    records = {r.slide_id: r for r in load_camelyon16(source)}
    positives = [i for i, r in enumerate(data.rows) if r["label"] == "1"]
    assert positives and all(data.rows[i]["level"] == "1" for i in range(len(data)))
    for i in positives[:6]:
        row = data.rows[i]
        x, y, s = int(row["x"]), int(row["y"]), CROP // 2
        mask = annotation_mask(parse_asap_xml(records[row["slide_id"]].annotation), (SIDE // 2, SIDE // 2), 2.0)
        window = mask[y // 2 : y // 2 + s, x // 2 : x // 2 + s]
        assert RATIO[0] <= window.mean() <= RATIO[1] and window.mean() == pytest.approx(float(row["ratio"]), abs=1e-8)
        with open_slide(records[row["slide_id"]].path) as slide:
            np.testing.assert_array_equal(data.image(i), slide.read_region((x, y), 1, (s, s)))


def test_cached_entry_reuses_the_prepared_folder(source: Path, tmp_path: Path) -> None:
    """needle_camelyon prepares once per (source, parameters) and reuses the folder; other parameters, another folder."""
    first = needle_camelyon(source, "smoke", cache_dir=tmp_path, per_metastasis=1, progress=False)
    stamp = (first / "index.csv").stat().st_mtime_ns
    assert needle_camelyon(source, "smoke", cache_dir=tmp_path, per_metastasis=1, progress=False) == first
    assert (first / "index.csv").stat().st_mtime_ns == stamp
    assert needle_camelyon(source, "smoke", cache_dir=tmp_path, per_metastasis=2, progress=False) != first
    with pytest.raises(ValueError, match="unknown profile"):
        needle_camelyon(source, "huge", cache_dir=tmp_path)
