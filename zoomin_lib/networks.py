"""The sub-networks of Zoom-In appendix K (tables 5 and 6) and the CNN baseline backbone.

Table notation: Conv(kernel, stride, padding, filters).

- `AttentionLeNet`   table 5, a (final Tanh) and b (no final Tanh): score map [B, 1, h, w].
- `AttentionResNet16` table 6, a (final ReLU) and b: score map [B, 1, h, w].
- `FeatureLeNet`     table 5, f: [M, 32] (optionally L2-normalised, as in ATS sec. 3.4).
- `FeatureResNet16`  table 6, f: [M, 32] with pre-activation residual blocks.
- `ResNetCNN`        the "ResNet with 8 convolutional layers and 32 channels" of Zoom-In sec. 4.

The attention networks return logits only: pooling over tiles and the softmax (the last rows
of tables 5/6) belong to the models. All convolutions use "same" padding, so a score map has
the size of its input view and no receptive-field offset is needed to map it to the image.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "AttentionLeNet",
    "check_channels",
    "check_input",
    "AttentionResNet16",
    "count_convs",
    "FeatureLeNet",
    "FeatureResNet16",
    "PatchEncoder",
    "ScoreNetwork",
    "PreActBlock",
    "ResNetCNN",
]


def check_input(x: Tensor, in_channels: int, who: str) -> None:
    """Raise ValueError unless `x` is [B, in_channels, H, W]."""
    if x.dim() != 4 or x.shape[1] != in_channels:
        raise ValueError(f"{who} expects [B, {in_channels}, H, W], got {tuple(x.shape)}")


def check_channels(in_channels: int) -> None:
    """Raise ValueError unless `in_channels` is a positive int."""
    if not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"in_channels must be a positive int, got {in_channels!r}")


class ScoreNetwork(nn.Module):
    """An attention network: a view [B, C, h, w] -> a score map [B, 1, h, w], 3x3 'same' convolutions of `widths` channels.

    Each hidden convolution is followed by `activation`; the last (one channel) by it too when `final`.
    """

    def __init__(self, in_channels: int, widths: tuple[int, ...], activation: type[nn.Module], final: bool) -> None:
        super().__init__()
        check_channels(in_channels)
        self.in_channels = in_channels
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *widths), widths):
            layers += [nn.Conv2d(c_in, c_out, 3, 1, 1), activation()]
        layers += [nn.Conv2d(widths[-1], 1, 3, 1, 1)] + ([activation()] if final else [])
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        """Score logits [B, 1, h, w] for a view [B, C, h, w]."""
        check_input(x, self.in_channels, type(self).__name__)
        return self.net(x)


class AttentionLeNet(ScoreNetwork):
    """Table 5 attention a (final_tanh=True) / b (final_tanh=False): three 3x3 convs -> score map [B, 1, h, w].

    Table 5 puts a Tanh on the last conv of a (its logits are bounded to [-1, 1], so the
    softmax over tiles can never be sharper than e^2 between two tiles) and not on b's.
    """

    def __init__(self, in_channels: int, final_tanh: bool = True) -> None:
        super().__init__(in_channels, (8, 8), nn.Tanh, final_tanh)
        self.final_tanh = final_tanh


class AttentionResNet16(ScoreNetwork):
    """Table 6 attention a (final_relu=True) / b (final_relu=False): convs 8, 16, 32, 1 -> score map [B, 1, h, w]."""

    def __init__(self, in_channels: int, final_relu: bool = True) -> None:
        super().__init__(in_channels, (8, 16, 32), nn.ReLU, final_relu)
        self.final_relu = final_relu


class PatchEncoder(nn.Module):
    """A feature network f: patches [M, C, ph, pw] -> features [M, out_features], pooled over space.

    Subclasses build their layers after `super().__init__(in_channels, normalize)` and define
    `encode` (patches -> a feature map [M, D, h, w]); the map is averaged (`pool = "mean"`) or
    max-pooled (`pool = "max"`) over space and, with `normalize`, its rows L2-normalised (ATS sec. 3.4).
    """

    out_features = 32
    pool = "mean"

    def __init__(self, in_channels: int, normalize: bool = False) -> None:
        super().__init__()
        check_channels(in_channels)
        self.in_channels = in_channels
        self.normalize = normalize

    def encode(self, x: Tensor) -> Tensor:
        """The feature map [M, D, h, w] of patches [M, C, ph, pw]."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Features [M, out_features] of patches [M, C, ph, pw]."""
        check_input(x, self.in_channels, type(self).__name__)
        z = self.encode(x)
        z = z.amax(dim=(2, 3)) if self.pool == "max" else z.mean(dim=(2, 3))  # [M, D]
        return F.normalize(z, p=2, dim=1) if self.normalize else z


class FeatureLeNet(PatchEncoder):
    """Table 5 feature network f: Conv(7,1,3,32)+ReLU, 3x Conv(3,1,1,32)+ReLU, GAP -> [M, 32]."""

    def __init__(self, in_channels: int, normalize: bool = False) -> None:
        super().__init__(in_channels, normalize)
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 32, 7, 1, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(32, 32, 3, 1, 1), nn.ReLU(),
        )

    def encode(self, x: Tensor) -> Tensor:
        """[M, 32, ph, pw]."""
        return self.net(x)


class PreActBlock(nn.Module):
    """Pre-activation residual block: BN-ReLU-Conv3x3(stride)-BN-ReLU-Conv3x3, 1x1 strided projection if shapes change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, stride, 0, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        """[M, C_in, h, w] -> [M, C_out, ceil(h/stride), ceil(w/stride)]."""
        pre = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class FeatureResNet16(PatchEncoder):
    """Table 6 feature network f: Conv(3,1,1)-32+ReLU, ResBlock(3,1,32), 3x ResBlock(3,2,32), BN+ReLU, GAP -> [M, 32]."""

    def __init__(self, in_channels: int, normalize: bool = False) -> None:
        super().__init__(in_channels, normalize)
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 32, 3, 1, 1), nn.ReLU())
        self.blocks = nn.Sequential(
            PreActBlock(32, 32, 1), PreActBlock(32, 32, 2), PreActBlock(32, 32, 2), PreActBlock(32, 32, 2)
        )
        self.head = nn.Sequential(nn.BatchNorm2d(32), nn.ReLU())

    def encode(self, x: Tensor) -> Tensor:
        """[M, 32, ph / 8, pw / 8]."""
        return self.head(self.blocks(self.stem(x)))


class ResNetCNN(nn.Module):
    """CNN baseline of Zoom-In sec. 4: a residual network with `n_conv` 3x3 conv layers, GAP and fc.

    Layout: a 3x3 stem conv, (n_conv - 2) / 2 pre-activation residual blocks of two 3x3 convs
    each (stride 2 in every block), and a last BN-ReLU-Conv3x3 (stride 2) followed by BN-ReLU;
    so n_conv = 8 is 1 + 3 * 2 + 1 = 8 conv layers. The 1x1 projection shortcuts are not
    counted. n_conv must be even and >= 2.
    """

    def __init__(self, in_channels: int, n_classes: int, channels: int = 32, n_conv: int = 8) -> None:
        super().__init__()
        check_channels(in_channels)
        if not isinstance(n_conv, int) or n_conv < 2 or n_conv % 2:
            raise ValueError(f"n_conv must be an even int >= 2 (stem + 2 per block + last conv), got {n_conv!r}")
        if not isinstance(n_classes, int) or n_classes < 1:
            raise ValueError(f"n_classes must be a positive int, got {n_classes!r}")
        self.in_channels = in_channels
        self.out_features = n_classes
        self.stem = nn.Conv2d(in_channels, channels, 3, 1, 1)
        self.blocks = nn.Sequential(*[PreActBlock(channels, channels, 2) for _ in range((n_conv - 2) // 2)])
        self.last = nn.Sequential(
            nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, 2, 1, bias=False),
            nn.BatchNorm2d(channels), nn.ReLU(),
        )
        self.fc = nn.Linear(channels, n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """Class logits [B, n_classes] of images [B, C, H, W]."""
        check_input(x, self.in_channels, type(self).__name__)
        z = self.last(self.blocks(self.stem(x))).mean(dim=(2, 3))  # [B, channels]
        return self.fc(z)


def count_convs(module: nn.Module, kernel_at_least: int = 3) -> int:
    """Number of Conv2d layers in `module` whose kernel is at least `kernel_at_least` (skips 1x1 shortcuts)."""
    return sum(
        1 for m in module.modules() if isinstance(m, nn.Conv2d) and min(m.kernel_size) >= kernel_at_least
    )

