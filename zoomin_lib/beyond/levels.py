"""Zoom-In with L >= 3 levels of zoom: tile -> nested cells -> patch (beyond the paper; Zoom-In sec. 5 names more
levels as future work).

Eq. 5 with more levels: the target is sum over paths (c_1, ..., c_L) of alpha_{c_1} beta^{c_1}_{c_2}
gamma^{c_1 c_2}_{c_3} ... f(c_1, ..., c_L). The first two levels are drawn as Zoom-In draws them
(`hierarchical`: N tiles with replacement, then within each drawn tile as many distinct cells as it
was drawn). Levels 3..L continue below every drawn cell: each node drawn at level l - 1 draws n_l
distinct children without replacement from its own attention (`sample_children`).

The estimate folds from the leaves up (`expectation_levels`): a node's features are replaced by
the without-replacement estimator over its children (eq. 9's sequential terms, averaged), which is
unbiased in value and gradient for the node's own sum given that its children's estimates are:
each level's estimator is linear in the features it weights, and the draws below a node are
independent of the draws above it. At level 2 the two-stage estimator of eq. 9 takes these
estimates as its features. `full_levels_sum` is the exact target; `theory.enumeration.levels_bias`
checks value and gradients by enumerating every draw sequence.

Any image size (a slide's included): the cell grids nest in the tile grid of appendix F, whose partial last
row and column are tiles zero-padded beyond the border (sec. 2.1 iii); a cell wholly beyond the border, and a
leaf location whose centre lies beyond it, get no attention, so nothing drawn lies outside the image. The
contrastive sample of sec. 2.2 draws every level from the complement of its attention (`models.complement`).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn

from zoomin_lib.builders import networks
from zoomin_lib.geometry import tile_grid, tile_pool, view_size, view_to_full
from zoomin_lib.hierarchical import (
    expectation_two_stage,
    full_two_stage_sum,
    sample_subtiles,
    subtile_support_ok,
    unique_draws,
)
from zoomin_lib.models import (
    Gen,
    ModelOutput,
    Source,
    ZoomInNet,
    attention_distribution,
    complement,
    check_patch,
    check_positive_int,
    check_scale,
    module_device,
    patch_features,
    per_chunk,
    score_map,
)
from zoomin_lib.pixels import PixelSource, as_source
from zoomin_lib.sampling import gumbel_top_k, sample_with_replacement, sequential_terms, validate_probs
from zoomin_lib.syncs import Checks

__all__ = [
    "sample_children", "children_support_ok", "expectation_levels", "full_levels_sum", "LevelsZoomIn", "build_levels",
]


def sample_children(
    probs: Tensor, n: int, generator: torch.Generator | None = None, *, check: bool = True
) -> Tensor:
    """n distinct children of every node, drawn in sequence without replacement: probs [..., K] -> indices [..., n].

    With `check=False` nothing is validated on the host (no synchronisation): the caller checks that
    every node has at least n children of positive probability (`children_support_ok`).
    """
    if n > probs.shape[-1]:
        raise ValueError(f"cannot draw {n} distinct children from {probs.shape[-1]}")
    if check:
        validate_probs(probs.detach().reshape(-1, probs.shape[-1]), "child attention")
        if not bool(children_support_ok(probs, n).all()):
            raise ValueError(f"some node has fewer than {n} children of positive attention")
    lead = probs.shape[:-1]
    return gumbel_top_k(probs.reshape(-1, probs.shape[-1]), n, generator).reshape(*lead, n)  # [..., n]


def children_support_ok(probs: Tensor, n: int) -> Tensor:
    """bool [...]: each node (probs [..., K]) has at least n children of positive probability to draw from."""
    return (probs.detach() > 0).sum(dim=-1) >= n


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


class LevelsZoomIn(ZoomInNet):
    """Zoom-In with L >= 3 levels (beyond the paper: its conclusion names more levels as future work).

    Level 1 is ZoomInNet's first stage: alpha over the tiles (`cell_sizes[0]` px) from
    `attention[0]` on V(x, scales[0]). Each level l = 2..L-1 cuts every cell drawn at level l - 1
    into the aligned, nested cells of `cell_sizes[l - 1]` px and scores them with `attention[l - 1]`
    on the parent cell's view at `scales[l - 1]`, averaged over each child cell (appendix F's tile
    pooling, one level down). The leaf level L scores the locations of the view of each drawn
    level-(L - 1) cell at `scales[L - 1]`; the patch centred at a location is read at full
    resolution and featurised by f. Draws: N tiles with replacement, then within each drawn tile
    as many distinct level-2 cells as it was drawn (eq. 9's two stages), then `n_children[l - 3]`
    distinct children of every node drawn at level l - 1, for l = 3..L. A level's attention is
    computed only for the cells drawn above it: the memory of level l grows with the number of
    nodes drawn at level l - 1, not with the image. The estimate is `expectation_levels`.

    Modes: "sample" (training and inference) and "exact" (every path, for small images); the exact
    top-k search of ZoomInNet is not generalised here. Every cell size divides the one above. Any
    image size: the level-l cells nest in the tile grid (`cell_grid`), partial edge tiles padded with
    zeros; a cell wholly beyond the border and a leaf location centred beyond it get no attention.
    With `contrastive=True` every level draws from the complement of its attention (sec. 2.2).
    """

    train_mode = "sample"
    eval_mode = "sample"
    supports_contrastive = True

    def __init__(
        self,
        attention: Sequence[nn.Module],
        features: nn.Module,
        n_classes: int,
        scales: Sequence[float],
        cell_sizes: Sequence[int],
        patch_size: int | tuple[int, int],
        n_patches: int,
        n_children: Sequence[int],
        chunk_size: int | None = None,
        tile_chunk: int | None = None,
    ) -> None:
        L = len(attention)
        if L < 3 or len(scales) != L or len(cell_sizes) != L - 1 or len(n_children) != L - 2:
            raise ValueError(
                f"L = {L} levels need L >= 3 attention networks, L scales, L - 1 cell sizes and L - 2 numbers of "
                f"children; got {len(scales)}, {len(cell_sizes)} and {len(n_children)}"
            )
        super().__init__(attention[0], attention[1], features, n_classes, scales[0], scales[1], cell_sizes[0],
                         patch_size, n_patches, chunk_size, tile_chunk)
        for i, size in enumerate(cell_sizes):
            check_positive_int(size, f"cell_sizes[{i}]")
            if i and cell_sizes[i - 1] % size:
                raise ValueError(f"cell size {size} does not divide the cell size above it, {cell_sizes[i - 1]}")
        for i, sc in enumerate(scales):
            check_scale(sc, f"scales[{i}]")
        for i, n in enumerate(n_children):
            check_positive_int(n, f"n_children[{i}]")
        self.deeper = nn.ModuleList(attention[2:])  # the networks of levels 3..L
        self.scales, self.cell_sizes, self.n_children = list(scales), list(cell_sizes), list(n_children)
        leaf = view_size((cell_sizes[-1], cell_sizes[-1]), scales[-1])
        self.child_counts = [(c // d) ** 2 for c, d in zip(cell_sizes, cell_sizes[1:])] + [leaf[0] * leaf[1]]
        for level, (k, n) in enumerate(zip(self.child_counts[1:], n_children), start=3):
            if n > k:
                raise ValueError(f"level {level} draws {n} distinct children of every node, which has only {k}")

    def _network(self, level: int) -> nn.Module:
        """The attention network of `level` (1-based)."""
        return (self.attention_a, self.attention_b, *self.deeper)[level - 1]

    def cell_grid(self, size: tuple[int, int], level: int) -> tuple[int, int]:
        """(rows, cols) of the level-`level` cell grid (level 1: the tiles), nested in the tile grid (edge tiles padded)."""
        n_rows, n_cols = tile_grid(size, self.tile_size)
        k = self.cell_sizes[0] // self.cell_sizes[level - 1]
        return n_rows * k, n_cols * k

    def _top_left(self, level: int, cell: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Full-resolution (top, left) of level-`level` cells `cell` (indices in `cell_grid`; same shapes)."""
        side, cols = self.cell_sizes[level - 1], self.cell_grid(size, level)[1]
        return torch.div(cell, cols, rounding_mode="floor") * side, (cell % cols) * side

    def _source_cells(self, level: int, cell: Tensor, size: tuple[int, int]) -> Tensor:
        """Level-`level` cells as indices of the source's grid of cells of that size (`geometry.tile_grid`, ceil).

        The two grids differ only beyond the border; a cell wholly beyond it (never drawn; enumerated with
        weight 0 in "exact" mode) is clamped onto the last row or column so that nothing outside is read.
        """
        side = self.cell_sizes[level - 1]
        cols = self.cell_grid(size, level)[1]
        n_rows, n_cols = tile_grid(size, (side, side))
        r = torch.div(cell, cols, rounding_mode="floor").clamp(max=n_rows - 1)
        return r * n_cols + (cell % cols).clamp(max=n_cols - 1)

    def _inside(self, level: int, cell: Tensor, size: tuple[int, int]) -> Tensor:
        """bool [M, K_level]: which children of level-(level - 1) cells `cell` [M] lie inside the image.

        A child cell is inside when its top-left pixel is (it overlaps the image); a leaf location when
        its full-resolution centre is. A parent wholly beyond the border keeps all its children (its own
        weight is 0), so that its distribution is defined.
        """
        parent = self.cell_sizes[level - 2]
        top, left = self._top_left(level - 1, cell, size)  # [M]
        dev = cell.device
        if level < len(self.scales):
            small = self.cell_sizes[level - 1]
            offsets = torch.arange(parent // small, device=dev) * small  # [k]
            dr = dc = offsets
        else:
            u, v = view_size((parent, parent), self.scales[-1])
            dr, _ = view_to_full(torch.arange(u, device=dev), torch.zeros(u, dtype=torch.long, device=dev), (u, v),
                                 (parent, parent), check=False)  # [u]
            _, dc = view_to_full(torch.zeros(v, dtype=torch.long, device=dev), torch.arange(v, device=dev), (u, v),
                                 (parent, parent), check=False)  # [v]
        rows_in = (top[:, None] + dr[None]) < size[0]  # [M, k or u]
        cols_in = (left[:, None] + dc[None]) < size[1]  # [M, k or v]
        inside = (rows_in[:, :, None] & cols_in[:, None, :]).flatten(1)  # [M, K_level]
        return inside | ~inside.any(dim=1, keepdim=True)

    def _children(
        self, src: PixelSource, level: int, batch: Tensor, cell: Tensor, checks: Checks, contrastive: bool = False
    ) -> tuple[Tensor, Tensor]:
        """(attention [*S, K_level] over the children of level-(level - 1) cells `cell` [*S] of images `batch` [*S],
        the distribution the children are drawn from: the attention, or its complement when `contrastive`)."""
        parent = self.cell_sizes[level - 2]
        size = src.size
        shape, flat_b, flat_c = batch.shape, batch.reshape(-1), cell.reshape(-1)
        u, v = view_size((parent, parent), self.scales[level - 1])
        net = self._network(level)
        read = self._source_cells(level - 1, flat_c, size)  # [M] in the source's grid
        parts = [score_map(net, tv, f"the attention of level {level}")[:, 0]  # [c, u, v]
                 for tv in src.tile_view_chunks(flat_b, read, (parent, parent), self.scales[level - 1],
                                                per_chunk(self.tile_chunk, u * v))]
        scores = torch.cat(parts) if parts else torch.zeros(0, u, v, dtype=src.dtype, device=src.device)  # [M, u, v]
        if level < len(self.scales):  # a cell level: average over the nested child cells
            small = self.cell_sizes[level - 1]
            scores = tile_pool(scores, (parent, parent), (small, small))  # [M, k, k]
        inside = self._inside(level, flat_c, size)  # [M, K_level]
        probs = attention_distribution(scores.flatten(1), f"level-{level} attention", checks, inside)  # [M, K_level]
        draw = complement(probs, inside) if contrastive else probs
        return probs.view(*shape, probs.shape[-1]), draw.view(*shape, probs.shape[-1])

    def _child_cell(self, level: int, cell: Tensor, child: Tensor, size: tuple[int, int]) -> Tensor:
        """Index in the level-`level` `cell_grid` of child `child` of level-(level - 1) cells `cell` (same shapes)."""
        parent, small = self.cell_sizes[level - 2], self.cell_sizes[level - 1]
        k, cols_parent, cols = parent // small, self.cell_grid(size, level - 1)[1], self.cell_grid(size, level)[1]
        r, c = torch.div(cell, cols_parent, rounding_mode="floor"), cell % cols_parent
        return (r * k + torch.div(child, k, rounding_mode="floor")) * cols + c * k + child % k

    def _leaf_centers(self, cell: Tensor, loc: Tensor, size: tuple[int, int]) -> tuple[Tensor, Tensor]:
        """Full-resolution centres of view locations `loc` of the deepest cells `cell` (same shapes)."""
        side = self.cell_sizes[-1]
        u, v = view_size((side, side), self.scales[-1])
        dr, dc = view_to_full(torch.div(loc, v, rounding_mode="floor"), loc % v, (u, v), (side, side), check=False)
        top, left = self._top_left(len(self.scales) - 1, cell, size)
        return top + dr, left + dc

    def forward(self, x: Source, mode: str = "sample", generator: Gen = None, contrastive: bool = False) -> ModelOutput:
        """Classify x [B, C, H, W] (or a PixelSource) by L-level sampling ("sample") or over every path ("exact");
        `contrastive`: every level drawn from (summed over) the complement of its attention (sec. 2.2)."""
        if mode not in ("sample", "exact"):
            raise ValueError(f"LevelsZoomIn has modes 'sample' and 'exact' (no top-k search), got {mode!r}")
        src = as_source(x, module_device(self))
        size = src.size
        check_patch(self.patch_size, size)
        checks = Checks()
        B, dev, L = src.batch_size, src.device, len(self.scales)
        T = src.tile_count(self.tile_size)
        allowed = src.allowed_tiles(self.tile_size)  # [B, T] (a slide's tissue) or None
        alpha = attention_distribution(self.tile_scores(src), "first-stage attention", checks, allowed)  # [B, T]
        p1 = complement(alpha, allowed) if contrastive else alpha  # what level 1 draws from
        if mode == "sample":
            N, K2 = self.n_patches, self.child_counts[0]
            tiles = sample_with_replacement(p1, N, generator, check=False)  # [B, N]
            draws = unique_draws(tiles, T, check=False)  # one synchronisation: N'
            beta, p2 = self._children(src, 2, draws.batch, draws.tile, checks, contrastive)  # [U, K2] each
            sub = sample_subtiles(p2, draws, generator, max_count=min(N, K2), check=False)  # [B, N]
            checks.add(subtile_support_ok(p2, draws), f"a tile was drawn more often than it has cells of positive "
                                                      f"attention (N = {N}, {K2} cells a tile); lower N")
            beta_drawn = p2[draws.inverse, sub]  # [B, N]
            batch = torch.arange(B, device=dev).view(B, 1).expand(B, N)  # [B, N]
            cell, child, deeper = tiles, sub, []
            for level in range(3, L + 1):  # nodes [B, N, n_3, ..., n_{level-1}]
                cell = self._child_cell(level - 1, cell, child, size)
                _, probs = self._children(src, level, batch, cell, checks, contrastive)  # [*S, K_level]
                n_l = self.n_children[level - 3]
                checks.add(children_support_ok(probs, n_l).all(), f"a level-{level - 1} node has fewer than {n_l} "
                           f"children of positive attention at level {level}; lower n_children[{level - 3}]")
                child = sample_children(probs, n_l, generator, check=False)  # [*S, n_level]
                deeper.append(probs.gather(-1, child))
                cell, batch = cell.unsqueeze(-1).expand_as(child), batch.unsqueeze(-1).expand_as(child)
            rows, cols = self._leaf_centers(cell, child, size)  # [B, N, n_3, ..., n_L]
            feats = patch_features(self.features, src, rows.flatten(1), cols.flatten(1), self.patch_size,
                                    self.chunk_size).view(*rows.shape, -1)  # [B, N, n_3, ..., n_L, D]
            agg = expectation_levels(p1, tiles, beta_drawn, deeper, feats, check=False)  # [B, D]
            weights, drawn = None, (tiles, sub)
        else:  # every path: level l's nodes [B, T, K2, ..., K_{l-1}]
            batch = torch.arange(B, device=dev).view(B, 1).expand(B, T)  # [B, T]
            cell = torch.arange(T, device=dev).expand(B, T)  # [B, T]
            beta, p2 = self._children(src, 2, batch, cell, checks, contrastive)  # [B, T, K2] each
            probs, deeper = p2, []
            for level in range(3, L + 2):
                child = torch.arange(probs.shape[-1], device=dev).expand_as(probs)  # every child
                cell, batch = cell.unsqueeze(-1).expand_as(child), batch.unsqueeze(-1).expand_as(child)
                if level == L + 1:
                    break
                cell = self._child_cell(level - 1, cell, child, size)
                _, probs = self._children(src, level, batch, cell, checks, contrastive)
                deeper.append(probs)
            rows, cols = self._leaf_centers(cell, child, size)  # [B, T, K2, ..., K_L]
            feats = patch_features(self.features, src, rows.flatten(1), cols.flatten(1), self.patch_size,
                                    self.chunk_size).view(*rows.shape, -1)  # [B, T, K2, ..., K_L, D]
            agg = full_levels_sum(p1, p2, deeper, feats)  # [B, D]
            weights, beta, drawn = None, beta.flatten(0, 1), (None, None)
        checks.resolve()
        return ModelOutput(logits=self.g(agg), features=agg, alpha=alpha, betas=beta, tiles=drawn[0],
                           subtiles=drawn[1], centers=torch.stack((rows, cols), dim=-1).flatten(1, -2),
                           weights=weights, mode=mode, contrastive=contrastive)


def build_levels(
    *, in_channels: int, n_classes: int, scales: Sequence[float], cell_sizes: Sequence[int],
    patch_size: int | tuple[int, int], n_patches: int, n_children: Sequence[int], backbone: str = "lenet",
) -> LevelsZoomIn:
    """LevelsZoomIn with the table-5/6 networks: a as Zoom-In's (unbounded), b's kind at every deeper level, f."""
    a, b, f = networks(backbone, in_channels, bounded_a=False)
    deeper = [networks(backbone, in_channels)[1] for _ in scales[2:]]
    return LevelsZoomIn([a, b, *deeper], f, n_classes, scales, cell_sizes, patch_size, n_patches, n_children)
