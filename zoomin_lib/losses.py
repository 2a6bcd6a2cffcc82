"""Training losses of the Zoom-In network (Kong & Henao).

- `weighted_cross_entropy`: the image-level term L_ce of eq. (12), with optional class weights.
- `contrastive_loss`: L_con of sec. 2.2, sum_n -log(1 - Psi(x_n | y_n = 1)), generalised to
  C classes with a reference class.
- `entropy_regularizer`: L_er(p) = -lam H(p) = lam sum_i p_i log p_i (appendix K, eq. 12).
- `zoomin_objective`: the complete objective, eq. (12).
- `attention_mse` and `mask_to_view`: the pixel-level supervision of appendix L, eq. (13);
  `attention_nll` its cross-entropy variant against the normalised mask.
- `diversity_loss` and `semantic_loss`: the two regularisers of IPS's multi-head pooling that the
  IPS thesis (file 003, sec. 3.3, eq. 10 and 13) takes from Zhang et al. 2024: the mean pairwise
  cosine similarity of the heads' attention maps, and each head's own cross-entropy.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from zoomin_lib.geometry import as_pair

__all__ = [
    "weighted_cross_entropy",
    "contrastive_loss",
    "entropy_regularizer",
    "zoomin_objective",
    "attention_mse",
    "attention_nll",
    "mask_to_view",
    "diversity_loss",
    "semantic_loss",
]


def _check_finite(name: str, x: torch.Tensor) -> None:
    """Raise a ValueError if `x` holds NaN or infinity."""
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or infinite values")


def _check_logits_target(name: str, logits: torch.Tensor, target: torch.Tensor) -> None:
    """Check that `logits` is [B, C] (C >= 2), `target` is [B] of class indices in range."""
    if logits.dim() != 2 or logits.shape[1] < 2:
        raise ValueError(f"{name} must be [B, C] with C >= 2, got shape {tuple(logits.shape)}")
    if target.dim() != 1 or target.shape[0] != logits.shape[0]:
        raise ValueError(
            f"target must be [B] with B = {logits.shape[0]}, got shape {tuple(target.shape)}"
        )
    if target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer class indices, got dtype {target.dtype}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= logits.shape[1]):
        raise ValueError(f"target holds class indices outside [0, {logits.shape[1] - 1}]")
    _check_finite(name, logits)


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: Sequence[float] | torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy L_ce of eq. (12); with weights, the weighted mean sum w_y l / sum w_y."""
    _check_logits_target("logits", logits, target)  # [B, C], [B]
    weight = None
    if class_weights is not None:
        weight = torch.as_tensor(class_weights, dtype=logits.dtype, device=logits.device)
        if weight.shape != (logits.shape[1],):
            raise ValueError(
                f"class_weights must have one entry per class ({logits.shape[1]}), "
                f"got shape {tuple(weight.shape)}"
            )
        if bool((weight < 0).any()) or not bool(torch.isfinite(weight).all()):
            raise ValueError("class_weights must be finite and non-negative")
    return F.cross_entropy(logits, target, weight=weight)


def contrastive_loss(
    contrastive_logits: torch.Tensor,
    target: torch.Tensor,
    reference_class: int = 0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Contrastive loss of sec. 2.2: push low-attention predictions of non-reference images to the reference class.

    `contrastive_logits` [B, C] are the model's predictions made from the *low*-attention
    tiles/sub-tiles (sampled via 1 - a and 1 - b) of each image. For every image whose label
    is not `reference_class`, the loss is -log p(reference_class | contrastive sample);
    images of the reference class contribute nothing.

    Binary case (C = 2, reference 0): p(0 | .) = 1 - Psi, so with reduction="sum" this is
    exactly the paper's sum_n -log(1 - Psi(x_n | y_n = 1)). The multi-class generalisation
    (one reference class, e.g. "normal") is the first of the two the paper suggests.

    reduction: "mean" (over the contrastive images), "sum" (the paper's form) or "none"
    ([P] per contrastive image). With no contrastive image the result is a zero that keeps the
    autograd graph (so `.backward()` still works).
    """
    _check_logits_target("contrastive_logits", contrastive_logits, target)  # [B, C], [B]
    n_classes = contrastive_logits.shape[1]
    if not 0 <= reference_class < n_classes:
        raise ValueError(f"reference_class must be in [0, {n_classes - 1}], got {reference_class}")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    chosen = target != reference_class  # [B]
    log_p_ref = F.log_softmax(contrastive_logits, dim=1)[:, reference_class]  # [B]
    per_image = -log_p_ref[chosen]  # [P]
    if reduction == "none":
        return per_image
    if per_image.numel() == 0:
        return contrastive_logits.sum() * 0.0  # a zero still attached to the graph
    return per_image.mean() if reduction == "mean" else per_image.sum()


def entropy_regularizer(probs: torch.Tensor, lam: float) -> torch.Tensor:
    """L_er(p) = lam * sum_i p_i log p_i (eq. 12), summed over leading dims; 0 log 0 = 0."""
    if probs.dim() < 1 or probs.shape[-1] < 1:
        raise ValueError(f"probs must be [..., K] with K >= 1, got shape {tuple(probs.shape)}")
    _check_finite("probs", probs)
    if bool((probs < 0).any()):
        raise ValueError("probs must be non-negative")
    tiny = torch.finfo(probs.dtype).tiny if probs.is_floating_point() else 1e-38
    # p log p with the log argument clamped: value 0 at p = 0 and a finite gradient there.
    p_log_p = probs * torch.log(probs.clamp_min(tiny))  # [..., K]
    return lam * p_log_p.sum()


def zoomin_objective(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: torch.Tensor,
    betas: torch.Tensor | None = None,
    *,
    contrastive_logits: torch.Tensor | None = None,
    use_contrastive: bool = False,
    lam: float = 1e-5,  # Zoom-In sec. 4 (ATS used 0.01)
    lam_beta: float | None = None,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    reference_class: int = 0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The complete Zoom-In objective, eq. (12), averaged over the batch; returns (total, components).

    total = L_ce + [use_contrastive] L_con + (1/B) sum_b L_er(alpha_b) + (1/B) sum_{c in Q} L_er(beta^c)

    - logits [B, C], target [B]: the image-level prediction and labels.
    - alpha [B, T]: first-stage attention over the tiles of each image.
    - betas [U, K2] (or any [..., K2]): second-stage attention of the U unique sampled tiles of
      the whole batch (the set Q of each image, concatenated); None for a one-stage model.
    - contrastive_logits [B, C]: predictions from low-attention samples; used only when
      `use_contrastive` (the caller switches it on after its warm-up epochs).
    - lam: lambda of L_er for alpha; lam_beta (default lam) for the betas.

    L_ce is the (weighted) batch mean. The other terms are sums over images divided by B, so
    the total is the batch mean of the per-image objective (12); in particular L_con is the
    paper's sum_n -log(1 - Psi) over the batch's non-reference images, divided by B.
    """
    batch = logits.shape[0] if logits.dim() >= 1 else 0
    if alpha.dim() != 2 or alpha.shape[0] != batch:
        raise ValueError(f"alpha must be [B, T] with B = {batch}, got shape {tuple(alpha.shape)}")
    ce = weighted_cross_entropy(logits, target, class_weights)
    zero = logits.sum() * 0.0
    if use_contrastive:
        if contrastive_logits is None:
            raise ValueError("use_contrastive=True needs contrastive_logits")
        if contrastive_logits.shape != logits.shape:
            raise ValueError(
                f"contrastive_logits must have the shape of logits {tuple(logits.shape)}, "
                f"got {tuple(contrastive_logits.shape)}"
            )
        con = contrastive_loss(contrastive_logits, target, reference_class, reduction="sum")
        con = con / batch
    else:
        con = zero
    er_alpha = entropy_regularizer(alpha, lam) / batch
    if betas is not None:
        lam_b = lam if lam_beta is None else lam_beta
        er_beta = entropy_regularizer(betas, lam_b) / batch
    else:
        er_beta = zero
    total = ce + con + er_alpha + er_beta
    parts = {
        "total": float(total.detach()),
        "ce": float(ce.detach()),
        "contrastive": float(con.detach()),
        "entropy_alpha": float(er_alpha.detach()),
        "entropy_beta": float(er_beta.detach()),
    }
    return total, parts


def attention_mse(
    attention: torch.Tensor, mask: torch.Tensor, normalize_mask: bool = False
) -> torch.Tensor:
    """Pixel-level attention loss of eq. (13): sum over locations of (M - attention)^2, mean over the batch.

    attention [B, K] (or [B, h, w], flattened) is alpha or beta^c; mask [B, K] is M(V(x, s), c)
    on the same locations (see `mask_to_view`).

    Note: alpha sums to 1 over the K locations while the printed M is binary, so with the
    literal eq. (13) (normalize_mask=False) a perfect attention cannot reach zero loss when
    the ROI covers more than one location. normalize_mask=True compares against
    M / sum(M), a distribution (our suggested variant); rows of M that are all zero stay zero.
    """
    if attention.dim() < 2:
        raise ValueError(f"attention must be [B, K], got shape {tuple(attention.shape)}")
    if mask.shape != attention.shape:
        raise ValueError(
            f"mask must have the shape of attention {tuple(attention.shape)}, got {tuple(mask.shape)}"
        )
    _check_finite("attention", attention)
    m = mask.to(attention.dtype).flatten(1)  # [B, K]
    _check_finite("mask", m)
    a = attention.flatten(1)  # [B, K]
    if normalize_mask:
        total = m.sum(dim=1, keepdim=True)  # [B, 1]
        m = torch.where(total > 0, m / total.clamp_min(torch.finfo(m.dtype).tiny), m)
    return ((m - a) ** 2).sum(dim=1).mean()


def attention_nll(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over rows with ROI of -sum_k (t_k / sum t) log p_k; zero when no row has ROI (probs, target [R, K]).

    The cross-entropy variant of eq. (13) that `box_supervision` uses: its gradient w.r.t. the logits,
    p - t / sum t, does not vanish where a near-uniform softmax gives the MSE almost none.
    """
    if probs.shape != target.shape:
        raise ValueError(f"probs {tuple(probs.shape)} and target {tuple(target.shape)} must have one shape")
    total = target.sum(dim=1)  # [R]
    has = total > 0
    if not bool(has.any()):
        return probs.new_zeros(())
    t = target[has] / total[has, None]  # [R', K]
    return -(t * probs[has].clamp_min(1e-30).log()).sum(dim=1).mean()


def mask_to_view(
    mask: torch.Tensor,
    *,
    view_size: int | Sequence[int] | None = None,
    tile_size: int | Sequence[int] | None = None,
    rule: str = "any",
) -> torch.Tensor:
    """M(V(x, s), c) of eq. (13): the ROI mask [B, H, W] reduced to view locations or tiles -> [B, h, w].

    Give exactly one of
    - tile_size (th, tw): non-overlapping tiles T_s1(x, c), the first-stage grid; the image
      is zero-padded (background) at the bottom/right to a multiple of the tile size, so the
      grid is ceil(H / th) x ceil(W / tw);
    - view_size (h, w): the locations of a downsampled view V(x, s); each location covers
      the image rows floor(i H / h) .. ceil((i + 1) H / h) (and likewise for columns).

    rule="any" labels a location 1 if any ROI pixel falls in it (appendix L's patch labelling);
    rule="fraction" returns the fraction of its pixels that are ROI, counting only the pixels
    inside the image (a partial edge tile is divided by its area inside the image, as
    geometry.tile_pool averages only over that part).
    """
    if (view_size is None) == (tile_size is None):
        raise ValueError("give exactly one of view_size and tile_size")
    if rule not in ("any", "fraction"):
        raise ValueError(f"rule must be 'any' or 'fraction', got {rule!r}")
    if mask.dim() != 3:
        raise ValueError(f"mask must be [B, H, W], got shape {tuple(mask.shape)}")
    m = mask.to(torch.float32) if not mask.is_floating_point() else mask
    _check_finite("mask", m)
    if not bool(((m == 0) | (m == 1)).all()):
        raise ValueError("mask must be binary (0/1 or bool)")
    m = m.unsqueeze(1)  # [B, 1, H, W]
    pool_max = rule == "any"
    if tile_size is not None:
        th, tw = as_pair(tile_size, "tile_size")
        height, width = m.shape[-2:]
        pad_h, pad_w = (-height) % th, (-width) % tw
        if pad_h or pad_w:
            m = F.pad(m, (0, pad_w, 0, pad_h))  # [B, 1, H', W'] background padding
        if pool_max:
            pooled = F.max_pool2d(m, (th, tw))  # [B, 1, R, C]
        else:
            roi = F.avg_pool2d(m, (th, tw), divisor_override=1)  # [B, 1, R, C]: ROI pixels per tile
            n_rows, n_cols = roi.shape[-2:]
            rows = (height - th * torch.arange(n_rows, device=m.device)).clamp(max=th)  # [R] rows inside
            cols = (width - tw * torch.arange(n_cols, device=m.device)).clamp(max=tw)  # [C] cols inside
            pooled = roi / (rows[:, None] * cols[None, :]).to(m.dtype)  # [B, 1, R, C]
    else:
        size = as_pair(view_size, "view_size")  # type: ignore[arg-type]
        pooled = F.adaptive_max_pool2d(m, size) if pool_max else F.adaptive_avg_pool2d(m, size)
    return pooled.squeeze(1)  # [B, h, w]


def diversity_loss(attention: torch.Tensor) -> torch.Tensor:
    """L_d of the IPS thesis's eq. 10: 2 / (H (H - 1)) sum_{i<j} cos(a_i, a_j) over the H heads' attention maps.

    `attention` is [B, H, T, M] (heads, task queries, instances); the cosine is taken over the M
    instances, for each image and query, and averaged over both. With one head there is no pair: 0.
    """
    if not isinstance(attention, torch.Tensor) or attention.dim() != 4:
        raise ValueError(f"attention must be [B, H, T, M], got {getattr(attention, 'shape', type(attention))}")
    H = attention.shape[1]
    if H < 2:
        return attention.new_zeros(())
    unit = F.normalize(attention, dim=-1)  # [B, H, T, M]
    cos = torch.einsum("bitm,bjtm->btij", unit, unit)  # [B, T, H, H]
    pairs = torch.triu_indices(H, H, offset=1, device=attention.device)  # [2, H(H-1)/2]
    return cos[..., pairs[0], pairs[1]].mean()  # mean over images, queries and the H(H-1)/2 pairs


def semantic_loss(
    head_logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: Sequence[float] | torch.Tensor | None = None,
    per_head: bool = False,
) -> torch.Tensor:
    """L_p of the IPS thesis's eq. 13: the mean over heads of each head's own cross-entropy.

    `head_logits` [B, H, C] are the predictions of the heads' MLPs (eq. 12); `per_head` returns the
    H cross-entropies [H] instead of their mean.
    """
    if not isinstance(head_logits, torch.Tensor) or head_logits.dim() != 3:
        raise ValueError(f"head_logits must be [B, H, C], got {getattr(head_logits, 'shape', type(head_logits))}")
    losses = torch.stack([weighted_cross_entropy(head_logits[:, h], target, class_weights)
                          for h in range(head_logits.shape[1])])  # [H]
    return losses if per_head else losses.mean()
