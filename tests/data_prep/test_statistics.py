"""Tests of the statistics measured on stand-ins (data_prep.statistics and each data set's measure_stand_in).

Each measuring function runs on a small hand-made data set whose statistics are known by construction.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from data_prep import camelyon16, colon_cancer, fmow, megapixel_mnist, needle_camelyon, needle_mnist, o2i, traffic_signs
from data_prep.mnist_digits import canvas_statistics
from data_prep.statistics import NOT_REPORTED, MeasuredStatistics, measured_from_boxes, spread
from slide_fixtures import write_camelyon16


def test_measured_from_boxes_sides_fractions_and_counts() -> None:
    """Boxes 10x40 and 20x20 on a 100x200 image, none on the second: sides 20, 20; fractions 2 %; counts 2, 0."""
    m = measured_from_boxes("d", "box", np.array([[100, 200], [50, 50]]),
                            [np.array([[10, 40], [20, 20]]), np.zeros((0, 2))])
    np.testing.assert_allclose(m.object_side, [20.0, 20.0])
    np.testing.assert_allclose(m.object_fraction, [400 / 20000, 400 / 20000])
    np.testing.assert_array_equal(m.objects_per_image, [2, 0])


def test_measured_statistics_refuses_inconsistent_shapes() -> None:
    """Counts that do not sum to the objects measured, or image sizes that are not [M, 2], are refused."""
    with pytest.raises(ValueError, match="sums to"):
        MeasuredStatistics("d", "o", np.array([[10, 10]]), np.ones(2), np.ones(2), np.array([1]))
    with pytest.raises(ValueError, match=r"\[M, 2\]"):
        MeasuredStatistics("d", "o", np.array([10, 10]), np.ones(1), np.ones(1), np.array([1]))
    with pytest.raises(ValueError, match="negative"):
        measured_from_boxes("d", "o", np.array([[10, 10]]), [np.array([[-1, 2]])])


def test_spread_formats() -> None:
    """A constant once, else median and range; 'none' when empty."""
    assert spread(np.array([28.0, 28.0])) == "28.0"
    assert spread(np.array([1.0, 2.0, 10.0])) == "median 2.0 (1.0-10.0)"
    assert spread(np.zeros(0)) == "none"
    assert spread(np.array([0.5]), "{:.1f}", scale=100.0) == "50.0"


def test_colon_measure_stand_in_counts_detections() -> None:
    """Two 500x500 images, 3 and 0 epithelial detections: 3 nuclei of the drawn side; extent from the detections."""
    cells = [{"epithelial": np.array([[10.0, 20.0], [30.0, 20.0], [10.0, 60.0]])}, {"epithelial": np.zeros((0, 2))}]
    data = colon_cancer.ColonCancerData(["img1", "img2"], np.zeros((2, 500, 500, 3), np.uint8), np.array([1, 0]),
                                        cells, Path("."), synthetic=True)
    m = colon_cancer.measure_stand_in(data)
    np.testing.assert_array_equal(m.objects_per_image, [3, 0])
    side = colon_cancer.drawn_nucleus_side()
    assert side == pytest.approx(np.sqrt(np.pi * 4.5 * 2.85))
    np.testing.assert_allclose(m.object_side, [side] * 3)
    np.testing.assert_allclose(m.object_fraction, [side ** 2 / 500 ** 2] * 3)
    extent = dict(m.extra)["epithelial nuclei: extent (px, side of the box round a positive's detections)"]
    assert extent == f"{np.sqrt(21 * 41):.0f}"  # the box spans 20 x 40 px between centres, 21 x 41 pixels
    assert dict(m.extra)["annotated nuclei of all types per image"] == "mean 2; median 2 (0-3)"  # epithelial only here
    # patches of 27 centred within 13 px: the three nuclei's squares (clipped at the border) cover
    # 24 x 27 + 27 x 27 - 7 x 27 (the first two overlap) + 24 x 27 = 1836 centres of 500^2; one of two images positive
    f = 1836 / 500 ** 2
    for n in (10, 50):
        row = dict(m.extra)[f"images whose epithelium {n} uniform 27x27 patches all miss (share of all images)"]
        assert row.startswith(f"{100 * 0.5 * (1 - f) ** n:.1f} % ")
    with pytest.raises(ValueError, match="no nucleus size"):
        colon_cancer.measure_stand_in(dataclasses.replace(data, synthetic=False))


class _Split:
    """A minimal stand-in for a CanvasSplit."""

    def __init__(self, classes: np.ndarray, canvas: int, params: dict) -> None:
        self.classes, self.canvas_size, self.parameters = classes, canvas, params

    def __len__(self) -> int:
        return len(self.classes)


def test_canvas_statistics_digits_and_needles() -> None:
    """Two 100x100 canvases of 5 digits of 28 px: 10 objects of side 28 and fraction 7.84 %; needles: the 3s only."""
    classes = np.array([[1, 1, 1, 2, 3], [4, 4, 4, 5, 6]])
    m = megapixel_mnist.measure_stand_in(_Split(classes, 100, {"noise": {"count": 3}}))
    np.testing.assert_allclose(m.object_side, np.full(10, 28.0))
    np.testing.assert_allclose(m.object_fraction, np.full(10, 28 ** 2 / 100 ** 2))
    np.testing.assert_array_equal(m.image_hw, [[100, 100], [100, 100]])
    assert dict(m.extra)["noise patches per image"].startswith("3")
    needles = needle_mnist.measure_stand_in(_Split(classes, 100, {}))
    np.testing.assert_array_equal(needles.objects_per_image, [1, 0])
    big = o2i.measure_stand_in(_Split(classes, 300, {"digit_size": 56, "noise": {"count": 7}}))
    np.testing.assert_allclose(big.object_side, np.full(10, 56.0))
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        canvas_statistics(_Split(classes, 100, {}), "d", "o", objects=np.ones((2, 4), bool))


def test_traffic_signs_measure_stand_in(tmp_path: Path) -> None:
    """Two images of 30x40 from their headers; one holds signs of 10x10 and 4x9 px, the other none."""
    paths = []
    for name in ("a.jpg", "b.jpg"):
        Image.new("RGB", (40, 30)).save(tmp_path / name)
        paths.append(tmp_path / name)
    signs = (traffic_signs.Sign("VISIBLE", (12.0, 12.0), (2.0, 2.0), "PROHIBITORY", "50_SIGN"),
             traffic_signs.Sign("VISIBLE", (20.0, 29.0), (16.0, 20.0), "PROHIBITORY", "70_SIGN"))
    data = traffic_signs.TrafficSigns(tmp_path, "train", [traffic_signs.Sample(paths[0], 1, signs),
                                                          traffic_signs.Sample(paths[1], 0, ())])
    m = traffic_signs.measure_stand_in(data)
    np.testing.assert_array_equal(m.image_hw, [[30, 40], [30, 40]])
    np.testing.assert_allclose(m.object_side, [10.0, 6.0])
    np.testing.assert_allclose(m.object_fraction, [100 / 1200, 36 / 1200])
    np.testing.assert_array_equal(m.objects_per_image, [2, 0])


@pytest.mark.parametrize("module", [colon_cancer, megapixel_mnist, traffic_signs, needle_mnist, o2i, fmow,
                                    needle_camelyon, camelyon16])
def test_real_statistics_name_a_source_or_say_not_reported(module) -> None:
    """Every quoted value names its source, unless it is NOT_REPORTED."""
    real = module.REAL_STATISTICS
    quoted = [real.image_size, real.object_side, real.object_fraction, real.objects_per_image] + [q for _, q in real.extra]
    for q in quoted:
        assert q.value.startswith(NOT_REPORTED) or q.source, q
    if real.object_side_px is not None:
        assert real.object_side_source and real.object_side_px[0] <= real.object_side_px[1]


def test_needle_camelyon_measure_stand_in() -> None:
    """From the index alone: a positive of ratio 1 % in a 1024 crop is a metastasis of side 102.4 px; a negative none."""
    rows = [{"size": "1024", "label": "1", "ratio": "0.01"}, {"size": "1024", "label": "0", "ratio": "0"},
            {"size": "512", "label": "1", "ratio": "0.0025"}]
    m = needle_camelyon.measure_stand_in(SimpleNamespace(rows=rows))
    np.testing.assert_allclose(m.object_side, [102.4, 25.6])
    np.testing.assert_allclose(m.object_fraction, [0.01, 0.0025])
    np.testing.assert_array_equal(m.objects_per_image, [1, 0, 1])
    np.testing.assert_array_equal(m.image_hw, [[1024, 1024], [1024, 1024], [512, 512]])


def test_polygon_area() -> None:
    """The shoelace area of a 40 x 30 rectangle (either orientation) and of a right triangle; degenerate: 0."""
    rect = np.array([[0, 0], [40, 0], [40, 30], [0, 30]])
    assert camelyon16.polygon_area(rect) == 1200.0
    assert camelyon16.polygon_area(rect[::-1]) == 1200.0
    assert camelyon16.polygon_area(np.array([[0, 0], [4, 0], [0, 3]])) == 6.0
    assert camelyon16.polygon_area(np.array([[0, 0], [1, 1]])) == 0.0


def test_camelyon16_measure_stand_in(tmp_path: Path) -> None:
    """Tiny slides of 320 x 288; each training tumour slide holds one 40 x 40 square metastasis, the others none."""
    root = write_camelyon16(tmp_path / "c16", normal=1, tumour=2, test={"test_001": "Normal"})
    data = camelyon16.load_camelyon16(root)
    m = camelyon16.measure_stand_in(list(data))
    np.testing.assert_array_equal(m.image_hw, np.tile([320, 288], (len(data), 1)))
    np.testing.assert_array_equal(m.objects_per_image, [1 if r.annotation is not None else 0 for r in data])
    np.testing.assert_allclose(m.object_side, [40.0, 40.0])
    np.testing.assert_allclose(m.object_fraction, [1600 / (320 * 288)] * 2)


def test_fmow_measure_stand_in() -> None:
    """From the metadata alone: a 600 x 800 image with boxes 20 x 5 and 30 x 30, a 1000 x 1000 one with one 100 x 100."""
    items = [fmow.ImageMeta(Path("a.jpg"), "airport", np.array([[0, 0, 20, 5], [5, 5, 30, 30]]), ("airport",) * 2,
                            0.5, 800, 600),
             fmow.ImageMeta(Path("b.jpg"), "barn", np.array([[1, 1, 100, 100]]), ("barn",), 0.5, 1000, 1000)]
    data = fmow.FMoW(Path("."), "train", items, np.array([0, 4]), synthetic=True)
    m = fmow.measure_stand_in(data)
    np.testing.assert_array_equal(m.image_hw, [[600, 800], [1000, 1000]])
    np.testing.assert_allclose(m.object_side, [10.0, 30.0, 100.0])
    np.testing.assert_allclose(m.object_fraction, [100 / 480000, 900 / 480000, 0.01])
    np.testing.assert_array_equal(m.objects_per_image, [2, 1])
