"""Tests of zoomin_lib.train.profiling: peak memory is a true peak, FLOP/MAC counts match eq. (10)."""

import json

import pytest
import torch

from zoomin_lib.train.profiling import (
    count_flops,
    parameter_bytes,
    peak_memory,
    profile_inference,
    report_dict,
    time_per_sample,
)

MB = 2**20


def test_cpu_peak_is_the_largest_live_set_not_the_last():
    def fn():
        big = torch.empty(10 * MB, dtype=torch.float32)  # 40 MiB
        big.fill_(1.0)
        del big
        small = torch.ones(2 * MB, dtype=torch.float32)  # 8 MiB
        return small.sum()

    report = peak_memory(fn, "cpu", warmup=False)
    assert report.device == "cpu" and "profiler" in report.method
    assert 40 * MB <= report.peak_bytes <= 40 * MB * 1.05


def test_cpu_peak_counts_tensors_alive_together():
    def fn():
        a = torch.ones(5 * MB, dtype=torch.float32)  # 20 MiB
        b = torch.ones(5 * MB, dtype=torch.float32)  # 20 MiB
        return a.sum() + b.sum()

    report = peak_memory(fn, "cpu", warmup=False)
    assert 40 * MB <= report.peak_bytes <= 40 * MB * 1.05


def test_cpu_peak_ignores_existing_tensors():
    existing = torch.ones(5 * MB)  # 20 MiB allocated before the call

    def fn():
        return (existing[:1000] * 2).sum()  # a few KiB

    assert peak_memory(fn, "cpu", warmup=False).peak_bytes < MB


def test_parameter_bytes():
    model = torch.nn.Sequential(torch.nn.Linear(10, 5), torch.nn.BatchNorm1d(5))
    params = (10 * 5 + 5) + (5 + 5)
    buffers = 5 + 5  # running mean/var (float32) + num_batches_tracked (int64, 8 bytes)
    assert parameter_bytes(model, include_buffers=False) == params * 4
    assert parameter_bytes(model) == params * 4 + buffers * 4 + 8


def test_conv_macs_match_eq_10():
    conv = torch.nn.Conv2d(3, 8, 3, padding=1)
    x = torch.randn(1, 3, 32, 32)
    report = count_flops(lambda: conv(x))
    assert report.macs == 3 * 9 * 32 * 32 * 8  # C_in k^2 H_out W_out C_out
    assert report.flops == 2 * report.macs
    assert report.by_operator == {"aten.convolution": report.flops}


def test_linear_macs():
    linear = torch.nn.Linear(16, 4)
    report = count_flops(lambda: linear(torch.randn(7, 16)))
    assert report.macs == 16 * 4 * 7


def test_time_per_sample_reports_runs():
    x = torch.randn(4, 64)
    report = time_per_sample(lambda: x @ x.T, batch_size=4, min_run_time=0.02)
    assert report.runs >= 1 and report.batch_size == 4
    assert report.seconds_per_sample == pytest.approx(report.seconds_per_call / 4)
    assert 0 < report.seconds_per_sample < 0.1
    with pytest.raises(ValueError):
        time_per_sample(lambda: None, batch_size=0)


def test_time_per_sample_warmup_is_one_untimed_call():
    """warmup=False (a caller that has just run fn) saves exactly the one untimed call."""
    calls = {True: [], False: []}
    for warm in (True, False):
        report = time_per_sample(lambda w=warm: calls[w].append(1), min_run_time=0.01, warmup=warm)
        assert len(calls[warm]) >= report.runs + (1 if warm else 0)
    # the timed loop is the same; only the warm-up call differs (counts vary with autorange's blocks)
    assert len(calls[True]) >= 2 and len(calls[False]) >= 1


def test_time_per_sample_times_with_all_threads():
    """The timed calls see torch.get_num_threads() threads (benchmark.Timer defaults to one)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        report = time_per_sample(lambda: seen.append(torch.get_num_threads()), min_run_time=0.01)
        assert report.threads == torch.get_num_threads() == 2
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(previous)


def test_profile_inference_on_tiny_conv_net():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 2),
    )
    model.train()
    result = profile_inference(model, torch.randn(1, 3, 16, 16), device="cpu", min_run_time=0.02)
    assert model.training  # mode restored
    for key in ("peak_memory_mb", "mflops", "mmacs", "ms_per_sample", "parameter_mb"):
        assert result[key] > 0, key
    assert result["mmacs"] == pytest.approx((3 * 9 * 16 * 16 * 4 + 4 * 2) / 1e6)
    assert result["memory_method"] and result["batch_size"] == 1
    assert result["threads"] == torch.get_num_threads()
    json.dumps(result)  # JSON-serialisable
    json.dumps(report_dict(count_flops(lambda: model(torch.randn(1, 3, 8, 8)))))


def test_profile_inference_warns_on_batches():
    model = torch.nn.Linear(3, 2)
    with pytest.warns(UserWarning, match="batch size 1"):
        profile_inference(model, torch.randn(2, 3), device="cpu", min_run_time=0.01)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_peak_memory():
    def fn():
        a = torch.empty(10 * MB, dtype=torch.float32, device="cuda")  # 40 MiB
        del a
        return torch.ones(2 * MB, device="cuda").sum()

    report = peak_memory(fn, "cuda")
    assert report.method == "cuda.max_memory_allocated"
    assert 40 * MB <= report.peak_bytes <= 40 * MB * 1.05
