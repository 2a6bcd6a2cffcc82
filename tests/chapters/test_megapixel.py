"""Tests of zoomin_lib.chapters.megapixel: the strided encoder, the five methods' heads, data tensors, region masks, cost scans."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from data_prep import megapixel_mnist as mp
from zoomin_lib.book.paper_numbers import THESIS_TABLE4_MNIST, THESIS_TABLE8_MNIST
from zoomin_lib.chapters import megapixel as mm
from zoomin_lib.chapters.multitask import N_OUTPUTS, task_logits

SMALL = mm.Setup(canvas=100, ats_scale=0.2, patch=20, ns=(3, 5), n=3, zoom_scale1=0.2, zoom_scale2=0.4, zoom_tile=50,
                 ips_memory=3, ips_iter=5, cnn_scale=0.3)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> mp.MegapixelMNIST:
    """A few 200x200 canvases with 3 noise patches."""
    root = mp.generate(tmp_path_factory.mktemp("mm") / "data", 4, 0, 2, seed=1, canvas_size=200, n_noise=3)
    return mp.MegapixelMNIST(root, "train")


def test_strided_lenet_gives_32_features_normalised_on_request():
    x = torch.rand(6, 1, 50, 50)
    z = mm.StridedLeNet(1)(x)
    assert z.shape == (6, 32)
    zn = mm.StridedLeNet(1, normalize=True)(x)
    assert torch.allclose(zn.norm(dim=1), torch.ones(6), atol=1e-5)
    with pytest.raises(ValueError, match="expects"):
        mm.StridedLeNet(1)(torch.rand(2, 3, 50, 50))
    with pytest.raises(ValueError, match="encoder"):
        mm.patch_encoder("resnet18")


def test_every_method_gives_forty_logits_in_train_and_eval_modes():
    x = torch.rand(2, 1, 100, 100)
    factories = mm.methods(SMALL)
    assert list(factories) == ["ATS-3", "ATS-5", "Zoom-In-3", "U-3", "IPS (M=3, I=5)", "CNN s=0.3"]
    for name, factory in factories.items():
        model = factory()
        for mode in (model.train_mode, model.eval_mode):
            out = model(x, mode=mode, generator=torch.Generator().manual_seed(0))
            assert task_logits(out).shape == (2, N_OUTPUTS), (name, mode)


def test_canvas_loader_and_targets_match_the_dataset(data):
    load = mm.canvas_loader(data, [2, 0])
    x = load([1, 0])
    assert x.shape == (2, 1, 200, 200) and x.dtype == torch.float32 and 0 <= float(x.min()) and float(x.max()) <= 1
    assert np.allclose(x[0, 0].numpy() * 255, data.canvas(0)) and np.allclose(x[1, 0].numpy() * 255, data.canvas(2))
    y = mm.split_targets(data, [2, 0])
    assert y.shape == (2, 13) and y[1, 0] == data.labels(0)["maj"] and np.array_equal(y[1, 3:], data.labels(0)["multi"])


def test_region_masks_partition_the_view_and_find_every_digit(data):
    masks = mm.region_masks(data, 0, (40, 40))
    stacked = torch.stack(list(masks.values())).int()
    assert torch.equal(stacked.sum(0), torch.ones(40, 40, dtype=torch.int))  # disjoint and covering
    rows, cols = torch.nonzero(masks["digits"], as_tuple=True)
    centres = (rows * 199 // 39, cols * 199 // 39)  # view_to_full on a 40 -> 200 axis
    boxes = data.digit_boxes(0)
    for r, c in zip(*centres):
        assert any(t <= r < b and left <= c < right for t, left, b, right in boxes.tolist())
    assert int(masks["digits"].sum()) >= 5  # at least one view location on each of the five 28x28 digits


def test_canvas_loader_cache_gives_the_rendered_pixels(data):
    for indices in (None, [2, 0]):
        lazy, cached = mm.canvas_loader(data, indices), mm.canvas_loader(data, indices, max_cache_mb=64)
        idx = [1, 0, 1]
        assert torch.equal(cached(idx), lazy(idx))
    tiny = mm.canvas_loader(data, max_cache_mb=1e-6)  # too small to cache: rendered on demand, the same pixels
    assert torch.equal(tiny([0]), mm.canvas_loader(data)([0]))


def test_picks_returns_the_patches_a_model_reads():
    x = torch.rand(1, 1, 100, 100)
    for name, factory in mm.methods(SMALL, include=("ats", "ips")).items():
        centers, patch = mm.picks(factory(), x, torch.Generator().manual_seed(0))
        expected = SMALL.ips_memory if name.startswith("IPS") else int(name.split("-")[1])
        assert centers.shape == (expected, 2) and patch == (20, 20), name


def test_memory_scan_shows_ips_flat_and_the_cnn_growing():
    setup = mm.Setup(canvas=100, ats_scale=0.2, patch=20, ns=(3,), n=3, zoom_scale1=0.2, zoom_scale2=0.4,
                     zoom_tile=50, ips_memory=3, ips_iter=5, cnn_scale=1.0)
    rows = mm.memory_scan(mm.methods(setup, include=("ips", "cnn")), (100, 200))
    ips = [r["peak memory (MiB)"] for r in rows if r["method"].startswith("IPS")]
    cnn = [r["peak memory (MiB)"] for r in rows if r["method"].startswith("CNN")]
    assert len(rows) == 4 and ips[1] == pytest.approx(ips[0], rel=0.05)
    assert cnn[1] > 3 * cnn[0]


def test_dataset_root_caches_a_reduced_canvas_apart_from_the_paper_one(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    root = mm.dataset_root(canvas=200, n_noise=3, n_train=3, n_test=2, seed=0)
    assert root.parent == tmp_path / "megapixel_mnist_200px_3noise"
    train = mp.MegapixelMNIST(root, "train")
    assert len(train) == 3 and train.canvas_size == 200 and len(mp.MegapixelMNIST(root, "test")) == 2
    assert mm.dataset_root(canvas=200, n_noise=3, n_train=3, n_test=2, seed=0) == root


def test_example_canvas_outlives_its_temporary_folder():
    ex = mm.example_canvas(canvas=300, n_noise=4, seed=2)
    assert ex.canvas(0).shape == (300, 300) and len(ex.noise(0).positions) == 4


def test_paper_rows_and_cost_rows():
    rows = mm.paper_accuracy_rows(THESIS_TABLE8_MNIST, THESIS_TABLE4_MNIST)
    assert len(rows) == 4 and rows[0]["Maj %"] == 99.1 and rows[0]["source"].startswith("Riffi-Aslett, table 8")
    costs = {"A": {"peak_memory_mb": 1.0, "mflops": 2e3, "mmacs": 1e3, "ms_per_sample": 3.0, "mode": "topk"}}
    row = mm.cost_rows(costs, {"A": 5.0})[0]
    assert (row["GFLOPs"], row["GMACs"], row["training step peak memory (MiB)"]) == (2.0, 1.0, 5.0)


class _PeakedAttention(torch.nn.Module):
    """An ATS-like stand-in whose scores are `peak` on the view locations of the digits of given canvases, 0 elsewhere."""

    def __init__(self, masks: list[torch.Tensor], peak: float) -> None:
        super().__init__()
        self.attention, self.scale = True, 0.2  # attention_map's ATS branch: softmax(scores) on V(x, 0.2)
        self.weight = torch.nn.Parameter(torch.zeros(1))  # a parameter, so the model has a device
        self.masks, self.peak = masks, peak

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m.flatten().float() * self.peak for m in self.masks[: x.shape[0]]])  # [B, h*w]


def test_attention_masses_match_a_per_canvas_reference_and_find_peaked_attention(data):
    indices = [2, 0, 3]
    load = mm.canvas_loader(data, indices)
    digit_masks = [mm.region_masks(data, i, (40, 40))["digits"] for i in indices]
    setup = mm.Setup(canvas=200, ats_scale=0.2, patch=20, ns=(3,), n=3, zoom_scale1=0.1, zoom_scale2=0.2,
                     zoom_tile=100, ips_memory=3, ips_iter=5, cnn_scale=0.3)
    torch.manual_seed(0)
    models = {n: f() for n, f in mm.methods(setup, include=("ats", "zoom")).items()}
    models["peaked"] = _PeakedAttention(digit_masks, peak=40.0)
    models["flat"] = _PeakedAttention(digit_masks, peak=0.0)
    rows = {r["method"]: r for r in mm.attention_masses(models, load, data, indices)}
    assert set(rows) == {"ATS-3", "Zoom-In-3", "peaked", "flat"}
    for name, model in models.items():  # against a simple per-canvas computation
        masses = []
        for k, i in enumerate(indices):
            if isinstance(model, _PeakedAttention):
                model.masks = [digit_masks[k]]  # the stub scores one canvas at a time here
            att = mm.canvas_attention(model.eval(), load([k]))  # [40, 40], one canvas at a time
            masses.append(float(att[mm.region_masks(data, i, tuple(att.shape))["digits"]].sum()))
        assert rows[name]["mass on digits"] == pytest.approx(float(np.mean(masses)), abs=1e-5), name
        assert sum(rows[name][f"mass on {r}"] for r in ("digits", "noise", "empty")) == pytest.approx(1, abs=1e-4)
        assert sum(rows[name][f"uniform on {r}"] for r in ("digits", "noise", "empty")) == pytest.approx(1, abs=1e-6)
    share = float(np.mean([m.float().mean() for m in digit_masks]))
    assert rows["flat"]["mass on digits"] == pytest.approx(share, abs=1e-6) == rows["flat"]["uniform on digits"]
    assert rows["peaked"]["mass on digits"] > 0.99


def test_plot_learning_draws_mass_only_for_runs_that_followed_a_canvas():
    class Run:  # TaskRun.curve's contract: (seconds, values) per epoch, epoch 0 first; NaN where not recorded
        def __init__(self, error, mass):
            self.values = {"maj_error": np.array(error), "mass_digits": np.array(mass)}

        def curve(self, key):
            return np.arange(len(self.values[key])), self.values[key]

    runs = {"ATS-10": Run([0.9, 0.6, 0.5], [0.1, 0.3, 0.5]), "U-10": Run([0.9, 0.9, 0.9], [np.nan] * 3)}
    fig = mm.plot_learning(runs, chance_error=0.86, title="t")
    left, right = fig.axes
    assert len(left.lines) == 3 and len(right.lines) == 1  # two error curves and chance; one mass curve
    np.testing.assert_allclose(right.lines[0].get_ydata(), [0.1, 0.3, 0.5])
    import matplotlib.pyplot as plt

    plt.close(fig)


def test_plateau_exit_is_the_first_epoch_above_the_share():
    assert mm.plateau_exit([0.06, 0.07, 0.3, 0.8, 0.4, 0.9]) == 3  # the first crossing, not the last
    assert mm.plateau_exit([0.06, 0.07, 0.3], share=0.25) == 2
    assert mm.plateau_exit([0.06, 0.5, 0.2]) is None  # "more than" the share
    assert mm.plateau_exit([0.7, 0.9]) == 0
    assert mm.plateau_exit([]) is None


def test_digit_ranks_follow_the_top_task_rule(data):
    boxes = np.array([[50, 10, 78, 38], [5, 90, 33, 118], [5, 40, 33, 68], [120, 0, 148, 28]])
    centers = np.array([[6, 41], [6, 91], [60, 20], [130, 5], [100, 100], [32, 67], [33, 50], [50, 38]])
    # digit 2 (row 5, column 40) is the top-most, the tie at row 5 going to the smaller column, then digit 1;
    # bottom and right edges are exclusive
    assert mm.digit_ranks(boxes, centers).tolist() == [0, 1, 2, 3, -1, 0, -1, -1]
    for i in range(len(data)):  # the digit ranked first is the one whose class is the Top label
        boxes = data.digit_boxes(i)
        ranks = mm.digit_ranks(boxes, (boxes[:, :2] + boxes[:, 2:]) // 2)  # [5], each digit's centre
        assert sorted(ranks.tolist()) == [0, 1, 2, 3, 4]
        assert data.arrays["classes"][i][ranks.tolist().index(0)] == data.labels(i)["top"]


class _PicksOn(torch.nn.Module):
    """A stub that reads, on each canvas, one patch per (rank, weight) of `picks`, centred on the digit of that rank.

    Rank -1 puts the patch at (0, 0), on no digit; `weights=False` returns no weights (as a sampled mode).
    """

    eval_mode = "topk"

    def __init__(self, data, indices, picks, weights=True):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.data, self.indices, self.picks, self.weighted, self.calls = data, list(indices), picks, weights, 0

    def forward(self, x, mode, generator=None):
        centers = []
        for _ in range(x.shape[0]):
            boxes = self.data.digit_boxes(self.indices[self.calls])
            self.calls += 1
            order = mp.top_order(boxes[:, :2])
            centers.append([[boxes[order[r]][0] + 2, boxes[order[r]][1] + 2] if r >= 0 else [0, 0]
                            for r, _ in self.picks])
        weights = torch.tensor([[w for _, w in self.picks]] * x.shape[0]) if self.weighted else None
        return type("Out", (), {"centers": torch.tensor(centers, dtype=torch.long), "weights": weights})()


def test_picks_by_rank_weighs_the_patches_and_matches_a_per_canvas_reference(data):
    if any(((data.digit_boxes(i)[:, 0] == 0) & (data.digit_boxes(i)[:, 1] == 0)).any() for i in range(len(data))):
        pytest.skip("a digit covers the canvas's corner, where the stub's no-digit centre falls")
    indices = [3, 1, 0]
    load = mm.canvas_loader(data, indices)
    torch.manual_seed(0)
    models = {n: f() for n, f in mm.methods(SMALL, include=("ats", "zoom")).items() if n in ("ATS-3", "Zoom-In-3")}
    models["weighted"] = _PicksOn(data, indices, [(1, 3.0), (1, 1.0), (0, 2.0), (-1, 2.0)])
    models["unweighted"] = _PicksOn(data, indices, [(1, 3.0), (0, 1.0), (-1, 1.0), (-1, 1.0)], weights=False)
    rows = {r["method"]: r for r in mm.picks_by_rank(models, load, data, indices, batch=2)}
    assert rows["weighted"]["2nd from the top"] == pytest.approx(0.5)
    assert rows["weighted"]["top-most digit"] == pytest.approx(0.25) == rows["weighted"]["no digit"]
    assert rows["weighted"]["digits read per canvas"] == 2
    assert rows["unweighted"]["no digit"] == pytest.approx(0.5)  # equal weights when the model gives none
    assert rows["unweighted"]["2nd from the top"] == pytest.approx(0.25) == rows["unweighted"]["top-most digit"]
    for name in ("ATS-3", "Zoom-In-3"):  # against the model's own top-k output, one canvas at a time
        per_canvas = []
        for k, i in enumerate(indices):
            with torch.no_grad():
                out = models[name].eval()(load([k]), mode="topk")
            ranks = mm.digit_ranks(data.digit_boxes(i), out.centers[0].numpy())
            w = out.weights[0].numpy() / out.weights[0].numpy().sum()
            per_canvas.append([w[ranks == r].sum() for r in range(-1, 5)])
        expected = np.mean(per_canvas, axis=0)  # [6]: no digit, then ranks 0..4
        assert rows[name]["no digit"] == pytest.approx(expected[0], abs=1e-6)
        for r, column in enumerate(mm.RANK_NAMES):
            assert rows[name][column] == pytest.approx(expected[r + 1], abs=1e-6), (name, column)
        assert sum(rows[name][c] for c in (*mm.RANK_NAMES, "no digit")) == pytest.approx(1)


class _OneTile(torch.nn.Module):
    """A stub Zoom-In first stage: alpha one-hot on tile `tile` of a `grid` of `tile_size` tiles."""

    def __init__(self, tile, grid, tile_size):
        super().__init__()
        self.p = torch.nn.Parameter(torch.zeros(1))
        self.tile, self.grid, self.tile_size = tile, grid, (tile_size, tile_size)

    def first_stage(self, x):
        alpha = torch.zeros(x.shape[0], self.grid[0] * self.grid[1])
        alpha[:, self.tile] = 1
        return alpha


def test_alpha_by_tile_row_reads_the_grid_row_major_and_finds_the_digits_rows(data):
    indices = [1, 3, 0]
    load = mm.canvas_loader(data, indices)
    # 200 / 75: a 3x3 grid whose last row and column are partial; tile 5 is row 1, column 2
    rows = mm.alpha_by_tile_row(_OneTile(5, (3, 3), 75), load, data, indices, batch=2)
    assert [r["tile row (0: top)"] for r in rows] == [0, 1, 2]
    assert [r["alpha (sum over the row)"] for r in rows] == [0, 1, 0]
    top_rows, all_rows = [], []
    for i in indices:  # the top-most digit's and every digit's tile row, by hand
        boxes = data.digit_boxes(i)
        centre_rows = [int((b[0] + b[2]) / 2 // 75) for b in boxes]
        top_rows.append(centre_rows[min(range(5), key=lambda d: (boxes[d][0], boxes[d][1]))])
        all_rows += centre_rows
    assert [r["top-most digit in it (share of canvases)"] for r in rows] == pytest.approx(
        [top_rows.count(k) / 3 for k in range(3)])
    assert [r["digits in it (share of all digits)"] for r in rows] == pytest.approx(
        [all_rows.count(k) / 15 for k in range(3)])
    setup = mm.Setup(canvas=200, ats_scale=0.2, patch=20, ns=(3,), n=3, zoom_scale1=0.1, zoom_scale2=0.2,
                     zoom_tile=50, ips_memory=3, ips_iter=5, cnn_scale=0.3)
    torch.manual_seed(0)
    zoom = mm.methods(setup, include=("zoom",))["Zoom-In-3"]().eval()
    with torch.no_grad():  # a real Zoom-In against the alpha its forward pass returns, one canvas at a time
        alpha = torch.cat([zoom(load([k]), mode="topk").alpha for k in range(3)])  # [3, 16]
    rows = mm.alpha_by_tile_row(zoom, load, data, indices, batch=2)
    assert [r["alpha (sum over the row)"] for r in rows] == pytest.approx(
        alpha.reshape(3, 4, 4).sum(-1).mean(0).tolist(), abs=1e-6)
