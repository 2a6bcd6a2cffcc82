"""The methods of the papers' tables, built from their architectures by name.

- Zoom-In (sec. 2, appendix K): attention networks a and b and feature network f from table 5
  ("lenet") or table 6 ("resnet16"), a linear classifier g. Table 5 ends the LeNet a in a tanh;
  appendix K's text describes a as convolutions "followed by average pooling and a softmax", and
  table 6's a ends in an unbounded ReLU. We follow the text by default (`bounded_a=False`): a
  tanh-bounded score averaged over a tile caps the ratio of two tile weights at e^2, so on the
  2x2 tiles of a colon image alpha can never put more than 71% on one tile and N' (the distinct
  tiles drawn, appendix A) cannot fall as the paper's figure 4 shows.
- ATS-N (ATS sec. 3.3, supp. H.2): attention on V(x, s) with unbounded scores, and the same f.
- U-N (ATS table 1): uniform sampling with the same f.
- CNN (Zoom-In sec. 4, "a ResNet with 8 convolutional layers and 32 channels") on V(x, s).
- IPS (the IPS thesis, file 003, sec. 2.7): the top M of the non-overlapping full-resolution patches,
  cross-attention pooling; its Semantic heads and STKIM (sec. 3.3-3.4) as options. The patch encoder
  is table 5's or table 6's f unless one is given (the thesis's is a ResNet-18, which needs torchvision).
"""

from __future__ import annotations

from torch import nn

from zoomin_lib.ips import IPSNet
from zoomin_lib.models import ATSNet, CNNBaseline, UniformNet, ZoomInNet
from zoomin_lib.networks import AttentionLeNet, AttentionResNet16, FeatureLeNet, FeatureResNet16, ResNetCNN

__all__ = ["BACKBONES", "networks", "zoomin", "ats", "uniform", "cnn", "ips"]

BACKBONES = ("lenet", "resnet16")


def networks(backbone: str, in_channels: int, bounded_a: bool = True) -> tuple[nn.Module, nn.Module, nn.Module]:
    """(a, b, f) of table 5 (lenet) or table 6 (resnet16); `bounded_a` keeps table 5's final tanh on a."""
    if backbone == "lenet":
        return (AttentionLeNet(in_channels, final_tanh=bounded_a), AttentionLeNet(in_channels, final_tanh=False),
                FeatureLeNet(in_channels))
    if backbone == "resnet16":
        return (AttentionResNet16(in_channels), AttentionResNet16(in_channels, final_relu=False),
                FeatureResNet16(in_channels))
    raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")


def zoomin(
    *, in_channels: int, n_classes: int, scale1: float, scale2: float, tile_size: int | tuple[int, int],
    patch_size: int | tuple[int, int], n_patches: int, backbone: str = "lenet", bounded_a: bool = False,
) -> ZoomInNet:
    """A Zoom-In network with the table-5/6 networks (LeNet a without table 5's final tanh unless `bounded_a`)."""
    a, b, f = networks(backbone, in_channels, bounded_a)
    return ZoomInNet(a, b, f, n_classes, scale1, scale2, tile_size, patch_size, n_patches)


def ats(
    *, in_channels: int, n_classes: int, scale: float, patch_size: int | tuple[int, int], n_patches: int,
    backbone: str = "lenet",
) -> ATSNet:
    """ATS-N: attention on V(x, s) with unbounded scores (ATS supp. H.2: convs + ReLUs, no tanh), N patches without replacement.

    Table 5's LeNet a ends in a tanh, which bounds the ratio of two attention weights by e^2;
    over the thousands of locations of a one-stage view that forbids any sharp attention, so ATS
    uses the network of b (the same layers without the bounded output).
    """
    _, b, f = networks(backbone, in_channels)
    return ATSNet(b, f, n_classes, scale, patch_size, n_patches)


def uniform(
    *, in_channels: int, n_classes: int, scale: float, patch_size: int | tuple[int, int], n_patches: int,
    backbone: str = "lenet",
) -> UniformNet:
    """U-N: N patches drawn uniformly without replacement."""
    _, _, f = networks(backbone, in_channels)
    return UniformNet(f, n_classes, scale, patch_size, n_patches)


def cnn(
    *, in_channels: int, n_classes: int, scale: float = 1.0, size: int | tuple[int, int] | None = None,
    channels: int = 32, n_conv: int = 8,
) -> CNNBaseline:
    """The ResNet baseline (n_conv 3x3 convolutions, `channels` wide) on V(x, s), or on x resized to `size`."""
    return CNNBaseline(ResNetCNN(in_channels, n_classes, channels, n_conv), scale, size)


def ips(
    *, in_channels: int, n_classes: int | list[int], patch_size: int | tuple[int, int], memory_size: int,
    iter_size: int, backbone: str = "lenet", encoder: nn.Module | None = None, n_heads: int = 8,
    dim_head: int | None = None, dropout: float = 0.0, attn_dropout: float = 0.0, pos_enc: bool = False,
    semantic: bool = False, mask_top_k: int = 0, mask_prob: float = 0.0,
) -> IPSNet:
    """IPS keeping the top `memory_size` (M) patches, read `iter_size` (I) at a time; f is `encoder`, else the backbone's.

    `semantic` gives every attention head its own MLP (thesis eq. 12), `mask_top_k` and `mask_prob` are
    STKIM's K and P (sec. 3.4); the transformer options go to `ips.IPSNet` unchanged.
    """
    if encoder is None:
        encoder = networks(backbone, in_channels)[2]
    return IPSNet(encoder, n_classes, patch_size, memory_size, iter_size, n_heads=n_heads, dim_head=dim_head,
                  dropout=dropout, attn_dropout=attn_dropout, pos_enc=pos_enc, semantic=semantic,
                  mask_top_k=mask_top_k, mask_prob=mask_prob)
