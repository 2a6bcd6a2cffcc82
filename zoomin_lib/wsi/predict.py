"""Zoom-In and one-stage ATS on whole slides: the same networks on a `SlideSource`, and per-slide predictions.

- `SlideZoomIn` wraps a trained `ZoomInNet` (the same a, b, f, g) with the training set's statistics
  and the reading options: `forward(reader)` is the net on the slide's `SlideSource`; "sample" is
  the two-stage estimator of eq. 9 (training), "topk" the exact top-k of alpha_c beta^c_c'
  (inference). Its memory does not grow with the slide: the first stage reads V(x, s1) in strips,
  tiles and sub-tiles are read when drawn. `predict` / `predict_all` prepare the next slide
  (opening, tissue) on a background thread.
- `SlideATS` is one-stage ATS (ATS sec. 3.3) on a slide: attention over the whole V(x, s), so its
  memory grows with the slide; chapter 04 measures the two side by side.
- `SlidePrediction` holds a slide's probabilities and where the model looked (level-0 boxes);
  `evaluate_slides` gives accuracy, AUC and time over a set of slides.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

import numpy as np
import torch
from torch import Tensor, nn

from zoomin_lib.geometry import tile_grid
from zoomin_lib.infra.slides import SlideError
from zoomin_lib.models import ATSNet, ModelOutput, ZoomInNet, module_device
from zoomin_lib.train.loop import binary_auc, evaluating
from zoomin_lib.wsi.reader import SlideReader, SlideSource, Stats, one_ahead, reader_for, slide_name

T = TypeVar("T")


@dataclass
class SlidePrediction:
    """One slide's prediction: class probabilities and where the model looked (level-0 pixels)."""

    slide: str
    probs: np.ndarray  # [C]
    mode: str
    tiles: np.ndarray  # [N] row-major tile index of each sub-tile (Zoom-In); empty for ATS
    tile_size: tuple[int, int]
    centers: np.ndarray  # [N, 2] sub-tile centres (row, col)
    patch_size: tuple[int, int]
    weights: np.ndarray | None  # [N] aggregation weights (top-k); None when sampled
    alpha: np.ndarray | None  # [n_rows, n_cols] first-stage attention (Zoom-In)
    seconds: float = 0.0
    reads: dict[str, int] = field(default_factory=dict)
    subtiles: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))  # [N] sub-tile of each (row-major in its tile's s2 view)
    opened: int = 0  # tiles whose second stage was computed (top-k: every tile the exact search opened)

    def joint(self, beta: np.ndarray, beta_tiles: np.ndarray) -> np.ndarray:
        """alpha_c beta^c_c' [N] of each sub-tile, given beta [U, K2] of the tiles `beta_tiles` [U] (Zoom-In eq. 5)."""
        if self.alpha is None or len(self.subtiles) != len(self.tiles):
            raise ValueError(f"{self.slide}: alpha * beta needs Zoom-In's alpha and the sub-tile indices")
        row = {int(t): i for i, t in enumerate(beta_tiles)}
        alpha = self.alpha.reshape(-1)  # [T]
        return np.array([alpha[int(t)] * beta[row[int(t)], int(s)] for t, s in zip(self.tiles, self.subtiles)])

    @property
    def predicted(self) -> int:
        """The most probable class."""
        return int(np.argmax(self.probs))

    def tile_boxes(self) -> np.ndarray:
        """(x, y, w, h) level-0 boxes of the distinct sampled tiles: int [U, 4]."""
        th, tw = self.tile_size
        n_cols = self.alpha.shape[1] if self.alpha is not None else 1
        uniq = np.unique(self.tiles)
        return np.array([[(t % n_cols) * tw, (t // n_cols) * th, tw, th] for t in uniq], dtype=np.int64).reshape(-1, 4)

    def subtile_boxes(self) -> np.ndarray:
        """(x, y, w, h) level-0 boxes of the sub-tiles: int [N, 4]."""
        ph, pw = self.patch_size
        c = np.asarray(self.centers, dtype=np.int64).reshape(-1, 2)
        return np.stack([c[:, 1] - pw // 2, c[:, 0] - ph // 2, np.full(len(c), pw), np.full(len(c), ph)], axis=1)

    def summary(self) -> dict[str, Any]:
        """A JSON-able summary (probabilities, counts, time, reads)."""
        return {"slide": self.slide, "probs": [float(p) for p in self.probs], "predicted": self.predicted,
                "mode": self.mode, "n_subtiles": int(len(self.centers)), "n_tiles": int(len(np.unique(self.tiles))),
                "seconds": self.seconds, "reads": dict(self.reads)}


def _as_stats(stats: Stats | None) -> tuple[Tensor, Tensor]:
    """Mean and std [1, 3, 1, 1] (0 and 1 when None)."""
    mean, std = stats if stats is not None else (torch.zeros(3), torch.ones(3))
    return (torch.as_tensor(mean, dtype=torch.float32).reshape(1, 3, 1, 1).detach().cpu().clone(),
            torch.as_tensor(std, dtype=torch.float32).reshape(1, 3, 1, 1).detach().cpu().clone())


class _SlideModel(nn.Module):
    """What the slide wrappers share: the training statistics (buffers: they follow `.to(device)`) and opening slides."""

    def __init__(self, stats: Stats | None, strip_pixels: int) -> None:
        super().__init__()
        mean, std = _as_stats(stats)
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.strip_pixels = int(strip_pixels)

    @property
    def stats(self) -> Stats:
        """(mean, std) on the host, for readers."""
        return self.mean.cpu(), self.std.cpu()

    def open(self, slide: Any, **kwargs: Any) -> SlideReader:
        """A reader for `slide` with this model's statistics."""
        return SlideReader(slide, self.stats, strip_pixels=self.strip_pixels, **kwargs)


class SlideZoomIn(_SlideModel):
    """A `ZoomInNet` on slides: strip-wise alpha over tissue tiles, beta of the drawn tiles, sub-tiles at level 0.

    The wrapped `net` keeps its meaning on tensors (training on in-memory images); here the same
    forward reads a `SlideSource` of the slide, on the device the model is on. With gradients
    (training) alpha comes from the reader's cached whole V(x, s1); without (inference) from strips of
    `strip_pixels` view pixels, halo included, so the first stage holds O(strip) whatever the slide's
    size. `tissue_only` restricts alpha (and its complement) to the tiles with tissue. "topk" is the
    exact top N of the joint alpha_c beta^c_c' (`ZoomInNet`): on an untrained, flat alpha it may open
    many tiles.
    """

    train_mode = "sample"
    eval_mode = "topk"
    supports_contrastive = True

    def __init__(
        self,
        net: ZoomInNet,
        stats: Stats | None = None,
        *,
        strip_pixels: int = 2**16,
        tissue_side: int = 512,
        tissue_only: bool = True,
    ) -> None:
        super().__init__(stats, strip_pixels)
        if not isinstance(net, ZoomInNet):
            raise ValueError(f"SlideZoomIn wraps a ZoomInNet, got {type(net).__name__}")
        self.net = net
        self.tissue_side = int(tissue_side)
        self.tissue_only = tissue_only

    # ---------------------------------------------------------------- reading
    def open(self, slide: Any, **kwargs: Any) -> SlideReader:
        """A reader for `slide` with this model's statistics; SlideError naming the file if it is smaller than a tile."""
        reader = super().open(slide, **kwargs)
        self.check(reader)
        return reader

    def check(self, reader: SlideReader) -> None:
        """SlideError naming the file unless the slide holds at least one tile."""
        H, W = reader.shape
        th, tw = self.net.tile_size
        if H < th or W < tw:
            reader.close()
            raise SlideError(reader.path, f"smaller than one tile: {W}x{H} pixels < {tw}x{th} (level 0)")

    def source(self, reader: SlideReader, strips: bool | None = None) -> SlideSource:
        """The slide as the net's pixel source, on the model's device; strips by default only without gradients."""
        strips = (not torch.is_grad_enabled()) if strips is None else strips
        return SlideSource(reader, module_device(self), strip_pixels=self.strip_pixels if strips else None,
                           tissue_only=self.tissue_only, tissue_side=self.tissue_side)

    def grid(self, reader: SlideReader) -> tuple[int, int]:
        """(n_rows, n_cols) of the tile grid."""
        return tile_grid(reader.shape, self.net.tile_size)

    def allowed(self, reader: SlideReader) -> Tensor:
        """Tiles alpha may select: bool [1, T] on the host (tissue tiles, or all)."""
        if not self.tissue_only:
            n_rows, n_cols = self.grid(reader)
            return torch.ones(1, n_rows * n_cols, dtype=torch.bool)
        return reader.tissue(self.net.tile_size, self.tissue_side).reshape(1, -1)

    # ---------------------------------------------------------------- the net on a slide
    def _on(self, reader: SlideReader, run: Callable[[SlideSource], T], strips: bool | None = None) -> T:
        """`run(source)` with errors that name the slide."""
        src = self.source(reader, strips)
        try:
            return run(src)
        except SlideError:
            raise
        except (OSError, ValueError) as err:  # a read error or a failed check that does not name the file yet
            raise SlideError(reader.path, f"{type(err).__name__}: {err}") from err
        finally:
            src.close()

    def tile_scores(self, reader: SlideReader, strips: bool = True) -> Tensor:
        """a's scores averaged over each tile: [T]; strip by strip, or from the whole (cached) view."""
        return self._on(reader, lambda src: self.net.tile_scores(src)[0], strips)

    def first_stage(self, reader: SlideReader, strips: bool | None = None) -> Tensor:
        """alpha [1, T] over the allowed tiles."""
        return self._on(reader, self.net.first_stage, strips)

    def second_stage(self, reader: SlideReader, tiles: Tensor) -> Tensor:
        """beta [U, K2] of tiles [U]."""
        return self._on(reader, lambda src: self.net.second_stage(src, torch.zeros_like(tiles), tiles))

    def centers(self, reader: SlideReader, tiles: Tensor, subtiles: Tensor) -> tuple[Tensor, Tensor]:
        """Level-0 centres (rows, cols) of sub-tiles of tiles (same shapes)."""
        return self.net.centers(tiles, subtiles, reader.shape)

    def forward(
        self,
        reader: SlideReader,
        mode: str = "sample",
        generator: torch.Generator | None = None,
        contrastive: bool = False,
        strips: bool | None = None,
    ) -> ModelOutput:
        """Classify one slide (batch of one): two-stage sampling ("sample", eq. 9) or top-k ("topk")."""
        if mode not in ("sample", "topk"):
            raise ValueError(f"on slides the modes are 'sample' and 'topk' (no 'exact' over every sub-tile), got {mode!r}")
        return self._on(reader, lambda src: self.net(src, mode=mode, generator=generator, contrastive=contrastive), strips)

    # ---------------------------------------------------------------- prediction
    def predict_one(self, slide: Any, mode: str = "topk", generator: torch.Generator | None = None) -> SlidePrediction:
        """Probabilities and locations for one slide (a path, Slide or SlideReader); errors name the file."""
        began = time.perf_counter()
        reader, opened = reader_for(slide, self.open)
        try:
            with evaluating(self), torch.no_grad():
                out = self(reader, mode=mode, generator=generator)
            n_rows, n_cols = self.grid(reader)
            return SlidePrediction(
                slide=slide_name(slide), probs=torch.softmax(out.logits, dim=1)[0].cpu().numpy(), mode=mode,
                tiles=out.tiles[0].cpu().numpy(), tile_size=self.net.tile_size, centers=out.centers[0].cpu().numpy(),
                patch_size=self.net.patch_size, weights=None if out.weights is None else out.weights[0].cpu().numpy(),
                alpha=out.alpha[0].reshape(n_rows, n_cols).cpu().numpy(), seconds=time.perf_counter() - began,
                reads=dict(reader.reads), subtiles=out.subtiles[0].cpu().numpy(),
                opened=0 if out.beta_tile is None else int(out.beta_tile.numel()),
            )
        finally:
            if opened:
                reader.close()

    def _prepared(self, slides: Sequence[Any]) -> Iterator[tuple[Any, SlideReader | Exception]]:
        """(slide, an open reader with its tissue found, or the error) for each slide, the next one prepared in the background."""

        def prepare(slide: Any) -> SlideReader | Exception:
            try:
                reader = slide if isinstance(slide, SlideReader) else self.open(slide)
                if self.tissue_only:
                    reader.tissue(self.net.tile_size, self.tissue_side)
                return reader
            except (SlideError, OSError, ValueError) as err:
                return err

        with ThreadPoolExecutor(1, thread_name_prefix="slide-open") as pool:
            jobs = [lambda s=s: (s, prepare(s)) for s in slides]
            yield from one_ahead(jobs, pool)

    def predict_all(
        self, slides: Iterable[Any], mode: str = "topk", generator: torch.Generator | None = None
    ) -> tuple[list[SlidePrediction], list[str]]:
        """`predict_one` for each slide, reporting bad slides ('<file>: <reason>') and going on with the rest.

        The next slide is opened and its tissue found on a background thread while the current
        one is predicted.
        """
        preds, problems = [], []
        for slide, ready in self._prepared(list(slides)):
            if isinstance(ready, Exception):
                problems.append(str(ready) if slide_name(slide) in str(ready) else f"{slide_name(slide)}: {ready}")
                continue
            try:
                pred = self.predict_one(ready, mode, generator)
                pred.slide = slide_name(slide)
                preds.append(pred)
            except (SlideError, OSError, ValueError) as err:
                problems.append(str(err) if slide_name(slide) in str(err) else f"{slide_name(slide)}: {err}")
            finally:
                if not isinstance(slide, SlideReader):
                    ready.close()
        return preds, problems

    def predict(self, slides: Iterable[Any], mode: str = "topk", generator: torch.Generator | None = None) -> list[SlidePrediction]:
        """`predict_one` for each slide (the next one prepared in the background); the first bad slide raises (SlideError naming it)."""
        preds = []
        for slide, ready in self._prepared(list(slides)):
            if isinstance(ready, Exception):
                raise ready if isinstance(ready, SlideError) else SlideError(slide_name(slide), str(ready))
            try:
                pred = self.predict_one(ready, mode, generator)
            finally:
                if not isinstance(slide, SlideReader):
                    ready.close()
            pred.slide = slide_name(slide)
            preds.append(pred)
        return preds


class SlideATS(_SlideModel):
    """One-stage ATS on a slide (ATS sec. 3.3): attention over the whole V(x, s), top-N patches at level 0.

    Its view, and a's activations over it, grow with the slide: this is the baseline of the
    memory-against-size comparison, with s the scale at which Zoom-In's second stage picks sub-tiles.
    """

    def __init__(self, net: ATSNet, stats: Stats | None = None, *, strip_pixels: int = 2**16) -> None:
        super().__init__(stats, strip_pixels)
        self.net = net

    def forward(self, reader: SlideReader) -> ModelOutput:
        """Deterministic top-N prediction of one slide."""
        src = SlideSource(reader, module_device(self), tissue_only=False)
        try:
            return self.net(src, mode="topk")
        except (OSError, ValueError) as err:
            raise SlideError(reader.path, f"{type(err).__name__}: {err}") from err
        finally:
            src.close()

    def predict_one(self, slide: Any) -> SlidePrediction:
        """Probabilities and patch centres for one slide."""
        began = time.perf_counter()
        reader, opened = reader_for(slide, self.open)
        try:
            with evaluating(self), torch.no_grad():
                out = self(reader)
        finally:
            if opened:
                reader.close()
        return SlidePrediction(
            slide=slide_name(slide), probs=torch.softmax(out.logits, dim=1)[0].cpu().numpy(), mode="topk",
            tiles=np.zeros(0, dtype=np.int64), tile_size=(0, 0), centers=out.centers[0].cpu().numpy(),
            patch_size=self.net.patch_size, weights=out.weights[0].cpu().numpy(), alpha=None,
            seconds=time.perf_counter() - began, reads=dict(reader.reads),
        )


def evaluate_slides(
    model: SlideZoomIn | SlideATS,
    slides: Sequence[Any],
    labels: Sequence[int],
    *,
    mode: str = "topk",
    generator: torch.Generator | None = None,
) -> tuple[dict[str, Any], list[SlidePrediction], list[str]]:
    """(accuracy, AUC, confusion and time per slide; the predictions; the slides that failed, named) over `slides`."""
    preds, problems, kept = [], [], []
    for slide, label in zip(slides, labels):
        try:
            p = model.predict_one(slide, mode, generator) if isinstance(model, SlideZoomIn) else model.predict_one(slide)
        except (SlideError, OSError, ValueError) as err:
            problems.append(str(err) if slide_name(slide) in str(err) else f"{slide_name(slide)}: {err}")
            continue
        preds.append(p)
        kept.append(int(label))
    if not preds:
        raise ValueError(f"no slide could be predicted: {problems}")
    y = np.array(kept)
    probs = np.stack([p.probs for p in preds])  # [n, C]
    pred = probs.argmax(axis=1)
    confusion = np.zeros((probs.shape[1], probs.shape[1]), dtype=int)
    np.add.at(confusion, (y, pred), 1)
    auc = binary_auc(probs[:, 1], y) if probs.shape[1] == 2 else math.nan
    seconds = np.array([p.seconds for p in preds])
    metrics = {"n": len(preds), "accuracy": float((pred == y).mean()), "auc": None if math.isnan(auc) else auc,
               "confusion": confusion.tolist(), "seconds_median": float(np.median(seconds)),
               "seconds_mean": float(seconds.mean()), "mode": mode, "failed": len(problems)}
    return metrics, preds, problems


def predict(
    model: SlideZoomIn, slides: Iterable[Any], mode: str = "topk", generator: torch.Generator | None = None
) -> tuple[list[SlidePrediction], list[str]]:
    """(a prediction per readable slide, '<file>: <reason>' per unreadable one) of a Zoom-In model on slides (paths, Slides, readers).

    `SlideZoomIn.predict_all`: on the model's device, the next slide prepared in the background.
    """
    if not isinstance(model, SlideZoomIn):
        raise ValueError(f"predict takes a SlideZoomIn (a ZoomInNet with its statistics), got {type(model).__name__}")
    return model.predict_all(slides, mode, generator)
