"""Annotations of slides: appendix L's pixel-level masks for alpha and beta, and fig. 7's attention against metastasis.

`roi_tiles` rasterises an ROI per tile (the metastasis-to-tile ratio, and the mask on each touched
tile's s2 grid); `pixel_mse` is eq. 13, sum_c (M(V(x, s1), c) - alpha_c)^2 plus the same for each
computed beta^c; `attention_roi_spearman` is fig. 7's Spearman correlation of alpha with the ratio.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

from zoomin_lib.losses import attention_mse
from zoomin_lib.models import ModelOutput
from zoomin_lib.wsi.predict import SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader


def roi_tiles(model: SlideZoomIn, reader: SlideReader) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """(metastasis-to-tile ratio float [n_rows, n_cols], {tile: ROI mask bool [u, v] at s2}) of an annotated slide.

    Only tiles that meet an ROI bounding box are rasterised (at the s2 grid: pixel centres);
    a ratio is the ROI fraction of the tile's part inside the slide. No ROI: all zeros.
    """
    key = ("roi_tiles", model.net.tile_size, model.net.scale2)
    if key in reader.cache:
        return reader.cache[key]
    n_rows, n_cols = model.grid(reader)
    th, tw = model.net.tile_size
    u, v = model.net.subview_size
    H, W = reader.shape
    ratios, masks = np.zeros((n_rows, n_cols)), {}
    boxes = reader.roi.boxes() if reader.roi is not None else np.zeros((0, 4))
    touched = set()
    for x0, y0, x1, y1 in boxes:
        for r in range(max(0, int(y0 // th)), min(n_rows, int(y1 // th) + 1)):
            for c in range(max(0, int(x0 // tw)), min(n_cols, int(x1 // tw) + 1)):
                touched.add((r, c))
    for r, c in sorted(touched):
        mask = np.asarray(reader.roi.window((c * tw, r * th), (tw, th), (v, u)), dtype=bool)  # [u, v]
        inside = (((r * th + (np.arange(u) + 0.5) * th / u) < H)[:, None]
                  & ((c * tw + (np.arange(v) + 0.5) * tw / v) < W)[None, :])
        ratios[r, c] = mask[inside].mean() if inside.any() else 0.0
        if mask.any():
            masks[r * n_cols + c] = mask
    reader.cache[key] = (ratios, masks)
    return ratios, masks


def pixel_mse(model: SlideZoomIn, reader: SlideReader, out: ModelOutput) -> Tensor:
    """Eq. 13 of appendix L: ||M(V(x, s1), c) - alpha_c||^2 summed over tiles, plus the same for each computed beta^c (mean over tiles).

    M is 1 on tiles (and s2 view locations) holding any annotated pixel; a slide without an ROI
    (a normal slide) has M = 0 everywhere.
    """
    ratios, masks = roi_tiles(model, reader)
    m_alpha = torch.from_numpy(ratios.reshape(1, -1) > 0).float().to(out.alpha.device)  # [1, T]
    loss = attention_mse(out.alpha, m_alpha)
    if out.betas is not None and out.betas.numel():
        u, v = model.net.subview_size
        zero = np.zeros((u, v), dtype=bool)
        m_beta = torch.from_numpy(np.stack([masks.get(int(t), zero).reshape(-1) for t in out.beta_tile.tolist()]))
        m_beta = m_beta.float().to(out.betas.device)
        loss = loss + attention_mse(out.betas, m_beta)
    return loss


def attention_roi_spearman(
    alphas: Sequence[np.ndarray], ratios: Sequence[np.ndarray], tissue: Sequence[np.ndarray] | None = None
) -> dict[str, Any]:
    """Spearman's rho between alpha_c and the metastasis-to-tile ratio over the (tissue) tiles of annotated slides (Fig. 7)."""
    from scipy.stats import spearmanr

    xs, ys, per_slide = [], [], []
    for k, (a, r) in enumerate(zip(alphas, ratios)):
        keep = np.ones(a.shape, dtype=bool) if tissue is None else np.asarray(tissue[k], dtype=bool)
        xs.append(a[keep].ravel())
        ys.append(r[keep].ravel())
        rho_k = spearmanr(xs[-1], ys[-1]).statistic if np.ptp(ys[-1]) > 0 and np.ptp(xs[-1]) > 0 else math.nan
        per_slide.append(float(rho_k))
    x, y = np.concatenate(xs), np.concatenate(ys)
    res = spearmanr(x, y) if np.ptp(y) > 0 and np.ptp(x) > 0 else None
    return {"rho": math.nan if res is None else float(res.statistic), "p_value": math.nan if res is None else float(res.pvalue),
            "n_tiles": int(x.size), "n_tiles_with_roi": int((y > 0).sum()), "per_slide": per_slide}
