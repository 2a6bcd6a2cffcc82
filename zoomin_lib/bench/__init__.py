"""The benchmark: Zoom-In against ATS-10, both sides of every comparison measured interleaved in one process, as ratios.

`python -m zoomin_lib.bench` (options: `--help`) prints a table per device and writes every figure
to JSON (default `results/bench/bench.json`). Machines are shared and noisy: an absolute time is
never reported alone, each Zoom-In figure stands beside ATS's, measured in alternation with it.

Settings (untrained networks; speed and memory do not depend on the weights):

- **colon** (Zoom-In sec. 4, appendix G; table 1): 500 x 500 RGB images; Zoom-In with tiles of
  250, s1 = 0.1, s2 = 0.2, 27 x 27 sub-tiles, N = 10; ATS-10 with s = 0.2, 27 x 27 patches, N = 10;
  the LeNet networks of table 5 (`builders`).
  - inference time per image at batch 1 and at a large batch (64; 32 on the CPU), "topk" and
    "sample";
  - one training step at batch 5: the eq. 12 loss with the contrastive term, backward, Adam;
  - peak inference memory at batch 1 (top-k), default and lean (`train.profiling.lean_inference`),
    beside the floor of `memory_model.layer_floor_bytes`;
  - host synchronisations per forward (`zoomin_lib.syncs.record_syncs`) at batch 1 and large.
- **slides**: `infra.slides.write_periodic_slide` pyramids of 1e8, 1e9 and 1e10 pixels (cached in the data
  folder), chapter 04's `cpu` geometry (tiles 1024, s1 = 1/32, s2 = 1/8, 50 x 50 sub-tiles,
  N = 16), lean: seconds per slide (sample mode: the N draws; exact top-k, with the tiles it
  opened), host tensor peak and, on a GPU, the device's peak. One-stage ATS at s2 beside it where
  its whole V(x, s2) fits (`--ats-max-pixels`).

Interleaving: for each pair, after a warm-up of both, `rounds` rounds each time one call of each
side, in alternating order; each side's figure is its median (CUDA: synchronised before and after).
"""

from __future__ import annotations

import argparse
import contextlib
import math
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from torch import nn

from zoomin_lib import builders
from zoomin_lib.infra.config import data_dir, repo_root
from zoomin_lib.infra.io import write_json
from zoomin_lib.steps import sampling_loss
from zoomin_lib.syncs import record_syncs
from zoomin_lib.theory import memory_model
from zoomin_lib.train.profiling import MB, lean_inference, peak_memory

__all__ = ["COLON", "SLIDE", "colon_models", "interleaved", "bench_colon", "bench_slides", "main"]

COLON = dict(size=500, zoomin=dict(scale1=0.1, scale2=0.2, tile_size=250, patch_size=27, n_patches=10),
             ats=dict(scale=0.2, patch_size=27, n_patches=10))
SLIDE = dict(tile=1024, s1=1 / 32, s2=1 / 8, patch=50, n=16, strip_pixels=2**16)


def colon_models(device: torch.device, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    """(Zoom-In, ATS-10) of the colon setting on `device`, in eval mode."""
    torch.manual_seed(seed)
    zoom = builders.zoomin(in_channels=3, n_classes=2, **COLON["zoomin"]).to(device).eval()
    ats = builders.ats(in_channels=3, n_classes=2, **COLON["ats"]).to(device).eval()
    return zoom, ats


def _sync(device: torch.device) -> None:
    """Wait for the device (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def interleaved(fns: Sequence[Callable[[], Any]], device: torch.device, rounds: int = 15, warmup: int = 2) -> list[float]:
    """Median seconds of each fn, timed one call at a time in alternating order (round r runs them reversed when r is odd)."""
    for _ in range(warmup):
        for fn in fns:
            fn()
    _sync(device)
    times: list[list[float]] = [[] for _ in fns]
    for r in range(rounds):
        order = range(len(fns)) if r % 2 == 0 else reversed(range(len(fns)))
        for i in order:
            _sync(device)
            began = time.perf_counter()
            fns[i]()
            _sync(device)
            times[i].append(time.perf_counter() - began)
    return [statistics.median(t) for t in times]


def _pair(name: str, z: float, a: float, unit: str, **extra: Any) -> dict[str, Any]:
    """A row: Zoom-In's and ATS's figure and their ratio."""
    return {"measure": name, "zoomin": z, "ats": a, "ratio": z / a if a else math.nan, "unit": unit, **extra}


def _syncs_per_forward(model: nn.Module, x: torch.Tensor, mode: str) -> int:
    """Host synchronisations of one forward (the documented ones, `zoomin_lib.syncs`)."""
    with torch.no_grad(), record_syncs() as log:
        model(x, mode=mode, generator=_generator(x.device))
    return len(log)


def _kernel_launches(model: nn.Module, x: torch.Tensor, mode: str) -> int:
    """CUDA kernels one forward launches (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.no_grad():
        model(x, mode=mode, generator=_generator(x.device))
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            model(x, mode=mode, generator=_generator(x.device))
            torch.cuda.synchronize(x.device)
    return sum(1 for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA)


def _generator(device: torch.device, seed: int = 0) -> torch.Generator:
    """A generator on `device`."""
    return torch.Generator(device=device).manual_seed(seed)


def bench_colon(device: torch.device, batches: Sequence[int], rounds: int, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Every colon-setting comparison on `device`: rows of (Zoom-In, ATS-10, ratio)."""
    zoom, ats = colon_models(device)
    size = COLON["size"]
    rows: list[dict[str, Any]] = []
    gz, ga = _generator(device, 1), _generator(device, 1)
    for batch in batches:
        x = torch.randn(batch, 3, size, size, generator=_generator(device, 2), device=device)
        for mode in ("topk", "sample"):
            with torch.no_grad():
                tz, ta = interleaved([lambda: zoom(x, mode=mode, generator=gz), lambda: ats(x, mode=mode, generator=ga)],
                                     device, rounds)
            rows.append(_pair(f"inference {mode}, batch {batch}", 1e3 * tz / batch, 1e3 * ta / batch, "ms per image",
                              images_per_second=(batch / tz, batch / ta)))
            log(_row_text(rows[-1]))
        if device.type == "cuda":
            launches = [_kernel_launches(m, x, "topk") for m in (zoom, ats)]
            rows.append(_pair(f"CUDA kernels per forward, topk, batch {batch}", *launches, "count"))
            log(_row_text(rows[-1]))
        rows.append(_pair(f"host synchronisations per forward, topk, batch {batch}", _syncs_per_forward(zoom, x, "topk"),
                          _syncs_per_forward(ats, x, "topk"), "count"))
        rows.append(_pair(f"host synchronisations per forward, sample, batch {batch}", _syncs_per_forward(zoom, x, "sample"),
                          _syncs_per_forward(ats, x, "sample"), "count"))
        log(_row_text(rows[-2]))
        log(_row_text(rows[-1]))
    # one training step at batch 5: eq. 12 with the contrastive term (after the warm-up), backward, Adam
    x5 = torch.randn(5, 3, size, size, generator=_generator(device, 3), device=device)
    y5 = torch.tensor([0, 1, 1, 0, 1], device=device)
    steps = []
    for model in (zoom, ats):
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = sampling_loss(warmup_epochs=0, generator=_generator(device, 4))

        def step(model: nn.Module = model, opt: torch.optim.Optimizer = opt, loss_fn: Callable = loss_fn) -> None:
            model.train()
            loss, _ = loss_fn(model, (x5, y5), 1)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        steps.append(step)
    tz, ta = interleaved(steps, device, rounds)
    zoom.eval()
    ats.eval()
    rows.append(_pair("training step, batch 5 (eq. 12 with contrastive term, backward, Adam)", 1e3 * tz, 1e3 * ta, "ms"))
    log(_row_text(rows[-1]))
    # peak inference memory at batch 1, top-k
    x1 = torch.randn(1, 3, size, size, generator=_generator(device, 5), device=device)
    for lean in (False, True):
        peaks = []
        for model in (zoom, ats):
            context = lean_inference(model) if lean else contextlib.nullcontext()
            with context, torch.no_grad():
                peaks.append(peak_memory(lambda m=model: m(x1, mode="topk"), device).peak_mb)
        floors = [memory_model.layer_floor_bytes(m, (size, size), lean=lean) / MB for m in (zoom, ats)]
        rows.append(_pair(f"peak inference memory, batch 1, topk, {'lean' if lean else 'default'}", *peaks, "MiB",
                          floor_mib=floors, floor_ratio=floors[0] / floors[1]))
        log(_row_text(rows[-1]) + f"   (floors {floors[0]:.3f} / {floors[1]:.3f} MiB)")
    return {"setting": COLON, "rows": rows}


def _row_text(row: dict[str, Any]) -> str:
    """One printed line."""
    z, a = row["zoomin"], row["ats"]
    fmt = (lambda v: f"{v:10d}") if isinstance(z, int) else (lambda v: f"{v:10.3f}")
    return f"  {row['measure']:<78} Zoom-In {fmt(z)}  ATS-10 {fmt(a)}  ratio {row['ratio']:6.3f}  {row['unit']}"


def bench_slides(
    device: torch.device, sides: Sequence[int], ats_max_pixels: float, folder: Path, log: Callable[[str], None] = print
) -> dict[str, Any]:
    """Seconds and peaks per slide of Zoom-In (lean, sample and exact top-k) and, where it fits, one-stage ATS at s2."""
    from zoomin_lib.infra.slides import write_periodic_slide
    from zoomin_lib.wsi.predict import SlideATS, SlideZoomIn

    torch.manual_seed(0)
    net = builders.zoomin(in_channels=3, n_classes=2, scale1=SLIDE["s1"], scale2=SLIDE["s2"], tile_size=SLIDE["tile"],
                          patch_size=SLIDE["patch"], n_patches=SLIDE["n"])
    zoom = SlideZoomIn(net, strip_pixels=SLIDE["strip_pixels"]).to(device).eval()
    ats = SlideATS(builders.ats(in_channels=3, n_classes=2, scale=SLIDE["s2"], patch_size=SLIDE["patch"],
                                n_patches=SLIDE["n"])).to(device).eval()
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for side in sides:
        path = folder / f"sections_{side}.tif"  # write_periodic_slide: tissue sections on glass
        if not path.is_file():
            began = time.perf_counter()
            write_periodic_slide(path, side)
            log(f"  wrote {path.name} ({side}^2 = {side * side:.1e} pixels) in {time.perf_counter() - began:.1f} s")
        row: dict[str, Any] = {"side": side, "pixels": side * side}
        with lean_inference(net):
            for mode, rounds in (("sample", 3), ("topk", 1)):
                gen = _generator(device, 7)
                zoom.predict_one(path, mode, gen)  # warm-up (file cache, tissue)
                preds = []
                seconds = interleaved([lambda: preds.append(zoom.predict_one(path, mode, gen))], device, rounds, warmup=0)[0]
                host = peak_memory(lambda: zoom.predict_one(path, mode, gen), "cpu", warmup=False).peak_mb
                dev_peak = (peak_memory(lambda: zoom.predict_one(path, mode, gen), device, warmup=False).peak_mb
                            if device.type == "cuda" else None)
                row[f"zoomin_{mode}"] = {"seconds": seconds, "host_tensor_peak_mib": host, "device_peak_mib": dev_peak,
                                         "tiles_read": preds[-1].reads}
        with torch.no_grad(), zoom.open(path) as reader:  # how many tiles the exact top-k opened
            row["zoomin_topk"]["tiles_opened"] = int(zoom(reader, mode="topk").beta_tile.numel())
            row["tissue_tiles"] = int(zoom.allowed(reader).sum())
        if side * side <= ats_max_pixels:
            with lean_inference(ats.net):
                ats.predict_one(path)
                seconds = interleaved([lambda: ats.predict_one(path)], device, rounds=3, warmup=0)[0]
                host = peak_memory(lambda: ats.predict_one(path), "cpu", warmup=False).peak_mb
                dev_peak = peak_memory(lambda: ats.predict_one(path), device, warmup=False).peak_mb if device.type == "cuda" else None
            row["ats"] = {"seconds": seconds, "host_tensor_peak_mib": host, "device_peak_mib": dev_peak}
        rows.append(row)
        z = row["zoomin_sample"]
        t = row["zoomin_topk"]
        text = (f"  slide {side}^2 ({side * side:.0e} px): Zoom-In sample {z['seconds']:.2f} s, top-k {t['seconds']:.2f} s "
                f"({t['tiles_opened']} of {row['tissue_tiles']} tissue tiles opened); "
                f"host tensors {z['host_tensor_peak_mib']:.2f} / {t['host_tensor_peak_mib']:.2f} MiB")
        if device.type == "cuda":
            text += f"; device {z['device_peak_mib']:.2f} / {t['device_peak_mib']:.2f} MiB"
        if "ats" in row:
            text += (f"; ATS at s2 {row['ats']['seconds']:.2f} s, host tensors {row['ats']['host_tensor_peak_mib']:.1f} MiB"
                     + (f", device {row['ats']['device_peak_mib']:.1f} MiB" if device.type == "cuda" else ""))
        log(text)
    summary: dict[str, Any] = {}
    for mode in ("sample", "topk"):
        key = "device_peak_mib" if device.type == "cuda" else "host_tensor_peak_mib"
        peaks = [r[f"zoomin_{mode}"][key] for r in rows]
        summary[f"zoomin_{mode}_peak_spread"] = max(peaks) / min(peaks) - 1 if peaks else math.nan
    log(f"  Zoom-In peak spread over the slide sizes (max / min - 1): sample {summary['zoomin_sample_peak_spread']:.3f}, "
        f"top-k {summary['zoomin_topk_peak_spread']:.3f}")
    return {"setting": SLIDE, "rows": rows, "summary": summary}


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; print the tables and write the JSON."""
    parser = argparse.ArgumentParser(prog="python -m zoomin_lib.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda", "all"), default="all",
                        help="all: the CPU and, when there is one, the GPU (default)")
    parser.add_argument("--out", type=Path, default=None, help="JSON file (default results/bench/bench.json)")
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds per pair (default 15)")
    parser.add_argument("--cpu-batch", type=int, default=32, help="the large batch on the CPU (default 32)")
    parser.add_argument("--gpu-batch", type=int, default=64, help="the large batch on a GPU (default 64)")
    parser.add_argument("--slides", default="1e8,1e9,1e10", help="slide sizes in pixels, comma-separated ('' for none)")
    parser.add_argument("--ats-max-pixels", type=float, default=None,
                        help="largest slide ATS is run on (default 1e8 on the CPU, 1e9 on a GPU)")
    parser.add_argument("--quick", action="store_true", help="3 rounds, batches 1 and 4, one 1e7-pixel slide: a check that it runs")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.cpu_batch, args.gpu_batch, args.slides = 3, 4, 4, "1e7"
    devices = {"cpu": ["cpu"], "cuda": ["cuda"], "auto": ["cuda" if torch.cuda.is_available() else "cpu"],
               "all": ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])}[args.device]
    if "cuda" in devices and not torch.cuda.is_available():
        parser.error("--device cuda: no GPU is available")
    sides = [int(round(math.sqrt(float(s)))) for s in args.slides.split(",") if s.strip()]
    out = args.out or repo_root() / "results" / "bench" / "bench.json"
    report: dict[str, Any] = {"torch": torch.__version__, "threads": torch.get_num_threads(), "devices": {}}
    for name in devices:
        device = torch.device(name)
        label = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
        print(f"== {label}: colon setting (500x500, N = 10, LeNet, untrained), Zoom-In against ATS-10, interleaved")
        large = args.gpu_batch if device.type == "cuda" else args.cpu_batch
        result: dict[str, Any] = {"label": label, "colon": bench_colon(device, (1, large), args.rounds)}
        if sides:
            ats_max = args.ats_max_pixels or (1.01e9 if device.type == "cuda" else 1.01e8)
            print(f"== {label}: synthetic pyramidal slides, chapter 04's cpu geometry, lean")
            result["slides"] = bench_slides(device, sides, ats_max, data_dir("bench_slides"))
        report["devices"][name] = result
    write_json(out, report)
    print(f"written to {out}")
    return report
