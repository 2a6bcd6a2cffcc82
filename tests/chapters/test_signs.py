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
