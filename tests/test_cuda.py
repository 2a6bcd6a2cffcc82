"""The CUDA path: the same estimators and models on a GPU (skipped where there is none)."""

import pytest
import torch

from zoomin_lib.enumeration import expected_value_and_grads, without_replacement_outcomes
from zoomin_lib.hierarchical import expectation_two_stage, sample_subtiles, unique_draws
from zoomin_lib.models import ATSNet, ZoomInNet
from zoomin_lib.networks import AttentionLeNet, FeatureLeNet
from zoomin_lib.profiling import profile_inference
from zoomin_lib.sampling import (
    expectation_without_replacement,
    sample_with_replacement,
    sample_without_replacement,
)
from zoomin_lib.training import seed_everything

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
