"""Tests of data_prep.traffic_signs: the STS annotation grammar, the ATS speed-limit subset rules, lazy
loading on hand-written fixtures in the real layout, and the synthetic stand-in read back by the same loader."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from data_prep.problems import DataFileError, DataProblemWarning, DataSetError
from data_prep.traffic_signs import (
    CLASS_WEIGHTS,
    CLASSES,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MARKER,
    SYNTHETIC_NOTE,
    ImageAnnotation,
    Sign,
    default_dataset,
    load_traffic_signs,
    parse_annotations,
    parse_line,
    speed_limit_label,
    speed_limit_signs,
    synthetic_class_counts,
    write_synthetic,
)

GRAMMAR = """\
a.jpg:VISIBLE, 1028.64, 357.34, 1008.11, 328.95, PROHIBITORY, 70_SIGN;MISC_SIGNS;

b.jpg:
c.jpg:MISC_SIGNS;
d.jpg:BLURRED, 20, 30, 10, 12, MANDATORY, PASS_RIGHT_SIDE; SIDE_ROAD, 40.5, 50, 30, 41, WARNING, OTHER;\r
e.jpg:OCCLUDED, 1024.5l, 600, 1000, 580, INFORMATION, PEDESTRIAN_CROSSING;VISIBLE, 9, 9, 1, 1, OTHER, GIVE_WAY;MISC_SIGNS;

"""


def sign(visibility: str, x0: float, y0: float, x1: float, y1: float, name: str = "50_SIGN") -> Sign:
    """A Sign from its (upper-left, lower-right) corners."""
    return Sign(visibility, (x1, y1), (x0, y0), "PROHIBITORY", name)


def line(*signs: Sign, misc: int = 0) -> ImageAnnotation:
    """An annotation line holding `signs`."""
    return ImageAnnotation("x.jpg", tuple(signs), misc)


def write_set(root: Path, set_name: str, text: str, images: dict[str, np.ndarray]) -> Path:
    """Write `<root>/<set_name>/annotations.txt` and the given images as JPEG; returns the set folder."""
    folder = root / set_name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "annotations.txt").write_text(text)
    for name, array in images.items():
        Image.fromarray(array).save(folder / name, "JPEG", quality=100)
    return folder


def smooth_image(seed: int, h: int = 24, w: int = 32) -> np.ndarray:
    """A smooth uint8 [h, w, 3] image (JPEG keeps it within a few grey levels)."""
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.random.default_rng(seed).uniform(40, 200, 3)
    return np.clip(base + 30 * np.sin(yy / 6.0)[..., None] + 20 * np.cos(xx / 7.0)[..., None], 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------- the grammar


def test_grammar_every_visibility_type_misc_empty_and_stray(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text(GRAMMAR)
    anns = parse_annotations(path)
    assert [a.file for a in anns] == ["a.jpg", "b.jpg", "c.jpg", "d.jpg", "e.jpg"]  # empty lines skipped
    a, b, c, d, e = anns
    assert a.signs == (Sign("VISIBLE", (1028.64, 357.34), (1008.11, 328.95), "PROHIBITORY", "70_SIGN"),)
    assert a.misc_signs == 1
    assert b.signs == () and b.misc_signs == 0
    assert c.signs == () and c.misc_signs == 1
    assert [(s.visibility, s.type, s.name) for s in d.signs] == [
        ("BLURRED", "MANDATORY", "PASS_RIGHT_SIDE"), ("SIDE_ROAD", "WARNING", "OTHER")]
    assert d.signs[1].lower_right == (40.5, 50.0) and d.signs[1].upper_left == (30.0, 41.0)
    assert e.signs[0].lower_right == (1024.5, 600.0)  # the stray 'l' is tolerated
    assert [(s.visibility, s.type) for s in e.signs] == [("OCCLUDED", "INFORMATION"), ("VISIBLE", "OTHER")]
    assert e.misc_signs == 1


def test_box_is_ordered_and_area_positive() -> None:
    s = parse_line("f.jpg:VISIBLE, 110, 60, 100, 40, PROHIBITORY, 80_SIGN;").signs[0]
    assert s.box == (100.0, 40.0, 110.0, 60.0) and s.area == 200.0


@pytest.mark.parametrize("bad", [
    "no colon here",
    "f.jpg:VISIBLE, 1, 2, 3, PROHIBITORY, 50_SIGN;",  # six fields
    "f.jpg:INVISIBLE, 1, 2, 3, 4, PROHIBITORY, 50_SIGN;",
    "f.jpg:VISIBLE, 1x2, 2, 3, 4, PROHIBITORY, 50_SIGN;",
    "f.jpg:VISIBLE, 10.5ll, 2, 3, 4, PROHIBITORY, 50_SIGN;",  # two stray characters
    "f.jpg:VISIBLE, 1, 2, 3, 4, , 50_SIGN;",
])
def test_malformed_line_names_file_and_line(tmp_path: Path, bad: str) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text(f"a.jpg:\n\n{bad}\nb.jpg:\n")
    with pytest.raises(ValueError) as info:
        parse_annotations(path)
    message = str(info.value)
    assert str(path) in message and "line 3" in message and bad in message


# ------------------------------------------------------------------------------- the subset rules


def test_no_entries_is_empty() -> None:
    assert speed_limit_label(parse_line("f.jpg:")) == 0


def test_only_misc_signs_is_empty() -> None:
    assert speed_limit_label(parse_line("f.jpg:MISC_SIGNS;MISC_SIGNS;")) == 0


def test_dropped_when_no_speed_sign_remains() -> None:
    others = line(sign("VISIBLE", 0, 0, 30, 30, "30_SIGN"), sign("VISIBLE", 0, 0, 30, 30, "GIVE_WAY"), misc=1)
    assert speed_limit_signs(others) == () and speed_limit_label(others) is None


def test_sorted_by_visibility_then_area() -> None:
    small_visible = sign("VISIBLE", 0, 0, 10, 10, "80_SIGN")
    big_visible = sign("VISIBLE", 0, 0, 20, 20, "70_SIGN")
    huge_blurred = sign("BLURRED", 0, 0, 90, 90, "50_SIGN")
    occluded = sign("OCCLUDED", 0, 0, 95, 95, "50_SIGN")
    side = sign("SIDE_ROAD", 0, 0, 5, 5, "80_SIGN")
    other = sign("VISIBLE", 0, 0, 99, 99, "PEDESTRIAN_CROSSING")
    ann = line(occluded, side, small_visible, other, huge_blurred, big_visible)
    assert speed_limit_signs(ann) == (big_visible, small_visible, huge_blurred, side, occluded)
    assert speed_limit_label(ann) == CLASSES.index("70_SIGN")


def test_dropped_when_first_is_not_visible() -> None:
    ann = line(sign("BLURRED", 0, 0, 40, 40, "50_SIGN"), sign("OCCLUDED", 0, 0, 50, 50, "70_SIGN"),
               sign("VISIBLE", 0, 0, 60, 60, "NO_PARKING"))
    assert speed_limit_label(ann) is None


def test_class_weights_are_zoom_in_appendix_g() -> None:
    assert CLASSES == ("EMPTY", "50_SIGN", "70_SIGN", "80_SIGN")
    assert CLASS_WEIGHTS == (0.1843, 2.3639, 1.5183, 3.1653)


# ------------------------------------------------------------------------------- the loader

SET1 = """\
img0.jpg:
img1.jpg:MISC_SIGNS;VISIBLE, 30, 20, 10, 4, PROHIBITORY, 80_SIGN;VISIBLE, 31, 21, 1, 1, PROHIBITORY, 30_SIGN;
img2.jpg:VISIBLE, 30, 20, 10, 4, WARNING, OTHER;
img3.jpg:BLURRED, 30, 20, 10, 4, PROHIBITORY, 50_SIGN;
img4.jpg:MISC_SIGNS;
"""
SET2 = "t0.jpg:VISIBLE, 20, 20, 4, 4, PROHIBITORY, 50_SIGN;OCCLUDED, 30, 22, 0, 0, PROHIBITORY, 70_SIGN;\n"


@pytest.fixture
def real_root(tmp_path: Path) -> Path:
    """A tiny dataset in the STS layout: Set1 (two images dropped by the rules), Set2 with one image."""
    write_set(tmp_path, "Set1", SET1, {f"img{i}.jpg": smooth_image(i) for i in range(5)})
    write_set(tmp_path, "Set2", SET2, {"t0.jpg": smooth_image(9)})
    return tmp_path


def test_load_splits_labels_and_kept_signs(real_root: Path) -> None:
    train, test = load_traffic_signs(real_root, "train"), load_traffic_signs(real_root, "test")
    assert [s.path.name for s in train.samples] == ["img0.jpg", "img1.jpg", "img4.jpg"]
    assert train.labels.tolist() == [0, 3, 0] and train.dropped == 2 and not train.synthetic
    assert [s.name for s in train.samples[1].signs] == ["80_SIGN"]  # the 30 sign is not kept
    assert train.samples[1].signs[0].box == (10.0, 4.0, 30.0, 20.0)
    assert train.roi_boxes(1) == [(10.0, 4.0, 30.0, 20.0)] and train.roi_boxes(0) == []  # the label's sign; EMPTY: none
    assert train.class_counts() == {"EMPTY": 2, "50_SIGN": 0, "70_SIGN": 0, "80_SIGN": 1}
    assert len(test) == 1 and test.labels.tolist() == [1]
    assert [s.visibility for s in test.samples[0].signs] == ["VISIBLE", "OCCLUDED"]


def test_missing_image_is_reported_and_skipped(real_root: Path) -> None:
    (real_root / "Set1" / "img1.jpg").unlink()
    with pytest.warns(UserWarning, match="img1.jpg"):
        train = load_traffic_signs(real_root, "train")
    assert train.missing == ("img1.jpg",) and train.n_missing == 1
    assert [s.path.name for s in train.samples] == ["img0.jpg", "img4.jpg"]


def test_reading_is_lazy_and_returns_the_written_array(real_root: Path) -> None:
    train = load_traffic_signs(real_root, "train")
    (real_root / "Set1" / "img4.jpg").write_bytes(b"not a jpeg")  # damaged after loading: not read until asked for
    image = train.read_image(1)
    assert image.dtype == np.uint8 and image.shape == (24, 32, 3)
    diff = np.abs(image.astype(int) - smooth_image(1).astype(int))
    assert diff.max() <= 8 and diff.mean() < 1.5
    with pytest.raises(DataFileError, match=f"{real_root / 'Set1' / 'img4.jpg'}: not a readable image"):
        train.read_image(2)


def test_load_batch_shape_range_and_scale(real_root: Path) -> None:
    train = load_traffic_signs(real_root, "train")
    full = train.load_batch([0, 1])
    assert full.shape == (2, 3, 24, 32) and full.dtype == torch.float32
    assert torch.equal(full[1], torch.from_numpy(train.read_image(1)).permute(2, 0, 1).float() / 255)
    half = train.load_batch([1], scale=0.5)
    assert half.shape == (1, 3, 12, 16) and 0 <= half.min() and half.max() <= 1
    assert torch.allclose(half.mean(), full[1].mean(), atol=0.02)


def test_images_found_in_set_part_subfolder(tmp_path: Path) -> None:
    write_set(tmp_path, "Set1", "p.jpg:\n", {})
    write_set(tmp_path / "Set1", "Set1Part0", "", {"p.jpg": smooth_image(3)})
    train = load_traffic_signs(tmp_path, "train")
    assert train.samples[0].path == tmp_path / "Set1" / "Set1Part0" / "p.jpg"


def test_layout_errors_say_what_is_expected(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="Set1/annotations.txt"):
        load_traffic_signs(tmp_path, "train")
    with pytest.raises(FileNotFoundError, match="Set1/annotations.txt"):
        load_traffic_signs(tmp_path / "absent", "train")
    with pytest.raises(ValueError, match="train, test"):
        load_traffic_signs(tmp_path, "validation")


# ------------------------------------------------------------------------------- the synthetic stand-in

N_TRAIN, N_TEST = 24, 6


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic stand-in, written once for the module."""
    return write_synthetic(tmp_path_factory.mktemp("sts") / "synthetic", N_TRAIN, N_TEST, seed=3)


def is_red(pixels: np.ndarray) -> np.ndarray:
    """Mask of sign-red pixels (saturated red, unlike brick or falu-red walls) in uint8 [..., 3]."""
    r, g, b = (pixels[..., k].astype(int) for k in range(3))
    return (r > 80) & (r > 3.5 * g) & (r > 3.5 * b)


def looks_like_ring(crop: np.ndarray) -> bool:
    """True when a red ring fills a box crop [h, w, 3]: red near all four sides, none in the centre."""
    red = is_red(crop)
    h, w = red.shape
    q = max(1, h // 4)
    sides = red[:q].any() and red[-q:].any() and red[:, :q].any() and red[:, -q:].any()
    centre = red[int(0.4 * h):int(0.6 * h), int(0.4 * w):int(0.6 * w)]
    return bool(sides and not centre.any() and red.mean() > 0.05)


def test_synthetic_is_read_by_the_same_loader(synthetic_root: Path) -> None:
    marker = (synthetic_root / MARKER).read_text()
    assert SYNTHETIC_NOTE in marker and '"n_train": 24' in marker and '"seed": 3' in marker
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        ds = load_traffic_signs(synthetic_root, split)
        assert ds.synthetic and len(ds) == n and ds.n_missing == 0
        assert ds.dropped == math.ceil(0.1 * n)  # the extra lines written for the drop rules
        assert ds.class_counts() == dict(zip(CLASSES, synthetic_class_counts(n)))


def test_synthetic_label_distribution_is_like_the_real_subset() -> None:
    empty, c50, c70, c80 = synthetic_class_counts(1000)
    assert empty > 500 and empty > c70 > c50 > c80 > 50
    for n in (0, 1, 7, 24, 101):
        assert sum(synthetic_class_counts(n)) == n


def test_synthetic_images_and_boxes(synthetic_root: Path) -> None:
    ds = load_traffic_signs(synthetic_root, "train")
    for folder in ("Set1", "Set2"):
        for ann in parse_annotations(synthetic_root / folder / "annotations.txt"):
            for s in ann.signs:
                x0, y0, x1, y1 = s.box
                assert 0 <= x0 < x1 <= IMAGE_WIDTH and 0 <= y0 < y1 <= IMAGE_HEIGHT
                assert 10 <= y1 - y0 <= 70
    for i, sample in enumerate(ds.samples):
        image = ds.read_image(i)
        assert image.shape == (IMAGE_HEIGHT, IMAGE_WIDTH, 3) and image.dtype == np.uint8
        if sample.label:  # the labelled sign is drawn where its box says
            x0, y0, x1, y1 = (round(v) for v in sample.signs[0].box)
            assert looks_like_ring(image[y0:y1, x0:x1])
            half = (x1 - x0) // 2
            assert not looks_like_ring(image[y0:y1, x0 + half:x1 + half])  # a box half a sign off would fail


def test_synthetic_annotations_exercise_every_rule(synthetic_root: Path) -> None:
    text = (synthetic_root / "Set1" / "annotations.txt").read_text()
    anns = parse_annotations(synthetic_root / "Set1" / "annotations.txt")
    signs = [s for a in anns for s in a.signs]
    assert any(a.misc_signs and not a.signs for a in anns) and any(a.misc_signs and a.signs for a in anns)
    assert any(not a.signs and not a.misc_signs for a in anns) and re.search(r"^\S+:$", text, re.M)
    assert {"BLURRED", "OCCLUDED", "SIDE_ROAD"} <= {s.visibility for s in signs if s.name in CLASSES}
    assert any(s.type == "PROHIBITORY" and s.name not in CLASSES for s in signs)
    assert any(s.type != "PROHIBITORY" for s in signs)
    assert re.search(r"\d[a-z], ", text)  # a stray trailing character on a number
    assert any(len([s for s in a.signs if s.visibility == "VISIBLE" and s.name in CLASSES]) == 2 for a in anns)
    assert any(speed_limit_label(a) is None for a in anns)


def test_synthetic_same_seed_gives_identical_files(tmp_path: Path) -> None:
    roots = [write_synthetic(tmp_path / name, 3, 1, seed=seed) for name, seed in (("a", 5), ("b", 5), ("c", 6))]
    files = [sorted(p.relative_to(r) for p in r.rglob("*") if p.is_file()) for r in roots]
    assert files[0] == files[1] == files[2]
    assert all((roots[0] / f).read_bytes() == (roots[1] / f).read_bytes() for f in files[0])
    assert (roots[0] / "Set1" / "annotations.txt").read_bytes() != (roots[2] / "Set1" / "annotations.txt").read_bytes()


def test_default_dataset_is_written_once_per_parameters(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    root = default_dataset(2, 1, seed=0)
    assert root.parent == tmp_path / "traffic_signs_synthetic" and (root / MARKER).is_file()
    stamp = (root / "Set1" / "annotations.txt").stat().st_mtime_ns
    assert default_dataset(2, 1, seed=0) == root
    assert (root / "Set1" / "annotations.txt").stat().st_mtime_ns == stamp  # cached, not regenerated
    other = default_dataset(3, 1, seed=0)  # other parameters: another folder beside it
    assert len(load_traffic_signs(other, "train")) == 3 and '"n_train": 3' in (other / MARKER).read_text()


# ------------------------------------------------------------------------------- damaged downloads (issue 19)


def test_damaged_split_loads_everything_usable_and_names_each_problem(tmp_path: Path) -> None:
    """A bad annotation line, a missing image, a truncated and a garbage JPEG: each reported naming file and problem, skipped."""
    text = (
        "g0.jpg:\n"
        "g1.jpg:VISIBLE, 30, 20, 10, 4, PROHIBITORY, 70_SIGN;\n"
        "bad.jpg:VISIBLE, 30, 20, 10, PROHIBITORY, 50_SIGN;\n"  # six fields
        "gone.jpg:MISC_SIGNS;\n"
        "cut.jpg:VISIBLE, 30, 20, 10, 4, PROHIBITORY, 50_SIGN;\n"
        "junk.jpg:\n"
        "g2.jpg:MISC_SIGNS;\n"
    )
    folder = write_set(tmp_path, "Set1", text, {name: smooth_image(i, 96, 128) for i, name in
                                                enumerate(["g0.jpg", "g1.jpg", "bad.jpg", "cut.jpg", "g2.jpg"])})
    data = (folder / "cut.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 2])
    (folder / "junk.jpg").write_bytes(b"0123456789")
    with pytest.warns(DataProblemWarning) as caught:
        train = load_traffic_signs(tmp_path, "train")
    assert [s.path.name for s in train.samples] == ["g0.jpg", "g1.jpg", "g2.jpg"]
    assert train.labels.tolist() == [0, 2, 0] and train.missing == ("gone.jpg",)
    assert train.absent_classes() == ["50_SIGN", "80_SIGN"]
    assert [str(w.message) for w in caught] == train.problems and len(train.problems) == 4
    annotations = folder / "annotations.txt"
    bad_line, gone, cut, junk = train.problems
    assert bad_line.startswith(f"{annotations}, line 3: expected 7 comma-separated fields") and "line skipped" in bad_line
    assert gone == f"{folder / 'gone.jpg'}: image named in {annotations} is missing; skipped"
    assert cut.startswith(f"{folder / 'cut.jpg'}: not a readable image (OSError: image file is truncated")
    assert junk.startswith(f"{folder / 'junk.jpg'}: not a readable image (UnidentifiedImageError")
    assert all(np.asarray(train.read_image(i)).shape == (96, 128, 3) for i in range(3))  # the rest reads


def test_split_with_nothing_usable_stops_with_one_message(tmp_path: Path) -> None:
    """Every image missing or unreadable: one DataSetError naming the annotations file and listing the problems."""
    folder = write_set(tmp_path, "Set2", "a.jpg:\nb.jpg:MISC_SIGNS;\n", {})
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    with pytest.warns(DataProblemWarning):
        with pytest.raises(DataSetError, match=r"Set2/annotations.txt: no usable image \(2 readable lines, 0 dropped"
                                               r"(.|\n)*a.jpg: image named in"):
            load_traffic_signs(tmp_path, "test")
    (folder / "annotations.txt").write_text("")  # an empty annotations file: nothing usable either
    with pytest.raises(DataSetError, match="no usable image"):
        load_traffic_signs(tmp_path, "test")


def test_parse_annotations_reports_instead_of_raising_when_asked(tmp_path: Path) -> None:
    path = tmp_path / "annotations.txt"
    path.write_text("a.jpg:\nb.jpg:VISIBLE, 1, 2;\nc.jpg:MISC_SIGNS;\n")
    problems: list[str] = []
    with pytest.warns(DataProblemWarning, match="line 2"):
        lines = parse_annotations(path, problems)
    assert [a.file for a in lines] == ["a.jpg", "c.jpg"] and len(problems) == 1
