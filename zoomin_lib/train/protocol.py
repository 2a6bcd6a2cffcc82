"""The dataset chapters' experiment protocol: train each method on each fold, test it, summarise.

Zoom-In sec. 4 and appendix G fix the protocol this module runs: Adam, a batch size and learning
rate per data set, the eq. 12 objective (entropy weight lambda), the contrastive loss after a
warm-up of 10 epochs, and for colon cancer 10-fold cross-validation repeated five times, reported
as mean +- standard deviation over the runs (`run_folds`, `run_method`, `summarize`). Images are
standardised per channel with statistics that use no labels (`channel_stats`, `image_stats`,
`standardize`, `standardized_image`); mini-batches are drawn lazily in an order fixed by (seed, epoch) (`lazy_batches`,
`tensor_batches`), and batches of images of different sizes go image by image (`per_image`).
A run's model is rebuilt from its checkpoint (`load_run_model`), its initial weights from its seed
(`initial_model`), and every run can be tested again, e.g. with another predictor (`retest_runs`).
Every method trains on `infra.config.default_device()` (a GPU when there is one); checkpoints
record the settings that shape training (`train.checkpoints`).
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from zoomin_lib.infra.config import default_device
from zoomin_lib.infra.io import write_json
from zoomin_lib.infra.progress import tqdm
from zoomin_lib.steps import ExtraTerm, predictor, sampling_loss
from zoomin_lib.train.fingerprint import fingerprint
from zoomin_lib.train.loop import evaluate, fit, seed_everything
from zoomin_lib.train.supervision import box_term

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


def standardized_image(image: np.ndarray, stats: tuple[Tensor, Tensor]) -> Tensor:
    """`standardize(image_tensor(image), stats)`, the same values, computed in place on the fresh tensor.

    For images of megapixels read again every epoch: the out-of-place version allocates two more
    float copies of the image and cost about three times the decoding (chapter 07).
    """
    mean, std = stats
    return image_tensor(image).sub_(mean).div_(std)  # [1, C, H, W]


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
    extra_terms: Mapping[str, ExtraTerm] | None = None,
) -> list[dict[str, Any]]:
    """Adam on the eq. 12 objective (contrastive after the warm-up) for `settings.epochs` epochs on `device`; the history.

    `extra_terms` (name -> term, as `steps.sampling_loss` takes them; e.g. `ips.regulariser_terms`)
    are added to the objective beside the box term of `settings.box_weight`, and their names to the
    checkpoint's record. The checkpoint records `settings` (as "training") and `record` (method,
    data fingerprint, profile, seed, ...) beside what `fit` sees itself; resuming with other ones is refused.
    """
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    terms = dict(extra_terms or {})
    if settings.box_weight > 0:
        if "box_attention" in terms:
            raise ValueError("extra_terms may not name 'box_attention': settings.box_weight adds that term")
        terms["box_attention"] = box_term(settings.box_weight)
    loss_fn = sampling_loss(
        warmup_epochs=settings.warmup_epochs, lam=settings.lam, class_weights=settings.class_weights,
        contrastive=settings.contrastive, generator=generator, extra_terms=terms or None,
    )
    if extra_terms:
        record = {**(record or {}), "extra_terms": sorted(extra_terms)}
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
    # the same model tested on a fixed extra test set shared by every run (run_folds' extra_test): its
    # accuracy, auc, n, loss and confusion; None when there is none
    extra_test: dict[str, Any] | None = None


def _as_loader(x: Tensor, y: Tensor, batch_size: int = 16) -> list[tuple[Tensor, Tensor]]:
    """Fixed-order evaluation batches."""
    return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, x.shape[0], batch_size)]


def initial_model(factory: Factory, run_seed: int, device: str | torch.device | None = None
                  ) -> tuple[nn.Module, torch.Generator]:
    """The model `run_method(..., run_seed=run_seed)` starts training from, on `device`, and the generator it then uses.

    Every random number generator is seeded with `run_seed` (`seed_everything`, with a generator on
    `device`; None: `config.default_device()`) before `factory` builds the model, so the same call gives
    the same initial weights: a chapter measures an untrained method with exactly the weights its run began with.
    """
    device = default_device() if device is None else torch.device(device)
    generator = seed_everything(run_seed, device)
    return factory().to(device), generator


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
    extra_terms: Mapping[str, ExtraTerm] | None = None,
    extra_test: Sequence[Any] | None = None,
) -> tuple[FoldResult, nn.Module]:
    """Seed, build, train and test one method; its result (written to out_dir/runs/<tag>.json) and the model.

    The model trains and is tested on `device` (None: `config.default_device()`, a GPU when there
    is one), with a generator there, the data moving batch by batch; it is returned on the host,
    for the chapters' figures. `loss_wrapper` adapts the per-batch loss (e.g. `per_image` for
    batches of images of different sizes) and `predict_fn` the evaluation (default:
    `steps.predictor` in the model's eval mode); `extra_terms` go to `train_model`. The checkpoint out_dir/checkpoints/<tag>.pt
    records the method, `run_seed`, `settings` and `record` (e.g. {"data": fingerprint(...),
    "profile": profile}); `resume=True` with other ones stops naming each difference
    (`train.checkpoints.CheckpointMismatchError`), `resume=False` starts afresh. `extra_test` batches
    (like `test_batches`) test the trained model once more, with the same predictor; their metrics go to
    the result's `extra_test`.
    """
    device = default_device() if device is None else torch.device(device)
    model, generator = initial_model(factory, run_seed, device)
    checkpoint = Path(out_dir) / "checkpoints" / f"{tag}.pt" if out_dir is not None else None
    history = train_model(
        model, train_batches, settings, generator,
        eval_fn=(lambda m: probe(m, generator)) if probe is not None else None,
        checkpoint_path=checkpoint, resume=resume, progress=False, loss_wrapper=loss_wrapper, device=device,
        record={"method": name, "seed": run_seed, **(record or {})}, extra_terms=extra_terms,
    )
    metrics = evaluate(model, test_batches, predict_fn or predictor(generator=generator))
    extra = None
    if extra_test is not None:
        m = evaluate(model, extra_test, predict_fn or predictor(generator=generator))
        extra = {k: m[k] for k in ("accuracy", "auc", "n", "loss", "confusion")}
    rep, fold = (int(v) for v in re.findall(r"_r(\d+)_f(\d+)$", tag)[0]) if re.search(r"_r\d+_f\d+$", tag) else (0, 0)
    result = FoldResult(name, rep, fold, metrics["accuracy"], metrics["auc"], metrics["n"], metrics["loss"], history,
                        metrics["confusion"], extra)
    if out_dir is not None:
        write_json(Path(out_dir) / "runs" / f"{tag}.json", asdict(result))
    return result, model.cpu()


def run_tag(name: str, repetition: int, fold: int) -> str:
    """The name of one run's files under out_dir/checkpoints and out_dir/runs: <method>_r<repetition>_f<fold>."""
    return f"{name}_r{int(repetition)}_f{int(fold)}"


def load_run_model(factory: Factory, out_dir: str | Path, name: str, repetition: int, fold: int) -> nn.Module:
    """The model that `run_folds` trained for one run, rebuilt by `factory` with its checkpoint's weights, on the host.

    The checkpoint is the one `run_method` wrote (out_dir/checkpoints/<run_tag>.pt, the weights after
    its last epoch). A missing file stops with its path.
    """
    path = Path(out_dir) / "checkpoints" / f"{run_tag(name, repetition, fold)}.pt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no checkpoint of {name!r}, repetition {repetition}, fold {fold} (was it trained "
                                f"with out_dir={str(out_dir)!r}?)")
    model = factory()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model"])
    return model.eval()


def retest_runs(
    methods: Mapping[str, Factory],
    out_dir: str | Path,
    folds: Sequence[Any],
    x: Tensor,
    y: Tensor,
    predict_fn: Callable[[nn.Module, Any], tuple[Tensor, Tensor]],
    device: str | torch.device = "cpu",
    own_fold: bool = False,
) -> dict[str, list[FoldResult]]:
    """Every run of `run_folds` (`folds` x `methods`) rebuilt from its checkpoint and tested on x [M, C, H, W], y [M].

    By default every run is tested on all of x, y (e.g. `run_folds`' extra test images; pool the results
    with `shared_test_set=True`); with `own_fold`, each run on its own fold's held-out images x[f.test]
    (x, y: the data `run_folds` split). Predictions come from `predict_fn` (e.g. `steps.predictor` in
    another mode than the one the runs were tested in) on `device`, run after run in the order of
    `folds`, then `methods`. Results carry each run's repetition and fold and no history; their loss is
    the cross-entropy of `predict_fn`'s logits (with `steps.predictor(draws=)`, of the mean probabilities,
    not comparable with one pass's). A missing checkpoint stops with its path.
    """
    shared = _as_loader(x, y)
    out: dict[str, list[FoldResult]] = {name: [] for name in methods}
    for f in folds:
        if own_fold:
            test_idx = torch.as_tensor(np.asarray(f.test), dtype=torch.long)
            batches = _as_loader(x[test_idx], y[test_idx])  # [n, C, H, W], [n] in batches
        else:
            batches = shared
        for name, build in methods.items():
            model = load_run_model(build, out_dir, name, f.repetition, f.fold).to(device)
            m = evaluate(model, batches, predict_fn)
            out[name].append(FoldResult(name, int(f.repetition), int(f.fold), m["accuracy"], m["auc"], m["n"], m["loss"],
                                        [], m["confusion"]))
    return out


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
    extra_test: tuple[Tensor, Tensor] | None = None,
) -> tuple[dict[str, list[FoldResult]], dict[str, nn.Module]]:
    """Train every method on every fold (objects with .repetition, .fold, .train, .test); test metrics per run.

    Each run is seeded by (seed, repetition, fold), so every method sees the same mini-batch
    order. `probe(model, generator)` runs after each epoch (its dict enters the history as
    val_<key>). With `out_dir`, each run's checkpoint and result are written there atomically,
    and `resume=True` continues an interrupted run from them; a checkpoint records the data
    (`fingerprint` of x, y and the fold's indices) and `record` (e.g. the profile), and one written
    with other settings is not resumed but refused. With `extra_test` (x [M, C, H, W], y [M]), every run's
    model is also tested on those images, the same for every run (e.g. more images of a stand-in's
    generator than the folds hold), in its result's `extra_test`. Returns the results per method and the
    models trained on the first fold (for the figures).
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
            run_seed=run_seed, tag=run_tag(name, f.repetition, f.fold),
            out_dir=out_dir, resume=resume, probe=probe,
            record={"data": fingerprint(data_id, f.train, f.test), **(record or {})},
            extra_test=_as_loader(*extra_test) if extra_test is not None else None,
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
