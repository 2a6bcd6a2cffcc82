"""The memory model of Zoom-In sec. 2.1 and appendix A, fitted to measured peak memory.

One-stage ATS holds O(s^2 HW + N h w): its view of the whole image and N full-resolution
patches. Zoom-In holds O(s1^2 HW + N' s2^2 h1 w1 + N h2 w2): its first-stage view, the s2 views
of the N' distinct drawn tiles (h1 x w1 each) and N sub-tiles. Each term is a pixel count; the
model says peak bytes = c0 + sum_k c_k term_k with constants c_k (bytes per pixel of that term,
set by the networks' widths). `fit` finds non-negative c_k by least squares on measurements and
`relative_errors` says how well the fitted model reproduces them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

__all__ = ["ats_terms", "zoomin_terms", "MemoryFit", "fit", "crossover_side"]


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
