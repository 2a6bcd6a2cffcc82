"""N from the data: the number of patches per image chosen from the estimator's own variance (beyond the paper).

Zoom-In and ATS draw the same N patches for every image. An easy image (a flat attention over similar
features) and a hard one (a few heavy, different patches) then get estimates of very different
precision. This module lets each image pick its own N from a pilot of draws, and keeps the estimate
exactly unbiased in value and gradient.

**Rounds.** A round is one independent call of an existing unbiased estimator on r fresh draws:
`expectation_with_replacement` (ATS eq. 4, 11-12) or the two-stage `expectation_two_stage` (Zoom-In
eq. 5, 9), r draws each. Write X_1, X_2, ... for the rounds of one image and F_t for what the first t
rounds drew. Each round is drawn afresh, so E[X_t | F_{t-1}] = mu (the target, eq. 1 or eq. 5), and,
through the score surrogates, E[grad X_t | F_{t-1}] = grad mu.

**The rule (`choose_rounds`, `adaptive_estimate`).** P >= 2 pilot rounds estimate the per-round variance
s^2 = sum_d Var_hat(X_{1..P}, d) (Bessel's correction; of <project, X> when a projection is given, e.g. a
linear classifier's logits). The number of fresh rounds is

    M = clip(ceil(s^2 / tol^2), min_rounds, budget - P),

so that the standard error s / sqrt(M) of their mean is at most `tol` unless the budget binds. The
estimate is the mean of the M fresh rounds X_{P+1}, ..., X_{P+M}; the pilot only chooses M. An image
spends N = r (P + M) draws.

**Why it is unbiased, at every M it allows.** The estimate is sum_t w_t X_t with w_t = 0 for the pilot
and w_t = [t - P <= M] / M after it. Every weight is *predictable* (a function of F_{P} only, so of the
rounds before t) and they sum to 1. Hence

    E[sum_t w_t X_t] = sum_t E[w_t E[X_t | F_{t-1}]] = mu E[sum_t w_t] = mu,

and the same for the gradient: the weights carry no gradient (they are computed from detached pilot
values), the pilot's draws need no score term because E[estimate | F_P] = mu does not depend on them
(the argument of the sequential terms in `zoomin_lib.sampling`), and E[sum_t w_t grad X_t] = grad mu.
In particular the estimate is unbiased conditionally on M = m for every m in [min_rounds, budget - P].

**What is biased (`naive_sequential_estimate`).** Drawing rounds until the running standard error of
*all rounds so far* falls below `tol` and averaging them all gives the rounds weights w_t = [t <= tau] / tau
whose stopping time tau depends on X_t itself: w_t is not predictable and in general E[X_t | t <= tau] != mu
(a run of rounds that happen to agree stops early, and what they agree on is then over-represented).
Including the pilot in the average with weight P / (P + M) is biased for the same reason (Stein's
two-stage procedure does so and is exact only for Gaussian rounds, where mean and variance are
independent). `theory.enumeration.adaptive_bias` enumerates every draw sequence of small problems: the
rule here is exact to rounding, the naive one is not.

**Batched.** Different images get different M in one batch: the fresh rounds are drawn for the widest
image (`fresh_width`) and each image averages the first M_b of them under a mask (`predictable_mean`);
which rounds an image ignores has no effect on its estimate. Host synchronisations: `choose_rounds` and
`predictable_mean` none; `fresh_width` one (the largest M of the batch sets the size of what is drawn)
unless a static width (the budget) is given; the two-stage rounds add `hierarchical.unique_draws`'s one
per draw (pilot and fresh), and the input checks (`validate_probs`) one per distribution checked.
`adaptive_with_replacement` therefore synchronises twice (once with `static_width`), `adaptive_two_stage`
five times (four with `static_width`), whatever B, N or the budget.

**On a trained Zoom-In (`adaptive_zoomin`, `fixed_zoomin`).** The same rule drives a `ZoomInNet`'s sampled
forward at inference, on a tensor or on a lazy `PixelSource` (a slide's `SlideSource`): alpha is computed
once per image (`ZoomInNet.first_stage`); a round is one call of the forward's own two-stage estimator
(tiles with replacement from alpha, sub-tiles without replacement from beta^c, eq. 9) with `round_size`
draws; the P pilot rounds choose M by the rule above, of the features or, through `logit_projection`,
of g's logits; then exactly M_b fresh rounds are drawn and read for image b (ragged rows: image b's
rounds are rows of one flat batch, so no patch is read for a round an image ignores), and the estimate
is their mean with the predictable weights 1 / M_b. An image reads N_b = round_size (P + M_b) patches.
Forced to one M (min_rounds = budget - P), it is the mean of M independent forwards with
n_patches = round_size; `fixed_zoomin` is the forward itself (one round of N). With
`mean_patches` the tolerance is set from the batch's pilots (`tolerance_for_cost`) so that the batch's
average N is at most that number; `zoomin_pilot` and `zoomin_fresh` split the two phases so that the
pilots of several batches (slides, one at a time) set one tolerance. tol is then a function of every
pilot, still of F_P only, so the weights stay predictable and the estimate unbiased. `repeats` draws independent estimates of each image
from one alpha (each beta^c is computed once per image and tile and phase; the cost reported, `tile_views`,
is what one estimate alone would open).

**What it buys.** The rule equalises the standard error over images (it bounds the worst image's); it
does not lower the *average* variance at equal average cost: with M_b proportional to sigma_b^2 the mean
of sigma_b^2 / M_b equals mean(sigma^2) / mean(M), as for a fixed N, before the pilot's cost and the noise
of s^2 are paid. Chapter 02 measures both on synthetic problems; chapters 03 and 04 on trained Zoom-In models
(`zoomin_lib.chapters.adaptive_n`), where the pilot, which the estimate discards, is a large share of a small N.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from zoomin_lib.hierarchical import expectation_two_stage, sample_subtiles, subtile_support_ok, unique_draws
from zoomin_lib.models import ZoomInNet, module_device, patch_features
from zoomin_lib.pixels import PixelSource, as_source
from zoomin_lib.sampling import expectation_with_replacement, sample_with_replacement, validate_probs
from zoomin_lib.syncs import Checks, host_sync

__all__ = [
    "AdaptiveEstimate",
    "round_estimates_with_replacement",
    "round_estimates_two_stage",
    "round_variance",
    "choose_rounds",
    "fresh_width",
    "predictable_mean",
    "adaptive_estimate",
    "naive_sequential_estimate",
    "draw_rounds_with_replacement",
    "draw_rounds_two_stage",
    "adaptive_with_replacement",
    "adaptive_two_stage",
    "ZoomInEstimates",
    "logit_projection",
    "tolerance_for_cost",
    "zoomin_rounds",
    "ZoomInPilot",
    "zoomin_pilot",
    "zoomin_fresh",
    "fixed_zoomin",
    "adaptive_zoomin",
]


@dataclass
class AdaptiveEstimate:
    """An estimate whose number of rounds was chosen per image."""

    value: Tensor  # [B, D] the estimate (a surrogate: its gradient is the unbiased one)
    rounds: Tensor  # [B] rounds averaged (fresh rounds M for the rule; tau for the naive rule)
    variance: Tensor  # [B] the per-round variance estimate that chose them (detached)
    draws: Tensor  # [B] draws the image spent, pilot included


def _rows(probs: Tensor, rounds: int) -> Tensor:
    """probs [B, K] repeated for every round of its image: [B * rounds, K]."""
    b, k = probs.shape
    return probs.unsqueeze(1).expand(b, rounds, k).reshape(b * rounds, k)


def round_estimates_with_replacement(probs: Tensor, idx: Tensor, feats: Tensor, *, check: bool = True) -> Tensor:
    """One `expectation_with_replacement` per round: probs [B, K], idx [B, R, r], feats [B, R, r, D] -> [B, R, D]."""
    b, rounds, size = idx.shape
    if feats.shape[:3] != idx.shape or feats.dim() != 4:
        raise ValueError(f"feats must be [B, R, r, D] with [B, R, r]={tuple(idx.shape)}, got {tuple(feats.shape)}")
    if check:
        validate_probs(probs)
    est = expectation_with_replacement(_rows(probs, rounds), idx.reshape(b * rounds, size),
                                       feats.reshape(b * rounds, size, -1), check=False)  # [B * R, D]
    return est.view(b, rounds, -1)


def round_estimates_two_stage(alpha: Tensor, tiles: Tensor, beta_drawn: Tensor, feats: Tensor, *,
                              check: bool = True) -> Tensor:
    """One `expectation_two_stage` (Zoom-In eq. 9) per round: alpha [B, T], tiles and beta_drawn [B, R, r],
    feats [B, R, r, D] -> [B, R, D]."""
    b, rounds, size = tiles.shape
    if beta_drawn.shape != tiles.shape or feats.shape[:3] != tiles.shape or feats.dim() != 4:
        raise ValueError(f"tiles {tuple(tiles.shape)}, beta_drawn {tuple(beta_drawn.shape)} and feats "
                         f"{tuple(feats.shape)} must be [B, R, r], [B, R, r] and [B, R, r, D]")
    if check:
        validate_probs(alpha, "alpha")
    est = expectation_two_stage(_rows(alpha, rounds), tiles.reshape(b * rounds, size),
                                beta_drawn.reshape(b * rounds, size), feats.reshape(b * rounds, size, -1),
                                check=check)  # [B * R, D]
    return est.view(b, rounds, -1)


def round_variance(rounds: Tensor, project: Tensor | None = None) -> Tensor:
    """The per-round total variance estimated from rounds [B, P, D] (P >= 2, Bessel), of rounds @ project if given; [B].

    `project` [D] or [D, C] (a linear head's weights: the variance of the logits). Detached.
    """
    if rounds.dim() != 3 or rounds.shape[1] < 2:
        raise ValueError(f"a variance needs rounds [B, P, D] with P >= 2, got {tuple(rounds.shape)}")
    x = rounds.detach()  # [B, P, D]
    if project is not None:
        x = x @ project.to(x.dtype)  # [B, P, C] (or [B, P] for a vector)
        x = x if x.dim() == 3 else x.unsqueeze(-1)
    return x.var(dim=1, unbiased=True).sum(dim=-1)  # [B]


def choose_rounds(pilot: Tensor, tol: float, budget: int, *, min_rounds: int = 1,
                  project: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """M [B] fresh rounds per image from its pilot rounds [B, P, D], and the variance estimate s^2 [B] behind it.

    M = clip(ceil(s^2 / tol^2), min_rounds, budget - P): the fresh mean's estimated standard error
    s / sqrt(M) is at most tol unless M = budget - P. No host synchronisation.
    """
    p = pilot.shape[1]
    if not tol > 0:
        raise ValueError(f"tol must be positive, got {tol}")
    if not isinstance(min_rounds, int) or min_rounds < 1 or budget - p < min_rounds:
        raise ValueError(f"need 1 <= min_rounds <= budget - pilot; got min_rounds={min_rounds}, budget={budget}, pilot={p}")
    s2 = round_variance(pilot, project)  # [B]
    wanted = torch.ceil(s2 / tol**2)  # [B]
    return wanted.clamp(min_rounds, budget - p).long(), s2


def fresh_width(rounds: Tensor, static: int | None = None) -> int:
    """How many fresh rounds to draw for the batch: `static` (no synchronisation), else the largest M (one)."""
    if static is not None:
        return static
    with host_sync("adaptive N: the widest image's fresh rounds"):
        return int(rounds.max())


def predictable_mean(fresh: Tensor, rounds: Tensor) -> Tensor:
    """The mean of each image's first M_b rounds: fresh [B, W, D], rounds [B] (1 <= M_b <= W, not checked) -> [B, D].

    The weights [t < M_b] / M_b carry no gradient. No host synchronisation.
    """
    width = fresh.shape[1]
    mask = torch.arange(width, device=fresh.device) < rounds.unsqueeze(1)  # [B, W]
    weights = mask.to(fresh.dtype) / rounds.to(fresh.dtype).unsqueeze(1)  # [B, W]
    return (weights.unsqueeze(-1) * fresh).sum(dim=1)  # [B, D]


def adaptive_estimate(rounds: Tensor, pilot: int, tol: float, budget: int, *, min_rounds: int = 1,
                      project: Tensor | None = None, round_size: int = 1) -> AdaptiveEstimate:
    """The rule on precomputed rounds [B, budget', D] (pilot first, then at least M_b fresh ones): unbiased.

    For enumeration and simulation, where every round up to the budget is drawn in advance; a model
    draws only `fresh_width` fresh rounds (`adaptive_with_replacement`, `adaptive_two_stage`).
    """
    if rounds.dim() != 3 or rounds.shape[1] < budget:
        raise ValueError(f"rounds must be [B, W, D] with W >= budget = {budget} (the pilot and every fresh round "
                         f"the rule may ask for), got {tuple(rounds.shape)}")
    m, s2 = choose_rounds(rounds[:, :pilot], tol, budget, min_rounds=min_rounds, project=project)  # [B], [B]
    value = predictable_mean(rounds[:, pilot:], m)  # [B, D]
    return AdaptiveEstimate(value, m, s2, round_size * (pilot + m))


def naive_sequential_estimate(rounds: Tensor, tol: float, *, min_rounds: int = 2, project: Tensor | None = None,
                              round_size: int = 1) -> AdaptiveEstimate:
    """The BIASED rule, for contrast: stop at the first t >= min_rounds with s_t^2 / t <= tol^2 (s_t^2 from rounds
    1..t) or at the last round, and average all t rounds. rounds [B, W, D]."""
    b, width, _ = rounds.shape
    if min_rounds < 2 or min_rounds > width:
        raise ValueError(f"need 2 <= min_rounds <= {width}, got {min_rounds}")
    x = rounds.detach()  # [B, W, D]
    if project is not None:
        x = x @ project.to(x.dtype)
        x = x if x.dim() == 3 else x.unsqueeze(-1)
    t = torch.arange(1, width + 1, device=x.device, dtype=x.dtype).view(1, width, 1)  # [1, W, 1]
    mean = x.cumsum(dim=1) / t  # [B, W, C] running means
    sq = (x * x).cumsum(dim=1)  # [B, W, C]
    s2 = ((sq - t * mean * mean) / (t - 1).clamp(min=1)).sum(dim=-1)  # [B, W] running variances (Bessel)
    steps = t.view(1, width)  # [1, W]
    done = (s2 / steps <= tol**2) & (steps >= min_rounds)  # [B, W]
    done[:, -1] = True
    tau = done.to(torch.uint8).argmax(dim=1) + 1  # [B] the first t that stops
    s2_tau = s2.gather(1, (tau - 1).unsqueeze(1)).squeeze(1)  # [B]
    return AdaptiveEstimate(predictable_mean(rounds, tau), tau, s2_tau, round_size * tau)


def draw_rounds_with_replacement(probs: Tensor, rounds: int, size: int,
                                 generator: torch.Generator | None = None) -> Tensor:
    """`rounds` rounds of `size` iid draws per row of probs [B, K]: indices [B, rounds, size]."""
    idx = sample_with_replacement(probs, rounds * size, generator, check=False)  # [B, rounds * size]
    return idx.view(probs.shape[0], rounds, size)


def draw_rounds_two_stage(alpha: Tensor, beta: Tensor, rounds: int, size: int,
                          generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """`rounds` independent two-stage draws of `size` per image: alpha [B, T], beta [B, T, K2] -> tiles, sub-tiles
    [B, rounds, size]. One host synchronisation (`unique_draws`)."""
    b, t = alpha.shape
    tiles = sample_with_replacement(_rows(alpha, rounds), size, generator, check=False)  # [B * R, r]
    draws = unique_draws(tiles, n_tiles=t, check=False)
    image = draws.batch // rounds  # [U] the image of each unique (round, tile)
    sub = sample_subtiles(beta[image, draws.tile], draws, generator, max_count=min(size, beta.shape[2]),
                          check=False)  # [B * R, r]
    return tiles.view(b, rounds, size), sub.view(b, rounds, size)


def _take(table: Tensor, idx: Tensor) -> Tensor:
    """Rows of table [B, K, D] at idx [B, ...]: [B, ..., D]."""
    b, d = table.shape[0], table.shape[-1]
    flat = idx.reshape(b, -1, 1).expand(-1, -1, d)  # [B, n, D]
    return table.gather(1, flat).view(*idx.shape, d)


def _plan(pilot_rounds: Tensor, pilot: int, tol: float, budget: int, min_rounds: int, project: Tensor | None,
          static_width: int | None) -> tuple[Tensor, Tensor, int]:
    """M [B], s^2 [B] and the number of fresh rounds to draw for the batch."""
    m, s2 = choose_rounds(pilot_rounds, tol, budget, min_rounds=min_rounds, project=project)
    if static_width is not None and static_width < budget - pilot:
        raise ValueError(f"static_width={static_width} is below the largest M allowed, budget - pilot = {budget - pilot}")
    return m, s2, fresh_width(m, static_width)


def adaptive_with_replacement(probs: Tensor, feats: Tensor, pilot: int, tol: float, budget: int, *,
                              round_size: int = 1, min_rounds: int = 1, project: Tensor | None = None,
                              static_width: int | None = None,
                              generator: torch.Generator | None = None) -> AdaptiveEstimate:
    """The rule with rounds of `round_size` iid draws from probs [B, K] over a feature table feats [B, K, D].

    Pilot rounds, M per image, then only the batch's widest M fresh rounds are drawn and featurised
    (a model computes f on the drawn patches only; here they are read from the table).
    """
    validate_probs(probs)
    pilot_idx = draw_rounds_with_replacement(probs, pilot, round_size, generator)  # [B, P, r]
    pilot_est = round_estimates_with_replacement(probs, pilot_idx, _take(feats, pilot_idx), check=False)  # [B, P, D]
    m, s2, width = _plan(pilot_est, pilot, tol, budget, min_rounds, project, static_width)
    idx = draw_rounds_with_replacement(probs, width, round_size, generator)  # [B, W, r]
    fresh = round_estimates_with_replacement(probs, idx, _take(feats, idx), check=False)  # [B, W, D]
    return AdaptiveEstimate(predictable_mean(fresh, m), m, s2, round_size * (pilot + m))


def adaptive_two_stage(alpha: Tensor, beta: Tensor, feats: Tensor, pilot: int, tol: float, budget: int, *,
                       round_size: int = 1, min_rounds: int = 1, project: Tensor | None = None,
                       static_width: int | None = None,
                       generator: torch.Generator | None = None) -> AdaptiveEstimate:
    """The rule with Zoom-In rounds: `round_size` two-stage draws from alpha [B, T], beta [B, T, K2] over feats
    [B, T, K2, D] (round_size <= K2, so that no tile runs out of sub-tiles)."""
    b, t, k2, d = feats.shape
    if round_size > k2:
        raise ValueError(f"round_size={round_size} draws could hit one tile more often than its {k2} sub-tiles")
    validate_probs(alpha, "alpha")
    validate_probs(beta.reshape(b * t, k2), "beta")
    flat_beta, flat_feats = beta.reshape(b, t * k2), feats.reshape(b, t * k2, d)

    def rounds_of(width: int) -> Tensor:
        tiles, sub = draw_rounds_two_stage(alpha, beta, width, round_size, generator)  # [B, W, r] each
        joint = tiles * k2 + sub  # [B, W, r] index into the flattened T * K2 cells
        beta_drawn = flat_beta.gather(1, joint.reshape(b, -1)).view_as(joint)  # [B, W, r]
        return round_estimates_two_stage(alpha, tiles, beta_drawn, _take(flat_feats, joint), check=False)  # [B, W, D]

    m, s2, width = _plan(rounds_of(pilot), pilot, tol, budget, min_rounds, project, static_width)
    return AdaptiveEstimate(predictable_mean(rounds_of(width), m), m, s2, round_size * (pilot + m))



# ------------------------------------------------------------------------------- on a trained Zoom-In
@dataclass
class ZoomInEstimates:
    """`repeats` independent estimates of each image by a `ZoomInNet`, with what each cost."""

    features: Tensor  # [B, R, D] the aggregate of eq. 9 (adaptive: the mean of the M fresh rounds)
    logits: Tensor  # [B, R, C] g of it
    rounds: Tensor  # [B, R] fresh rounds M averaged (1 for a fixed N)
    variance: Tensor  # [B, R] the pilot's per-round variance s^2 that chose M (NaN for a fixed N)
    patches: Tensor  # [B, R] patches read, pilot included: round_size (P + M) (N for a fixed N)
    tile_views: Tensor  # [B, R] beta^c computed, distinct tiles of each phase summed, as one estimate alone opens them
    pilot: Tensor | None = None  # [B, R, P, D] the pilot rounds (None for a fixed N)
    tol: float = math.nan  # the tolerance used (set from the pilots when a mean cost was asked for)


def logit_projection(model: ZoomInNet, margin: bool = False) -> Tensor:
    """What the rule measures the variance of: g's weights [D, C] (every logit), or for two classes with `margin`
    the direction of the logit difference w_1 - w_0 [D] (the decision's). Detached."""
    w = model.g.weight.detach()  # [C, D]
    if margin:
        if w.shape[0] != 2:
            raise ValueError(f"the logit margin needs two classes, got {w.shape[0]}")
        return w[1] - w[0]  # [D]
    return w.t()  # [D, C]


def tolerance_for_cost(variance: Tensor, mean_rounds: float, min_rounds: int, max_rounds: int) -> float:
    """The smallest tol with mean_b clip(ceil(s_b^2 / tol^2), min_rounds, max_rounds) <= mean_rounds (bisection).

    variance [V] the pilots' s^2. One host synchronisation (the variances are read once).
    """
    if not min_rounds <= mean_rounds:
        raise ValueError(f"a mean of {mean_rounds} fresh rounds is below min_rounds={min_rounds}")
    with host_sync("adaptive N: the tolerance that meets the mean cost"):
        s2 = variance.detach().cpu()  # [V] in the pilots' own dtype: M is computed here exactly as choose_rounds does

    def mean_m(tol: float) -> float:
        return float(torch.ceil(s2 / tol**2).clamp(min_rounds, max_rounds).mean(dtype=torch.float64))

    top = math.sqrt(max(float(s2.max()), 1e-300))  # about where every image asks for one round
    for _ in range(64):  # rounding can leave ceil(s^2 / top^2) = 2: widen until the mean cost holds at top
        if mean_m(top) <= mean_rounds:
            break
        top *= 2
    low = top * 1e-8
    if mean_m(low) <= mean_rounds:
        return low
    for _ in range(200):  # mean_m is non-increasing in tol: keep mean_m(low) > mean_rounds >= mean_m(top)
        mid = math.sqrt(low * top)
        if mean_m(mid) <= mean_rounds:
            top = mid
        else:
            low = mid
        if top / low < 1 + 1e-12:
            break
    return top  # mean_m(top) <= mean_rounds, computed as choose_rounds will compute M


def zoomin_rounds(model: ZoomInNet, src: PixelSource, alpha: Tensor, image: Tensor, size: int,
                  generator: torch.Generator | None, checks: Checks) -> tuple[Tensor, Tensor]:
    """One eq. 9 estimate of `size` two-stage draws per row: rows of images `image` [K] of `src`, alpha [B, T].

    Returns the estimates [K, D] and the tiles drawn [K, r]. It draws what
    `ZoomInNet.forward(x[image], "sample")` with n_patches = size draws, from the same generator calls in the
    same order; beta^c is computed once per (image, tile). Host synchronisations: three (the distinct tiles of the
    rows, of the images, beta's checks).
    """
    n_tiles = alpha.shape[1]
    k2 = model.subview_size[0] * model.subview_size[1]
    p1 = alpha[image]  # [K, T]
    tiles = sample_with_replacement(p1, size, generator, check=False)  # [K, r]
    draws = unique_draws(tiles, n_tiles, check=False)  # [U] (row, tile) pairs
    keys = image[draws.batch] * n_tiles + draws.tile  # [U] (image, tile)
    with host_sync("adaptive N: the distinct (image, tile) pairs whose beta is computed"):
        pairs, where = torch.unique(keys, return_inverse=True)  # [V'], [U]
    betas = model.second_stage(src, pairs // n_tiles, pairs % n_tiles)  # [V', K2]
    p2 = betas[where]  # [U, K2]
    subtiles = sample_subtiles(p2, draws, generator, max_count=min(size, k2), check=False)  # [K, r]
    checks.add(subtile_support_ok(p2, draws), f"a tile was drawn more often than it has sub-tiles of positive "
               f"attention (round_size = {size}, {k2} sub-tiles a tile); lower round_size")
    rows, cols = model.centers(tiles, subtiles, src.size)  # [K, r]
    feats = patch_features(model.features, src, rows, cols, model.patch_size, model.chunk_size, image=image)  # [K, r, D]
    est = expectation_two_stage(p1, tiles, p2[draws.inverse, subtiles], feats, check=False)  # [K, D]
    return est, tiles


def _distinct_tiles(owner: Tensor, tiles: Tensor, n_owners: int, n_tiles: int) -> Tensor:
    """Distinct tiles among the draws tiles [K, r] of the rows of each owner (owner [K] in [0, V)): [V]."""
    seen = torch.zeros(n_owners, n_tiles, dtype=torch.bool, device=tiles.device)  # [V, T]
    seen[owner.unsqueeze(1).expand_as(tiles), tiles] = True
    return seen.sum(dim=1)  # [V]


def _virtual(batch: int, repeats: int, device: torch.device) -> Tensor:
    """The image of each of the batch * repeats estimates (image-major): [V]."""
    if not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be a positive int, got {repeats!r}")
    return torch.arange(batch, device=device).repeat_interleave(repeats)  # [V]


def fixed_zoomin(model: ZoomInNet, x: Tensor | PixelSource, n: int, *, repeats: int = 1,
                 generator: torch.Generator | None = None) -> ZoomInEstimates:
    """The fixed-N estimator: `repeats` independent sampled forwards (eq. 9, n_patches = n) of each image, one alpha.

    The same draws as `model(x.repeat_interleave(repeats, 0), "sample")` with n_patches = n and this generator.
    """
    src = as_source(x, module_device(model))
    checks = Checks()
    alpha = model.first_stage(src)  # [B, T]
    image = _virtual(src.batch_size, repeats, alpha.device)  # [V]
    est, tiles = zoomin_rounds(model, src, alpha, image, n, generator, checks)  # [V, D], [V, n]
    checks.resolve()
    b, r = src.batch_size, repeats
    distinct = _distinct_tiles(torch.arange(b * r, device=tiles.device), tiles, b * r, alpha.shape[1])  # [V]
    ones = torch.ones(b, r, dtype=torch.long, device=est.device)
    return ZoomInEstimates(est.view(b, r, -1), model.g(est).view(b, r, -1), ones,
                           torch.full((b, r), math.nan, device=est.device), n * ones, distinct.view(b, r))


@dataclass
class ZoomInPilot:
    """The pilot of `adaptive_zoomin` on one batch, kept so that the tolerance can be set from several batches'
    pilots (a slide at a time) before any fresh round is drawn."""

    src: PixelSource
    alpha: Tensor  # [B, T]
    image: Tensor  # [V] the image of each estimate (V = B * repeats, image-major)
    rounds: Tensor  # [V, P, D] the pilot rounds
    tile_views: Tensor  # [V] distinct tiles the pilot drew, per estimate
    round_size: int
    repeats: int


def zoomin_pilot(model: ZoomInNet, x: Tensor | PixelSource, *, round_size: int, pilot: int, repeats: int = 1,
                 generator: torch.Generator | None = None) -> ZoomInPilot:
    """alpha once per image, then P pilot rounds of `round_size` two-stage draws per estimate. Five host syncs."""
    if not isinstance(round_size, int) or round_size < 1:
        raise ValueError(f"round_size must be a positive int, got {round_size!r}")
    if not isinstance(pilot, int) or pilot < 2:
        raise ValueError(f"the pilot needs at least two rounds to estimate a variance, got {pilot!r}")
    src = as_source(x, module_device(model))
    checks = Checks()
    alpha = model.first_stage(src)  # [B, T]
    image = _virtual(src.batch_size, repeats, alpha.device)  # [V]
    v = image.numel()
    owners = torch.arange(v, device=image.device).repeat_interleave(pilot)  # [V * P] the estimate of each pilot round
    est, tiles = zoomin_rounds(model, src, alpha, image[owners], round_size, generator, checks)  # [V * P, D]
    checks.resolve()
    return ZoomInPilot(src, alpha, image, est.view(v, pilot, -1), _distinct_tiles(owners, tiles, v, alpha.shape[1]),
                       round_size, repeats)


def zoomin_fresh(model: ZoomInNet, pilot: ZoomInPilot, tol: float, budget: int, *, min_rounds: int = 1,
                 project: Tensor | None = None, generator: torch.Generator | None = None) -> ZoomInEstimates:
    """M = clip(ceil(s^2 / tol^2), min_rounds, budget - P) per estimate from its pilot, then exactly M fresh rounds
    read per estimate, averaged with the predictable weights 1 / M. Five host syncs."""
    checks = Checks()
    src, alpha, image, r = pilot.src, pilot.alpha, pilot.image, pilot.round_size
    v, p = pilot.rounds.shape[:2]
    m, s2 = choose_rounds(pilot.rounds, tol, budget, min_rounds=min_rounds, project=project)  # [V], [V]
    with host_sync("adaptive N: the fresh rounds of every image"):
        rows = torch.arange(v, device=m.device).repeat_interleave(m)  # [sum M] the estimate of each fresh round
    fresh, tiles = zoomin_rounds(model, src, alpha, image[rows], r, generator, checks)  # [sum M, D], [sum M, r]
    weights = (1.0 / m.to(fresh.dtype))[rows].unsqueeze(1)  # [sum M, 1] predictable: 1 / M, no gradient
    value = torch.zeros(v, fresh.shape[1], dtype=fresh.dtype, device=fresh.device).index_add(0, rows, weights * fresh)
    checks.resolve()
    views = pilot.tile_views + _distinct_tiles(rows, tiles, v, alpha.shape[1])  # [V]
    b, reps = src.batch_size, pilot.repeats
    return ZoomInEstimates(value.view(b, reps, -1), model.g(value).view(b, reps, -1), m.view(b, reps),
                           s2.view(b, reps), (r * (p + m)).view(b, reps), views.view(b, reps),
                           pilot.rounds.view(b, reps, p, -1), float(tol))


def adaptive_zoomin(model: ZoomInNet, x: Tensor | PixelSource, *, round_size: int, pilot: int, budget: int,
                    tol: float | None = None, mean_patches: float | None = None, min_rounds: int = 1,
                    project: Tensor | None = None, repeats: int = 1,
                    generator: torch.Generator | None = None) -> ZoomInEstimates:
    """N from the data on a trained Zoom-In: P pilot rounds, M = clip(ceil(s^2 / tol^2), min_rounds, budget - P) fresh
    rounds of `round_size` two-stage draws, the estimate the mean of the fresh rounds (unbiased; module docstring).

    Give `tol`, or `mean_patches` (tol then set from the batch's pilots so that the mean of N = round_size (P + M)
    over the batch's images and repeats is at most that). `project` (e.g. `logit_projection(model)`) makes s^2 the
    variance of the logits; None, of the features. `zoomin_pilot` then `zoomin_fresh`. Host synchronisations: ten
    with `tol` (eleven with `mean_patches`), whatever the batch, N or the budget.
    """
    if (tol is None) == (mean_patches is None):
        raise ValueError("give exactly one of tol and mean_patches")
    if not isinstance(min_rounds, int) or min_rounds < 1 or budget - pilot < min_rounds:
        raise ValueError(f"need 1 <= min_rounds <= budget - pilot; got min_rounds={min_rounds}, budget={budget}, "
                         f"pilot={pilot}")
    first = zoomin_pilot(model, x, round_size=round_size, pilot=pilot, repeats=repeats, generator=generator)
    if tol is None:
        assert mean_patches is not None
        tol = tolerance_for_cost(round_variance(first.rounds, project), mean_patches / round_size - pilot,
                                 min_rounds, budget - pilot)
    return zoomin_fresh(model, first, tol, budget, min_rounds=min_rounds, project=project, generator=generator)
