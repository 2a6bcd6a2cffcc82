"""Variance of the attention-sampling estimators: analytic, exact by enumeration, and Monte Carlo.

Target (ATS eq. 1-3): mu = sum_i a_i f_i, with attention a [K] and features f [K, D].

Importance sampling (ATS sec. 3.2.1, eq. 5-9). Draw q_1..q_n iid from a proposal p and estimate
mu by (1/n) sum_k a_{q_k} f_{q_k} / p_{q_k}. Its total variance (trace of the covariance) is

    V(p, n) = (1/n) (sum_i a_i^2 ||f_i||^2 / p_i - ||mu||^2)                        (eq. 7-8)

minimised by p*_i ∝ a_i ||f_i|| (eq. 9); with features of equal L2 norm (ATS sec. 3.4), p* = a,
so sampling from the attention itself (ATS eq. 4) is the minimum-variance choice.

Without replacement (ATS eq. 13-17, Zoom-In eq. 9). With draws i_1..i_n in sequence and the
exclusive sums S_{k-1} = sum_{j<k} a_{i_j}, every term

    Y_k = sum_{j<k} a_{i_j} f_{i_j} + (1 - S_{k-1}) f_{i_k}

is unbiased. `zoomin_lib.sampling.expectation_without_replacement` averages them,
(1/n) sum_k Y_k (Zoom-In eq. 9); ATS eq. 14-15 as printed is the last term Y_n alone
(`expectation_without_replacement(..., terms="last")`). Both are unbiased in value and gradient; only Y_n is exact at n = K.

Two stages (Zoom-In eq. 5-9): tiles iid from alpha, sub-tiles without replacement from beta^c.
By the law of total variance its variance is at least the between-tile part
(1/n) (sum_c alpha_c ||g_c||^2 - ||mu||^2), g_c = sum_c' beta^c_c' f(c, c'); the expected number
of distinct tiles among n draws is N' = sum_c 1 - (1 - alpha_c)^n.

Everything is measured with the batched samplers and estimators of `zoomin_lib.sampling` and
`zoomin_lib.hierarchical`: the R Monte-Carlo repeats (or the enumerated draw sequences) are the
batch axis. Gradients are taken w.r.t. attention logits s (a = softmax(s)) and the feature table
f, of the scalar <project, estimate>, per row by autograd.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from zoomin_lib.hierarchical import expectation_two_stage, sample_subtiles, unique_draws
from zoomin_lib.sampling import (
    expectation_with_replacement,
    expectation_without_replacement,
    sample_with_replacement,
    sample_without_replacement,
    validate_probs,
)
from zoomin_lib.theory.enumeration import two_stage_outcomes, with_replacement_outcomes, without_replacement_outcomes

__all__ = [
    "MC_SIGMAS",
    "agrees",
    "clearly_below",
    "SCHEMES",
    "Spread",
    "Moments",
    "target_mean",
    "full_gradients",
    "importance_sampling_variance",
    "importance_sampling_variance_se",
    "optimal_proposal",
    "uniform_proposal",
    "l2_normalize",
    "expectation_importance",
    "monte_carlo_moments",
    "monte_carlo_variance",
    "exact_moments",
    "exact_variance",
    "two_stage_joint",
    "expected_unique_tiles",
    "between_tile_variance",
    "monte_carlo_two_stage",
    "exact_two_stage_variance",
    "peaked_attention",
    "random_features",
    "tiled_problem",
]

SCHEMES = ("importance", "with", "without", "without_last")
"""importance: iid from a proposal; with: iid from a (ATS eq. 4); without: average of Y_k (Zoom-In eq. 9); without_last: Y_n (ATS eq. 14)."""

_ELEMENT_BUDGET = 1 << 24  # tensor elements per chunk of repeats (about 128 MB in float64)
_MAX_OUTCOMES = 2_000_000  # enumeration refuses more draw sequences than this


@dataclass(frozen=True)
class Spread:
    """Mean and total variance (trace of the covariance) of a random tensor, exact or from samples."""

    mean: Tensor  # the shape of one sample
    variance: float  # sum over elements of the variance
    se: float  # Monte-Carlo standard error of `variance` (0 when exact)
    samples: int  # repeats, or enumerated outcomes
    exact: bool
    z_std: float  # standard deviation of the squared deviation Z = ||X - E X||^2 (one run)

    def monte_carlo_se(self, repeats: int) -> float:
        """Standard error of a total variance estimated from `repeats` independent runs: std(Z) / sqrt(R)."""
        return self.z_std / math.sqrt(repeats)

    @property
    def mean_se(self) -> float:
        """Standard error of each element of `mean` on average: sqrt(variance / samples / numel), 0 when exact."""
        if self.exact:
            return 0.0
        return math.sqrt(self.variance / self.samples / max(self.mean.numel(), 1))


@dataclass(frozen=True)
class Moments:
    """Spreads of an estimator's value [D] and, when asked, of its gradients and of N' (two stages)."""

    value: Spread
    grad_logits: Spread | None = None  # w.r.t. attention logits s, a = softmax(s): [K]
    grad_feats: Spread | None = None  # w.r.t. the feature table f: [K, D]
    unique_tiles: Spread | None = None  # two stages: number of distinct tiles drawn


# ---------------------------------------------------------------------------------- analytic


def _check_problem(a: Tensor, f: Tensor) -> None:
    """Raise unless a is a probability vector [K] and f a feature table [K, D]."""
    if a.dim() != 1 or f.dim() != 2 or f.shape[0] != a.shape[0]:
        raise ValueError(f"expected a [K] and f [K, D], got {tuple(a.shape)} and {tuple(f.shape)}")
    validate_probs(a.unsqueeze(0), "a")


def target_mean(a: Tensor, f: Tensor) -> Tensor:
    """mu = sum_i a_i f_i (ATS eq. 1): a [K], f [K, D] -> [D]."""
    _check_problem(a, f)
    return a @ f  # [D]


def full_gradients(a: Tensor, f: Tensor, project: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact gradients of <project, sum_i a_i f_i> w.r.t. the logits s (a = softmax(s)) [K] and f [K, D]."""
    _check_problem(a, f)
    project = torch.ones(f.shape[1], dtype=f.dtype) if project is None else project  # [D]
    logits = a.log().detach().requires_grad_()  # [K]
    feats = f.detach().clone().requires_grad_()  # [K, D]
    g_logits, g_feats = torch.autograd.grad((torch.softmax(logits, 0) @ feats * project).sum(), [logits, feats])
    return g_logits, g_feats


def importance_sampling_variance(a: Tensor, f: Tensor, p: Tensor, n: int) -> float:
    """Total variance of (1/n) sum_k a_q f_q / p_q, q iid from p: (1/n)(sum a^2||f||^2/p - ||mu||^2) (ATS eq. 7-8)."""
    _check_problem(a, f)
    validate_probs(p.unsqueeze(0), "p")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    weight = a.square() * f.square().sum(dim=1)  # [K]: a_i^2 ||f_i||^2
    if ((p <= 0) & (weight > 0)).any():
        return math.inf  # an item that matters is never drawn: the estimator is biased
    second = torch.where(weight > 0, weight / p.clamp(min=torch.finfo(p.dtype).tiny), 0).sum()
    return float(second - (a @ f).square().sum()) / n


def importance_sampling_variance_se(a: Tensor, f: Tensor, p: Tensor, n: int, repeats: int) -> float:
    """Standard error of the total variance of the IS estimator measured from `repeats` runs (exact fourth moments)."""
    _check_problem(a, f)
    validate_probs(p.unsqueeze(0), "p")
    keep = p > 0  # [K]
    p_k = p[keep]  # [K']
    y = a[keep].unsqueeze(1) * f[keep] / p_k.unsqueeze(1) - a @ f  # [K', D]: one-draw deviations
    sq = y.square().sum(dim=1)  # [K']
    trace = p_k @ sq  # tr C
    cov = torch.einsum("k,kd,ke->de", p_k, y, y)  # [D, D]
    fourth = p_k @ sq.square()  # E ||Y||^4
    # Z = ||mean of n draws - mu||^2: Var Z = (E||Y||^4 - (tr C)^2 + 2 (n - 1) tr C^2) / n^3
    var_z = (fourth - trace.square() + 2 * (n - 1) * cov.square().sum()) / n**3
    return math.sqrt(max(float(var_z), 0.0) / repeats)


def optimal_proposal(a: Tensor, f: Tensor) -> Tensor:
    """The minimum-variance proposal p*_i ∝ a_i ||f_i|| (ATS eq. 9); [K]."""
    _check_problem(a, f)
    w = a * f.norm(dim=1)  # [K]
    if w.sum() <= 0:
        raise ValueError("every a_i ||f_i|| is zero: mu = 0 and any proposal is exact")
    return w / w.sum()


def uniform_proposal(k: int, dtype: torch.dtype = torch.float64) -> Tensor:
    """The uniform distribution over k items; [K]."""
    return torch.full((k,), 1.0 / k, dtype=dtype)


def l2_normalize(f: Tensor) -> Tensor:
    """Rows of f scaled to unit L2 norm (ATS sec. 3.4); [..., D]."""
    return f / f.norm(dim=-1, keepdim=True)


# -------------------------------------------------------------------------------- estimators


def expectation_importance(proposal: Tensor, target: Tensor, idx: Tensor, feats: Tensor) -> Tensor:
    """Importance-sampling estimate (1/n) sum_k target_q f_q / proposal_q from iid draws of `proposal`; [B, D]."""
    validate_probs(proposal, "proposal")
    if target.shape != proposal.shape or idx.dim() != 2 or idx.shape[0] != proposal.shape[0]:
        raise ValueError(f"target {tuple(target.shape)} must match proposal {tuple(proposal.shape)}; idx must be [B, n]")
    if feats.dim() != 3 or feats.shape[:2] != idx.shape:
        raise ValueError(f"feats must be [B, n, D] with [B, n]={tuple(idx.shape)}, got {tuple(feats.shape)}")
    p = proposal.detach().gather(1, idx)  # [B, n]; the proposal is not differentiated
    if (p <= 0).any():
        raise ValueError("idx selects an item of zero proposal probability")
    weight = target.gather(1, idx) / p  # [B, n]
    return (weight.unsqueeze(-1) * feats).mean(dim=1)  # [B, D]


def _estimate(scheme: str, probs: Tensor, idx: Tensor, feats: Tensor, proposal: Tensor | None) -> Tensor:
    """The estimator of `scheme` on draws idx [S, n] with drawn features [S, n, D]; [S, D]."""
    if scheme == "importance":
        return expectation_importance(proposal, probs, idx, feats)
    if scheme == "with":
        return expectation_with_replacement(probs, idx, feats)
    if scheme == "without":
        return expectation_without_replacement(probs, idx, feats)
    if scheme == "without_last":
        return expectation_without_replacement(probs, idx, feats, terms="last")
    raise ValueError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")


def _evaluate(
    scheme: str, a: Tensor, f: Tensor, idx: Tensor, proposal: Tensor | None, grads: bool, project: Tensor
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-row estimates [S, D] and, if `grads`, per-row gradients w.r.t. logits [S, K] and features [S, K, D]."""
    s, k = idx.shape[0], a.shape[0]
    prop = None if proposal is None else proposal.expand(s, k)  # [S, K]
    if not grads:
        with torch.no_grad():
            return _estimate(scheme, a.expand(s, k), idx, f[idx], prop), None, None  # [S, D]
    logits = a.log().expand(s, k).clone().requires_grad_()  # [S, K]: one leaf per row
    drawn = f[idx].clone().requires_grad_()  # [S, n, D]
    est = _estimate(scheme, torch.softmax(logits, dim=1), idx, drawn, prop)  # [S, D]
    g_logits, g_drawn = torch.autograd.grad((est * project).sum(), [logits, drawn])
    g_feats = torch.zeros(s, *f.shape, dtype=f.dtype)  # [S, K, D]
    g_feats.scatter_add_(1, idx.unsqueeze(-1).expand(-1, -1, f.shape[1]), g_drawn)
    return est.detach(), g_logits, g_feats


def _spread(x: Tensor, weights: Tensor | None) -> Spread:
    """Spread of the rows of x [S, ...]: exact under probability `weights` [S], else from samples."""
    s = x.shape[0]
    flat = x.reshape(s, -1)  # [S, E]
    if weights is not None:
        mean = weights @ flat  # [E]
        z = (flat - mean).square().sum(dim=1)  # [S]
        var = float(weights @ z)
        z_std = math.sqrt(max(float(weights @ (z - var).square()), 0.0))
        return Spread(mean.reshape(x.shape[1:]), var, 0.0, s, True, z_std)
    if s < 2:
        raise ValueError("a Monte-Carlo variance needs at least 2 repeats")
    mean = flat.mean(dim=0)  # [E]
    z = (flat - mean).square().sum(dim=1)  # [S]
    var = float(z.sum()) / (s - 1)
    z_std = float(z.std())
    se = z_std / math.sqrt(s) * s / (s - 1)
    return Spread(mean.reshape(x.shape[1:]), var, se, s, False, z_std)


def _moments(rows: list[tuple[Tensor, Tensor | None, Tensor | None]], weights: Tensor | None) -> Moments:
    """Concatenate per-chunk rows and summarise them."""
    value = _spread(torch.cat([r[0] for r in rows]), weights)
    if rows[0][1] is None:
        return Moments(value)
    g_logits = _spread(torch.cat([r[1] for r in rows]), weights)
    g_feats = _spread(torch.cat([r[2] for r in rows]), weights)
    return Moments(value, g_logits, g_feats)


def _prepare(
    scheme: str, a: Tensor, f: Tensor, n: int, proposal: Tensor | None, project: Tensor | None
) -> tuple[Tensor | None, Tensor]:
    """Validate the arguments; return the proposal (or None) and the projection vector [D]."""
    _check_problem(a, f)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}; expected one of {', '.join(SCHEMES)}")
    if (scheme == "importance") != (proposal is not None):
        raise ValueError("pass a proposal exactly when scheme='importance'")
    if proposal is not None:
        validate_probs(proposal.unsqueeze(0), "proposal")
    if scheme.startswith("without") and n > int((a > 0).sum()):
        raise ValueError(f"cannot draw {n} distinct items from {int((a > 0).sum())} of positive attention")
    project = torch.ones(f.shape[1], dtype=f.dtype) if project is None else project
    return proposal, project  # [D]


# ------------------------------------------------------------------------------- Monte Carlo


def _row_elements(k: int, n: int, d: int, grads: bool) -> int:
    """Tensor elements one row (repeat) needs: attention [K], pairwise masks [n, n], features [n, D], gradients."""
    return 2 * k + 2 * n * n + 2 * n * d + (2 * k * d if grads else 0)


def _chunks(total: int, per_row: int) -> list[int]:
    """Split `total` rows into chunks of at most _ELEMENT_BUDGET // per_row rows."""
    size = max(1, _ELEMENT_BUDGET // max(per_row, 1))
    return [min(size, total - start) for start in range(0, total, size)]


def monte_carlo_moments(
    scheme: str,
    a: Tensor,
    f: Tensor,
    n: int,
    repeats: int,
    generator: torch.Generator | None = None,
    proposal: Tensor | None = None,
    grads: bool = False,
    project: Tensor | None = None,
) -> Moments:
    """Empirical mean and total variance of an estimator (and of its gradients) over `repeats` independent runs."""
    proposal, project = _prepare(scheme, a, f, n, proposal, project)
    k, d = f.shape
    rows = []
    for size in _chunks(repeats, _row_elements(k, n, d, grads)):
        if scheme == "importance":
            idx = sample_with_replacement(proposal.expand(size, k), n, generator)  # [R, n]
        elif scheme == "with":
            idx = sample_with_replacement(a.expand(size, k), n, generator)  # [R, n]
        else:
            idx = sample_without_replacement(a.expand(size, k), n, generator)  # [R, n]
        rows.append(_evaluate(scheme, a, f, idx, proposal, grads, project))
    return _moments(rows, None)


def monte_carlo_variance(scheme: str, a: Tensor, f: Tensor, n: int, repeats: int,
                         generator: torch.Generator | None = None, proposal: Tensor | None = None) -> Spread:
    """Empirical total variance (with standard error) of the estimator of `scheme` over `repeats` runs."""
    return monte_carlo_moments(scheme, a, f, n, repeats, generator, proposal).value


# ------------------------------------------------------------------------------- enumeration


def exact_moments(
    scheme: str,
    a: Tensor,
    f: Tensor,
    n: int,
    proposal: Tensor | None = None,
    grads: bool = False,
    project: Tensor | None = None,
) -> Moments:
    """Exact mean and total variance of an estimator (and its gradients) by enumerating every draw sequence."""
    proposal, project = _prepare(scheme, a, f, n, proposal, project)
    k = a.shape[0]
    count = k**n if scheme in ("importance", "with") else math.perm(k, n)
    if count > _MAX_OUTCOMES:
        raise ValueError(f"{count} draw sequences for K={k}, n={n}: too many to enumerate (max {_MAX_OUTCOMES})")
    source = proposal if scheme == "importance" else a
    if scheme in ("importance", "with"):
        outcomes = list(with_replacement_outcomes(source.tolist(), n))
    else:
        outcomes = list(without_replacement_outcomes(source.tolist(), n))
    idx = torch.tensor([o.draws for o in outcomes], dtype=torch.long).reshape(len(outcomes), n)  # [S, n]
    weights = torch.tensor([o.prob for o in outcomes], dtype=f.dtype)  # [S]
    if abs(float(weights.sum()) - 1) > 1e-9:
        raise ValueError(f"outcome probabilities sum to {float(weights.sum())}, not 1")
    keep = weights > 0
    idx, weights = idx[keep], weights[keep]
    rows, start = [], 0
    for size in _chunks(idx.shape[0], _row_elements(k, n, f.shape[1], grads)):
        rows.append(_evaluate(scheme, a, f, idx[start : start + size], proposal, grads, project))
        start += size
    return _moments(rows, weights)


def exact_variance(scheme: str, a: Tensor, f: Tensor, n: int, proposal: Tensor | None = None) -> float:
    """Exact total variance of the estimator of `scheme` by enumeration (small K and n only)."""
    return exact_moments(scheme, a, f, n, proposal).value.variance


# -------------------------------------------------------------------------------- two stages


def _check_tiled(alpha: Tensor, beta: Tensor, f: Tensor) -> None:
    """Raise unless alpha [T], beta [T, K2] and f [T, K2, D] are a tiled problem."""
    if alpha.dim() != 1 or beta.dim() != 2 or f.dim() != 3 or beta.shape[0] != alpha.shape[0] or f.shape[:2] != beta.shape:
        raise ValueError(
            f"expected alpha [T], beta [T, K2], f [T, K2, D]; got {tuple(alpha.shape)}, {tuple(beta.shape)}, {tuple(f.shape)}"
        )
    validate_probs(alpha.unsqueeze(0), "alpha")
    validate_probs(beta, "beta")


def two_stage_joint(alpha: Tensor, beta: Tensor, f: Tensor) -> tuple[Tensor, Tensor]:
    """The one-stage view of a tiled problem: joint attention alpha_c beta^c_c' [T*K2] and features [T*K2, D]."""
    _check_tiled(alpha, beta, f)
    return (alpha.unsqueeze(1) * beta).reshape(-1), f.reshape(-1, f.shape[-1])


def expected_unique_tiles(alpha: Tensor, n: int) -> float:
    """E[N'] = sum_c 1 - (1 - alpha_c)^n, the expected number of distinct tiles among n iid draws."""
    validate_probs(alpha.unsqueeze(0), "alpha")
    return float((1 - (1 - alpha).pow(n)).sum())


def between_tile_variance(alpha: Tensor, beta: Tensor, f: Tensor, n: int) -> float:
    """Var of E[two-stage estimate | tiles] = (1/n)(sum_c alpha_c ||g_c||^2 - ||mu||^2): a lower bound on its variance."""
    _check_tiled(alpha, beta, f)
    g = torch.einsum("tk,tkd->td", beta, f)  # [T, D]: g_c = sum_c' beta^c_c' f(c, c')
    return importance_sampling_variance(alpha, g, alpha, n)


def monte_carlo_two_stage(
    alpha: Tensor, beta: Tensor, f: Tensor, n: int, repeats: int, generator: torch.Generator | None = None
) -> Moments:
    """Empirical variance of the two-stage estimator (Zoom-In eq. 9) and the spread of N' over `repeats` runs."""
    _check_tiled(alpha, beta, f)
    t, k2, d = f.shape
    if n > k2:
        raise ValueError(f"n={n} draws could hit one tile more often than its {k2} sub-tiles; use n <= K2")
    values, uniques = [], []
    for size in _chunks(repeats, _row_elements(t * k2, n, d, False)):
        tiles = sample_with_replacement(alpha.expand(size, t), n, generator)  # [R, n]
        draws = unique_draws(tiles)
        sub = sample_subtiles(beta[draws.tile], draws, generator)  # [R, n]
        with torch.no_grad():
            est = expectation_two_stage(alpha.expand(size, t), tiles, beta[tiles, sub], f[tiles, sub])  # [R, D]
        values.append(est)
        uniques.append(torch.bincount(draws.batch, minlength=size).to(f.dtype))  # [R]
    return Moments(_spread(torch.cat(values), None), unique_tiles=_spread(torch.cat(uniques), None))


def exact_two_stage_variance(alpha: Tensor, beta: Tensor, f: Tensor, n: int) -> float:
    """Exact total variance of the two-stage estimator by enumerating every two-stage draw (tiny problems)."""
    _check_tiled(alpha, beta, f)
    t = alpha.shape[0]
    if t**n > _MAX_OUTCOMES:
        raise ValueError(f"T^n = {t**n} first-stage sequences: too many to enumerate")
    outcomes = list(two_stage_outcomes(alpha.tolist(), beta.tolist(), n))
    tiles = torch.tensor([o.draws[0] for o in outcomes], dtype=torch.long).reshape(-1, n)  # [S, n]
    sub = torch.tensor([o.draws[1] for o in outcomes], dtype=torch.long).reshape(-1, n)  # [S, n]
    weights = torch.tensor([o.prob for o in outcomes], dtype=f.dtype)  # [S]
    with torch.no_grad():
        est = expectation_two_stage(alpha.expand(len(outcomes), t), tiles, beta[tiles, sub], f[tiles, sub])  # [S, D]
    return _spread(est, weights).variance


# ------------------------------------------------------------------------- synthetic problems


def peaked_attention(k: int, scale: float, generator: torch.Generator | None = None) -> Tensor:
    """softmax(scale * z), z ~ N(0, I_K): flat at scale 0, peaked for large scale; float64 [K]."""
    z = torch.randn(k, generator=generator, dtype=torch.float64)  # [K]
    return torch.softmax(scale * z, dim=0)


def random_features(
    k: int, d: int, norm_spread: float, generator: torch.Generator | None = None, shared: float = 1.0
) -> Tensor:
    """Features [K, D] with directions normalize(shared * c + z_i) and log-normal norms exp(norm_spread * e_i)."""
    common = l2_normalize(torch.randn(d, generator=generator, dtype=torch.float64))  # [D]
    directions = l2_normalize(shared * common + torch.randn(k, d, generator=generator, dtype=torch.float64))  # [K, D]
    norms = torch.exp(norm_spread * torch.randn(k, 1, generator=generator, dtype=torch.float64))  # [K, 1]
    return directions * norms  # [K, D]


def tiled_problem(
    t: int,
    k2: int,
    d: int,
    tile_scale: float,
    subtile_scale: float,
    within_tile: float,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """A tiled attention alpha [T], beta [T, K2] and unit-norm features [T, K2, D] that vary mostly by tile."""
    alpha = peaked_attention(t, tile_scale, generator)  # [T]
    beta = torch.stack([peaked_attention(k2, subtile_scale, generator) for _ in range(t)])  # [T, K2]
    centres = torch.randn(t, 1, d, generator=generator, dtype=torch.float64)  # [T, 1, D]
    noise = torch.randn(t, k2, d, generator=generator, dtype=torch.float64)  # [T, K2, D]
    return alpha, beta, l2_normalize(centres + within_tile * noise)  # [T], [T, K2], [T, K2, D]


MC_SIGMAS = 4.0  # default tolerance of a Monte-Carlo check, in standard errors


def agrees(measured: float, expected: float, se: float, sigmas: float = MC_SIGMAS) -> bool:
    """True when a Monte-Carlo measurement lies within `sigmas` standard errors `se` of its known value."""
    return abs(measured - expected) <= sigmas * se + 1e-12


def clearly_below(x: float, se_x: float, y: float, se_y: float, sigmas: float = MC_SIGMAS) -> bool:
    """True when x < y by more than `sigmas` combined standard errors."""
    return x + sigmas * math.hypot(se_x, se_y) < y
