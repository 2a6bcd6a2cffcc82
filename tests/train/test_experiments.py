"""The experiment loop: batches, folds, summaries, lean inference, N' and attention maps."""

import math
from types import SimpleNamespace

import pytest
import torch

from zoomin_lib import builders
from zoomin_lib.chapters.attention import attention_map, unique_tiles
from zoomin_lib.train.profiling import lean_inference, profile_methods, training_step_peak_mb
from zoomin_lib.train.protocol import (FoldResult, TrainSettings, initial_model, run_folds, run_method, summarize,
                                      tensor_batches)


def _zoomin(n_patches: int = 4):
    return builders.zoomin(in_channels=1, n_classes=2, scale1=0.25, scale2=0.5, tile_size=16, patch_size=5,
                           n_patches=n_patches)


def test_tensor_batches_cover_every_sample_once_and_depend_only_on_seed_and_epoch():
    x, y = torch.arange(11.0).view(11, 1, 1, 1), torch.arange(11)
    make = tensor_batches(x, y, 4, seed=3)
    first = make(0)
    assert [len(b[1]) for b in first] == [4, 4, 3]
    assert sorted(torch.cat([b[1] for b in first]).tolist()) == list(range(11))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, tensor_batches(x, y, 4, seed=3)(0)))
    assert not torch.equal(torch.cat([b[1] for b in first]), torch.cat([b[1] for b in make(1)]))
    with pytest.raises(ValueError, match="same, non-zero"):
        tensor_batches(x, y[:3], 4, 0)


def test_lean_inference_changes_memory_not_results_and_restores_the_model():
    torch.manual_seed(0)
    model = _zoomin().eval()
    x = torch.rand(2, 1, 40, 40)
    with torch.no_grad():
        before = model(x, mode="topk").logits
        with lean_inference(model):
            assert model.chunk_size == 1 and model.tile_chunk == 1
            lean = model(x, mode="topk").logits
    torch.testing.assert_close(lean, before)
    assert model.chunk_size is None and model.tile_chunk is None  # restored: sized by CHUNK_PIXELS
    rows = profile_methods({"zoom": model, "ats": builders.ats(in_channels=1, n_classes=2, scale=0.25,
                                                                  patch_size=5, n_patches=3)},
                           x[:1], min_run_time=0.01)
    assert set(rows) == {"zoom", "ats"} and all(r["peak_memory_mb"] > 0 and r["lean"] for r in rows.values())


def test_unique_tiles_counts_distinct_draws_per_image():
    torch.manual_seed(0)
    model = _zoomin(n_patches=6)
    x = torch.rand(3, 1, 32, 48)  # 2 x 3 = 6 tiles
    gen = torch.Generator().manual_seed(1)
    counts = unique_tiles(model, x, gen)
    gen = torch.Generator().manual_seed(1)
    tiles = model(x, mode="sample", generator=gen).tiles
    assert counts.tolist() == [len(set(row.tolist())) for row in tiles]
    with pytest.raises(ValueError, match="N'"):
        unique_tiles(builders.ats(in_channels=1, n_classes=2, scale=0.25, patch_size=5, n_patches=2), x)


def test_attention_map_is_a_distribution_over_the_image():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 40, 40)  # 3 x 3 tiles of 16, the last row/col partial
    zmap = attention_map(_zoomin(), x)
    assert zmap.shape == (2, 20, 20)  # ceil(40 * 8 / 16)
    torch.testing.assert_close(zmap.sum(dim=(1, 2)), torch.ones(2))
    amap = attention_map(builders.ats(in_channels=1, n_classes=2, scale=0.25, patch_size=5, n_patches=2), x)
    assert amap.shape == (2, 10, 10)
    torch.testing.assert_close(amap.sum(dim=(1, 2)), torch.ones(2))


def test_run_folds_trains_each_method_on_each_fold_and_summarizes(tmp_path):
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 32, 32, generator=gen)
    y = torch.arange(12) % 2
    folds = [SimpleNamespace(repetition=0, fold=k, train=[i for i in range(12) if i % 2 != k],
                             test=[i for i in range(12) if i % 2 == k]) for k in range(2)]
    folds[0].test, folds[1].test = list(range(6)), list(range(6, 12))
    folds[0].train, folds[1].train = list(range(6, 12)), list(range(6))
    methods = {"zoom": lambda: _zoomin(), "cnn": lambda: builders.cnn(in_channels=1, n_classes=2, channels=4, n_conv=2)}
    settings = {name: TrainSettings(epochs=2, batch_size=3, lr=1e-3, warmup_epochs=1) for name in methods}
    results, models = run_folds(methods, settings, x, y, folds, out_dir=tmp_path,
                                probe=lambda m, g: {"seen": 1}, progress=False)
    assert [r.fold for r in results["zoom"]] == [0, 1] and set(models) == {"zoom", "cnn"}
    assert all(r.n_test == 6 and len(r.history) == 2 and r.history[0]["val_seen"] == 1 for r in results["zoom"])
    assert (tmp_path / "runs" / "zoom_r0_f1.json").is_file() and (tmp_path / "checkpoints" / "cnn_r0_f0.pt").is_file()
    summary = summarize(results["zoom"])
    accs = [r.accuracy for r in results["zoom"]]
    assert summary["runs"] == 2 and math.isclose(summary["accuracy_mean"], sum(accs) / 2)
    assert math.isclose(summary["accuracy_std"], abs(accs[0] - accs[1]) / math.sqrt(2))
    assert math.isnan(summarize(results["zoom"][:1])["accuracy_std"])


def test_training_step_peak_grows_with_the_number_of_patches():
    torch.manual_seed(0)
    x, y = torch.rand(1, 1, 64, 64), torch.tensor([1])
    small = training_step_peak_mb(_zoomin(2), x, y, torch.Generator().manual_seed(0))
    large = training_step_peak_mb(_zoomin(16), x, y, torch.Generator().manual_seed(0))
    assert 0 < small < large


def test_standardize_gives_each_channel_mean_zero_and_unit_std():
    from zoomin_lib.train.protocol import standardize

    x = torch.rand(4, 3, 8, 8) * torch.tensor([1.0, 5.0, 0.1]).view(1, 3, 1, 1) + 2
    z = standardize(x)
    torch.testing.assert_close(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(dim=(0, 2, 3)), torch.ones(3), atol=1e-5, rtol=0)


def test_per_image_loss_and_predictor_handle_images_of_different_sizes():
    """Batches of differently sized images: the loss is the mean of the per-image losses, logits come per image."""
    from zoomin_lib.steps import sampling_loss
    from zoomin_lib.train.protocol import per_image, per_image_predictor

    torch.manual_seed(0)
    model = builders.cnn(in_channels=1, n_classes=2, size=16, channels=4, n_conv=2)
    images = [torch.rand(1, 1, 20, 30), torch.rand(1, 1, 40, 24)]
    labels = torch.tensor([0, 1])
    loss, parts = per_image(sampling_loss())(model, (images, labels), 0)
    singles = [sampling_loss()(model, (xi, labels[i : i + 1]), 0)[0] for i, xi in enumerate(images)]
    torch.testing.assert_close(loss, (singles[0] + singles[1]) / 2)
    logits, target = per_image_predictor()(model, (images, labels))
    assert logits.shape == (2, 2) and torch.equal(target, labels)


def test_lazy_batches_load_only_when_iterated_and_cover_every_sample():
    from zoomin_lib.train.protocol import lazy_batches

    calls = []

    def load(idx):
        calls.append(list(idx))
        return torch.tensor(idx, dtype=torch.float32)

    make = lazy_batches(load, [0, 1, 0, 1, 1], batch_size=2, seed=1)
    epoch = make(0)
    assert calls == []  # nothing read before iteration
    seen = [(xb.long().tolist(), yb.tolist()) for xb, yb in epoch]
    assert sorted(i for idx, _ in seen for i in idx) == [0, 1, 2, 3, 4]
    assert all(yb == [[0, 1, 0, 1, 1][i] for i in idx] for idx, yb in seen)
    ordered = [xb.long().tolist() for xb, _ in lazy_batches(load, [0, 1, 0], 2, 0, shuffle=False)(3)]
    assert ordered == [[0, 1], [2]]
    with_masks = list(lazy_batches(load, [0, 1, 0], 2, 0, shuffle=False, masks=lambda idx: [10 * i for i in idx])(0))
    assert [(xb.long().tolist(), m) for xb, _, m in with_masks] == [([0, 1], [0, 10]), ([2], [20])]


def test_per_image_hands_each_image_its_own_mask():
    """Batches (images, labels, masks): each image's loss sees its own mask [1, H_i, W_i]."""
    from zoomin_lib.train.protocol import per_image

    seen = []

    def loss_fn(model, batch, epoch):
        x, y, mask = batch
        seen.append((tuple(x.shape[-2:]), tuple(mask.shape)))
        return x.sum() * 0, {}

    images = [torch.rand(1, 1, 20, 30), torch.rand(1, 1, 40, 24)]
    per_image(loss_fn)(None, (images, torch.tensor([0, 1]), [torch.zeros(1, 20, 30), torch.zeros(1, 40, 24)]), 0)
    assert seen == [((20, 30), (1, 20, 30)), ((40, 24), (1, 40, 24))]


def test_top_tile_and_subtile_are_the_argmaxes_inside_the_image():
    from zoomin_lib.chapters.attention import top_tile_and_subtile

    torch.manual_seed(0)
    model = _zoomin()
    x = torch.rand(1, 1, 48, 64)
    tile_box, sub_box = top_tile_and_subtile(model, x)
    with torch.no_grad():
        best = int(model.first_stage(x).argmax())
    assert tile_box == ((best // 4) * 16, (best % 4) * 16, 16, 16)
    r, c, ph, pw = sub_box
    assert (ph, pw) == (5, 5)
    assert tile_box[0] <= r + 2 < tile_box[0] + 16 and tile_box[1] <= c + 2 < tile_box[1] + 16


def test_image_stats_and_image_tensor():
    import numpy as np

    from zoomin_lib.train.protocol import image_stats, image_tensor

    a = np.zeros((16, 16, 3), dtype=np.uint8)
    b = np.full((8, 24, 3), 255, dtype=np.uint8)
    mean, std = image_stats([a, b], step=1)
    assert mean.shape == (1, 3, 1, 1)
    torch.testing.assert_close(mean.flatten(), torch.full((3,), 192 / 448))  # 192 white pixels of 448
    t = image_tensor(b)
    assert t.shape == (1, 3, 8, 24) and float(t.max()) == 1.0


def test_standardized_image_is_standardize_of_image_tensor_bit_for_bit():
    import numpy as np

    from zoomin_lib.train.protocol import image_stats, image_tensor, standardize, standardized_image

    image = np.random.default_rng(0).integers(0, 256, (37, 53, 3), dtype=np.uint8)
    stats = image_stats([image], step=3)
    want, got = standardize(image_tensor(image), stats), standardized_image(image, stats)
    assert torch.equal(got, want) and got.stride() == want.stride()


def test_above_majority_names_only_methods_beating_the_majority_rate():
    from zoomin_lib.chapters.results import above_majority
    from zoomin_lib.train.protocol import FoldResult

    runs = {"good": [FoldResult("good", 0, 0, 0.9, None, 10, 0.1)], "bad": [FoldResult("bad", 0, 0, 0.5, None, 10, 1.0)]}
    majority, beaten = above_majority(runs, [0, 0, 0, 0, 0, 0, 1, 1, 2, 3])
    assert majority == 0.6 and beaten == {"good": 0.9}
    # two standard errors of the majority rate on 10 labels: 2 sqrt(0.24 / 10) = 0.31, so 0.9 > 0.91 fails
    assert above_majority(runs, [0, 0, 0, 0, 0, 0, 1, 1, 2, 3], z=2.0)[1] == {}
    assert above_majority(runs, [0, 0, 0, 0, 0, 0, 1, 1, 2, 3], z=1.0)[1] == {"good": 0.9}


def test_report_above_majority_prints_both_sides(capsys):
    from zoomin_lib.chapters.results import report_above_majority
    from zoomin_lib.train.protocol import FoldResult

    runs = {"good": [FoldResult("good", 0, 0, 0.9, None, 10, 0.1)], "bad": [FoldResult("bad", 0, 0, 0.5, None, 10, 1.0)]}
    learned = report_above_majority(runs, [0] * 6 + [1, 1, 2, 3], "always-0", "a tiny budget", z=1.0)
    printed = capsys.readouterr().out
    assert learned == {"good": 0.9}
    assert "always-0 rate on this test set: 60.0 % of 10 images" in printed
    assert "above it: good 90.0 %" in printed and "not above it within a tiny budget: bad" in printed


def test_zoomin_first_stage_scores_are_unbounded_unless_table_5s_tanh_is_asked_for():
    """bounded_a=True keeps table 5's tanh (tile logits in [-1, 1]); the default lets alpha sharpen past e^2."""
    x = torch.randn(1, 3, 40, 40)
    kwargs = dict(in_channels=3, n_classes=2, scale1=0.5, scale2=0.5, tile_size=20, patch_size=5, n_patches=2)
    bounded = builders.zoomin(**kwargs, bounded_a=True)
    free = builders.zoomin(**kwargs)
    assert isinstance(bounded.attention_a.net[-1], torch.nn.Tanh)
    assert not isinstance(free.attention_a.net[-1], torch.nn.Tanh)
    with torch.no_grad():
        for conv in (m for m in free.attention_a.modules() if isinstance(m, torch.nn.Conv2d)):
            conv.weight.mul_(20)
        assert free.attention_a(x).abs().max() > 1
        assert bounded.attention_a(x).abs().max() <= 1


def test_pooled_accuracy_weights_runs_by_their_test_items():
    from zoomin_lib.chapters.results import pooled_accuracy

    runs = [FoldResult("m", 0, 0, 1.0, None, 10, 0.1), FoldResult("m", 0, 1, 0.5, None, 30, 0.1)]
    acc, n = pooled_accuracy(runs)
    assert n == 40 and acc == pytest.approx((10 + 15) / 40)
    with pytest.raises(ValueError):
        pooled_accuracy([])
    repeated = runs + [FoldResult("m", 1, 0, 0.0, None, 10, 0.1), FoldResult("m", 1, 1, 0.5, None, 30, 0.1)]
    acc, n = pooled_accuracy(repeated)  # two repetitions of the same 40 images: 40 distinct items, not 80
    assert n == 40 and acc == pytest.approx((10 + 15 + 0 + 15) / 80)


def test_difference_text_compares_the_papers_difference_with_the_standard_error():
    import math

    from zoomin_lib.chapters.results import difference_text

    a = [FoldResult("a", 0, 0, 0.9, None, 100, 0.1)]
    b = [FoldResult("b", 0, 0, 0.8, None, 100, 0.1)]
    se = 100 * math.hypot(math.sqrt(0.09 / 100), math.sqrt(0.16 / 100))  # 5.0 points
    text = difference_text("a", a, "b", b, paper_difference=6.0)
    assert "+10.0 points over 100 and 100" in text and f"{se:.1f} points" in text and "is larger" in text
    assert "is not larger" in difference_text("a", a, "b", b, paper_difference=4.0)
    assert "paper" not in difference_text("a", a, "b", b)


def _two_folds_and_extra(seed: int):
    """Eight 32x32 images in two folds of four, and five extra test images [5, 1, 32, 32] with their labels."""
    gen = torch.Generator().manual_seed(seed)
    x, y = torch.rand(8, 1, 32, 32, generator=gen), torch.arange(8) % 2
    xe, ye = torch.rand(5, 1, 32, 32, generator=gen), torch.tensor([0, 1, 1, 0, 1])
    folds = [SimpleNamespace(repetition=0, fold=k, train=[i for i in range(8) if i // 4 != k],
                             test=[i for i in range(8) if i // 4 == k]) for k in range(2)]
    return x, y, xe, ye, folds


def test_run_folds_tests_every_run_on_the_shared_extra_images_as_a_direct_evaluation_would(tmp_path):
    from zoomin_lib.steps import predictor
    from zoomin_lib.train.loop import evaluate

    x, y, xe, ye, folds = _two_folds_and_extra(1)
    methods = {"cnn": lambda: builders.cnn(in_channels=1, n_classes=2, channels=4, n_conv=2)}
    settings = {"cnn": TrainSettings(epochs=1, batch_size=2, lr=1e-2)}
    results, models = run_folds(methods, settings, x, y, folds, out_dir=tmp_path, progress=False, extra_test=(xe, ye))
    plain, _ = run_folds(methods, settings, x, y, folds, progress=False)
    for with_extra, without in zip(results["cnn"], plain["cnn"]):
        assert with_extra.accuracy == without.accuracy and without.extra_test is None  # the folds' test is unchanged
        assert with_extra.extra_test["n"] == 5 and len(with_extra.extra_test["confusion"]) == 2
    direct = evaluate(models["cnn"], [(xe, ye)], predictor())  # the first fold's model, on the host
    assert results["cnn"][0].extra_test["accuracy"] == pytest.approx(direct["accuracy"])
    assert results["cnn"][0].extra_test["loss"] == pytest.approx(direct["loss"], abs=1e-5)
    for f, run in zip(folds, results["cnn"]):  # each run's model, rebuilt from its checkpoint, tests as it did
        from zoomin_lib.train.protocol import load_run_model

        again = evaluate(load_run_model(methods["cnn"], tmp_path, "cnn", f.repetition, f.fold), [(xe, ye)], predictor())
        assert again["loss"] == pytest.approx(run.extra_test["loss"], abs=1e-5)
    first = load_run_model(methods["cnn"], tmp_path, "cnn", 0, 0)
    for p, q in zip(first.parameters(), models["cnn"].parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError, match="cnn_r0_f7.pt: no checkpoint of 'cnn', repetition 0, fold 7"):
        load_run_model(methods["cnn"], tmp_path, "cnn", 0, 7)


def test_extra_test_results_count_the_shared_images_once():
    from zoomin_lib.chapters.results import extra_test_results, pooled_accuracy

    extra = lambda acc: {"accuracy": acc, "auc": None, "n": 200, "loss": 0.5, "confusion": [[1, 0], [0, 1]]}
    runs = {"a": [FoldResult("a", 0, k, 0.9, None, 10, 0.1, extra_test=extra(acc)) for k, acc in enumerate((0.8, 0.9))],
            "b": [FoldResult("b", 0, 0, 0.5, None, 10, 0.1)]}
    shared = extra_test_results(runs)
    assert set(shared) == {"a"} and [r.accuracy for r in shared["a"]] == [0.8, 0.9]
    acc, n = pooled_accuracy(shared["a"], shared_test_set=True)
    assert n == 200 and acc == pytest.approx(0.85)  # two models on the same 200 images: 200 items, not 400
    assert pooled_accuracy(shared["a"])[1] == 400  # as separate folds they would count twice
    with pytest.raises(ValueError, match="one n_test"):
        pooled_accuracy([shared["a"][0], FoldResult("a", 0, 2, 0.5, None, 50, 0.1)], shared_test_set=True)


def test_extra_test_rows_pool_each_method_over_its_folds():
    from zoomin_lib.chapters.results import extra_test_rows

    extra = lambda acc: {"accuracy": acc, "auc": None, "n": 100, "loss": 0.5, "confusion": [[1, 0], [0, 1]]}
    runs = {"a": [FoldResult("a", 0, k, 0.9, None, 10, 0.1, extra_test=extra(acc)) for k, acc in enumerate((0.8, 0.6))],
            "b": [FoldResult("b", 0, 0, 0.5, None, 10, 0.1)]}
    (row,) = extra_test_rows(runs)
    assert row["method"] == "a" and row["test images"] == 100 and row["accuracy %"] == pytest.approx(70.0)
    assert row["s.e. %"] == pytest.approx(100 * math.sqrt(0.21 / 100))
    assert row["per fold %"] == "80.0, 60.0" and row["std over folds %"] == pytest.approx(100 * 0.2 / math.sqrt(2))


def test_error_rows_read_each_runs_confusion_and_last_loss():
    from zoomin_lib.chapters.results import error_rows

    hist = [{"ce": 0.7}, {"ce": 0.01}]
    extra = {"accuracy": 0.75, "auc": 1.0, "n": 8, "loss": 0.9, "confusion": [[2, 2], [0, 4]]}
    runs = {"a": [FoldResult("a", 0, 3, 0.5, None, 4, 0.1, hist, [[1, 1], [1, 1]], extra_test=extra)]}
    (row,) = error_rows(runs)
    assert row == {"method": "a", "repetition": 0, "fold": 3, "last training loss": 0.01, "accuracy %": 50.0, "AUC": None,
                   "false positives": 1, "false negatives": 1, "test images": 4}
    (row,) = error_rows(runs, extra=True)
    assert (row["accuracy %"], row["AUC"], row["false positives"], row["false negatives"], row["test images"],
            row["last training loss"]) == (75.0, 1.0, 2, 0, 8, 0.01)
    with pytest.raises(ValueError, match="binary confusion"):
        error_rows({"b": [FoldResult("b", 0, 0, 0.5, None, 9, 0.1, [], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])]})


def test_retest_runs_rebuild_every_run_and_test_it_as_a_direct_evaluation_would(tmp_path):
    from zoomin_lib.steps import predictor
    from zoomin_lib.train.loop import evaluate
    from zoomin_lib.train.protocol import load_run_model, retest_runs

    x, y, xe, ye, folds = _two_folds_and_extra(3)
    methods = {"ats": lambda: builders.ats(in_channels=1, n_classes=2, scale=0.25, patch_size=5, n_patches=2),
               "cnn": lambda: builders.cnn(in_channels=1, n_classes=2, channels=4, n_conv=2)}
    settings = {k: TrainSettings(epochs=1, batch_size=2, lr=1e-2) for k in methods}
    results, _ = run_folds(methods, settings, x, y, folds, out_dir=tmp_path, progress=False, extra_test=(xe, ye))
    same = retest_runs(methods, tmp_path, folds, xe, ye, predictor())  # the runs' own predictor: what run_folds found
    for name in methods:
        assert [(r.repetition, r.fold, r.n_test, r.history) for r in same[name]] == [(0, 0, 5, []), (0, 1, 5, [])]
        for again, run in zip(same[name], results[name]):
            assert again.confusion == run.extra_test["confusion"] and again.loss == pytest.approx(run.extra_test["loss"], abs=1e-5)
    sampled = retest_runs(methods, tmp_path, folds, xe, ye, predictor("sample", torch.Generator().manual_seed(4), draws=3))
    reference = predictor("sample", torch.Generator().manual_seed(4), draws=3)  # one generator, runs in order
    for f in folds:  # another predictor: as evaluating each rebuilt model with it directly
        for name in methods:
            model = load_run_model(methods[name], tmp_path, name, f.repetition, f.fold)
            direct, run = evaluate(model, [(xe, ye)], reference), sampled[name][f.fold]
            assert run.confusion == direct["confusion"] and run.loss == pytest.approx(direct["loss"], abs=1e-5)
    own = retest_runs(methods, tmp_path, folds, x, y, predictor(), own_fold=True)  # each run on its fold's test
    for name in methods:
        for again, run, f in zip(own[name], results[name], folds):
            assert again.n_test == len(f.test) == run.n_test and again.confusion == run.confusion
            assert again.loss == pytest.approx(run.loss, abs=1e-5)
    with pytest.raises(FileNotFoundError, match="ats_r0_f5.pt"):
        retest_runs(methods, tmp_path, [SimpleNamespace(repetition=0, fold=5)], xe, ye, predictor())


def test_predictor_rows_pool_the_shared_images_and_sum_each_runs_errors():
    from zoomin_lib.chapters.results import chance_margin, predictor_rows

    run = lambda fold, acc, confusion: FoldResult("a", 0, fold, acc, None, 8, 0.1, [], confusion)
    rows = predictor_rows({"top-k": {"a": [run(0, 0.75, [[2, 2], [0, 4]]), run(1, 0.5, [[0, 4], [0, 4]])]},
                           "one draw": {"a": [run(0, 1.0, [[4, 0], [0, 4]]), run(1, 0.875, [[4, 0], [1, 3]])]}})
    assert [(r["predictor"], r["method"], r["test images"], r["false positives"], r["false negatives"], r["per run %"])
            for r in rows] == [("top-k", "a", 8, 6, 0, "75.0, 50.0"), ("one draw", "a", 8, 0, 1, "100.0, 87.5")]
    assert rows[0]["accuracy %"] == pytest.approx(62.5) and rows[1]["accuracy %"] == pytest.approx(93.75)
    assert rows[0]["s.e. %"] == pytest.approx(100 * chance_margin(0.625, 8, 1.0))
    own = [FoldResult("a", r, k, 0.5, None, 4, 0.1, [], [[1, 1], [1, 1]]) for r in (0, 1) for k in (0, 1)]
    (row,) = predictor_rows({"p": {"a": own}}, shared_test_set=False)  # 2 folds x 2 repetitions of 4 images
    assert row["test images"] == 8 and (row["false positives"], row["false negatives"]) == (4, 4)
    with pytest.raises(ValueError, match="binary confusion"):
        predictor_rows({"p": {"b": [FoldResult("b", 0, 0, 0.5, None, 9, 0.1, [], [[1, 0, 0], [0, 1, 0], [0, 0, 1]])]}})


def test_auc_standard_error_is_the_exact_null_spread_at_one_half():
    """At 0.5 Hanley-McNeil's SE is the spread of the AUC over every ranking of n1 positives among n1 + n2 crops."""
    from itertools import combinations

    import numpy as np

    from zoomin_lib.chapters.results import auc_standard_error
    from zoomin_lib.train.loop import binary_auc

    n1, n2 = 3, 5
    scores = np.arange(n1 + n2, dtype=float)
    aucs = []
    for chosen in combinations(range(n1 + n2), n1):  # every ranking, equally likely when scores carry no signal
        labels = np.zeros(n1 + n2, dtype=int)
        labels[list(chosen)] = 1
        aucs.append(binary_auc(scores, labels))
    labels = np.array([1] * n1 + [0] * n2)
    assert auc_standard_error(labels) == pytest.approx(np.std(aucs))
    q1, q2 = 0.9 / 1.1, 2 * 0.81 / 1.9  # eq. 2 of Hanley & McNeil at AUC 0.9, by hand
    want = np.sqrt((0.9 * 0.1 + 2 * (q1 - 0.81) + 4 * (q2 - 0.81)) / 15)
    assert auc_standard_error(labels, 0.9) == pytest.approx(want)
    with pytest.raises(ValueError, match="both classes"):
        auc_standard_error(np.ones(4, dtype=int))


def test_initial_model_is_the_model_run_method_starts_training_from():
    """initial_model's weights equal those of run_method's model at its first loss, and depend only on the seed."""
    at_first_loss = []

    def recording(loss_fn):
        def loss(model, batch, epoch):
            if not at_first_loss:
                at_first_loss.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            return loss_fn(model, batch, epoch)
        return loss

    x, y = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(1)), torch.tensor([0, 1, 0, 1])
    settings = TrainSettings(epochs=1, batch_size=2, lr=1e-2, contrastive=False)
    _, trained = run_method("Zoom-In", _zoomin, settings, tensor_batches(x, y, 2, seed=0), [(x, y)], run_seed=7,
                            tag="Zoom-In_r0_f0", device="cpu", loss_wrapper=recording)
    state = initial_model(_zoomin, 7, "cpu")[0].state_dict()
    again = initial_model(_zoomin, 7, "cpu")[0].state_dict()
    other = initial_model(_zoomin, 8, "cpu")[0].state_dict()
    assert at_first_loss and state.keys() == at_first_loss[0].keys()
    assert all(torch.equal(state[k], at_first_loss[0][k]) for k in state)
    assert all(torch.equal(state[k], again[k]) for k in state)
    assert any(not torch.equal(state[k], other[k]) for k in state)
    assert any(not torch.equal(state[k], v) for k, v in trained.state_dict().items())  # the run did train
