"""Camelyon16: the loader on fixture folders in the distributed layout, ASAP masks, the split, slide checks."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from slide_fixtures import asap_xml, square, write_camelyon16, write_slide

from data_prep.camelyon16 import (
    Camelyon16,
    SlideRecord,
    annotation_mask,
    check_slides,
    load_camelyon16,
    parse_asap_xml,
    read_reference,
    require_classes,
    train_validation_split,
)
from data_prep.problems import DataProblemWarning, DataSetError
from zoomin_lib.infra.slides import SlideError, open_slide

TUMOUR_XML = asap_xml(
    [
        ("Annotation 0", "_0", "Polygon", square(10, 10, 50, 50)),  # tumour, with a hole
        ("Annotation 1", "_2", "Polygon", square(20, 20, 30, 30)),  # the hole
        ("Annotation 2", "_1", "Polygon", square(60.0, 4.0, 64.0, 12.0)),  # tumour, group _1
        ("Annotation 3", "Tumor", "Polygon", [(70, 40), (90, 40), (70, 60)]),  # tumour, group Tumor (triangle)
        ("Annotation 4", "None", "Polygon", square(0, 60, 20, 80)),  # another group: ignored
        ("Annotation 5", "_0", "Dot", [(5.0, 5.0)]),  # no area: ignored
    ]
)


@pytest.fixture
def xml_path(tmp_path: Path) -> Path:
    """A hand-written ASAP file with the three tumour groups, a `_2` hole and ignored entries."""
    path = tmp_path / "tumor_001.xml"
    path.write_text(TUMOUR_XML)
    return path


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A pristine Camelyon16 tree (copied by tests that damage it)."""
    return write_camelyon16(tmp_path_factory.mktemp("c16") / "camelyon16", normal=3, tumour=2)


def _copy(tree: Path, tmp_path: Path) -> Path:
    """A private copy of the fixture tree."""
    return Path(shutil.copytree(tree, tmp_path / "copy"))


def test_parse_asap_xml(xml_path: Path) -> None:
    """Groups, names, types and vertices (sorted by Order) in level-0 pixels."""
    polygons = parse_asap_xml(xml_path)
    assert [(p.group, p.name, p.type) for p in polygons] == [
        ("_0", "Annotation 0", "Polygon"),
        ("_2", "Annotation 1", "Polygon"),
        ("_1", "Annotation 2", "Polygon"),
        ("Tumor", "Annotation 3", "Polygon"),
        ("None", "Annotation 4", "Polygon"),
        ("_0", "Annotation 5", "Dot"),
    ]
    np.testing.assert_array_equal(polygons[0].coordinates, [[10, 10], [50, 10], [50, 50], [10, 50]])
    assert polygons[0].coordinates.dtype == np.float64 and polygons[5].coordinates.shape == (1, 2)


def test_annotation_mask_equals_hand_drawn_polygons(xml_path: Path) -> None:
    """A square with a square hole (exact pixel counts), a _1 rectangle and a Tumor triangle, at two levels."""
    polygons = parse_asap_xml(xml_path)
    mask = annotation_mask(polygons, (100, 90))  # (w, h) at level 0
    assert mask.shape == (90, 100) and mask.dtype == bool
    square_with_hole = np.zeros((90, 100), bool)
    square_with_hole[10:50, 10:50] = True  # the 40 x 40 pixels whose centres are inside [10, 50]
    square_with_hole[20:30, 20:30] = False
    assert square_with_hole.sum() == 40 * 40 - 10 * 10 == mask[:, :55].sum()
    np.testing.assert_array_equal(mask[:, :55], square_with_hole[:, :55])
    rect = np.zeros((90, 100), bool)
    rect[4:12, 60:64] = True
    np.testing.assert_array_equal(mask[:30, 55:68], rect[:30, 55:68])
    yy, xx = np.mgrid[0:90, 0:100] + 0.5  # pixel centres
    triangle = (xx >= 70) & (yy >= 40) & (xx - 70 + yy - 40 <= 20)
    np.testing.assert_array_equal(mask[:, 68:], triangle[:, 68:])
    assert not mask[60:80, 0:20].any() and not mask[5, 5]  # other groups and dots are not drawn

    half = annotation_mask(polygons, (50, 45), downsample=2)  # level 1 of a 2x pyramid
    expected = np.zeros((45, 50), bool)
    expected[5:25, 5:25] = True
    expected[10:15, 10:15] = False
    assert half[:, :27].sum() == 20 * 20 - 5 * 5
    np.testing.assert_array_equal(half[:, :27], expected[:, :27])
    only_hole_group = annotation_mask(polygons, (100, 90), tumour_groups={"_0"}, hole_groups=())
    assert only_hole_group[10:50, 10:50].all() and only_hole_group.sum() == 1600
    view = annotation_mask(polygons, (25, 30), downsample=(4.0, 3.0))  # a view with unequal ratios
    assert view.shape == (30, 25) and view[4:16, 3:12].sum() > 0


def test_malformed_xml_names_the_file(tmp_path: Path) -> None:
    """Broken XML, a wrong root and a non-numeric coordinate give ValueErrors naming the file."""
    bad = tmp_path / "tumor_009.xml"
    bad.write_text(TUMOUR_XML[:-40])
    with pytest.raises(ValueError, match=f"{bad}: malformed XML"):
        parse_asap_xml(bad)
    bad.write_text("<Annotations/>")
    with pytest.raises(ValueError, match="expected <ASAP_Annotations>"):
        parse_asap_xml(bad)
    bad.write_text(TUMOUR_XML.replace('X="50"', 'X="fifty"', 1))
    with pytest.raises(ValueError, match=rf"{bad}: annotation 'Annotation 0': X='fifty' is not a number"):
        parse_asap_xml(bad)


def test_load_records(tree: Path) -> None:
    """Ids, labels, splits and annotation paths of every slide in the layout."""
    data = load_camelyon16(tree)
    assert data.ids == ["normal_001", "normal_002", "normal_003", "tumor_001", "tumor_002", "test_001", "test_002"]
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1, 0]
    assert [r.split for r in data] == ["train"] * 5 + ["test"] * 2
    assert data[3].annotation == tree / "training/lesion_annotations/tumor_001.xml"
    assert data[0].annotation is None and data[5].annotation is None
    assert len(data.split("test")) == 2 and data.problems == []
    with open_slide(data[3].path) as slide:  # the fixture slides are real pyramids
        mask = annotation_mask(parse_asap_xml(data[3].annotation), slide.level_dimensions[1], slide.level_downsamples[1])
        assert mask.sum() == 20 * 20


def test_reference_csv_with_and_without_extra_columns(tmp_path: Path) -> None:
    """Trailing columns and blank lines are ignored; ids are matched without case; bad labels name file and line."""
    ref = tmp_path / "reference.csv"
    ref.write_text("test_001,Tumor,Macro,Primary\nTest_002,Normal,,\n\ntest_003.tif,normal\n")
    assert read_reference(ref) == {"test_001": 1, "test_002": 0, "test_003": 0}
    ref.write_text("test_001,Tumor\ntest_002,Normal\n")
    assert read_reference(ref) == {"test_001": 1, "test_002": 0}
    ref.write_text("test_001,Tumor\ntest_002,Benign,x\n")
    with pytest.raises(ValueError, match=rf"{ref}:2: unknown label 'Benign'"):
        read_reference(ref)
    ref.write_text("test_001\n")
    with pytest.raises(ValueError, match=rf"{ref}:1: expected"):
        read_reference(ref)


def test_extra_columns_in_the_tree(tmp_path: Path) -> None:
    """A tree whose reference.csv has the real file's extra columns loads the same labels."""
    root = write_camelyon16(tmp_path / "c16", normal=1, tumour=1, extra_columns=True, size=(64, 64))
    assert load_camelyon16(root).split("test").labels.tolist() == [1, 0]


def test_missing_parts_stop_at_once(tree: Path, tmp_path: Path) -> None:
    """A folder not in the layout names everything missing; a missing root says so."""
    root = _copy(tree, tmp_path)
    shutil.rmtree(root / "training/lesion_annotations")
    (root / "testing/reference.csv").unlink()
    with pytest.raises(FileNotFoundError, match="missing training/lesion_annotations, testing/reference.csv"):
        load_camelyon16(root)
    with pytest.raises(FileNotFoundError, match="missing testing/reference.csv; expected"):
        load_camelyon16(root, splits=("test",))  # only the parts of the chosen splits are required
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_camelyon16(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match="missing training/normal"):
        load_camelyon16(root / "training")  # one level too deep


def test_tumour_slide_without_xml(tree: Path, tmp_path: Path) -> None:
    """strict: an error naming the slide; strict=False: reported and skipped."""
    root = _copy(tree, tmp_path)
    (root / "training/lesion_annotations/tumor_002.xml").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_camelyon16(root)
    message = str(info.value)
    assert re.search(r"tumor_002\.tif: tumour slide without its annotation .*tumor_002\.xml \(", message)
    assert "; skipped" not in message and "strict=False" in message  # it stopped: it says how to go on, not "skipped"
    with pytest.warns(DataProblemWarning, match="tumor_002.tif: tumour slide without its annotation"):
        data = load_camelyon16(root, strict=False)
    assert "tumor_002" not in data.ids and len(data) == 6
    assert len(data.problems) == 1 and "tumor_002.tif" in data.problems[0] and data.problems[0].endswith("; skipped")


def test_no_tumour_slide_left_stops_at_once(tree: Path, tmp_path: Path) -> None:
    """Every tumour XML missing: the lenient load stops at once saying the tumour class is gone, listing why."""
    root = _copy(tree, tmp_path)
    for xml in (root / "training/lesion_annotations").glob("*.xml"):
        xml.unlink()
    with pytest.warns(DataProblemWarning):
        with pytest.raises(DataSetError, match=r"no tumour slide among the 3 usable training slides of .*training needs "
                                               r"both normal and tumour slides; skipped on the way:\n .*tumor_001\.tif"):
            load_camelyon16(root, strict=False)
    assert load_camelyon16(root, strict=False, splits=("test",)).ids == ["test_001", "test_002"]
    with pytest.raises(DataSetError, match="no normal slide among the 1 usable slides"):
        require_classes([r for r in load_camelyon16(tree) if r.slide_id == "tumor_001"], "slides")


def test_test_slide_not_in_reference(tree: Path, tmp_path: Path) -> None:
    """A test slide missing from reference.csv is an error naming it (or skipped with strict=False)."""
    root = _copy(tree, tmp_path)
    (root / "testing/reference.csv").write_text("test_001,Tumor\n")
    with pytest.raises(ValueError, match=r"test_002\.tif: not listed in"):
        load_camelyon16(root)
    with pytest.warns(DataProblemWarning, match=r"test_002\.tif: not listed in .*; skipped"):
        assert load_camelyon16(root, strict=False).split("test").ids == ["test_001"]
    assert load_camelyon16(root, splits=("train",)).split("test").ids == []


def test_check_slides_reports_and_goes_on(tree: Path, tmp_path: Path) -> None:
    """A truncated slide and one smaller than a tile are reported; the others pass."""
    root = _copy(tree, tmp_path)
    broken = root / "training/normal/normal_002.tif"
    broken.write_bytes(broken.read_bytes()[:5000])
    small = root / "training/normal/normal_003.tif"
    write_slide(small, 100, 120, seed=9, levels=1)
    data = load_camelyon16(root)
    ok, problems = check_slides(data, tile_size=256)
    assert [r.slide_id for r in ok] == ["normal_001", "tumor_001", "tumor_002", "test_001", "test_002"]
    assert len(problems) == 2
    assert problems[0].startswith(f"{broken}: corrupt/truncated: ")
    assert problems[1] == f"{small}: smaller than one tile (120x100 < 256x256)"
    (root / "training/lesion_annotations/tumor_001.xml").write_text("<ASAP_Annotations><Annotations>")
    ok, problems = check_slides(data.split("train"), tile_size=256)
    assert len(ok) == 2 and any("tumor_001.xml: malformed annotation" in p for p in problems)


def _records(n_normal: int, n_tumour: int) -> Camelyon16:
    """A dataset of records only (no files) for the split."""
    slides = [SlideRecord(f"normal_{i:03d}", Path(f"normal_{i:03d}.tif"), 0, "train", None) for i in range(n_normal)]
    slides += [SlideRecord(f"tumor_{i:03d}", Path(f"tumor_{i:03d}.tif"), 1, "train", None) for i in range(n_tumour)]
    slides += [SlideRecord("test_001", Path("test_001.tif"), 1, "test", None)]
    return Camelyon16(Path("."), slides)


def test_split_is_stratified_and_reproducible() -> None:
    """20% of each label to validation, disjoint, test slides excluded, the same for a seed, different across seeds."""
    data = _records(160, 110)
    train, val = train_validation_split(data, 0.2, seed=0)
    assert (val.labels == 0).sum() == 32 and (val.labels == 1).sum() == 22
    assert len(train) + len(val) == 270 and not set(train.ids) & set(val.ids)
    assert "test_001" not in train.ids + val.ids
    again = train_validation_split(_records(160, 110), 0.2, seed=0)[1]
    assert again.ids == val.ids
    assert train_validation_split(data, 0.2, seed=1)[1].ids != val.ids
    tiny_train, tiny_val = train_validation_split(_records(2, 3), 0.2)
    assert sorted(tiny_val.labels.tolist()) == [0, 1]  # at least one of each label, never all of one
    with pytest.raises(ValueError, match="fraction"):
        train_validation_split(data, 1.0)


def test_truncated_slide_reason_leads_with_the_cause(tree: Path, tmp_path: Path) -> None:
    """A truncated TIFF: the message names the file and says it is truncated or corrupt first, OpenSlide's
    'not a format OpenSlide reads' (if given) after it."""
    data = (tree / "training/normal/normal_001.tif").read_bytes()
    for fraction in (0.02, 0.5, 0.97):
        broken = tmp_path / f"cut_{fraction}.tif"
        broken.write_bytes(data[: int(len(data) * fraction)])
        with pytest.raises(SlideError) as info:
            open_slide(broken)
        message = str(info.value)
        prefix = f"cannot read slide {broken}: "
        assert message.startswith(prefix)
        first = message[len(prefix):].split("; ")[0]
        assert re.search(r"truncated|corrupt|offset", first), message
        assert "not a format OpenSlide reads" not in first
