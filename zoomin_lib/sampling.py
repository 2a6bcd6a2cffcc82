"""Draws from an attention distribution and the unbiased estimators of `sum_i a_i f_i`.

With replacement (ATS eq. 4, gradient eq. 11-12): for draws q_1..q_n iid from `a`,

    value     (1/n) sum_k f_{q_k}
    surrogate (1/n) sum_k [a_{q_k} / sg(a_{q_k})] f_{q_k}

where `sg` stops the gradient. The surrogate has the value of the estimator and, by
autograd, the gradient (1/n) sum_k d[a_{q_k} f_{q_k}] / a_{q_k} of ATS eq. 12.

Without replacement (ATS eq. 14-17, Zoom-In eq. 9): draws i_1..i_n in sequence, each from
`a` renormalised over what is left (Gumbel-top-k, Kool et al. 2019). With the *exclusive*
sums S_{k-1} = sum_{j<k} a_{i_j}, each term

    Y_k = sum_{j<k} a_{i_j} f_{i_j} + (1 - S_{k-1}) f_{i_k}

has E[Y_k | i_1..i_{k-1}] = sum_i a_i f_i exactly, so the average (1/n) sum_k Y_k (Zoom-In eq. 9)
and the last term Y_n alone (ATS eq. 14-15 as printed) are both unbiased. The average has the
lower variance for few draws; Y_n has zero variance at n = K.
For the gradient, the second part is written as a_{i_k} f_{i_k} * sg((1 - S_{k-1}) / a_{i_k}):
the same value, and its gradient is the score-function (likelihood-ratio) gradient of the draw
of i_k given the earlier draws, conditioned on those draws. Because E[Y_k | earlier draws] does
not depend on the earlier draws, this conditional gradient is unbiased for d/dtheta sum_i a_i f_i,
with respect to the attention and the features alike. No hand-written backward pass is needed.

Draws with replacement use the inverse of the cumulative distribution (a uniform number per
draw, `torch.searchsorted` in the float64 cumulative sums): one batched operation with no host
synchronisation, on the CPU and a GPU alike (`torch.multinomial` synchronises on a GPU for one draw
or without replacement). `check=False` skips the argument checks, which read tensor values (a
synchronisation on a GPU); the models check their own inputs once per forward (`zoomin_lib.syncs`).

Generators: the random numbers are drawn on the generator's device. A generator on another
device than `probs` (a CPU generator with CUDA probabilities, or the reverse) is accepted:
the draw runs on the generator's device (the detached probabilities, or the uniform noise,
cross over) and the indices are returned on `probs.device`. The draws are then those of the
generator's device, so the same seed gives the same indices wherever `probs` lives.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "validate_probs",
    "sample_with_replacement",
    "sample_without_replacement",
    "gumbel_top_k",
    "expectation_with_replacement",
    "expectation_without_replacement",
    "sequential_terms",
]


def _sum_tolerance(dtype: torch.dtype) -> float:
    """How far a row of probabilities may sum from 1 in this dtype."""
    return 1e-8 if dtype == torch.float64 else 1e-3


def validate_probs(probs: Tensor, name: str = "probs") -> None:
    """Raise ValueError unless `probs` is a [B, K] float tensor of finite, non-negative rows summing to 1."""
    if not isinstance(probs, Tensor) or not probs.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor, got {type(probs).__name__}")
    if probs.dim() != 2 or probs.shape[1] == 0:
        raise ValueError(f"{name} must have shape [B, K] with K >= 1, got {tuple(probs.shape)}")
    p = probs.detach()
    tol = _sum_tolerance(p.dtype)
    finite = torch.isfinite(p)  # [B, K]
    ok = finite.all() & (p >= 0).all() & ((p.sum(dim=1) - 1).abs() <= tol).all()
    if bool(ok):  # one host sync on the common path
        return
    if not finite.all():
        bad = (~finite).any(dim=1).nonzero().flatten().tolist()
        raise ValueError(f"{name} contains NaN or inf (rows {bad[:10]})")
    if (p < 0).any():
        raise ValueError(f"{name} contains negative entries (min {p.min().item():.3g})")
    err = (p.sum(dim=1) - 1).abs()
    row = int(err.argmax())
    total = p[row].sum().item()
    raise ValueError(  # enough digits to see the difference: 1 - 1e-7 is not "1"
        f"{name} rows must sum to 1: row {row} sums to {total:.12g}, off by {total - 1:+.3g} "
        f"(tolerance {tol:g} for {p.dtype})"
    )


def _check_n(n: int) -> None:
    """Raise unless n is a positive int."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"the number of draws must be a positive int, got {n!r}")


def _draw_device(device: torch.device, generator: torch.Generator | None) -> torch.device:
    """The device to draw random numbers on: the generator's when it has one, else `device`."""
    if generator is None:
        return device
    gen_device = generator.device
    same_index = gen_device.index is None or device.index is None or gen_device.index == device.index
    return device if gen_device.type == device.type and same_index else gen_device


def sample_with_replacement(
    probs: Tensor, n: int, generator: torch.Generator | None = None, *, check: bool = True
) -> Tensor:
    """Draw n iid indices per row of `probs` [B, K] on the generator's device; LongTensor [B, n] on probs.device.

    Inverse-CDF sampling: index i is drawn when u * total falls in [cdf_{i-1}, cdf_i), so an entry
    of probability 0 is never drawn (a draw rounded past the end goes to the last positive entry).
    """
    if check:
        validate_probs(probs)
    _check_n(n)
    p = probs.detach()  # [B, K]
    draw_on = _draw_device(p.device, generator)
    q = p.to(draw_on, torch.float64)  # [B, K]
    cdf = q.cumsum(dim=1)  # [B, K]
    u = torch.rand(q.shape[0], n, generator=generator, dtype=torch.float64, device=draw_on)  # [B, n]
    idx = torch.searchsorted(cdf, u * cdf[:, -1:], right=True)  # [B, n]: first i with cdf_i > u * total
    last = q.shape[1] - 1 - (q > 0).flip(1).to(torch.uint8).argmax(dim=1, keepdim=True)  # [B, 1] last positive entry
    return torch.minimum(idx, last).to(p.device)


def gumbel_top_k(probs: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Indices of the n largest log p + Gumbel noise per row, in draw order; no support check.

    The uniform noise is drawn on the generator's device and moved to probs.device.
    """
    p = probs.detach()  # [B, K]
    tiny = torch.finfo(p.dtype).tiny
    u = torch.rand(p.shape, generator=generator, dtype=p.dtype, device=_draw_device(p.device, generator))
    u = u.to(p.device)  # [B, K]
    gumbel = -torch.log(-torch.log(u.clamp(min=tiny, max=1 - torch.finfo(p.dtype).eps)))
    keys = torch.log(p) + gumbel  # [B, K]; log 0 = -inf is never drawn while support lasts
    return keys.topk(n, dim=1, sorted=True).indices  # [B, n]


def sample_without_replacement(
    probs: Tensor, n: int, generator: torch.Generator | None = None, *, check: bool = True
) -> Tensor:
    """Draw n distinct indices per row of `probs` [B, K] in sequence (Gumbel-top-k); LongTensor [B, n]."""
    _check_n(n)
    if check:
        validate_probs(probs)
        support = (probs.detach() > 0).sum(dim=1)  # [B]
        if (support < n).any():
            row = int(support.argmin())
            raise ValueError(
                f"cannot draw {n} items without replacement: row {row} has only "
                f"{int(support[row])} items with positive probability"
            )
    return gumbel_top_k(probs, n, generator)


def _gather_checked(probs: Tensor, idx: Tensor, feats: Tensor, check: bool = True) -> Tensor:
    """Validate shapes (and, with `check`, values) and return the probabilities of the drawn items, [B, n]."""
    if idx.dim() != 2 or idx.shape[0] != probs.shape[0] or idx.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"idx must be an integer tensor [B, n] with B={probs.shape[0]}, got {tuple(idx.shape)}")
    if feats.dim() != 3 or feats.shape[:2] != idx.shape:
        raise ValueError(f"feats must be [B, n, D] with [B, n]={tuple(idx.shape)}, got {tuple(feats.shape)}")
    if check:
        validate_probs(probs)
        if (idx < 0).any() or (idx >= probs.shape[1]).any():
            raise ValueError(f"idx has entries outside [0, {probs.shape[1]})")
    drawn = probs.gather(1, idx.long())  # [B, n]
    if check and (drawn.detach() <= 0).any():
        raise ValueError("idx selects an item of zero probability: it cannot have been drawn from probs")
    return drawn


def expectation_with_replacement(probs: Tensor, idx: Tensor, feats: Tensor, *, check: bool = True) -> Tensor:
    """Unbiased estimate of sum_i probs_i f_i from iid draws `idx` [B, n] with features `feats` [B, n, D]."""
    drawn = _gather_checked(probs, idx, feats, check)  # [B, n]
    ratio = drawn / drawn.detach()  # value 1, gradient d log a (ATS eq. 12)
    return (ratio.unsqueeze(-1) * feats).mean(dim=1)  # [B, D]


def sequential_terms(drawn: Tensor, feats: Tensor, earlier: Tensor) -> Tensor:
    """The terms Y_k of the without-replacement estimator, grouped by `earlier` [B, n, n] (1 where draw m precedes draw k in k's group)."""
    weighted = drawn.unsqueeze(-1) * feats  # [B, n, D]
    before = earlier.to(feats.dtype)  # [B, n, n]
    known = before @ weighted  # [B, n, D]: sum over earlier draws of the group of a_j f_j (exclusive)
    used_mass = (before @ drawn.detach().unsqueeze(-1)).squeeze(-1)  # [B, n]: S_{k-1}
    remaining = (1 - used_mass).clamp(min=0)  # [B, n]
    scale = drawn * (remaining / drawn.detach())  # value 1 - S_{k-1}; gradient: score of the k-th draw
    return known + scale.unsqueeze(-1) * feats  # [B, n, D]


def expectation_without_replacement(
    probs: Tensor, idx: Tensor, feats: Tensor, terms: str = "mean", *, check: bool = True
) -> Tensor:
    """Unbiased estimate (value and gradient) of sum_i probs_i f_i from draws without replacement `idx` [B, n].

    terms="mean" averages Y_1..Y_n (Zoom-In eq. 9); terms="last" returns Y_n (ATS eq. 14-15).
    """
    if terms not in ("mean", "last"):
        raise ValueError(f"terms must be 'mean' or 'last', got {terms!r}")
    drawn = _gather_checked(probs, idx, feats, check)  # [B, n]
    if check and (idx.unsqueeze(2) == idx.unsqueeze(1)).sum(dim=(1, 2)).gt(idx.shape[1]).any():
        raise ValueError("idx repeats an item in a row: these are not draws without replacement")
    n = idx.shape[1]
    earlier = torch.ones(n, n, dtype=torch.bool, device=idx.device).tril(-1).expand(idx.shape[0], n, n)
    ys = sequential_terms(drawn, feats, earlier)  # [B, n, D]
    return ys.mean(dim=1) if terms == "mean" else ys[:, -1]  # [B, D]
