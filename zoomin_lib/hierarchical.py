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

`unique_draws` synchronises once (the number N' of distinct tiles sets the size of what follows);
with `check=False` and the static bounds `n_tiles` / `max_count`, nothing else here does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from zoomin_lib.sampling import gumbel_top_k, sequential_terms, validate_probs
from zoomin_lib.syncs import host_sync

__all__ = [
    "UniqueDraws", "unique_draws", "expected_unique", "sample_subtiles", "subtile_support_ok", "expectation_two_stage",
    "full_two_stage_sum",
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

