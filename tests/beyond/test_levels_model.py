"""LevelsZoomIn (Zoom-In with L >= 3 levels): its exact mode against a per-path reference built from crops and
views, its sampled estimate against the exact aggregate (unbiased: a Monte-Carlo test with a fixed seed), attention
computed only inside drawn cells, and training through the generic step."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoomin_lib.geometry import extract_patches, view, view_size, view_to_full
from zoomin_lib.beyond.levels import LevelsZoomIn
from zoomin_lib.steps import sampling_loss

PATCH = 3


class PatchFeatures(nn.Module):
    """f: a linear map of the flattened patch, with `out_features` (deterministic, so expectations are exact)."""

    def __init__(self, d: int = 4) -> None:
        super().__init__()
        self.out_features = d
        self.lin = nn.Linear(PATCH * PATCH, d)

    def forward(self, p: Tensor) -> Tensor:
        return torch.tanh(self.lin(p.flatten(1)))


def make_model(n_children=(2,), levels: int = 3, n_patches: int = 3) -> LevelsZoomIn:
    """16x16 images: tiles of 8 (V(x, 0.5)), cells of 4 (V(tile, 0.5)), [cells of 2,] leaf views at scale 1."""
    torch.manual_seed(0)
    nets = [nn.Conv2d(1, 1, 3, padding=1) for _ in range(levels)]
    cells = [8, 4, 2][: levels - 1]
    scales = [0.5, 0.5, 1.0, 1.0][:levels]
    return LevelsZoomIn(nets, PatchFeatures(), 2, scales, cells, PATCH, n_patches, list(n_children)).double()


def reference_exact(model: LevelsZoomIn, x: Tensor, contrastive: bool = False) -> Tensor:
    """sum over every path of the product of its attentions times f(patch), one path at a time, from crops ([D]).

    Any image size: crops of the image zero-padded to whole tiles; a child cell whose top-left, or a leaf
    location whose centre, lies beyond the image has no attention (and, with `contrastive`, no complement).
    """
    L, sizes, scales = len(model.scales), model.cell_sizes, model.scales
    H, W = x.shape[-2:]
    tile = sizes[0]
    padded = F.pad(x, (0, -W % tile, 0, -H % tile))  # zero beyond the border

    def attention(level: int, top: int, left: int, side: int) -> Tensor:
        crop = padded[:, :, top:top + side, left:left + side]  # [1, C, side, side]
        s = model._network(level)(view(crop, scales[level - 1]))[0, 0]  # [u, v]
        if level < L:
            k = side // sizes[level - 1]
            s = F.adaptive_avg_pool2d(s[None], (k, k))[0]  # the child cells' mean scores
            offs = torch.arange(k) * sizes[level - 1]
            inside = ((top + offs)[:, None] < H) & ((left + offs)[None, :] < W)
        else:
            u, v = s.shape
            rr = view_to_full(torch.arange(u), torch.zeros(u, dtype=torch.long), (u, v), (side, side))[0]
            cc = view_to_full(torch.zeros(v, dtype=torch.long), torch.arange(v), (u, v), (side, side))[1]
            inside = ((top + rr)[:, None] < H) & ((left + cc)[None, :] < W)
        inside = inside.flatten() if inside.any() else torch.ones(inside.numel(), dtype=torch.bool)
        p = torch.softmax(s.flatten().masked_fill(~inside, float("-inf")), 0)
        if contrastive:  # the complement; a single child inside keeps its whole mass (nothing else to draw)
            comp = (1 - p) * inside
            p = comp / comp.sum() if comp.sum() > 0 else inside / inside.sum()
        return p

    total = torch.zeros(model.features.out_features, dtype=x.dtype)

    def walk(level: int, top: int, left: int, weight: Tensor) -> None:
        nonlocal total
        side = sizes[level - 2]
        probs = attention(level, top, left, side)
        if level == L:
            u, v = view_size((side, side), scales[-1])
            for loc in range(u * v):
                dr, dc = view_to_full(torch.tensor([loc // v]), torch.tensor([loc % v]), (u, v), (side, side))
                patch = extract_patches(x, torch.tensor([0]), top + dr, left + dc, PATCH)
                total = total + weight * probs[loc] * model.features(patch)[0]
            return
        k, small = side // sizes[level - 1], sizes[level - 1]
        for child in range(k * k):
            walk(level + 1, top + (child // k) * small, left + (child % k) * small, weight * probs[child])

    alpha = model.first_stage(x)[0]
    if contrastive:
        alpha = (1 - alpha) / (alpha.numel() - 1)
    n_cols = -(-W // tile)
    for t in range(alpha.numel()):
        walk(2, (t // n_cols) * tile, (t % n_cols) * tile, alpha[t])
    return total


@pytest.mark.parametrize("levels, n_children", [(3, (2,)), (4, (2, 1))])
def test_exact_mode_is_the_sum_over_every_path(levels, n_children):
    model = make_model(n_children, levels)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        out = model(x, mode="exact")
        torch.testing.assert_close(out.features[0], reference_exact(model, x))


@pytest.mark.parametrize("levels, n_children, shape", [(3, (2,), (20, 16)), (4, (2, 1), (13, 22))])
@pytest.mark.parametrize("contrastive", [False, True])
def test_exact_mode_on_sides_that_are_not_multiples_of_the_tile(levels, n_children, shape, contrastive):
    """Partial edge tiles padded with zeros; cells and leaves beyond the border get no attention (nor complement)."""
    model = make_model(n_children, levels)
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    with torch.no_grad():
        out = model(x, mode="exact", contrastive=contrastive)
        torch.testing.assert_close(out.features[0], reference_exact(model, x, contrastive))


@pytest.mark.parametrize("shape, contrastive", [((16, 16), False), ((22, 14), False), ((22, 14), True)])
def test_sampled_estimate_is_unbiased_for_the_exact_aggregate(shape, contrastive):
    """R copies of one image in one batched forward: the mean estimate is within 4 standard errors of the exact one;
    also on a side that is not a multiple of the tile, and for the contrastive sample (every level's complement)."""
    model = make_model((2,), 3, n_patches=3)
    x = torch.rand(1, 1, *shape, dtype=torch.float64)
    R = 4000
    with torch.no_grad():
        exact = model(x, mode="exact", contrastive=contrastive).features[0]  # [D]
        est = model(x.expand(R, -1, -1, -1), mode="sample", generator=torch.Generator().manual_seed(0),
                    contrastive=contrastive).features
    se = est.std(dim=0) / R**0.5  # [D]
    assert ((est.mean(dim=0) - exact).abs() < 4 * se + 1e-12).all(), (est.mean(dim=0), exact, se)


def test_deeper_attention_runs_only_inside_drawn_cells():
    model = make_model((2,), 3, n_patches=3)
    seen = []
    model.deeper[0].register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    B = 5
    with torch.no_grad():
        out = model(torch.rand(B, 1, 16, 16, dtype=torch.float64), generator=torch.Generator().manual_seed(1))
    assert sum(seen) == B * 3  # one view per drawn level-2 cell (N = 3 per image), not the 16 cells of an image
    assert out.centers.shape == (B, 3 * 2, 2)  # N x n_3 patches


def test_draws_on_a_partial_edge_tile_stay_inside_the_image():
    """15 x 23 pixels (tiles of 8: a 2 x 3 grid, the last row and column partial): every drawn centre is inside."""
    model = make_model((2, 1), 4, n_patches=3)
    with torch.no_grad():
        out = model(torch.rand(64, 1, 15, 23, dtype=torch.float64), generator=torch.Generator().manual_seed(2))
    rows, cols = out.centers[..., 0], out.centers[..., 1]  # [B, N * 2]
    assert (rows < 15).all() and (cols < 23).all() and (rows >= 0).all() and (cols >= 0).all()
    assert (rows >= 8).any() and (cols >= 16).any()  # the partial tiles were drawn


def test_trains_through_the_generic_step():
    model = make_model((2,), 3)
    x, y = torch.rand(4, 1, 16, 16, dtype=torch.float64), torch.tensor([0, 1, 1, 0])
    loss, parts = sampling_loss(generator=torch.Generator().manual_seed(0))(model, (x, y), 20)
    loss.backward()
    for name, net in [("a", model.attention_a), ("b", model.attention_b), ("level 3", model.deeper[0]),
                      ("f", model.features)]:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), name
    assert parts["contrastive"] > 0.0  # the contrastive sample (every level from its complement) joins after warm-up


def test_bad_configurations_raise_clear_errors():
    nets = [nn.Conv2d(1, 1, 3, padding=1) for _ in range(3)]
    with pytest.raises(ValueError, match="L >= 3"):
        LevelsZoomIn(nets[:2], PatchFeatures(), 2, [0.5, 0.5], [8], PATCH, 3, [])
    with pytest.raises(ValueError, match="does not divide"):
        LevelsZoomIn(nets, PatchFeatures(), 2, [0.5, 0.5, 1.0], [8, 3], PATCH, 3, [1])
    with pytest.raises(ValueError, match="only 4"):
        LevelsZoomIn(nets, PatchFeatures(), 2, [0.5, 0.5, 0.5], [8, 4], PATCH, 3, [5])
    model = make_model()
    with pytest.raises(ValueError, match="no top-k"):
        model(torch.rand(1, 1, 16, 16, dtype=torch.float64), mode="topk")
    assert list(itertools.chain(model.child_counts)) == [4, 16]


def test_build_levels_uses_the_papers_networks_at_every_level():
    from zoomin_lib.beyond.levels import build_levels
    from zoomin_lib.networks import AttentionLeNet, FeatureLeNet

    model = build_levels(in_channels=3, n_classes=2, scales=[0.1, 0.1, 0.5], cell_sizes=[250, 50], patch_size=27,
                         n_patches=4, n_children=[2])
    assert [type(m) for m in (model.attention_a, model.attention_b, *model.deeper)] == [AttentionLeNet] * 3
    assert isinstance(model.features, FeatureLeNet) and model.child_counts == [25, 625]
    assert model.deeper[0] is not model.attention_b  # each level its own weights


def test_a_batch_of_different_images_matches_each_image_alone():
    """Exact mode on two different images in one batch equals the per-path reference of each (no mixing of images)."""
    model = make_model((2, 1), 4)
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        both = model(x, mode="exact").features  # [2, D]
        for b in range(2):
            torch.testing.assert_close(both[b], reference_exact(model, x[b : b + 1]))


def test_a_node_without_enough_children_is_reported():
    model = make_model((2,), 3)
    with torch.no_grad():
        model.deeper[0].weight.zero_()
        model.deeper[0].bias.fill_(0.0)
        model.deeper[0].weight[0, 0, 1, 1] = 1e4  # attention collapses on the brightest location of every cell
    x = torch.zeros(1, 1, 16, 16, dtype=torch.float64)
    x[..., ::4, ::4] = 1.0  # one bright pixel per level-2 cell: a single child of positive attention
    with pytest.raises(ValueError, match="fewer than 2 children of positive attention"):
        model(x, generator=torch.Generator().manual_seed(0))
