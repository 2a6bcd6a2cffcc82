"""IPS's regularisers (thesis sec. 3.3-3.4): Diversity and Semantic losses against hand computation, STKIM's mask
frequencies against its probability, and the terms in the generic training step."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from zoomin_lib import IPSNet
from zoomin_lib.ips import CrossAttentionPool, HeadMLPs, regulariser_terms, top_k_mask
from zoomin_lib.losses import diversity_loss, semantic_loss
from zoomin_lib.networks import FeatureLeNet
from zoomin_lib.steps import sampling_loss


def test_diversity_loss_is_the_mean_pairwise_cosine_of_the_heads():
    torch.manual_seed(0)
    attn = torch.softmax(torch.randn(3, 4, 2, 7, dtype=torch.float64), dim=-1)  # [B, H, T, M]
    B, H, T, _ = attn.shape
    by_hand = []
    for b, t in itertools.product(range(B), range(T)):
        pairs = [float(attn[b, i, t] @ attn[b, j, t] / (attn[b, i, t].norm() * attn[b, j, t].norm()))
                 for i in range(H) for j in range(i + 1, H)]
        by_hand.append(2 / (H * (H - 1)) * sum(pairs))  # eq. 10
    assert float(diversity_loss(attn)) == pytest.approx(sum(by_hand) / len(by_hand), abs=1e-12)
    same = attn[:, :1].expand(-1, H, -1, -1)  # every head the same map: cosine 1
    assert float(diversity_loss(same)) == pytest.approx(1.0)
    assert float(diversity_loss(attn[:, :1])) == 0.0  # one head, no pair
    with pytest.raises(ValueError, match=r"\[B, H, T, M\]"):
        diversity_loss(attn[0])


def test_semantic_loss_is_each_heads_cross_entropy():
    torch.manual_seed(1)
    logits, y = torch.randn(6, 3, 4), torch.randint(0, 4, (6,))  # [B, H, C]
    per_head = semantic_loss(logits, y, per_head=True)
    assert per_head.shape == (3,)
    for h in range(3):
        assert float(per_head[h]) == pytest.approx(float(F.cross_entropy(logits[:, h], y)))
    assert float(semantic_loss(logits, y)) == pytest.approx(float(per_head.mean()))


def test_top_k_mask_masks_each_top_entry_with_probability_p_and_nothing_else():
    torch.manual_seed(2)
    logits = torch.randn(20000, 9)  # [R, N]
    k, p = 3, 0.3
    mask = top_k_mask(logits, k, p, torch.Generator().manual_seed(0))
    rank = logits.argsort(dim=-1, descending=True).argsort(dim=-1)  # rank of every entry in its row
    assert not mask[rank >= k].any()  # only the top k are ever masked
    for r in range(k):  # each rank of the top k is masked with frequency p
        freq = float(mask[rank == r].float().mean())
        assert abs(freq - p) < 4 * math.sqrt(p * (1 - p) / len(logits)), (r, freq)
    everything = top_k_mask(logits[:100], k=9, p=1.0)
    assert (everything.sum(-1) == 8).all()  # one instance of every row always stays
    assert not top_k_mask(logits, k, 0.0).any()
    with pytest.raises(ValueError, match="probability"):
        top_k_mask(logits, k, 1.5)


def test_stkim_zeroes_the_masked_attention_in_training_only():
    torch.manual_seed(3)
    pool = CrossAttentionPool(16, n_queries=1, n_heads=4, mask_top_k=2, mask_prob=0.5)
    x = torch.randn(5, 6, 16)  # [B, N, D]
    logits = pool.logits(x)  # [B, H, T, N]
    pool.train()
    _, attn, _ = pool(x, torch.Generator().manual_seed(7))
    mask = top_k_mask(logits, 2, 0.5, torch.Generator().manual_seed(7))  # the same draws
    assert mask.any() and (attn[mask] == 0).all()
    expected = torch.softmax(logits.masked_fill(mask, -math.inf), dim=-1)  # the rest renormalised
    torch.testing.assert_close(attn, expected)
    pool.eval()
    _, attn_eval, _ = pool(x, torch.Generator().manual_seed(7))
    torch.testing.assert_close(attn_eval, torch.softmax(logits, dim=-1))  # off at inference


def test_head_mlps_equal_one_mlp_per_head():
    """The stacked, batched MLPs against H separate nn.Sequential built from the same weights (eq. 12)."""
    torch.manual_seed(4)
    H, Dv, hidden, classes = 3, 5, 8, [4, 2]
    mlps = HeadMLPs(H, Dv, hidden, classes).eval()
    z = torch.randn(2, H, len(classes), Dv)  # [B, H, T, Dv]
    out = mlps(z)
    for h in range(H):
        for t, c in enumerate(classes):
            layers = [nn.Linear(Dv, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, c)]
            for layer, (w, b) in zip(layers[::2], [(mlps.w1, mlps.b1), (mlps.w2, mlps.b2), (mlps.w3[t], mlps.b3[t])]):
                layer.weight.data, layer.bias.data = w[h].T.clone(), b[h].clone()
            torch.testing.assert_close(out[t][:, h], nn.Sequential(*layers)(z[:, h, t]))


def make_ips(**kwargs) -> IPSNet:
    torch.manual_seed(0)
    return IPSNet(FeatureLeNet(1), 3, 8, 5, 7, n_heads=4, **kwargs)


def test_regularisers_add_their_weighted_terms_to_the_objective():
    model = make_ips(semantic=True, mask_top_k=2, mask_prob=0.5)
    model.head_mlps.dropout.p = 0.0  # the heads' dropout draws from torch's global generator: off, to compare
    x, y = torch.randn(4, 1, 32, 32), torch.tensor([0, 1, 2, 1])
    loss_fn = sampling_loss(extra_terms=regulariser_terms(semantic=0.5, diversity=2.0),
                            generator=torch.Generator().manual_seed(0))
    total, parts = loss_fn(model, (x, y), 0)
    with torch.no_grad():
        out = model(x, generator=torch.Generator().manual_seed(0))  # the same mask draws
    assert out.head_logits.shape == (4, 4, 3)  # [B, H, C]
    assert parts["semantic"] == pytest.approx(0.5 * float(semantic_loss(out.head_logits, y)), rel=1e-5)
    assert parts["diversity"] == pytest.approx(2.0 * float(diversity_loss(out.attention)), rel=1e-5)
    assert float(total.detach()) == pytest.approx(parts["ce"] + parts["semantic"] + parts["diversity"], rel=1e-5)
    total.backward()
    assert model.head_mlps.w1.grad.abs().sum() > 0  # the heads' MLPs are trained by L_p
    assert set(regulariser_terms(semantic=0.0, diversity=1.0)) == {"diversity"}


def test_semantic_term_needs_semantic_heads_and_defaults_change_nothing():
    plain, x = make_ips(), torch.randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="semantic=True"):
        sampling_loss(extra_terms=regulariser_terms())(plain, (x, torch.tensor([0, 1])), 0)
    plain.eval()
    masked = make_ips(mask_top_k=3, mask_prob=1.0).eval()  # the same weights; STKIM is off in eval mode
    torch.testing.assert_close(masked(x).logits, plain(x).logits)
    assert plain(x).head_logits is None
