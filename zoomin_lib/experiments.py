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
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .fingerprint import fingerprint
from .hierarchical import unique_draws
from .config import default_device
from .io import write_json
from .profiling import peak_memory, profile_inference
from .steps import predictor, sampling_loss
from .models import module_device
from .training import evaluate, fit, seed_everything, to_device

__all__ = [
    "TrainSettings",
    "channel_stats",
    "image_stats",
    "image_tensor",
    "standardize",
    "lazy_batches",
    "tensor_batches",
    "fingerprint",
    "train_model",
    "FoldResult",
    "run_method",
    "run_folds",
    "per_image",
    "per_image_predictor",
    "summarize",
    "result_rows",
    "above_majority",
    "lean_inference",
    "profile_methods",
    "unique_tiles",
    "training_step_peak_mb",
    "attention_map",
    "top_tile_and_subtile",
    "zoom_picks",
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
    cosine_decay: bool = False  # lr decays to 0 by a cosine over the epochs (the papers keep it fixed)
    box_weight: float = 0.0  # > 0: add the attention cross-entropy against ROI masks (batches carry them)


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation [1, C, 1, 1] of images x [N, C, H, W]."""
    return x.mean(dim=(0, 2, 3), keepdim=True), x.std(dim=(0, 2, 3), keepdim=True).clamp(min=1e-6)


def image_stats(images: Iterable[np.ndarray], step: int = 8) -> tuple[Tensor, Tensor]:
    """Per-channel mean and standard deviation [1, 3, 1, 1] in [0, 1] units of uint8 images [H, W, 3] of any sizes (every `step`-th pixel)."""
    pixels = torch.cat([torch.from_numpy(np.ascontiguousarray(a[::step, ::step])).reshape(-1, a.shape[-1]).float() / 255
                        for a in images])  # [P, 3]
    return pixels.mean(0).view(1, -1, 1, 1), pixels.std(0).clamp(min=1e-6).view(1, -1, 1, 1)


def image_tensor(image: np.ndarray) -> Tensor:
    """A uint8 image [H, W, C] as a float batch of one [1, C, H, W] in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)[None].float().div_(255)


def standardize(x: Tensor, stats: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """x [N, C, H, W] with each channel shifted and scaled by `stats` (default: x's own, no labels used) to mean 0, std 1."""
    mean, std = channel_stats(x) if stats is None else stats
    return (x - mean) / std


def lazy_batches(
    load: Callable[[Sequence[int]], Any],
    labels: Sequence[int] | np.ndarray | Tensor,
    batch_size: int,
    seed: int,
    shuffle: bool = True,
    masks: Callable[[Sequence[int]], Any] | None = None,
) -> Callable[[int], Iterator[tuple[Any, ...]]]:
    """epoch -> mini-batches (load(indices), labels [b][, masks(indices)]) read only when iterated; order from (seed, epoch)."""
    y = torch.as_tensor(np.asarray(labels), dtype=torch.long)
    if y.numel() == 0:
        raise ValueError("lazy_batches needs at least one sample")

    def batches(epoch: int) -> Iterator[tuple[Any, Tensor]]:
        order = (torch.randperm(len(y), generator=torch.Generator().manual_seed(seed * 100003 + epoch))
                 if shuffle else torch.arange(len(y)))
        for i in range(0, len(order), batch_size):
            idx = order[i : i + batch_size]
            chosen = idx.tolist()
            yield (load(chosen), y[idx]) if masks is None else (load(chosen), y[idx], masks(chosen))

    return batches


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
    loss_wrapper: Callable[[Callable], Callable] | None = None,
    device: str | torch.device | None = None,
    record: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Adam on the eq. 12 objective (contrastive after the warm-up) for `settings.epochs` epochs on `device`; the history.

    The checkpoint records `settings` (as "training") and `record` (method, data fingerprint,
    profile, seed, ...) beside what `fit` sees itself; resuming with other ones is refused.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    loss_fn = sampling_loss(
        warmup_epochs=settings.warmup_epochs, lam=settings.lam, class_weights=settings.class_weights,
        contrastive=settings.contrastive, generator=generator, box_weight=settings.box_weight,
    )
    if loss_wrapper is not None:
        loss_fn = loss_wrapper(loss_fn)
    scheduler = (torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(settings.epochs, 1))
                 if settings.cosine_decay else None)
    return fit(
        model, train_batches, loss_fn, optimizer, settings.epochs, eval_fn=eval_fn, scheduler=scheduler,
        checkpoint_path=checkpoint_path, resume=resume, progress=progress, generators=[generator], device=device,
        settings={"training": asdict(settings), **(record or {})},
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
    confusion: list[list[int]] = field(default_factory=list)  # [true class][predicted class]


def _as_loader(x: Tensor, y: Tensor, batch_size: int = 16) -> list[tuple[Tensor, Tensor]]:
    """Fixed-order evaluation batches."""
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]


def run_method(
    name: str,
    factory: Factory,
    settings: TrainSettings,
    train_batches: Callable[[int], Sequence[Any]],
    test_batches: Sequence[Any],
    *,
    run_seed: int,
    tag: str,
    out_dir: str | Path | None = None,
    resume: bool = False,
    probe: Callable[[nn.Module, torch.Generator], dict[str, Any]] | None = None,
    loss_wrapper: Callable[[Callable], Callable] | None = None,
    predict_fn: Callable | None = None,
    device: str | torch.device | None = None,
    record: Mapping[str, Any] | None = None,
) -> tuple[FoldResult, nn.Module]:
    """Seed, build, train and test one method; its result (written to out_dir/runs/<tag>.json) and the model.

    The model trains and is tested on `device` (None: `config.default_device()`, a GPU when there
    is one), with a generator there, the data moving batch by batch; it is returned on the host,
    for the chapters' figures. `loss_wrapper` adapts the per-batch loss (e.g. `per_image` for
    batches of images of different sizes) and `predict_fn` the evaluation (default:
    `steps.predictor` in the model's eval mode). The checkpoint out_dir/checkpoints/<tag>.pt
    records the method, `run_seed`, `settings` and `record` (e.g. {"data": fingerprint(...),
    "profile": profile}); `resume=True` with other ones stops naming each difference
    (`training.CheckpointMismatchError`), `resume=False` starts afresh.
    """
    device = default_device() if device is None else torch.device(device)
    generator = seed_everything(run_seed, device)
    model = factory().to(device)
    checkpoint = Path(out_dir) / "checkpoints" / f"{tag}.pt" if out_dir is not None else None
    history = train_model(
        model, train_batches, settings, generator,
        eval_fn=(lambda m: probe(m, generator)) if probe is not None else None,
        checkpoint_path=checkpoint, resume=resume, progress=False, loss_wrapper=loss_wrapper, device=device,
        record={"method": name, "seed": run_seed, **(record or {})},
    )
    metrics = evaluate(model, test_batches, predict_fn or predictor(generator=generator))
    rep, fold = (int(v) for v in re.findall(r"_r(\d+)_f(\d+)$", tag)[0]) if re.search(r"_r\d+_f\d+$", tag) else (0, 0)
    result = FoldResult(name, rep, fold, metrics["accuracy"], metrics["auc"], metrics["n"], metrics["loss"], history,
                        metrics["confusion"])
    if out_dir is not None:
        write_json(Path(out_dir) / "runs" / f"{tag}.json", asdict(result))
    return result, model.cpu()


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
    record: Mapping[str, Any] | None = None,
) -> tuple[dict[str, list[FoldResult]], dict[str, nn.Module]]:
    """Train every method on every fold (objects with .repetition, .fold, .train, .test); test metrics per run.

    Each run is seeded by (seed, repetition, fold), so every method sees the same mini-batch
    order. `probe(model, generator)` runs after each epoch (its dict enters the history as
    val_<key>). With `out_dir`, each run's checkpoint and result are written there atomically,
    and `resume=True` continues an interrupted run from them; a checkpoint records the data
    (`fingerprint` of x, y and the fold's indices) and `record` (e.g. the profile), and one written
    with other settings is not resumed but refused. Returns the results per method and the models
    trained on the first fold (for the figures).
    """
    data_id = fingerprint(x, y) if out_dir is not None else None
    results: dict[str, list[FoldResult]] = {name: [] for name in methods}
    first_models: dict[str, nn.Module] = {}
    runs = [(name, f) for f in folds for name in methods]
    for name, f in tqdm(runs, desc="runs", disable=not progress):
        run_seed = seed * 1000 + int(f.repetition) * 100 + int(f.fold)
        train_idx = torch.as_tensor(np.asarray(f.train), dtype=torch.long)
        test_idx = torch.as_tensor(np.asarray(f.test), dtype=torch.long)
        result, model = run_method(
            name, methods[name], settings[name],
            tensor_batches(x[train_idx], y[train_idx], settings[name].batch_size, run_seed),
            _as_loader(x[test_idx], y[test_idx]),
            run_seed=run_seed, tag=f"{name}_r{int(f.repetition)}_f{int(f.fold)}",
            out_dir=out_dir, resume=resume, probe=probe,
            record={"data": fingerprint(data_id, f.train, f.test), **(record or {})},
        )
        results[name].append(result)
        first_models.setdefault(name, model)
    return results, first_models


def per_image(loss_fn: Callable) -> Callable:
    """A loss over batches ([x_i [1, C, H_i, W_i], ...], y [B][, [mask_i [1, H_i, W_i], ...]]) of images of different sizes: the mean of loss_fn per image."""

    def batch_loss(model: nn.Module, batch: tuple[Any, ...], epoch: int) -> tuple[Tensor, dict[str, float]]:
        images, labels, *extra = batch
        total, parts = None, {}
        for i, (xi, yi) in enumerate(zip(images, labels)):
            loss, p = loss_fn(model, (xi, yi.view(1), *(e[i] for e in extra)), epoch)
            total = loss if total is None else total + loss
            for k, v in p.items():
                parts[k] = parts.get(k, 0.0) + v / len(images)
        assert total is not None
        return total / len(images), parts

    return batch_loss


def per_image_predictor(mode: str | None = None, generator: torch.Generator | None = None) -> Callable:
    """The predict_fn for batches of images of different sizes: logits [B, C] image by image."""
    single = predictor(mode, generator)

    def predict_fn(model: nn.Module, batch: tuple[Any, ...]) -> tuple[Tensor, Tensor]:
        images, labels, *_ = batch
        return torch.cat([single(model, (xi, yi.view(1)))[0] for xi, yi in zip(images, labels)]), labels

    return predict_fn


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


def _accuracy_cell(summary: Mapping[str, float]) -> str:
    """'mean ± std' in percent (just the mean for one run)."""
    mean = f"{100 * summary['accuracy_mean']:.1f}"
    return f"{mean} ± {100 * summary['accuracy_std']:.1f}" if summary["runs"] > 1 else mean


def result_rows(
    results: Mapping[str, Sequence[FoldResult]], costs: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """One table row per profiled method: measured accuracy (mean ± std over runs), AUC, runs, GFLOPs, GMACs, MiB, ms, mode."""
    rows = []
    for name, cost in costs.items():
        s = summarize(results[name]) if name in results else None
        rows.append({
            "method": name,
            "accuracy % (mean ± std)": "not trained" if s is None else _accuracy_cell(s),
            "AUC": "" if s is None or not np.isfinite(s["auc_mean"]) else s["auc_mean"],
            "runs": "" if s is None else s["runs"],
            "GFLOPs": cost["mflops"] / 1e3,
            "GMACs": cost["mmacs"] / 1e3,
            "peak memory (MiB)": cost["peak_memory_mb"],
            "time (ms)": cost["ms_per_sample"],
            "inference": cost["mode"],
        })
    return rows


def above_majority(
    results: Mapping[str, Sequence[FoldResult]], test_labels: Sequence[int] | np.ndarray, z: float = 0.0
) -> tuple[float, dict[str, float]]:
    """The majority-class rate p of the test labels, and the methods whose mean accuracy beats it (name -> accuracy).

    With z > 0 a method must beat p by more than z binomial standard errors sqrt(p (1 - p) / n) of
    the n test labels (z = 2: a classifier as good as the majority rule passes about 2 % of the time).
    """
    labels = np.asarray(test_labels)
    majority = float(np.bincount(labels).max() / labels.size)
    margin = z * math.sqrt(majority * (1 - majority) / labels.size)
    beaten = {name: summarize(runs)["accuracy_mean"] for name, runs in results.items()}
    return majority, {name: acc for name, acc in beaten.items() if acc > majority + margin}


def report_above_majority(
    results: Mapping[str, Sequence[FoldResult]], test_labels: Sequence[int] | np.ndarray, rule: str, budget: str,
    z: float = 2.0,
) -> dict[str, float]:
    """Print the majority-class rate (`rule` names it), the methods beyond z standard errors above it and the rest (within `budget`); return the former."""
    majority, learned = above_majority(results, test_labels, z)
    print(f"{rule} rate on this test set: {100 * majority:.1f} % of {len(np.asarray(test_labels))} images")
    print(f"beyond {z:g} standard errors above it: "
          + (", ".join(f"{k} {100 * v:.1f} %" for k, v in learned.items()) if learned else "no method"))
    rest = [k for k in results if k not in learned]
    if rest:
        print(f"not above it within {budget}: {', '.join(rest)}")
    return learned


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
    device: str | torch.device | None = None,
) -> dict[str, dict[str, Any]]:
    """Per model: peak memory (MiB), MFLOPs/MMACs and ms of one inference on `example` [1, C, H, W] in its eval_mode.

    Measured on `device` (None: `config.default_device()`, a GPU when there is one); the models go
    back where they were. A generator on another device is replaced by one there with its seed.
    """
    dev = default_device() if device is None else torch.device(device)
    if generator is not None and generator.device.type != dev.type:
        generator = torch.Generator(dev).manual_seed(generator.initial_seed())
    out = {}
    for name, model in models.items():
        mode = getattr(model, "eval_mode", "topk")
        context = lean_inference(model) if lean else contextlib.nullcontext(model)
        with context:
            report = profile_inference(model, example, dev, min_run_time=min_run_time, mode=mode, generator=generator)
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


def training_step_peak_mb(model: nn.Module, x: Tensor, y: Tensor, generator: torch.Generator | None = None,
                          loss_fn: Callable | None = None) -> float:
    """Peak memory (MiB) of one forward + backward of `loss_fn` (default: the eq. 12 loss) on (x, y) in train mode.

    Measured on the model's device (x and y are moved there).
    """
    if loss_fn is None:
        loss_fn = sampling_loss(warmup_epochs=10**9, generator=generator)  # no contrastive pass: one forward
    device = module_device(model)
    x, y = to_device((x, y), device)

    def step() -> None:
        loss, _ = loss_fn(model, (x, y), 0)
        loss.backward()

    was_training = model.training
    model.train()
    try:
        report = peak_memory(step, device, warmup=False)
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


def top_tile_and_subtile(model: nn.Module, x: Tensor) -> tuple[tuple[int, int, int, int], tuple[int, int, int, int]]:
    """Boxes (top, left, height, width) in full-resolution pixels of a ZoomInNet's highest-alpha tile and highest-beta sub-tile in it (Zoom-In fig. 3), for x [1, C, H, W]."""
    from .geometry import tile_top_left

    with torch.no_grad():
        alpha = model.first_stage(x)  # [1, T]
        tile = alpha.argmax(dim=1)  # [1]
        beta = model.second_stage(x, torch.zeros_like(tile), tile)  # [1, K2]
        sub = beta.argmax(dim=1)  # [1]
        top, left = tile_top_left(tile, tuple(x.shape[-2:]), model.tile_size)
        rows, cols = model.centers(tile.view(1, 1), sub.view(1, 1), tuple(x.shape[-2:]))
    th, tw = model.tile_size
    ph, pw = model.patch_size
    return ((int(top), int(left), th, tw), (int(rows) - ph // 2, int(cols) - pw // 2, ph, pw))


def zoom_picks(model: nn.Module, xs: Sequence[Tensor]) -> list[tuple[tuple[int, ...], tuple[int, ...], int]]:
    """For each image x [1, C, H, W]: (top tile box, top sub-tile box, predicted class in top-k mode) of a ZoomInNet."""
    picks = []
    was_training = model.training
    model.eval()
    try:
        for x in xs:
            tile_box, sub_box = top_tile_and_subtile(model, x)
            with torch.no_grad():
                pred = int(model(x, mode="topk").logits.argmax())
            picks.append((tile_box, sub_box, pred))
    finally:
        model.train(was_training)
    return picks
