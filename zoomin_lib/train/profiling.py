"""Honest cost measurements: peak memory, FLOPs/MACs (Zoom-In appendix A, eq. 10) and time per sample.

- Peak memory on CUDA: `torch.cuda.max_memory_allocated()` after `reset_peak_memory_stats()`,
  minus what was allocated before (never `memory_allocated()`, which is the *current* value).
- Peak memory on the CPU: every tensor allocation and free recorded by `torch.profiler`
  (`profile_memory=True`) is replayed in time order and the largest running total is taken;
  never the process RSS.
- FLOPs: `torch.utils.flop_counter.FlopCounterMode`. It reports FLOPs (2 per
  multiply-accumulate); Zoom-In's eq. (10), C_in k^2 H_out W_out C_out, counts MACs = FLOPs / 2.
- Time: `torch.utils.benchmark.Timer` (warm-up call first; the timer synchronises CUDA), run
  with `torch.get_num_threads()` threads (the Timer's own default is a single thread).
"""

from __future__ import annotations

import contextlib
import time
import tracemalloc
import warnings
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Iterator, Mapping

import torch
import torch.utils.benchmark as benchmark
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from zoomin_lib.infra.config import default_device
from zoomin_lib.models import module_device
from zoomin_lib.steps import sampling_loss
from zoomin_lib.train.loop import evaluating, to_device, training_mode

__all__ = [
    "MemoryReport",
    "FlopReport",
    "TimeReport",
    "peak_memory",
    "parameter_bytes",
    "count_flops",
    "time_per_sample",
    "profile_inference",
    "report_dict",
]

MB = 2**20


@dataclass(frozen=True)
class MemoryReport:
    """Peak bytes allocated by a call, and how they were measured."""

    peak_bytes: int
    method: str
    device: str

    @property
    def peak_mb(self) -> float:
        """Peak in MiB (2^20 bytes)."""
        return self.peak_bytes / MB


@dataclass(frozen=True)
class FlopReport:
    """FLOPs counted by FlopCounterMode; MACs = FLOPs / 2 (the unit of eq. 10)."""

    flops: int
    by_operator: dict[str, int] = field(default_factory=dict)

    @property
    def macs(self) -> float:
        """Multiply-accumulates, FLOPs / 2."""
        return self.flops / 2


@dataclass(frozen=True)
class TimeReport:
    """Median wall time per sample over `runs` timed calls, with `threads` CPU threads."""

    seconds_per_sample: float
    seconds_per_call: float
    runs: int
    batch_size: int
    threads: int


def _as_device(device: str | torch.device | None) -> torch.device:
    """A torch.device; None means `config.default_device()`."""
    return default_device() if device is None else torch.device(device)


def _cpu_allocation_deltas(prof: profile) -> list[tuple[int, int]]:
    """(time_ns, signed bytes) of every CPU allocation (+) and free (-) the profiler saw, in time order."""
    results = getattr(getattr(prof, "profiler", None), "kineto_results", None)
    if results is None:
        raise RuntimeError(
            "this torch.profiler does not expose its raw events (prof.profiler.kineto_results); "
            "cannot replay CPU allocations"
        )
    deltas = [
        (int(ev.start_ns()), int(ev.nbytes()))
        for ev in results.events()
        if ev.name() == "[memory]" and ev.device_type() == torch.autograd.DeviceType.CPU
    ]
    deltas.sort(key=lambda item: item[0])  # stable: ties keep the recorded order
    return deltas


def _replay_peak(deltas: list[tuple[int, int]]) -> int:
    """max(0, largest running total) of the byte deltas, starting from 0.

    The running total itself can go negative: tensors allocated before the profiled call and
    freed inside it count as frees without a matching allocation. The peak is the extra memory
    above the starting point, so it is at least 0.
    """
    running, peak = 0, 0
    for _, nbytes in deltas:
        running += nbytes
        peak = max(peak, running)
    return peak


def peak_memory(
    fn: Callable[[], Any], device: str | torch.device | None = None, *, warmup: bool = True
) -> MemoryReport:
    """Peak bytes allocated while `fn()` runs, beyond what was already allocated before it.

    Memory that exists before the call (model weights, inputs) is not counted unless `fn`
    creates it; frees of such memory inside `fn` lower the running total (the figure is the
    extra memory `fn` needs on top of its starting point). With `warmup`, `fn` runs once
    first so that one-off lazy state (cuDNN/cuBLAS workspaces, caches) is not counted.

    CUDA: synchronize, empty the cache, reset the peak statistics, then
    max_memory_allocated() - memory_allocated() before the call (tensor allocations through
    the caching allocator; the allocator's reserve is not counted).
    CPU: torch.profiler records each tensor allocation/free of PyTorch's CPU allocator; the
    events are replayed in time order and the largest running total is the peak. Memory
    allocated outside that allocator (numpy arrays, oneDNN scratch buffers) is not seen.
    """
    dev = _as_device(device)
    if warmup:
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)
        baseline = torch.cuda.memory_allocated(dev)
        out = fn()
        torch.cuda.synchronize(dev)
        peak = torch.cuda.max_memory_allocated(dev) - baseline
        del out
        return MemoryReport(int(peak), "cuda.max_memory_allocated", str(dev))
    if dev.type == "cpu":
        with warnings.catch_warnings():
            # some torch versions warn that events are cleared per cycle; we read them at once
            warnings.filterwarnings("ignore", message=".*Profiler clears events.*")
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                out = fn()
                del out
        peak = _replay_peak(_cpu_allocation_deltas(prof))
        return MemoryReport(int(peak), "torch.profiler allocation replay", str(dev))
    raise ValueError(f"peak_memory supports cpu and cuda devices, got {dev}")


def parameter_bytes(model: torch.nn.Module, include_buffers: bool = True) -> int:
    """Bytes held by the model's (unique) parameters, and by its buffers unless excluded."""
    tensors = list(model.parameters())
    if include_buffers:
        tensors += list(model.buffers())
    return int(sum(t.numel() * t.element_size() for t in tensors))


def count_flops(fn: Callable[[], Any]) -> FlopReport:
    """FLOPs of one call of `fn` by operator (matmul/conv-like ops only; element-wise ops are not counted)."""
    with FlopCounterMode(display=False) as counter:
        fn()
    per_op = counter.get_flop_counts().get("Global", {})
    by_operator = {str(op): int(n) for op, n in per_op.items()}  # e.g. "aten.convolution"
    return FlopReport(int(counter.get_total_flops()), by_operator)


def time_per_sample(
    fn: Callable[[], Any], batch_size: int = 1, min_run_time: float = 0.2, *, warmup: bool = True
) -> TimeReport:
    """Median seconds per sample of `fn()` (which processes `batch_size` samples), by torch.utils.benchmark.Timer.

    With `warmup`, `fn` runs once untimed first; a caller that has just run it (as `profile_inference`
    does, for memory and FLOPs) passes False and saves that call.

    The timer runs with torch.get_num_threads() threads, as the code runs outside the timer
    (benchmark.Timer would otherwise use one thread); the count is recorded in the report.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if min_run_time <= 0:
        raise ValueError(f"min_run_time must be positive, got {min_run_time}")
    if warmup:
        fn()
    threads = torch.get_num_threads()
    timer = benchmark.Timer(stmt="fn()", globals={"fn": fn}, num_threads=threads)
    measurement = timer.blocked_autorange(min_run_time=min_run_time)
    runs = len(measurement.times) * int(measurement.number_per_run)
    per_call = float(measurement.median)
    return TimeReport(per_call / batch_size, per_call, runs, batch_size, threads)


def _to_device(obj: Any, device: torch.device) -> Any:
    """Move a tensor, or the tensors of a tuple/list, to `device`; leave anything else as it is."""
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_to_device(o, device) for o in obj)
    return obj


def _batch_size(example_input: Any) -> int | None:
    """Leading dimension of the (first) input tensor, if there is one."""
    first = example_input[0] if isinstance(example_input, (tuple, list)) and example_input else example_input
    return int(first.shape[0]) if isinstance(first, torch.Tensor) and first.dim() > 0 else None


def profile_inference(
    model: torch.nn.Module,
    example_input: Any,
    device: str | torch.device | None = None,
    *,
    min_run_time: float = 0.2,
    **forward_kwargs: Any,
) -> dict[str, Any]:
    """Peak memory (MiB), MFLOPs/MMACs and ms per sample of one inference forward (eval, no_grad).

    The model is measured on `device` (default: the device of its parameters, else
    `config.default_device()`) and moved back where it was afterwards; `example_input` (a
    tensor, or a tuple/list of positional inputs) is moved there too. Batch size 1 is expected:
    peak memory is for the whole batch given.
    """
    home = next(iter(model.parameters()), None)
    home = home.device if home is not None else None
    dev = (home or default_device()) if device is None else torch.device(device)
    model.to(dev)
    inputs = _to_device(example_input, dev)
    batch = _batch_size(inputs)
    if batch is not None and batch != 1:
        warnings.warn(
            f"profile_inference expects batch size 1, got {batch}: memory is for the whole "
            "batch, time is divided by the batch size",
            stacklevel=2,
        )
    args = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)

    def forward() -> Any:
        return model(*args, **forward_kwargs)

    try:
        with evaluating(model):
            memory = peak_memory(forward, dev)
            flops = count_flops(forward)
            # forward has run three times above (peak_memory's warm-up and measurement, count_flops): warm
            timing = time_per_sample(forward, batch or 1, min_run_time, warmup=False)
    finally:
        if home is not None:
            model.to(home)  # back where it was
    return {
        "device": str(dev),
        "batch_size": batch or 1,
        "peak_memory_mb": memory.peak_mb,
        "memory_method": memory.method,
        "parameter_mb": parameter_bytes(model) / MB,
        "mflops": flops.flops / 1e6,
        "mmacs": flops.macs / 1e6,
        "flops_by_operator": dict(flops.by_operator),
        "ms_per_sample": timing.seconds_per_sample * 1e3,
        "timing_runs": timing.runs,
        "threads": timing.threads,
    }


def report_dict(report: MemoryReport | FlopReport | TimeReport) -> dict[str, Any]:
    """A report as a plain, JSON-able dict (properties included)."""
    out = asdict(report)
    if isinstance(report, MemoryReport):
        out["peak_mb"] = report.peak_mb
    if isinstance(report, FlopReport):
        out["macs"] = report.macs
    return out


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

    try:
        with training_mode(model):
            report = peak_memory(step, device, warmup=False)
    finally:
        model.zero_grad(set_to_none=True)
    return report.peak_mb


def host_peak_memory(fn: Callable[[], Any], device: torch.device | str | None = None) -> dict[str, Any]:
    """Peak host memory of `fn()`: torch tensor allocations and numpy/Python allocations, measured separately (MiB).

    `fn` runs three times: a timed warm-up (`seconds`, wall clock), then under the profiler for
    tensors (`profiling.peak_memory`: allocation events replayed), then under tracemalloc for
    numpy (numpy reports its buffers to tracemalloc: slide reads, thumbnails, masks). Neither sees
    the C libraries' own buffers (OpenSlide's and PIL's decode buffers). `sum_mb` bounds the
    combined peak from above (the two peaks need not coincide). With a CUDA `device` (the model's),
    a fourth run gives the device's peak (`device_mb`, `torch.cuda.max_memory_allocated`).
    """
    began = time.perf_counter()
    fn()
    seconds = time.perf_counter() - began
    extra: dict[str, Any] = {}
    if device is not None and torch.device(device).type == "cuda":
        extra["device_mb"] = peak_memory(fn, device, warmup=False).peak_mb
    torch_peak = peak_memory(fn, "cpu", warmup=False)
    tracemalloc.start()
    try:
        fn()
        _, numpy_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return {"torch_mb": torch_peak.peak_mb, "numpy_mb": numpy_peak / MB, "sum_mb": torch_peak.peak_mb + numpy_peak / MB,
            "seconds": seconds, "method": f"{torch_peak.method} + tracemalloc", **extra}
