"""Random textures shared by the synthetic stand-ins: smooth noise fields, two ways.

- `blurred_noise`: white noise smoothed by a Gaussian of width `sigma` (correlated over about
  `sigma` pixels; `mode="wrap"` tiles seamlessly);
- `coarse_noise`: a coarse grid of uniform values upsampled bicubically to the image, in [0, 1]
  (a few large, soft blotches);
- `ihc_stains` / `stain_vectors`: real stain textures (the hematoxylin and DAB optical densities of
  scikit-image's ihc.png) and the H&E stain vectors of Ruifrok & Johnston, which the colon cancer
  and Camelyon16 stand-ins mix into tissue colours.

Both draw from the generator they are given, so a stand-in stays a function of its seed.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.ndimage as ndi
from PIL import Image

__all__ = ["blurred_noise", "coarse_noise", "ihc_stains", "stain_vectors"]


def blurred_noise(
    rng: np.random.Generator, shape: tuple[int, int], sigma: float, *, mode: str = "reflect", dtype: type = np.float64
) -> np.ndarray:
    """Standard normal noise of `dtype`, Gaussian-filtered with `sigma` (scipy's `mode` at the border): [shape]."""
    return ndi.gaussian_filter(rng.standard_normal(shape).astype(dtype, copy=False), sigma, mode=mode)


def coarse_noise(rng: np.random.Generator, shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """Uniform noise on a `grid` (rows, cols) upsampled bicubically to `shape` (H, W), clipped to [0, 1]: float32 [H, W]."""
    coarse = Image.fromarray(rng.random(grid, dtype=np.float32), mode="F")  # [rows, cols]
    return np.clip(np.asarray(coarse.resize((shape[1], shape[0]), Image.Resampling.BICUBIC)), 0.0, 1.0)


@lru_cache(maxsize=1)
def ihc_stains() -> np.ndarray:
    """Hematoxylin and DAB optical densities of scikit-image's ihc.png, float32 [512, 512, 2]."""
    from skimage.color import rgb2hed
    from skimage.data import immunohistochemistry

    hed = rgb2hed(immunohistochemistry()) * -np.log(1e-6)  # rgb2hed scales OD by 1/ln(1e6)
    return hed[..., [0, 2]].astype(np.float32)  # [512, 512, 2]


def stain_vectors() -> np.ndarray:
    """Unit optical-density RGB vectors of hematoxylin and eosin [2, 3] (Ruifrok & Johnston)."""
    from skimage.color import rgb_from_hed

    vectors = rgb_from_hed[:2]  # [2, 3]
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
