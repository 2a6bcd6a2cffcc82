"""The Camelyon16 stand-in: its layout loads, its slides read back as rendered, its metastases are tiny, in tissue."""

from __future__ import annotations

import hashlib
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from data_prep.camelyon16 import annotation_mask, load_camelyon16, parse_asap_xml, read_reference
from data_prep.synthetic_slides import (
    GENERATOR_VERSION,
    GLASS,
    STAND_IN,
    SyntheticSlide,
    generate,
    read_parameters,
    rebuild,
    synthetic_camelyon,
    write_large_slide,
)
from zoomin_lib.infra.slides import OpenSlideSlide, open_slide, tissue_mask

SIDE = 2048
SMALL = dict(n_train_normal=2, n_train_tumor=2, n_test_normal=1, n_test_tumor=2, side=SIDE,
             metastasis_radius=(5.0, 13.0), compression="zlib", tile=256)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small lossless stand-in: 2 + 2 training slides, 3 test slides of 2048 x 2048."""
    return generate(tmp_path_factory.mktemp("synthetic") / "camelyon16", seed=3, **SMALL)


def _digest(root: Path) -> dict[str, str]:
    """SHA-1 of every file under `root`, by relative path."""
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in files}


def test_layout_loads_with_the_camelyon16_loader(root: Path) -> None:
    """load_camelyon16 (strict) reads it: ids, labels, XML for every tumour slide, reference.csv without header."""
    data = load_camelyon16(root)
    assert data.ids[:4] == ["normal_001", "normal_002", "tumor_001", "tumor_002"]
    assert sorted(data.ids[4:]) == ["test_001", "test_002", "test_003"]
    assert data.problems == []
    for record in data:
        assert record.path.is_file()
        assert (record.annotation is not None) == (record.label == 1)
    reference = read_reference(root / "testing/reference.csv")
    assert sorted(reference.values()) == [0, 1, 1]
    first = (root / "testing/reference.csv").read_text().splitlines()[0]
    assert first.split(",")[0] == "test_001" and first.split(",")[1] in ("Tumor", "Normal")
    assert "SYNTHETIC STAND-IN" in (root / "README.txt").read_text()
    params = read_parameters(root)
    assert params is not None and params["description"] == STAND_IN and params["version"] == GENERATOR_VERSION
    assert "No known copyright restrictions" in params["texture"]


def test_slides_read_back_as_rendered(root: Path) -> None:
    """OpenSlide reads each slide as a pyramid; lossless level-0 regions equal the renderer's at a few places."""
    slide_id = "tumor_001"
    truth = rebuild(root, slide_id)
    with open_slide(root / f"training/tumor/{slide_id}.tif") as slide:
        assert isinstance(slide, OpenSlideSlide) and slide.dimensions == (SIDE, SIDE) and slide.level_count > 1
        cx, cy = truth.polygons[0].mean(axis=0).astype(int)
        places = [(cx - 40, cy - 40, 80, 80), (0, 0, 64, 64), (SIDE - 50, SIDE - 30, 50, 30), (250, 900, 300, 200)]
        for x, y, w, h in places:
            np.testing.assert_array_equal(slide.read_region((x, y), 0, (w, h)), truth.region(y, x, h, w))
        assert (truth.region(0, 0, 8, 8) == np.array(GLASS, dtype=np.uint8)).all()
    for record in load_camelyon16(root):
        with open_slide(record.path) as slide:
            assert slide.dimensions == (SIDE, SIDE) and slide.level_count >= 3


def test_region_is_independent_of_the_window(root: Path) -> None:
    """Rendering a window whole or in pieces gives the same pixels (tiles can be written in any order)."""
    truth = rebuild(root, "tumor_002")
    cx, cy = truth.polygons[-1].mean(axis=0).astype(int)
    y, x = cy - 100, cx - 90
    whole = truth.region(y, x, 200, 180)
    parts = np.concatenate([truth.region(y, x, 77, 180), truth.region(y + 77, x, 123, 180)])
    np.testing.assert_array_equal(whole, parts)


def test_metastases_are_tiny_in_tissue_and_match_their_annotation(root: Path) -> None:
    """Annotations lie in tissue, cover < 1% of it, equal the painted pixels (annotation_mask) and are darker."""
    data = load_camelyon16(root)
    for record in data:
        truth = rebuild(root, record.slide_id)
        if record.label == 0:
            assert truth.polygons == []
            continue
        polygons = parse_asap_xml(record.annotation)
        assert polygons and {p.group for p in polygons} == {"_0"}
        mask = annotation_mask(polygons, (SIDE, SIDE))  # [H, W]
        tissue = np.concatenate([truth.tissue(y, 0, 512, SIDE) for y in range(0, SIDE, 512)])  # [H, W]
        assert mask.any() and not (mask & ~tissue).any()
        assert mask.sum() < 0.01 * tissue.sum()
        np.testing.assert_array_equal(truth.metastasis_mask(0, 0, SIDE, SIDE), mask)
        assert truth.metastasis_pixels() == mask.sum() and truth.tissue_pixels() == tissue.sum()
        cx, cy = truth.polygons[0].mean(axis=0).astype(int)
        y0, x0 = cy - 80, cx - 80
        window = truth.region(y0, x0, 160, 160).astype(float).mean(axis=2)  # [160, 160] brightness
        inside = mask[y0 : y0 + 160, x0 : x0 + 160]
        around = tissue[y0 : y0 + 160, x0 : x0 + 160] & ~inside
        assert window[inside].mean() < window[around].mean() - 40  # denser, darker purple


def test_tissue_mask_finds_the_tissue_not_the_glass(root: Path) -> None:
    """zoomin_lib's tissue_mask on a 1/16 view agrees with the rendered tissue (IoU > 0.8); tissue is a minority."""
    truth = rebuild(root, "normal_001")
    with open_slide(root / "training/normal/normal_001.tif") as slide:
        found = tissue_mask(slide, 1 / 16)  # [128, 128]
    tissue = np.concatenate([truth.tissue(y, 0, 512, SIDE) for y in range(0, SIDE, 512)])
    coarse = tissue.reshape(128, 16, 128, 16).mean(axis=(1, 3)) > 0.5  # [128, 128]
    iou = (found & coarse).sum() / (found | coarse).sum()
    assert iou > 0.8, iou
    assert 0.03 < tissue.mean() < 0.5


def test_same_seed_same_bytes_other_seed_other_bytes(tmp_path: Path) -> None:
    """Two generations with one seed are byte-identical (JPEG too); another seed differs."""
    tiny = dict(n_train_normal=1, n_train_tumor=1, n_test_normal=1, n_test_tumor=1, side=768,
                metastasis_radius=(4.0, 8.0), metastases=(1, 2))
    a = _digest(generate(tmp_path / "a", seed=1, **tiny))
    b = _digest(generate(tmp_path / "b", seed=1, **tiny))
    c = _digest(generate(tmp_path / "c", seed=2, **tiny))
    assert a == b
    assert a["training/tumor/tumor_001.tif"] != c["training/tumor/tumor_001.tif"]
    assert a["training/lesion_annotations/tumor_001.xml"] != c["training/lesion_annotations/tumor_001.xml"]


def test_writing_holds_only_a_few_tiles(tmp_path: Path) -> None:
    """A 6144 x 6144 slide (108 MiB of pixels) is written with < 24 MiB of traced allocations; glass costs little."""
    slide = SyntheticSlide(6144, seed=5, tumour=True, metastasis_radius=(20.0, 40.0))
    tracemalloc.start()
    try:
        path = slide.write(tmp_path / "big.tif", tile=512, compression="jpeg", quality=80)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 24 * 2**20, peak / 2**20
    assert path.stat().st_size < 0.1 * 6144 * 6144 * 3
    with open_slide(path) as back:
        cx, cy = slide.polygons[0].mean(axis=0).astype(int)
        read = back.read_region((cx - 64, cy - 64), 0, (128, 128)).astype(float)
        assert np.abs(read - slide.region(cy - 64, cx - 64, 128, 128)).mean() < 6  # JPEG, quality 80


def test_write_large_slide_and_its_annotation(tmp_path: Path) -> None:
    """write_large_slide (scaled down here) writes a readable pyramid and its ASAP XML."""
    path = write_large_slide(tmp_path / "large.tif", side=(1536, 2560), seed=2, annotation=tmp_path / "large.xml",
                             metastasis_radius=(6.0, 12.0), progress=False)
    with open_slide(path) as slide:
        assert slide.dimensions == (2560, 1536) and slide.level_count >= 3
    assert len(parse_asap_xml(tmp_path / "large.xml")) >= 1


def test_cached_entry_reuses_and_rejects(tmp_path: Path) -> None:
    """synthetic_camelyon writes once and reuses the folder; 'paper' and unknown profiles are refused by name."""
    sizes = dict(n_train_normal=1, n_train_tumor=1, n_test_normal=1, n_test_tumor=1, side=512,
                 metastasis_radius=(3.0, 5.0), metastases=(1, 1))
    first = synthetic_camelyon(sizes, cache_dir=tmp_path, progress=False)
    stamp = (first / "training/tumor/tumor_001.tif").stat().st_mtime_ns
    again = synthetic_camelyon(sizes, cache_dir=tmp_path, progress=False)
    assert again == first and (first / "training/tumor/tumor_001.tif").stat().st_mtime_ns == stamp
    assert (first / "stand_in.json").is_file() and len(first.name) == 12  # infra.cache: one folder per parameters
    other = synthetic_camelyon(sizes, cache_dir=tmp_path, seed=1, progress=False)
    assert other != first
    with pytest.raises(ValueError, match="real Camelyon16"):
        synthetic_camelyon("paper", cache_dir=tmp_path)
    with pytest.raises(ValueError, match="unknown profile 'huge'"):
        synthetic_camelyon("huge", cache_dir=tmp_path)


def test_bad_arguments_are_named(tmp_path: Path, root: Path) -> None:
    """Too small a slide, a negative count, an empty split and an unknown slide id raise ValueErrors saying why."""
    with pytest.raises(ValueError, match="at least 256"):
        SyntheticSlide(100)
    with pytest.raises(ValueError, match="n_train_tumor"):
        generate(tmp_path / "x", n_train_tumor=-1)
    with pytest.raises(ValueError, match="each split"):
        generate(tmp_path / "x", n_test_normal=0, n_test_tumor=0)
    with pytest.raises(ValueError, match="tumor_009"):
        rebuild(root, "tumor_009")
    with pytest.raises(ValueError, match="parameters.json"):
        rebuild(tmp_path, "tumor_001")
    assert not (tmp_path / "x").exists()
