"""The BagNet-style CNN: local logits see exactly a q x q patch, the image logits are their mean."""

from __future__ import annotations

import pytest
import torch

from zoomin_lib.chapters.bagnet import BagNet, bagnet, evidence_map
from zoomin_lib.steps import predictor, sampling_loss


def _small(**kw) -> BagNet:
    """A narrow BagNet-33 (two blocks in the first stage, so a 1x1 block follows a 3x3 one)."""
    return BagNet(3, 2, width=4, blocks=(2, 1, 1, 1), **kw).eval()


@pytest.mark.parametrize("kernel3, q", [((1, 1, 1, 1), 33), ((1, 1, 1, 0), 17), ((1, 1, 0, 0), 9), ((2, 1, 1, 1), 37)])
def test_receptive_field_formula(kernel3: tuple[int, ...], q: int) -> None:
    """BagNet-33/17/9 of Brendel & Bethge; a second 3x3 block in stage 1 adds 2 x its input stride (2)."""
    assert BagNet(3, 2, width=4, blocks=(2, 1, 1, 1), kernel3=kernel3).receptive_field == q


@pytest.mark.parametrize("kernel3", [(1, 1, 1, 1), (1, 1, 0, 0)])
def test_local_logit_depends_on_exactly_its_patch(kernel3: tuple[int, ...]) -> None:
    """The gradient of local logit (i, j) w.r.t. the input is non-zero exactly on the q x q patch at stride * (i, j)."""
    torch.manual_seed(0)
    net = _small(kernel3=kernel3)
    x = torch.randn(1, 3, 96, 96, requires_grad=True)
    z = net.local_logits(x)  # [1, 2, h, w]
    i, j = 2, 3
    z[0, 1, i, j].backward()
    rows, cols = torch.nonzero(x.grad[0].abs().sum(0), as_tuple=True)
    q, s = net.receptive_field, net.stride
    assert (rows.min().item(), rows.max().item()) == (s * i, s * i + q - 1)
    assert (cols.min().item(), cols.max().item()) == (s * j, s * j + q - 1)


def test_output_shape_and_mean_of_local_logits() -> None:
    """forward = spatial mean of local_logits; the map has (H - q) // stride + 1 rows."""
    net = _small()
    x = torch.randn(2, 3, 80, 72)
    z = net.local_logits(x)
    q, s = net.receptive_field, net.stride
    assert z.shape == (2, 2, (80 - q) // s + 1, (72 - q) // s + 1)
    torch.testing.assert_close(net(x), z.mean(dim=(2, 3)))


def test_instance_norm_option_and_errors() -> None:
    """Affine InstanceNorm ([37]'s default) builds and runs; bad arguments are named."""
    assert BagNet(3, 2, width=4, blocks=(1, 1, 1, 1), norm="instance")(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    with pytest.raises(ValueError, match="norm"):
        BagNet(3, 2, norm="group")
    with pytest.raises(ValueError, match="kernel3"):
        BagNet(3, 2, blocks=(1, 1, 1, 1), kernel3=(2, 1, 1, 1))
    with pytest.raises(ValueError, match="at least"):
        _small()(torch.randn(1, 3, 20, 20))


def test_builder_trains_with_the_sampling_loss_and_maps_evidence() -> None:
    """bagnet() is a CNNBaseline on V(x, s): plain cross-entropy trains it; evidence_map has the local grid."""
    torch.manual_seed(0)
    model = bagnet(in_channels=3, n_classes=2, scale=0.5, width=4, blocks=(1, 1, 1, 1))
    x, y = torch.randn(4, 3, 96, 96), torch.tensor([0, 1, 0, 1])
    loss, parts = sampling_loss(warmup_epochs=0)(model, (x, y), 5)
    loss.backward()
    assert set(parts) == {"total", "ce"} and all(p.grad is not None for p in model.parameters())
    model.eval()
    logits, _ = predictor()(model, (x, y))
    assert logits.shape == (4, 2)
    net = model.backbone
    side = (48 - net.receptive_field) // net.stride + 1
    assert evidence_map(model, x).shape == (4, side, side)


def test_macs_on_meta_match_a_real_count() -> None:
    """bagnet_macs (meta device) equals FlopCounterMode / 2 on a real forward."""
    from torch.utils.flop_counter import FlopCounterMode

    from zoomin_lib.chapters.bagnet import bagnet_macs

    kw = dict(width=4, blocks=(1, 1, 1, 1))
    with FlopCounterMode(display=False) as counter:
        BagNet(3, 2, **kw).eval()(torch.randn(1, 3, 64, 64))
    assert bagnet_macs(64, **kw) == counter.get_total_flops() / 2 > 0
