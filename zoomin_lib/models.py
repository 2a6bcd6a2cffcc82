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
from torch.nn import functional as F

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


def complement(probs: Tensor, support: Tensor | None = None) -> Tensor:
    """The normalised complement of distributions `probs` [B, K] (Zoom-In sec. 2.2) over `support` [B, K].

    (1 - p_i) / sum_j (1 - p_j) over the entries of the support (all entries by default), which
    is (1 - p_i) / (K - 1) when the support is everything. A row whose support is a single entry
    keeps that entry (probability 1): there is nothing else to draw.
    """
    K = probs.shape[-1]
    if support is None:
        if K < 2:
            raise ValueError(f"the complement of a distribution needs K >= 2 entries, got shape {tuple(probs.shape)}")
        return (1 - probs) / (K - 1)
    inside = support.to(probs.dtype)  # [B, K]
    comp = (1 - probs) * inside  # [B, K]
    total = comp.sum(dim=-1, keepdim=True)  # [B, 1]
    single = inside / inside.sum(dim=-1, keepdim=True).clamp(min=1)
    return torch.where(total > 0, comp / total.clamp(min=torch.finfo(probs.dtype).tiny), single)


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


def _score_distribution(scores: Tensor, name: str, allowed: Tensor | None = None) -> Tensor:
    """Softmax of score logits [B, K] over the `allowed` entries (all by default); clear error on NaN/inf."""
    if not torch.isfinite(scores.detach()).all():
        raise ValueError(f"the {name} scores contain NaN or inf (shape {tuple(scores.shape)}); check the input")
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # [B, K]
    validate_probs(probs, name)
    return probs


def _score_map(network: nn.Module, views: Tensor, name: str) -> Tensor:
    """network(views) [M, 1, h, w] for views [M, C, h, w]; a ValueError naming `name` unless the map has the views' size."""
    s = network(views)
    if s.dim() != 4 or s.shape[0] != views.shape[0] or s.shape[1] != 1 or s.shape[2:] != views.shape[2:]:
        raise ValueError(
            f"{name} must map views {tuple(views.shape)} to a score map "
            f"[M, 1, {views.shape[2]}, {views.shape[3]}] (same padding), got {tuple(s.shape)}"
        )
    return s


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


def _features_of(
    features: nn.Module, x: Tensor, rows: Tensor, cols: Tensor, patch_size: tuple[int, int], chunk_size: int
) -> Tensor:
    """Features [B, N, D] of the patches centred at (rows, cols) [B, N] of each image, `chunk_size` patches at a time."""
    B, N = rows.shape
    batch = torch.arange(B, device=x.device).repeat_interleave(N)  # [B*N]
    rows, cols = rows.flatten(), cols.flatten()
    parts = [
        features(extract_patches(x, batch[i : i + chunk_size], rows[i : i + chunk_size], cols[i : i + chunk_size],
                                 patch_size))  # [m, D]
        for i in range(0, B * N, chunk_size)
    ]
    return torch.cat(parts).reshape(B, N, -1)  # [B, N, D]


class ATSNet(nn.Module):
    """One-stage attention sampling (ATS sec. 3.3, eq. 19-20): attention on V(x, s), patches at full resolution.

    The attention network must return a score map with the size of the view (padding-1 / "same"
    convolutions, as in tables 5 and 6), so view location (i, j) maps to the full-resolution
    centre view_to_full(i, j) with no receptive-field offset; a smaller map is an error.
    """

    train_mode = "sample"  # the mode steps.sampling_loss trains in
    eval_mode = "topk"  # the mode steps.predictor evaluates in by default
    supports_contrastive = True  # the complement of the attention differs from the attention

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
        s = _score_map(self.attention, view(x, self.scale), "the attention network")  # [B, 1, h, w]
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
            feats = _features_of(self.features, x, rows, cols, self.patch_size, self.chunk_size)  # [B, n, D]
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
    """U-N baseline: ATSNet with the uniform distribution over the view's locations and no attention network.

    It has no deterministic top-k (every location ties) and no contrastive samples (the complement
    of the uniform distribution is itself), so only "sample" and "exact" are accepted.
    """

    eval_mode = "sample"
    supports_contrastive = False

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

    def forward(
        self,
        x: Tensor,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
    ) -> ModelOutput:
        """Classify x [B, C, H, W] from n_patches uniformly drawn patches ("sample") or all of them ("exact")."""
        if mode == "topk":
            raise ValueError("UniformNet has no top-k: every location has the same weight (use mode='sample')")
        if contrastive:
            raise ValueError("UniformNet has no contrastive samples: the complement of uniform is uniform")
        return super().forward(x, mode, generator, contrastive)


class DeepMIL(ATSNet):
    """Attention MIL over all patches (the full model of eq. 19 / Zoom-In eq. 2): ATSNet in "exact" mode only."""

    train_mode = "exact"
    eval_mode = "exact"

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
    top_left(c) + view_to_full((i', j'), (u, v), tile_size), read from the full image. In a
    partial edge tile, the sub-tiles whose centre falls outside the image (pure zero padding)
    get no second-stage attention. Stage two runs `tile_chunk` tiles at a time, so at most that
    many full-resolution tiles are held at once (at inference; with gradients every chunk's
    activations are kept for the backward pass).
    """

    train_mode = "sample"
    eval_mode = "topk"
    supports_contrastive = True

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
        tile_chunk: int = 16,
    ) -> None:
        super().__init__()
        _check_scale(scale1, "scale1")
        _check_scale(scale2, "scale2")
        _check_positive_int(n_patches, "n_patches")
        _check_positive_int(chunk_size, "chunk_size")
        _check_positive_int(tile_chunk, "tile_chunk")
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
        self.tile_chunk = tile_chunk

    def first_stage(self, x: Tensor) -> Tensor:
        """alpha [B, T]: a's scores on V(x, s1), averaged over the tile grid, softmaxed."""
        s = _score_map(self.attention_a, view(x, self.scale1), "attention_a")  # [B, 1, h1, w1]
        pooled = tile_pool(s[:, 0], tuple(x.shape[-2:]), self.tile_size)  # [B, n_rows, n_cols]
        return _score_distribution(pooled.flatten(1), "first-stage attention")  # [B, T]

    def subtile_inside(self, x: Tensor, tile: Tensor) -> Tensor:
        """[U, K2] mask: True where the sub-tile's centre lies inside the image (False only in partial edge tiles)."""
        k2 = self.subview_size[0] * self.subview_size[1]
        sub = torch.arange(k2, device=tile.device).expand(tile.numel(), k2)  # [U, K2]
        rows, cols = self._centers(x, tile.reshape(-1, 1).expand_as(sub), sub)
        return (rows < x.shape[-2]) & (cols < x.shape[-1])

    def second_stage(self, x: Tensor, batch: Tensor, tile: Tensor) -> Tensor:
        """beta [U, K2]: b's scores on the views V(x, s2, c) of the given (image, tile) pairs, softmaxed."""
        parts = []
        for start in range(0, batch.numel(), self.tile_chunk):
            sl = slice(start, start + self.tile_chunk)
            tv = tile_views(x, batch[sl], tile[sl], self.tile_size, self.scale2)  # [u_c, C, u, v]
            parts.append(_score_map(self.attention_b, tv, "attention_b").flatten(1))  # [u_c, u*v]
        scores = torch.cat(parts)  # [U, K2]
        return _score_distribution(scores, "second-stage attention", self.subtile_inside(x, tile))  # [U, K2]

    def _second_stage_probs(self, x: Tensor, batch: Tensor, tile: Tensor, contrastive: bool) -> tuple[Tensor, Tensor]:
        """(beta [U, K2], the distribution to draw from: beta or its complement over the tile's inside)."""
        betas = self.second_stage(x, batch, tile)
        if not contrastive:
            return betas, betas
        return betas, complement(betas, self.subtile_inside(x, tile))

    def _centers(self, x: Tensor, tiles: Tensor, subtiles: Tensor) -> tuple[Tensor, Tensor]:
        """Full-resolution centres (rows, cols) of sub-tiles `subtiles` of tiles `tiles` (same shapes)."""
        u, v = self.subview_size
        top, left = tile_top_left(tiles, tuple(x.shape[-2:]), self.tile_size)
        dr, dc = view_to_full(subtiles // v, subtiles % v, (u, v), self.tile_size)
        return top + dr, left + dc

    def _top_joint(self, x: Tensor, p1: Tensor, contrastive: bool):
        """The n_patches largest alpha_c beta^c_c' of each image, found exactly.

        Tiles are visited in decreasing alpha, `tile_chunk` at a time; since alpha_c beta^c_c' <= alpha_c,
        the search stops once the n-th best product found is at least the alpha of the next tile.
        Returns tiles, subtiles, joint weights [B, N] and the betas computed (with their image and tile).
        """
        B, _ = p1.shape
        n = self.n_patches
        order = p1.detach().argsort(dim=1, descending=True)  # [B, T]
        out_tiles, out_subs, out_w, all_betas, all_b, all_t = [], [], [], [], [], []
        for b in range(B):
            best_w = p1.new_zeros(0)  # joint weights, with gradient
            best_tile = order.new_zeros(0)
            best_sub = order.new_zeros(0)
            for start in range(0, order.shape[1], self.tile_chunk):
                chunk = order[b, start : start + self.tile_chunk]  # [c]
                if best_w.numel() >= n and float(best_w.detach().min()) >= float(p1[b, chunk[0]].detach()):
                    break
                img = torch.full_like(chunk, b)
                betas, p2 = self._second_stage_probs(x, img, chunk, contrastive)  # [c, K2]
                all_betas.append(betas)
                all_b.append(img)
                all_t.append(chunk)
                joint = p1[b, chunk].unsqueeze(1) * p2  # [c, K2]
                k2 = joint.shape[1]
                cand_w = torch.cat([best_w, joint.flatten()])
                cand_tile = torch.cat([best_tile, chunk.repeat_interleave(k2)])
                cand_sub = torch.cat([best_sub, torch.arange(k2, device=chunk.device).repeat(chunk.numel())])
                keep = cand_w.detach().topk(min(n, cand_w.numel())).indices
                best_w, best_tile, best_sub = cand_w[keep], cand_tile[keep], cand_sub[keep]
            out_tiles.append(best_tile)
            out_subs.append(best_sub)
            out_w.append(best_w)
        m = min(t.numel() for t in out_tiles)  # every image has the same number of candidates
        tiles = torch.stack([t[:m] for t in out_tiles])  # [B, N]
        subtiles = torch.stack([t[:m] for t in out_subs])  # [B, N]
        joint = torch.stack([w[:m] for w in out_w])  # [B, N]
        return tiles, subtiles, joint, torch.cat(all_betas), torch.cat(all_b), torch.cat(all_t)

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
            betas, p2 = self._second_stage_probs(x, beta_batch, beta_tile, contrastive)  # [U, K2]
            subtiles = sample_subtiles(p2, draws, generator)  # [B, N]
            beta_drawn = p2[draws.inverse, subtiles]  # [B, N]
            rows, cols = self._centers(x, tiles, subtiles)  # [B, N]
            feats = _features_of(self.features, x, rows, cols, self.patch_size, self.chunk_size)  # [B, N, D]
            agg = expectation_two_stage(p1, tiles, beta_drawn, feats)  # [B, D]
        else:
            if mode == "exact":
                beta_tile = torch.arange(T, device=dev).repeat(B)  # [B*T]
                beta_batch = torch.arange(B, device=dev).repeat_interleave(T)  # [B*T]
                betas, p2 = self._second_stage_probs(x, beta_batch, beta_tile, contrastive)  # [B*T, K2]
                K2 = p2.shape[1]
                weights = (p1.unsqueeze(-1) * p2.view(B, T, K2)).flatten(1)  # [B, T*K2]
                sel = torch.arange(T * K2, device=dev).expand(B, -1)
                tiles, subtiles = sel // K2, sel % K2  # [B, T*K2]
            else:
                tiles, subtiles, joint, betas, beta_batch, beta_tile = self._top_joint(x, p1, contrastive)
                weights = joint / joint.sum(dim=1, keepdim=True)  # [B, N]
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
    """CNN baseline: a backbone (e.g. networks.ResNetCNN) on the downsampled image V(x, s), or on x resized to `size`."""

    train_mode = "exact"  # every mode is the same deterministic pass
    eval_mode = "exact"
    supports_contrastive = False

    def __init__(self, backbone: nn.Module, scale: float, size: int | tuple[int, int] | None = None) -> None:
        super().__init__()
        _check_scale(scale, "scale")
        self.backbone = backbone
        self.scale = scale
        self.size = None if size is None else _pair(size, "size")  # resize every image to this size instead

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
        if self.size is not None:
            v = F.interpolate(x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        else:
            v = view(x, self.scale)
        return ModelOutput(logits=self.backbone(v), mode=mode)
