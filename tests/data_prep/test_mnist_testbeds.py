"""MNIST testbeds: digit pools, megapixel MNIST (ATS 4.2), O2I (thesis 3.1.4-3.1.5), NeedleMNIST (Zoom-In app. J)."""

from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chisquare

from data_prep import megapixel_mnist as mp
from data_prep import mnist_digits as md
from data_prep import needle_mnist as nm
from data_prep import o2i
from zoomin_lib.infra.io import read_json


def _files(root: Path) -> dict[str, bytes]:
    """Every file under `root` by relative path, with its bytes."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def megapixel(tmp_path_factory) -> Path:
    """A small generated megapixel MNIST dataset."""
    return mp.generate(tmp_path_factory.mktemp("mp") / "data", 40, 10, 10, seed=3)


@pytest.fixture(scope="module")
def o2i_112(tmp_path_factory) -> Path:
    """A small generated O2I dataset with 112 px digits (200 noise curves per canvas)."""
    return o2i.generate(tmp_path_factory.mktemp("o2i") / "data", 6, 2, 2, seed=5, digit_size=112)


# ----------------------------------------------------------------------------------------------------
# Digit pools
# ----------------------------------------------------------------------------------------------------


def test_pools_are_disjoint_stratified_and_cover_the_5000_digits():
    images, labels = md.load_digits()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8 and labels.shape == (5000,)
    assert np.array_equal(np.bincount(labels), np.full(10, 500))
    idx = md.pool_indices(seed=0)
    union = np.concatenate(list(idx.values()))
    assert len(union) == 5000 and len(np.unique(union)) == 5000  # disjoint and covering
    pools = md.digit_pools(seed=0)
    for split, per_class in zip(md.SPLITS, (300, 100, 100)):
        assert np.array_equal(np.bincount(pools[split][1], minlength=10), np.full(10, per_class))
        assert np.array_equal(pools[split][0], images[idx[split]])
    assert all(np.array_equal(idx[s], md.pool_indices(seed=0)[s]) for s in md.SPLITS)
    assert not np.array_equal(idx["test"], md.pool_indices(seed=1)["test"])


def test_bad_pool_fractions_raise():
    with pytest.raises(ValueError, match="fractions"):
        md.digit_pools(fractions=(0.5, 0.5))
    with pytest.raises(ValueError, match="fractions"):
        md.digit_pools(fractions=(0.7, 0.2, 0.2))


# ----------------------------------------------------------------------------------------------------
# Tasks and placement on canvases built by hand
# ----------------------------------------------------------------------------------------------------


def test_task_labels_on_a_hand_built_canvas():
    classes = np.array([7, 2, 7, 9, 7])
    positions = np.array([[500, 40], [120, 900], [300, 300], [1400, 10], [121, 0]])  # the 2 is top-most
    labels = mp.task_labels(classes, positions)
    assert (labels["maj"], labels["max"], labels["top"]) == (7, 9, 2)
    assert np.array_equal(labels["multi"], np.isin(np.arange(10), [2, 7, 9]).astype(np.uint8))
    tie = np.array([[120, 900], [120, 40], [500, 0], [600, 0], [700, 0]])  # two digits share the top row
    assert mp.task_labels(classes, tie)["top"] == 2  # the leftmost of the two: classes[1]
    batch = mp.task_labels(np.stack([classes, classes[::-1]]), np.stack([positions, positions]))
    assert batch["top"].tolist() == [2, 9] and batch["maj"].tolist() == [7, 7]
    with pytest.raises(ValueError, match="majority"):
        mp.task_labels(np.array([1, 1, 2, 2, 3]), positions)
    # the whole order, top-most first: by top row, then column, then index (an exact tie)
    assert mp.top_order(positions).tolist() == [1, 4, 2, 0, 3]
    assert mp.top_order(np.array([[5, 5], [5, 5], [1, 9]])).tolist() == [2, 0, 1]
    assert mp.top_order(np.stack([positions, tie])).tolist() == [[1, 4, 2, 0, 3], [1, 0, 2, 3, 4]]


def test_render_canvas_puts_the_given_digits_at_the_given_positions():
    images, labels = md.digit_pools()["test"]
    pick = np.array([np.flatnonzero(labels == c)[0] for c in (4, 4, 4, 0, 8)])
    positions = np.array([[0, 0], [28, 0], [1472, 1472], [700, 700], [10, 1000]])
    canvas = mp.render_canvas(images[pick], positions, 1500)
    assert canvas.shape == (1500, 1500) and canvas.dtype == np.uint8
    for digit, (y, x) in zip(images[pick], positions):
        assert np.array_equal(canvas[y: y + 28, x: x + 28], digit)
    assert canvas.sum() == images[pick].astype(np.int64).sum()  # nothing else drawn
    labels_ = mp.task_labels(labels[pick], positions)
    assert (labels_["maj"], labels_["max"], labels_["top"]) == (4, 8, 4)
    with pytest.raises(ValueError, match="overlap"):
        mp.render_canvas(images[pick], np.array([[0, 0], [27, 27], [100, 100], [200, 200], [300, 300]]), 1500)


def test_place_boxes_fills_a_crowded_canvas_and_rejects_an_impossible_one():
    rng = np.random.default_rng(0)
    for _ in range(50):
        corners = md.place_boxes(rng, 3, 28, 64, 64)
        assert md.boxes_disjoint(corners, 28) and corners.min() >= 0 and corners.max() <= 64 - 28
    full = md.place_boxes(rng, 4, 28, 64, 64)  # exactly the grid capacity
    assert md.boxes_disjoint(full, 28)
    with pytest.raises(ValueError, match="at most 4"):
        md.place_boxes(rng, 5, 28, 64, 64)
    with pytest.raises(ValueError, match="does not fit"):
        md.place_boxes(rng, 1, 28, 20, 64)


# ----------------------------------------------------------------------------------------------------
# Megapixel MNIST
# ----------------------------------------------------------------------------------------------------


def test_megapixel_canvases_follow_the_recipe(megapixel):
    params = read_json(megapixel / "parameters.json")
    assert params["canvas_size"] == 1500 and params["noise"]["count"] == 50
    data = mp.MegapixelMNIST(megapixel, "train")
    pool_labels = md.digit_pools()["train"][1]
    assert len(data) == 40 and np.array_equal(data.classes, pool_labels[data.digit_index])
    for i in range(len(data)):
        counts = np.bincount(data.classes[i], minlength=10)
        assert sorted(counts[counts > 0].tolist()) == [1, 1, 3]  # 3 of the majority, 2 distinct others
        assert md.boxes_disjoint(data.positions[i], 28)
        assert len(np.unique(data.digit_index[i])) == 5
    recomputed = mp.task_labels(data.classes, data.positions)
    assert all(np.array_equal(recomputed[t], data.targets[t]) for t in mp.TASKS)
    assert np.array_equal(data.targets["maj"], np.argmax([np.bincount(c, minlength=10) for c in data.classes], 1))


def test_megapixel_canvas_shows_its_digits_and_keeps_the_noise_off_them(megapixel):
    data = mp.MegapixelMNIST(megapixel, "test")
    noise = data.noise(0)
    assert noise.positions.shape == (50, 2)
    assert not md.overlaps(noise.positions, 28, data.positions[0], 28).any()
    canvas = data.canvas(0)
    assert canvas.shape == (1500, 1500) and canvas.dtype == np.uint8
    for digit, (top, left, bottom, right) in zip(data.digits(0), data.digit_boxes(0)):
        assert np.array_equal(canvas[top:bottom, left:right], digit)
    assert (canvas > 0).sum() > (data.digits(0) > 0).sum()  # the noise is there too
    assert np.array_equal(canvas, data.canvas(0))


def test_megapixel_splits_use_disjoint_digits_and_prefixes_are_stable(megapixel, tmp_path):
    pools = md.pool_indices()
    train, test = mp.MegapixelMNIST(megapixel, "train"), mp.MegapixelMNIST(megapixel, "test")
    used_train = set(pools["train"][np.unique(train.digit_index)])
    used_test = set(pools["test"][np.unique(test.digit_index)])
    assert not used_train & used_test
    small = mp.MegapixelMNIST(mp.generate(tmp_path / "small", 5, 0, 0, seed=3), "train")
    assert np.array_equal(small.positions, train.positions[:5]) and np.array_equal(small.canvas(4), train.canvas(4))


def test_loader_errors(megapixel):
    with pytest.raises(ValueError, match="split"):
        mp.MegapixelMNIST(megapixel, "dev")
    with pytest.raises(ValueError, match="not a o2i"):
        o2i.O2IMNIST(megapixel, "train")
    with pytest.raises(IndexError):
        mp.MegapixelMNIST(megapixel, "val").canvas(10)
    with pytest.raises(ValueError, match="do not fit"):
        mp.generate(megapixel.parent / "bad", 1, 1, 1, canvas_size=60)
    with pytest.raises(ValueError, match="non-negative"):
        mp.generate(megapixel.parent / "bad", -1, 1, 1)


# ----------------------------------------------------------------------------------------------------
# O2I: formulas, Bezier noise, generated canvases
# ----------------------------------------------------------------------------------------------------


def test_o2i_ratios_and_noise_counts_follow_the_formulas():
    percent = {s: 100 * o2i.o2i_ratio(s) for s in o2i.DIGIT_SIZES}
    assert percent == pytest.approx({28: 0.008711, 56: 0.034844, 84: 0.0784, 112: 0.139378}, rel=1e-4)
    for s, decimals in ((56, 3), (84, 3), (112, 2)):  # the thesis's numbers: ours cut to its printed digits
        assert np.floor(percent[s] * 10**decimals) / 10**decimals == pytest.approx(o2i.THESIS_O2I_PERCENT[s])
    assert round(percent[28], 2) == o2i.THESIS_O2I_PERCENT[28]  # 0.0087 printed as 0.01 (rounded)
    assert [o2i.noise_count(s) for s in o2i.DIGIT_SIZES] == [800, 600, 400, 200]
    assert all(o2i.noise_count(s) == round(s * -7.14 + 1000) for s in range(1, 140))
    assert 100 * o2i.o2i_ratio(46, 1500) == pytest.approx(0.094, abs=5e-4)  # fig. 8's 1500 px canvas
    with pytest.raises(ValueError):
        o2i.noise_count(200)
    with pytest.raises(ValueError):
        o2i.o2i_ratio(3001)


def test_control_point_counts_follow_their_probabilities():
    counts = o2i.sample_control_counts(np.random.default_rng(2024), 9000)
    observed = np.array([(counts == p).sum() for p in o2i.CONTROL_POINTS])
    assert observed.sum() == 9000
    assert chisquare(observed, 9000 * np.array(o2i.CONTROL_PROBABILITIES)).pvalue > 0.01


def test_bezier_curve_is_equation_9():
    control = np.array([[0.0, 0.0], [10.0, 20.0], [20.0, 0.0]])
    curve = o2i.bezier_curve(control)
    assert curve.shape == (100, 2)
    assert np.allclose(curve[0], control[0]) and np.allclose(curve[-1], control[-1])
    t = np.linspace(0, 1, 100)[:, None]
    assert np.allclose(curve, (1 - t) ** 2 * control[0] + 2 * t * (1 - t) * control[1] + t**2 * control[2])
    assert all(np.allclose(o2i.bernstein(p).sum(axis=1), 1) for p in o2i.CONTROL_POINTS)


def test_thickness_sets_the_stroke_width():
    straight = np.array([[4.0, 14.0], [10.0, 14.0], [17.0, 14.0], [23.0, 14.0]])  # a 19 px horizontal stroke
    for thickness in (1.0, 1.925, 3.0):
        ink = o2i.bezier_patch(straight, thickness).astype(np.float64) / 255
        assert ink.sum() / 19 == pytest.approx(thickness, abs=0.15)
    rng = np.random.default_rng(7)
    controls = [rng.uniform(3, 24, (p, 2)) for p in o2i.sample_control_counts(rng, 30)]
    ink = {t: np.array([o2i.bezier_patch(c, t).sum() for c in controls], float) for t in (1.4, 1.925, 2.4)}
    assert np.all(ink[1.4] < ink[1.925]) and np.all(ink[1.925] < ink[2.4])
    with pytest.raises(ValueError):
        o2i.bezier_patch(straight, 0.0)


def test_o2i_canvases(o2i_112):
    params = read_json(o2i_112 / "parameters.json")
    assert params["noise"]["count"] == 200 and params["noise"]["thickness"] == o2i.THICKNESS
    assert params["o2i_ratio"] == pytest.approx(112**2 / 3000**2)
    data = o2i.O2IMNIST(o2i_112, "train")
    assert all(md.boxes_disjoint(p, 112) for p in data.positions)
    noise = data.noise(1)
    assert noise.positions.shape == (200, 2) and set(noise.counts) <= {4, 6, 8}
    assert not md.overlaps(noise.positions, 112, data.positions[1], 112).any()
    canvas = data.canvas(1)
    assert canvas.shape == (3000, 3000)
    digits = data.digits(1)
    assert digits.shape == (5, 112, 112)
    for digit, (top, left, bottom, right) in zip(digits, data.digit_boxes(1)):
        assert np.array_equal(canvas[top:bottom, left:right], digit)
    recomputed = mp.task_labels(data.classes, data.positions)
    assert all(np.array_equal(recomputed[t], data.targets[t]) for t in mp.TASKS)


# ----------------------------------------------------------------------------------------------------
# NeedleMNIST
# ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", sorted(nm.DISTRACTORS))
def test_needle_distractor_counts_and_one_three_in_positives(size, tmp_path):
    data = nm.NeedleMNIST(nm.generate(tmp_path / "needle", 4, 2, 2, seed=1, canvas_size=size), "train")
    assert data.classes.shape == (4, nm.DISTRACTORS[size] + 1)
    assert data.targets.sum() == 2  # balanced
    threes = (data.classes == 3).sum(axis=1)
    assert np.array_equal(threes, data.targets)  # exactly one 3 in positives, none in negatives
    assert all(md.boxes_disjoint(p, 28) for p in data.positions)
    assert data.positions.min() >= 0 and data.positions.max() <= size - 28
    canvas = data.canvas(0)
    assert canvas.shape == (size, size) and canvas.dtype == np.uint8
    images = md.digit_pools()["train"][0]
    for k, (top, left, bottom, right) in enumerate(data.digit_boxes(0)):
        assert np.array_equal(canvas[top:bottom, left:right], images[data.digit_index[0, k]])


def test_needle_layout_errors_and_overlap_option(tmp_path):
    with pytest.raises(ValueError, match="allow_overlap"):
        nm.generate(tmp_path / "a", 2, 0, 0, canvas_size=64, n_distractors=10)
    with pytest.raises(ValueError, match="distractor count"):
        nm.generate(tmp_path / "a", 2, 0, 0, canvas_size=100)
    data = nm.NeedleMNIST(nm.generate(tmp_path / "b", 2, 0, 0, canvas_size=64, n_distractors=10, allow_overlap=True))
    assert data.classes.shape == (2, 11) and (data.classes == 3).sum() == 1
    assert data.canvas(1).shape == (64, 64)


# ----------------------------------------------------------------------------------------------------
# Reproducibility and the cache
# ----------------------------------------------------------------------------------------------------


GENERATORS = {
    "megapixel": lambda root, seed: mp.generate(root, 6, 2, 2, seed=seed),
    "o2i": lambda root, seed: o2i.generate(root, 6, 2, 2, seed=seed, digit_size=56),
    "needle": lambda root, seed: nm.generate(root, 6, 2, 2, seed=seed, canvas_size=256),
}


@pytest.mark.parametrize("name", sorted(GENERATORS))
def test_same_seed_same_bytes_other_seed_other_bytes(name, tmp_path):
    make = GENERATORS[name]
    first, again, other = (_files(make(tmp_path / tag, seed)) for tag, seed in (("a", 0), ("b", 0), ("c", 1)))
    assert set(first) == {"parameters.json", "train.npz", "val.npz", "test.npz"}
    assert first == again
    assert all(first[f] != other[f] for f in ("train.npz", "val.npz", "test.npz"))


def test_default_datasets_are_cached_and_regenerated_when_parameters_change(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    root = mp.default_dataset(n_train=4, n_val=1, n_test=1)
    assert root.parent == tmp_path / "megapixel_mnist" and len(mp.MegapixelMNIST(root, "train")) == 4
    stamp = (root / "train.npz").stat().st_mtime_ns, (root / "train.npz").stat().st_ino
    assert mp.default_dataset(n_train=4, n_val=1, n_test=1) == root
    assert ((root / "train.npz").stat().st_mtime_ns, (root / "train.npz").stat().st_ino) == stamp
    other = mp.default_dataset(n_train=5, n_val=1, n_test=1)
    assert other != root and len(mp.MegapixelMNIST(other, "train")) == 5
    assert o2i.default_dataset(digit_size=84, n_train=2, n_val=1, n_test=1).parent.name == "o2i_mnist_84"
    needle = nm.default_dataset(canvas_size=128, n_train=2, n_val=1, n_test=1)
    assert needle.parent.name == "needle_mnist_128" and len(nm.NeedleMNIST(needle, "val")) == 1
