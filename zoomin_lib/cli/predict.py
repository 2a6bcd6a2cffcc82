"""`zoomin predict`: a trained Zoom-In on a folder of slides, with outputs a pathologist's viewer opens.

For each slide, in `OUT`:

- `<slide>.geojson`: tissue contour, drawn and top tiles (alpha), sub-tiles (alpha * beta) in level-0
  pixels (`cli.geojson`), which QuPath imports as annotations;
- `<slide>_attention.png`: a thumbnail with the first-stage attention alpha overlaid on the tissue;
- `<slide>_overlay.png` (with `--overlay`): the GeoJSON drawn over the thumbnail;
- `records/<slide>.json`: the slide's record (status, probability, seconds, bytes read, host and
  device peak memory, or the reason it failed).

`predictions.csv` (slide, probability of class 1, predicted label) and `report.json` (the run and every
slide's record) are rebuilt from the records after each slide. Every file is written atomically
(`infra.io`): Ctrl-C or a kill leaves whole files or none. A slide whose record says "ok" and whose
outputs exist is skipped by the next run; a slide that cannot be read is recorded as failed with its
reason, and the others go on (it is tried again by the next run). Under torchrun each rank predicts
its share of the slides (`slides[rank::world]`), and rank 0 merges the records into one report.
"""

from __future__ import annotations

import csv
import io
import platform
import resource
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from matplotlib import colormaps
from PIL import Image

from zoomin_lib.book.plotting import save_figure
from zoomin_lib.cli.geojson import overlay_figure, slide_geojson
from zoomin_lib.infra.io import atomic_write, read_json, write_json, write_text
from zoomin_lib.infra.slides import SlideError, tissue_mask
from zoomin_lib.wsi.predict import SlidePrediction, SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader
from zoomin_lib.wsi.resolution import slide_mpp

__all__ = ["SLIDE_SUFFIXES", "find_slides", "attention_overlay", "predict_slide", "run_predict", "merge_report"]

SLIDE_SUFFIXES = (".tif", ".tiff", ".svs", ".ndpi", ".mrxs", ".scn", ".bif", ".vms", ".vmu", ".svslide", ".btf")
MB = 2**20
THUMB_STRIP_PIXELS = 2**22  # level pixels a thumbnail strip reads


def find_slides(inputs: Sequence[str | Path]) -> list[Path]:
    """The slides named or found (recursively, by suffix) under `inputs`, sorted per folder; errors name the path.

    Two slides with the same file stem would write the same outputs: ValueError naming both.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found += sorted(p for p in item.rglob("*") if p.is_file() and p.suffix.lower() in SLIDE_SUFFIXES)
        elif item.is_file():
            found.append(item)
        else:
            raise ValueError(f"{item}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in found:
        if path.stem in seen and seen[path.stem].resolve() != path.resolve():
            raise ValueError(f"two slides named {path.stem!r}: {seen[path.stem]} and {path} (their outputs would clash)")
        seen[path.stem] = path
    return list(seen.values())


def attention_overlay(thumb: np.ndarray, alpha: np.ndarray, tissue: np.ndarray | None, opacity: float = 0.5) -> np.ndarray:
    """The thumbnail uint8 [h, w, 3] with alpha [n_rows, n_cols] (scaled to its maximum) in `inferno` over the tissue."""
    h, w = thumb.shape[:2]
    n_rows, n_cols = alpha.shape
    rows = np.minimum(np.arange(h) * n_rows // h, n_rows - 1)  # tile row of each thumbnail row
    cols = np.minimum(np.arange(w) * n_cols // w, n_cols - 1)
    heat = alpha[rows][:, cols] / max(float(alpha.max()), 1e-12)  # [h, w]
    colour = colormaps["inferno"](heat)[..., :3] * 255  # [h, w, 3]
    weight = opacity * (tissue if tissue is not None else np.ones((h, w), dtype=bool))[..., None]  # [h, w, 1]
    return np.round(thumb * (1 - weight) + colour * weight).astype(np.uint8)


def _write_png(path: Path, image: np.ndarray) -> Path:
    """An RGB uint8 image as PNG, atomically."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(buffer.getvalue()))


def _host_peak_mb() -> float:
    """This process's peak resident memory so far (MiB; ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (MB if sys.platform == "darwin" else 1024)


def _outputs(out: Path, name: str) -> tuple[Path, Path, Path]:
    """(GeoJSON, attention PNG, record) of slide `name`."""
    return out / f"{name}.geojson", out / f"{name}_attention.png", out / "records" / f"{name}.json"


def predict_slide(model: SlideZoomIn, path: Path, out: Path, *, top: int = 10, thumb_side: int = 768,
                  mpp: float | None = None, overlay: bool = False) -> dict[str, Any]:
    """Predict one slide and write its GeoJSON and attention PNG; its record (raises SlideError when unreadable).

    With `overlay`, `<slide>_overlay.png` draws the GeoJSON over the thumbnail (`cli.geojson.overlay_figure`).
    The record holds the slide's microns per pixel (`mpp` when given, else its own, None when unknown) and a
    warning when it differs by more than 20 % from the training slides' (`model.trained_mpp`).
    """
    device = next(model.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    began = time.perf_counter()
    reader: SlideReader = model.open(path)
    try:
        pred: SlidePrediction = model.predict_one(reader)
        pred.slide = path.stem
        uniq = np.unique(pred.tiles)
        with torch.no_grad():
            beta = model.second_stage(reader, torch.from_numpy(uniq)).cpu().numpy()  # [U, K2]
        reader.strip_pixels = max(reader.strip_pixels, THUMB_STRIP_PIXELS)  # the model is done: read in larger strips
        thumb = reader.thumbnail(thumb_side)  # [h, w, 3]
        tissue = tissue_mask(thumb)  # [h, w]
        geojson, png, _ = _outputs(out, path.stem)
        doc = slide_geojson(pred, reader.shape, tissue, pred.joint(beta, uniq), top)
        write_json(geojson, doc)
        _write_png(png, attention_overlay(thumb, pred.alpha, tissue))
        if overlay:
            save_figure(overlay_figure(thumb, doc), out, f"{path.stem}_overlay")
        H, W = reader.shape
        reads = dict(reader.reads)
        known = slide_mpp(reader.slide)
        slide_res = mpp if mpp is not None else (sum(known) / 2 if known else None)
    finally:
        reader.close()
    trained = getattr(model, "trained_mpp", None)
    extra = {}
    if slide_res is not None and trained is not None and abs(slide_res / trained - 1) > 0.2:
        extra["warning"] = (f"{path}: {slide_res:.4g} microns per pixel, the model was trained at {trained:.4g}: "
                            "its tiles and scales cover other physical sizes here")
    return {**extra, "mpp": slide_res, "slide": path.stem, "path": str(path), "status": "ok",
            "probability": float(pred.probs[1]),
            "label": pred.predicted, "width": W, "height": H, "tiles_drawn": int(len(uniq)),
            "seconds": time.perf_counter() - began, "bytes_read": int(reads["bytes"]), "reads": int(reads["count"]),
            "host_peak_mb": _host_peak_mb(),
            "device_peak_mb": torch.cuda.max_memory_allocated(device) / MB if device.type == "cuda" else None}


def _done(out: Path, name: str) -> bool:
    """Whether slide `name` has an 'ok' record and both its outputs."""
    geojson, png, record = _outputs(out, name)
    if not (record.is_file() and geojson.is_file() and png.is_file()):
        return False
    try:
        return read_json(record).get("status") == "ok"
    except ValueError:
        return False


def merge_report(out: Path, slides: Sequence[Path], run: dict[str, Any]) -> dict[str, Any]:
    """Rebuild `predictions.csv` and `report.json` from the records of `slides` (atomically); the report."""
    records = []
    for path in slides:
        record = _outputs(out, path.stem)[2]
        records.append(read_json(record) if record.is_file() else {"slide": path.stem, "path": str(path),
                                                                     "status": "pending"})
    ok = [r for r in records if r["status"] == "ok"]
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["slide", "probability", "label"])
    writer.writerows([[r["slide"], f"{r['probability']:.6f}", r["label"]] for r in ok])
    write_text(out / "predictions.csv", text.getvalue())
    counts = {status: sum(r["status"] == status for r in records) for status in ("ok", "failed", "pending")}
    report = {**run, "counts": counts, "slides": records}
    write_json(out / "report.json", report)
    return report


def run_predict(
    model: SlideZoomIn,
    slides: Sequence[Path],
    out: Path,
    *,
    rank: int = 0,
    world: int = 1,
    barrier: Callable[[], None] = lambda: None,
    run: dict[str, Any] | None = None,
    top: int = 10,
    mpp: float | None = None,
    overlay: bool = False,
    log: Callable[[str], None] = print,
) -> dict[str, Any] | None:
    """Predict this rank's share of `slides` into `out`, skipping those done; rank 0 merges and returns the report."""
    out.mkdir(parents=True, exist_ok=True)
    mine = list(slides)[rank::world]
    run = {"host": platform.node(), "device": str(next(model.parameters()).device), **(run or {})}
    for i, path in enumerate(mine, start=1):
        if _done(out, path.stem):
            log(f"[{i}/{len(mine)}] {path.stem}: done before, skipped")
            continue
        began = time.perf_counter()
        try:
            record = predict_slide(model, path, out, top=top, mpp=mpp, overlay=overlay)
            if "warning" in record:
                log(f"warning: {record['warning']}")
            log(f"[{i}/{len(mine)}] {path.stem}: p = {record['probability']:.3f}, label {record['label']}, "
                f"{record['seconds']:.1f} s, {record['bytes_read'] / MB:.1f} MiB read")
        except (SlideError, OSError, ValueError) as err:
            reason = str(err) if str(path) in str(err) else f"{path}: {err}"
            record = {"slide": path.stem, "path": str(path), "status": "failed", "reason": reason,
                      "seconds": time.perf_counter() - began}
            log(f"[{i}/{len(mine)}] {path.stem}: FAILED: {reason}")
        record["rank"] = rank
        write_json(_outputs(out, path.stem)[2], record)
        if world == 1:
            merge_report(out, slides, run)
    barrier()
    return merge_report(out, slides, run) if rank == 0 else None


def predict_command(args: Any) -> int:
    """`zoomin predict`: 0 when every slide is predicted, 1 when some failed (named in report.json), 2 on a usage error."""
    from zoomin_lib.cli.distributed import setup
    from zoomin_lib.cli.settings import load_model

    world = setup(args.device)
    try:
        model = load_model(args.checkpoint, world.device)
        slides = find_slides(args.inputs)
        if not slides:
            raise ValueError(f"no slide ({', '.join(SLIDE_SUFFIXES)}) under {', '.join(map(str, args.inputs))}")
        report = run_predict(model, slides, args.out, rank=world.rank, world=world.size, barrier=world.barrier,
                             run={"checkpoint": str(args.checkpoint), "world": world.describe()}, top=args.top,
                             mpp=args.mpp, overlay=args.overlay)
    finally:
        world.close()
    if report is None:
        return 0
    counts = report["counts"]
    print(f"{counts['ok']} slide(s) predicted, {counts['failed']} failed; {args.out / 'predictions.csv'}, "
          f"{args.out / 'report.json'}")
    return 1 if counts["failed"] or counts["pending"] else 0
