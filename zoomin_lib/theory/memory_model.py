"""The memory model of Zoom-In sec. 2.1 and appendix A, fitted to measured peak memory.

One-stage ATS holds O(s^2 HW + N h w): its view of the whole image and N full-resolution
patches. Zoom-In holds O(s1^2 HW + N' s2^2 h1 w1 + N h2 w2): its first-stage view, the s2 views
of the N' distinct drawn tiles (h1 x w1 each) and N sub-tiles. With more levels (`beyond.levels`) the
model gains one term a level: level l views each node drawn at level l - 1 (a cell of c_{l-1} x
c_{l-1} px) at scale s_l, M_{l-1} s_l^2 c_{l-1}^2 pixels, and the patches are the leaves
(`levels_terms`). Each term is a pixel count; the
model says peak bytes = c0 + sum_k c_k term_k with constants c_k (bytes per pixel of that term,
set by the networks' widths). `fit` finds non-negative c_k by least squares on measurements and
`relative_errors` says how well the fitted model reproduces them.

`layer_floor_bytes` is the floor a measured peak is set beside: for each stage of a model (a on
its view; b on one tile's view, or on N of them; f on one patch, or on N), the largest input +
output of any single layer, found by running the networks on shapes alone (meta tensors). No
implementation can hold less than that at once (a layer needs its input and its output);
workspaces, the views being read and what the autograd graph keeps come on top.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy.optimize import nnls
from torch import nn

from zoomin_lib.geometry import view_size

__all__ = ["ats_terms", "zoomin_terms", "levels_terms", "MemoryFit", "fit", "crossover_side", "network_floor_bytes", "layer_floor_bytes"]


def ats_terms(height: int, width: int, scale: float, patch: int, n: int) -> dict[str, float]:
    """Pixel counts of ATS's terms: the view s^2 HW and the N patches N h w."""
    return {"view": scale**2 * height * width, "patches": float(n * patch * patch)}


def zoomin_terms(
    height: int, width: int, scale1: float, scale2: float, tile: int, patch: int, n: int, n_unique: float
) -> dict[str, float]:
    """Pixel counts of Zoom-In's terms: s1^2 HW, N' s2^2 h1 w1 and N h2 w2."""
    return {
        "view": scale1**2 * height * width,
        "tiles": n_unique * scale2**2 * tile * tile,
        "patches": float(n * patch * patch),
    }


def levels_terms(
    height: int, width: int, scales: Sequence[float], cell_sizes: Sequence[int], patch: int,
    nodes: Sequence[float], leaves: float,
) -> dict[str, float]:
    """Pixel counts of an L-level Zoom-In's terms: s1^2 HW, then per level l >= 2 M_{l-1} s_l^2 c_{l-1}^2, and the leaves.

    nodes[l - 2] = M_{l-1}, the distinct nodes drawn at level l - 1 whose views level l computes
    (N' tiles for level 2); `leaves` the patches read at full resolution. With two levels this is
    `zoomin_terms` ("level2" is its "tiles").
    """
    if len(nodes) != len(scales) - 1 or len(cell_sizes) != len(scales) - 1:
        raise ValueError(f"{len(scales)} levels need {len(scales) - 1} cell sizes and node counts, "
                         f"got {len(cell_sizes)} and {len(nodes)}")
    terms = {"view": scales[0] ** 2 * height * width}
    for level, (m, s, c) in enumerate(zip(nodes, scales[1:], cell_sizes), start=2):
        terms[f"level{level}"] = m * s**2 * c * c
    terms["patches"] = float(leaves * patch * patch)
    return terms


@dataclass(frozen=True)
class MemoryFit:
    """Fitted constants: bytes = intercept + sum_k coef[k] * term_k."""

    names: tuple[str, ...]
    intercept: float
    coef: tuple[float, ...]

    def predict(self, terms: Sequence[dict[str, float]]) -> np.ndarray:
        """Predicted bytes [M] for rows of terms."""
        a = np.array([[t[k] for k in self.names] for t in terms], dtype=float)  # [M, K]
        return self.intercept + a @ np.asarray(self.coef)

    def relative_errors(self, terms: Sequence[dict[str, float]], measured: Sequence[float]) -> np.ndarray:
        """|predicted - measured| / measured [M]."""
        m = np.asarray(measured, dtype=float)
        return np.abs(self.predict(terms) - m) / m


def fit(terms: Sequence[dict[str, float]], measured_bytes: Sequence[float]) -> MemoryFit:
    """Non-negative least squares of measured bytes on the terms plus an intercept, in relative error.

    Each row is weighted by 1/measured, so small and large configurations count alike.
    """
    names = tuple(terms[0])
    a = np.array([[1.0] + [t[k] for k in names] for t in terms], dtype=float)  # [M, 1 + K]
    b = np.asarray(measured_bytes, dtype=float)  # [M]
    if a.shape[0] < a.shape[1]:
        raise ValueError(f"need at least {a.shape[1]} measurements to fit {len(names)} terms, got {a.shape[0]}")
    w = 1.0 / b
    coef, _ = nnls(a * w[:, None], b * w)
    return MemoryFit(names, float(coef[0]), tuple(float(c) for c in coef[1:]))


def crossover_side(slope_a: float, intercept_a: float, slope_b: float, intercept_b: float) -> float:
    """The side S of a square image where a + slope_a S^2 = b + slope_b S^2 (NaN if the lines do not cross for S > 0)."""
    if slope_a == slope_b:
        return math.nan
    area = (intercept_b - intercept_a) / (slope_a - slope_b)
    return math.sqrt(area) if area > 0 else math.nan


def network_floor_bytes(network: nn.Module, shape: Sequence[int], dtype: torch.dtype = torch.float32) -> int:
    """The largest input + output bytes of any leaf layer of `network` on an input of `shape` (meta tensors: nothing is computed)."""
    meta = copy.deepcopy(network).to("meta")
    size = torch.tensor([], dtype=dtype).element_size()
    largest = 0

    def hook(module: nn.Module, inputs: tuple, output: object) -> None:
        nonlocal largest
        n_in = sum(t.numel() for t in inputs if isinstance(t, torch.Tensor))
        n_out = output.numel() if isinstance(output, torch.Tensor) else 0
        largest = max(largest, (n_in + n_out) * size)

    handles = [m.register_forward_hook(hook) for m in meta.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            meta(torch.empty(*shape, dtype=dtype, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return int(largest)


def layer_floor_bytes(model: nn.Module, size: tuple[int, int], lean: bool = True, channels: int = 3) -> int:
    """The floor of one inference at batch 1 on an image of `size`: max over the stages of `network_floor_bytes`.

    Zoom-In (`ZoomInNet`): a on V(x, s1); b on one tile view (lean) or N of them (an upper bound of
    N'); f on one patch (lean) or N. ATS (`ATSNet`): its attention on V(x, s); f on one patch or N.
    """
    n = 1 if lean else int(model.n_patches)
    ph, pw = model.patch_size
    stages = [(model.features, (n, channels, ph, pw))]
    if hasattr(model, "attention_a"):
        stages.append((model.attention_a, (1, channels, *view_size(size, model.scale1))))
        stages.append((model.attention_b, (n, channels, *model.subview_size)))
    elif getattr(model, "attention", None) is not None:
        stages.append((model.attention, (1, channels, *view_size(size, model.scale))))
    return max(network_floor_bytes(net, shape) for net, shape in stages)
