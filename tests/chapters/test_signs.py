"""Tests of zoomin_lib.chapters.signs: Zoom-In + boxes added lazily, the methods trained in turn, the texts and figures."""

from __future__ import annotations

from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch

from zoomin_lib.chapters import signs
from zoomin_lib.train.protocol import TrainSettings

CFG = dict(batch=4, epochs=1, lr=1e-3, cosine=False, cnn_epochs=2,
           boxes=dict(pretrain={"a": 1, "b": 2, "f": 3}, epochs=5, lr=1e-4))


def test_add_box_method_derives_its_settings_from_the_base_and_builds_nothing_yet():
    built = []
    methods = {"Zoom-In": lambda: built.append("zoom")}
    settings = {"Zoom-In": TrainSettings(epochs=12, batch_size=8, lr=1e-3, warmup_epochs=4, cosine_decay=True)}
    signs.add_box_method(methods, settings, lambda: iter(()), CFG["boxes"], seed=0, background_class=0)
    assert list(methods) == ["Zoom-In", signs.BOXES] and callable(methods[signs.BOXES]) and built == []
    box = settings[signs.BOXES]
    assert (box.epochs, box.lr, box.box_weight) == (5, 1e-4, 1.0)
    assert (box.batch_size, box.warmup_epochs, box.cosine_decay) == (8, 4, True)
    assert (settings["Zoom-In"].epochs, settings["Zoom-In"].box_weight) == (12, 0.0)  # the base is left as it was


def test_budget_text_names_every_budget():
    text = signs.budget_text({**CFG, "cosine": True}, "N = 5 sub-tiles of 50x50", "CNN")
    assert text == ("N = 5 sub-tiles of 50x50, batch 4, 1 epochs, lr 0.001 with cosine decay; CNN 2 epochs, lr 1e-3; "
                    "Zoom-In + boxes: pre-training epochs a 1, b 2, f 3, then 5 epochs at lr 0.0001")
    assert "cosine" not in signs.budget_text(CFG, "Zoom-In N = 10", "CNN 224x224:")


def test_box_fit_text_reads_the_pretraining_report():
    model = SimpleNamespace(box_pretraining={"fits": {"a": {"top_on_roi": 0.5}, "b": {"top_on_roi": 0.25},
                                                      "f": {"train_accuracy": 0.875}}})
    assert signs.box_fit_text(model, "the sign", "the images", "the tiles") == (
        "Zoom-In + boxes, after pre-training: a's top tile holds the sign in 50 % of the images, b's top location "
        "in 25 % of the tiles; f classifies 88 % of its training sub-tiles")


@pytest.mark.parametrize("any_size", [False, True])
def test_train_methods_gives_masks_to_the_box_method_only(monkeypatch, capsys, tmp_path, any_size):
    calls = []

    def fake_lazy(load, labels, batch, seed, shuffle=True, masks=None):
        return lambda epoch: ("batches", batch, shuffle, masks)

    def fake_run(name, factory, settings, train, test, **kw):
        calls.append((name, train(0), test, kw))
        return SimpleNamespace(accuracy=0.25 if name == signs.BOXES else 0.5), f"model {name}"

    monkeypatch.setattr(signs, "lazy_batches", fake_lazy)
    monkeypatch.setattr(signs, "run_method", fake_run)
    masks = object()
    methods = {"Zoom-In": None, "CNN": None, signs.BOXES: None}
    results, trained = signs.train_methods(
        methods, {n: n for n in methods}, load_train=None, train_labels=np.zeros(3), load_test=None,
        test_labels=np.zeros(2), batch=4, seed=7, out=tmp_path, record={"data": "x"}, box_masks=masks,
        images_of_any_size=any_size)
    assert list(results) == list(methods) and [r[0].accuracy for r in results.values()] == [0.5, 0.5, 0.25]
    assert trained["CNN"] == "model CNN"
    for name, train, test, kw in calls:
        assert train == ("batches", 4, True, masks if name == signs.BOXES else None)
        assert test == ("batches", 8, False, None)
        assert kw["tag"] == f"{name}_r0_f0" and kw["run_seed"] == 7 and kw["record"] == {"data": "x"}
        assert ("loss_wrapper" in kw) == any_size and ("predict_fn" in kw) == any_size
    assert capsys.readouterr().out.splitlines() == ["Zoom-In: test accuracy 0.500", "CNN: test accuracy 0.500",
                                                    "Zoom-In + boxes: test accuracy 0.250"]


def test_save_zoom_figures_titles_each_row_with_truth_and_prediction(monkeypatch, tmp_path):
    saved = {}
    monkeypatch.setattr(signs, "zoom_picks", lambda model, xs: [((0,), (0,), model) for _ in xs])
    monkeypatch.setattr(signs, "zoom_grid", lambda images, picks, truth, titles, suptitle: (titles, suptitle))
    monkeypatch.setattr(signs, "save_figure", lambda fig, out, stem: saved.setdefault(stem, fig))
    signs.save_zoom_figures({"A": 1, "B": 2}, {"A": "fig_a", "B": "fig_b"}, [None, None], [None, None],
                            [[], []], [0, 2], ["zero", "one", "two"], "stand-in", tmp_path)
    assert saved["fig_a"] == (["true zero, predicted one", "true two, predicted one"],
                              "A: highest-attention tile and sub-tile (stand-in)")
    assert saved["fig_b"][0] == ["true zero, predicted two", "true two, predicted two"]


def test_batch_loader_reads_through_the_index_and_standardizes():
    data = SimpleNamespace(load_batch=lambda keys: torch.tensor(keys, dtype=torch.float32).view(-1, 1, 1, 1).repeat(1, 3, 2, 2))
    stats = (torch.full((1, 3, 1, 1), 1.0), torch.full((1, 3, 1, 1), 2.0))
    x = signs.batch_loader(data, np.array([5, 3, 9]), stats)([2, 0])
    assert x.shape == (2, 3, 2, 2) and x[:, 0, 0, 0].tolist() == [4.0, 2.0]  # (9 - 1) / 2, (5 - 1) / 2


def test_cached_batch_loader_gives_the_uncached_batches_and_decodes_each_image_once():
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (4, 5, 3), dtype=np.uint8) for _ in range(4)]
    reads = []

    def read_image(k):
        reads.append(k)
        return images[k]

    def load_batch(keys):
        batch = torch.from_numpy(np.stack([images[k] for k in keys]))
        return batch.permute(0, 3, 1, 2).float().div_(255.0)

    data = SimpleNamespace(read_image=read_image, load_batch=load_batch)
    stats = (torch.tensor([0.2, 0.5, 0.7]).view(1, 3, 1, 1), torch.tensor([0.3, 0.1, 0.9]).view(1, 3, 1, 1))
    index = np.array([3, 1, 0, 2])
    plain = signs.batch_loader(data, index, stats)
    cached = signs.batch_loader(data, index, stats, cache_bytes=2 * 4 * 5 * 3)  # room for two images
    for idx in ([0, 2], [2, 1, 3], [0, 2, 1]):
        assert torch.equal(cached(idx), plain(idx))
    assert reads == [3, 0, 1, 2, 1]  # 3 and 0 kept (read once); 1 and 2, over the cap, read each time


def test_examples_figure_shows_the_classes_present_with_their_sign():
    sign = SimpleNamespace(box=(10, 20, 30, 50))
    data = SimpleNamespace(labels=np.array([0, 2, 2]), read_image=lambda i: np.zeros((60, 80, 3), np.uint8),
                           samples=[SimpleNamespace(signs=[]), SimpleNamespace(signs=[sign]), SimpleNamespace(signs=[])])
    fig = signs.examples_figure(data, "stand-in")
    axes = fig.axes
    assert len(axes) == 2 and [ax.get_title() for ax in axes] == ["EMPTY (stand-in)", "70_SIGN (stand-in)"]
    (box,) = axes[1].patches
    assert (box.get_x(), box.get_y(), box.get_width(), box.get_height()) == (10, 20, 20, 30)
    assert "absent from the training set: 50_SIGN, 80_SIGN" in fig._suptitle.get_text()


# ----------------------------------------------------------------------------------------------------
# IPS and the thesis's studies on traffic signs
# ----------------------------------------------------------------------------------------------------


def test_train_methods_gives_each_method_its_own_extra_terms(monkeypatch, tmp_path):
    seen = {}
    monkeypatch.setattr(signs, "lazy_batches", lambda *a, **k: (lambda epoch: ()))

    def fake_run(name, factory, settings, train, test, **kw):
        seen[name] = kw["extra_terms"]
        return SimpleNamespace(accuracy=0.5), None

    monkeypatch.setattr(signs, "run_method", fake_run)
    term = {"t": lambda *a: torch.tensor(0.0)}
    signs.train_methods({"A": None, "B": None}, {"A": 1, "B": 1}, load_train=None, train_labels=np.zeros(2),
                        load_test=None, test_labels=np.zeros(2), batch=2, seed=0, out=tmp_path, extra_terms={"B": term})
    assert seen == {"A": None, "B": term}


def test_ips_variants_put_the_baseline_first_and_one_setting_changed_in_each_other():
    V = signs.IPSVariant
    variants = signs.ips_variants(50, diversity=[0, 0.1, 0.1], stkim=[(0, 0.1), (10, 0.0), (10, 0.1)], patches=[20, 50, 100])
    assert variants == [V(50), V(50, diversity=0.1), V(50, mask_top_k=10, mask_prob=0.1), V(20), V(100)]
    assert [v.study for v in variants] == ["patch", "diversity", "stkim", "patch", "patch"]
    assert [v.name(5, 50) for v in variants] == ["IPS-5", "IPS-5 + L_p + 0.1 L_d", "IPS-5 + STKIM (K=10, P=0.1)",
                                                 "IPS-5 (20x20)", "IPS-5 (100x100)"]
    assert variants[0].extra_terms() == {} and set(variants[1].extra_terms()) == {"semantic", "diversity"}
    assert variants[2].extra_terms() == {}


def test_ips_factory_builds_the_variant_with_the_strided_encoder():
    from zoomin_lib.chapters.megapixel import StridedLeNet

    model = signs.ips_factory(signs.IPSVariant(20, diversity=0.5), in_channels=3, n_classes=4, memory=5, iter_size=32)()
    assert isinstance(model.encoder, StridedLeNet) and model.encoder.in_channels == 3
    assert (model.patch_size, model.memory_size, model.iter_size, model.n_classes) == ((20, 20), 5, 32, [4])
    assert (model.pool.n_heads, model.pool.dim_head, model.pos_enc, model.head_mlps is not None) == (8, 16, False, True)
    masked = signs.ips_factory(signs.IPSVariant(50, mask_top_k=10, mask_prob=0.1), in_channels=3, n_classes=4,
                               memory=5, iter_size=32)()
    assert (masked.pool.mask_top_k, masked.pool.mask_prob, masked.head_mlps) == (10, 0.1, None)


def test_sign_sides_take_the_longer_side_of_every_box():
    sides = signs.sign_sides([[(0, 0, 10, 20)], [], [(5, 5, 35, 25), (0, 0, 4, 4)]])
    assert sides.tolist() == [20.0, 30.0, 4.0]
    assert signs.sign_sides([]).size == 0


def _runs(accuracies: dict, history: dict | None = None) -> dict:
    """name -> [a fold result] with that accuracy and a one-epoch history."""
    return {n: [SimpleNamespace(accuracy=a, history=[(history or {}).get(n, {"seconds": 1.0})])]
            for n, a in accuracies.items()}


VARIANTS = signs.ips_variants(50, diversity=[0.1], stkim=[(10, 0.1)], patches=[20, 100])
NAMES = ["IPS-5", "IPS-5 + L_p + 0.1 L_d", "IPS-5 + STKIM (K=10, P=0.1)", "IPS-5 (20x20)", "IPS-5 (100x100)"]
RUNS = _runs(dict(zip(NAMES, [0.5, 0.8, 0.25, 0.9, 0.55])),
             {"IPS-5 + L_p + 0.1 L_d": {"semantic": 1.25, "diversity": 0.0875}})


def test_diversity_rows_put_measured_and_quoted_weights_side_by_side():
    thesis = {"rows": {0.0: {"val_mean": 79.75, "val_std": 5.18}, 0.5: {"val_mean": 74.9, "val_std": 17.54}}}
    rows = signs.diversity_rows(RUNS, VARIANTS, 5, thesis)
    assert [r["weight of L_d"] for r in rows] == ["0xD (IPS, L_p off)", "0.1xD", "0.5xD"]
    assert rows[0] == {"weight of L_d": "0xD (IPS, L_p off)", "accuracy % here": 50.0, "L_p here (last epoch)": "",
                       "w L_d here (last epoch)": "", "thesis: mean %": 79.75, "thesis: std %": 5.18}
    assert (rows[1]["accuracy % here"], rows[1]["L_p here (last epoch)"], rows[1]["w L_d here (last epoch)"]) == (
        80.0, 1.25, 0.0875)
    assert rows[1]["thesis: mean %"] == "" and rows[2]["accuracy % here"] == "" and rows[2]["thesis: std %"] == 17.54


def test_stkim_rows_count_the_masking_candidates():
    thesis = {"rows": {(0, 0.0): {"val_mean": 79.74, "val_std": 5.17}, (30, 0.05): {"val_mean": 53.6, "val_std": 10.06}}}
    rows = signs.stkim_rows(RUNS, VARIANTS, 5, thesis)
    assert [(r["K"], r["P"]) for r in rows] == [(0, 0.0), (10, 0.1), (30, 0.05)]
    assert [r["candidates here: min(K, M - 1)"] for r in rows] == [0, 4, 4]
    assert [r["accuracy % here"] for r in rows] == [50.0, 25.0, ""]
    assert [r["thesis: mean %"] for r in rows] == [79.74, "", 53.6]


def test_patch_rows_relate_each_patch_to_the_smallest_sign():
    thesis = {"smallest_sign_px": 25, "rows": {25: {"val_mean": 71.12, "val_std": 12.74, "train_mean": 99.02,
                                                    "ms_per_batch": 449.72, "peak_gb": 0.97},
                                               100: {"val_mean": 79.29, "val_std": 3.07, "train_mean": 100.0,
                                                     "ms_per_batch": 322.67, "peak_gb": 1.65}}}
    costs = {"IPS-5 (20x20)": {"peak_memory_mb": 1.5, "ms_per_sample": 90.0}}
    rows = signs.patch_rows(RUNS, VARIANTS, 5, 20.0, thesis, costs)
    assert [r["patch (px)"] for r in rows] == [20, 25, 50, 100]
    assert [r["patch / smallest sign here"] for r in rows] == [1.0, "", 2.5, 5.0]
    assert [r["accuracy % here"] for r in rows] == [90.0, "", 50.0, pytest.approx(55.0)]
    assert [r["peak memory (MiB) here"] for r in rows] == [1.5, "", "", ""] and rows[0]["time (ms) here"] == 90.0
    assert [r["patch / smallest sign (thesis)"] for r in rows] == ["", 1.0, "", 4.0]
    assert rows[1]["thesis: val mean ± std %"] == "71.1 ± 12.7" and rows[3]["thesis: peak GB"] == 1.65


def test_ips_verdicts_by_the_books_rules():
    labels = np.array([0] * 54 + [1] * 14 + [2] * 22 + [3] * 10)  # always-EMPTY: 54 %
    v = signs.ips_verdicts(RUNS, VARIANTS, 5, labels, smallest=20.0)
    assert v["majority"] == 0.54
    # 2 standard errors above 54 % on 100 images: 54 + 2 sqrt(0.54 * 0.46 / 100) = 64.0 %
    assert v["learned"] == {"IPS-5 + L_p + 0.1 L_d": 0.8, "IPS-5 (20x20)": 0.9}
    # 80 vs 50 %: 3 sqrt(0.16 / 100) = 0.12 and 3 sqrt(0.25 / 100) = 0.15, hypot 0.19 < 0.30
    assert v["diversity gains"] == {"IPS-5 + L_p + 0.1 L_d": pytest.approx(0.3)}
    # 25 vs 50 %: 3 sqrt(0.1875 / 100) = 0.130, hypot with 0.15 = 0.198 < 0.25
    assert v["stkim gains"] == {} and v["stkim losses"] == {"IPS-5 + STKIM (K=10, P=0.1)": pytest.approx(0.25)}
    # 90 % at 20 px against 50 % (hypot(0.09, 0.15) = 0.175 < 0.40) and 55 % (hypot(0.09, 0.149) = 0.174 < 0.35)
    assert v["patch accuracy"] == {20: 0.9, 50: 0.5, 100: 0.55}
    assert v["small patches win"] == [20] and v["best patches"] == [20]
    close = _runs(dict(zip(NAMES, [0.5, 0.6, 0.4, 0.6, 0.55])))  # 60 vs 55 %: within the margin
    w = signs.ips_verdicts(close, VARIANTS, 5, labels, smallest=20.0)
    assert w["learned"] == {} and w["diversity gains"] == {} and w["stkim losses"] == {}
    assert w["small patches win"] == [] and w["best patches"] == [20]
    assert v["one class for every image"] == {}  # these runs have no confusion matrix
    tied = _runs(dict(zip(NAMES, [0.22] * 5)))  # nothing learned: every patch size the same
    tied["IPS-5"][0].confusion = [[0, 0, 54, 0], [0, 0, 14, 0], [0, 0, 22, 0], [0, 0, 10, 0]]  # always 70 km/h
    tied["IPS-5 (20x20)"][0].confusion = [[1, 0, 53, 0], [0, 0, 14, 0], [0, 0, 22, 0], [0, 0, 10, 0]]
    t = signs.ips_verdicts(tied, VARIANTS, 5, labels, smallest=20.0)
    assert t["best patches"] == [20, 50, 100] and t["one class for every image"] == {"IPS-5": 2}
    assert signs.ips_verdicts(close, VARIANTS, 5, labels, smallest=10.0)["small patches win"] == []  # none that small
