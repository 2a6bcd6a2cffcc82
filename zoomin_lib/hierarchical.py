"""Two-stage hierarchical attention sampling: Zoom-In eq. 5, 6 and 9.

The target is sum_c alpha_c sum_c' beta^c_c' f(c, c')  (eq. 5). Stage one draws N tiles
c_1..c_N iid from alpha (with replacement). The N' unique tiles are the only ones whose
second-stage view and attention beta^c are computed (the N' of the memory analysis). Stage two
draws, within each drawn tile c, as many distinct sub-tiles as c was drawn (m_c), in sequence
and without replacement from beta^c.

Eq. 9 as printed sums over *all* earlier draws j < i with weights beta^{c_i}_{c'_j}; that mixes
sub-tiles of different tiles. The unbiased reading, used here, restricts the sum to earlier draws
of the same tile: for draw n, the k-th draw in its tile c,

    Y_n = sum_{earlier draws j in c} beta^c_{c'_j} f(c, c'_j) + (1 - S) f(c, c'_n),

with S the beta-mass of those earlier draws. Given the tile draws, E[Y_n] = sum_c' beta^c_c' f(c, c')
exactly; so (1/N) sum_n Y_n is unbiased for eq. 5. The gradient surrogate multiplies each Y_n by
alpha_{c_n} / sg(alpha_{c_n}) (the with-replacement score of stage one, ATS eq. 12) and writes
(1 - S) as beta f * sg((1 - S) / beta) (the conditional score of stage two; see sampling.py).
Its expected gradient equals the gradient of eq. 5 w.r.t. alpha, beta and f.

More levels (beyond the paper: its conclusion names them as future work). Levels 3..L continue
below every drawn sub-tile: each node drawn at level l - 1 draws n_l distinct children without
replacement from its own attention (`sample_children`). The estimate folds from the leaves up: a
node's features are replaced by the without-replacement estimator over its children (eq. 9's
sequential terms, averaged), which is unbiased in value and gradient for the node's own sum
given that its children's estimates are (each level's estimator is linear in the features it
weights, and the draws below a node are independent of the draws above it); at level 2 the
two-stage estimator takes these estimates as its features (`expectation_levels`, exact target
`full_levels_sum`). `theory.enumeration.levels_bias` checks value and gradients by enumeration.

`unique_draws` synchronises once (the number N' of distinct tiles sets the size of what follows);
with `check=False` and the static bounds `n_tiles` / `max_count`, nothing else here does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import Tensor

from zoomin_lib.sampling import gumbel_top_k, sequential_terms, validate_probs
from zoomin_lib.syncs import host_sync

__all__ = [
    "UniqueDraws", "unique_draws", "expected_unique", "sample_subtiles", "subtile_support_ok", "expectation_two_stage",
    "full_two_stage_sum", "sample_children", "expectation_levels", "full_levels_sum",
]


@dataclass
class UniqueDraws:
    """The N' unique (image, tile) pairs among the first-stage draws of a batch."""

    batch: Tensor  # [U] image of each unique pair
    tile: Tensor  # [U] tile of each unique pair
    inverse: Tensor  # [B, N] unique pair of each draw
    rank: Tensor  # [B, N] number of earlier draws of the same image that hit the same tile
    counts: Tensor  # [U] how many draws hit each pair (m_c)

    @property
    def n_unique(self) -> int:
        """U, the number of unique (image, tile) pairs over the batch."""
        return int(self.batch.numel())


def expected_unique(probs: Tensor, n: int) -> Tensor:
    """E[N'] [B]: the expected number of distinct tiles among n iid draws from probs [B, T], sum_c 1 - (1 - p_c)^n."""
    return (1 - (1 - probs).pow(n)).sum(dim=-1)


def _same_tile_earlier(tiles: Tensor) -> Tensor:
    """[B, N, N] mask: entry (n, m) is True when draw m < n hit the same tile as draw n."""
    n = tiles.shape[1]
    same = tiles.unsqueeze(2) == tiles.unsqueeze(1)  # [B, N, N]
    before = torch.ones(n, n, dtype=torch.bool, device=tiles.device).tril(-1)
    return same & before


def unique_draws(tiles: Tensor, n_tiles: int | None = None, *, check: bool = True) -> UniqueDraws:
    """Group first-stage draws `tiles` [B, N] into unique (image, tile) pairs with ranks and counts.

    `n_tiles` (T, any bound above the largest tile index) saves reading it from the draws.
    """
    if tiles.dim() != 2 or tiles.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"tiles must be an integer tensor [B, N], got {tuple(tiles.shape)} {tiles.dtype}")
    if check and (tiles < 0).any():
        raise ValueError("tiles must be non-negative tile indices")
    tiles = tiles.long()
    if n_tiles is None:
        n_tiles = int(tiles.max()) + 1
    rows = torch.arange(tiles.shape[0], device=tiles.device).unsqueeze(1)  # [B, 1]
    keys = rows * n_tiles + tiles  # [B, N]
    with host_sync("distinct tiles N' (the size of the second stage)"):
        uniq, inverse, counts = torch.unique(keys.flatten(), return_inverse=True, return_counts=True)
    rank = _same_tile_earlier(tiles).sum(dim=2)  # [B, N]
    return UniqueDraws(
        batch=uniq // n_tiles,
        tile=uniq % n_tiles,
        inverse=inverse.view_as(tiles),
        rank=rank,
        counts=counts,
    )


def sample_subtiles(
    beta: Tensor,
    draws: UniqueDraws,
    generator: torch.Generator | None = None,
    *,
    max_count: int | None = None,
    check: bool = True,
) -> Tensor:
    """Draw each unique tile's m_c sub-tiles without replacement from `beta` [U, K2]; returns [B, N].

    `max_count` (any bound on m_c, such as min(N, K2)) saves reading max m_c from the draws. With
    `check=False`, a tile drawn more often than it has sub-tiles of positive attention is not
    reported here (use `subtile_support_ok`); its extra draws repeat a sub-tile.
    """
    if beta.shape[0] != draws.counts.shape[0]:
        raise ValueError(f"beta has {beta.shape[0]} rows but there are {draws.counts.shape[0]} unique tiles")
    if check:
        validate_probs(beta, "beta")
        support = (beta.detach() > 0).sum(dim=1)  # [U]
        short = support < draws.counts
        if short.any():
            u = int(short.nonzero()[0])
            raise ValueError(
                f"tile {int(draws.tile[u])} of image {int(draws.batch[u])} was drawn {int(draws.counts[u])} times "
                f"but has only {int(support[u])} sub-tiles of positive attention; lower N or use larger tiles"
            )
    k = int(draws.counts.max()) if max_count is None else min(int(max_count), beta.shape[1])
    order = gumbel_top_k(beta, k, generator)  # [U, k], draw order
    return order[draws.inverse, draws.rank.clamp(max=k - 1)]  # [B, N]


def subtile_support_ok(beta: Tensor, draws: UniqueDraws) -> Tensor:
    """bool [U]: each unique tile has at least as many sub-tiles of positive attention as it was drawn."""
    return (beta.detach() > 0).sum(dim=1) >= draws.counts


def expectation_two_stage(
    alpha: Tensor, tiles: Tensor, beta_drawn: Tensor, feats: Tensor, *, check: bool = True
) -> Tensor:
    """Unbiased estimate (value and gradient) of eq. 5 from two-stage draws; returns [B, D]."""
    if tiles.shape != beta_drawn.shape or feats.shape[:2] != tiles.shape or feats.dim() != 3:
        raise ValueError(
            f"tiles {tuple(tiles.shape)}, beta_drawn {tuple(beta_drawn.shape)} and feats {tuple(feats.shape)} "
            "must be [B, N], [B, N] and [B, N, D]"
        )
    tile_prob = alpha.gather(1, tiles.long())  # [B, N]
    if check:
        validate_probs(alpha, "alpha")
        b = beta_drawn.detach()
        if not torch.isfinite(b).all() or (b <= 0).any() or (b > 1 + 1e-6).any():
            raise ValueError("beta_drawn must hold the (0, 1] probabilities of drawn sub-tiles; got NaN, <= 0 or > 1")
        if (tile_prob.detach() <= 0).any():
            raise ValueError("tiles selects a tile of zero first-stage probability")
    ratio = tile_prob / tile_prob.detach()  # value 1; gradient: score of the stage-one draw
    terms = sequential_terms(beta_drawn, feats, _same_tile_earlier(tiles.long()))  # [B, N, D]
    return (ratio.unsqueeze(-1) * terms).mean(dim=1)  # [B, D]


def full_two_stage_sum(alpha: Tensor, beta: Tensor, feats: Tensor) -> Tensor:
    """The exact eq. 5 aggregate sum_c alpha_c sum_c' beta^c_c' f(c, c'): alpha [B, T], beta [B, T, K2], feats [B, T, K2, D]."""
    return torch.einsum("bt,btk,btkd->bd", alpha, beta, feats)


def sample_children(probs: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n distinct children of every node, drawn in sequence without replacement: probs [..., K] -> indices [..., n]."""
    if n > probs.shape[-1]:
        raise ValueError(f"cannot draw {n} distinct children from {probs.shape[-1]}")
    validate_probs(probs.detach().reshape(-1, probs.shape[-1]), "child attention")
    lead = probs.shape[:-1]
    return gumbel_top_k(probs.reshape(-1, probs.shape[-1]), n, generator).reshape(*lead, n)  # [..., n]


def expectation_levels(
    alpha: Tensor,
    tiles: Tensor,
    beta_drawn: Tensor,
    deeper_drawn: Sequence[Tensor],
    feats: Tensor,
    *,
    check: bool = True,
) -> Tensor:
    """Unbiased estimate (value and gradient) of the L-level target from L-level draws; returns [B, D].

    alpha [B, T], tiles and beta_drawn [B, N] as in `expectation_two_stage`; deeper_drawn[l - 3] holds
    the probabilities of level l's draws, [B, N, n_3, ..., n_l] (each node of level l - 1 drew n_l
    distinct children, in order along the last axis); feats [B, N, n_3, ..., n_L, D] at the leaves.
    """
    est = feats
    for level, drawn in reversed(list(enumerate(deeper_drawn, start=3))):
        if est.shape[:-1] != drawn.shape:
            raise ValueError(f"level {level}: drawn probabilities {tuple(drawn.shape)} do not match the features "
                             f"{tuple(est.shape)} (expected [..., n_{level}] and [..., n_{level}, D])")
        if check:
            d = drawn.detach()
            if not torch.isfinite(d).all() or (d <= 0).any() or (d > 1 + 1e-6).any():
                raise ValueError(f"level {level}: drawn probabilities must be in (0, 1]; got NaN, <= 0 or > 1")
        n, D = drawn.shape[-1], est.shape[-1]
        earlier = torch.ones(n, n, dtype=torch.bool, device=drawn.device).tril(-1)  # [n, n]
        flat = drawn.reshape(-1, n)  # [R, n], one row per parent node
        terms = sequential_terms(flat, est.reshape(-1, n, D), earlier.expand(flat.shape[0], n, n))  # [R, n, D]
        est = terms.mean(dim=1).reshape(*drawn.shape[:-1], D)  # [..., D], the parents' estimates
    return expectation_two_stage(alpha, tiles, beta_drawn, est, check=check)


def full_levels_sum(alpha: Tensor, beta: Tensor, deeper: Sequence[Tensor], feats: Tensor) -> Tensor:
    """The exact L-level aggregate: alpha [B, T], beta [B, T, K2], deeper[l - 3] [B, T, K2, ..., K_l], feats [..., K_L, D]."""
    agg = feats
    for probs in reversed(list(deeper)):
        agg = (probs.unsqueeze(-1) * agg).sum(dim=-2)  # sum over the deepest level's children
    return full_two_stage_sum(alpha, beta, agg)  # [B, D]
