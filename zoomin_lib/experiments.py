"""The dataset chapters' experiment loop: train each method on each fold, evaluate, profile, summarise.

Zoom-In sec. 4 and appendix G fix the protocol this module runs: Adam, a batch size and
learning rate per data set, the eq. 12 objective (entropy weight lambda), the contrastive loss
after a warm-up of 10 epochs, and for colon cancer 10-fold cross-validation repeated five
times, reported as mean +- standard deviation over the runs. Inference cost is measured per
sample (batch 1) with `profiling.profile_inference`: peak memory, FLOPs/MACs, time.

`lean_inference` sets every sampling model to read its patches one at a time and its tiles one
at a time (`chunk_size = tile_chunk = 1`): the same arithmetic, but the inference peak then
holds one patch's and one tile's activations, not N of them. Which setting a figure used is
recorded beside it.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .hierarchical import unique_draws
from .io import write_json
from .profiling import peak_memory, profile_inference
from .steps import predictor, sampling_loss
from .training import evaluate, fit, seed_everything

__all__ = [
    "TrainSettings",
    "standardize",
    "tensor_batches",
    "train_model",
    "FoldResult",
    "run_folds",
    "summarize",
    "lean_inference",
    "profile_methods",
    "unique_tiles",
    "training_step_peak_mb",
    "attention_map",
]

Factory = Callable[[], nn.Module]


@dataclass(frozen=True)
class TrainSettings:
    """What appendix G fixes per data set (plus the number of epochs a profile can afford)."""

    epochs: int
    batch_size: int
    lr: float
    warmup_epochs: int = 10  # contrastive loss from this epoch on (0-based)
    lam: float = 1e-5  # entropy regularisation, eq. 12
    contrastive: bool = True
    class_weights: tuple[float, ...] | None = None


def standardize(x: Tensor) -> Tensor:
    """x [N, C, H, W] with each channel shifted and scaled to mean 0 and standard deviation 1 over the whole set (no labels used)."""
    mean = x.mean(dim=(0, 2, 3), keepdim=True)  # [1, C, 1, 1]
    std = x.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)
    return (x - mean) / std


def tensor_batches(x: Tensor, y: Tensor, batch_size: int, seed: int) -> Callable[[int], list[tuple[Tensor, Tensor]]]:
    """epoch -> shuffled mini-batches of (x [b, C, H, W], y [b]); the order depends only on (seed, epoch)."""
    if x.shape[0] != y.shape[0] or x.shape[0] == 0:
        raise ValueError(f"x {tuple(x.shape)} and y {tuple(y.shape)} must hold the same, non-zero number of samples")

    def batches(epoch: int) -> list[tuple[Tensor, Tensor]]:
        order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        return [(x[order[i : i + batch_size]], y[order[i : i + batch_size]]) for i in range(0, len(order), batch_size)]

    return batches


def train_model(
    model: nn.Module,
    train_batches: Callable[[int], Sequence[Any]],
    settings: TrainSettings,
    generator: torch.Generator,
    *,
    eval_fn: Callable[[nn.Module], dict[str, Any]] | None = None,
    checkpoint_path: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Adam on the eq. 12 objective (contrastive after the warm-up) for `settings.epochs` epochs; the history."""
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = sampling_loss(
        warmup_epochs=settings.warmup_epochs, lam=settings.lam, class_weights=settings.class_weights,
        contrastive=settings.contrastive, generator=generator,
    )
    return fit(
        model, train_batches, loss_fn, optimizer, settings.epochs, eval_fn=eval_fn,
        checkpoint_path=checkpoint_path, resume=resume, progress=progress, generators=[generator],
    )


@dataclass
class FoldResult:
    """One method trained on one fold: its test metrics and training history."""

    method: str
    repetition: int
    fold: int
    accuracy: float
    auc: float | None
    n_test: int
    loss: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _as_loader(x: Tensor, y: Tensor, batch_size: int = 16) -> list[tuple[Tensor, Tensor]]:
    """Fixed-order evaluation batches."""
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]


def run_folds(
    methods: Mapping[str, Factory],
    settings: Mapping[str, TrainSettings],
    x: Tensor,
    y: Tensor,
    folds: Sequence[Any],
    *,
    seed: int = 0,
    out_dir: str | Path | None = None,
    resume: bool = False,
    probe: Callable[[nn.Module, torch.Generator], dict[str, Any]] | None = None,
    progress: bool = True,
) -> tuple[dict[str, list[FoldResult]], dict[str, nn.Module]]:
    """Train every method on every fold (objects with .repetition, .fold, .train, .test); test metrics per run.

    Each run is seeded by (seed, repetition, fold), so every method sees the same mini-batch
    order. `probe(model, generator)` runs after each epoch (its dict enters the history as
    val_<key>). With `out_dir`, each run's checkpoint and result are written there atomically,
    and `resume=True` continues an interrupted run from them. Returns the results per method and
    the models trained on the first fold (for the figures).
    """
    results: dict[str, list[FoldResult]] = {name: [] for name in methods}
    first_models: dict[str, nn.Module] = {}
    runs = [(name, f) for f in folds for name in methods]
    for name, f in tqdm(runs, desc="runs", disable=not progress):
        run_seed = seed * 1000 + int(f.repetition) * 100 + int(f.fold)
        generator = seed_everything(run_seed, "cpu")
        model = methods[name]()
        train_idx = torch.as_tensor(np.asarray(f.train), dtype=torch.long)
        test_idx = torch.as_tensor(np.asarray(f.test), dtype=torch.long)
        tag = f"{name}_r{int(f.repetition)}_f{int(f.fold)}"
        checkpoint = Path(out_dir) / "checkpoints" / f"{tag}.pt" if out_dir is not None else None
        history = train_model(
            model, tensor_batches(x[train_idx], y[train_idx], settings[name].batch_size, run_seed),
            settings[name], generator,
            eval_fn=(lambda m: probe(m, generator)) if probe is not None else None,
            checkpoint_path=checkpoint, resume=resume, progress=False,
        )
        metrics = evaluate(model, _as_loader(x[test_idx], y[test_idx]), predictor(generator=generator))
        result = FoldResult(name, int(f.repetition), int(f.fold), metrics["accuracy"], metrics["auc"],
                            metrics["n"], metrics["loss"], history)
        results[name].append(result)
        if out_dir is not None:
            write_json(Path(out_dir) / "runs" / f"{tag}.json", asdict(result))
        if name not in first_models:
            first_models[name] = model
    return results, first_models


def summarize(results: Sequence[FoldResult]) -> dict[str, float]:
    """Mean and sample standard deviation (ddof 1; NaN for one run) of accuracy and AUC over runs."""
    acc = np.array([r.accuracy for r in results], dtype=float)
    aucs = np.array([r.auc for r in results if r.auc is not None], dtype=float)
    std = float(acc.std(ddof=1)) if acc.size > 1 else math.nan
    return {
        "runs": int(acc.size),
        "accuracy_mean": float(acc.mean()),
        "accuracy_std": std,
        "auc_mean": float(aucs.mean()) if aucs.size else math.nan,
    }


@contextlib.contextmanager
def lean_inference(model: nn.Module) -> Iterator[nn.Module]:
    """Temporarily set `chunk_size` and `tile_chunk` (where the model has them) to 1: one patch, one tile at a time."""
    saved = {key: getattr(model, key) for key in ("chunk_size", "tile_chunk") if hasattr(model, key)}
    try:
        for key in saved:
            setattr(model, key, 1)
        yield model
    finally:
        for key, value in saved.items():
            setattr(model, key, value)


def profile_methods(
    models: Mapping[str, nn.Module],
    example: Tensor,
    *,
    lean: bool = True,
    generator: torch.Generator | None = None,
    min_run_time: float = 0.3,
) -> dict[str, dict[str, Any]]:
    """Per model: peak memory (MiB), MFLOPs/MMACs and ms of one inference on `example` [1, C, H, W] in its eval_mode."""
    out = {}
    for name, model in models.items():
        mode = getattr(model, "eval_mode", "topk")
        context = lean_inference(model) if lean else contextlib.nullcontext(model)
        with context:
            report = profile_inference(model, example, min_run_time=min_run_time, mode=mode, generator=generator)
        report.pop("flops_by_operator", None)
        out[name] = {**report, "mode": mode, "lean": lean}
    return out


def unique_tiles(model: nn.Module, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """N' [B]: the number of distinct first-stage tiles among a ZoomInNet's n_patches draws, per image."""
    with torch.no_grad():
        tiles = model(x, mode="sample", generator=generator).tiles  # [B, N]
    if tiles is None:
        raise ValueError(f"{type(model).__name__} draws no tiles (N' is defined for ZoomInNet)")
    draws = unique_draws(tiles)
    return torch.bincount(draws.batch, minlength=x.shape[0])  # [B]


def training_step_peak_mb(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None) -> float:
    """Peak memory (MiB) of one forward + backward of the eq. 12 loss on (x, y) in the model's train mode."""
    loss_fn = sampling_loss(warmup_epochs=10**9, generator=generator)  # no contrastive pass: one forward

    def step() -> None:
        loss, _ = loss_fn(model, (x, y), 0)
        loss.backward()

    was_training = model.training
    model.train()
    try:
        report = peak_memory(step, x.device, warmup=False)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return report.peak_mb


def attention_map(model: nn.Module, x: Tensor) -> Tensor:
    """The attention each location gets [B, h, w]: ATS alpha on V(x, s); Zoom-In alpha_c beta^c_c' on the s2 grid.

    For Zoom-In the second stage is computed for every tile (only sensible for small images),
    and the map covers the tile grid at scale s2, cropped to the image's extent.
    """
    with torch.no_grad():
        if hasattr(model, "first_stage"):
            from .geometry import tile_grid

            alpha = model.first_stage(x)  # [B, T]
            B, T = alpha.shape
            n_rows, n_cols = tile_grid(tuple(x.shape[-2:]), model.tile_size)
            batch = torch.arange(B).repeat_interleave(T)
            tiles = torch.arange(T).repeat(B)
            betas = model.second_stage(x, batch, tiles)  # [B*T, K2]
            u, v = model.subview_size
            joint = alpha.reshape(B * T, 1) * betas  # [B*T, K2]
            grid = joint.reshape(B, n_rows, n_cols, u, v).permute(0, 1, 3, 2, 4).reshape(B, n_rows * u, n_cols * v)
            h = math.ceil(x.shape[-2] * u / model.tile_size[0])
            w = math.ceil(x.shape[-1] * v / model.tile_size[1])
            return grid[:, :h, :w]
        if getattr(model, "attention", None) is not None:
            from .geometry import view_size

            h, w = view_size(tuple(x.shape[-2:]), model.scale)
            return torch.softmax(model.scores(x), dim=-1).reshape(x.shape[0], h, w)
    raise ValueError(f"{type(model).__name__} has no attention to map")
