"""What a training checkpoint records about the run that wrote it, and the refusal to resume it with other settings.

A checkpoint written by `train.loop.fit` holds `settings_record(...)`: the model's architecture (class,
a digest of its parameter and buffer names and shapes), the optimiser and its hyper-parameters, the
scheduler and its configuration, the epochs, the gradient clipping, and what the caller adds (the
experiment loop adds the TrainSettings, method, seed, data fingerprint and profile). Resuming from a
checkpoint whose record differs, or that holds none, raises `CheckpointMismatchError` naming each
difference ('optimizer.lr: checkpoint 0.003, now 0.0001'): an 8-epoch cosine run resumed as a
10-epoch run would otherwise train its last epochs at the old schedule's learning rate of 0.
`fit(..., resume=False)` starts afresh and overwrites the checkpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = ["CheckpointMismatchError", "settings_record", "settings_differences", "check_resumable"]


class CheckpointMismatchError(ValueError):
    """A checkpoint was written with other training settings than the run that would resume from it."""


_IMPLEMENTATION_FLAGS = {"params", "initial_lr", "foreach", "fused", "capturable", "differentiable"}


def _plain_or_repr(value: Any) -> Any:
    """`value` as plain data that torch.load(weights_only=True) accepts (numbers, str, None, lists, dicts); anything else by its repr."""
    if isinstance(value, (np.generic, np.ndarray)):  # first: np.float64 is a float subclass
        return value.tolist()
    if value is None or isinstance(value, bool):
        return value
    for base in (int, float, str):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, torch.Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain_or_repr(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain_or_repr(v) for v in value]
    return repr(value)  # e.g. a function in a LambdaLR's state


def settings_record(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    scheduler: Any | None = None,
    clip_grad_norm: float | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The settings that shape a training run, as plain data: what a checkpoint records and a resume compares.

    From the objects: the model's class and a digest of its parameter and buffer names and shapes
    (the architecture), the optimiser's class and hyper-parameters per group (the learning rate
    as first set, `initial_lr` once a scheduler has taken it over; implementation flags such as
    `foreach` left out), the scheduler's class and configuration (its progress left out), the
    epochs and the gradient clipping. `extra` adds what only the caller knows (method, data
    fingerprint, profile, seed, ...).
    """
    shapes = [(k, tuple(v.shape)) for k, v in model.state_dict().items()]
    groups = [{k: _plain_or_repr(v) for k, v in sorted(g.items()) if k not in _IMPLEMENTATION_FLAGS}
              | {"lr": _plain_or_repr(g.get("initial_lr", g["lr"]))} for g in optimizer.param_groups]
    record: dict[str, Any] = {
        "architecture": {"class": type(model).__name__,
                         "parameters": hashlib.sha256(repr(shapes).encode()).hexdigest()[:16],
                         "n_parameters": sum(p.numel() for p in model.parameters())},
        "optimizer": {"class": type(optimizer).__name__, **(groups[0] if len(groups) == 1 else {"groups": groups})},
        "scheduler": None,
        "epochs": int(epochs),
        "clip_grad_norm": None if clip_grad_norm is None else float(clip_grad_norm),
    }
    if scheduler is not None:
        state = {k: _plain_or_repr(v) for k, v in sorted(scheduler.state_dict().items())
                 if not k.startswith("_") and k not in ("last_epoch", "base_lrs", "verbose")}
        record["scheduler"] = {"class": type(scheduler).__name__, **state}
    for key, value in (extra or {}).items():
        record[str(key)] = _plain_or_repr(value)
    return record


_NOT_SET = object()


def _differences(saved: Any, current: Any, name: str, out: list[str]) -> None:
    """Append '<name>: checkpoint <saved>, now <current>' to `out`, descending into dicts both sides hold."""
    if isinstance(saved, Mapping) and isinstance(current, Mapping):
        for key in sorted(set(saved) | set(current), key=str):
            _differences(saved.get(key, _NOT_SET), current.get(key, _NOT_SET), f"{name}.{key}" if name else str(key), out)
    elif saved != current:
        shown = ["not set" if v is _NOT_SET else repr(v) for v in (saved, current)]
        out.append(f"{name}: checkpoint {shown[0]}, now {shown[1]}")


def settings_differences(saved: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    """'<setting>: checkpoint <saved>, now <current>' for every setting that differs (one absent on a side reads 'not set')."""
    out: list[str] = []
    _differences(saved, current, "", out)
    return out


def check_resumable(path: Path, ckpt: Mapping[str, Any], record: Mapping[str, Any]) -> None:
    """CheckpointMismatchError naming each setting in which `ckpt` differs from this run's `record`."""
    how = ("pass resume=False to start afresh (the checkpoint is then overwritten), "
           "or run with the checkpoint's settings to resume it")
    saved = ckpt.get("settings")
    if saved is None:
        raise CheckpointMismatchError(
            f"checkpoint {path} records no training settings (it was written before checkpoints held them), "
            f"so whether it matches this run cannot be checked; {how}"
        )
    differences = settings_differences(saved, record)
    if differences:
        raise CheckpointMismatchError(
            f"checkpoint {path} was written with other settings than this run ("
            f"{len(differences)} difference{'s' if len(differences) > 1 else ''}):\n  "
            + "\n  ".join(differences) + f"\n{how}"
        )
