"""Training Zoom-In on slides: eq. 12 per slide (`slide_loss`, `fit_slides`) and appendix L's pre-training.

`fit_slides` trains on `device` (a GPU when there is one) with the readers' cached V(x, s1) and
lazily read tiles; the contrastive loss (sec. 2.2) joins after the warm-up and, with annotations,
the eq. 13 MSE (`wsi.annotations.pixel_mse`). `pretrain_tile_classifiers` is appendix L's
pre-training of a, b and f as tile classifiers, on whole tile views or on windows of them
(`window_examples`), fitted with `train.supervision.fit_steps`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoomin_lib.geometry import tile_top_left
from zoomin_lib.infra.config import default_device
from zoomin_lib.losses import contrastive_loss, zoomin_objective
from zoomin_lib.models import module_device
from zoomin_lib.train.loop import fit, training_mode
from zoomin_lib.train.supervision import fit_steps
from zoomin_lib.wsi.annotations import pixel_mse, roi_tiles
from zoomin_lib.wsi.predict import SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader


def slide_loss(
    *,
    warmup_epochs: int = 10,
    lam: float = 1e-5,
    class_weights: Sequence[float] | None = None,
    contrastive: bool = True,
    reference_class: int = 0,
    pixel_weight: float = 0.0,
    generator: torch.Generator | None = None,
) -> Callable[[SlideZoomIn, tuple[Sequence[SlideReader], Tensor], int], tuple[Tensor, dict[str, float]]]:
    """loss_fn(model, (readers, labels), epoch) for `train.loop.fit`: eq. 12 per slide, averaged over the batch.

    The contrastive loss of sec. 2.2 joins from `warmup_epochs` on (for slides not of the reference
    class); `pixel_weight` > 0 adds the eq. 13 MSE of `pixel_mse` (appendix L).
    """

    def loss_fn(model: SlideZoomIn, batch: tuple[Sequence[SlideReader], Tensor], epoch: int) -> tuple[Tensor, dict[str, float]]:
        readers, labels = batch
        total, sums = None, {}
        for reader, y in zip(readers, labels):
            y1 = y.view(1)
            out = model(reader, mode="sample", generator=generator)
            loss, parts = zoomin_objective(out.logits, y1, out.alpha, out.betas, lam=lam, class_weights=class_weights,
                                           reference_class=reference_class)
            con = loss.new_zeros(())
            if contrastive and epoch >= warmup_epochs and int(y) != reference_class:
                low = model(reader, mode="sample", generator=generator, contrastive=True)
                con = contrastive_loss(low.logits, y1, reference_class, reduction="sum")
            inner = getattr(model, "module", model)  # the SlideZoomIn inside a DistributedDataParallel wrapper
            pix = pixel_weight * pixel_mse(inner, reader, out) if pixel_weight > 0 else loss.new_zeros(())
            parts.update(contrastive=float(con.detach()), pixel_mse=float(pix.detach()))
            loss = loss + con + pix
            total = loss if total is None else total + loss
            for k, val in parts.items():
                sums[k] = sums.get(k, 0.0) + val / len(readers)
        assert total is not None
        sums["total"] = float(total.detach()) / len(readers)
        return total / len(readers), sums

    return loss_fn


def fit_slides(
    model: SlideZoomIn,
    readers: Sequence[SlideReader],
    *,
    epochs: int,
    lr: float,
    batch_size: int,
    warmup_epochs: int = 10,
    lam: float = 1e-5,
    pixel_weight: float = 0.0,
    seed: int = 0,
    generator: torch.Generator | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    eval_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
    device: str | torch.device | None = None,
) -> list[dict[str, Any]]:
    """Adam on `slide_loss` over the readers (each with its `label`; mini-batches reshuffled per epoch); the history of `train.loop.fit`.

    The model trains on `device` (None: a GPU when there is one); the slides are read on the host.
    """
    from zoomin_lib.train.protocol import lazy_batches

    if any(r.label is None for r in readers):
        raise ValueError("every training reader needs a label (SlideReader(..., label=0 or 1))")
    batches = lazy_batches(lambda idx: [readers[i] for i in idx], [int(r.label) for r in readers], batch_size, seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    loss_fn = slide_loss(warmup_epochs=warmup_epochs, lam=lam, pixel_weight=pixel_weight, generator=generator)
    return fit(model, batches, loss_fn, optimizer, epochs, eval_fn=eval_fn, checkpoint_path=checkpoint_path,
               resume=resume, progress=progress, generators=[generator] if generator is not None else [],
               device=device)


def _tile_examples(model: SlideZoomIn, readers: Sequence[SlideReader], generator: torch.Generator, negatives: int):
    """(reader, tile, label) for every tile holding ROI and `negatives` x as many random tissue tiles without."""
    pos, neg = [], []
    for reader in readers:
        ratios, _ = roi_tiles(model, reader)
        tissue = reader.tissue(model.net.tile_size, model.tissue_side).numpy().reshape(-1)
        flat = ratios.reshape(-1)
        pos += [(reader, t, 1) for t in np.flatnonzero(flat > 0)]
        neg += [(reader, t, 0) for t in np.flatnonzero(tissue & (flat == 0))]
    order = torch.randperm(len(neg), generator=generator).tolist()
    return pos + [neg[i] for i in order[: max(1, negatives * len(pos))]]


def _subtile_examples(model: SlideZoomIn, examples: list, per_tile: int, generator: torch.Generator):
    """(reader, row, col, label) sub-tile centres: inside the ROI for positive tiles, anywhere for negative ones."""
    u, v = model.net.subview_size
    out = []
    for reader, tile, label in examples:
        _, masks = roi_tiles(model, reader)
        where = np.flatnonzero(masks[tile].reshape(-1)) if label and tile in masks else np.arange(u * v)
        pick = torch.randint(len(where), (per_tile,), generator=generator).numpy()
        sub = torch.from_numpy(where[pick])
        rows, cols = model.centers(reader, torch.full_like(sub, int(tile)), sub)
        for r, c in zip(rows.tolist(), cols.tolist()):
            ph, pw = model.net.patch_size
            hit = label and reader.roi is not None and bool(reader.roi.window((c - pw // 2, r - ph // 2), (pw, ph), (pw, ph)).any())
            out.append((reader, r, c, int(hit)))
    return out


def window_examples(
    views: Tensor, masks: Sequence[np.ndarray | None], labels: Sequence[int], window: int, per_view: int,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Square windows of side `window` cut from tile views [n, C, h, w] and their labels (any ROI inside).

    A positive view's windows are centred on random ROI positions of its mask (bool [u, v] on the s2
    grid, mapped onto the view's own grid), a negative view's anywhere; windows are clamped inside the
    view. Returns (windows [n * per_view, C, k, k], labels [n * per_view]) with k = min(window, h, w).
    """
    _, _, h, w = views.shape
    k = min(int(window), h, w)
    xs, ys = [], []
    for view, mask, label in zip(views, masks, labels):
        u, v = mask.shape if mask is not None else (h, w)
        where = np.argwhere(mask) if label and mask is not None else np.zeros((0, 2), dtype=int)  # [m, 2] (row, col) on [u, v]
        for _ in range(per_view):
            if len(where):
                r, c = where[int(torch.randint(len(where), (1,), generator=generator))]
                cy, cx = (r + 0.5) * h / u, (c + 0.5) * w / v
            else:
                cy, cx = torch.randint(h, (1,), generator=generator).item(), torch.randint(w, (1,), generator=generator).item()
            r0 = min(max(int(cy) - k // 2, 0), h - k)
            c0 = min(max(int(cx) - k // 2, 0), w - k)
            hit = mask is not None and bool(mask[r0 * u // h : -(-(r0 + k) * u // h), c0 * v // w : -(-(c0 + k) * v // w)].any())
            xs.append(view[:, r0 : r0 + k, c0 : c0 + k])  # [C, k, k]
            ys.append(int(hit))
    return torch.stack(xs), torch.tensor(ys)


def _fit_classifier(net: Callable[[Tensor], Tensor], params: list, x: Tensor, y: Tensor, steps: int, lr: float,
                    generator: torch.Generator, batch_size: int) -> dict[str, Any]:
    """`steps` Adam steps on BCE of net(x) [M] against y [M] (mini-batches drawn with replacement); losses and training accuracy."""
    device = params[0].device if params else torch.device("cpu")
    batches = [torch.randint(len(y), (min(batch_size, len(y)),), generator=generator) for _ in range(steps)]
    losses = fit_steps(params, lambda idx: F.binary_cross_entropy_with_logits(net(x[idx].to(device)),
                                                                             y[idx].float().to(device)), batches, lr)
    with torch.no_grad():
        scores = torch.cat([net(x[i : i + batch_size].to(device)).cpu() for i in range(0, len(y), batch_size)])
        acc = float(((scores > 0) == (y > 0)).float().mean())
    tail = losses[-max(1, steps // 10):]
    return {"first_loss": losses[0] if losses else math.nan, "last_loss": float(np.mean(tail)) if losses else math.nan,
            "train_accuracy": acc, "steps": steps}


def pretrain_tile_classifiers(
    model: SlideZoomIn,
    readers: Sequence[SlideReader],
    *,
    steps: int | dict[str, int] = 100,
    lr: float = 3e-3,
    negatives: int = 1,
    subtiles_per_tile: int = 4,
    batch_size: int = 16,
    generator: torch.Generator | None = None,
    windows: dict[str, int] | None = None,
    windows_per_tile: int = 4,
    device: str | torch.device | None = None,
) -> dict[str, Any]:
    """Appendix L's pre-training: a, b and f as tile classifiers on annotated slides; returns example counts and fits.

    a sees each example tile's view at s1 and b at s2, f a sub-tile at level 0; a and b's score maps
    are averaged (global average pooling) into one logit, f gets a linear head discarded afterwards.
    Labels: 1 when any annotated pixel lies in the input. Tiles with ROI and `negatives` x as many
    tissue tiles without are used, `subtiles_per_tile` sub-tiles each. `steps` Adam steps per
    network (an int, or {"a": .., "b": .., "f": ..}): a's inputs are small, f's the costliest.
    `windows` ({"a": k1, "b": k2}) trains a or b on k x k windows of the tile views instead
    (`window_examples`, `windows_per_tile` a tile): appendix L's "patches consistent in size and scale
    with the view", small enough that a metastasis fills a fair part of a positive one, where
    average pooling over a whole tile view dilutes a small one below what a classifier can learn.
    The networks train on `device` (None: a GPU when there is one; the model is moved there);
    examples are read and picked on the host.
    """
    steps = steps if isinstance(steps, dict) else {"a": steps, "b": steps, "f": steps}
    # example picking runs on the host: a generator on another device seeds a host one (its initial seed)
    gen = torch.Generator().manual_seed(0 if generator is None else generator.initial_seed())
    if generator is not None and generator.device.type == "cpu":
        gen = generator
    model.to(default_device() if device is None else torch.device(device))
    net = model.net
    examples = _tile_examples(model, readers, gen, negatives)
    if not any(label for _, _, label in examples):
        raise ValueError("no annotated tile among the readers: pre-training needs slides with an ROI")
    windows = windows or {}
    xa, xb, ys, tile_masks = [], [], [], []
    for reader, tile, label in examples:
        tile_masks.append(roi_tiles(model, reader)[1].get(int(tile)) if label else None)
        top, left = tile_top_left(torch.tensor([int(tile)]), reader.shape, net.tile_size)
        xa.append(reader.tile_view(int(top), int(left), net.tile_size, net.scale1))
        xb.append(reader.tile_view(int(top), int(left), net.tile_size, net.scale2))
        ys.append(label)
    y_tile = torch.tensor(ys)
    inputs = {}
    for key, views in (("a", torch.cat(xa)), ("b", torch.cat(xb))):  # [n, 3, h, w] tile views at s1, s2
        inputs[key] = (window_examples(views, tile_masks, ys, windows[key], windows_per_tile, gen) if key in windows
                       else (views, y_tile))
    subs = _subtile_examples(model, examples, subtiles_per_tile, gen)
    xf = torch.cat([r.patches(torch.tensor([row]), torch.tensor([col]), net.patch_size) for r, row, col, _ in subs])
    y_sub = torch.tensor([label for *_, label in subs])
    head = nn.Linear(net.features.out_features, 1).to(module_device(net))
    with training_mode(model):
        fits = {
            "a": _fit_classifier(lambda x: net.attention_a(x).mean(dim=(1, 2, 3)), list(net.attention_a.parameters()),
                                 *inputs["a"], steps.get("a", 0), lr, gen, batch_size),
            "b": _fit_classifier(lambda x: net.attention_b(x).mean(dim=(1, 2, 3)), list(net.attention_b.parameters()),
                                 *inputs["b"], steps.get("b", 0), lr, gen, batch_size),
            "f": _fit_classifier(lambda x: head(net.features(x))[:, 0], list(net.features.parameters()) + list(head.parameters()),
                                 xf, y_sub, steps.get("f", 0), lr, gen, batch_size),
        }
    return {"tiles": len(examples), "positive_tiles": int(y_tile.sum()), "subtiles": len(subs),
            "positive_subtiles": int(y_sub.sum()), "fits": fits,
            "windows": {k: {"side": windows[k], "examples": len(inputs[k][1]), "positive": int(inputs[k][1].sum())}
                        for k in windows}}
