"""Full models: Zoom-In (two stages), ATS (one stage) and the baselines U-N, Deep MIL and CNN.

- `ATSNet`     ATS sec. 3.3, eq. 19-20: attention on V(x, s), N patches drawn from it.
- `ZoomInNet`  Zoom-In sec. 2.1, eq. 1, 4, 5, 6, 9: tiles drawn with replacement from alpha
               (pooled over the tiles of appendix F), sub-tiles without replacement from beta^c,
               computed only for the N' unique drawn tiles.
- `UniformNet` the U-N baseline: ATSNet with the uniform distribution and no attention network.
- `DeepMIL`    attention MIL over all patches: ATSNet's exact mode (eq. 19 / Zoom-In eq. 2).
- `CNNBaseline` a CNN on the downsampled image V(x, s).

Modes of `forward`:
- "sample": the Monte Carlo estimators of sampling.py / hierarchical.py (training).
- "topk":   deterministic; the highest-attention locations, aggregated with the renormalised
            weights sum_n w_n f_n / sum_n w_n.
- "exact":  the full model sum_i a_i f_i over every location (eq. 19, Zoom-In eq. 5), features
            computed in chunks of `chunk_size` patches; only feasible for small images.

`contrastive=True` draws from the normalised complements (1 - alpha)/(T - 1) and
(1 - beta)/(K2 - 1) (Zoom-In sec. 2.2), and the estimators use those distributions.
The returned `alpha` and `betas` are always the attention distributions themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .geometry import (
    _pair,
    extract_patches,
    tile_grid,
    tile_pool,
    tile_top_left,
    tile_views,
    view,
    view_size,
    view_to_full,
)
from .hierarchical import expectation_two_stage, sample_subtiles, unique_draws
from .sampling import (
    expectation_with_replacement,
    expectation_without_replacement,
    sample_with_replacement,
    sample_without_replacement,
    validate_probs,
)

__all__ = ["MODES", "ModelOutput", "complement", "ATSNet", "ZoomInNet", "UniformNet", "DeepMIL", "CNNBaseline"]

MODES = ("sample", "topk", "exact")


@dataclass
class ModelOutput:
    """What a model returns: logits, the attention distributions and the locations it used.

    N is the number of patches aggregated: n_patches for "sample" and "topk", every location
    for "exact". `centers` are full-resolution patch centres (row, col).
    """

    logits: Tensor  # [B, n_classes]
    features: Tensor | None = None  # [B, D] aggregated features (the argument of g)
    alpha: Tensor | None = None  # [B, K] (ATS: view locations) or [B, T] (Zoom-In: tiles)
    betas: Tensor | None = None  # [U, K2] second-stage attention of the tiles in beta_batch/beta_tile
    beta_batch: Tensor | None = None  # [U] image of each row of betas
    beta_tile: Tensor | None = None  # [U] tile of each row of betas
    locations: Tensor | None = None  # [B, N] ATS: row-major index in the view
    tiles: Tensor | None = None  # [B, N] Zoom-In: tile of each patch (row-major in the tile grid)
    subtiles: Tensor | None = None  # [B, N] Zoom-In: sub-tile, row-major in its tile's s2 view
    centers: Tensor | None = None  # [B, N, 2] full-resolution centres (row, col)
    weights: Tensor | None = None  # [B, N] aggregation weights ("topk", "exact"); None when sampled
    mode: str = "sample"
    contrastive: bool = False


def complement(probs: Tensor) -> Tensor:
    """The normalised complement (1 - p) / (K - 1) of distributions `probs` [B, K] (Zoom-In sec. 2.2)."""
    K = probs.shape[-1]
    if K < 2:
        raise ValueError(f"the complement of a distribution needs K >= 2 entries, got shape {tuple(probs.shape)}")
    return (1 - probs) / (K - 1)


def _check_mode(mode: str) -> None:
    """Raise ValueError unless mode is one of MODES."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def _check_x(x: Tensor) -> None:
    """Raise ValueError unless x is a floating-point [B, C, H, W] batch."""
    if not isinstance(x, Tensor) or x.dim() != 4 or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point [B, C, H, W] tensor, got {getattr(x, 'shape', type(x))}")


def _check_positive_int(value: int, name: str) -> None:
    """Raise ValueError unless value is a positive int."""
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def _check_scale(scale: float, name: str) -> None:
    """Raise ValueError unless scale is in (0, 1]."""
    if not isinstance(scale, (int, float)) or not (0 < scale <= 1):
        raise ValueError(f"{name} must be in (0, 1], got {scale!r}")


def _classifier(features: nn.Module, n_classes: int) -> nn.Linear:
    """The linear classifier g on top of `features.out_features`."""
    d = getattr(features, "out_features", None)
    if not isinstance(d, int):
        raise ValueError(f"the feature network {type(features).__name__} must expose an int `out_features`")
    _check_positive_int(n_classes, "n_classes")
    return nn.Linear(d, n_classes)


def _score_distribution(scores: Tensor, name: str) -> Tensor:
    """Softmax of score logits [B, K] -> probabilities [B, K], with a clear error on NaN/inf."""
    if not torch.isfinite(scores.detach()).all():
        raise ValueError(f"the {name} scores contain NaN or inf (shape {tuple(scores.shape)}); check the input")
    probs = torch.softmax(scores, dim=-1)  # [B, K]
    validate_probs(probs, name)
    return probs


def _chunked_weighted_sum(
    features: Callable[[Tensor], Tensor],
    x: Tensor,
    batch: Tensor,
    rows: Tensor,
    cols: Tensor,
    weights: Tensor,
    patch_size: tuple[int, int],
    chunk_size: int,
) -> Tensor:
    """sum_m weights_m f(patch_m) per image, [B, D], extracting and featurising `chunk_size` patches at a time."""
    total: Tensor | None = None
    for start in range(0, batch.numel(), chunk_size):
        sl = slice(start, start + chunk_size)
        patches = extract_patches(x, batch[sl], rows[sl], cols[sl], patch_size)  # [m, C, ph, pw]
        f = features(patches)  # [m, D]
        part = torch.zeros(x.shape[0], f.shape[1], dtype=f.dtype, device=f.device)
        part = part.index_add(0, batch[sl], weights[sl].unsqueeze(1) * f)  # [B, D]
        total = part if total is None else total + part
    assert total is not None
    return total


def _features_of(features: nn.Module, x: Tensor, rows: Tensor, cols: Tensor, patch_size: tuple[int, int]) -> Tensor:
    """Features [B, N, D] of the patches centred at (rows, cols) [B, N] of each image."""
    B, N = rows.shape
    batch = torch.arange(B, device=x.device).repeat_interleave(N)  # [B*N]
    patches = extract_patches(x, batch, rows.flatten(), cols.flatten(), patch_size)  # [B*N, C, ph, pw]
    return features(patches).view(B, N, -1)  # [B, N, D]


class ATSNet(nn.Module):
    """One-stage attention sampling (ATS sec. 3.3, eq. 19-20): attention on V(x, s), patches at full resolution.

    The attention network must return a score map with the size of the view (padding-1 / "same"
    convolutions, as in tables 5 and 6), so view location (i, j) maps to the full-resolution
    centre view_to_full(i, j) with no receptive-field offset; a smaller map is an error.
    """

    def __init__(
        self,
        attention: nn.Module | None,
        features: nn.Module,
        n_classes: int,
        scale: float,
        patch_size: int | tuple[int, int],
        n_patches: int,
        replace: bool = False,  # False: Gumbel-top-k + ATS eq. 14-15; True: iid + ATS eq. 11-12
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        _check_scale(scale, "scale")
        _check_positive_int(n_patches, "n_patches")
        _check_positive_int(chunk_size, "chunk_size")
        if attention is None and type(self).scores is ATSNet.scores:
            raise ValueError("ATSNet needs an attention network (use UniformNet for uniform sampling)")
        self.attention = attention
        self.features = features
        self.g = _classifier(features, n_classes)
        self.scale = scale
        self.patch_size = _pair(patch_size, "patch_size")
        self.n_patches = n_patches
        self.replace = replace
        self.chunk_size = chunk_size

    def scores(self, x: Tensor) -> Tensor:
        """Attention logits [B, h*w] of the view V(x, s), row-major."""
        v = view(x, self.scale)  # [B, C, h, w]
        s = self.attention(v)  # [B, 1, h, w]
        if s.dim() != 4 or s.shape[0] != x.shape[0] or s.shape[1] != 1 or s.shape[2:] != v.shape[2:]:
            raise ValueError(
                f"the attention network must map a view {tuple(v.shape)} to a score map "
                f"[B, 1, {v.shape[2]}, {v.shape[3]}] (same padding), got {tuple(s.shape)}"
            )
        return s.flatten(1)  # [B, h*w]

    def _centers(self, idx: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
        """Full-resolution centre (rows, cols) of view locations idx [B, N]."""
        h, w = view_size(tuple(x.shape[-2:]), self.scale)
        return view_to_full(idx // w, idx % w, (h, w), tuple(x.shape[-2:]))

    def forward(
        self,
        x: Tensor,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
    ) -> ModelOutput:
        """Classify images x [B, C, H, W] from n_patches patches ("sample", "topk") or all of them ("exact")."""
        _check_x(x)
        _check_mode(mode)
        alpha = _score_distribution(self.scores(x), "attention")  # [B, K]
        probs = complement(alpha) if contrastive else alpha  # [B, K]
        B, K = probs.shape
        weights = None
        if mode == "exact":
            idx = torch.arange(K, device=x.device).expand(B, K)  # [B, K]
            rows, cols = self._centers(idx, x)  # [B, K]
            batch = torch.arange(B, device=x.device).repeat_interleave(K)
            agg = _chunked_weighted_sum(
                self.features, x, batch, rows.flatten(), cols.flatten(), probs.flatten(),
                self.patch_size, self.chunk_size,
            )  # [B, D]
            weights = probs
        else:
            n = self.n_patches
            if n > K and (mode == "topk" or not self.replace):
                raise ValueError(f"n_patches={n} exceeds the {K} locations of the view; lower it or raise scale")
            if mode == "topk":
                idx = probs.detach().topk(n, dim=1).indices  # [B, n]
            elif self.replace:
                idx = sample_with_replacement(probs, n, generator)  # [B, n]
            else:
                idx = sample_without_replacement(probs, n, generator)  # [B, n]
            rows, cols = self._centers(idx, x)  # [B, n]
            feats = _features_of(self.features, x, rows, cols, self.patch_size)  # [B, n, D]
            if mode == "topk":
                w = probs.gather(1, idx)  # [B, n]
                weights = w / w.sum(dim=1, keepdim=True)
                agg = (weights.unsqueeze(-1) * feats).sum(dim=1)  # [B, D]
            elif self.replace:
                agg = expectation_with_replacement(probs, idx, feats)
            else:
                agg = expectation_without_replacement(probs, idx, feats)
        return ModelOutput(
            logits=self.g(agg), features=agg, alpha=alpha, locations=idx,
            centers=torch.stack((rows, cols), dim=-1), weights=weights, mode=mode, contrastive=contrastive,
        )


class UniformNet(ATSNet):
    """U-N baseline: ATSNet with the uniform distribution over the view's locations and no attention network."""

    def __init__(
        self,
        features: nn.Module,
        n_classes: int,
        scale: float,
        patch_size: int | tuple[int, int],
        n_patches: int,
        replace: bool = False,
        chunk_size: int = 256,
    ) -> None:
        super().__init__(None, features, n_classes, scale, patch_size, n_patches, replace, chunk_size)

    def scores(self, x: Tensor) -> Tensor:
        """Constant logits [B, h*w] (no view is computed)."""
        h, w = view_size(tuple(x.shape[-2:]), self.scale)
        if not torch.isfinite(x).all():
            raise ValueError(f"x contains NaN or inf (shape {tuple(x.shape)})")
        return x.new_zeros(x.shape[0], h * w)


class DeepMIL(ATSNet):
    """Attention MIL over all patches (the full model of eq. 19 / Zoom-In eq. 2): ATSNet in "exact" mode only."""

    def __init__(
        self,
        attention: nn.Module,
        features: nn.Module,
        n_classes: int,
        scale: float,
        patch_size: int | tuple[int, int],
        chunk_size: int = 256,
    ) -> None:
        super().__init__(attention, features, n_classes, scale, patch_size, 1, False, chunk_size)

    def forward(
        self,
        x: Tensor,
        mode: str = "exact",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
    ) -> ModelOutput:
        """Classify x [B, C, H, W] from every patch, weighted by the attention; only mode="exact" exists."""
        if mode != "exact":
            raise ValueError(f"DeepMIL aggregates all patches: mode must be 'exact', got {mode!r} (use ATSNet to sample)")
        return super().forward(x, "exact", generator, contrastive)


class ZoomInNet(nn.Module):
    """Zoom-In network (sec. 2.1, eq. 5, 6, 9): tiles from alpha on V(x, s1), sub-tiles from beta^c on V(x, s2, c).

    Stage one: a's score map on V(x, s1) is averaged over the non-overlapping full-resolution
    tiles of appendix F (`tile_pool`; partial edge tiles count) and softmaxed into alpha [B, T];
    n_patches tiles are drawn with replacement. Stage two: only for the U unique drawn
    (image, tile) pairs, the tile (zero beyond the image) is viewed at scale s2 and b gives
    beta^c over its u*v entries; each draw of a tile takes a distinct sub-tile (without
    replacement). Sub-tile (i', j') of tile c is the patch centred at
    top_left(c) + view_to_full((i', j'), (u, v), tile_size), read from the full image.
    """

    def __init__(
        self,
        attention_a: nn.Module,
        attention_b: nn.Module,
        features: nn.Module,
        n_classes: int,
        scale1: float,
        scale2: float,
        tile_size: int | tuple[int, int],
        patch_size: int | tuple[int, int],
        n_patches: int,
        chunk_size: int = 256,
    ) -> None:
        super().__init__()
        _check_scale(scale1, "scale1")
        _check_scale(scale2, "scale2")
        _check_positive_int(n_patches, "n_patches")
        _check_positive_int(chunk_size, "chunk_size")
        self.attention_a = attention_a
        self.attention_b = attention_b
        self.features = features
        self.g = _classifier(features, n_classes)
        self.scale1 = scale1
        self.scale2 = scale2
        self.tile_size = _pair(tile_size, "tile_size")
        self.subview_size = view_size(self.tile_size, scale2)  # (u, v)
        self.patch_size = _pair(patch_size, "patch_size")
        self.n_patches = n_patches
        self.chunk_size = chunk_size

    def first_stage(self, x: Tensor) -> Tensor:
        """alpha [B, T]: a's scores on V(x, s1), averaged over the tile grid, softmaxed."""
        v = view(x, self.scale1)  # [B, C, h1, w1]
        s = self.attention_a(v)  # [B, 1, h1, w1]
        if s.dim() != 4 or s.shape[1] != 1 or s.shape[2:] != v.shape[2:]:
            raise ValueError(f"attention_a must map a view {tuple(v.shape)} to [B, 1, h1, w1], got {tuple(s.shape)}")
        pooled = tile_pool(s[:, 0], tuple(x.shape[-2:]), self.tile_size)  # [B, n_rows, n_cols]
        return _score_distribution(pooled.flatten(1), "first-stage attention")  # [B, T]

    def second_stage(self, x: Tensor, batch: Tensor, tile: Tensor) -> Tensor:
        """beta [U, K2]: b's scores on the views V(x, s2, c) of the given (image, tile) pairs, softmaxed."""
        tv = tile_views(x, batch, tile, self.tile_size, self.scale2)  # [U, C, u, v]
        s = self.attention_b(tv)  # [U, 1, u, v]
        if s.dim() != 4 or s.shape[1] != 1 or s.shape[2:] != tv.shape[2:]:
            raise ValueError(f"attention_b must map tile views {tuple(tv.shape)} to [U, 1, u, v], got {tuple(s.shape)}")
        return _score_distribution(s.flatten(1), "second-stage attention")  # [U, K2]

    def _centers(self, x: Tensor, tiles: Tensor, subtiles: Tensor) -> tuple[Tensor, Tensor]:
        """Full-resolution centres (rows, cols) of sub-tiles `subtiles` of tiles `tiles` (same shapes)."""
        u, v = self.subview_size
        top, left = tile_top_left(tiles, tuple(x.shape[-2:]), self.tile_size)
        dr, dc = view_to_full(subtiles // v, subtiles % v, (u, v), self.tile_size)
        return top + dr, left + dc

    def forward(
        self,
        x: Tensor,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
    ) -> ModelOutput:
        """Classify images x [B, C, H, W] by two-stage sampling ("sample"), top-k ("topk") or eq. 5 ("exact")."""
        _check_x(x)
        _check_mode(mode)
        B = x.shape[0]
        dev = x.device
        n_rows, n_cols = tile_grid(tuple(x.shape[-2:]), self.tile_size)
        T = n_rows * n_cols
        alpha = self.first_stage(x)  # [B, T]
        p1 = complement(alpha) if contrastive else alpha
        weights = None
        if mode == "sample":
            tiles = sample_with_replacement(p1, self.n_patches, generator)  # [B, N]
            draws = unique_draws(tiles)
            beta_batch, beta_tile = draws.batch, draws.tile  # [U], [U]
            betas = self.second_stage(x, beta_batch, beta_tile)  # [U, K2]
            p2 = complement(betas) if contrastive else betas
            subtiles = sample_subtiles(p2, draws, generator)  # [B, N]
            beta_drawn = p2[draws.inverse, subtiles]  # [B, N]
            rows, cols = self._centers(x, tiles, subtiles)  # [B, N]
            feats = _features_of(self.features, x, rows, cols, self.patch_size)  # [B, N, D]
            agg = expectation_two_stage(p1, tiles, beta_drawn, feats)  # [B, D]
        else:
            n_top = T if mode == "exact" else min(self.n_patches, T)
            if mode == "exact":
                top = torch.arange(T, device=dev).expand(B, T)  # [B, T]
            else:
                top = p1.detach().topk(n_top, dim=1).indices  # [B, n_top]
            beta_batch = torch.arange(B, device=dev).repeat_interleave(n_top)  # [U]
            beta_tile = top.flatten()  # [U]
            betas = self.second_stage(x, beta_batch, beta_tile)  # [U, K2]
            p2 = complement(betas) if contrastive else betas
            K2 = p2.shape[1]
            joint = (p1.gather(1, top).unsqueeze(-1) * p2.view(B, n_top, K2)).flatten(1)  # [B, n_top*K2]
            if mode == "exact":
                sel = torch.arange(n_top * K2, device=dev).expand(B, -1)  # [B, T*K2]
                weights = joint
            else:
                n_sel = min(self.n_patches, n_top * K2)
                sel = joint.detach().topk(n_sel, dim=1).indices  # [B, n_sel]
                w = joint.gather(1, sel)
                weights = w / w.sum(dim=1, keepdim=True)  # [B, n_sel]
            tiles = top.gather(1, sel // K2)  # [B, N]
            subtiles = sel % K2  # [B, N]
            rows, cols = self._centers(x, tiles, subtiles)  # [B, N]
            N = tiles.shape[1]
            batch = torch.arange(B, device=dev).repeat_interleave(N)
            agg = _chunked_weighted_sum(
                self.features, x, batch, rows.flatten(), cols.flatten(), weights.flatten(),
                self.patch_size, self.chunk_size,
            )  # [B, D]
        return ModelOutput(
            logits=self.g(agg), features=agg, alpha=alpha, betas=betas, beta_batch=beta_batch, beta_tile=beta_tile,
            tiles=tiles, subtiles=subtiles, centers=torch.stack((rows, cols), dim=-1), weights=weights,
            mode=mode, contrastive=contrastive,
        )


class CNNBaseline(nn.Module):
    """CNN baseline: a backbone (e.g. networks.ResNetCNN) on the downsampled image V(x, s)."""

    def __init__(self, backbone: nn.Module, scale: float) -> None:
        super().__init__()
        _check_scale(scale, "scale")
        self.backbone = backbone
        self.scale = scale

    def forward(
        self,
        x: Tensor,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
    ) -> ModelOutput:
        """Logits [B, n_classes] of backbone(V(x, s)); every mode is the same deterministic pass."""
        _check_x(x)
        _check_mode(mode)
        if contrastive:
            raise ValueError("CNNBaseline has no attention to draw contrastive samples from")
        return ModelOutput(logits=self.backbone(view(x, self.scale)), mode=mode)
