"""The CUDA path: the same estimators and models on a GPU (skipped where there is none)."""

import pytest
import torch

from zoomin_lib.hierarchical import expectation_two_stage, sample_subtiles, unique_draws
from zoomin_lib.models import ATSNet, ZoomInNet
from zoomin_lib.networks import AttentionLeNet, FeatureLeNet
from zoomin_lib.sampling import expectation_without_replacement, sample_with_replacement, sample_without_replacement
from zoomin_lib.theory.enumeration import expected_value_and_grads, without_replacement_outcomes
from zoomin_lib.train.loop import seed_everything
from zoomin_lib.train.profiling import profile_inference

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
CUDA = torch.device("cuda")


def test_samplers_run_on_cuda_with_a_cuda_generator():
    gen = torch.Generator(device=CUDA).manual_seed(0)
    probs = torch.softmax(torch.randn(4, 50, device=CUDA), 1)
    idx = sample_without_replacement(probs, 10, gen)
    assert idx.device.type == "cuda" and all(len(set(r)) == 10 for r in idx.tolist())
    tiles = sample_with_replacement(probs, 8, gen)
    draws = unique_draws(tiles)
    sub = sample_subtiles(torch.softmax(torch.randn(draws.n_unique, 20, device=CUDA), 1), draws, gen)
    assert sub.shape == tiles.shape and sub.device.type == "cuda"


def test_samplers_accept_a_cpu_generator_with_cuda_probs():
    """The draw runs on the generator's device; the indices come back on the probs' device."""
    probs = torch.softmax(torch.randn(4, 50, device=CUDA), 1)
    idx = sample_with_replacement(probs, 12, torch.Generator().manual_seed(0))
    want = sample_with_replacement(probs.cpu(), 12, torch.Generator().manual_seed(0))
    assert idx.device.type == "cuda" and torch.equal(idx.cpu(), want)
    idx = sample_without_replacement(probs, 10, torch.Generator().manual_seed(1))
    want = sample_without_replacement(probs.cpu(), 10, torch.Generator().manual_seed(1))
    assert idx.device.type == "cuda" and torch.equal(idx.cpu(), want)
    sub = sample_subtiles(torch.softmax(torch.randn(3, 20, device=CUDA), 1),
                          unique_draws(torch.tensor([[0, 1, 1, 2]], device=CUDA)), torch.Generator().manual_seed(2))
    assert sub.device.type == "cuda"
    # and the reverse: a CUDA generator with CPU probs
    idx = sample_without_replacement(probs.cpu(), 10, torch.Generator(device=CUDA).manual_seed(1))
    assert idx.device.type == "cpu" and all(len(set(r)) == 10 for r in idx.tolist())


def test_seed_everything_gives_a_cuda_generator_that_drives_a_cuda_model():
    gen = seed_everything(0)
    assert gen.device.type == "cuda" and seed_everything(0, "cpu").device.type == "cpu"
    zoom = ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, final_tanh=False), FeatureLeNet(3), 2,
                     scale1=0.25, scale2=0.5, tile_size=32, patch_size=8, n_patches=3).to(CUDA)
    out = zoom(torch.rand(2, 3, 64, 64, device=CUDA), mode="sample", generator=gen)
    assert out.logits.device.type == "cuda"


def test_estimator_exact_on_cuda_float64():
    """Enumeration on the GPU: value and gradient match the exact ones."""
    logits = torch.randn(5, dtype=torch.float64, device=CUDA, requires_grad=True)
    feats = torch.randn(5, 3, dtype=torch.float64, device=CUDA, requires_grad=True)
    project = torch.randn(3, dtype=torch.float64, device=CUDA)

    def estimate(seq):
        idx = torch.tensor([seq], device=CUDA)
        return expectation_without_replacement(torch.softmax(logits, 0)[None], idx, feats[idx])

    outcomes = list(without_replacement_outcomes(torch.softmax(logits.detach(), 0).tolist(), 3))
    value, grads = expected_value_and_grads(outcomes, estimate, [logits, feats], project)
    exact = torch.softmax(logits, 0) @ feats
    exact_grads = torch.autograd.grad((exact * project).sum(), [logits, feats])
    assert torch.allclose(value[0], exact.detach(), atol=1e-10)
    for got, want in zip(grads, exact_grads):
        assert torch.allclose(got, want, atol=1e-10)


def test_two_stage_matches_cpu_on_the_same_draws():
    alpha = torch.softmax(torch.randn(2, 6, dtype=torch.float64), 1)
    tiles = torch.tensor([[1, 3, 1, 5], [0, 0, 0, 2]])
    beta = torch.rand(2, 4, dtype=torch.float64) * 0.3 + 0.05
    feats = torch.randn(2, 4, 7, dtype=torch.float64)
    cpu = expectation_two_stage(alpha, tiles, beta, feats)
    gpu = expectation_two_stage(alpha.to(CUDA), tiles.to(CUDA), beta.to(CUDA), feats.to(CUDA))
    assert torch.allclose(cpu, gpu.cpu(), atol=1e-12)


@pytest.mark.parametrize("mode", ["sample", "topk", "exact"])
def test_models_forward_backward_on_cuda(mode):
    x = torch.rand(2, 3, 64, 64, device=CUDA)
    gen = torch.Generator(device=CUDA).manual_seed(0)
    zoom = ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, final_tanh=False), FeatureLeNet(3), 2,
                     scale1=0.25, scale2=0.5, tile_size=32, patch_size=8, n_patches=3).to(CUDA)
    ats = ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, scale=0.25, patch_size=8, n_patches=3).to(CUDA)
    for model in (zoom, ats):
        out = model(x, mode=mode, generator=gen)
        out.logits.sum().backward()
        assert out.logits.device.type == "cuda"
        assert all(p.grad is not None for p in model.g.parameters())


def test_profile_inference_uses_cuda_peak_memory():
    model = ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, scale=0.25, patch_size=8, n_patches=3).to(CUDA)
    report = profile_inference(model, torch.rand(1, 3, 64, 64, device=CUDA), mode="topk", min_run_time=0.05)
    assert report["memory_method"] == "cuda.max_memory_allocated"
    assert report["peak_memory_mb"] > 0 and report["ms_per_sample"] > 0


# ---------------------------------------------------------------- the batched forward on a GPU


def _zoomin(n: int = 4, **kw) -> ZoomInNet:
    torch.manual_seed(0)
    return ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, final_tanh=False), FeatureLeNet(3), 2,
                     scale1=0.25, scale2=0.25, tile_size=24, patch_size=7, n_patches=n, **kw)


def _all_models():
    """Every model in every mode it has, on the GPU."""
    from zoomin_lib.models import DeepMIL, UniformNet

    torch.manual_seed(0)
    ats = ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, scale=0.25, patch_size=7, n_patches=4)
    ats_r = ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, scale=0.25, patch_size=7, n_patches=4, replace=True)
    yield from ((_zoomin().to(CUDA), m, c) for m in ("sample", "topk", "exact") for c in (False, True))
    yield from ((_zoomin(n=40, tile_chunk=2).to(CUDA), "topk", False),)  # several search rounds
    yield from ((ats.to(CUDA), m, c) for m in ("sample", "topk", "exact") for c in (False, True))
    yield ats_r.to(CUDA), "sample", False
    yield UniformNet(FeatureLeNet(3), 2, 0.25, 7, 4).to(CUDA), "sample", False
    yield DeepMIL(FeatureLeNet(3), 2, 12).to(CUDA), "exact", False


def test_every_mode_runs_without_an_undocumented_host_synchronisation():
    """Under set_sync_debug_mode('error') only the `host_sync` places synchronise; their count does not grow with B."""
    from zoomin_lib.syncs import record_syncs

    for model, mode, contrastive in _all_models():
        counts = []
        for batch in (1, 16):
            x = torch.rand(batch, 3, 96, 72, device=CUDA)
            gen = torch.Generator(device=CUDA).manual_seed(0)
            with torch.no_grad():
                model(x, mode=mode, generator=gen, contrastive=contrastive)  # warm-up: constant tables uploaded once
                torch.cuda.synchronize()
                torch.cuda.set_sync_debug_mode("error")
                try:
                    with record_syncs() as log:
                        out = model(x, mode=mode, generator=gen, contrastive=contrastive)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
            assert out.logits.device.type == "cuda"
            counts.append(len(log))
        name = f"{type(model).__name__} {mode}{' contrastive' if contrastive else ''}"
        if not (isinstance(model, ZoomInNet) and mode == "topk"):
            assert counts[0] == counts[1], (name, counts)
        assert max(counts) <= {"sample": 2, "topk": 1 + 6, "exact": 1}[mode], (name, counts)


def test_gpu_forward_equals_the_cpu_forward():
    """The same weights and images: top-k and exact outputs on the GPU equal the CPU's (float64)."""
    x = torch.rand(3, 3, 100, 90, dtype=torch.float64)
    cpu = _zoomin(n=5).double()
    gpu = _zoomin(n=5).double().to(CUDA)
    for mode in ("topk", "exact"):
        with torch.no_grad():
            a, b = cpu(x, mode=mode), gpu(x.to(CUDA), mode=mode)
        torch.testing.assert_close(b.logits.cpu(), a.logits, rtol=0, atol=1e-9)
        assert torch.equal(b.centers.cpu(), a.centers)


def test_slide_path_on_a_gpu_equals_the_tensor_path():
    """SlideZoomIn with a CUDA model on an in-memory slide gives the tensor path's top-k and logits."""
    import numpy as np

    from zoomin_lib.infra.slides import ArraySlide
    from zoomin_lib.train.protocol import image_tensor
    from zoomin_lib.wsi.predict import SlideZoomIn

    rng = np.random.default_rng(0)
    image = (rng.random((256, 320, 3)) * 255).astype(np.uint8)
    net = _zoomin(n=6).to(CUDA).eval()
    model = SlideZoomIn(net, tissue_only=False, strip_pixels=700).to(CUDA).eval()
    with torch.no_grad(), model.open(ArraySlide(image)) as reader:
        out = model(reader, mode="topk")
        ref = net(image_tensor(image).to(CUDA), mode="topk")
    assert out.logits.device.type == "cuda"
    assert torch.equal(out.tiles, ref.tiles) and torch.equal(out.subtiles, ref.subtiles)
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-4)


def test_chapter04_training_pretraining_and_prediction_with_a_cuda_model(tmp_path):
    """Chapter 04's path on a GPU: pre-training from annotations, eq. 12 training on slides, prediction, peaks."""
    import numpy as np
    from slide_fixtures import tissue_blob

    from zoomin_lib import builders
    from zoomin_lib.infra.slides import write_pyramid_tiff
    from zoomin_lib.train.loop import seed_everything
    from zoomin_lib.train.profiling import host_peak_memory, lean_inference
    from zoomin_lib.wsi.predict import SlideATS, SlideZoomIn, evaluate_slides
    from zoomin_lib.wsi.train import fit_slides, pretrain_tile_classifiers

    class Box:
        def __init__(self, box):
            self.box = np.array(box, dtype=float)

        def boxes(self):
            return self.box[None]

        def window(self, location, extent, size):
            (x, y), (W, H), (w, h) = location, extent, size
            cy, cx = y + (np.arange(h) + 0.5) * H / h, x + (np.arange(w) + 0.5) * W / w
            x0, y0, x1, y1 = self.box
            return ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]

    paths = []
    for k in range(2):
        image, _ = tissue_blob(1024, 1280, centre=(600, 700), radius=300, seed=k)
        if k:
            image[560:640, 660:740] = (80, 40, 120)  # a dark "metastasis"
        paths.append(write_pyramid_tiff(tmp_path / f"s{k}.tif", image, tile=256))
    torch.manual_seed(0)
    model = SlideZoomIn(builders.zoomin(in_channels=3, n_classes=2, scale1=0.125, scale2=0.25, tile_size=128,
                                        patch_size=16, n_patches=6)).to(CUDA)
    readers = [model.open(p, label=k, roi=Box((660, 560, 740, 640)) if k else None, cache_views=True)
               for k, p in enumerate(paths)]
    gen = seed_everything(0)
    assert gen.device.type == "cuda"
    info = pretrain_tile_classifiers(model, readers, steps=3, windows={"a": 8, "b": 8}, generator=gen)
    assert info["positive_tiles"] > 0
    history = fit_slides(model, readers, epochs=2, lr=1e-3, batch_size=2, warmup_epochs=1, pixel_weight=1.0,
                         generator=gen, progress=False)
    assert len(history) == 2 and np.isfinite(history[-1]["loss"])
    assert next(model.parameters()).device.type == "cuda"
    with lean_inference(model.net):
        metrics, preds, failed = evaluate_slides(model, paths, [0, 1])
        sampled, _, _ = evaluate_slides(model, paths, [0, 1], mode="sample", generator=gen)
        peak = host_peak_memory(lambda: model.predict_one(paths[1]), CUDA)
    assert not failed and metrics["n"] == 2 and sampled["n"] == 2
    assert peak["device_mb"] > 0
    ats = SlideATS(builders.ats(in_channels=3, n_classes=2, scale=0.25, patch_size=16, n_patches=6)).to(CUDA)
    with lean_inference(ats.net):
        assert host_peak_memory(lambda: ats.predict_one(paths[1]), CUDA)["device_mb"] > peak["device_mb"]
    for r in readers:
        r.close()


def test_chapters_train_on_the_gpu_and_zoomin_profiles_below_ats():
    """run_folds trains on the GPU (models come back on the host); the lean inference peak is Zoom-In's below ATS's."""
    from types import SimpleNamespace

    from zoomin_lib import builders
    from zoomin_lib.train.profiling import profile_methods
    from zoomin_lib.train.protocol import TrainSettings, run_folds

    torch.manual_seed(0)
    x, y = torch.rand(12, 3, 500, 500), torch.tensor([0, 1] * 6)
    methods = {"Zoom-In": lambda: builders.zoomin(in_channels=3, n_classes=2, scale1=0.1, scale2=0.2, tile_size=250,
                                                  patch_size=27, n_patches=10),
               "ATS-10": lambda: builders.ats(in_channels=3, n_classes=2, scale=0.2, patch_size=27, n_patches=10)}
    settings = {k: TrainSettings(epochs=1, batch_size=5, lr=1e-3, warmup_epochs=0) for k in methods}
    folds = [SimpleNamespace(repetition=0, fold=0, train=list(range(8)), test=list(range(8, 12)))]
    results, trained = run_folds(methods, settings, x, y, folds, progress=False)
    assert all(next(m.parameters()).device.type == "cpu" for m in trained.values())
    costs = profile_methods(trained, x[:1], generator=torch.Generator().manual_seed(0), min_run_time=0.05)
    assert costs["Zoom-In"]["device"].startswith("cuda")
    assert costs["Zoom-In"]["peak_memory_mb"] < costs["ATS-10"]["peak_memory_mb"], costs
