"""Zoom-In with L >= 3 levels of zoom on whole slides (beyond the paper: Zoom-In sec. 5 names more levels as future work).

`SlideLevelsZoomIn` runs `zoomin_lib.beyond.levels.LevelsZoomIn` (eq. 5 with a sum over every level's cells, its
estimator eq. 9 folded level by level) over the same lazy `SlideSource` as the two-level `SlideZoomIn`: the first
stage strip by strip over the tissue tiles of V(x, s1), then at each level the views of the drawn cells only, and
the leaves' patches at level 0, every read counted by the reader. Tiles beyond the slide's border are
zero-padded as for the two-level model; cells wholly beyond it and leaves centred beyond it get no attention, so
every drawn location lies inside the slide, and inside its tissue tiles.

Modes on a slide: "sample" only. L levels have no exact top-k search (ZoomInNet's is for two), and "exact"
enumerates every cell of every tile. Inference is therefore sampling with a fixed seed: without a
generator, each slide is predicted with a fresh generator seeded with `seed`, so that a slide's prediction
does not depend on the slides before it. Training is `wsi.train.fit_slides` unchanged (eq. 12; the
contrastive sample draws every level from the complement of its attention).
"""

from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch

from zoomin_lib.beyond.levels import LevelsZoomIn
from zoomin_lib.models import ModelOutput, module_device
from zoomin_lib.wsi.predict import SlidePrediction, SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader, Stats

__all__ = ["SlideLevelsZoomIn"]


class SlideLevelsZoomIn(SlideZoomIn):
    """A `LevelsZoomIn` on slides: strip-wise alpha over tissue tiles, then each level's drawn cells, leaves at level 0.

    Everything but the modes is `SlideZoomIn`'s (statistics, opening, tissue, strips, reading, errors that
    name the file). A prediction's `tiles` and `subtiles` give, for each of the N x n_3 x ... x n_L patches,
    its tile and its level-2 cell (row-major in the tile), so that they line up with `centers`.
    """

    train_mode = "sample"
    eval_mode = "sample"
    supports_contrastive = True

    def __init__(
        self,
        net: LevelsZoomIn,
        stats: Stats | None = None,
        *,
        strip_pixels: int = 2**16,
        tissue_side: int = 512,
        tissue_only: bool = True,
        seed: int = 0,
    ) -> None:
        if not isinstance(net, LevelsZoomIn):
            raise ValueError(f"SlideLevelsZoomIn wraps a LevelsZoomIn, got {type(net).__name__}")
        super().__init__(net, stats, strip_pixels=strip_pixels, tissue_side=tissue_side, tissue_only=tissue_only)
        self.seed = int(seed)

    def forward(
        self,
        reader: SlideReader,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
        strips: bool | None = None,
    ) -> ModelOutput:
        """Classify one slide by L-level sampling (the only mode on a slide; see the module)."""
        if mode != "sample":
            raise ValueError(f"on slides LevelsZoomIn samples (mode 'sample'): it has no top-k search, and 'exact' "
                             f"enumerates every cell of every tile; got {mode!r}")
        return self._on(reader, lambda src: self.net(src, mode=mode, generator=generator, contrastive=contrastive), strips)

    def generator(self) -> torch.Generator:
        """A fresh generator on the model's device, seeded with `seed`: the fixed draws of an inference."""
        return torch.Generator(device=module_device(self)).manual_seed(self.seed)

    def predict_one(self, slide: Any, mode: str = "sample", generator: torch.Generator | None = None) -> SlidePrediction:
        """Probabilities and patch locations for one slide, sampled (with `generator`, or a fresh one seeded with `seed`)."""
        pred = super().predict_one(slide, mode, self.generator() if generator is None else generator)
        leaves = len(pred.centers) // max(1, len(pred.tiles))  # patches below each tile draw: n_3 x ... x n_L
        pred.tiles, pred.subtiles = np.repeat(pred.tiles, leaves), np.repeat(pred.subtiles, leaves)  # [N x leaves]
        return pred

    def predict_all(
        self, slides: Iterable[Any], mode: str = "sample", generator: torch.Generator | None = None
    ) -> tuple[list[SlidePrediction], list[str]]:
        """`SlideZoomIn.predict_all`, sampling by default."""
        return super().predict_all(slides, mode, generator)

    def predict(self, slides: Iterable[Any], mode: str = "sample", generator: torch.Generator | None = None) -> list[SlidePrediction]:
        """`SlideZoomIn.predict`, sampling by default."""
        return super().predict(slides, mode, generator)
