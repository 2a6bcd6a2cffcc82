"""`zoomin predict` on tiny generated slides: outputs, GeoJSON structure, resume after an interruption, corrupt slides."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from slide_fixtures import tissue_blob

from zoomin_lib.cli import main
from zoomin_lib.cli import predict as predict_module
from zoomin_lib.cli.settings import build_model, load_model, model_config, resolve
from zoomin_lib.infra.io import save_torch
from zoomin_lib.infra.slides import write_pyramid_tiff

ROOT = Path(__file__).resolve().parents[2]
SIDE = 1024


@pytest.fixture(scope="module")
def slides(tmp_path_factory) -> Path:
    """A folder of three tiny pyramidal slides (tissue discs on glass, 1024 x 1024)."""
    folder = tmp_path_factory.mktemp("slides")
    for k, (cy, cx) in enumerate([(400, 600), (600, 300), (512, 512)]):
        image, _ = tissue_blob(SIDE, SIDE, centre=(cy, cx), radius=250, seed=k)
        write_pyramid_tiff(folder / f"slide_{k}.tif", image, tile=256)
    return folder


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An untrained smoke-profile model saved as `zoomin train` saves it (weights and settings['model'])."""
    torch.manual_seed(0)
    config = model_config(resolve("smoke"))
    model = build_model(config, (torch.tensor([0.8, 0.6, 0.75]), torch.tensor([0.15, 0.2, 0.15])))
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    save_torch(path, {"model": model.state_dict(), "settings": {"model": config}, "epoch": 0})
    return path


def rows(out: Path) -> list[dict[str, str]]:
    """predictions.csv as dicts."""
    with open(out / "predictions.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def temporaries(out: Path) -> list[Path]:
    """Half-written files left behind (infra.io's temporaries)."""
    return [p for p in out.rglob("*") if p.name.endswith(".tmp")]


def check_geojson(doc: dict, width: int, height: int) -> None:
    """GeoJSON structure: a FeatureCollection of Polygon features, closed rings of >= 4 positions inside the slide."""
    assert doc["type"] == "FeatureCollection"
    assert isinstance(doc["features"], list) and doc["features"]
    for feat in doc["features"]:
        assert feat["type"] == "Feature" and isinstance(feat["properties"], dict)
        assert feat["properties"]["objectType"] == "annotation"
        geom = feat["geometry"]
        assert geom["type"] == "Polygon" and len(geom["coordinates"]) >= 1
        for ring in geom["coordinates"]:
            assert len(ring) >= 4 and ring[0] == ring[-1], "a ring must be closed"
            xy = np.asarray(ring, dtype=float)  # [P, 2]
            assert xy.shape[1] == 2 and np.isfinite(xy).all()
            assert (xy[:, 0] >= 0).all() and (xy[:, 0] <= width).all() and (xy[:, 1] >= 0).all() and (xy[:, 1] <= height).all()


def test_predict_writes_predictions_geojson_thumbnails_and_a_report(slides, checkpoint, tmp_path):
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", str(slides)]) == 0
    names = sorted(p.stem for p in slides.glob("*.tif"))
    table = rows(out)
    assert sorted(r["slide"] for r in table) == names
    model = load_model(checkpoint)
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"ok": 3, "failed": 0, "pending": 0}
    for rec in report["slides"]:
        assert rec["status"] == "ok" and rec["seconds"] > 0 and rec["bytes_read"] > 0 and rec["host_peak_mb"] > 0
        assert rec["device_peak_mb"] is None and rec["mpp"] is None  # on the CPU; slides without resolution tags
    for name in names:
        doc = json.loads((out / f"{name}.geojson").read_text())
        check_geojson(doc, SIDE, SIDE)
        kinds = [f["properties"]["kind"] for f in doc["features"]]
        assert kinds.count("tissue") >= 1 and kinds.count("subtile") == model.net.n_patches
        # the top tile of the GeoJSON is the model's own: the argmax of alpha, recomputed here
        with model.open(slides / f"{name}.tif") as reader, torch.no_grad():
            alpha = model.first_stage(reader)[0]  # [T]
            pred = model.predict_one(reader)
        tiles = [f["properties"] for f in doc["features"] if f["properties"]["kind"] == "tile"]
        top = min(tiles, key=lambda p: p["alpha_rank"])
        assert top["tile"] == int(alpha.argmax()) and top["alpha"] == pytest.approx(float(alpha.max()), rel=1e-5)
        n_cols = pred.alpha.shape[1]
        ring = next(f for f in doc["features"] if f["properties"].get("tile") == top["tile"]
                    and f["properties"]["kind"] == "tile")["geometry"]["coordinates"][0]
        assert ring[0] == [float(top["tile"] % n_cols * 512), float(top["tile"] // n_cols * 512)]
        assert {p["tile"] for p in tiles if p["drawn"]} == set(np.unique(pred.tiles).tolist())
        subs = [f["properties"] for f in doc["features"] if f["properties"]["kind"] == "subtile"]
        assert sum(p["weight"] for p in subs) == pytest.approx(1.0, abs=1e-5)
        for p in subs:  # alpha * beta <= alpha, and proportional to the aggregation weight
            assert 0 < p["alpha_beta"] <= p["alpha"] + 1e-7
        ratios = np.array([p["alpha_beta"] / p["weight"] for p in subs])
        assert np.allclose(ratios, ratios[0], rtol=1e-4)
        assert float(next(r for r in table if r["slide"] == name)["probability"]) == pytest.approx(float(pred.probs[1]), abs=1e-5)
        png = np.asarray(Image.open(out / f"{name}_attention.png"))
        assert png.ndim == 3 and png.shape[2] == 3 and max(png.shape[:2]) == 768


def test_an_interrupted_run_then_a_rerun_predicts_every_slide_once(slides, checkpoint, tmp_path, monkeypatch):
    out = tmp_path / "out"
    real_png, real_slide = predict_module._write_png, predict_module.predict_slide
    written = []

    def interrupt_second(path, image):  # Ctrl-C while the second slide's thumbnail is written
        written.append(path)
        if len(written) == 2:
            raise KeyboardInterrupt
        return real_png(path, image)

    monkeypatch.setattr(predict_module, "_write_png", interrupt_second)
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", str(slides)]) == 130
    assert temporaries(out) == []
    assert [r["slide"] for r in rows(out)] == ["slide_0"]
    monkeypatch.setattr(predict_module, "_write_png", real_png)
    predicted = []
    monkeypatch.setattr(predict_module, "predict_slide", lambda m, p, o, **kw: predicted.append(p.stem) or real_slide(m, p, o, **kw))
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", str(slides)]) == 0
    assert predicted == ["slide_1", "slide_2"]  # slide_0 was done: skipped
    assert sorted(r["slide"] for r in rows(out)) == ["slide_0", "slide_1", "slide_2"]
    predicted.clear()
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", str(slides)]) == 0
    assert predicted == []


def test_a_killed_process_leaves_whole_files_and_the_rerun_completes(slides, checkpoint, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "zoomin_lib", "predict", "--checkpoint", str(checkpoint), "--out", str(out),
           "--device", "cpu", str(slides)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    # SIGINT at its default in the child: a shell's background job (`cmd &`) starts with it ignored, and Python
    # would then never raise KeyboardInterrupt (the run would finish with 0 whatever the test sends)
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not (out / "records" / "slide_0.json").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode == 130  # interrupted, not finished
    assert temporaries(out) == []
    for path in out.glob("*.geojson"):
        json.loads(path.read_text())  # whole
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert sorted(r["slide"] for r in rows(out)) == ["slide_0", "slide_1", "slide_2"]
    assert "slide_0: done before, skipped" in done.stdout


def test_a_corrupt_slide_is_reported_and_the_others_are_predicted(slides, checkpoint, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for p in sorted(slides.glob("*.tif"))[:2]:
        (folder / p.name).symlink_to(p)
    good = (slides / "slide_0.tif").read_bytes()
    (folder / "broken.tif").write_bytes(good[: len(good) // 3])  # truncated
    out = tmp_path / "out"
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", str(folder)]) == 1
    report = json.loads((out / "report.json").read_text())
    assert report["counts"] == {"ok": 2, "failed": 1, "pending": 0}
    bad = next(r for r in report["slides"] if r["slide"] == "broken")
    assert bad["status"] == "failed" and "broken.tif" in bad["reason"] and "truncated" in bad["reason"]
    assert sorted(r["slide"] for r in rows(out)) == ["slide_0", "slide_1"]
    assert not (out / "broken.geojson").exists()


def test_a_checkpoint_without_a_model_configuration_is_refused(tmp_path, capsys):
    path = tmp_path / "other.pt"
    torch.save({"model": {}}, path)
    assert main(["predict", "--checkpoint", str(path), "--out", str(tmp_path / "o"), "--device", "cpu", str(tmp_path)]) == 2
    assert "other.pt" in capsys.readouterr().err


def test_overlay_draws_every_ring_of_the_geojson_over_the_thumbnail(slides, checkpoint, tmp_path):
    from zoomin_lib.cli.geojson import overlay_figure

    out = tmp_path / "out"
    one = tmp_path / "one"
    one.mkdir()
    (one / "slide_0.tif").symlink_to(slides / "slide_0.tif")
    assert main(["predict", "--checkpoint", str(checkpoint), "--out", str(out), "--device", "cpu", "--overlay", str(one)]) == 0
    assert np.asarray(Image.open(out / "slide_0_overlay.png")).ndim == 3
    doc = json.loads((out / "slide_0.geojson").read_text())
    thumb = np.asarray(Image.open(out / "slide_0_attention.png"))
    ax = overlay_figure(thumb, doc).axes[0]
    rings = [np.asarray(r) for f in doc["features"] for r in f["geometry"]["coordinates"]]
    assert len(ax.patches) == len(rings)
    scale = thumb.shape[1] / SIDE
    assert np.allclose(ax.patches[-1].get_xy()[:5], rings[-1] * scale)  # level-0 pixels scaled to the thumbnail
