"""Tests of zoomin_lib.networks: the sub-networks of tables 5 and 6 and the CNN baseline."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from zoomin_lib.networks import AttentionLeNet, AttentionResNet16, FeatureLeNet, FeatureResNet16, ResNetCNN, count_convs


def conv_specs(module: nn.Module) -> list[tuple[int, int, int, int]]:
    """(kernel, stride, padding, filters) of every Conv2d, in order."""
    return [
        (m.kernel_size[0], m.stride[0], m.padding[0], m.out_channels) for m in module.modules() if isinstance(m, nn.Conv2d)
    ]


def activations(module: nn.Module) -> list[str]:
    """Names of the activation modules, in order."""
    return [type(m).__name__ for m in module.modules() if isinstance(m, (nn.Tanh, nn.ReLU))]


@pytest.mark.parametrize("net", [AttentionLeNet(3, True), AttentionLeNet(3, False), AttentionResNet16(3, True), AttentionResNet16(3, False)])
def test_attention_maps_keep_the_view_size(net: nn.Module) -> None:
    x = torch.randn(2, 3, 9, 7, requires_grad=True)
    s = net(x)
    assert s.shape == (2, 1, 9, 7)
    s.sum().backward()
    assert x.grad is not None and all(p.grad is not None for p in net.parameters())


def test_attention_lenet_structure_table5() -> None:
    assert conv_specs(AttentionLeNet(3)) == [(3, 1, 1, 8), (3, 1, 1, 8), (3, 1, 1, 1)]
    assert activations(AttentionLeNet(3, final_tanh=True)) == ["Tanh"] * 3
    assert activations(AttentionLeNet(3, final_tanh=False)) == ["Tanh"] * 2
    s = AttentionLeNet(1, final_tanh=True)(100 * torch.randn(1, 1, 5, 5))
    assert s.abs().max() <= 1


def test_attention_resnet16_structure_table6() -> None:
    assert conv_specs(AttentionResNet16(3)) == [(3, 1, 1, 8), (3, 1, 1, 16), (3, 1, 1, 32), (3, 1, 1, 1)]
    assert activations(AttentionResNet16(3, final_relu=True)) == ["ReLU"] * 4
    assert activations(AttentionResNet16(3, final_relu=False)) == ["ReLU"] * 3


def test_feature_lenet_structure_table5() -> None:
    f = FeatureLeNet(3)
    assert conv_specs(f) == [(7, 1, 3, 32), (3, 1, 1, 32), (3, 1, 1, 32), (3, 1, 1, 32)]
    assert activations(f) == ["ReLU"] * 4
    assert f.out_features == 32


@pytest.mark.parametrize("cls", [FeatureLeNet, FeatureResNet16])
@pytest.mark.parametrize("normalize", [False, True])
def test_feature_networks_shapes_backward_and_norm(cls: type, normalize: bool) -> None:
    f = cls(3, normalize=normalize)
    x = torch.randn(5, 3, 8, 8, requires_grad=True)
    z = f(x)
    assert z.shape == (5, f.out_features) == (5, 32)
    if normalize:
        assert torch.allclose(z.norm(dim=1), torch.ones(5), atol=1e-5)
    z.pow(2).sum().backward() if not normalize else z[:, 0].sum().backward()
    assert x.grad is not None
    assert all(p.grad is not None for p in f.parameters())


def test_feature_resnet16_structure_table6() -> None:
    f = FeatureResNet16(3)
    assert count_convs(f) == 1 + 4 * 2
    strides = [blk.conv1.stride[0] for blk in f.blocks]
    assert strides == [1, 2, 2, 2]
    assert [blk.shortcut is None for blk in f.blocks] == [True, False, False, False]


def test_float64_networks() -> None:
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    for net in (AttentionLeNet(3), AttentionResNet16(3), FeatureLeNet(3, True), FeatureResNet16(3), ResNetCNN(3, 2)):
        assert net.double()(x).dtype == torch.float64


def test_resnet_cnn_has_eight_convs() -> None:
    net = ResNetCNN(3, 4)
    assert count_convs(net) == 8
    assert all(m.out_channels == 32 for m in net.modules() if isinstance(m, nn.Conv2d))
    x = torch.randn(2, 3, 32, 32, requires_grad=True)
    y = net(x)
    assert y.shape == (2, 4)
    y.sum().backward()
    assert x.grad is not None
    assert count_convs(ResNetCNN(1, 2, channels=8, n_conv=4)) == 4
    with pytest.raises(ValueError, match="n_conv"):
        ResNetCNN(3, 2, n_conv=7)


def test_wrong_channels_error() -> None:
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        FeatureLeNet(3)(torch.zeros(1, 1, 8, 8))
