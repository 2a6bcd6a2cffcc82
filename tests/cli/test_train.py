"""`zoomin train` on a tiny generated Camelyon16 stand-in: train then predict end to end, exact resume, refusal of other settings."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from data_prep.synthetic_slides import generate
from zoomin_lib.cli import main
from zoomin_lib.cli import train as train_module

TINY = dict(n_train_normal=2, n_train_tumor=2, n_test_normal=1, n_test_tumor=1, side=1024, tile=256,
            metastases=(1, 2), metastasis_radius=(8.0, 16.0), spacing=200.0)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A Camelyon16-layout stand-in of six 1024 x 1024 slides with lesion annotations."""
    return generate(tmp_path_factory.mktemp("camelyon") / "tiny", seed=0, **TINY)


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    """A run folder trained for one smoke epoch."""
    out = tmp_path_factory.mktemp("runs") / "run"
    assert main(["train", "--data-dir", str(data), "--config", "camelyon16", "--out", str(out), "--profile", "smoke",
                 "--device", "cpu", "--no-progress"]) == 0
    return out


def test_train_then_predict_end_to_end(data, run, tmp_path):
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [line["epoch"] for line in lines] == [1]
    assert lines[0]["batches"] == 2 and lines[0]["total"] > 0 and lines[0]["pixel_mse"] > 0  # annotations: eq. 13 on
    assert json.loads((run / "pretraining.json").read_text())["positive_tiles"] > 0  # appendix L's pre-training ran
    ckpt = torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["settings"]["model"]["tile"] == 512 and ckpt["settings"]["pixel_supervision"]
    out = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(out), "--device", "cpu",
                 str(data / "testing" / "images")]) == 0
    with open(out / "predictions.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    assert sorted(r["slide"] for r in table) == ["test_001", "test_002"]
    assert all(0 <= float(r["probability"]) <= 1 and r["label"] in ("0", "1") for r in table)
    assert (out / "test_001.geojson").is_file() and (out / "test_002_attention.png").is_file()
    assert ckpt["settings"]["model"]["mpp"] == pytest.approx(0.243)  # the stand-in's resolution tags
    records = json.loads((out / "report.json").read_text())["slides"]
    assert all(r["mpp"] == pytest.approx(0.243) and "warning" not in r for r in records)


def test_resume_with_other_settings_is_refused_naming_the_difference(data, run, capsys):
    before = (run / "checkpoint.pt").read_bytes()
    assert main(["train", "--data-dir", str(data), "--out", str(run), "--profile", "smoke", "--device", "cpu",
                 "--resume", "--set", "lr=0.01", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "checkpoint.pt" in err and "optimizer.lr: checkpoint 0.001, now 0.01" in err and "without --resume" in err
    assert (run / "checkpoint.pt").read_bytes() == before  # left as it was
    assert json.loads((run / "settings.json").read_text())["settings"]["lr"] == 0.001


def test_resume_without_a_checkpoint_says_so(data, tmp_path, capsys):
    assert main(["train", "--data-dir", str(data), "--out", str(tmp_path / "none"), "--device", "cpu", "--resume"]) == 2
    assert "checkpoint.pt does not exist" in capsys.readouterr().err


def test_an_interrupted_run_resumes_exactly(data, tmp_path, monkeypatch):
    args = ["train", "--data-dir", str(data), "--profile", "smoke", "--set", "epochs=2", "--device", "cpu", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "straight")]) == 0
    real_end = train_module.MetricsLog.end_epoch

    def stop_in_second(self, model):  # Ctrl-C at the end of the second epoch, before its checkpoint
        if self.epoch == 1:
            raise KeyboardInterrupt
        return real_end(self, model)

    monkeypatch.setattr(train_module.MetricsLog, "end_epoch", stop_in_second)
    assert main([*args, "--out", str(tmp_path / "cut")]) == 130
    assert torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(train_module.MetricsLog, "end_epoch", real_end)
    assert main([*args, "--out", str(tmp_path / "cut"), "--resume"]) == 0
    a = torch.load(tmp_path / "straight" / "checkpoint.pt", weights_only=True)
    b = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [json.loads(x)["epoch"] for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
