"""Zoom-In with box annotations: pre-training a, b and f on the annotated object, and an attention loss.

Zoom-In appendix L supervises the attention with pixel-level annotations (eq. 13) and pre-trains
a, b and f as classifiers of annotated patches. Road scenes (the speed-limit sign's box) and fMoW
(the object's box) come with boxes too. This module uses them the same way, for `ZoomInNet`:

- `box_mask` rasterises boxes (x0, y0, x1, y1) into the ROI mask M [H, W];
- `attention_targets` reduces M to the first-stage tiles (the fraction of each tile that is ROI,
  `losses.mask_to_view`) and to the s2 grid of each computed tile (1 where the location holds ROI);
- `losses.attention_nll` is the cross-entropy between the attention and the normalised mask,
  -sum_c (M_c / sum M) log alpha_c, and the same for each beta^c. Eq. 13 compares alpha with the
  binary mask by MSE; on 12 tiles and 9,216 sub-tile locations a softmax near uniform has almost no
  MSE gradient (chapter 06 measured the MSE variant finding no sign tile), while the cross-entropy's
  gradient alpha - M / sum M does not vanish. Images without ROI add nothing;
- `box_examples` and `pretrain_from_boxes` (`pretrained_from_boxes` wraps them into a model factory): a learns a dense map of the ROI on V(x, s1) (per-location
  logistic loss) and alpha's cross-entropy; b the same on the tile views at s2; f and g classify
  sub-tiles centred inside the box (the image's class) or away from it (`background_class`, when the
  data set has one). A tile's mean score dilutes a small object to a per cent of the tile (sec. 2.1);
  the dense loss teaches a where the object is, the cross-entropy how strongly to score it.

A model trained this way uses annotations the papers' models for these data sets do not have; the
chapters label it "Zoom-In + boxes".
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoomin_lib.geometry import extract_patches, tile_pool, tile_top_left, view, view_size
from zoomin_lib.infra.config import default_device
from zoomin_lib.losses import attention_nll, mask_to_view
from zoomin_lib.models import ModelOutput, ZoomInNet
from zoomin_lib.train.loop import training_mode

__all__ = ["box_mask", "tile_masks", "attention_targets", "box_attention_loss", "BoxExamples",
           "box_term", "box_examples", "fit_steps", "pretrain_from_boxes", "pretrained_from_boxes"]


def box_mask(boxes: Sequence[Sequence[float]] | np.ndarray, height: int, width: int) -> Tensor:
    """The ROI mask [H, W] (float 0/1) of boxes (x0, y0, x1, y1) in pixels, clipped to the image."""
    mask = torch.zeros(height, width)
    for box in boxes:
        if len(box) != 4:
            raise ValueError(f"a box is (x0, y0, x1, y1), got {tuple(box)}")
        x0, y0, x1, y1 = (float(v) for v in box)
        if not all(math.isfinite(v) for v in (x0, y0, x1, y1)) or x1 < x0 or y1 < y0:
            raise ValueError(f"box {tuple(box)} is not (x0, y0, x1, y1) with x0 <= x1 and y0 <= y1")
        c0, r0 = max(0, int(math.floor(x0))), max(0, int(math.floor(y0)))
        c1, r1 = min(width, int(math.ceil(x1))), min(height, int(math.ceil(y1)))
        if c1 > c0 and r1 > r0:
            mask[r0:r1, c0:c1] = 1
    return mask


def tile_masks(model: ZoomInNet, mask: Tensor, batch: Tensor, tile: Tensor) -> Tensor:
    """[U, u * v]: 1 where the s2 location of tile `tile[k]` of image `batch[k]` holds ROI (mask [B, H, W])."""
    th, tw = model.tile_size
    H, W = mask.shape[-2:]
    top, left = tile_top_left(tile, (H, W), model.tile_size)
    crops = []
    for b, r, c in zip(batch.tolist(), top.tolist(), left.tolist()):
        crop = mask.new_zeros(th, tw)
        part = mask[b, r : r + th, c : c + tw]
        crop[: part.shape[0], : part.shape[1]] = part
        crops.append(crop)
    if not crops:
        return mask.new_zeros(0, model.subview_size[0] * model.subview_size[1])
    return mask_to_view(torch.stack(crops), view_size=model.subview_size).flatten(1)  # [U, u*v]


def attention_targets(model: ZoomInNet, out: ModelOutput, mask: Tensor) -> tuple[Tensor, Tensor]:
    """(tile ROI fractions [B, T], s2 ROI masks [U, K2] of the tiles whose beta `out` computed) from the mask [B, H, W]."""
    if mask.dim() != 3 or mask.shape[0] != out.alpha.shape[0]:
        raise ValueError(f"mask must be [B, H, W] with B = {out.alpha.shape[0]}, got {tuple(mask.shape)}")
    alpha_target = mask_to_view(mask, tile_size=model.tile_size, rule="fraction").flatten(1)  # [B, T]
    beta_target = (tile_masks(model, mask, out.beta_batch, out.beta_tile) if out.betas is not None
                   else mask.new_zeros(0, 0))  # [U, K2]
    return alpha_target, beta_target


def box_attention_loss(model: ZoomInNet, out: ModelOutput, mask: Tensor) -> Tensor:
    """attention_nll of alpha plus that of every computed beta^c, against the ROI mask [B, H, W]."""
    alpha_target, beta_target = attention_targets(model, out, mask)
    loss = attention_nll(out.alpha, alpha_target)
    if out.betas is not None and out.betas.numel():
        loss = loss + attention_nll(out.betas, beta_target)
    return loss


def box_term(weight: float) -> Callable[[nn.Module, ModelOutput, Tensor, Sequence[Tensor]], Tensor]:
    """An `extra_terms` entry of `steps.sampling_loss`: `weight` x `box_attention_loss` on batches (x, y, masks)."""

    def term(model: nn.Module, out: ModelOutput, y: Tensor, extra: Sequence[Tensor]) -> Tensor:
        if not extra:
            raise ValueError("the box term needs batches (x, y, masks) with ROI masks [B, H, W]")
        if out.alpha is None:
            raise ValueError(f"the box term needs a model with attention (Zoom-In, ATS), not {type(model).__name__}")
        return weight * box_attention_loss(model, out, extra[0])

    return term


@dataclass
class BoxExamples:
    """What pre-training sees: s1 views with their masks, s2 tile views with theirs, and labelled sub-tiles."""

    views: list[Tensor] = field(default_factory=list)  # each [C, h1, w1]
    view_masks: list[Tensor] = field(default_factory=list)  # each [h1, w1], 1 on ROI
    tile_fractions: list[Tensor] = field(default_factory=list)  # each [T], ROI fraction per tile
    image_sizes: list[tuple[int, int]] = field(default_factory=list)
    tiles: list[Tensor] = field(default_factory=list)  # each [C, u, v]
    tile_rois: list[Tensor] = field(default_factory=list)  # each [u, v]
    subtiles: list[Tensor] = field(default_factory=list)  # each [C, p, p]
    subtile_labels: list[int] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many examples of each kind (and how many with ROI)."""
        return {"views": len(self.views), "views_with_roi": sum(int(m.any()) for m in self.view_masks),
                "tiles": len(self.tiles), "tiles_with_roi": sum(int(m.any()) for m in self.tile_rois),
                "subtiles": len(self.subtiles)}


def _add_image(model: ZoomInNet, ex: BoxExamples, x: Tensor, mask: Tensor, label: int, background_class: int | None,
               subtiles: int, background: int, negative_tiles: int, gen: torch.Generator) -> None:
    """Append one image's views, tiles and sub-tiles (x [1, C, H, W], mask [H, W]) to `ex`."""
    H, W = x.shape[-2:]
    ex.views.append(view(x, model.scale1)[0])
    ex.view_masks.append(mask_to_view(mask[None], view_size=view_size((H, W), model.scale1))[0])
    ex.tile_fractions.append(mask_to_view(mask[None], tile_size=model.tile_size, rule="fraction").flatten())
    ex.image_sizes.append((int(H), int(W)))
    fractions = ex.tile_fractions[-1]
    positive = torch.nonzero(fractions > 0).flatten()
    negative = torch.nonzero(fractions == 0).flatten()
    chosen = negative[torch.randperm(len(negative), generator=gen)[:negative_tiles]]
    for tile in torch.cat([positive, chosen]):
        one = tile.view(1)
        top, left = (int(v) for v in tile_top_left(one, (H, W), model.tile_size))
        th, tw = model.tile_size
        patch = extract_patches(x, torch.zeros(1, dtype=torch.long), torch.tensor([top + th // 2]),
                                torch.tensor([left + tw // 2]), (th, tw))  # [1, C, th, tw], zero beyond the image
        ex.tiles.append(view(patch, model.scale2)[0])
        ex.tile_rois.append(tile_masks(model, mask[None], torch.zeros(1, dtype=torch.long), one)[0].view(*model.subview_size))
    roi = torch.nonzero(mask > 0)  # [m, 2] (row, col)
    ph, pw = model.patch_size
    centres, targets = [], []
    for _ in range(subtiles if len(roi) else 0):  # near the ROI: halfway between an ROI pixel and its window's ROI centroid
        r, c = (int(v) for v in roi[int(torch.randint(len(roi), (1,), generator=gen))])
        near = torch.nonzero(mask[max(0, r - ph // 2) : r + ph // 2 + 1, max(0, c - pw // 2) : c + pw // 2 + 1] > 0).float()
        cy, cx = near.mean(dim=0) + torch.tensor([max(0, r - ph // 2), max(0, c - pw // 2)])
        centres.append((round((r + float(cy)) / 2), round((c + float(cx)) / 2)))
        targets.append(label)
    for _ in range(background if background_class is not None else 0):  # away from it: no ROI in the sub-tile
        for _ in range(20):
            r, c = int(torch.randint(H, (1,), generator=gen)), int(torch.randint(W, (1,), generator=gen))
            if not bool(mask[max(0, r - ph // 2) : r + ph // 2 + 1, max(0, c - pw // 2) : c + pw // 2 + 1].any()):
                centres.append((r, c))
                targets.append(int(background_class))
                break
    for (r, c), target in zip(centres, targets):
        ex.subtiles.append(extract_patches(x, torch.zeros(1, dtype=torch.long), torch.tensor([r]), torch.tensor([c]),
                                           model.patch_size)[0])
        ex.subtile_labels.append(int(target))


def box_examples(
    model: ZoomInNet,
    images: Iterable[tuple[Tensor, Tensor, int]],
    *,
    background_class: int | None = None,
    subtiles_per_image: int = 4,
    background_per_image: int = 2,
    negative_tiles: int = 1,
    generator: torch.Generator | None = None,
) -> BoxExamples:
    """Pre-training examples from (image [1, C, H, W], ROI mask [H, W], label) triples, read one image at a time.

    Per image: its s1 view and mask; the s2 views of the tiles holding ROI and of `negative_tiles`
    tiles without; `subtiles_per_image` sub-tiles centred near random ROI pixels (halfway to the centroid
    of the ROI in the sub-tile, so a small object is seen whole; the image's label) and, with a
    `background_class`, `background_per_image` sub-tiles holding no ROI (that class). An image without
    ROI gives only views, tiles and background examples.
    """
    gen = generator or torch.Generator().manual_seed(0)
    ex = BoxExamples()
    for x, mask, label in images:
        if x.dim() != 4 or x.shape[0] != 1:
            raise ValueError(f"box_examples takes one image [1, C, H, W] at a time, got {tuple(x.shape)}")
        if tuple(mask.shape) != tuple(x.shape[-2:]):
            raise ValueError(f"mask {tuple(mask.shape)} does not match the image {tuple(x.shape[-2:])}")
        with torch.no_grad():
            _add_image(model, ex, x, mask, int(label), background_class, subtiles_per_image, background_per_image,
                       negative_tiles, gen)
    if not any(int(m.any()) for m in ex.view_masks):
        raise ValueError("no image with a box: pre-training from boxes needs annotated images")
    return ex


def _grouped(keys: Sequence[Any]) -> dict[Any, list[int]]:
    """Indices grouped by key (examples of one shape, and for views one image size, can share a mini-batch)."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    return groups


def _batches(groups: dict[Any, list[int]], batch_size: int, gen: torch.Generator) -> list[list[int]]:
    """Shuffled mini-batches of indices, each within one shape group."""
    out = []
    for idx in groups.values():
        order = torch.randperm(len(idx), generator=gen).tolist()
        out += [[idx[i] for i in order[k : k + batch_size]] for k in range(0, len(order), batch_size)]
    return [out[i] for i in torch.randperm(len(out), generator=gen).tolist()]


def _dense_and_nll(scores: Tensor, masks: Tensor, pooled: Tensor, targets: Tensor, pos_weight: float) -> Tensor:
    """Per-location logistic loss of score maps [M, 1, h, w] on masks [M, h, w] plus the cross-entropy of softmax(pooled [M, K]) on targets [M, K]."""
    dense = F.binary_cross_entropy_with_logits(scores[:, 0], masks, pos_weight=scores.new_tensor(pos_weight))
    return dense + attention_nll(pooled.softmax(dim=1), targets)


def _top_hit(pooled: Tensor, targets: Tensor) -> list[float]:
    """For each row with ROI: 1.0 if the highest score falls on ROI, else 0.0."""
    has = targets.sum(dim=1) > 0
    top = pooled[has].argmax(dim=1)
    return (targets[has].gather(1, top[:, None])[:, 0] > 0).float().tolist()


def fit_steps(
    params: Iterable[nn.Parameter], loss_of: Callable[[list[int]], Tensor], batches: Iterable[list[int]], lr: float
) -> list[float]:
    """Adam on `params`, one step per batch of example indices, on loss_of(indices); the losses, in order.

    The one loop of appendix L's pre-training, whatever the annotations are (boxes on images here,
    polygons on slides in `zoomin_lib.wsi.train`) and however the batches are drawn.
    """
    opt = torch.optim.Adam(list(params), lr=lr)
    losses = []
    for idx in batches:
        loss = loss_of(idx)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses


def pretrain_from_boxes(
    model: ZoomInNet,
    examples: BoxExamples,
    *,
    epochs: int | dict[str, int] = 20,
    lr: float = 3e-3,
    batch_size: int = 16,
    pos_weight: float = 50.0,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Fit a, b, then f and g on `examples` (epochs an int or {"a": .., "b": .., "f": ..}); the fits' summaries.

    The model is moved to `device` (None: a GPU when there is one) and trains there; the examples
    stay on the host and move batch by batch.

    a: on V(x, s1), the per-location logistic loss against the ROI (positives weighted `pos_weight`)
    plus alpha's cross-entropy against the tile ROI fractions. b: the same on the tile views at s2
    and beta. f with g: cross-entropy on the labelled sub-tiles. Each summary holds the first and last
    epoch's mean loss and, for a and b, how often the top tile (sub-tile location) holds ROI.
    """
    epochs = epochs if isinstance(epochs, dict) else {"a": epochs, "b": epochs, "f": epochs}
    gen = generator or torch.Generator().manual_seed(0)
    dev = default_device() if device is None else torch.device(device)
    model.to(dev)
    fits: dict[str, Any] = {}
    with training_mode(model):
        def stage_a(idx: list[int]) -> tuple[Tensor, Tensor, Tensor]:
            x = torch.stack([examples.views[i] for i in idx]).to(dev)  # [M, C, h1, w1]
            s = model.attention_a(x)  # [M, 1, h1, w1]
            pooled = tile_pool(s[:, 0], examples.image_sizes[idx[0]], model.tile_size).flatten(1)  # [M, T]
            targets = torch.stack([examples.tile_fractions[i] for i in idx]).to(dev)
            masks = torch.stack([examples.view_masks[i] for i in idx]).to(dev)
            return _dense_and_nll(s, masks, pooled, targets, pos_weight), pooled, targets

        def stage_b(idx: list[int]) -> tuple[Tensor, Tensor, Tensor]:
            x = torch.stack([examples.tiles[i] for i in idx]).to(dev)  # [M, C, u, v]
            s = model.attention_b(x)  # [M, 1, u, v]
            masks = torch.stack([examples.tile_rois[i] for i in idx]).to(dev)
            return _dense_and_nll(s, masks, s.flatten(1), masks.flatten(1), pos_weight), s.flatten(1), masks.flatten(1)

        def stage_f(idx: list[int]) -> tuple[Tensor, None, None]:
            x = torch.stack([examples.subtiles[i] for i in idx]).to(dev)  # [M, C, p, p]
            y = torch.tensor([examples.subtile_labels[i] for i in idx], device=dev)
            return F.cross_entropy(model.g(model.features(x)), y), None, None

        view_keys = [(tuple(v.shape), size) for v, size in zip(examples.views, examples.image_sizes)]
        stages = (("a", model.attention_a.parameters(), stage_a, examples.views, view_keys),
                  ("b", model.attention_b.parameters(), stage_b, examples.tiles, [tuple(t.shape) for t in examples.tiles]),
                  ("f", [*model.features.parameters(), *model.g.parameters()], stage_f, examples.subtiles,
                   [tuple(t.shape) for t in examples.subtiles]))
        for key, params, step, items, keys in stages:
            n_epochs = int(epochs.get(key, 0))
            if n_epochs <= 0 or not items:
                continue
            params = list(params)
            groups = _grouped(keys)
            means, hits = [], []
            for epoch in range(n_epochs):
                hits = []
                last = epoch == n_epochs - 1

                def loss_of(idx: list[int], step: Callable = step, last: bool = last, hits: list = hits) -> Tensor:
                    loss, pooled, targets = step(idx)
                    if pooled is not None and last:
                        hits += _top_hit(pooled.detach(), targets)
                    return loss

                means.append(float(np.mean(fit_steps(params, loss_of, _batches(groups, batch_size, gen), lr))))
            fits[key] = {"epochs": n_epochs, "first_loss": means[0], "last_loss": means[-1], "examples": len(items)}
            if hits:
                fits[key]["top_on_roi"] = float(np.mean(hits))
        if examples.subtiles:
            with torch.no_grad():
                x = torch.stack(examples.subtiles)
                pred = torch.cat([model.g(model.features(x[k : k + 64].to(dev))).argmax(1).cpu() for k in range(0, len(x), 64)])
            fits.setdefault("f", {})["train_accuracy"] = float((pred == torch.tensor(examples.subtile_labels)).float().mean())
    return {"examples": examples.counts(), "fits": fits}


def pretrained_from_boxes(
    factory: Callable[[], ZoomInNet],
    images: Callable[[], Iterable[tuple[Tensor, Tensor, int]]],
    *,
    background_class: int | None = None,
    epochs: int | dict[str, int] = 20,
    seed: int = 0,
    **example_options: Any,
) -> Callable[[], ZoomInNet]:
    """A factory: `factory()`, then `pretrain_from_boxes` on `box_examples(images())`; the report is kept as `model.box_pretraining`."""

    def build() -> ZoomInNet:
        model = factory()
        gen = torch.Generator().manual_seed(seed)
        examples = box_examples(model, images(), background_class=background_class, generator=gen, **example_options)
        model.box_pretraining = pretrain_from_boxes(model, examples, epochs=epochs, generator=gen)
        return model

    return build
