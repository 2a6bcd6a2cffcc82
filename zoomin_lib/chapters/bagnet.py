"""A BagNet-style CNN: class evidence from small patches, averaged over the image.

Zoom-In table 1 compares against "BagNet [3] ... used for a similar NeedleCamelyon dataset in
[37]" (sec. 4, NeedleCamelyon). BagNet (Brendel & Bethge, ICLR 2019) is a ResNet-50 whose 3x3
convolutions are mostly replaced by 1x1 ones, so that every output location sees only a q x q
patch of the input (q = 9, 17 or 33); a linear layer turns each location's features into class
logits ("local evidence") and the image's logits are their spatial mean. Needles-in-Haystacks [37]
(`model/model.py` of facebookresearch/Needles-in-Haystacks) uses the same encoder: bottleneck
blocks (3, 4, 6, 3), a stride-1 stem (1x1 then 3x3 conv), stage strides (2, 2, 2, 1), one 3x3
block at the start of each stage (receptive field 33) and mean pooling before the linear layer,
which equals the mean of the local logits.

`BagNet` here is that network with valid (unpadded) convolutions, so each local logit is a function
of one q x q patch exactly (`receptive_field`); `width`, `blocks` and `expansion` shrink it for a
CPU. The defaults are the paper-sized BagNet-33. Normalisation is BatchNorm (local at inference,
as in Brendel's BagNet) or affine InstanceNorm ([37]'s default, which mixes statistics over the
whole image and so is not a bag of local features at inference).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from zoomin_lib.models import CNNBaseline
from zoomin_lib.networks import check_channels, check_input

__all__ = ["Bottleneck", "BagNet", "bagnet", "bagnet_macs", "evidence_map", "NORMS"]

NORMS = ("batch", "instance")


def _norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm2d ('batch') or affine InstanceNorm2d ('instance', [37]'s 'in_aff')."""
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")


class Bottleneck(nn.Module):
    """ResNet bottleneck 1x1 -> kxk (stride, no padding) -> 1x1; the shortcut is cropped to the output's size."""

    def __init__(self, in_channels: int, planes: int, expansion: int, kernel: int, stride: int, norm: str) -> None:
        super().__init__()
        out = planes * expansion
        self.kernel, self.stride = kernel, stride
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, planes, 1, bias=False), _norm(norm, planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, planes, kernel, stride, 0, bias=False), _norm(norm, planes), nn.ReLU(inplace=True),
            nn.Conv2d(planes, out, 1, bias=False), _norm(norm, out),
        )
        self.shortcut = (nn.Identity() if stride == 1 and in_channels == out else
                         nn.Sequential(nn.Conv2d(in_channels, out, 1, stride, bias=False), _norm(norm, out)))

    def forward(self, x: Tensor) -> Tensor:
        """[B, C_in, H, W] -> [B, planes * expansion, (H - k) // s + 1, (W - k) // s + 1]."""
        y = self.body(x)
        r = self.shortcut(x)[..., : y.shape[-2], : y.shape[-1]]  # shortcut sample r[i] = x[s i] lies in y[i]'s window
        return torch.relu(y + r)


class BagNet(nn.Module):
    """Bag-of-local-features CNN: local class logits [B, K, h, w] of q x q patches, averaged into [B, K]."""

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        *,
        width: int = 64,
        blocks: Sequence[int] = (3, 4, 6, 3),
        strides: Sequence[int] = (2, 2, 2, 1),
        kernel3: Sequence[int] = (1, 1, 1, 1),
        expansion: int = 4,
        norm: str = "batch",
    ) -> None:
        """`kernel3[i]` of stage i's blocks (the first ones) use 3x3 kernels, the rest 1x1 (BagNet-33: (1, 1, 1, 1))."""
        super().__init__()
        check_channels(in_channels)
        if not (len(blocks) == len(strides) == len(kernel3)) or min(blocks) < 1 or any(k > b for k, b in zip(kernel3, blocks)):
            raise ValueError(f"blocks {blocks}, strides {strides}, kernel3 {kernel3}: one entry per stage, kernel3 <= blocks")
        self.in_channels = in_channels
        self.n_classes = n_classes
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 1, bias=False), nn.Conv2d(width, width, 3, 1, 0, bias=False),
            _norm(norm, width), nn.ReLU(inplace=True),
        )
        stages, channels = [], width
        for i, (n, s, k3) in enumerate(zip(blocks, strides, kernel3)):
            planes = width * 2**i
            layers = []
            for j in range(n):
                layers.append(Bottleneck(channels, planes, expansion, 3 if j < k3 else 1, s if j == 0 else 1, norm))
                channels = planes * expansion
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.head = nn.Conv2d(channels, n_classes, 1)  # the linear layer, applied at every location
        self.out_features = n_classes
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and m is not self.head:
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def receptive_field(self) -> int:
        """q: the side of the input patch each local logit sees (3 + sum over 3x3 convs of 2 x the stride before them)."""
        rf, jump = 3, 1  # the stem's 3x3 conv
        for block in self.modules():
            if isinstance(block, Bottleneck):
                rf += (block.kernel - 1) * jump
                jump *= block.stride
        return rf

    @property
    def stride(self) -> int:
        """Input pixels between neighbouring local logits."""
        jump = 1
        for block in self.modules():
            if isinstance(block, Bottleneck):
                jump *= block.stride
        return jump

    def local_logits(self, x: Tensor) -> Tensor:
        """Class evidence [B, K, h, w] of each q x q patch of x [B, C, H, W] (patch (i, j) starts at stride * (i, j))."""
        check_input(x, self.in_channels, type(self).__name__)
        if min(x.shape[-2:]) < self.receptive_field:
            raise ValueError(f"BagNet-{self.receptive_field} needs images of at least that size, got {tuple(x.shape)}")
        return self.head(self.stages(self.stem(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Logits [B, K]: the mean of the local logits."""
        return self.local_logits(x).mean(dim=(2, 3))


def bagnet(*, in_channels: int, n_classes: int, scale: float = 1.0, **kwargs) -> CNNBaseline:
    """The BagNet baseline on V(x, s) (kwargs: `BagNet`'s; the defaults are the paper-sized BagNet-33)."""
    return CNNBaseline(BagNet(in_channels, n_classes, **kwargs), scale)


def evidence_map(model: CNNBaseline, x: Tensor, positive: int = 1) -> Tensor:
    """Local evidence for class `positive` [B, h, w] (its logit minus the mean of the others) of a `bagnet` model."""
    from zoomin_lib.geometry import view

    net = model.backbone
    with torch.no_grad():
        z = net.local_logits(view(x, model.scale))  # [B, K, h, w]
    others = torch.cat([z[:, :positive], z[:, positive + 1 :]], dim=1).mean(dim=1)  # [B, h, w]
    return z[:, positive] - others


def bagnet_macs(side: int = 1024, *, in_channels: int = 3, n_classes: int = 2, **kwargs) -> float:
    """Multiply-accumulates of one BagNet forward on a side x side image, counted on the meta device (no memory, no time)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.device("meta"):
        net = BagNet(in_channels, n_classes, **kwargs).eval()
        with FlopCounterMode(display=False) as counter:
            net(torch.empty(1, in_channels, side, side))
    return counter.get_total_flops() / 2
