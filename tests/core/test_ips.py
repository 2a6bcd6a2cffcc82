"""Tests of zoomin_lib.ips: IPS selection is the exact top M, gradients, multi-task heads, memory independent of image size."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from zoomin_lib import IPSNet
from zoomin_lib.ips import CrossAttentionPool, PatchSource, TensorPatches, grid_positional_encoding
from zoomin_lib.networks import FeatureLeNet
from zoomin_lib.steps import predictor, sampling_loss
from zoomin_lib.train.profiling import peak_memory

MB = 2**20


class TinyEncoder(nn.Module):
    """A cheap FeatureLeNet-like patch encoder: Conv(5, stride 5)-8 + ReLU, Conv(3,1,1)-D + ReLU, GAP -> [K, D]."""

    def __init__(self, in_channels: int = 1, dim: int = 32) -> None:
        super().__init__()
        self.out_features = dim
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 8, 5, 5), nn.ReLU(), nn.Conv2d(8, dim, 3, 1, 1), nn.ReLU()
        )

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings [K, D] of patches [K, C, ph, pw]."""
        return self.net(x).mean(dim=(2, 3))


def make_ips(M: int = 5, I: int = 7, n_classes=3, **kwargs) -> IPSNet:
    """IPS over 8x8 patches with FeatureLeNet (D = 32)."""
    torch.manual_seed(0)
    return IPSNet(FeatureLeNet(1), n_classes, 8, M, I, **kwargs)


def brute_force_top(model: IPSNet, x: Tensor, score: str) -> Tensor:
    """The top M [B, M] by the model's score over all patches encoded at once (ties to the lower index), ascending."""
    (ph, pw), (sh, sw) = model.patch_size, model.stride
    grid = x.unfold(2, ph, sh).unfold(3, pw, sw)  # [B, C, rows, cols, ph, pw]
    B, C, rows, cols = grid.shape[:4]
    patches = grid.permute(0, 2, 3, 1, 4, 5).reshape(B * rows * cols, C, ph, pw)
    with torch.no_grad():
        emb = model.encoder(patches).view(B, rows * cols, -1)  # [B, N, D]
        if model.pos_enc:
            r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
            emb = emb + grid_positional_encoding(r.flatten(), c.flatten(), emb.shape[-1]).to(emb)
        s = model.pool.scores(emb, score)  # [B, N]
    return torch.sort(s, dim=1, descending=True, stable=True).indices[:, : model.memory_size].sort(dim=1).values


@pytest.mark.parametrize("I", [1, 3, 7, 30, 64])
@pytest.mark.parametrize(
    "score, n_heads, pos_enc, stride",
    [("logit", 8, False, None), ("logit", 8, True, None), ("logit", 4, False, 4), ("attention", 1, False, None)],
)
def test_selection_is_the_exact_top_m(I, score, n_heads, pos_enc, stride):
    # 40 x 48 image, 8 x 8 patches: a 5 x 6 grid (30 patches), or 9 x 11 (99) at stride 4;
    # "attention" with one head ranks as the logits do, so it is exact too
    model = make_ips(M=5, I=I, n_heads=n_heads, pos_enc=pos_enc, stride=stride, score=score).double()
    model.train()
    x = torch.randn(2, 1, 40, 48, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    selected = model.select(x)
    assert selected.shape == (2, 5) and not selected.requires_grad
    assert torch.equal(selected, brute_force_top(model.eval(), x, score))
    assert torch.equal(model(x).indices, selected)  # forward re-encodes exactly the selected patches


def test_multi_head_attention_scores_depend_on_the_candidate_set():
    # the documented caveat of score="attention": patches X, Y, W (one pixel each) with head logits
    # X (0, 1), Y (2, 0), W (5, -10); M = I = 1. In {X, Y} Y wins (0.575 vs 0.425), then Y beats W
    # (0.52 vs 0.48); over all three W has the largest head-averaged attention (0.47). "logit" is exact.
    class Lookup(nn.Module):
        out_features = 4
        table = torch.tensor([[0.0, 1.0, 0.0, 0.0], [2.0, 0.0, 0.0, 0.0], [5.0, -10.0, 0.0, 0.0]])

        def forward(self, x: Tensor) -> Tensor:
            return self.table[x.flatten(1)[:, 0].long()]

    x = torch.tensor([0.0, 1.0, 2.0]).view(1, 1, 1, 3)
    for score, streamed, everything in (("attention", 1, 2), ("logit", 1, 1)):
        model = IPSNet(Lookup(), 2, 1, 1, 1, n_heads=2, score=score)
        model.pool.logits = lambda emb: emb[..., :2].transpose(1, 2).unsqueeze(2)  # [B, H=2, T=1, N]
        assert model.select(x).item() == streamed
        assert brute_force_top(model, x, score).item() == everything


def test_ties_go_to_the_lower_index():
    model = make_ips(M=4, I=7).eval()
    model.pool.scores = lambda emb, score="attention": emb.new_zeros(emb.shape[:2])  # every score ties exactly
    assert torch.equal(model.select(torch.randn(2, 1, 40, 48)), torch.arange(4).expand(2, 4))


def test_positional_encoding_tells_identical_patches_apart():
    # a blank image: every patch has the same embedding, so without positions the attention is uniform
    x = torch.zeros(1, 1, 40, 48)
    plain = make_ips(M=4, I=7).eval()
    out = plain(x)
    assert torch.allclose(out.weights, torch.full((1, 4), 0.25), atol=1e-6)
    with_pos = make_ips(M=4, I=7, pos_enc=True).eval()
    with_pos.load_state_dict(plain.state_dict())  # the encoding has no parameters: same weights
    out_pos = with_pos(x)
    assert (out_pos.weights - 0.25).abs().max() > 1e-5
    assert not torch.allclose(out_pos.logits, out.logits)
    assert torch.equal(with_pos(x).indices, out_pos.indices)  # deterministic


def test_grid_positional_encoding():
    rows, cols = torch.meshgrid(torch.arange(5), torch.arange(6), indexing="ij")
    pe = grid_positional_encoding(rows.flatten(), cols.flatten(), 16)  # [30, 16]
    assert pe.shape == (30, 16)
    assert torch.allclose(pe[0], torch.tensor([0.0, 1.0] * 8, dtype=pe.dtype))  # sin 0, cos 0 at (0, 0)
    assert torch.allclose(pe[7, :8], pe[6, :8]) and not torch.allclose(pe[7, 8:], pe[6, 8:])  # same row 1
    assert torch.unique(pe, dim=0).shape[0] == 30  # every grid position is distinct
    with pytest.raises(ValueError, match="divisible by 4"):
        grid_positional_encoding(rows, cols, 18)


def test_gradients_reach_encoder_attention_and_heads_but_not_the_selection():
    model = make_ips(M=5, I=7, n_classes=[3, 4], dropout=0.1, attn_dropout=0.1)
    model.train()
    calls = []

    def hook(module, inputs, output):
        calls.append((torch.is_grad_enabled(), module.training, output.requires_grad, inputs[0].shape[0]))

    model.encoder.register_forward_hook(hook)
    x = torch.randn(2, 1, 40, 48, requires_grad=True)
    out = model(x)
    # selection: ceil(30 / 7) = 5 chunks of B * <= 7 patches, no grad, eval mode; then ceil(5 / 7) = 1 chunk with grad
    assert [c[:3] for c in calls] == [(False, False, False)] * 5 + [(True, True, True)]
    assert [c[3] for c in calls] == [14, 14, 14, 14, 4, 10]
    assert model.training and model.encoder.training and model.pool.attn_dropout.training  # modes restored
    (out.logits[0].sum() + out.logits[1].sum()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # the image gradient is zero outside the M selected patches (selection built no graph)
    inside = torch.zeros_like(x, dtype=torch.bool)
    for b in range(2):
        for i in out.indices[b].tolist():
            r, c = divmod(i, 6)
            inside[b, :, 8 * r : 8 * r + 8, 8 * c : 8 * c + 8] = True
    assert x.grad[~inside].abs().max() == 0 and x.grad[inside].abs().sum() > 0


def test_selection_restores_mixed_modes():
    model = make_ips()
    model.encoder.eval()
    model.pool.train()
    model(torch.randn(1, 1, 40, 48))
    assert not model.encoder.training and not model.encoder.net[0].training
    assert model.pool.training and model.pool.mlp.training


def test_outputs_single_and_multi_task():
    x = torch.randn(2, 1, 40, 48)
    single = make_ips(M=6, n_classes=3, n_heads=4)(x)
    assert single.logits.shape == (2, 3) and single.indices.shape == (2, 6) and single.centers.shape == (2, 6, 2)
    assert single.attention.shape == (2, 4, 1, 6) and single.features.shape == (2, 1, 32)
    multi = make_ips(M=6, n_classes=[10, 10, 10, 10])(x)  # megapixel MNIST: Maj, Max, Top, Multi
    assert isinstance(multi.logits, list) and [t.shape for t in multi.logits] == [(2, 10)] * 4
    assert multi.attention.shape == (2, 8, 4, 6) and multi.features.shape == (2, 4, 32)
    for out in (single, multi):
        assert torch.allclose(out.attention.sum(-1), torch.ones(()))  # softmax over the M patches
        assert torch.allclose(out.weights.sum(-1), torch.ones(2))
        assert out.alpha is None and out.mode == "topk"
    r, c = multi.indices // 6, multi.indices % 6  # centres are top-left + patch_size // 2
    assert torch.equal(multi.centers, torch.stack((8 * r + 4, 8 * c + 4), dim=-1))


def test_a_plugged_patch_source_is_read_a_chunk_at_a_time():
    class CountingSource(TensorPatches):
        requests: list[int] = []

        def patches(self, idx: Tensor) -> Tensor:
            self.requests.append(idx.shape[1])
            return super().patches(idx)

    model = make_ips(M=5, I=7).eval()
    x = torch.randn(1, 1, 40, 48)
    source = CountingSource(x, 8)
    assert isinstance(source, PatchSource)
    out = model(source)
    assert source.requests == [7, 7, 7, 7, 2, 5]  # 30 patches in chunks of 7, then the 5 winners
    assert torch.allclose(out.logits, model(x).logits)
    direct = x.unfold(2, 8, 8).unfold(3, 8, 8)[0, 0]  # [5, 6, 8, 8]
    assert torch.equal(source.patches(torch.tensor([[0, 13, 29]]))[0, :, 0], direct[[0, 2, 4], [0, 1, 5]])


def test_trains_and_predicts_through_the_generic_steps():
    model = make_ips(M=4, I=10)
    x, y = torch.randn(3, 1, 40, 48), torch.tensor([0, 1, 2])
    loss, parts = sampling_loss(contrastive=True)(model, (x, y), 20)
    loss.backward()
    assert torch.isfinite(loss) and set(parts) == {"total", "ce"}  # plain cross-entropy: alpha is None
    logits, _ = predictor()(model, (x, y))
    assert logits.shape == (3, 3)


def test_bad_inputs_raise_clear_errors():
    model = make_ips(M=5)
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.randn(1, 40, 48))
    with pytest.raises(ValueError, match=r"\[B, C, H, W\]"):
        model(torch.zeros(1, 1, 40, 48, dtype=torch.long))
    with pytest.raises(ValueError, match="smaller than one patch"):
        model(torch.randn(1, 1, 6, 48))
    with pytest.raises(ValueError, match="memory_size M=31 exceeds the 30 patches"):
        make_ips(M=31)(torch.randn(1, 1, 40, 48))
    with pytest.raises(ValueError, match="PatchSource"):
        model([[1.0]])
    with pytest.raises(ValueError, match="mode must be 'topk'"):
        model(torch.randn(1, 1, 40, 48), mode="sample")
    with pytest.raises(ValueError, match="contrastive"):
        model(torch.randn(1, 1, 40, 48), contrastive=True)
    with pytest.raises(ValueError, match="expects"):  # FeatureLeNet(1) on a 3-channel image
        model(torch.randn(1, 3, 40, 48))
    with pytest.raises(ValueError, match="out_features"):
        IPSNet(nn.Conv2d(1, 4, 3), 3, 8, 5, 7)
    for bad in (0, [], [3, 0], 2.5):
        with pytest.raises(ValueError, match="n_classes"):
            IPSNet(FeatureLeNet(1), bad, 8, 5, 7)
    with pytest.raises(ValueError, match="memory_size"):
        IPSNet(FeatureLeNet(1), 3, 8, 0, 7)
    with pytest.raises(ValueError, match="iter_size"):
        IPSNet(FeatureLeNet(1), 3, 8, 5, 0)
    with pytest.raises(ValueError, match="patch_size"):
        IPSNet(FeatureLeNet(1), 3, 0, 5, 7)
    with pytest.raises(ValueError, match="stride"):
        IPSNet(FeatureLeNet(1), 3, 8, 5, 7, stride=(4, 0))
    with pytest.raises(ValueError, match="score"):
        IPSNet(FeatureLeNet(1), 3, 8, 5, 7, score="sum")
    with pytest.raises(ValueError, match="divisible by n_heads"):
        IPSNet(FeatureLeNet(1), 3, 8, 5, 7, n_heads=5)
    with pytest.raises(ValueError, match="pos_enc"):
        IPSNet(TinyEncoder(dim=30), 3, 8, 5, 7, pos_enc=True)
    with pytest.raises(ValueError, match=r"\[B, N, 32\]"):
        CrossAttentionPool(32)(torch.randn(2, 5, 16))

    class WrongEncoder(nn.Module):
        out_features = 32

        def forward(self, x: Tensor) -> Tensor:
            return x.new_zeros(x.shape[0], 16)

    with pytest.raises(ValueError, match="patch encoder must map"):
        IPSNet(WrongEncoder(), 3, 8, 5, 7)(torch.randn(1, 1, 40, 48))


def test_inference_peak_memory_does_not_grow_with_the_image():
    # thesis setting: 50 x 50 patches, M = I = 100, one-channel canvases of 1500^2 (900 patches) and 3000^2 (3600)
    torch.manual_seed(0)
    model = IPSNet(TinyEncoder(1, 32), [10, 10, 10, 10], 50, 100, 100, pos_enc=True).eval()
    peaks = {}
    for side in (1500, 3000):
        canvas = torch.rand(1, 1, side, side)  # allocated before the measurement: an input, not counted

        def infer() -> Tensor:
            return model(canvas).logits[0]

        with torch.no_grad():
            peaks[side] = peak_memory(infer, "cpu").peak_bytes
        canvas_bytes = canvas.numel() * canvas.element_size()
        del canvas
    assert peaks[3000] < canvas_bytes / 4, f"peak {peaks[3000]} B: was the {canvas_bytes} B canvas copied?"
    small, large = peaks[1500], peaks[3000]
    assert abs(large - small) <= 0.1 * small, (
        f"IPS inference peak memory: {small / MB:.3f} MiB at 1500^2, {large / MB:.3f} MiB at 3000^2 "
        f"(should agree within 10%: memory depends on M and I only)"
    )
