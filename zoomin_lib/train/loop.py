"""A plain training/evaluation loop: seeding, epochs with progress bars, atomic checkpoints, resume.

Resuming from a checkpoint restores the model, optimizer (and scheduler), the finished epoch
count, the history and every random number generator state (python, numpy, torch CPU/CUDA and
any generators passed in), so that an interrupted run ends with the same weights as an
uninterrupted one. A checkpoint also records the settings that shape training
(`checkpoints.settings_record`: architecture, optimiser, scheduler, epochs, and what the caller
adds: method, data fingerprint, profile, seed); resuming with other ones raises
`CheckpointMismatchError` naming each difference (`resume=False` starts afresh). Evaluation
reports accuracy, per-class counts, the mean cross-entropy and, for two classes, the ROC AUC by
the rank (Mann-Whitney U) formula.
"""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from zoomin_lib.infra.config import default_device
from zoomin_lib.infra.io import save_torch, write_json
from zoomin_lib.infra.progress import tqdm
from zoomin_lib.models import module_device
from zoomin_lib.train.checkpoints import CheckpointMismatchError, check_resumable, settings_record

__all__ = [
    "NonFiniteLossError",
    "evaluating",
    "training_mode",
    "to_device",
    "CheckpointMismatchError",
    "settings_record",
    "seed_everything",
    "fit",
    "evaluate",
    "binary_auc",
    "write_metrics",
]

LossFn = Callable[[torch.nn.Module, Any, int], "tuple[torch.Tensor, dict[str, float]]"]


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


@contextlib.contextmanager
def evaluating(model: torch.nn.Module, *, grad: bool = False) -> Iterator[torch.nn.Module]:
    """The model in eval mode, and without gradients unless `grad`, for the block; its mode restored after, also on an error.

    The one home of "remember the mode, evaluate, restore" (with `training_mode`, its mirror).
    """
    was_training = model.training
    model.eval()
    try:
        with contextlib.nullcontext() if grad else torch.no_grad():
            yield model
    finally:
        model.train(was_training)


@contextlib.contextmanager
def training_mode(model: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """The model in train mode for the block; its mode restored after, also on an error."""
    was_training = model.training
    model.train()
    try:
        yield model
    finally:
        model.train(was_training)


def to_device(batch: Any, device: torch.device | str) -> Any:
    """`batch` with every tensor in it (in tuples, lists and dicts, at any depth) on `device`; anything else as it is.

    Tensors in pinned host memory move without blocking the host. The data stays on the host and
    moves one batch at a time (a slide reader, say, stays where it is: it reads for itself).
    """
    device = torch.device(device)
    if isinstance(batch, torch.Tensor):
        if batch.device == device:
            return batch
        return batch.to(device, non_blocking=batch.device.type == "cpu" and batch.is_pinned())
    if isinstance(batch, (list, tuple)):
        moved = [to_device(b, device) for b in batch]
        return type(batch)(moved) if not hasattr(batch, "_fields") else type(batch)(*moved)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    return batch


def seed_everything(seed: int, device: str | torch.device | None = None) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a torch.Generator on `device` (None: default_device()) seeded for sampling."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device
    generator = torch.Generator(device=default_device() if device is None else torch.device(device))
    generator.manual_seed(seed)
    return generator


def _rng_state(generators: Sequence[torch.Generator]) -> dict[str, Any]:
    """Every RNG state, in types that torch.load(weights_only=True) accepts."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (name, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any], generators: Sequence[torch.Generator]) -> None:
    """Restore the states saved by `_rng_state`."""
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    saved = state.get("generators", [])
    if len(saved) != len(generators):
        raise ValueError(
            f"checkpoint holds {len(saved)} generator states, fit() was given {len(generators)}"
        )
    for generator, gen_state in zip(generators, saved):
        generator.set_state(gen_state)


def _plain(value: Any, key: str) -> Any:
    """`value` as plain Python (None/bool/int/float/str, lists, dicts) that torch.load(weights_only=True) accepts."""
    if isinstance(value, (np.generic, np.ndarray)):  # first: np.float64 is a float subclass
        return value.tolist()  # numpy scalar -> int/float/bool, array -> nested lists
    if value is None or isinstance(value, bool):
        return value
    for base in (int, float, str):
        if isinstance(value, base):
            return base(value)  # an IntEnum or str subclass becomes the plain type
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()  # 0-d -> a number, else nested lists
    if isinstance(value, dict):
        return {(k.item() if isinstance(k, np.generic) else k): _plain(v, f"{key}[{k!r}]") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    raise TypeError(
        f"history entry {key!r} is a {type(value).__name__}; eval_fn must return numbers, strings, "
        "None, numpy/torch values, or lists/dicts of them"
    )


def _epoch_batches(train_batches: Iterable | Callable[[int], Iterable], epoch: int) -> Iterable:
    """The batches of `epoch`: `train_batches(epoch)` if it is callable, else `train_batches`."""
    return train_batches(epoch) if callable(train_batches) else train_batches


def fit(
    model: torch.nn.Module,
    train_batches: Iterable | Callable[[int], Iterable],
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    *,
    eval_fn: Callable[[torch.nn.Module], dict[str, Any]] | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume: bool = True,
    progress: bool = True,
    log_every: int = 10,
    scheduler: Any | None = None,
    generators: Sequence[torch.Generator] = (),
    clip_grad_norm: float | None = None,
    device: str | torch.device | None = None,
    settings: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train for `epochs` epochs on `device`; return the history, one dict per epoch (loss means, eval metrics, seconds).

    - device: where the model trains (None: `config.default_device()`, a GPU when there is one).
      The model is moved there first (the optimizer keeps its parameters: they move in place);
      each batch is moved there as it comes (`to_device`), the data staying on the host. The
      model stays on `device` afterwards.

    - train_batches: an iterable re-iterated every epoch (e.g. a DataLoader), or a callable
      epoch -> iterable (e.g. a loader reseeded per epoch).
    - loss_fn(model, batch, epoch) -> (loss, dict of floats): the dict's entries are averaged
      over the epoch's batches into the history.
    - eval_fn(model) -> dict: run after each epoch; its entries enter the history as "val_<key>",
      converted to plain Python (numpy/torch scalars -> numbers, arrays -> lists).
    - checkpoint_path: after every epoch, model + optimizer (+ scheduler) + epoch + history +
      RNG states (including `generators`) + the settings record are saved atomically; with
      `resume`, an existing checkpoint is loaded and training continues after its last finished
      epoch; with `resume=False` an existing checkpoint is ignored and overwritten (start afresh).
    - settings: what else shapes training (method, data fingerprint, profile, seed, ...), recorded
      beside what fit sees itself (`settings_record`). Resuming from a checkpoint whose record
      differs, or that holds none, raises CheckpointMismatchError naming each difference.
    - log_every: batches between updates of the progress bar's loss display.
    Raises NonFiniteLossError naming the epoch and batch if the loss is NaN or infinite, and
    ValueError naming the epoch if it yields no batches (e.g. an exhausted one-shot iterable).
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if log_every < 1:
        raise ValueError(f"log_every must be >= 1, got {log_every}")
    history: list[dict[str, Any]] = []
    start = 0
    device = default_device() if device is None else torch.device(device)
    model.to(device)
    path = Path(checkpoint_path) if checkpoint_path is not None else None
    run_settings = (settings_record(model, optimizer, epochs, scheduler, clip_grad_norm, settings)
                    if path is not None else None)
    if path is not None and resume and path.is_file():
        # CPU: RNG states must stay CPU tensors; load_state_dict moves weights/state to the model.
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        check_resumable(path, ckpt, run_settings)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(ckpt["scheduler"])
        history = list(ckpt["history"])
        start = int(ckpt["epoch"])
        _set_rng_state(ckpt["rng"], generators)

    epoch_bar = tqdm(range(start, epochs), desc="epochs", disable=not progress,
                     initial=start, total=epochs)
    for epoch in epoch_bar:
        model.train()
        began = time.perf_counter()
        sums: dict[str, float] = {}
        loss_sum, n_batches = 0.0, 0
        batch_bar = tqdm(_epoch_batches(train_batches, epoch), desc=f"epoch {epoch + 1}",
                         leave=False, disable=not progress)
        for index, batch in enumerate(batch_bar):
            loss, parts = loss_fn(model, to_device(batch, device), epoch)
            if not bool(torch.isfinite(loss.detach()).all()):
                raise NonFiniteLossError(
                    f"loss is {float(loss.detach())} at epoch {epoch + 1} (0-based {epoch}), "
                    f"batch {index} (0-based)"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip_grad_norm)
            optimizer.step()
            loss_sum += float(loss.detach())
            n_batches += 1
            for key, value in (parts or {}).items():
                sums[key] = sums.get(key, 0.0) + float(value)
            if (index + 1) % log_every == 0:
                batch_bar.set_postfix(loss=f"{loss_sum / n_batches:.4f}")
        batch_bar.close()
        if n_batches == 0:
            raise ValueError(
                f"epoch {epoch + 1} (0-based {epoch}) yielded no batches: train_batches is empty, "
                "or a one-shot iterable (a generator, an iterator) that an earlier epoch exhausted; "
                "pass a list, a DataLoader or a callable epoch -> iterable"
            )
        if scheduler is not None:
            scheduler.step()
        record: dict[str, Any] = {"epoch": epoch + 1, "batches": n_batches, "loss": loss_sum / n_batches}
        record.update({key: value / n_batches for key, value in sums.items()})
        if eval_fn is not None:
            # plain Python: the checkpoint is read back with torch.load(weights_only=True)
            record.update({f"val_{k}": _plain(v, f"val_{k}") for k, v in eval_fn(model).items()})
        record["seconds"] = time.perf_counter() - began
        history.append(record)
        epoch_bar.set_postfix(loss=f"{record['loss']:.4f}")
        if path is not None:
            save_torch(path, {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "epoch": epoch + 1,
                "history": history,
                "rng": _rng_state(generators),
                "settings": run_settings,
            })
    epoch_bar.close()
    return history


def binary_auc(scores: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> float:
    """ROC AUC of `scores` [N] for binary `labels` [N] by the rank formula (ties get mean ranks); NaN if one class is absent."""
    s = np.asarray(torch.as_tensor(scores).detach().cpu(), dtype=np.float64).ravel()  # [N]
    y = np.asarray(torch.as_tensor(labels).detach().cpu()).ravel()  # [N]
    if s.shape != y.shape:
        raise ValueError(f"scores and labels must have the same length, got {s.shape} and {y.shape}")
    if not np.isfinite(s).all():
        raise ValueError("scores contain NaN or infinite values")
    positive = y == 1
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    i = 0
    while i < len(s):  # average 1-based ranks over runs of tied scores
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    u = ranks[positive].sum() - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def evaluate(
    model: torch.nn.Module,
    batches: Iterable,
    predict_fn: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, torch.Tensor]],
) -> dict[str, Any]:
    """Accuracy, per-class counts, confusion matrix, mean cross-entropy and (2 classes) AUC over `batches`.

    predict_fn(model, batch) -> (logits [B, C], target [B]); it runs under eval() and no_grad, on
    batches moved to the model's device (`module_device`). The AUC is None when there are not two
    classes or one of them is absent.
    """
    device = module_device(model)
    all_logits, all_target = [], []
    with evaluating(model):
        for batch in batches:
            logits, target = predict_fn(model, to_device(batch, device))
            if logits.dim() != 2 or target.dim() != 1 or logits.shape[0] != target.shape[0]:
                raise ValueError(
                    f"predict_fn must return logits [B, C] and target [B], got "
                    f"{tuple(logits.shape)} and {tuple(target.shape)}"
                )
            all_logits.append(logits.detach().float().cpu())
            all_target.append(target.detach().long().cpu())
    if not all_logits:
        raise ValueError("evaluate() got no batches")
    logits = torch.cat(all_logits)  # [N, C]
    target = torch.cat(all_target)  # [N]
    if not bool(torch.isfinite(logits).all()):
        raise ValueError("predict_fn returned NaN or infinite logits")
    n_classes = logits.shape[1]
    if bool((target < 0).any()) or bool((target >= n_classes).any()):
        raise ValueError(f"targets must be class indices in [0, {n_classes - 1}]")
    pred = logits.argmax(dim=1)  # [N]
    confusion = torch.zeros(n_classes, n_classes, dtype=torch.long)  # [true, predicted]
    confusion.index_put_((target, pred), torch.ones_like(target), accumulate=True)
    auc = None
    if n_classes == 2:
        value = binary_auc(torch.softmax(logits, dim=1)[:, 1], target)
        auc = None if math.isnan(value) else value
    return {
        "n": int(target.numel()),
        "accuracy": float((pred == target).float().mean()),
        "loss": float(F.cross_entropy(logits, target)),
        "auc": auc,
        "support": confusion.sum(dim=1).tolist(),
        "predicted": confusion.sum(dim=0).tolist(),
        "correct": confusion.diagonal().tolist(),
        "confusion": confusion.tolist(),
    }


def write_metrics(path: str | os.PathLike, metrics: dict[str, Any]) -> Path:
    """Write a metrics dict as JSON, atomically (zoomin_lib.infra.io.write_json)."""
    return write_json(path, metrics)
