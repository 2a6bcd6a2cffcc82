"""The four megapixel MNIST tasks trained jointly: one model, one head per task, one loss, four metrics.

The tasks (ATS sec. 4.2; the thesis, file 003, sec. 3.1.3, after Bergner et al.'s IPS): Maj (the class
of the three equal digits), Max (the largest digit value present), Top (the class of the top-most
digit), each a 10-way softmax, and Multi (which of the 10 classes are present), 10 independent
binary outputs.

Layout. A model's logits are [B, 40]: four consecutive blocks of 10, in the order of `TASKS`. For
the models whose classifier g is one linear layer (ATSNet, ZoomInNet, UniformNet, CNNBaseline), a g
with 40 outputs *is* four linear heads on the shared features, so no wrapper is needed; IPSNet with
`n_classes=[10, 10, 10, 10]` (one query token and one head per task) returns a list, which
`task_logits` concatenates. Targets are int64 [B, 13]: maj, max, top, then the 10 multi-hot bits
(`pack_targets`).

Loss (`multitask_terms`). As in the IPS code (training/iterative.py, `compute_loss`): the mean over
the four tasks of cross-entropy (Maj, Max, Top) and binary cross-entropy averaged over the 10 Multi
outputs. The models with a learnt attention add the entropy regulariser lam * sum p log p of it
(ATS eq. 21; Zoom-In eq. 12 for alpha and every computed beta^c), divided by the batch size as
`losses.zoomin_objective` does. There is no contrastive term: every canvas holds digits, so no
class plays Zoom-In's "negative" reference class. IPS's regularisers (the thesis, sec. 3.3) enter as
named `extra_terms` (`regulariser_terms`): the Semantic loss L_p is, for each attention head of an
IPSNet built with `semantic=True`, that head's own `multitask_terms` loss (the same per-task
criteria), averaged over the heads (`semantic_terms`); the Diversity loss L_d is
`losses.diversity_loss` of the pooling attention, averaged over the four task queries.

Metrics (`task_metrics`). Accuracy per task; Multi counts a canvas as right only when all 10
thresholded outputs are (exact match, what sklearn's `accuracy_score` computes on multi-label arrays
and the thesis's "0 % random accuracy" for Multi implies), and "multi_per_output" is the mean
accuracy of the 10 outputs. `chance_levels` gives what the best constant prediction scores on the
same labels.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoomin_lib.chapters.results import beats, beats_chance
from zoomin_lib.infra.io import write_json
from zoomin_lib.ips import regulariser_terms as ips_regulariser_terms
from zoomin_lib.losses import entropy_regularizer
from zoomin_lib.steps import ExtraTerm
from zoomin_lib.train.loop import evaluating
from zoomin_lib.train.profiling import training_step_peak_mb
from zoomin_lib.train.protocol import TrainSettings, initial_model, train_model

__all__ = [
    "TASKS",
    "N_CLASSES",
    "N_OUTPUTS",
    "N_TARGETS",
    "pack_targets",
    "task_logits",
    "split_logits",
    "multitask_terms",
    "multitask_loss",
    "semantic_terms",
    "regulariser_terms",
    "predict",
    "task_metrics",
    "chance_levels",
    "predict_batches",
    "evaluate_tasks",
    "EpochProbe",
    "TaskRun",
    "train_tasks",
    "training_peak_mb",
    "accuracy_rows",
    "above_chance",
    "gains_over",
]

TASKS = ("maj", "max", "top", "multi")
N_CLASSES = 10  # outputs per task
N_OUTPUTS = N_CLASSES * len(TASKS)  # 40 logits per canvas
N_TARGETS = 3 + N_CLASSES  # maj, max, top, then the 10 multi-hot bits
_SINGLE = TASKS[:3]  # the softmax tasks

Batch = tuple[Tensor, Tensor]  # (canvases [B, C, H, W], targets [B, 13])


def pack_targets(targets: Mapping[str, np.ndarray]) -> np.ndarray:
    """int64 [N, 13] from maj, max, top [N] and multi [N, 10] (e.g. `MegapixelMNIST.targets`)."""
    multi = np.asarray(targets["multi"])
    if multi.ndim != 2 or multi.shape[1] != N_CLASSES:
        raise ValueError(f"multi must be [N, {N_CLASSES}], got {multi.shape}")
    columns = [np.asarray(targets[t]).reshape(-1, 1) for t in _SINGLE]
    if any(c.shape[0] != multi.shape[0] for c in columns):
        raise ValueError("every task needs one label per canvas")
    return np.concatenate([*columns, multi], axis=1).astype(np.int64)  # [N, 13]


def task_logits(out: Any) -> Tensor:
    """The [B, 40] logits of a model output: its `logits` tensor, or IPSNet's list of four [B, 10] concatenated."""
    logits = out.logits if hasattr(out, "logits") else out
    if isinstance(logits, (list, tuple)):
        logits = torch.cat(list(logits), dim=1)
    if not isinstance(logits, Tensor) or logits.dim() != 2 or logits.shape[1] != N_OUTPUTS:
        shape = tuple(logits.shape) if isinstance(logits, Tensor) else type(logits).__name__
        raise ValueError(f"a multi-task model must give [B, {N_OUTPUTS}] logits (4 tasks x 10), got {shape}")
    return logits


def split_logits(logits: Tensor) -> dict[str, Tensor]:
    """Task name -> its [B, 10] block of the [B, 40] logits."""
    return dict(zip(TASKS, task_logits(logits).split(N_CLASSES, dim=1)))


def _check_targets(y: Tensor, batch: int) -> None:
    """Raise ValueError unless y is an integer [batch, 13] target matrix."""
    if y.dim() != 2 or y.shape != (batch, N_TARGETS) or y.is_floating_point():
        raise ValueError(f"targets must be an integer [{batch}, {N_TARGETS}] matrix, got {tuple(y.shape)} {y.dtype}")


def multitask_terms(logits: Tensor, y: Tensor) -> tuple[Tensor, dict[str, float]]:
    """(mean over the 4 tasks of their losses, each task's loss): CE for maj/max/top, BCE over the 10 multi outputs."""
    parts = split_logits(logits)
    _check_targets(y, logits.shape[0])
    losses = {t: F.cross_entropy(parts[t], y[:, k]) for k, t in enumerate(_SINGLE)}
    losses["multi"] = F.binary_cross_entropy_with_logits(parts["multi"], y[:, 3:].to(logits.dtype))
    total = torch.stack(list(losses.values())).mean()
    return total, {f"loss_{t}": float(v.detach()) for t, v in losses.items()}


def multitask_loss(
    lam: float = 0.0, generator: torch.Generator | None = None, extra_terms: Mapping[str, ExtraTerm] | None = None
) -> Callable:
    """The loss_fn(model, (x, y), epoch) of `train.loop.fit`: `multitask_terms` plus lam * sum p log p of the attention.

    Each of `extra_terms` (name -> term(model, out, y, extra), as `steps.sampling_loss` takes them;
    e.g. `regulariser_terms`) is added to the objective and reported under its name.
    """

    def loss_fn(model: nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        x, y = batch
        out = model(x, mode=getattr(model, "train_mode", "sample"), generator=generator)
        total, parts = multitask_terms(task_logits(out), y)
        reg = total.new_zeros(())
        for probs in (getattr(out, "alpha", None), getattr(out, "betas", None)):
            if probs is not None and lam and probs.requires_grad:  # U-N's uniform alpha is a constant: no term
                reg = reg + entropy_regularizer(probs, lam) / x.shape[0]
        parts["entropy"] = float(reg.detach())
        objective = total + reg
        for name, term in (extra_terms or {}).items():
            value = term(model, out, y, ())
            parts[name] = float(value.detach())
            objective = objective + value
        parts["total"] = float(objective.detach())
        return objective, parts

    return loss_fn


def semantic_terms(head_logits: Sequence[Tensor], y: Tensor) -> tuple[Tensor, list[float]]:
    """(L_p, each head's loss): head h's `multitask_terms` loss on its own logits, averaged over the H heads.

    `head_logits` is IPSNet's `IPSOutput.head_logits` for the four tasks: one [B, H, 10] tensor per
    task, in the order of `TASKS` (thesis eq. 12-13, with the four tasks' criteria of `multitask_terms`).
    """
    if not isinstance(head_logits, (list, tuple)) or len(head_logits) != len(TASKS):
        raise ValueError(f"the semantic term needs one [B, H, {N_CLASSES}] head-logit tensor per task "
                         f"(an IPSNet with n_classes=[{N_CLASSES}] * {len(TASKS)} and semantic=True)")
    heads = torch.cat(list(head_logits), dim=2)  # [B, H, 40]
    losses = [multitask_terms(heads[:, h], y)[0] for h in range(heads.shape[1])]  # H x scalar
    return torch.stack(losses).mean(), [float(v.detach()) for v in losses]


def regulariser_terms(semantic: float = 0.0, diversity: float = 0.0) -> dict[str, ExtraTerm]:
    """`extra_terms` of `multitask_loss` for the thesis's eq. 13: `semantic` x L_p (`semantic_terms`), `diversity` x L_d.

    L_d is `ips.regulariser_terms`' Diversity term (the pooling attention [B, H, 4, M], cosines
    averaged over canvases and task queries). A zero weight leaves its term out.
    """
    terms: dict[str, ExtraTerm] = {}
    if semantic:

        def semantic_term(model: nn.Module, out: Any, y: Tensor, extra: Sequence[Tensor]) -> Tensor:
            if getattr(out, "head_logits", None) is None:
                raise ValueError("the semantic term needs an IPSNet built with semantic=True")
            return semantic * semantic_terms(out.head_logits, y)[0]

        terms["semantic"] = semantic_term
    terms.update(ips_regulariser_terms(semantic=0.0, diversity=diversity))
    return terms


def predict(logits: Tensor) -> dict[str, Tensor]:
    """Predicted labels: maj/max/top [N] by argmax, multi [N, 10] bool (logit > 0, i.e. probability > 1/2)."""
    parts = split_logits(logits)
    pred = {t: parts[t].argmax(dim=1) for t in _SINGLE}
    pred["multi"] = parts["multi"] > 0
    return pred


def task_metrics(logits: Tensor, y: Tensor) -> dict[str, float]:
    """Accuracy per task (multi: exact match of all 10 outputs), multi_per_output, and maj_error = 1 - maj (ATS's test error)."""
    _check_targets(y, logits.shape[0])
    pred = predict(logits)
    out = {t: float((pred[t] == y[:, k]).float().mean()) for k, t in enumerate(_SINGLE)}
    hits = pred["multi"] == y[:, 3:].bool()  # [N, 10]
    out["multi"] = float(hits.all(dim=1).float().mean())
    out["multi_per_output"] = float(hits.float().mean())
    out["maj_error"] = 1.0 - out["maj"]
    return out


def chance_levels(y: Tensor | np.ndarray) -> dict[str, float]:
    """What the best constant prediction scores on targets y [N, 13]: the most frequent label (vector, for multi) per task."""
    y = torch.as_tensor(np.asarray(y), dtype=torch.long)
    _check_targets(y, y.shape[0])
    if y.shape[0] == 0:
        raise ValueError("chance_levels needs at least one canvas")
    out = {t: float(torch.bincount(y[:, k]).max()) / y.shape[0] for k, t in enumerate(_SINGLE)}
    _, counts = torch.unique(y[:, 3:], dim=0, return_counts=True)
    out["multi"] = float(counts.max()) / y.shape[0]
    present = y[:, 3:].float().mean(dim=0)  # [10]
    out["multi_per_output"] = float(torch.maximum(present, 1 - present).mean())
    out["maj_error"] = 1.0 - out["maj"]
    return out


def _batches_of(batches: Iterable | Callable[[int], Iterable]) -> Iterable:
    """A fresh pass over `batches` (a re-iterable, or a callable epoch -> iterable, called with 0)."""
    return batches(0) if callable(batches) else batches


def predict_batches(
    model: nn.Module, batches: Iterable | Callable[[int], Iterable], generator: torch.Generator | None = None,
    mode: str | None = None,
) -> tuple[Tensor, Tensor]:
    """(logits [N, 40], targets [N, 13]) over the batches, in eval mode without gradients (mode: the model's eval_mode)."""
    logits, targets = [], []
    with evaluating(model):
        for x, y in _batches_of(batches):  # x moves to the model's device in its forward
            out = model(x, mode=mode or getattr(model, "eval_mode", "topk"), generator=generator)
            logits.append(task_logits(out).float().cpu())
            targets.append(y.cpu())
    if not logits:
        raise ValueError("predict_batches got no batches")
    return torch.cat(logits), torch.cat(targets)


def evaluate_tasks(
    model: nn.Module, batches: Iterable | Callable[[int], Iterable], generator: torch.Generator | None = None
) -> dict[str, float]:
    """`task_metrics` of the model over the batches, plus the number of canvases `n`."""
    logits, y = predict_batches(model, batches, generator)
    return {**task_metrics(logits, y), "n": int(y.shape[0])}


class EpochProbe:
    """An eval_fn for `train.loop.fit`: test metrics after each epoch and, optionally, attention snapshots.

    Called as probe(model, generator). With `batches`, it evaluates the four tasks (their accuracies
    enter the history as val_<task>) and reports the seconds it took (`eval_seconds`), so that the
    training time can be told apart from the evaluation time. With `snapshot` (x [1, C, H, W]) and
    `attention` (model, x -> map [h, w]), it keeps the attention map of that canvas after every call
    in `maps` (epoch 0 is the call before training) and, with `masks` (name -> bool [h, w]), reports
    the attention mass on each region as mass_<name>.
    """

    def __init__(
        self,
        batches: Iterable | Callable[[int], Iterable] | None = None,
        snapshot: Tensor | None = None,
        attention: Callable[[nn.Module, Tensor], Tensor] | None = None,
        masks: Mapping[str, Tensor] | None = None,
    ) -> None:
        if (snapshot is None) != (attention is None):
            raise ValueError("give both `snapshot` and `attention`, or neither")
        self.batches = batches
        self.snapshot = snapshot
        self.attention = attention
        self.masks = dict(masks or {})
        self.maps: list[np.ndarray] = []  # one [h, w] map per call, in call order

    def __call__(self, model: nn.Module, generator: torch.Generator | None = None) -> dict[str, float]:
        """Metrics (and attention masses) of the model now."""
        began = time.perf_counter()
        record: dict[str, float] = {}
        if self.batches is not None:
            record.update(evaluate_tasks(model, self.batches, generator))
        if self.snapshot is not None:
            with evaluating(model):
                device = next(model.parameters()).device
                att = self.attention(model, self.snapshot.to(device)).detach().float().cpu()  # [h, w]
            self.maps.append(att.numpy())
            for name, mask in self.masks.items():
                record[f"mass_{name}"] = float(att[mask.to(torch.bool)].sum())
        record["eval_seconds"] = time.perf_counter() - began
        return record


@dataclass
class TaskRun:
    """One method trained on the four tasks: final test metrics, the per-epoch history, training seconds."""

    method: str
    metrics: dict[str, float]
    history: list[dict[str, Any]] = field(default_factory=list)
    before: dict[str, float] = field(default_factory=dict)  # the probe before the first epoch
    train_seconds: float = 0.0  # wall-clock of the epochs, probe evaluations excluded

    def bag_loss(self) -> np.ndarray:
        """L_b per epoch: the mean over the four tasks of each task's training loss (`multitask_terms`), regularisers excluded."""
        return np.array([np.mean([h[f"loss_{t}"] for t in TASKS]) for h in self.history], dtype=float)

    def curve(self, key: str) -> tuple[np.ndarray, np.ndarray]:
        """(cumulative training seconds, history value `val_<key>`) per epoch, epoch 0 (before training) first."""
        seconds = np.cumsum([0.0] + [h["seconds"] - h.get("val_eval_seconds", 0.0) for h in self.history])
        values = [self.before.get(key, np.nan)] + [h.get(f"val_{key}", np.nan) for h in self.history]
        return seconds, np.asarray(values, dtype=float)


def train_tasks(
    name: str,
    factory: Callable[[], nn.Module],
    settings: TrainSettings,
    train_batches: Callable[[int], Iterable],
    test_batches: Iterable | Callable[[int], Iterable],
    *,
    run_seed: int,
    probe: EpochProbe | None = None,
    out_dir: str | Path | None = None,
    extra_terms: Mapping[str, ExtraTerm] | None = None,
) -> tuple[TaskRun, nn.Module]:
    """Seed, build and train one method on the four tasks (`train.protocol.train_model`, Adam) and test it.

    Training and testing run on `config.default_device()` (a GPU when there is one); the model is
    returned on the host.

    The loss is `multitask_loss(settings.lam)` (given to train_model as its loss_wrapper, with the same
    generator, so every method of a run seed sees the same mini-batches and draws), with `extra_terms`
    (e.g. `regulariser_terms`) added. `probe` runs before
    training and after every epoch. With `out_dir`, the run is written to out_dir/runs/<name>.json.
    """
    model, generator = initial_model(factory, run_seed)  # on config.default_device()
    loss = multitask_loss(settings.lam, generator, extra_terms)
    before = probe(model, generator) if probe is not None else {}
    history = train_model(
        model, train_batches, settings, generator,
        eval_fn=(lambda m: probe(m, generator)) if probe is not None else None,
        progress=False, loss_wrapper=lambda _default: loss,
    )
    metrics = evaluate_tasks(model, test_batches, generator)
    seconds = float(sum(h["seconds"] - h.get("val_eval_seconds", 0.0) for h in history))
    run = TaskRun(name, metrics, history, before, seconds)
    if out_dir is not None:
        write_json(Path(out_dir) / "runs" / f"{name}.json", asdict(run))
    return run, model.cpu()


def training_peak_mb(
    model: nn.Module, x: Tensor, y: Tensor, lam: float = 0.0, generator: torch.Generator | None = None
) -> float:
    """Peak memory (MiB) of one forward + backward of `multitask_loss` on (x [B, C, H, W], y [B, 13]) in train mode."""
    return training_step_peak_mb(model, x, y, loss_fn=multitask_loss(lam, generator))


def accuracy_rows(
    runs: Mapping[str, TaskRun], chance: Mapping[str, float], columns: Sequence[str] = (*TASKS, "multi_per_output")
) -> list[dict[str, Any]]:
    """Table rows: per method its test accuracy (%) per task, Maj's test error and training minutes; a last row for chance."""
    labels = {"maj": "Maj %", "max": "Max %", "top": "Top %", "multi": "Multi % (exact)",
              "multi_per_output": "Multi % (per output)"}
    rows = []
    for name, run in runs.items():
        row: dict[str, Any] = {"method": name}
        row.update({labels.get(c, c): 100 * run.metrics[c] for c in columns})
        row["Maj test error"] = run.metrics["maj_error"]
        row["training (min)"] = run.train_seconds / 60
        rows.append(row)
    last: dict[str, Any] = {"method": "best constant prediction (chance)"}
    last.update({labels.get(c, c): 100 * chance[c] for c in columns})
    last["Maj test error"] = chance["maj_error"]
    last["training (min)"] = ""
    rows.append(last)
    return rows


def above_chance(
    runs: Mapping[str, TaskRun], chance: Mapping[str, float], tasks: Sequence[str] = TASKS, z: float = 2.0
) -> dict[str, dict[str, float]]:
    """Task -> {method: accuracy} of the methods whose test accuracy beats chance by more than z binomial standard errors.

    The rule is the book's one (`chapters.results.beats_chance`): a method listed here is unlikely
    (about 2 % for z = 2) to be guessing.
    """
    return {task: {name: run.metrics[task] for name, run in runs.items()
                   if beats_chance(run.metrics[task], chance[task], run.metrics["n"], z)} for task in tasks}


def gains_over(
    runs: Mapping[str, TaskRun], baseline: TaskRun, tasks: Sequence[str] = TASKS, z: float = 3.0
) -> dict[str, dict[str, float]]:
    """Task -> {method: accuracy gain} of the runs that beat `baseline` by more than z standard errors of the difference.

    The standard error of a difference of two accuracies measured on n canvases each is
    sqrt(se_a^2 + se_b^2), each se the binomial one of `chapters.results.chance_margin` (`results.beats`; with its
    floor of 1 / n). With z = 3 a run no better than the baseline passes about 0.1 % of the time.
    """
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        base, n0 = baseline.metrics[task], baseline.metrics["n"]
        out[task] = {name: run.metrics[task] - base for name, run in runs.items()
                     if beats(run.metrics[task], run.metrics["n"], base, n0, z)}
    return out
