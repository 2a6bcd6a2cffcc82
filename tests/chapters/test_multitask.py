"""Tests of zoomin_lib.chapters.multitask: target packing, the four-task loss and metrics, chance levels, probes, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from zoomin_lib import IPSNet
from zoomin_lib.chapters import multitask as mt
from zoomin_lib.chapters.megapixel import Setup, methods
from zoomin_lib.losses import diversity_loss
from zoomin_lib.networks import FeatureLeNet
from zoomin_lib.train.protocol import TrainSettings, tensor_batches


def targets(maj, mx, top, present) -> Tensor:
    """A [B, 13] target matrix from per-canvas labels and lists of present classes."""
    multi = np.zeros((len(maj), 10), dtype=np.int64)
    for row, classes in enumerate(present):
        multi[row, classes] = 1
    return torch.as_tensor(mt.pack_targets({"maj": np.array(maj), "max": np.array(mx), "top": np.array(top),
                                            "multi": multi}))


def logits_for(y: Tensor, correct: dict[str, bool]) -> Tensor:
    """[B, 40] logits that predict each task right or (shifted by one class / flipped bits) wrong."""
    B = y.shape[0]
    out = torch.full((B, 40), -5.0)
    for k, t in enumerate(("maj", "max", "top")):
        cls = y[:, k] if correct[t] else (y[:, k] + 1) % 10
        out[torch.arange(B), 10 * k + cls] = 5.0
    bits = y[:, 3:].bool() if correct["multi"] else ~y[:, 3:].bool()
    out[:, 30:] = torch.where(bits, 5.0, -5.0)
    return out


SMALL = Setup(canvas=100, ats_scale=0.2, patch=20, ns=(3,), n=3, zoom_scale1=0.2, zoom_scale2=0.4, zoom_tile=50,
              ips_memory=3, ips_iter=5, cnn_scale=0.3)


def test_pack_targets_orders_the_columns_and_checks_shapes():
    y = targets([7, 1], [9, 8], [2, 1], [[2, 7, 9], [1, 8, 0]])
    assert y.shape == (2, 13) and y.dtype == torch.int64
    assert y[0, :3].tolist() == [7, 9, 2] and y[0, 3:].tolist() == [0, 0, 1, 0, 0, 0, 0, 1, 0, 1]
    with pytest.raises(ValueError, match="multi"):
        mt.pack_targets({"maj": np.zeros(2), "max": np.zeros(2), "top": np.zeros(2), "multi": np.zeros((2, 9))})
    with pytest.raises(ValueError, match="one label per canvas"):
        mt.pack_targets({"maj": np.zeros(3), "max": np.zeros(2), "top": np.zeros(2), "multi": np.zeros((2, 10))})


def test_task_logits_concatenates_ips_lists_and_rejects_other_widths():
    parts = [torch.randn(2, 10) for _ in range(4)]
    assert torch.equal(mt.task_logits(parts), torch.cat(parts, 1))
    assert set(mt.split_logits(torch.randn(2, 40))) == set(mt.TASKS)
    with pytest.raises(ValueError, match="40"):
        mt.task_logits(torch.randn(2, 10))


def test_multitask_terms_is_the_mean_of_three_cross_entropies_and_one_bce():
    torch.manual_seed(0)
    logits = torch.randn(4, 40, requires_grad=True)
    y = targets([1, 2, 3, 4], [5, 6, 7, 8], [0, 1, 2, 3], [[1, 5, 0], [2, 6, 9], [3, 7, 1], [4, 8, 2]])
    total, parts = mt.multitask_terms(logits, y)
    ce = [F.cross_entropy(logits[:, 10 * k: 10 * k + 10], y[:, k]) for k in range(3)]
    bce = F.binary_cross_entropy_with_logits(logits[:, 30:], y[:, 3:].float())
    assert torch.allclose(total, (sum(ce) + bce) / 4)
    assert math.isclose(parts["loss_multi"], float(bce.detach()), rel_tol=1e-6)
    total.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    with pytest.raises(ValueError, match="targets"):
        mt.multitask_terms(logits, y[:, :12])


def test_task_metrics_count_multi_only_when_all_ten_outputs_are_right():
    y = targets([1, 2], [5, 6], [1, 5], [[1, 5, 0], [2, 6, 9]])
    right = mt.task_metrics(logits_for(y, dict(maj=True, max=False, top=True, multi=True)), y)
    assert (right["maj"], right["max"], right["top"], right["multi"], right["maj_error"]) == (1.0, 0.0, 1.0, 1.0, 0.0)
    one_bit = logits_for(y, dict(maj=True, max=True, top=True, multi=True))
    one_bit[0, 30 + 3] = 5.0  # canvas 0 now also claims a 3
    m = mt.task_metrics(one_bit, y)
    assert m["multi"] == 0.5 and m["multi_per_output"] == pytest.approx(19 / 20)


def test_chance_levels_are_the_best_constant_predictions():
    y = targets([1, 1, 2, 3], [9, 9, 9, 8], [4, 5, 6, 7], [[1, 2, 9]] * 3 + [[3, 4, 8]])
    c = mt.chance_levels(y)
    assert (c["maj"], c["max"], c["top"], c["multi"]) == (0.5, 0.75, 0.25, 0.75)
    present = y[:, 3:].float().mean(0)
    assert c["multi_per_output"] == pytest.approx(float(torch.maximum(present, 1 - present).mean()))
    assert c["maj_error"] == 0.5


def test_loss_adds_the_entropy_of_the_attention_only_for_models_that_have_one():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 100, 100)
    y = targets([1, 2], [5, 6], [1, 5], [[1, 5, 0], [2, 6, 9]])
    models = {k: f() for k, f in methods(SMALL).items()}
    for name, model in models.items():
        torch.manual_seed(1)  # the same dropout masks (IPS) in both passes
        plain = mt.multitask_loss(0.0, torch.Generator().manual_seed(0))(model, (x, y), 0)[1]
        torch.manual_seed(1)
        loss, parts = mt.multitask_loss(1e-2, torch.Generator().manual_seed(0))(model, (x, y), 0)
        loss.backward()
        has_attention = getattr(model, "attention", None) is not None or hasattr(model, "attention_a")
        assert (parts["entropy"] < 0) == has_attention, name  # lam * sum p log p < 0
        assert parts["total"] == pytest.approx(plain["total"] + parts["entropy"], rel=1e-5, abs=1e-6), name
        assert any(p.grad is not None for p in model.parameters()), name


def test_epoch_probe_reports_metrics_and_attention_masses_that_sum_to_one():
    torch.manual_seed(0)
    model = methods(SMALL, include=("ats",))["ATS-3"]()
    x = torch.rand(4, 1, 100, 100)
    y = targets([1, 2, 3, 4], [5, 6, 7, 8], [0, 1, 2, 3], [[1, 5, 0], [2, 6, 9], [3, 7, 1], [4, 8, 2]])
    h, w = SMALL.view_size()
    left = torch.zeros(h, w, dtype=torch.bool)
    left[:, : w // 2] = True
    probe = mt.EpochProbe([(x, y)], snapshot=x[:1], attention=lambda m, xi: torch.softmax(m.scores(xi), -1).view(h, w),
                          masks={"left": left, "right": ~left})
    record = probe(model)
    assert record["n"] == 4 and 0 <= record["maj"] <= 1 and record["eval_seconds"] >= 0
    assert record["mass_left"] + record["mass_right"] == pytest.approx(1.0, abs=1e-5)
    assert len(probe.maps) == 1 and probe.maps[0].shape == (h, w)
    assert model.training  # the probe restores the mode it found
    with pytest.raises(ValueError, match="both"):
        mt.EpochProbe(snapshot=x[:1])


def _tiny_data(n: int = 8) -> tuple[Tensor, Tensor]:
    """n random canvases [n, 1, 100, 100] and valid targets."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(n, 1, 100, 100, generator=g)
    rng = np.random.default_rng(0)
    present = [rng.choice(10, 3, replace=False) for _ in range(n)]
    y = targets([p[0] for p in present], [p.max() for p in present], [p[1] for p in present], present)
    return x, y


def test_train_tasks_is_deterministic_and_records_the_probe_before_and_after_each_epoch(tmp_path):
    x, y = _tiny_data()
    settings = TrainSettings(epochs=2, batch_size=4, lr=1e-3, warmup_epochs=0, contrastive=False, lam=1e-4)
    factory = methods(SMALL, include=("ats",))["ATS-3"]
    results = []
    for _ in range(2):
        probe = mt.EpochProbe([(x, y)])
        run, model = mt.train_tasks("ATS-3", factory, settings, tensor_batches(x, y, 4, 0), [(x, y)], run_seed=3,
                                    probe=probe, out_dir=tmp_path)
        results.append(run)
    a, b = results
    assert a.metrics == b.metrics and len(a.history) == 2 and "maj" in a.before
    assert all("val_maj_error" in h and "loss_multi" in h for h in a.history)
    seconds, errors = a.curve("maj_error")
    assert seconds.shape == errors.shape == (3,) and np.all(np.diff(seconds) >= 0)
    assert (tmp_path / "runs" / "ATS-3.json").is_file()


def test_train_tasks_trains_every_method_for_one_epoch():
    x, y = _tiny_data(4)
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-3, warmup_epochs=0, contrastive=False, lam=1e-4)
    for name, factory in methods(SMALL).items():
        run, _ = mt.train_tasks(name, factory, settings, tensor_batches(x, y, 2, 0), [(x, y)], run_seed=0)
        assert run.metrics["n"] == 4 and run.train_seconds > 0, name


def test_training_peak_is_positive_and_leaves_no_gradients():
    x, y = _tiny_data(1)
    model = methods(SMALL, include=("ips",))[SMALL.ips_name]()
    assert mt.training_peak_mb(model, x, y) > 0
    assert all(p.grad is None for p in model.parameters())


def test_accuracy_rows_end_with_chance_and_above_chance_needs_a_margin():
    y = targets([1, 2], [5, 6], [1, 5], [[1, 5, 0], [2, 6, 9]])
    good = mt.TaskRun("good", {**mt.task_metrics(logits_for(y, dict(maj=True, max=True, top=True, multi=True)), y),
                               "n": 400})
    bad = mt.TaskRun("bad", {**mt.task_metrics(logits_for(y, dict(maj=False, max=False, top=False, multi=False)), y),
                             "n": 400})
    chance = {"maj": 0.1, "max": 0.3, "top": 0.1, "multi": 0.01, "multi_per_output": 0.7, "maj_error": 0.9}
    rows = mt.accuracy_rows({"good": good, "bad": bad}, chance)
    assert [r["method"] for r in rows] == ["good", "bad", "best constant prediction (chance)"]
    assert rows[0]["Maj %"] == 100.0 and rows[-1]["Max %"] == pytest.approx(30.0)
    beaten = mt.above_chance({"good": good, "bad": bad}, chance)
    assert all(list(v) == ["good"] for v in beaten.values())
    barely = mt.TaskRun("barely", {"maj": 0.11, "max": 0.3, "top": 0.1, "multi": 0.0, "n": 400})
    assert mt.above_chance({"barely": barely}, chance)["maj"] == {}


def _semantic_ips(**kwargs) -> IPSNet:
    """A small four-task IPSNet with 4 heads on 32x32 canvases (patches 8x8, M = 5)."""
    torch.manual_seed(0)
    return IPSNet(FeatureLeNet(1), [10] * 4, 8, 5, 7, n_heads=4, **kwargs)


def test_semantic_terms_are_each_heads_four_task_loss_averaged_over_heads():
    torch.manual_seed(5)
    B, H = 4, 3
    head_logits = [torch.randn(B, H, 10) for _ in mt.TASKS]  # one [B, H, 10] per task
    y = targets([1, 2, 3, 4], [5, 6, 7, 8], [0, 1, 2, 3], [[1, 5, 0], [2, 6, 9], [3, 7, 1], [4, 8, 2]])
    by_hand = []
    for h in range(H):
        ce = [F.cross_entropy(head_logits[k][:, h], y[:, k]) for k in range(3)]
        bce = F.binary_cross_entropy_with_logits(head_logits[3][:, h], y[:, 3:].float())
        by_hand.append(float((sum(ce) + bce) / 4))
    total, per_head = mt.semantic_terms(head_logits, y)
    assert per_head == pytest.approx(by_hand, rel=1e-6)
    assert float(total) == pytest.approx(sum(by_hand) / H, rel=1e-6)
    with pytest.raises(ValueError, match="semantic=True"):
        mt.semantic_terms(head_logits[:3], y)


def test_regularisers_add_their_weighted_terms_to_the_four_task_loss():
    model = _semantic_ips(semantic=True)
    model.head_mlps.dropout.p = 0.0  # the heads' dropout draws from torch's global generator: off, to compare
    x, y = _tiny_data(4)
    x = x[:, :, :32, :32]
    plain = mt.multitask_loss(0.0, torch.Generator().manual_seed(0))(model, (x, y), 0)[1]
    assert "semantic" not in plain and "diversity" not in plain  # no extra terms: the loss as before
    terms = mt.regulariser_terms(semantic=0.5, diversity=2.0)
    total, parts = mt.multitask_loss(0.0, torch.Generator().manual_seed(0), terms)(model, (x, y), 0)
    with torch.no_grad():
        out = model(x)
    bag = mt.multitask_terms(mt.task_logits(out), y)[0]
    assert parts["total"] == pytest.approx(float(bag) + parts["semantic"] + parts["diversity"], rel=1e-5)
    assert parts["semantic"] == pytest.approx(0.5 * float(mt.semantic_terms(out.head_logits, y)[0]), rel=1e-5)
    assert parts["diversity"] == pytest.approx(2.0 * float(diversity_loss(out.attention)), rel=1e-5)
    assert out.attention.shape[:3] == (4, 4, 4)  # [B, H, T, M]: the cosines span the four task queries
    assert plain["total"] == pytest.approx(float(bag), rel=1e-5)
    total.backward()
    assert model.head_mlps.w1.grad.abs().sum() > 0  # the heads' MLPs are trained by L_p
    assert set(mt.regulariser_terms(semantic=1.0)) == {"semantic"} and mt.regulariser_terms() == {}
    with pytest.raises(ValueError, match="semantic=True"):
        mt.multitask_loss(0.0, None, mt.regulariser_terms(semantic=1.0))(_semantic_ips(), (x, y), 0)


def test_train_tasks_reports_the_extra_terms_in_its_history():
    x, y = _tiny_data(4)
    x = x[:, :, :32, :32]
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-3, warmup_epochs=0, contrastive=False)
    run, _ = mt.train_tasks("IPS-reg", lambda: _semantic_ips(semantic=True, mask_top_k=2, mask_prob=0.5), settings,
                            tensor_batches(x, y, 2, 0), [(x, y)], run_seed=0,
                            extra_terms=mt.regulariser_terms(semantic=1.0, diversity=1.0))
    assert run.history[0]["semantic"] > 0 and 0 <= run.history[0]["diversity"] <= 1


def test_bag_loss_is_the_mean_task_loss_per_epoch():
    history = [{"loss_maj": 1.0, "loss_max": 2.0, "loss_top": 3.0, "loss_multi": 0.2, "semantic": 9.0},
               {"loss_maj": 0.5, "loss_max": 1.0, "loss_top": 1.5, "loss_multi": 0.1, "semantic": 9.0}]
    run = mt.TaskRun("r", {}, history)
    np.testing.assert_allclose(run.bag_loss(), [6.2 / 4, 3.1 / 4])


def test_gains_over_needs_more_than_z_standard_errors_of_the_difference():
    base = mt.TaskRun("base", {"maj": 0.5, "max": 0.5, "top": 0.5, "multi": 0.0, "n": 400})
    se = math.sqrt(2 * 0.25 / 400)  # two accuracies near 0.5 on 400 canvases each
    runs = {"same": mt.TaskRun("same", {"maj": 0.5 + 2.5 * se, "max": 0.5, "top": 0.4, "multi": 0.0, "n": 400}),
            "better": mt.TaskRun("better", {"maj": 0.5 + 4 * se, "max": 0.5, "top": 0.9, "multi": 0.02, "n": 400})}
    gains = mt.gains_over(runs, base)
    assert list(gains["maj"]) == ["better"] and gains["maj"]["better"] == pytest.approx(4 * se)
    assert gains["max"] == {} and list(gains["top"]) == ["better"]
    assert gains["multi"] == {}  # 8 right of 400 against 0: within 3 standard errors (floored at 1 / n)
    assert list(mt.gains_over(runs, base, tasks=("maj",), z=2.0)["maj"]) == ["same", "better"]
