"""What the contrastive term of Zoom-In sec. 2.2 does to an attention that has not yet found the object.

    L_con = sum_n -log p(reference | draws from the complements (1 - alpha)/(T - 1), (1 - beta)/(K2 - 1)),

over the images whose label is not the reference class (`losses.contrastive_loss`; the sum over
the batch divided by its size, `steps.sampling_loss`), asks the classifier to call what the
complement draws "reference" (EMPTY, normal). The normalised complements are this project's reading
of the paper's "1 - a" (`models`), and one reference class is the first of its two multi-class
extensions. With the attention on the object, the complement's draws miss it and the term is the
paper's help. Without, the term can still be lowered: by an attention that gathers on one kind of
region, so that the classifier can tell a complement draw from an attention draw by what it shows,
whatever the image holds. The chapters measure which of the two happens:

- `with_and_without`: one method trained twice from the same initial weights on the same
  mini-batches, once with L_con after the warm-up and once without (so, after the warm-up, also with
  other random draws: the contrastive forward draws from the same generator), its attention on the
  objects of the test images probed after each epoch (`attention.attention_on_objects`);
- `draw_source_rows`: the mean probability of the reference class predicted (sample mode) from draws
  of the attention and from draws of its complement (the contrastive samples), on test images with the
  object and without it. A classifier that reads the object gives the reference class to the
  complement's draws of every image and to the attention's draws of the images without the object;
  one that tells the two sources apart gives it to the complement's draws only, whatever the image;
- `source_gaps`: from those rows, the complement's p(reference) minus the attention's, per run and group;
- `study_text` and `contrastive_figure`: the cross-entropy, L_con and the attention on the objects
  per epoch, for both runs, as one line each and as a figure.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from zoomin_lib.chapters.attention import attention_on_objects
from zoomin_lib.train.loop import evaluating
from zoomin_lib.train.protocol import FoldResult, TrainSettings, run_method

__all__ = ["WITH", "WITHOUT", "with_and_without", "draw_source_rows", "source_gaps", "study_text", "contrastive_figure",
           "curve"]

WITH, WITHOUT = "with L_con", "without L_con"  # the two runs' names


def with_and_without(
    name: str,
    factory: Callable[[], nn.Module],
    settings: TrainSettings,
    train_batches: Callable[[int], Iterable[Any]],
    test_batches: Callable[[], Iterable[Any]],
    probe_inputs: Sequence[Tensor],
    probe_boxes: Sequence[Sequence[tuple[float, float, float, float]]],
    *,
    seed: int,
    out: Path | None = None,
    resume: bool = False,
    record: Mapping[str, Any] | None = None,
) -> dict[str, tuple[FoldResult, nn.Module]]:
    """`name` trained with `settings` (L_con on) and with L_con off, same seed and batches: {WITH: .., WITHOUT: ..}.

    `train_batches(epoch)` gives an epoch's mini-batches, `test_batches()` the test batches (called
    once per run, so both may be read lazily). After each epoch both runs are probed on
    `probe_inputs` (images [1, C, H, W]) and their object boxes as the data readers give them,
    (x0, y0, x1, y1) in full-resolution pixels (`attention.attention_on_objects`): the history gets
    "val_mass_ratio" (the attention's mass on the objects over a uniform attention's) and
    "val_peak_on" (% of images whose highest location lies on an object); with no probe image,
    neither. Checkpoints and runs go under `out`, tagged "<name>, <WITH or WITHOUT>_r0_f0".
    """

    if not settings.contrastive:
        raise ValueError("settings must have the contrastive term on; the run without it is made here")

    def probe(model: nn.Module, generator: torch.Generator) -> dict[str, float]:
        if not probe_inputs:  # no test image holds an object: nothing to probe
            return {}
        row = attention_on_objects({name: model}, probe_inputs, probe_boxes)[0]
        return {"mass_ratio": float(row["mass / uniform"]), "peak_on": float(row["peak on the object %"])}

    runs = {}
    for label, s in ((WITH, settings), (WITHOUT, replace(settings, contrastive=False))):
        runs[label] = run_method(f"{name}, {label}", factory, s, train_batches, test_batches(), run_seed=seed,
                                 tag=f"{name}, {label}_r0_f0", out_dir=out, resume=resume, record=record, probe=probe)
    return runs


def curve(result: FoldResult, key: str) -> np.ndarray:
    """The per-epoch values of `key` in a run's history, [epochs] (NaN where an epoch lacks it)."""
    return np.array([float(h.get(key, np.nan)) for h in result.history], dtype=float)


def _reference_probability(model: nn.Module, x: Tensor, reference_class: int, contrastive: bool, draws: int,
                           generator: torch.Generator) -> float:
    """The mean over `draws` sample-mode predictions on x [1, C, H, W] of p(reference_class)."""
    p = [torch.softmax(model(x, mode="sample", generator=generator, contrastive=contrastive).logits, dim=1)[0, reference_class]
         for _ in range(draws)]
    return float(torch.stack(p).mean())


def draw_source_rows(
    models: Mapping[str, nn.Module],
    inputs: Sequence[Tensor],
    has_object: Sequence[bool],
    reference_class: int,
    reference_name: str,
    *,
    draws: int = 4,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Per model and per group (images with the object, without): mean p(reference) from the attention's and the complement's draws.

    Each image x [1, C, H, W] of `inputs` is classified `draws` times from draws of the attention
    (the training forward) and `draws` times from draws of its complement (the contrastive forward,
    sec. 2.2), in eval mode, with one generator seeded by `seed` per model.
    """
    if len(inputs) != len(has_object) or not inputs:
        raise ValueError(f"need one has_object flag per image and at least one image, got {len(inputs)} and {len(has_object)}")
    rows = []
    for name, model in models.items():
        generator = torch.Generator().manual_seed(seed)
        per_group: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
        with evaluating(model), torch.no_grad():
            for x, flag in zip(inputs, has_object):
                pair = tuple(_reference_probability(model, x, reference_class, c, draws, generator) for c in (False, True))
                per_group[bool(flag)].append(pair)
        for flag in (False, True):
            if not per_group[flag]:
                continue
            a, c = np.mean(per_group[flag], axis=0)
            rows.append({"run": name, "test images": "with the object" if flag else "without it", "images": len(per_group[flag]),
                         f"p({reference_name}) from the attention's draws": float(a),
                         f"p({reference_name}) from the complement's draws": float(c)})
    return rows


def source_gaps(rows: Sequence[Mapping[str, Any]], reference_name: str) -> dict[tuple[str, str], float]:
    """(run, test images) -> p(reference) from the complement's draws minus from the attention's, from `draw_source_rows`."""
    return {(r["run"], r["test images"]): float(r[f"p({reference_name}) from the complement's draws"])
            - float(r[f"p({reference_name}) from the attention's draws"]) for r in rows}


def study_text(runs: Mapping[str, tuple[FoldResult, nn.Module]], constant: float, thing: str) -> str:
    """One line on both runs: cross-entropy (first and last epoch), L_con (highest, last), attention on `thing` (first, last)."""
    parts = []
    for label, (result, _) in runs.items():
        ce, con, mass = (curve(result, k) for k in ("ce", "contrastive", "val_mass_ratio"))
        parts.append(f"{label}: cross-entropy {ce[0]:.3f} (first epoch) to {ce[-1]:.3f} (last), L_con {np.nanmax(con):.3f} "
                     f"(highest) to {con[-1]:.3f}, attention on {thing} {mass[0]:.2f} to {mass[-1]:.2f} x uniform")
    return f"best constant prediction {constant:.3f}; " + "; ".join(parts)


def contrastive_figure(runs: Mapping[str, tuple[FoldResult, nn.Module]], constant: float, title: str = "") -> Figure:
    """Per epoch, for each run: the training L_con and cross-entropy (left) and the attention on the objects over uniform (right)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.4))
    for k, (label, (result, _)) in enumerate(runs.items()):
        epochs = np.arange(1, len(result.history) + 1)
        left.plot(epochs, curve(result, "ce"), "o-", ms=3, color=f"C{k}", label=f"cross-entropy, {label}")
        if label == WITH:
            left.plot(epochs, curve(result, "contrastive"), "s--", ms=3, color=f"C{k}", label=f"L_con, {label}")
        right.plot(epochs, curve(result, "val_mass_ratio"), "o-", ms=3, color=f"C{k}", label=label)
    left.axhline(constant, color="grey", ls=":", lw=0.9, label="best constant prediction")
    right.axhline(1.0, color="grey", ls=":", lw=0.9, label="uniform attention")
    left.set_xlabel("epoch")
    left.set_ylabel("training loss (per epoch)")
    left.legend(fontsize=7)
    right.set_xlabel("epoch")
    right.set_ylabel("attention on the object / uniform")
    right.set_ylim(bottom=0)
    right.legend(fontsize=7)
    for ax in (left, right):
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    return fig
