"""Tests of zoomin_lib.losses against hand-computed values (eq. 12, 13 and sec. 2.2 of Zoom-In)."""

import math

import pytest
import torch

from zoomin_lib.geometry import tile_pool
from zoomin_lib.losses import (
    attention_mse,
    contrastive_loss,
    entropy_regularizer,
    mask_to_view,
    weighted_cross_entropy,
    zoomin_objective,
)


def test_weighted_cross_entropy_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])  # p = [.5,.5], [.75,.25]
    target = torch.tensor([1, 0])
    plain = weighted_cross_entropy(logits, target)
    assert plain.item() == pytest.approx((math.log(2) - math.log(0.75)) / 2)
    weighted = weighted_cross_entropy(logits, target, [1.0, 3.0])
    # weighted mean: (3 * log 2 + 1 * -log .75) / (3 + 1)
    assert weighted.item() == pytest.approx((3 * math.log(2) - math.log(0.75)) / 4)


def test_weighted_cross_entropy_rejects_bad_input():
    with pytest.raises(ValueError, match="one entry per class"):
        weighted_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1]), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="NaN"):
        weighted_cross_entropy(torch.tensor([[float("nan"), 0.0]]), torch.tensor([0]))
    with pytest.raises(ValueError, match=r"\[B\]"):
        weighted_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 1, 1]))
    with pytest.raises(ValueError, match="outside"):
        weighted_cross_entropy(torch.zeros(2, 2), torch.tensor([0, 2]))


def test_contrastive_loss_binary_is_paper_formula():
    logits = torch.tensor([[0.3, 1.2], [2.0, -1.0], [-0.5, 0.7]], requires_grad=True)
    target = torch.tensor([1, 0, 1])
    psi = torch.softmax(logits, dim=1)[:, 1].detach()
    expected_sum = -(torch.log(1 - psi[0]) + torch.log(1 - psi[2]))
    total = contrastive_loss(logits, target, reduction="sum")
    assert total.item() == pytest.approx(expected_sum.item(), rel=1e-6)
    mean = contrastive_loss(logits, target)
    assert mean.item() == pytest.approx(expected_sum.item() / 2, rel=1e-6)
    mean.backward()
    assert logits.grad is not None and logits.grad[1].abs().sum() == 0  # reference image unused
    assert logits.grad[0].abs().sum() > 0


def test_contrastive_loss_multiclass_reference():
    logits = torch.log(torch.tensor([[0.2, 0.5, 0.3], [0.6, 0.1, 0.3]]))
    loss = contrastive_loss(logits, torch.tensor([0, 2]), reference_class=1, reduction="none")
    # image 0 (label 0) and image 1 (label 2) are both non-reference: -log p(class 1)
    assert torch.allclose(loss, -torch.log(torch.tensor([0.5, 0.1])))


def test_contrastive_loss_zero_without_positives_keeps_graph():
    logits = torch.randn(3, 2, requires_grad=True)
    loss = contrastive_loss(logits, torch.zeros(3, dtype=torch.long))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(logits.grad, torch.zeros(3, 2))


def test_entropy_regularizer_value_sign_and_zero():
    p = torch.tensor([[0.5, 0.25, 0.25, 0.0], [1.0, 0.0, 0.0, 0.0]], requires_grad=True)
    value = entropy_regularizer(p, lam=0.1)
    expected = 0.1 * (0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25))  # 0 log 0 = 0
    assert value.item() == pytest.approx(expected)
    value.backward()
    assert torch.isfinite(p.grad).all()


def test_entropy_regularizer_minimal_at_uniform():
    k = 5
    uniform = entropy_regularizer(torch.full((k,), 1.0 / k), lam=1.0)
    assert uniform.item() == pytest.approx(-math.log(k))  # lam * sum p log p = -H
    gen = torch.Generator().manual_seed(0)
    for _ in range(20):
        other = torch.softmax(torch.randn(k, generator=gen), dim=0)
        assert entropy_regularizer(other, lam=1.0).item() > uniform.item()


def test_entropy_regularizer_rejects_bad_input():
    with pytest.raises(ValueError, match="non-negative"):
        entropy_regularizer(torch.tensor([-0.1, 1.1]), 1.0)
    with pytest.raises(ValueError, match="NaN"):
        entropy_regularizer(torch.tensor([float("nan"), 1.0]), 1.0)


def test_zoomin_objective_combines_terms():
    logits = torch.tensor([[0.0, 1.0], [1.0, 0.0]], requires_grad=True)
    target = torch.tensor([1, 0])
    alpha = torch.tensor([[0.5, 0.5], [1.0, 0.0]], requires_grad=True)
    betas = torch.tensor([[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]], requires_grad=True)
    con_logits = torch.tensor([[2.0, 0.0], [0.0, 3.0]], requires_grad=True)
    lam = 0.5
    off, parts_off = zoomin_objective(logits, target, alpha, betas,
                                      contrastive_logits=con_logits, lam=lam)
    on, parts_on = zoomin_objective(logits, target, alpha, betas,
                                    contrastive_logits=con_logits, use_contrastive=True, lam=lam)
    ce = weighted_cross_entropy(logits, target).item()
    er_a = lam * 0.5 * 2 * math.log(0.5) / 2
    er_b = lam * (0.25 * math.log(0.25) + 0.75 * math.log(0.75) + math.log(0.5)) / 2
    con = -math.log(torch.softmax(con_logits[0], 0)[0].item()) / 2  # one positive, B = 2
    assert parts_off["contrastive"] == 0.0
    assert off.item() == pytest.approx(ce + er_a + er_b, rel=1e-6)
    assert on.item() == pytest.approx(ce + con + er_a + er_b, rel=1e-6)
    assert parts_on["contrastive"] == pytest.approx(con, rel=1e-6)
    assert set(parts_on) == {"total", "ce", "contrastive", "entropy_alpha", "entropy_beta"}
    on.backward()
    for t in (logits, alpha, betas, con_logits):
        assert t.grad is not None and t.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="contrastive_logits"):
        zoomin_objective(logits, target, alpha, use_contrastive=True)


def test_attention_mse_literal_and_normalized():
    attention = torch.tensor([[0.5, 0.5, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25]])
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    literal = attention_mse(attention, mask)
    assert literal.item() == pytest.approx((0.25 + 0.25 + 4 * 0.0625) / 2)
    normalized = attention_mse(attention, mask, normalize_mask=True)
    # row 0 matches M / sum M exactly; row 1's M stays all-zero
    assert normalized.item() == pytest.approx(4 * 0.0625 / 2)
    with pytest.raises(ValueError, match="shape"):
        attention_mse(attention, mask[:, :3])


def test_mask_to_view_tiles_by_hand():
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, 0, 0] = True  # tile (0, 0)
    mask[0, 3, 4:6] = True  # tile (1, 2), 2 of its 4 pixels
    tiles = mask_to_view(mask, tile_size=2)
    assert torch.equal(tiles, torch.tensor([[[1.0, 0, 0], [0, 0, 1]]]))
    frac = mask_to_view(mask, tile_size=2, rule="fraction")
    assert torch.allclose(frac, torch.tensor([[[0.25, 0, 0], [0, 0, 0.5]]]))
    # 4 x 6 in tiles of 3 x 4 -> padded to 6 x 8 -> 2 x 2 grid
    padded = mask_to_view(mask, tile_size=(3, 4))
    assert torch.equal(padded, torch.tensor([[[1.0, 0], [0, 1]]]))


def test_mask_to_view_fraction_of_partial_tiles_counts_only_pixels_inside():
    """All-ROI image, size not a multiple of the tile: every tile, partial ones too, is all ROI."""
    full = torch.ones(2, 10, 7, dtype=torch.bool)
    frac = mask_to_view(full, tile_size=(4, 3), rule="fraction")
    assert frac.shape == (2, 3, 3) and torch.equal(frac, torch.ones(2, 3, 3))
    mask = torch.zeros(1, 4, 6, dtype=torch.bool)
    mask[0, 0, 0] = True  # tile (0, 0): 1 of 3 x 4 = 12 pixels
    mask[0, 3, 4:6] = True  # tile (1, 1): 2 of the 1 x 2 pixels inside the image
    frac = mask_to_view(mask, tile_size=(3, 4), rule="fraction")
    assert torch.allclose(frac, torch.tensor([[[1 / 12, 0], [0, 1.0]]]))
    # the same as tile_pool of the mask as a full-resolution score map
    gen = torch.Generator().manual_seed(0)
    mask = torch.rand(3, 13, 11, generator=gen) > 0.6
    pooled = tile_pool(mask.double(), (13, 11), (5, 4))
    assert torch.allclose(mask_to_view(mask.double(), tile_size=(5, 4), rule="fraction"), pooled)


def test_mask_to_view_downsampled_view():
    mask = torch.zeros(1, 4, 4)
    mask[0, 2, 1] = 1
    view = mask_to_view(mask, view_size=2)
    assert torch.equal(view, torch.tensor([[[0.0, 0], [1, 0]]]))
    # a 3-wide view of 4 columns: column 1 is covered by view columns 0 and 1
    view = mask_to_view(mask, view_size=(2, 3))
    assert torch.equal(view, torch.tensor([[[0.0, 0, 0], [1, 1, 0]]]))
    with pytest.raises(ValueError, match="exactly one"):
        mask_to_view(mask, view_size=2, tile_size=2)
    with pytest.raises(ValueError, match="binary"):
        mask_to_view(mask * 0.5, view_size=2)
