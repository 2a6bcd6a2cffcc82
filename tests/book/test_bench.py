"""The benchmark runs and reports pairs with their ratios; its synthetic slides are ordinary pyramidal TIFFs."""

from __future__ import annotations

import json

import numpy as np

from zoomin_lib import bench
from zoomin_lib.infra.slides import downsample2, open_slide, tissue_mask, write_periodic_slide


def test_quick_bench_writes_every_pair_with_its_ratio(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path / "data"))
    out = tmp_path / "bench.json"
    report = bench.main(["--device", "cpu", "--quick", "--slides", "1e6", "--out", str(out)])
    assert json.loads(out.read_text())["devices"]["cpu"]["colon"]["rows"]
    rows = report["devices"]["cpu"]["colon"]["rows"]
    measures = [r["measure"] for r in rows]
    assert any("training step" in m for m in measures) and any("lean" in m for m in measures)
    for r in rows:
        assert r["ratio"] == r["zoomin"] / r["ats"]
    sync = {r["measure"]: r["zoomin"] for r in rows if "synchronisations" in r["measure"]}
    assert sync["host synchronisations per forward, sample, batch 1"] == sync["host synchronisations per forward, sample, batch 4"]
    slide = report["devices"]["cpu"]["slides"]["rows"][0]
    assert slide["zoomin_sample"]["seconds"] > 0 and slide["zoomin_topk"]["tiles_opened"] <= slide["tissue_tiles"]


def test_periodic_slides_are_consistent_pyramids_with_tissue_sections(tmp_path):
    path = write_periodic_slide(tmp_path / "s.tif", (6000, 5000), tissue=0.3, period=1024)
    with open_slide(path) as slide:
        assert slide.dimensions == (5000, 6000) and slide.level_count >= 5
        for level in (1, 3):  # each level is the 2x2 mean of the one below
            ds = int(slide.level_downsamples[level] / slide.level_downsamples[level - 1] + 0.5)
            assert ds == 2
            x, y = 1024, 2048  # level-0 origin of the compared region, inside the tissue
            below = slide.read_region((x, y), level - 1, (256, 256))
            here = slide.read_region((x, y), level, (128, 128))
            assert np.abs(downsample2(below).astype(int) - here).max() <= 1
        mask = tissue_mask(slide.view(512 / 6000))
    assert 0.05 < mask.mean() < 0.5  # sections on glass, not a full slide of tissue
