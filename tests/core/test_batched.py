"""The batched forward against simple per-image references: values, locations, gradients, top-k by brute force, syncs."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoomin_lib.geometry import extract_patches
from zoomin_lib.hierarchical import expectation_two_stage
from zoomin_lib.models import ATSNet, ZoomInNet, complement
from zoomin_lib.networks import AttentionLeNet, FeatureLeNet
from zoomin_lib.pixels import TensorSource
from zoomin_lib.syncs import record_syncs


def sharp(net: nn.Module, k: float = 8.0) -> nn.Module:
    """Scale the last conv so that the attention is far from uniform (the top-k search then stops early)."""
    with torch.no_grad():
        [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1].weight.mul_(k)
    return net


def zoomin(n: int = 5, tile: int = 24, **kw) -> ZoomInNet:
    """Zoom-In on 3-channel images, float64; tiles of `tile` (partial edge tiles on 100 x 90 images)."""
    torch.manual_seed(0)
    return ZoomInNet(sharp(AttentionLeNet(3, False)), sharp(AttentionLeNet(3, False)), FeatureLeNet(3), 2,
                     scale1=0.25, scale2=0.25, tile_size=tile, patch_size=7, n_patches=n, **kw).double()


X = torch.rand(4, 3, 100, 90, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


@pytest.mark.parametrize("mode", ["topk", "exact"])
@pytest.mark.parametrize("contrastive", [False, True])
def test_deterministic_modes_equal_one_image_at_a_time(mode, contrastive):
    """Row b of the batched forward is the forward of image b alone: logits, locations, weights and gradients."""
    model = zoomin()
    x = X if mode == "topk" else X[..., :60, :50]  # exact: every sub-tile of 3 x 3 tiles, partial ones included
    batched = model(x, mode=mode, contrastive=contrastive)
    batched.logits.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    for b in range(x.shape[0]):
        one = model(x[b : b + 1], mode=mode, contrastive=contrastive)
        torch.testing.assert_close(one.logits, batched.logits[b : b + 1], rtol=0, atol=1e-10)
        assert torch.equal(one.centers, batched.centers[b : b + 1])
        torch.testing.assert_close(one.weights, batched.weights[b : b + 1], rtol=0, atol=1e-12)
        one.logits.sum().backward()
    for p, g in zip(model.parameters(), grads):
        torch.testing.assert_close(p.grad, g, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("contrastive", [False, True])
def test_sampled_forward_equals_a_per_image_estimator_on_the_same_draws(contrastive):
    """Features and gradients of the batched sample mode equal eq. 9 computed image by image on its draws."""
    model = zoomin(n=6)
    out = model(X, generator=torch.Generator().manual_seed(3), contrastive=contrastive)
    out.features.sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if not n.startswith("g.")}
    model.zero_grad()
    total = 0
    for b in range(X.shape[0]):
        xb = X[b : b + 1]
        alpha = model.first_stage(xb)  # [1, T]
        p1 = complement(alpha) if contrastive else alpha
        tiles, subs = out.tiles[b : b + 1], out.subtiles[b : b + 1]  # [1, N]
        uniq = sorted(set(tiles[0].tolist()))
        beta = model.second_stage(xb, torch.zeros(len(uniq), dtype=torch.long), torch.tensor(uniq))  # [U, K2]
        inside = model.subtile_inside(torch.tensor(uniq), xb.shape[-2:])
        p2 = complement(beta, inside) if contrastive else beta
        drawn = torch.stack([p2[uniq.index(t), s] for t, s in zip(tiles[0].tolist(), subs[0].tolist())])[None]  # [1, N]
        rows, cols = model.centers(tiles, subs, xb.shape[-2:])
        feats = model.features(extract_patches(xb, torch.zeros(tiles.shape[1], dtype=torch.long), rows[0], cols[0], 7))
        est = expectation_two_stage(p1, tiles, drawn, feats[None])  # [1, D]
        torch.testing.assert_close(est, out.features[b : b + 1], rtol=0, atol=1e-10)
        total = total + est.sum()
    total.backward()
    for n, p in model.named_parameters():
        if n in grads:
            torch.testing.assert_close(p.grad, grads[n], rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("contrastive", [False, True])
@pytest.mark.parametrize("n", [1, 5, 40])
def test_batched_topk_is_the_brute_force_top_n_of_every_image(n, contrastive):
    """The top-k search returns the N largest alpha_c beta^c_c' over all tiles (exact mode's weights), for every image."""
    model = zoomin(n=n, tile_chunk=3)
    x = X[..., :80, :70]  # 4 x 3 tiles, the last row and column partial
    with torch.no_grad():
        exact = model(x, mode="exact", contrastive=contrastive)  # weights [B, T*K2], unnormalised joint
        top = model(x, mode="topk", contrastive=contrastive)
    K2 = model.subview_size[0] * model.subview_size[1]
    for b in range(x.shape[0]):
        want = exact.weights[b].topk(n).values
        got = exact.weights[b, top.tiles[b] * K2 + top.subtiles[b]]
        torch.testing.assert_close(got.sort().values, want.sort().values, rtol=0, atol=1e-15)


@pytest.mark.parametrize("tile_chunk", [1, 2, None])
def test_grid_and_banded_tile_views_give_the_same_model(tile_chunk):
    """On images that tiles divide, the all-tile view path (one chunk) and the banded path (chunks) agree."""
    x = X[..., :96, :72]  # 4 x 3 whole tiles of 24
    model = zoomin(n=4, tile_chunk=tile_chunk)
    with torch.no_grad():
        out = model(x, mode="topk")
        ref = zoomin(n=4, tile_chunk=1)(x, mode="topk")
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=1e-12)
    src = TensorSource(x)
    b, t = torch.tensor([0, 3, 1, 2]), torch.tensor([0, 11, 5, 7])
    (grid,) = list(src.tile_view_chunks(b, t, (24, 24), 0.25, 100))
    torch.testing.assert_close(grid, src.tile_views(b, t, (24, 24), 0.25), rtol=0, atol=1e-12)


def _syncs(model: nn.Module, x: torch.Tensor, mode: str) -> int:
    with torch.no_grad(), record_syncs() as log:
        model(x, mode=mode, generator=torch.Generator().manual_seed(0))
    return len(log)


def test_host_synchronisations_do_not_grow_with_the_batch_or_n():
    """The documented counts: ATS 1; Zoom-In sample 2, exact 1, top-k 1 when T <= N (no extra round needed)."""
    torch.manual_seed(0)
    x = torch.rand(16, 3, 64, 64)
    for n in (3, 8):
        ats = ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, 0.25, 8, n)
        zoom = ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, False), FeatureLeNet(3), 2, 0.25, 0.25, 32, 8, n)
        for b in (1, 16):
            assert [_syncs(ats, x[:b], m) for m in ("sample", "topk", "exact")] == [1, 1, 1]
            # T = 4 tiles: N = 8 opens them all at once; N = 3 opens 3, then one check whether the 4th is needed
            assert [_syncs(zoom, x[:b], m) for m in ("sample", "topk", "exact")] == [2, 1 if n >= 4 else 2, 1]


def test_topk_rounds_are_bounded_by_log_t_over_n():
    """A flat attention over T tiles opens them in rounds doubling in size: at most 1 + ceil(log2(T / N)) syncs."""
    torch.manual_seed(0)
    model = ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, False), FeatureLeNet(3), 2, 0.25, 0.25, 8, 4, 2)
    with torch.no_grad():  # flat attention: every network outputs 0
        for m in (model.attention_a, model.attention_b):
            for p in m.parameters():
                p.zero_()
    x = torch.rand(3, 3, 64, 64)  # T = 64 tiles, N = 2: the whole grid is opened
    with torch.no_grad(), record_syncs() as log:
        out = model(x, mode="topk")
    assert out.beta_tile.numel() == 3 * 64
    assert 1 < len(log) <= 1 + 5  # ceil(log2(64 / 2)) = 5 search rounds at most, plus the checks
