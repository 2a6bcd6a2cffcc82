"""Full models: Zoom-In (two stages), ATS (one stage) and the baselines U-N, Deep MIL and CNN.

- `ATSNet`     ATS sec. 3.3, eq. 19-20: attention on V(x, s), N patches drawn from it.
- `ZoomInNet`  Zoom-In sec. 2.1, eq. 1, 4, 5, 6, 9: tiles drawn with replacement from alpha
               (pooled over the tiles of appendix F), sub-tiles without replacement from beta^c,
               computed only for the N' unique drawn tiles.
- `UniformNet` the U-N baseline: ATSNet with the uniform distribution and no attention network.
- `DeepMIL`    attention-based deep multiple-instance learning (Ilse, Tomczak & Welling 2018,
               eq. 8-9), the "Deep MIL" row of ATS table 1: every patch of a grid, its attention
               computed from its own features. (ATS's full model, attention from the view over all
               patches, eq. 19, is `ATSNet(...)(x, mode="exact")`.)
- `CNNBaseline` a CNN on the downsampled image V(x, s).

Every model reads its pixels through a `zoomin_lib.pixels.PixelSource`: a tensor [B, C, H, W]
(wrapped in a `TensorSource`) or a lazy whole slide (`zoomin_lib.wsi.reader.SlideSource`) goes
down the same code. The forward pass is batched: no Python loop runs over images, tiles or
patches (only over chunks that bound memory: `chunk_size` patches, `tile_chunk` tiles at a time;
None sizes them to about `CHUNK_PIXELS` input pixels), and its host synchronisations
(`zoomin_lib.syncs`) do not grow with B, N or N':

- ATSNet: one (the argument checks), in every mode.
- ZoomInNet "sample": two (N', the number of distinct drawn tiles; the checks).
- ZoomInNet "topk": one (the checks), plus one per extra round of the top-k search when some
  image's N best products may still lie in tiles not yet opened (rounds double the tiles opened,
  so at most ceil(log2(T / N)); none at all when T <= N).
- ZoomInNet "exact": one (the checks).

Modes of `forward`:
- "sample": the Monte Carlo estimators of sampling.py / hierarchical.py (training).
- "topk":   deterministic; the highest-attention locations, aggregated with the renormalised
            weights sum_n w_n f_n / sum_n w_n. Zoom-In's top-k is the exact top N of the joint
            alpha_c beta^c_c' over every tile.
- "exact":  the full model sum_i a_i f_i over every location (eq. 19, Zoom-In eq. 5), features
            computed in chunks; only feasible for small images.

`contrastive=True` draws from the normalised complements (1 - alpha)/(T - 1) and
(1 - beta)/(K2 - 1) (Zoom-In sec. 2.2), and the estimators use those distributions.
The returned `alpha` and `betas` are always the attention distributions themselves.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from zoomin_lib.geometry import (
    as_pair,
    tile_grid,
    tile_pool,
    tile_pool_strip,
    tile_top_left,
    view_size,
    view_to_full,
)
from zoomin_lib.hierarchical import expectation_two_stage, sample_subtiles, subtile_support_ok, unique_draws
from zoomin_lib.pixels import PixelSource, TensorSource, as_source
from zoomin_lib.sampling import (
    expectation_with_replacement,
    expectation_without_replacement,
    sample_with_replacement,
    sample_without_replacement,
)
from zoomin_lib.syncs import Checks, host_sync

__all__ = [
    "MODES", "CHUNK_PIXELS", "ModelOutput", "complement", "score_map", "receptive_halo", "check_positive_int",
    "check_scale", "check_patch", "per_chunk", "attention_distribution", "patch_features", "module_device",
    "ATSNet", "ZoomInNet", "UniformNet", "DeepMIL", "CNNBaseline",
]

MODES = ("sample", "topk", "exact")
Source = Tensor | PixelSource  # what a model reads: a batch [B, C, H, W] or a pixel source
Gen = torch.Generator | None
CHUNK_PIXELS = 2**21  # input pixels a chunk of tiles or patches holds when its size is not set


@dataclass
class ModelOutput:
    """What a model returns: logits, the attention distributions and the locations it used.

    N is the number of patches aggregated: n_patches for "sample" and "topk", every location
    for "exact". `centers` are full-resolution patch centres (row, col).
    """

    logits: Tensor  # [B, n_classes]
    features: Tensor | None = None  # [B, D] aggregated features (the argument of g)
    alpha: Tensor | None = None  # [B, K] (ATS: view locations) or [B, T] (Zoom-In: tiles)
    betas: Tensor | None = None  # [U, K2] beta of the tiles in beta_batch/beta_tile (None: top-k without gradients)
    beta_batch: Tensor | None = None  # [U] image of each tile whose second stage was computed
    beta_tile: Tensor | None = None  # [U] tile of each of them (top-k: every tile the search opened)
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


def check_positive_int(value: int | None, name: str, optional: bool = False) -> None:
    """Raise ValueError unless value is a positive int (or None when `optional`)."""
    if optional and value is None:
        return
    if not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if optional else ''}, got {value!r}")


def check_scale(scale: float, name: str) -> None:
    """Raise ValueError unless scale is in (0, 1]."""
    if not isinstance(scale, (int, float)) or not (0 < scale <= 1):
        raise ValueError(f"{name} must be in (0, 1], got {scale!r}")


def _classifier(features: nn.Module, n_classes: int) -> nn.Linear:
    """The linear classifier g on top of `features.out_features`."""
    d = getattr(features, "out_features", None)
    if not isinstance(d, int):
        raise ValueError(f"the feature network {type(features).__name__} must expose an int `out_features`")
    check_positive_int(n_classes, "n_classes")
    return nn.Linear(d, n_classes)


def per_chunk(size: int | None, pixels_per_item: int) -> int:
    """Items per chunk: `size`, or as many as hold about CHUNK_PIXELS input pixels."""
    return size if size is not None else max(1, CHUNK_PIXELS // max(1, pixels_per_item))


def module_device(model: nn.Module) -> torch.device:
    """Where a module's parameters (or, without parameters, its buffers) live, and so where its inputs go; the CPU for neither."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def score_map(network: nn.Module, views: Tensor, name: str) -> Tensor:
    """network(views) [M, 1, h, w] for views [M, C, h, w]; a ValueError naming `name` unless the map has the views' size."""
    s = network(views)
    if s.dim() != 4 or s.shape[0] != views.shape[0] or s.shape[1] != 1 or s.shape[2:] != views.shape[2:]:
        raise ValueError(
            f"{name} must map views {tuple(views.shape)} to a score map "
            f"[M, 1, {views.shape[2]}, {views.shape[3]}] (same padding), got {tuple(s.shape)}"
        )
    return s


def receptive_halo(network: nn.Module) -> int:
    """Rows of context a stack of stride-1 'same' convolutions needs on each side: sum of dilation * (k - 1) / 2."""
    halo = 0
    for m in network.modules():
        if isinstance(m, nn.Conv2d):
            if tuple(m.stride) != (1, 1):
                raise ValueError(f"the strip-wise first stage needs stride-1 convolutions, got {m}")
            halo += m.dilation[0] * (m.kernel_size[0] - 1) // 2
        elif isinstance(m, (nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
            raise ValueError(f"the strip-wise first stage needs a score map without pooling, got {m}")
    return halo


def attention_distribution(scores: Tensor, name: str, checks: Checks, allowed: Tensor | None = None) -> Tensor:
    """Softmax of score logits [B, K] over the `allowed` entries (all by default); NaN/inf reported by `checks`.

    Non-finite scores are replaced by 0 so that the rest of the forward runs (and the checks then
    raise a clear error at its end) instead of failing inside a sampler or an index on the device.
    """
    finite = torch.isfinite(scores.detach())
    checks.add(finite, f"the {name} scores contain NaN or inf (shape {tuple(scores.shape)}); check the input")
    scores = torch.where(finite, scores, torch.zeros((), dtype=scores.dtype, device=scores.device))
    if allowed is not None:
        scores = scores.masked_fill(~allowed, float("-inf"))
    return torch.softmax(scores, dim=-1)  # [B, K]


def patch_features(
    features: nn.Module, src: PixelSource, rows: Tensor, cols: Tensor, size: tuple[int, int], chunk: int | None,
    image: Tensor | None = None,
) -> Tensor:
    """f of the patches centred at (rows, cols) [B, N] of each row's image: [B, N, D], `chunk` patches at a time.

    Row b reads image b of `src`, or image[b] when `image` [B] is given (several rows of one image: estimates
    drawn more than once per image).
    """
    B, N = rows.shape
    owner = torch.arange(B, device=rows.device) if image is None else image  # [B]
    batch = owner.repeat_interleave(N)  # [B*N]
    parts = [features(p) for p in src.patch_chunks(batch, rows.flatten(), cols.flatten(), size,
                                                    per_chunk(chunk, size[0] * size[1]))]
    return torch.cat(parts).reshape(B, N, -1)  # [B, N, D]


def _weighted_features(
    features: nn.Module, src: PixelSource, rows: Tensor, cols: Tensor, weights: Tensor, size: tuple[int, int],
    chunk: int | None,
) -> Tensor:
    """sum_n weights_n f(patch_n) per image, [B, D], for centres (rows, cols) [B, N]; `chunk` patches at a time."""
    B, N = rows.shape
    batch = torch.arange(B, device=rows.device).repeat_interleave(N)  # [B*N]
    w = weights.flatten()
    step = per_chunk(chunk, size[0] * size[1])
    total: Tensor | None = None
    for start, p in zip(range(0, B * N, step), src.patch_chunks(batch, rows.flatten(), cols.flatten(), size, step)):
        f = features(p)  # [m, D]
        part = torch.zeros(B, f.shape[1], dtype=f.dtype, device=f.device).index_add(
            0, batch[start : start + step], w[start : start + step].unsqueeze(1) * f)  # [B, D]
        total = part if total is None else total + part
    assert total is not None
    return total


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
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_scale(scale, "scale")
        check_positive_int(n_patches, "n_patches")
        check_positive_int(chunk_size, "chunk_size", optional=True)
        if attention is None and type(self)._logits is ATSNet._logits:
            raise ValueError("ATSNet needs an attention network (use UniformNet for uniform sampling)")
        self.attention = attention
        self.features = features
        self.g = _classifier(features, n_classes)
        self.scale = scale
        self.patch_size = as_pair(patch_size, "patch_size")
        self.n_patches = n_patches
        self.replace = replace
        self.chunk_size = chunk_size

    def _logits(self, src: PixelSource, checks: Checks) -> Tensor:
        """Attention logits [B, h*w] of the view V(x, s), row-major."""
        return score_map(self.attention, src.view(self.scale), "the attention network").flatten(1)  # [B, h*w]

    def scores(self, x: Tensor | PixelSource) -> Tensor:
        """Attention logits [B, h*w] of the view V(x, s), row-major."""
        checks = Checks()
        out = self._logits(as_source(x, module_device(self)), checks)
        checks.resolve()
        return out

    def centers(self, idx: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Full-resolution centre (rows, cols) of view locations idx [B, N] of an image of `size` (H, W)."""
        h, w = view_size(size, self.scale)
        return view_to_full(idx // w, idx % w, (h, w), size, check=False)

    def forward(self, x: Source, mode: str = "sample", generator: Gen = None, contrastive: bool = False) -> ModelOutput:
        """Classify images x [B, C, H, W] (or a PixelSource) from n_patches patches ("sample", "topk") or all ("exact")."""
        src = as_source(x, module_device(self))
        _check_mode(mode)
        checks = Checks()
        alpha = attention_distribution(self._logits(src, checks), "attention", checks)  # [B, K]
        probs = complement(alpha) if contrastive else alpha  # [B, K]
        B, K = probs.shape
        size, dev = src.size, src.device
        check_patch(self.patch_size, size)
        weights = None
        if mode == "exact":
            idx = torch.arange(K, device=dev).expand(B, K)  # [B, K]
            rows, cols = self.centers(idx, size)  # [B, K]
            agg = _weighted_features(self.features, src, rows, cols, probs, self.patch_size, self.chunk_size)  # [B, D]
            weights = probs
        else:
            n = self.n_patches
            if n > K and (mode == "topk" or not self.replace):
                raise ValueError(f"n_patches={n} exceeds the {K} locations of the view; lower it or raise scale")
            if mode == "topk":
                idx = probs.detach().topk(n, dim=1).indices  # [B, n]
            elif self.replace:
                idx = sample_with_replacement(probs, n, generator, check=False)  # [B, n]
            else:
                checks.add((probs.detach() > 0).sum(dim=1) >= n,
                           f"cannot draw {n} locations without replacement: some image has fewer of positive attention")
                idx = sample_without_replacement(probs, n, generator, check=False)  # [B, n]
            rows, cols = self.centers(idx, size)  # [B, n]
            if mode == "topk":
                w = probs.gather(1, idx)  # [B, n]
                weights = w / w.sum(dim=1, keepdim=True)
                agg = _weighted_features(self.features, src, rows, cols, weights, self.patch_size, self.chunk_size)
            else:
                feats = patch_features(self.features, src, rows, cols, self.patch_size, self.chunk_size)  # [B, n, D]
                agg = (expectation_with_replacement(probs, idx, feats, check=False) if self.replace
                       else expectation_without_replacement(probs, idx, feats, check=False))  # [B, D]
        checks.resolve()
        return ModelOutput(
            logits=self.g(agg), features=agg, alpha=alpha, locations=idx,
            centers=torch.stack((rows, cols), dim=-1), weights=weights, mode=mode, contrastive=contrastive,
        )


def check_patch(patch: tuple[int, int], size: tuple[int, int]) -> None:
    """ValueError unless a patch fits in the image."""
    if patch[0] > size[0] or patch[1] > size[1]:
        raise ValueError(f"patch size {patch} is larger than the image {size}")


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
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(None, features, n_classes, scale, patch_size, n_patches, replace, chunk_size)

    def _logits(self, src: PixelSource, checks: Checks) -> Tensor:
        """Constant logits [B, h*w] (no view is computed; the pixels are checked where that is cheap)."""
        h, w = src.view_size(self.scale)
        src.check_pixels(checks)
        return torch.zeros(src.batch_size, h * w, dtype=src.dtype, device=src.device)

    def forward(self, x: Source, mode: str = "sample", generator: Gen = None, contrastive: bool = False) -> ModelOutput:
        """Classify x [B, C, H, W] from n_patches uniformly drawn patches ("sample") or all of them ("exact")."""
        if mode == "topk":
            raise ValueError("UniformNet has no top-k: every location has the same weight (use mode='sample')")
        if contrastive:
            raise ValueError("UniformNet has no contrastive samples: the complement of uniform is uniform")
        return super().forward(x, mode, generator, contrastive)


class DeepMIL(nn.Module):
    """Attention-based deep MIL (Ilse, Tomczak & Welling 2018, eq. 8-9): every patch of a grid, attention from its features.

    The image is cut into a grid of `patch_size` patches, `stride` apart (non-overlapping by
    default; the last row and column are zero-padded beyond the border); each patch's feature
    vector h_k = f(patch_k) [D] gets the attention a_k = softmax_k(w^T tanh(V h_k)) (eq. 8; with
    `gated`, w^T (tanh(V h_k) * sigmoid(U h_k)), eq. 9), and the image is classified from
    z = sum_k a_k h_k. Unlike ATS, which computes its attention from a low-resolution view, every
    patch is featurised at full resolution, so time and memory grow with the image (ATS table 1:
    Deep MIL at scale 1). Only mode "exact" exists; features are computed `chunk_size` patches at a
    time but all K feature vectors are kept for the attention.
    """

    train_mode = "exact"
    eval_mode = "exact"
    supports_contrastive = False

    def __init__(
        self,
        features: nn.Module,
        n_classes: int,
        patch_size: int | tuple[int, int],
        *,
        stride: int | tuple[int, int] | None = None,
        hidden: int = 128,
        gated: bool = False,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__()
        check_positive_int(hidden, "hidden")
        check_positive_int(chunk_size, "chunk_size", optional=True)
        self.features = features
        self.g = _classifier(features, n_classes)
        d = features.out_features
        self.V = nn.Linear(d, hidden)
        self.U = nn.Linear(d, hidden) if gated else None
        self.w = nn.Linear(hidden, 1)
        self.patch_size = as_pair(patch_size, "patch_size")
        self.stride = self.patch_size if stride is None else as_pair(stride, "stride")
        self.chunk_size = chunk_size

    def grid_centers(self, size: tuple[int, int], device: torch.device | None = None) -> tuple[Tensor, Tensor]:
        """Centres (rows, cols) [K] of the patch grid of an image of `size`, row-major."""
        (H, W), (ph, pw), (sh, sw) = size, self.patch_size, self.stride
        r = torch.arange(0, max(H - ph, 0) + sh, sh, device=device)[: -(-max(H - ph, 0) // sh) + 1] + ph // 2
        c = torch.arange(0, max(W - pw, 0) + sw, sw, device=device)[: -(-max(W - pw, 0) // sw) + 1] + pw // 2
        return r.repeat_interleave(c.numel()), c.repeat(r.numel())

    def forward(self, x: Source, mode: str = "exact", generator: Gen = None, contrastive: bool = False) -> ModelOutput:
        """Classify x [B, C, H, W] from every patch of the grid, weighted by attention on its features."""
        if mode != "exact":
            raise ValueError(f"DeepMIL aggregates every patch: mode must be 'exact', got {mode!r}")
        if contrastive:
            raise ValueError("DeepMIL has no contrastive samples")
        src = as_source(x, module_device(self))
        check_patch(self.patch_size, src.size)
        checks = Checks()
        B = src.batch_size
        r, c = self.grid_centers(src.size, src.device)  # [K]
        rows, cols = r.expand(B, -1), c.expand(B, -1)  # [B, K]
        h = patch_features(self.features, src, rows, cols, self.patch_size, self.chunk_size)  # [B, K, D]
        hidden = torch.tanh(self.V(h))  # [B, K, hidden]
        if self.U is not None:
            hidden = hidden * torch.sigmoid(self.U(h))
        alpha = attention_distribution(self.w(hidden)[..., 0], "attention", checks)  # [B, K]
        z = (alpha.unsqueeze(-1) * h).sum(dim=1)  # [B, D]
        checks.resolve()
        return ModelOutput(logits=self.g(z), features=z, alpha=alpha, centers=torch.stack((rows, cols), dim=-1),
                           weights=alpha, mode="exact")


class ZoomInNet(nn.Module):
    """Zoom-In network (sec. 2.1, eq. 5, 6, 9): tiles from alpha on V(x, s1), sub-tiles from beta^c on V(x, s2, c).

    Stage one: a's score map on V(x, s1) is averaged over the non-overlapping full-resolution
    tiles of appendix F (`tile_pool`; partial edge tiles count) and softmaxed into alpha [B, T]
    (over the tiles the source allows: a slide's tissue); n_patches tiles are drawn with
    replacement. On a source that serves strips (`PixelSource.strip_pixels`, a slide), a reads
    V(x, s1) strip by strip with a halo of `receptive_halo` rows, so that only one strip exists
    at a time. Stage two: only for the U unique drawn (image, tile) pairs, the tile (zero beyond
    the image) is viewed at scale s2 and b gives beta^c over its u*v entries; each draw of a tile
    takes a distinct sub-tile (without replacement). Sub-tile (i', j') of tile c is the patch
    centred at top_left(c) + view_to_full((i', j'), (u, v), tile_size), read at full resolution.
    In a partial edge tile, the sub-tiles whose centre falls outside the image (pure zero
    padding) get no second-stage attention. Stage two runs `tile_chunk` tiles at a time and f
    `chunk_size` patches at a time (None: about CHUNK_PIXELS input pixels a chunk; 1 and 1 hold
    one tile's and one patch's activations at a time at inference).

    Top-k ("topk") is exact: it opens the tiles in decreasing alpha, min(N, T) per image first,
    then (for the images whose N-th best product alpha_c beta^c_c' is still below the alpha of
    the next unopened tile, the only way an unopened tile could hold a better one) twice as many
    at each round, all images of a round in one batched second stage.
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
        chunk_size: int | None = None,
        tile_chunk: int | None = None,
    ) -> None:
        super().__init__()
        check_scale(scale1, "scale1")
        check_scale(scale2, "scale2")
        check_positive_int(n_patches, "n_patches")
        check_positive_int(chunk_size, "chunk_size", optional=True)
        check_positive_int(tile_chunk, "tile_chunk", optional=True)
        self.attention_a = attention_a
        self.attention_b = attention_b
        self.features = features
        self.g = _classifier(features, n_classes)
        self.scale1 = scale1
        self.scale2 = scale2
        self.tile_size = as_pair(tile_size, "tile_size")
        self.subview_size = view_size(self.tile_size, scale2)  # (u, v)
        self.patch_size = as_pair(patch_size, "patch_size")
        self.n_patches = n_patches
        self.chunk_size = chunk_size
        self.tile_chunk = tile_chunk

    # ---------------------------------------------------------------- geometry
    def centers(self, tiles: Tensor, subtiles: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Full-resolution centres (rows, cols) of sub-tiles `subtiles` of tiles `tiles` (same shapes) in an image of `size`."""
        u, v = self.subview_size
        top, left = tile_top_left(tiles, size, self.tile_size, check=False)
        dr, dc = view_to_full(subtiles // v, subtiles % v, (u, v), self.tile_size, check=False)
        return top + dr, left + dc

    def subtile_inside(self, tiles: Tensor, size: tuple[int, int]) -> Tensor:
        """[U, K2] mask: True where the sub-tile's centre lies inside the image (False only in partial edge tiles)."""
        u, v = self.subview_size
        top, left = tile_top_left(tiles.reshape(-1), size, self.tile_size, check=False)  # [U]
        dev = tiles.device
        dr, _ = view_to_full(torch.arange(u, device=dev), torch.zeros(u, dtype=torch.long, device=dev), (u, v),
                             self.tile_size, check=False)  # [u]
        _, dc = view_to_full(torch.zeros(v, dtype=torch.long, device=dev), torch.arange(v, device=dev), (u, v),
                             self.tile_size, check=False)  # [v]
        rows_in = (top[:, None] + dr[None]) < size[0]  # [U, u]
        cols_in = (left[:, None] + dc[None]) < size[1]  # [U, v]
        return (rows_in[:, :, None] & cols_in[:, None, :]).reshape(-1, u * v)  # [U, K2]

    # ---------------------------------------------------------------- first stage
    def tile_scores(self, x: Tensor | PixelSource) -> Tensor:
        """a's scores averaged over each tile (appendix F): [B, T]; strip by strip on a source that serves strips.

        Strip by strip, a runs only where it matters: strips whose rows of tiles hold no allowed tile
        (a slide's glass) are not read, and within a strip a runs on the columns of its allowed tiles
        (plus the halo its receptive field needs). The allowed tiles' scores are those of the whole
        view exactly; the others are computed partly or not at all (0), and alpha gives them no mass.
        """
        src = as_source(x, module_device(self))
        size, th_tw = src.size, self.tile_size
        if src.strip_pixels is None:
            s = score_map(self.attention_a, src.view(self.scale1), "attention_a")  # [B, 1, h1, w1]
            return tile_pool(s[:, 0], size, th_tw).flatten(1)  # [B, T]
        (H, W), (th, tw) = size, th_tw
        h, w = src.view_size(self.scale1)
        halo = receptive_halo(self.attention_a)
        n_rows, n_cols = tile_grid(size, th_tw)
        allowed = src.allowed_tiles_host(th_tw)  # bool [B, n_rows, n_cols] on the host, or None
        rows_per = max(1, src.strip_pixels // w - 2 * halo)
        plan = []  # (output rows o0..o1, read rows a0..a1, output columns v0..v1)
        for o0 in range(0, h, rows_per):
            o1 = min(h, o0 + rows_per)
            v0, v1 = 0, w
            if allowed is not None:
                r_lo, r_hi = (o0 * H // h) // th, min(n_rows - 1, (-(-o1 * H // h) - 1) // th)
                cols = allowed[:, r_lo : r_hi + 1].any(dim=0).any(dim=0).nonzero().flatten()  # allowed tile columns
                if cols.numel() == 0:
                    continue  # no allowed tile in these rows: nothing to read
                v0 = int(cols.min()) * tw * w // W
                v1 = min(w, -(-(int(cols.max()) + 1) * tw * w // W))
            plan.append(((o0, o1), (max(0, o0 - halo), min(h, o1 + halo)), (v0, v1)))
        pooled = torch.zeros(src.batch_size, n_rows, n_cols, dtype=src.dtype, device=src.device)
        for ((o0, o1), (a0, _), (v0, v1)), strip in zip(plan, src.view_strips(self.scale1, [p[1] for p in plan])):
            c0, c1 = max(0, v0 - halo), min(w, v1 + halo)
            s = score_map(self.attention_a, strip[..., c0:c1], "attention_a")  # [B, 1, a1 - a0, c1 - c0]
            pooled = pooled + tile_pool_strip(s[:, 0, o0 - a0 : o1 - a0, v0 - c0 : v1 - c0], size, th_tw, (h, w), o0, v0)
        return pooled.reshape(src.batch_size, n_rows * n_cols)  # [B, T]

    def _first_stage(self, src: PixelSource, checks: Checks) -> Tensor:
        """alpha [B, T] over the tiles the source allows."""
        return attention_distribution(self.tile_scores(src), "first-stage attention", checks, src.allowed_tiles(self.tile_size))

    def first_stage(self, x: Tensor | PixelSource) -> Tensor:
        """alpha [B, T]: a's scores on V(x, s1), averaged over the tile grid, softmaxed (over the allowed tiles)."""
        checks = Checks()
        alpha = self._first_stage(as_source(x, module_device(self)), checks)
        checks.resolve()
        return alpha

    # ---------------------------------------------------------------- second stage
    def _second_stage(
        self, src: PixelSource, batch: Tensor, tile: Tensor, contrastive: bool, checks: Checks
    ) -> tuple[Tensor, Tensor]:
        """(beta [U, K2] of the (image, tile) pairs, the distribution to draw from: beta or its complement)."""
        u, v = self.subview_size
        chunk = per_chunk(self.tile_chunk, u * v)
        parts = [score_map(self.attention_b, tv, "attention_b").flatten(1)  # [c, K2]
                 for tv in src.tile_view_chunks(batch, tile, self.tile_size, self.scale2, chunk)]
        scores = torch.cat(parts) if parts else torch.zeros(0, u * v, dtype=src.dtype, device=src.device)  # [U, K2]
        inside = self.subtile_inside(tile, src.size)  # [U, K2]
        betas = attention_distribution(scores, "second-stage attention", checks, inside)
        return betas, (complement(betas, inside) if contrastive else betas)

    def second_stage(self, x: Tensor | PixelSource, batch: Tensor, tile: Tensor) -> Tensor:
        """beta [U, K2]: b's scores on the views V(x, s2, c) of the given (image, tile) pairs, softmaxed over each tile's inside."""
        checks = Checks()
        src = as_source(x, module_device(self))
        betas, _ = self._second_stage(src, batch.to(src.device), tile.to(src.device), False, checks)
        checks.resolve()
        return betas

    # ---------------------------------------------------------------- top-k
    def _top_joint(self, src: PixelSource, p1: Tensor, contrastive: bool, checks: Checks):
        """The n_patches largest p1_c p2^c_c' of each image, exactly; see the class docstring.

        Each round's tiles are opened `tile_chunk` at a time (a block of columns of the round for
        every image still searching, or a block of images when there are more of them than that),
        and each block's products are merged into the running best N at once: memory stays that
        of one chunk whatever the number of tiles opened. Returns tiles, subtiles, joint weights
        [B, N], and the betas computed (None without gradients) with the image and tile of every
        tile opened.
        """
        B, T = p1.shape
        n = self.n_patches
        u, v = self.subview_size
        K2 = u * v
        dev = p1.device
        chunk = per_chunk(self.tile_chunk, K2)
        allowed = src.allowed_tiles_host(self.tile_size)  # tiles outside it have p1 = 0 and sort last: never opened
        if allowed is not None:
            T = max(1, int(allowed.flatten(1).sum(dim=1).max()))
        if T * K2 < n:
            raise ValueError(f"n_patches={n} exceeds the {T} x {K2} sub-tiles of the (allowed) tiles; lower it")
        order = p1.detach().argsort(dim=1, descending=True)  # [B, T]
        sorted_p1 = p1.detach().gather(1, order)  # [B, T]
        keep = torch.is_grad_enabled()
        # the best n so far, best first; -1 marks "none yet" (every product is >= 0)
        best_w = torch.full((B, n), -1.0, dtype=p1.dtype, device=dev)
        best_t = torch.zeros(B, n, dtype=torch.long, device=dev)
        best_s = torch.zeros(B, n, dtype=torch.long, device=dev)
        opened_b, opened_t, kept = [], [], []
        imgs = torch.arange(B, device=dev)  # [A] images still searching (all of them at first)
        start, step = 0, min(n, T)
        while True:
            stop = min(T, start + step)
            A = imgs.numel()
            cols = max(1, chunk // A)  # tiles of each image per block
            per = min(A, chunk)  # images per block: a block holds at most `chunk` tiles
            for j0 in range(start, stop, cols):
                j1 = min(stop, j0 + cols)
                for i0 in range(0, A, per):
                    I = imgs[i0 : i0 + per]  # [a]
                    a, c = I.numel(), j1 - j0
                    tiles = order[I, j0:j1]  # [a, c]
                    flat_b, flat_t = I.repeat_interleave(c), tiles.flatten()
                    betas, p2 = self._second_stage(src, flat_b, flat_t, contrastive, checks)  # [a*c, K2]
                    opened_b.append(flat_b)
                    opened_t.append(flat_t)
                    if keep:
                        kept.append(betas)
                    joint = (p1[I].gather(1, tiles).unsqueeze(-1) * p2.view(a, c, K2)).flatten(1)  # [a, c*K2]
                    cand_w = torch.cat([best_w[I], joint], dim=1)
                    cand_t = torch.cat([best_t[I], tiles.repeat_interleave(K2, dim=1)], dim=1)
                    cand_s = torch.cat([best_s[I], torch.arange(K2, device=dev).repeat(c).expand(a, -1)], dim=1)
                    top = cand_w.detach().topk(n, dim=1).indices  # [a, n], best first
                    best_w = best_w.index_copy(0, I, cand_w.gather(1, top))
                    best_t = best_t.index_copy(0, I, cand_t.gather(1, top))
                    best_s = best_s.index_copy(0, I, cand_s.gather(1, top))
            if stop >= T:
                break
            # an unopened tile c can beat the n-th best only if its alpha is larger (alpha_c beta <= alpha_c)
            open_more = best_w[imgs, -1].detach() < sorted_p1[imgs, stop]  # [A]
            with host_sync("top-k search: images whose next tile may hold a better product"):
                imgs = imgs[open_more]
            if imgs.numel() == 0:
                break
            start, step = stop, 2 * step
        betas_out = torch.cat(kept) if keep else None
        return best_t, best_s, best_w, betas_out, torch.cat(opened_b), torch.cat(opened_t)

    # ---------------------------------------------------------------- forward
    def forward(self, x: Source, mode: str = "sample", generator: Gen = None, contrastive: bool = False) -> ModelOutput:
        """Classify images x [B, C, H, W] (or a PixelSource) by two-stage sampling ("sample"), top-k ("topk") or eq. 5 ("exact")."""
        src = as_source(x, module_device(self))
        _check_mode(mode)
        check_patch(self.patch_size, src.size)
        checks = Checks()
        B, size, dev = src.batch_size, src.size, src.device
        T = src.tile_count(self.tile_size)
        K2 = self.subview_size[0] * self.subview_size[1]
        allowed = src.allowed_tiles(self.tile_size)
        alpha = attention_distribution(self.tile_scores(src), "first-stage attention", checks, allowed)  # [B, T]
        p1 = complement(alpha, allowed) if contrastive else alpha
        weights = None
        if mode == "sample":
            N = self.n_patches
            tiles = sample_with_replacement(p1, N, generator, check=False)  # [B, N]
            draws = unique_draws(tiles, T, check=False)  # one synchronisation: N'
            beta_batch, beta_tile = draws.batch, draws.tile  # [U], [U]
            betas, p2 = self._second_stage(src, beta_batch, beta_tile, contrastive, checks)  # [U, K2]
            subtiles = sample_subtiles(p2, draws, generator, max_count=min(N, K2), check=False)  # [B, N]
            checks.add(subtile_support_ok(p2, draws),
                       f"a tile was drawn more often than it has sub-tiles of positive attention (N = {N}, "
                       f"{K2} sub-tiles a tile); lower N or use larger tiles")
            rows, cols = self.centers(tiles, subtiles, size)  # [B, N]
            feats = patch_features(self.features, src, rows, cols, self.patch_size, self.chunk_size)  # [B, N, D]
            agg = expectation_two_stage(p1, tiles, p2[draws.inverse, subtiles], feats, check=False)  # [B, D]
        else:
            if mode == "exact":
                beta_tile = torch.arange(T, device=dev).repeat(B)  # [B*T]
                beta_batch = torch.arange(B, device=dev).repeat_interleave(T)  # [B*T]
                betas, p2 = self._second_stage(src, beta_batch, beta_tile, contrastive, checks)  # [B*T, K2]
                weights = (p1.unsqueeze(-1) * p2.view(B, T, K2)).flatten(1)  # [B, T*K2]
                sel = torch.arange(T * K2, device=dev).expand(B, -1)
                tiles, subtiles = sel // K2, sel % K2  # [B, T*K2]
            else:
                tiles, subtiles, joint, betas, beta_batch, beta_tile = self._top_joint(src, p1, contrastive, checks)
                weights = joint / joint.sum(dim=1, keepdim=True)  # [B, N]
            rows, cols = self.centers(tiles, subtiles, size)  # [B, N]
            agg = _weighted_features(self.features, src, rows, cols, weights, self.patch_size, self.chunk_size)  # [B, D]
        checks.resolve()
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
        check_scale(scale, "scale")
        self.backbone = backbone
        self.scale = scale
        self.size = None if size is None else as_pair(size, "size")  # resize every image to this size instead

    def forward(self, x: Source, mode: str = "sample", generator: Gen = None, contrastive: bool = False) -> ModelOutput:
        """Logits [B, n_classes] of backbone(V(x, s)); every mode is the same deterministic pass."""
        _check_mode(mode)
        if contrastive:
            raise ValueError("CNNBaseline has no attention to draw contrastive samples from")
        if self.size is not None:
            if not isinstance(x, Tensor):
                raise ValueError("CNNBaseline(size=...) resizes whole images: x must be a [B, C, H, W] tensor")
            v = F.interpolate(TensorSource(x).x, size=self.size, mode="bilinear", align_corners=False, antialias=True)
        else:
            v = as_source(x, module_device(self)).view(self.scale)
        return ModelOutput(logits=self.backbone(v), mode=mode)
