"""`zoomin train`: chapter 04's protocol on a Camelyon16-layout folder, outside a notebook.

The slides are read and checked as the chapter reads them (`chapters.camelyon.slide_data`: corrupt
slides are reported and skipped); the model is standardised with the training slides' channel
statistics; when the training slides have lesion annotations, a, b and f are first pre-trained as
tile classifiers (appendix L) and eq. 13's MSE joins eq. 12's loss, otherwise eq. 12 alone
(cross-entropy, entropy terms, the contrastive loss after the warm-up). In `RUN_DIR`:

- `checkpoint.pt`: after every epoch, atomically: model, optimiser, generator states, history and
  the settings record (`train.checkpoints.settings_record`, with the profile's settings, the model's
  configuration under `model`, the seed and a fingerprint of the training slides). `--resume`
  continues it exactly; one written with other settings is refused, each difference named.
- `metrics.jsonl`: one JSON line per finished epoch (loss and its parts, seconds), rewritten
  atomically; TensorBoard event files beside it when `tensorboard` is installed.
- `settings.json`: the settings of the run (written when it ends).

Under torchrun the ranks train one model with `DistributedDataParallel` (`cli.distributed`), each
on its share of the slides (`cli.distributed.shard`: `slides[rank::world]`, padded to equal counts), so the
combined batch is `batch` x ranks; appendix L's pre-training runs on every training slide before DDP
broadcasts rank 0's weights; rank 0 writes the run folder (ranks > 0 resume from its checkpoint, their
sampling streams restarting from rank 0's, and keep only a scratch copy).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence

import torch
from torch import nn

from zoomin_lib.chapters.camelyon import roi_of, slide_data, slide_stats
from zoomin_lib.cli.distributed import World, setup, shard, wrap
from zoomin_lib.cli.settings import build_model, model_config, resolve
from zoomin_lib.infra.io import write_json, write_text
from zoomin_lib.train.fingerprint import fingerprint
from zoomin_lib.train.loop import fit, seed_everything
from zoomin_lib.train.protocol import lazy_batches
from zoomin_lib.wsi.predict import SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader
from zoomin_lib.wsi.resolution import MICRON_KEYS, in_pixels, resolve_mpp, slide_mpp
from zoomin_lib.wsi.train import pretrain_tile_classifiers, slide_loss

__all__ = ["MetricsLog", "train_run", "run_train_command"]


class MetricsLog:
    """metrics.jsonl, one line per finished epoch, rewritten atomically (and TensorBoard scalars when installed).

    `wrap(loss_fn)` averages the loss parts of each epoch; `end_epoch` (fit's eval_fn, run after every
    epoch) appends the epoch's line, its means taken over the ranks of a distributed run (`batches` per rank). A resumed run first keeps only the lines of the epochs its
    checkpoint holds.
    """

    def __init__(self, folder: Path, keep_epochs: int = 0, enabled: bool = True, world: World | None = None) -> None:
        self.path = folder / "metrics.jsonl"
        self.enabled = enabled
        self.world = world
        old = self.path.read_text().splitlines() if self.path.is_file() else []
        self.lines = [line for line in old if line.strip() and json.loads(line)["epoch"] <= keep_epochs]
        self.sums: dict[str, float] = {}
        self.batches, self.epoch, self.began = 0, 0, time.perf_counter()
        self.writer = None
        if enabled:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=keep_epochs + 1)
            except ImportError:  # tensorboard is optional
                self.writer = None

    def wrap(self, loss_fn: Any) -> Any:
        """loss_fn for `fit` that also sums its parts for this epoch's line."""

        def logged(model: nn.Module, batch: Any, epoch: int) -> tuple[torch.Tensor, dict[str, float]]:
            if epoch != self.epoch or self.batches == 0:
                self.sums, self.batches, self.epoch, self.began = {}, 0, epoch, time.perf_counter()
            loss, parts = loss_fn(model, batch, epoch)
            self.batches += 1
            for key, value in parts.items():
                self.sums[key] = self.sums.get(key, 0.0) + float(value)
            return loss, parts

        return logged

    def end_epoch(self, model: nn.Module) -> dict[str, Any]:
        """Append this epoch's line (epoch, batches, mean loss parts, seconds); nothing for fit's history."""
        means = {k: v / max(1, self.batches) for k, v in sorted(self.sums.items())}
        if self.world is not None and self.world.size > 1:  # every rank runs this: the mean over the ranks
            means = {k: self.world.all_sum(v) / self.world.size for k, v in means.items()}
        record = {"epoch": self.epoch + 1, "batches": self.batches, **means, "seconds": time.perf_counter() - self.began}
        self.batches = 0
        if self.enabled:
            self.lines.append(json.dumps(record, sort_keys=True))
            write_text(self.path, "\n".join(self.lines) + "\n")
            if self.writer is not None:
                for key, value in record.items():
                    self.writer.add_scalar(f"train/{key}", value, record["epoch"])
                self.writer.flush()
        return {}


def _checkpoint_epochs(path: Path) -> int:
    """The finished epochs a checkpoint holds (0 when there is none)."""
    return int(torch.load(path, map_location="cpu", weights_only=True)["epoch"]) if path.is_file() else 0


def train_run(
    data_dir: Path,
    out: Path,
    *,
    profile: str = "smoke",
    overrides: Sequence[str] = (),
    resume: bool = False,
    seed: int = 0,
    world: World | None = None,
    progress: bool = True,
    mpp: float | None = None,
) -> tuple[SlideZoomIn, list[dict[str, Any]]]:
    """Train Zoom-In on the Camelyon16 folder `data_dir` into the run folder `out`; (the model, the history).

    Settings in microns (`wsi.resolution.MICRON_KEYS`) are turned into pixels at the first training slide's
    microns per pixel, or `mpp` when given.
    """
    world = world or setup("cpu")
    cfg = resolve(profile, overrides)
    ckpt = out / "checkpoint.pt"
    if resume and not ckpt.is_file():
        raise ValueError(f"--resume: {ckpt} does not exist (start without --resume)")
    data = slide_data(data_dir, {**cfg, "synthetic": None}, seed)  # prints each skipped slide
    with SlideReader(data.train[0].path) as first:  # the run's resolution: the first training slide's, or --mpp
        known = slide_mpp(first.slide)
        if any(cfg[key] is not None for key in MICRON_KEYS):
            mpp = resolve_mpp(first.slide, mpp)
            cfg = in_pixels(cfg, mpp)
        elif mpp is None and known is not None:
            mpp = sum(known) / 2
    stats = slide_stats(data.train)
    generator = seed_everything(seed, world.device)
    model = build_model(model_config(cfg), stats)
    everyone = [model.open(r.path, name=r.slide_id, label=r.label, roi=roi_of(r), cache_views=True) for r in data.train]
    readers = [everyone[i] for i in shard(len(everyone), world.rank, world.size)]  # this rank's share, equal counts
    pixel = any(r.annotation is not None for r in data.train)
    settings = {"profile": profile, "config": "camelyon16", "settings": cfg, "model": {**model_config(cfg), "mpp": mpp},
                "seed": seed, "pixel_supervision": pixel, "world_size": world.size,
                "data": fingerprint(sorted((r.slide_id, r.label) for r in data.train))}
    lead = world.rank == 0
    if lead:
        out.mkdir(parents=True, exist_ok=True)
    done = _checkpoint_epochs(ckpt) if resume else 0
    if lead:
        print(f"{data.summary()}; settings {profile!r} (tiles {cfg['tile']}, s1 {cfg['s1']:.4g}, s2 {cfg['s2']:.4g}, "
              f"sub-tiles {cfg['patch']}, N {cfg['n']}), {world.size} rank(s) on {world.device}"
              + (f"; resuming after epoch {done}" if done else ""))
    if pixel and done == 0:
        if lead:
            print("lesion annotations found: pre-training a, b, f as tile classifiers (appendix L), then eq. 12 + eq. 13")
        info = pretrain_tile_classifiers(model, everyone, steps=cfg["pretrain_steps"], lr=cfg["pretrain_lr"],
                                         windows=cfg["pretrain_windows"], generator=generator, device=world.device)
        if lead:
            write_json(out / "pretraining.json", info)
    log = MetricsLog(out, keep_epochs=done, enabled=lead, world=world)
    loss_fn = log.wrap(slide_loss(warmup_epochs=cfg["warmup"], lam=1e-5, pixel_weight=1.0 if pixel else 0.0,
                                  generator=generator))
    batches = lazy_batches(lambda idx: [readers[i] for i in idx], [int(r.label) for r in readers], cfg["batch"], seed)
    trained = wrap(model, world)
    optimizer = torch.optim.Adam(trained.parameters(), lr=cfg["lr"])
    with tempfile.TemporaryDirectory(prefix="zoomin-rank") as scratch:
        path = ckpt
        if not lead:  # ranks > 0 resume from rank 0's checkpoint but write only a scratch copy
            path = Path(scratch) / "checkpoint.pt"
            if resume:
                shutil.copyfile(ckpt, path)
        history = fit(trained, batches, loss_fn, optimizer, cfg["epochs"], eval_fn=log.end_epoch, checkpoint_path=path,
                      resume=resume, progress=progress and lead, generators=[generator], device=world.device,
                      settings=settings)
    for r in everyone:
        r.close()
    if lead:  # after fit: a refused resume leaves the run folder as it was
        write_json(out / "settings.json", settings)
    return model, history


def run_train_command(args: Any) -> int:
    """`zoomin train` from parsed arguments; the exit status."""
    world = setup(args.device)
    try:
        _, history = train_run(args.data_dir, args.out, profile=args.profile, overrides=args.overrides,
                               resume=args.resume, seed=args.seed, world=world, progress=not args.no_progress,
                               mpp=args.mpp)
    finally:
        world.close()
    if world.rank == 0 and history:
        last = json.loads((args.out / "metrics.jsonl").read_text().splitlines()[-1])  # over every rank
        print(f"trained {last['epoch']} epoch(s); last epoch loss {last['total']:.4f}; checkpoint {args.out / 'checkpoint.pt'}")
    return 0
