"""Tests of data_prep.fmow: the fMoW-rgb format on fixture folders, the per-class subset, the synthetic stand-in."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_prep import fmow
from data_prep.fmow import (
    CATEGORIES,
    MARKER,
    MARKER_TEXT,
    default_dataset,
    load_fmow,
    parse_metadata,
    read_marker,
    render_scene,
    select_per_class,
    write_synthetic,
)
from data_prep.problems import DataFileError, DataProblemWarning, DataSetError


def write_image(stem: Path, size: tuple[int, int], meta: dict | str | None, suffix: str = "_rgb") -> Path:
    """Write `<stem><suffix>.jpg` of size (width, height) and its .json unless meta is None (a str goes verbatim)."""
    stem.parent.mkdir(parents=True, exist_ok=True)
    jpg = stem.parent / f"{stem.name}{suffix}.jpg"
    colour = tuple(int(v) for v in np.random.default_rng(len(str(stem))).integers(0, 255, 3))
    Image.new("RGB", size, colour).save(jpg, quality=90)
    if meta is not None:
        text = meta if isinstance(meta, str) else json.dumps(meta, indent=1)
        jpg.with_suffix(".json").write_text(text)
    return jpg


def meta(category: str, size: tuple[int, int], boxes: list[list[int]], as_dict: bool = False) -> dict:
    """An fMoW-schema JSON object (bounding_boxes a list, or a single dict when as_dict)."""
    entries = [{"box": b, "category": category, "ID": 7 + k, "raw_location": "POLYGON ((0 0, 1 0, 1 1, 0 0))"}
               for k, b in enumerate(boxes)]
    return {
        "bounding_boxes": entries[0] if as_dict else entries,
        "gsd": 0.5,
        "img_width": size[0],
        "img_height": size[1],
        "timestamp": "2015-06-01T10:00:00Z",
        "cloud_cover": 0,
    }


def instance(split_dir: Path, category: str, i: int, k: int) -> Path:
    """The stem `<split>/<category>/<category>_<i>/<category>_<i>_<k>` (without the _rgb suffix)."""
    return split_dir / category / f"{category}_{i}" / f"{category}_{i}_{k}"


@pytest.fixture
def real_root(tmp_path: Path) -> Path:
    """A tiny fMoW-rgb tree: two classes of the subset, one outside it, msrgb files, and three broken pairs."""
    root = tmp_path / "fmow-rgb"
    train, val = root / "train", root / "val"
    write_image(instance(train, "airport", 0, 0), (40, 30), meta("airport", (40, 30), [[2, 3, 20, 10]]))
    write_image(instance(train, "airport", 0, 1), (44, 32), meta("airport", (44, 32), [[1, 1, 5, 6]], as_dict=True))
    write_image(instance(train, "airport", 0, 1), (11, 8), meta("airport", (11, 8), [[0, 0, 1, 1]]), suffix="_msrgb")
    write_image(instance(train, "barn", 3, 0), (36, 48), meta("barn", (36, 48), [[4, 5, 6, 7], [10, 11, 3, 2]]))
    write_image(instance(train, "zoo", 0, 0), (30, 30), meta("zoo", (30, 30), [[0, 0, 5, 5]]))  # not in the subset
    write_image(instance(train, "airport", 1, 0), (30, 30), None)  # jpg without json
    no_jpg = instance(train, "crop_field", 2, 0)
    no_jpg.parent.mkdir(parents=True)
    (no_jpg.parent / f"{no_jpg.name}_rgb.json").write_text(json.dumps(meta("crop_field", (9, 9), [[0, 0, 1, 1]])))
    write_image(instance(train, "barn", 4, 0), (30, 30), '{\n  "gsd": 0.5,\n  "img_width": 30,\n  oops\n}')
    write_image(instance(val, "crop_field", 0, 0), (50, 40), meta("crop_field", (50, 40), [[10, 10, 20, 15]]))
    write_image(instance(val, "zoo", 1, 0), (30, 30), meta("zoo", (30, 30), [[0, 0, 5, 5]]))
    return root


def load_quietly(root: Path, split: str, **kwargs) -> fmow.FMoW:
    """load_fmow with its warnings suppressed."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return load_fmow(root, split, **kwargs)


def test_parse_metadata_list_and_dict_boxes(real_root: Path) -> None:
    """Both list and single-dict bounding_boxes parse to an int [M, 4] array beside the jpg path."""
    listed = parse_metadata(real_root / "train/barn/barn_3/barn_3_0_rgb.json")
    assert listed.boxes.dtype == np.int64 and listed.boxes.tolist() == [[4, 5, 6, 7], [10, 11, 3, 2]]
    assert listed.path == real_root / "train/barn/barn_3/barn_3_0_rgb.jpg"
    assert (listed.category, listed.width, listed.height, listed.gsd) == ("barn", 36, 48, 0.5)
    single = parse_metadata(real_root / "train/airport/airport_0/airport_0_1_rgb.json")
    assert single.boxes.shape == (1, 4) and single.boxes.tolist() == [[1, 1, 5, 6]]
    assert single.box_categories == ("airport",)


def test_parse_metadata_malformed_json_names_file_and_line(real_root: Path) -> None:
    """A syntax error is a ValueError naming the file and the line of the error."""
    path = real_root / "train/barn/barn_4/barn_4_0_rgb.json"
    with pytest.raises(ValueError, match=r"barn_4_0_rgb\.json.*line 4"):
        parse_metadata(path)


GOOD_BOX = {"box": [0, 0, 1, 1], "category": "barn"}
SIZE = {"img_width": 5, "img_height": 5}


@pytest.mark.parametrize(
    "broken, message",
    [
        ({"gsd": 1.0, **SIZE}, "missing key.*bounding_boxes"),
        ({"bounding_boxes": [GOOD_BOX], **SIZE}, "missing key.*gsd"),
        ({"bounding_boxes": [{"box": [0, 0, 1], "category": "barn"}], "gsd": 1, **SIZE}, "box"),
        ({"bounding_boxes": [{"box": [0, 0, 1, 1]}], "gsd": 1, **SIZE}, "category"),
        ({"bounding_boxes": [], "gsd": 1, **SIZE}, "bounding_boxes"),
        ({"bounding_boxes": GOOD_BOX, "gsd": 1, **SIZE, "img_width": 0}, "img_width"),
    ],
)
def test_parse_metadata_missing_or_bad_keys_name_file(tmp_path: Path, broken: dict, message: str) -> None:
    """Missing keys and malformed boxes raise ValueError naming the file and the problem."""
    path = tmp_path / "x_0_0_rgb.json"
    path.write_text(json.dumps(broken))
    with pytest.raises(ValueError, match=rf"x_0_0_rgb\.json.*{message}"):
        parse_metadata(path)


def test_load_filters_categories_and_labels(real_root: Path) -> None:
    """Only the subset's categories are kept, labelled by their index in CATEGORIES; msrgb files are ignored."""
    train = load_quietly(real_root, "train")
    names = sorted(p.name for p in train.paths)
    assert names == ["airport_0_0_rgb.jpg", "airport_0_1_rgb.jpg", "barn_3_0_rgb.jpg"]
    assert [CATEGORIES[label] for label in train.labels] == ["airport", "airport", "barn"]
    assert train.labels.dtype == np.int64 and not train.synthetic
    assert train.sizes.tolist() == [[30, 40], [32, 44], [48, 36]]  # (height, width)
    assert [b.shape for b in train.boxes] == [(1, 4), (1, 4), (2, 4)]
    assert train.roi_boxes(2) == [(4, 5, 10, 12), (10, 11, 13, 13)]  # (x, y, w, h) -> (x0, y0, x1, y1)


def test_load_warns_and_skips_unpaired_and_malformed(real_root: Path) -> None:
    """A jpg without json, a json without jpg and a malformed json are each reported by name and skipped."""
    with pytest.warns(UserWarning) as record:
        train = load_fmow(real_root, "train")
    text = "\n".join(str(w.message) for w in record)
    assert "airport_1_0_rgb.jpg: no .json beside it" in text
    assert "crop_field_2_0_rgb.json: no .jpg beside it" in text
    assert "barn_4_0_rgb.json" in text and "line 4" in text
    assert len(train) == 3 and train.problems == [str(w.message) for w in record]


def test_read_image_is_lazy_uint8(real_root: Path) -> None:
    """read_image decodes one image as uint8 [H, W, 3] of the size the metadata gives."""
    train = load_quietly(real_root, "train")
    for i in range(len(train)):
        image = train.read_image(i)
        assert image.dtype == np.uint8 and image.shape == (*train.sizes[i], 3)
    image, label = train[2]
    assert image.shape == (48, 36, 3) and label == CATEGORIES.index("barn")


def test_test_split_is_the_val_folder(real_root: Path) -> None:
    """split "test" reads val/, filtered the same way."""
    test = load_quietly(real_root, "test")
    assert [p.name for p in test.paths] == ["crop_field_0_0_rgb.jpg"]
    assert test.labels.tolist() == [CATEGORIES.index("crop_field")] and test.split == "test"


def test_missing_train_folder_explains_layout(tmp_path: Path) -> None:
    """A root without train/ names the expected layout; an unknown split is refused."""
    with pytest.raises(FileNotFoundError, match=r"no train/ folder.*<category>_<id>_<k>_rgb\.jpg"):
        load_fmow(tmp_path, "train")
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no val/ folder"):
        load_fmow(tmp_path, "test")
    with pytest.raises(ValueError, match="split"):
        load_fmow(tmp_path, "val")


@pytest.fixture
def many_root(tmp_path: Path) -> Path:
    """12 airport images (4 locations x 3 views), 8 aquaculture and 3 barn images."""
    root = tmp_path / "many"
    for category, n_loc, n_views in (("airport", 4, 3), ("aquaculture", 8, 1), ("barn", 3, 1)):
        for i in range(n_loc):
            for k in range(n_views):
                write_image(instance(root / "train", category, i, k), (8, 8), meta(category, (8, 8), [[0, 0, 2, 2]]))
    (root / "val").mkdir()
    return root


def test_per_class_selection_reproducible_by_seed(many_root: Path) -> None:
    """per_class picks that many per class, the same for the same seed; a short class keeps all with a warning."""
    with pytest.warns(UserWarning, match="barn has 3 images, fewer than per_class=5"):
        a = load_fmow(many_root, "train", per_class=5, seed=3)
    b = load_quietly(many_root, "train", per_class=5, seed=3)
    assert a.paths == b.paths
    counts = np.bincount(a.labels, minlength=len(CATEGORIES))
    assert counts[CATEGORIES.index("airport")] == 5 and counts[CATEGORIES.index("aquaculture")] == 5
    assert counts[CATEGORIES.index("barn")] == 3
    others = {tuple(load_quietly(many_root, "train", per_class=5, seed=s).paths) for s in range(4, 10)}
    assert len(others | {tuple(a.paths)}) > 1  # the seed matters


def test_select_per_class_independent_per_class() -> None:
    """Each class's draw depends only on the seed and that class's members."""
    labels = np.array([0] * 10 + [1] * 10)
    fewer = np.array([0] * 10 + [1] * 20)
    a, b = select_per_class(labels, 4, seed=1), select_per_class(fewer, 4, seed=1)
    assert len(a) == 8 and np.all(np.diff(a) > 0)
    assert a[:4].tolist() == b[:4].tolist()  # class 0 unchanged by class 1's size
    assert len(np.unique(a[a < 10])) == 4


def test_synthetic_read_back_by_same_loader(tmp_path: Path) -> None:
    """The stand-in is read by load_fmow: labels, marker, boxes inside images, varied and non-square sizes."""
    root = write_synthetic(tmp_path / "syn", n_train_per_class=2, n_test_per_class=1, min_size=48, max_size=120, seed=5)
    marker = read_marker(root)
    assert MARKER_TEXT in marker["description"]
    assert "synthetic stand-in, not the fMoW data" in (root / MARKER).read_text()
    assert marker["n_train_per_class"] == 2 and marker["min_size"] == 48
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a clean stand-in raises no warnings
        train, test = load_fmow(root, "train"), load_fmow(root, "test")
    assert train.synthetic and test.synthetic
    assert np.bincount(train.labels).tolist() == [2] * 10 and np.bincount(test.labels).tolist() == [1] * 10
    sizes = np.concatenate([train.sizes, test.sizes])  # [30, 2]
    assert sizes.min() >= 48 and sizes.max() <= 120
    assert len({tuple(s) for s in sizes.tolist()}) > 10 and np.any(sizes[:, 0] != sizes[:, 1])
    for ds in (train, test):
        for i in range(len(ds)):
            image = ds.read_image(i)
            (x, y, w, h), = ds.boxes[i]
            assert image.shape == (*ds.sizes[i], 3)
            assert x >= 0 and y >= 0 and w > 0 and h > 0 and x + w <= image.shape[1] and y + h <= image.shape[0]
            assert ds.items[i].category == CATEGORIES[ds.labels[i]]
    kinds = {type(json.loads(p.with_suffix(".json").read_text())["bounding_boxes"]) for p in train.paths + test.paths}
    assert kinds == {list, dict}


def test_synthetic_same_seed_identical_files(tmp_path: Path) -> None:
    """Same seed writes byte-identical files; another seed does not."""
    def files(root: Path) -> dict[str, bytes]:
        """Relative path -> bytes of every file under root."""
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    args = dict(n_train_per_class=1, n_test_per_class=1, min_size=40, max_size=64)
    a = files(write_synthetic(tmp_path / "a", seed=2, **args))
    b = files(write_synthetic(tmp_path / "b", seed=2, **args))
    c = files(write_synthetic(tmp_path / "c", seed=3, **args))
    assert a == b
    assert a.keys() == c.keys() and a != c


def test_synthetic_object_is_small_and_inside(tmp_path: Path) -> None:
    """At realistic sizes the class object's box covers a few percent of the image or less."""
    for c, category in enumerate(CATEGORIES):
        image, box = render_scene(category, 700, 900, np.random.default_rng(c))
        x, y, w, h = box.tolist()
        assert image.shape == (700, 900, 3) and image.dtype == np.uint8
        assert 0 <= x and 0 <= y and x + w <= 900 and y + h <= 700
        assert 0.002 < w * h / (700 * 900) < 0.05, category


def test_synthetic_arguments_checked(tmp_path: Path) -> None:
    """Bad sizes and counts are refused before anything is written."""
    with pytest.raises(ValueError, match="min_size"):
        write_synthetic(tmp_path / "x", 1, 1, min_size=200, max_size=100)
    with pytest.raises(ValueError, match="n_train_per_class"):
        write_synthetic(tmp_path / "x", 0, 1, min_size=64, max_size=100)
    with pytest.raises(ValueError, match="unknown category"):
        render_scene("zoo", 64, 64, np.random.default_rng(0))
    assert not (tmp_path / "x").exists()


def test_default_dataset_generated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """default_dataset writes under $ZOOMIN_DATA once, reuses it, and regenerates when parameters change."""
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    calls = []
    real_write = fmow.write_synthetic
    monkeypatch.setattr(fmow, "write_synthetic", lambda *a, **k: calls.append(a) or real_write(*a, **k))
    kwargs = dict(n_train_per_class=1, n_test_per_class=0, min_size=40, max_size=48)
    root = default_dataset(**kwargs)
    assert root.parent == tmp_path / "fmow_synthetic" and load_fmow(root, "train").synthetic
    assert default_dataset(**kwargs) == root and len(calls) == 1
    other = default_dataset(**{**kwargs, "seed": 1})
    assert len(calls) == 2 and read_marker(other)["seed"] == 1 and read_marker(root)["seed"] == 0


# ---------------------------------------------------------------- damaged downloads (issue 19)


def test_damaged_split_keeps_what_the_label_needs_and_names_each_problem(tmp_path: Path) -> None:
    """3 of the 10 categories; a JSON without gsd or size kept, one without bounding_boxes skipped, a truncated
    and a garbage .jpg skipped, an image whose size contradicts its JSON kept at its own: each problem names its file."""
    train = tmp_path / "fmow-rgb" / "train"
    ok = [(("airport", 0), (40, 30)), (("barn", 1), (36, 48)), (("crop_field", 2), (50, 40))]
    for (category, i), size in ok:
        write_image(instance(train, category, i, 0), size, meta(category, size, [[1, 2, 5, 6]]))
    no_gsd = meta("barn", (30, 20), [[1, 1, 4, 4]])
    del no_gsd["gsd"], no_gsd["img_width"]
    write_image(instance(train, "barn", 5, 0), (30, 20), no_gsd)
    no_boxes = meta("airport", (30, 20), [[1, 1, 4, 4]])
    del no_boxes["bounding_boxes"]
    write_image(instance(train, "airport", 6, 0), (30, 20), no_boxes)
    cut = write_image(instance(train, "crop_field", 7, 0), (64, 48), meta("crop_field", (64, 48), [[1, 1, 4, 4]]))
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)).save(cut, quality=95)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    junk = write_image(instance(train, "airport", 8, 0), (30, 20), meta("airport", (30, 20), [[1, 1, 4, 4]]))
    junk.write_bytes(b"0123456789")
    wrong = write_image(instance(train, "barn", 9, 0), (30, 20), meta("barn", (60, 20), [[1, 1, 4, 4]]))
    with pytest.warns(DataProblemWarning) as caught:
        data = load_fmow(tmp_path / "fmow-rgb", "train")
    names = [m.path.name for m in data.items]
    assert names == ["airport_0_0_rgb.jpg", "barn_1_0_rgb.jpg", "barn_5_0_rgb.jpg", "barn_9_0_rgb.jpg",
                     "crop_field_2_0_rgb.jpg"]
    assert data.items[2].width == 30 and np.isnan(data.items[2].gsd)  # the size read from the image
    assert data.sizes[3].tolist() == [20, 30]  # the image's own size, not its JSON's 60 x 20
    assert data.absent_classes() == [c for c in CATEGORIES if c not in ("airport", "barn", "crop_field")]
    assert [str(w.message) for w in caught] == data.problems and len(data.problems) == 6
    text = "\n".join(data.problems)
    json_of = lambda jpg: jpg.with_suffix(".json")  # noqa: E731
    assert f"{instance(train, 'airport', 6, 0)}_rgb.json: missing key(s) bounding_boxes; skipped" in text
    assert f"{instance(train, 'barn', 5, 0)}_rgb.json: missing key gsd (not needed for the label)" in text
    assert f"{instance(train, 'barn', 5, 0)}_rgb.json: missing key(s) img_width; the size is read from" in text
    assert f"{cut}: not a readable image (OSError: image file is truncated" in text
    assert f"{junk}: not a readable image (UnidentifiedImageError" in text
    assert f"{wrong}: the image is 30x20, its JSON says 60x20; kept at the image's size (its boxes may be off)" in text
    assert json_of(cut).is_file()
    assert all(data.read_image(i).shape == (*data.sizes[i], 3) for i in range(len(data)))  # the rest reads


def test_read_image_of_a_file_damaged_later_names_it(real_root: Path) -> None:
    train = load_quietly(real_root, "train")
    train.items[0].path.write_bytes(b"gone bad")
    with pytest.raises(DataFileError, match=rf"{train.items[0].path}: not a readable image"):
        train.read_image(0)


def test_empty_split_folder_stops_with_one_message(tmp_path: Path) -> None:
    """train/ present but holding nothing usable (an empty folder, then only a broken pair): one DataSetError."""
    root = tmp_path / "fmow-rgb"
    (root / "train" / "airport").mkdir(parents=True)
    (root / "val").mkdir()
    with pytest.raises(DataSetError, match=r"train holds no usable image of airport, .*expected"):
        load_fmow(root, "train")
    write_image(instance(root / "train", "airport", 0, 0), (30, 20), '{"gsd": 1}')
    with pytest.warns(DataProblemWarning):
        with pytest.raises(DataSetError, match=r"1 problem\(s\):\n .*airport_0_0_rgb.json: missing key\(s\) bounding_boxes"):
            load_fmow(root, "train")
