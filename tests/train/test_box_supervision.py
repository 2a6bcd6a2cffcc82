"""train.supervision (Zoom-In with boxes): masks from boxes, attention targets, the attention cross-entropy and pre-training from boxes."""

import math

import pytest
import torch

from zoomin_lib import builders
from zoomin_lib.losses import attention_nll
from zoomin_lib.steps import sampling_loss
from zoomin_lib.train.supervision import (
    attention_targets,
    box_attention_loss,
    box_examples,
    box_mask,
    box_term,
    pretrain_from_boxes,
    tile_masks,
)


def _model(**kw):
    args = dict(in_channels=3, n_classes=3, scale1=0.25, scale2=0.5, tile_size=32, patch_size=8, n_patches=3)
    args.update(kw)
    return builders.zoomin(**args)


def test_box_mask_marks_the_box_clipped_to_the_image():
    m = box_mask([(2.5, 1, 4, 3), (9, 9, 20, 20)], 10, 12)
    assert m.shape == (10, 12)
    assert m[1:3, 2:4].eq(1).all() and m[9:, 9:].eq(1).all()
    assert int(m.sum()) == 2 * 2 + 1 * 3


@pytest.mark.parametrize("box", [(1, 2, 3), (5, 0, 1, 4), (0, 0, math.nan, 1)])
def test_box_mask_rejects_malformed_boxes(box):
    with pytest.raises(ValueError, match="box"):
        box_mask([box], 8, 8)


def test_attention_nll_is_the_cross_entropy_against_the_normalised_mask():
    p = torch.tensor([[0.5, 0.25, 0.25], [0.2, 0.3, 0.5]])
    t = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    expected = -(0.5 * math.log(0.5) + 0.5 * math.log(0.25))  # the second row has no ROI: left out
    assert float(attention_nll(p, t)) == pytest.approx(expected)
    assert float(attention_nll(p, torch.zeros_like(t))) == 0.0


def test_attention_nll_gradient_is_alpha_minus_the_target():
    logits = torch.tensor([[0.3, -1.0, 2.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.0, 1.0, 1.0, 0.0]])
    attention_nll(logits.softmax(1), target).backward()
    expected = logits.detach().softmax(1) - target / target.sum()
    assert torch.allclose(logits.grad, expected, atol=1e-6)


def test_targets_follow_the_tiles_and_the_s2_grid():
    model = _model()
    mask = torch.zeros(1, 64, 64)
    mask[0, 40:48, 8:16] = 1  # inside tile (row 1, col 0) = tile 2
    x = torch.randn(1, 3, 64, 64)
    out = model(x, mode="exact")
    alpha_t, beta_t = attention_targets(model, out, mask)
    assert alpha_t.shape == (1, 4) and torch.allclose(alpha_t, torch.tensor([[0, 0, 64 / 1024, 0]]))
    assert beta_t.shape == (4, 16 * 16)
    grid = beta_t[2].view(16, 16)  # tile 2 at s2: 16 x 16 locations of 2 px
    assert grid[4:8, 4:8].eq(1).all() and int(grid.sum()) == 16
    assert beta_t[[0, 1, 3]].eq(0).all()


def test_tile_masks_pad_partial_edge_tiles():
    model = _model()
    mask = torch.ones(1, 40, 40)  # tiles of 32: the edge tiles are 8 px wide inside the image
    m = tile_masks(model, mask, torch.tensor([0]), torch.tensor([3])).view(16, 16)
    assert m[:4, :4].eq(1).all() and int(m.sum()) == 16


def test_box_attention_loss_enters_sampling_loss_and_pulls_alpha_to_the_box():
    torch.manual_seed(0)
    model = _model()
    x = torch.randn(2, 3, 64, 64)
    y = torch.tensor([1, 0])
    mask = torch.zeros(2, 64, 64)
    mask[0, 40:48, 8:16] = 1
    loss_fn = sampling_loss(warmup_epochs=5, extra_terms={"box_attention": box_term(1.0)},
                            generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="masks"):
        loss_fn(model, (x, y), 0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = float(model.first_stage(x[:1]).detach()[0, 2])
    for _ in range(30):
        loss, parts = loss_fn(model, (x, y, mask), 0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert "box_attention" in parts
    assert float(model.first_stage(x[:1]).detach()[0, 2]) > max(before, 0.5)
    out = model(x, mode="sample", generator=torch.Generator().manual_seed(1))
    assert float(box_attention_loss(model, out, mask).detach()) >= 0


def _images(n=6, size=64):
    """Noise images; odd ones hold a bright square (class 1), even ones none (class 0)."""
    g = torch.Generator().manual_seed(3)
    for i in range(n):
        x = 0.1 * torch.randn(1, 3, size, size, generator=g)
        mask = torch.zeros(size, size)
        if i % 2:
            r, c = 8 + 6 * i % 40, 40 - 5 * i % 30
            x[..., r : r + 8, c : c + 8] += 3.0
            mask[r : r + 8, c : c + 8] = 1
        yield x, mask, i % 2


def test_box_examples_collect_views_tiles_and_labelled_subtiles():
    model = _model()
    ex = box_examples(model, _images(), background_class=0, subtiles_per_image=4, negative_tiles=1,
                      generator=torch.Generator().manual_seed(0))
    counts = ex.counts()
    assert counts["views"] == 6 and counts["views_with_roi"] == 3
    assert counts["tiles_with_roi"] >= 3 and counts["tiles_with_roi"] + 3 <= counts["tiles"] <= counts["tiles_with_roi"] + 6
    assert all(t.shape == (3, 16, 16) for t in ex.tiles) and all(s.shape == (3, 8, 8) for s in ex.subtiles)
    assert ex.subtile_labels.count(1) == 3 * 4 and ex.subtile_labels.count(0) == 6 * 2
    for patch, label in zip(ex.subtiles, ex.subtile_labels):  # sub-tiles centred on the square carry class 1
        assert (label == 1) == bool(patch.mean() > 1.0)
    without_background = box_examples(model, _images(), subtiles_per_image=4, generator=torch.Generator().manual_seed(0))
    assert set(without_background.subtile_labels) == {1} and len(without_background.subtiles) == 12


def test_box_examples_reject_bad_input():
    model = _model()
    with pytest.raises(ValueError, match="no image with a box"):
        box_examples(model, [(torch.zeros(1, 3, 64, 64), torch.zeros(64, 64), 0)])
    with pytest.raises(ValueError, match="does not match"):
        box_examples(model, [(torch.zeros(1, 3, 64, 64), torch.zeros(32, 64), 0)])


def test_pretraining_from_boxes_finds_the_square():
    torch.manual_seed(0)
    model = _model()
    ex = box_examples(model, _images(n=12), background_class=0, generator=torch.Generator().manual_seed(0))
    report = pretrain_from_boxes(model, ex, epochs={"a": 60, "b": 40, "f": 40}, lr=1e-2,
                                 generator=torch.Generator().manual_seed(0))
    fits = report["fits"]
    assert fits["a"]["last_loss"] < fits["a"]["first_loss"] and fits["b"]["last_loss"] < fits["b"]["first_loss"]
    assert fits["a"]["top_on_roi"] == 1.0 and fits["b"]["top_on_roi"] == 1.0
    assert fits["f"]["train_accuracy"] == 1.0
    x, mask, _ = next(iter(list(_images(n=2))[1:]))
    alpha_t = attention_targets(model, model(x, mode="topk"), mask[None])[0]
    assert int(model.first_stage(x).argmax()) == int(alpha_t.argmax())


def test_pretraining_keeps_images_whose_views_match_but_tile_grids_differ_apart():
    """64 and 65 rows give one 16-row view at s1 = 0.25 but 2 and 3 rows of 32-pixel tiles: never one mini-batch."""
    model = _model()
    images = []
    for rows in (64, 65, 64, 65):
        mask = torch.zeros(rows, 64)
        mask[4:12, 4:12] = 1
        images.append((torch.randn(1, 3, rows, 64), mask, 1))
    ex = box_examples(model, images, generator=torch.Generator().manual_seed(0))
    assert {tuple(v.shape) for v in ex.views} == {(3, 16, 16)} and len(ex.tile_fractions[1]) == 6
    report = pretrain_from_boxes(model, ex, epochs={"a": 2}, generator=torch.Generator().manual_seed(0))
    assert report["fits"]["a"]["epochs"] == 2
