"""Tests of zoomin_lib.models: ATS, Zoom-In and the baselines at tiny sizes."""

from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoomin_lib.geometry import extract_patches, view
from zoomin_lib.models import MODES, ATSNet, CNNBaseline, DeepMIL, UniformNet, ZoomInNet, complement
from zoomin_lib.networks import AttentionLeNet, FeatureLeNet, ResNetCNN


def make_ats(replace: bool = False, n: int = 3) -> ATSNet:
    """ATS at tiny size: view 0.25 of 64x64 -> 16x16 locations, 8x8 patches."""
    return ATSNet(AttentionLeNet(3, True), FeatureLeNet(3), 2, 0.25, 8, n, replace=replace)


def make_zoomin(n: int = 3) -> ZoomInNet:
    """Zoom-In at tiny size: 32x32 tiles, s1 = s2 = 0.25, 8x8 patches."""
    return ZoomInNet(AttentionLeNet(3, True), AttentionLeNet(3, False), FeatureLeNet(3), 2, 0.25, 0.25, 32, 8, n)


MAKERS: dict[str, Callable[[], nn.Module]] = {
    "ats": make_ats,
    "ats_replace": lambda: make_ats(replace=True),
    "zoomin": make_zoomin,
    "uniform": lambda: UniformNet(FeatureLeNet(3), 2, 0.25, 8, 3),
    "deepmil": lambda: DeepMIL(FeatureLeNet(3), 2, 16),
    "cnn": lambda: CNNBaseline(ResNetCNN(3, 2, channels=8), 0.5),
}


class TinyFeatures(nn.Module):
    """A cheap feature network (1x1 conv, tanh, global average pool) for Monte Carlo tests."""

    out_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[M, 3, p, p] -> [M, 4]."""
        return torch.tanh(3 * self.conv(x)).mean(dim=(2, 3))


def naive_patch(x: torch.Tensor, b: int, r: int, c: int, p: int, pad: int = 40) -> torch.Tensor:
    """Patch of size p with top-left (r - p//2, c - p//2) from a zero-padded copy of image b."""
    padded = F.pad(x[b], (pad, pad, pad, pad))
    top, left = r - p // 2 + pad, c - p // 2 + pad
    return padded[:, top : top + p, left : left + p]


@pytest.mark.parametrize("name", list(MAKERS))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("contrastive", [False, True])
def test_forward_backward_all_modes(name: str, mode: str, contrastive: bool) -> None:
    torch.manual_seed(0)
    model = MAKERS[name]()
    x = torch.rand(2, 3, 64, 64)
    if (
        (name == "deepmil" and (mode != "exact" or contrastive))
        or (name == "cnn" and contrastive)
        or (name == "uniform" and (mode == "topk" or contrastive))
    ):
        with pytest.raises(ValueError):
            model(x, mode=mode, contrastive=contrastive)
        return
    out = model(x, mode=mode, contrastive=contrastive)
    assert out.logits.shape == (2, 2) and torch.isfinite(out.logits).all()
    out.logits.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    if name != "cnn":
        N = out.centers.shape[1]
        assert out.centers.shape == (2, N, 2)
        assert (out.centers >= 0).all() and (out.centers < 64).all()
        assert torch.allclose(out.alpha.sum(dim=1), torch.ones(2))
        if mode != "exact":
            assert N == 3


def test_gradients_reach_every_network_in_sample_mode() -> None:
    torch.manual_seed(1)
    x = torch.rand(2, 3, 64, 64)
    for model, parts in ((make_zoomin(), ("attention_a", "attention_b", "features", "g")), (make_ats(), ("attention", "features", "g"))):
        model(x, generator=torch.Generator().manual_seed(3)).logits.sum().backward()
        for part in parts:
            grads = [p.grad for p in getattr(model, part).parameters()]
            assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0, part


def test_zoomin_computes_b_only_on_unique_tiles() -> None:
    torch.manual_seed(2)
    model = make_zoomin(n=6)
    rows: list[int] = []
    model.attention_b.register_forward_hook(lambda m, inp, out: rows.append(inp[0].shape[0]))
    x = torch.rand(2, 3, 64, 64)
    out = model(x, generator=torch.Generator().manual_seed(0))
    pairs = {(b, int(t)) for b in range(2) for t in out.tiles[b]}
    assert rows == [len(pairs)] == [out.betas.shape[0]]
    assert {(int(b), int(t)) for b, t in zip(out.beta_batch, out.beta_tile)} == pairs
    # each draw of a tile takes a distinct sub-tile, and its centre lies inside its tile
    for b in range(2):
        seen = list(zip(out.tiles[b].tolist(), out.subtiles[b].tolist()))
        assert len(seen) == len(set(seen))
    top = (out.tiles // 2) * 32
    left = (out.tiles % 2) * 32
    assert ((out.centers[..., 0] >= top) & (out.centers[..., 0] < top + 32)).all()
    assert ((out.centers[..., 1] >= left) & (out.centers[..., 1] < left + 32)).all()


def test_ats_exact_equals_hand_loop() -> None:
    torch.manual_seed(3)
    model = ATSNet(AttentionLeNet(3, False), FeatureLeNet(3), 2, 0.25, 5, 2, chunk_size=7).double()
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)
    out = model(x, mode="exact")
    h, w = 4, 5
    a = torch.softmax(model.attention(view(x, 0.25)).flatten(1), dim=1)  # [B, h*w]
    for b in range(2):
        total = torch.zeros(32, dtype=torch.float64)
        for i in range(h * w):
            r, c = (i // w) * 15 // (h - 1), (i % w) * 19 // (w - 1)
            total += a[b, i] * model.features(naive_patch(x, b, r, c, 5).unsqueeze(0))[0]
        assert torch.allclose(out.features[b], total)
    assert torch.allclose(out.logits, model.g(out.features))


@pytest.mark.parametrize("gated", [False, True])
def test_deep_mil_is_ilse_attention_over_every_patch_of_the_grid(gated: bool) -> None:
    """Ilse et al. eq. 8-9 by hand: the grid's patches (zero-padded at the border), attention from their features."""
    torch.manual_seed(3)
    model = DeepMIL(TinyFeatures(), 2, 6, gated=gated, hidden=5, chunk_size=4).double()
    x = torch.rand(2, 3, 16, 20, dtype=torch.float64)  # grid 3 x 4 of 6x6 patches; the last row and column partial
    out = model(x)
    for b in range(2):
        patches = [naive_patch(x, b, r + 3, c + 3, 6) for r in (0, 6, 12) for c in (0, 6, 12, 18)]
        h = model.features(torch.stack(patches))  # [12, 4]
        logit = model.w(torch.tanh(model.V(h)) * (torch.sigmoid(model.U(h)) if gated else 1))[:, 0]
        a = torch.softmax(logit, 0)
        assert torch.allclose(out.alpha[b], a)
        assert torch.allclose(out.features[b], a @ h)
    assert torch.allclose(out.logits, model.g(out.features))
    assert out.centers.shape == (2, 12, 2)


def test_zoomin_exact_equals_hand_loop() -> None:
    torch.manual_seed(4)
    model = ZoomInNet(AttentionLeNet(3, False), AttentionLeNet(3, False), FeatureLeNet(3), 2, 0.25, 0.25, 16, 5, 2, chunk_size=10).double()
    x = torch.rand(1, 3, 32, 24, dtype=torch.float64)  # tiles 16: grid 2x2, right column partial (8 px)
    out = model(x, mode="exact")
    alpha = out.alpha[0]
    total = torch.zeros(32, dtype=torch.float64)
    for t in range(4):
        top, left = (t // 2) * 16, (t % 2) * 16
        beta = model.second_stage(x, torch.tensor([0]), torch.tensor([t]))[0]  # [16]: 4x4 sub-tiles
        for k in range(16):
            r, c = top + (k // 4) * 15 // 3, left + (k % 4) * 15 // 3
            total += alpha[t] * beta[k] * model.features(naive_patch(x, 0, r, c, 5).unsqueeze(0))[0]
    assert torch.allclose(out.features[0], total)


def sharpen(net: nn.Module, k: float = 30.0) -> nn.Module:
    """Scale the last conv of an attention network so that its distribution is far from uniform."""
    with torch.no_grad():
        [m for m in net.modules() if isinstance(m, nn.Conv2d)][-1].weight.mul_(k)
    return net


def _mc_check(model: nn.Module, x1: torch.Tensor, copies: int) -> None:
    """The mean of `copies` sampled aggregates is within 4 standard errors of the exact one, and the check has power."""
    with torch.no_grad():
        full = model(x1, mode="exact")
        est = model(x1.expand(copies, -1, -1, -1), generator=torch.Generator().manual_seed(5)).features  # [copies, D]
        patches = extract_patches(x1, torch.zeros_like(full.centers[0, :, 0]), full.centers[0, :, 0], full.centers[0, :, 1], model.patch_size)
        unweighted = model.features(patches).mean(dim=0)  # [D]: what ignoring the attention would give
    exact = full.features[0]
    se = est.std(dim=0) / copies**0.5
    err = (est.mean(dim=0) - exact).abs()
    assert (err <= 4 * se + 1e-9).all(), (err / (se + 1e-12)).max()
    assert ((unweighted - exact).abs() > 4 * se).any()


def test_sampled_aggregate_approaches_exact() -> None:
    torch.manual_seed(6)
    x1 = torch.rand(1, 3, 32, 32, dtype=torch.float64)
    ats = ATSNet(sharpen(AttentionLeNet(3, False)), TinyFeatures(), 2, 0.25, 5, 4).double()
    _mc_check(ats, x1, 400)
    ats.replace = True
    _mc_check(ats, x1, 400)
    a, b = sharpen(AttentionLeNet(3, False)), sharpen(AttentionLeNet(3, False))
    zoom = ZoomInNet(a, b, TinyFeatures(), 2, 0.25, 0.5, 16, 5, 4).double()
    _mc_check(zoom, x1, 400)
    _mc_check(zoom, x1[..., :24], 400)  # partial tiles on the right


def test_topk_is_deterministic_and_picks_the_highest_attention() -> None:
    torch.manual_seed(7)
    x = torch.rand(2, 3, 64, 64)
    ats = make_ats()
    o1, o2 = ats(x, mode="topk"), ats(x, mode="topk")
    assert torch.equal(o1.logits, o2.logits)
    assert torch.equal(o1.locations, o1.alpha.topk(3, dim=1).indices)
    assert torch.allclose(o1.weights.sum(dim=1), torch.ones(2))
    zoom = make_zoomin()
    z1, z2 = zoom(x, mode="topk"), zoom(x, mode="topk")
    assert torch.equal(z1.logits, z2.logits) and torch.equal(z1.centers, z2.centers)
    assert torch.allclose(z1.weights.sum(dim=1), torch.ones(2))


def test_contrastive_uses_the_complement() -> None:
    torch.manual_seed(8)
    x = torch.rand(1, 3, 64, 64)
    out = make_ats()(x, mode="exact", contrastive=True)
    assert torch.allclose(out.weights, complement(out.alpha))
    assert torch.allclose(out.weights.sum(dim=1), torch.ones(1))


def test_uniform_net_is_uniform() -> None:
    out = UniformNet(FeatureLeNet(3), 2, 0.25, 8, 3)(torch.rand(2, 3, 64, 64))
    assert torch.allclose(out.alpha, torch.full((2, 256), 1 / 256))


def test_float64_models() -> None:
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    models = {
        "ats": ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, 0.25, 5, 3),
        "zoomin": ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, False), FeatureLeNet(3), 2, 0.25, 0.25, 16, 5, 3),
        "uniform": UniformNet(FeatureLeNet(3), 2, 0.25, 5, 3),
        "deepmil": DeepMIL(TinyFeatures(), 2, 5),
        "cnn": CNNBaseline(ResNetCNN(3, 2, channels=8), 0.5),
    }
    for name, model in models.items():
        out = model.double()(x, mode="exact" if name == "deepmil" else "sample")
        assert out.logits.dtype == torch.float64, name
        out.logits.sum().backward()
        assert all(p.grad is None or p.grad.dtype == torch.float64 for p in model.parameters())


def test_nan_input_gives_clear_error() -> None:
    x = torch.rand(2, 3, 64, 64)
    x[1, 0, 5, 5] = float("nan")
    for name, make in MAKERS.items():
        if name == "cnn":
            continue
        model = make()
        with pytest.raises(ValueError, match="NaN"):
            model(x, mode="exact" if name == "deepmil" else "sample")


def test_bad_arguments() -> None:
    x = torch.rand(1, 3, 64, 64)
    with pytest.raises(ValueError, match="mode"):
        make_ats()(x, mode="greedy")
    with pytest.raises(ValueError, match="n_patches"):
        ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, 0.0625, 8, 17)(x)
    with pytest.raises(ValueError, match="larger than the image"):
        ATSNet(AttentionLeNet(3), FeatureLeNet(3), 2, 0.25, 80, 2)(x)
    with pytest.raises(ValueError, match="scale"):
        make_zoomin().__class__(AttentionLeNet(3), AttentionLeNet(3), FeatureLeNet(3), 2, 1.5, 0.5, 32, 8, 3)
    valid_conv = nn.Conv2d(3, 1, 3)  # no padding: a smaller score map
    with pytest.raises(ValueError, match="same padding"):
        ATSNet(valid_conv, FeatureLeNet(3), 2, 0.25, 8, 2)(x)


def _fixed_zoomin(alpha: torch.Tensor, beta: torch.Tensor, tile_chunk: int = 1) -> ZoomInNet:
    """A ZoomInNet on 1x3x64x64 inputs (4 tiles of 32, 8x8 sub-tile grid) whose alpha [T] and beta [T, 64] are fixed."""
    model = ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, final_tanh=False), FeatureLeNet(3), 2,
                      scale1=0.25, scale2=0.25, tile_size=32, patch_size=8, n_patches=3, tile_chunk=tile_chunk)
    model.visited = []
    model.tile_scores = lambda src: alpha.log().expand(src.batch_size, -1)  # softmax(log alpha) = alpha

    def second_stage(src, batch, tile, contrastive, checks):
        model.visited += tile.tolist()
        return beta[tile], beta[tile]

    model._second_stage = second_stage
    return model


def test_zoomin_topk_finds_the_largest_products_even_in_a_lower_tile() -> None:
    """The reviewer's case: the best sub-tile lies in the tile of third-highest alpha."""
    alpha = torch.tensor([0.269, 0.269, 0.220, 0.242])
    alpha = alpha / alpha.sum()
    beta = torch.full((4, 64), 1 / 64)
    beta[3] = 0.001
    beta[3, 5] = 1 - 0.001 * 63  # sharply peaked
    model = _fixed_zoomin(alpha, beta)
    out = model(torch.rand(1, 3, 64, 64), mode="topk")
    joint = alpha[:, None] * beta  # [T, K2]
    chosen = joint[out.tiles[0], out.subtiles[0]]
    assert torch.allclose(chosen.sort().values, joint.flatten().topk(3).values.sort().values)  # ties aside
    assert (3, 5) in list(zip(out.tiles[0].tolist(), out.subtiles[0].tolist()))


def test_zoomin_topk_stops_early_and_matches_brute_force() -> None:
    gen = torch.Generator().manual_seed(0)
    alpha = torch.tensor([0.85, 0.1, 0.03, 0.02])
    beta = torch.softmax(3 * torch.randn(4, 64, generator=gen), 1)
    model = _fixed_zoomin(alpha, beta)
    out = model(torch.rand(1, 3, 64, 64), mode="topk")
    joint = (alpha[:, None] * beta).flatten()
    chosen = sorted(t * 64 + s for t, s in zip(out.tiles[0].tolist(), out.subtiles[0].tolist()))
    assert chosen == sorted(joint.topk(3).indices.tolist())
    assert torch.allclose(out.weights[0].sum(), torch.tensor(1.0))
    assert len(model.visited) < 4  # tiles whose alpha is below the 3rd best product are never viewed


def test_padding_only_subtiles_get_no_attention() -> None:
    """100x100 image, 64-pixel tiles: the edge tiles' sub-tiles centred beyond the image are never drawn or weighted."""
    torch.manual_seed(0)
    model = ZoomInNet(AttentionLeNet(3), AttentionLeNet(3, final_tanh=False), FeatureLeNet(3), 2,
                      scale1=0.25, scale2=0.25, tile_size=64, patch_size=8, n_patches=6)
    x = torch.rand(2, 3, 100, 100)
    exact = model(x, mode="exact")
    inside = (exact.centers[..., 0] < 100) & (exact.centers[..., 1] < 100)
    assert (~inside).any()  # the edge tiles do reach beyond the image ...
    assert (exact.weights[~inside] == 0).all()  # ... but those sub-tiles weigh nothing
    assert torch.allclose(exact.weights.sum(1), torch.ones(2))
    gen = torch.Generator().manual_seed(1)
    for contrastive in (False, True):
        for _ in range(20):
            out = model(x, generator=gen, contrastive=contrastive)
            assert (out.centers < 100).all()


def test_complement_over_a_support() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2, 0.0], [1.0, 0.0, 0.0, 0.0]])
    support = torch.tensor([[True, True, True, False], [True, False, False, False]])
    comp = complement(p, support)
    assert torch.allclose(comp[0], torch.tensor([0.25, 0.35, 0.4, 0.0]))
    assert torch.equal(comp[1], torch.tensor([1.0, 0.0, 0.0, 0.0]))  # a single entry keeps it
    assert torch.allclose(complement(p[:1, :3]), torch.tensor([[0.25, 0.35, 0.4]]))
