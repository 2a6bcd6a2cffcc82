"""Colon cancer: the loader on fixtures in the real CRCHistoPhenotypes format, the CV folds, the stand-in."""

import struct
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from data_prep.colon_cancer import (
    CELL_TYPES,
    CLUSTER_RADIUS,
    GLANDS,
    MARKER,
    MARKER_TEXT,
    cross_validation_folds,
    default_dataset,
    load_colon_cancer,
    to_tensors,
    uniform_patch_misses,
    write_synthetic,
)
from data_prep.problems import DataProblemWarning, DataSetError
from zoomin_lib.infra.io import read_json

SIZE = 40


def _rgba_bmp(pixels: np.ndarray) -> bytes:
    """A 32-bit BMP with an alpha channel mask (BITMAPV4HEADER), which PIL opens as RGBA."""
    h, w, _ = pixels.shape
    body = pixels[::-1, :, [2, 1, 0, 3]].tobytes()  # bottom-up rows of B, G, R, A
    info = struct.pack("<IiiHHIIiiII", 108, w, h, 1, 32, 3, len(body), 2835, 2835, 0, 0)
    info += struct.pack("<IIIII", 0xFF0000, 0xFF00, 0xFF, 0xFF000000, 0x73524742) + bytes(48)
    head = struct.pack("<2sIHHI", b"BM", 14 + len(info) + len(body), 0, 0, 14 + len(info))
    return head + info + body


def _write_image(cls_dir: Path, name: str, pixels: np.ndarray, detections: dict) -> None:
    """One imgN folder exactly as distributed: a bmp and four .mat files holding `detection`."""
    folder = cls_dir / name
    folder.mkdir(parents=True)
    if pixels.shape[-1] == 4:
        (folder / f"{name}.bmp").write_bytes(_rgba_bmp(pixels))
    else:
        Image.fromarray(pixels).save(folder / f"{name}.bmp")
    for t in CELL_TYPES:
        scipy.io.savemat(folder / f"{name}_{t}.mat", {"detection": detections[t]})


def _pixels(seed: int, channels: int = 3) -> np.ndarray:
    """Random uint8 pixels [SIZE, SIZE, channels]."""
    return np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, channels), dtype=np.uint8)


@pytest.fixture
def real_root(tmp_path: Path) -> Path:
    """Three images: an RGBA positive (img1), a negative with (0, 0) detections (img2), a positive (img10)."""
    cls_dir = tmp_path / "CRC" / "Classification"
    empty = np.zeros((0, 0))
    _write_image(cls_dir, "img1", _pixels(1, 4), {
        "epithelial": np.array([[10.5, 20.25], [3.0, 4.0]]),
        "fibroblast": np.array([[1.0, 2.0]]),
        "inflammatory": empty,
        "others": np.array([[30.0, 31.0], [32.0, 33.0], [7.0, 8.0]]),
    })
    _write_image(cls_dir, "img2", _pixels(2), {t: empty for t in CELL_TYPES})
    _write_image(cls_dir, "img10", _pixels(10), {
        "epithelial": np.array([[5.0, 6.0]]),
        "fibroblast": np.zeros((0, 2)),
        "inflammatory": np.array([[9.0, 9.0]]),
        "others": empty,
    })
    return tmp_path / "CRC"


def test_rgba_fixture_is_rgba(real_root: Path):
    with Image.open(real_root / "Classification" / "img1" / "img1.bmp") as img:
        assert img.mode == "RGBA" and np.array_equal(np.asarray(img), _pixels(1, 4))


def test_real_format_is_read(real_root: Path):
    data = load_colon_cancer(real_root, progress=False)
    assert data.ids == ["img1", "img2", "img10"]  # numeric, not lexicographic, order
    assert data.images.shape == (3, SIZE, SIZE, 3) and data.images.dtype == np.uint8
    assert np.array_equal(data.images[0], _pixels(1, 4)[..., :3])  # alpha dropped
    assert np.array_equal(data.images[1], _pixels(2))
    assert data.labels.tolist() == [1, 0, 1] and data.labels.dtype == np.int64
    assert np.array_equal(data.cells[0]["epithelial"], [[10.5, 20.25], [3.0, 4.0]])
    assert np.array_equal(data.cells[0]["others"], [[30.0, 31.0], [32.0, 33.0], [7.0, 8.0]])
    assert data.cells[0]["inflammatory"].shape == (0, 2)
    assert all(data.cells[1][t].shape == (0, 2) for t in CELL_TYPES)
    assert np.array_equal(data.cells[2]["inflammatory"], [[9.0, 9.0]])
    assert data.root == real_root and not data.synthetic


def test_classification_folder_itself_is_accepted(real_root: Path):
    data = load_colon_cancer(real_root / "Classification", progress=False)
    assert data.ids == ["img1", "img2", "img10"] and data.root == real_root


def test_missing_mat_is_named(real_root: Path):
    """strict: the missing file stops the load, named; by default it is reported and the image kept."""
    (real_root / "Classification" / "img2" / "img2_fibroblast.mat").unlink()
    with pytest.raises(FileNotFoundError, match="img2_fibroblast.mat: annotation file missing"):
        load_colon_cancer(real_root, progress=False, strict=True)
    with pytest.warns(DataProblemWarning, match="img2_fibroblast.mat: annotation file missing"):
        data = load_colon_cancer(real_root, progress=False)
    assert data.ids == ["img1", "img2", "img10"] and data.labels.tolist() == [1, 0, 1]
    assert set(data.cells[1]) == {"epithelial", "inflammatory", "others"}
    assert len(data.problems) == 1 and "img2 is kept without its fibroblast nuclei" in data.problems[0]


def test_missing_classification_folder_is_reported(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="Classification"):
        load_colon_cancer(tmp_path, progress=False)


def test_missing_bmp_is_named(real_root: Path):
    """A missing image: strict stops naming it; by default that image is skipped and the others load."""
    (real_root / "Classification" / "img10" / "img10.bmp").unlink()
    with pytest.raises(FileNotFoundError, match="img10.bmp"):
        load_colon_cancer(real_root, progress=False, strict=True)
    with pytest.warns(DataProblemWarning, match="img10.bmp: image missing; img10 skipped"):
        data = load_colon_cancer(real_root, progress=False)
    assert data.ids == ["img1", "img2"]


def test_mat_without_detection_is_reported(real_root: Path):
    scipy.io.savemat(real_root / "Classification" / "img1" / "img1_others.mat", {"points": np.ones((2, 2))})
    with pytest.raises(ValueError, match="img1_others.mat.*detection"):
        load_colon_cancer(real_root, progress=False, strict=True)
    with pytest.warns(DataProblemWarning, match="img1_others.mat: no variable 'detection'"):
        data = load_colon_cancer(real_root, progress=False)
    assert "others" not in data.cells[0] and len(data) == 3


def test_detection_of_wrong_shape_is_reported(real_root: Path):
    bad = {"detection": np.ones((4, 3))}
    scipy.io.savemat(real_root / "Classification" / "img1" / "img1_others.mat", bad)
    with pytest.raises(ValueError, match="img1_others.mat.*shape"):
        load_colon_cancer(real_root, progress=False, strict=True)
    with pytest.warns(DataProblemWarning, match=r"img1_others.mat: 'detection' has shape \(4, 3\)"):
        assert len(load_colon_cancer(real_root, progress=False)) == 3


def test_images_of_different_sizes_are_reported(real_root: Path):
    """strict: an error naming the odd image; by default the odd one out is skipped."""
    Image.fromarray(_pixels(3)[:20]).save(real_root / "Classification" / "img10" / "img10.bmp")
    with pytest.raises(ValueError, match="img10.bmp"):
        load_colon_cancer(real_root, progress=False, strict=True)
    with pytest.warns(DataProblemWarning, match=r"img10.bmp: size \(20, 40\) differs .*img10 skipped"):
        data = load_colon_cancer(real_root, progress=False)
    assert data.ids == ["img1", "img2"]


def test_to_tensors(real_root: Path):
    x, y = to_tensors(load_colon_cancer(real_root, progress=False))
    assert x.shape == (3, 3, SIZE, SIZE) and x.dtype == torch.float32
    assert 0 <= x.min() and x.max() <= 1 and y.tolist() == [1, 0, 1] and y.dtype == torch.int64
    assert torch.allclose(x[1].permute(1, 2, 0) * 255, torch.from_numpy(_pixels(2)).float())


def test_folds_are_disjoint_covering_and_stratified():
    labels = np.array([1] * 43 + [0] * 57)
    folds = cross_validation_folds(labels, n_folds=10, repetitions=5, seed=0)
    assert len(folds) == 50
    for rep in range(5):
        mine = [f for f in folds if f.repetition == rep]
        assert [f.fold for f in mine] == list(range(10))
        tests = np.concatenate([f.test for f in mine])
        assert np.array_equal(np.sort(tests), np.arange(100))  # disjoint and covering
        for f in mine:
            assert np.array_equal(np.sort(np.concatenate([f.train, f.test])), np.arange(100))
            assert len(np.intersect1d(f.train, f.test)) == 0
            assert labels[f.test].sum() in (4, 5) and len(f.test) == 10  # stratified


def test_folds_are_reproducible_and_differ_across_repetitions():
    labels = np.array([0, 1] * 30)
    a = cross_validation_folds(labels, n_folds=5, repetitions=3, seed=7)
    b = cross_validation_folds(labels, n_folds=5, repetitions=3, seed=7)
    c = cross_validation_folds(labels, n_folds=5, repetitions=3, seed=8)
    assert all(np.array_equal(f.test, g.test) for f, g in zip(a, b))
    assert not all(np.array_equal(f.test, g.test) for f, g in zip(a, c))
    assert not np.array_equal(a[0].test, a[5].test)  # repetition 1 shuffles differently


def test_folds_reject_bad_fold_counts():
    with pytest.raises(ValueError, match="n_folds"):
        cross_validation_folds(np.zeros(5), n_folds=6)


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory) -> Path:
    """Six stand-in images written once for the module."""
    return write_synthetic(tmp_path_factory.mktemp("synth") / "colon", n_images=6, seed=3)


def test_synthetic_is_read_by_the_same_loader(synthetic_root: Path):
    data = load_colon_cancer(synthetic_root, progress=False)
    assert data.synthetic and data.images.shape == (6, 500, 500, 3)
    assert data.labels.sum() == 3  # exactly n // 2 positives
    for label, cells in zip(data.labels, data.cells):
        epi = cells["epithelial"]
        assert label == (len(epi) > 0)
        assert all(len(cells[t]) >= 10 for t in ("fibroblast", "inflammatory", "others"))
        if label:
            assert 6 * GLANDS[0] <= len(epi) <= 12 * GLANDS[1] and ((epi >= 0) & (epi < 500)).all()
            # one cluster: every nucleus within a hub's square (half-side CLUSTER_RADIUS) plus a ring's radius
            assert np.ptp(epi, axis=0).max() <= 2 * CLUSTER_RADIUS + 2 * (16 + 4)


def test_synthetic_marker(synthetic_root: Path):
    marker = read_json(synthetic_root / MARKER)
    assert marker["description"] == MARKER_TEXT and "not the CRCHistoPhenotypes data" in MARKER_TEXT
    assert (marker["n_images"], marker["size"], marker["seed"]) == (6, 500, 3)


def test_synthetic_files_depend_only_on_the_seed(synthetic_root: Path, tmp_path: Path):
    same = _files(write_synthetic(tmp_path / "same", n_images=6, seed=3))
    other = _files(write_synthetic(tmp_path / "other", n_images=6, seed=4))
    mine = _files(synthetic_root)
    assert same == mine  # byte-identical, .mat headers included
    bmp = "Classification/img1/img1.bmp"
    assert other.keys() == mine.keys() and other[bmp] != mine[bmp]


def test_default_dataset_is_cached(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    root = default_dataset(n_images=2, seed=0)
    assert root.parent == tmp_path / "colon_cancer_synthetic" and load_colon_cancer(root, progress=False).synthetic
    stamp = (root / MARKER).stat().st_mtime_ns
    assert default_dataset(n_images=2, seed=0) == root and (root / MARKER).stat().st_mtime_ns == stamp
    other = default_dataset(n_images=4, seed=0)  # other parameters: another folder beside it
    assert other != root and len(load_colon_cancer(other, progress=False)) == 4
    assert len(load_colon_cancer(root, progress=False)) == 2


# ---------------------------------------------------------------- damaged downloads (issue 19)


@pytest.fixture
def damaged_root(tmp_path: Path) -> Path:
    """Seven imgN folders in the real format, four of them damaged the way real downloads are.

    img1 positive, its others.mat missing (not needed for the label); img2 negative, its epithelial
    .mat 10 bytes of garbage; img3 positive, its .bmp cut in half; img4 positive, a garbage
    fibroblast .mat; img5 negative, intact; img6 an empty folder; img7 negative, intact.
    """
    cls_dir = tmp_path / "CRC" / "Classification"
    pos = {"epithelial": np.array([[5.0, 6.0]]), "fibroblast": np.zeros((0, 2)),
           "inflammatory": np.array([[9.0, 9.0]]), "others": np.zeros((0, 2))}
    neg = {t: np.zeros((0, 2)) for t in CELL_TYPES}
    for k, det in ((1, pos), (2, neg), (3, pos), (4, pos), (5, neg), (7, neg)):
        _write_image(cls_dir, f"img{k}", _pixels(k), det)
    (cls_dir / "img1" / "img1_others.mat").unlink()
    (cls_dir / "img2" / "img2_epithelial.mat").write_bytes(b"0123456789")
    bmp = cls_dir / "img3" / "img3.bmp"
    bmp.write_bytes(bmp.read_bytes()[: bmp.stat().st_size // 2])
    (cls_dir / "img4" / "img4_fibroblast.mat").write_bytes(b"\x00garbage\x00")
    (cls_dir / "img6").mkdir()
    return tmp_path / "CRC"


def test_damaged_folder_loads_everything_usable_and_names_each_problem(damaged_root: Path):
    """Each problem names its file and what is wrong; every usable image loads; only the label files' damage skips."""
    cls_dir = damaged_root / "Classification"
    with pytest.warns(DataProblemWarning) as caught:
        data = load_colon_cancer(damaged_root, progress=False)
    assert data.ids == ["img1", "img4", "img5", "img7"]
    assert data.labels.tolist() == [1, 1, 0, 0]
    assert set(data.cells[0]) == {"epithelial", "fibroblast", "inflammatory"}  # img1: no others file
    assert set(data.cells[1]) == {"epithelial", "inflammatory", "others"}  # img4: its fibroblast file is garbage
    assert np.array_equal(data.images[2], _pixels(5))
    problems = data.problems
    assert [str(w.message) for w in caught] == problems and len(problems) == 5
    expected = [
        (f"{cls_dir / 'img1' / 'img1_others.mat'}: annotation file missing", "img1 is kept without its others nuclei"),
        (f"{cls_dir / 'img2' / 'img2_epithelial.mat'}: not a readable MATLAB file (MatReadError: Mat file appears "
         "to be truncated)", "img2 skipped"),
        (f"{cls_dir / 'img3' / 'img3.bmp'}: not a readable image (OSError: image file is truncated", "img3 skipped"),
        (f"{cls_dir / 'img4' / 'img4_fibroblast.mat'}: not a readable MATLAB file (", "kept without its fibroblast"),
        (f"{cls_dir / 'img6' / 'img6.bmp'}: image missing", "img6 skipped"),
    ]
    for problem, (start, consequence) in zip(problems, expected):
        assert problem.startswith(start), problem
        assert consequence in problem, problem


def test_garbage_mat_error_names_the_file_in_strict_mode(damaged_root: Path):
    """scipy's MatReadError arrives wrapped, with the file it is about."""
    cls_dir = damaged_root / "Classification"
    (cls_dir / "img1" / "img1_others.mat").write_bytes(b"not a MATLAB file")
    with pytest.raises(ValueError, match=rf"{cls_dir / 'img1' / 'img1_others.mat'}: not a readable MATLAB file"):
        load_colon_cancer(damaged_root, progress=False, strict=True)


def test_nothing_usable_stops_with_one_message(damaged_root: Path):
    """Every image damaged: one DataSetError saying so, listing the problems."""
    cls_dir = damaged_root / "Classification"
    for folder in cls_dir.iterdir():
        bmp = folder / f"{folder.name}.bmp"
        if bmp.is_file():
            bmp.write_bytes(bmp.read_bytes()[:100])
    with pytest.warns(DataProblemWarning):
        with pytest.raises(DataSetError, match=r"no usable image among 7 imgN folders(.|\n)*img1.bmp: not a readable image"):
            load_colon_cancer(damaged_root, progress=False)


def test_a_label_class_missing_stops_with_one_message(damaged_root: Path):
    """Left with negatives only, the epithelial-or-not task cannot be learned: one message saying which class is absent."""
    cls_dir = damaged_root / "Classification"
    for k in (1, 4):
        (cls_dir / f"img{k}" / f"img{k}.bmp").unlink()
    with pytest.warns(DataProblemWarning):
        with pytest.raises(DataSetError, match=r"no positive \(epithelial detection non-empty\) image among the 2 usable"):
            load_colon_cancer(damaged_root, progress=False)


@pytest.mark.parametrize("patch", [1, 5, 27])
def test_uniform_patch_misses_against_enumeration(patch: int):
    """(1 - f)^n with f counted by visiting every centre and every detection; 1 without epithelium."""
    rng = np.random.default_rng(patch)
    h, w = 37, 52
    cells = [{"epithelial": np.column_stack([rng.uniform(-0.4, w - 0.6, 4), rng.uniform(-0.4, h - 0.6, 4)])},
             {"epithelial": np.zeros((0, 2)), "others": np.array([[3.0, 4.0]])},
             {"epithelial": np.array([[0.0, 0.0], [w - 1.0, h - 1.0]])}]
    got = uniform_patch_misses(cells, (h, w), draws=7, patch=patch)
    half = patch // 2
    for c, g in zip(cells, got):
        pix = np.rint(c["epithelial"]).astype(int)  # [K, 2] (x, y)
        hits = sum(any(abs(x - col) <= half and abs(y - row) <= half for x, y in pix)
                   for row in range(h) for col in range(w))
        assert g == pytest.approx((1 - hits / (h * w)) ** 7, rel=1e-12)
    assert got[1] == 1.0
    with pytest.raises(ValueError, match="odd"):
        uniform_patch_misses(cells, (h, w), draws=7, patch=4)


def test_synthetic_positives_hold_hundreds_and_uniform_patches_find_them(synthetic_root: Path):
    """The stand-in's positives hold the real data's "hundreds" of epithelial nuclei (ATS sec. 4.3) on this
    module's images, and 10 uniform 27x27 patches miss them in fewer images than ATS's U-10 error (15.6 %)."""
    data = load_colon_cancer(synthetic_root, progress=False)
    counts = np.array([len(c["epithelial"]) for c in data.cells])  # [M]
    assert (counts[data.labels == 1] >= 60).all() and np.median(counts[data.labels == 1]) >= 100
    misses = uniform_patch_misses(data.cells, (500, 500), draws=10)  # [M]
    assert np.mean(np.where(data.labels == 1, misses, 0.0)) < 0.156
