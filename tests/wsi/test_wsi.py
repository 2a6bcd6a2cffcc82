"""Zoom-In on lazy slides (zoomin_lib.wsi): strips equal whole views, the slide path equals the tensor path,
locations lie in tissue, sub-tiles come from level 0, memory does not grow with the slide, errors name the file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from slide_fixtures import smooth_rgb, tissue_blob

from zoomin_lib import builders
from zoomin_lib.infra.slides import ArraySlide, SlideError, write_pyramid_tiff
from zoomin_lib.models import receptive_halo
from zoomin_lib.train.profiling import host_peak_memory, lean_inference
from zoomin_lib.train.protocol import image_tensor
from zoomin_lib.wsi.annotations import attention_roi_spearman, pixel_mse, roi_tiles
from zoomin_lib.wsi.predict import SlideATS, SlideZoomIn
from zoomin_lib.wsi.reader import SlideReader
from zoomin_lib.wsi.train import pretrain_tile_classifiers, slide_loss, window_examples

MEAN = torch.tensor([0.55, 0.45, 0.6]).view(1, 3, 1, 1)
STD = torch.tensor([0.2, 0.25, 0.22]).view(1, 3, 1, 1)


def small_net(tile: int = 128, s1: float = 0.125, s2: float = 0.25, patch: int = 16, n: int = 6, backbone: str = "lenet"):
    """A Zoom-In network small enough for unit tests."""
    torch.manual_seed(0)
    return builders.zoomin(in_channels=3, n_classes=2, scale1=s1, scale2=s2, tile_size=tile, patch_size=patch,
                           n_patches=n, backbone=backbone)


@pytest.fixture(scope="module")
def blob_slide(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """A pyramidal TIFF (1024 x 1280) with a tissue disc on glass, and its tissue truth."""
    image, truth = tissue_blob(1024, 1280, centre=(600, 700), radius=300, seed=1)
    path = tmp_path_factory.mktemp("slides") / "blob.tif"
    write_pyramid_tiff(path, image, tile=256)
    return path, truth


def pattern_slide(path: Path, side: int) -> Path:
    """A cheap square pyramidal TIFF of `side` pixels: a tissue-coloured square on glass, with stripes."""

    def tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        yy, xx = np.mgrid[y : y + h, x : x + w]
        inside = (abs(yy - side / 2) < side / 4) & (abs(xx - side / 2) < side / 4)
        out = np.empty((h, w, 3), dtype=np.uint8)
        out[:] = (241, 241, 243)
        stripes = (60 + (yy // 5 + xx // 7) % 120).astype(np.uint8)
        out[inside] = np.stack([200 - stripes[inside] // 4, stripes[inside], 170 - stripes[inside] // 3], axis=1)
        return out

    return write_pyramid_tiff(path, tile, (side, side), tile=256)


class SquareROI:
    """An ROI that is one axis-aligned square (x0, y0, x1, y1), rasterised by pixel centres."""

    def __init__(self, box: tuple[float, float, float, float]) -> None:
        self.box = np.array(box, dtype=float)

    def boxes(self) -> np.ndarray:
        return self.box[None]

    def window(self, location, extent, size) -> np.ndarray:
        (x, y), (W, H), (w, h) = location, extent, size
        cy = y + (np.arange(h) + 0.5) * H / h
        cx = x + (np.arange(w) + 0.5) * W / w
        x0, y0, x1, y1 = self.box
        return ((cy >= y0) & (cy < y1))[:, None] & ((cx >= x0) & (cx < x1))[None, :]


def test_view_rows_in_strips_equal_the_whole_view(blob_slide):
    """Strips of V(x, s) concatenate to the whole view, which is Slide.view before rounding to uint8."""
    path, _ = blob_slide
    with SlideReader(path, strip_pixels=1000) as reader:
        whole = reader.view_rows(0.1, 0, 102, standardise=False)  # [1, 3, 102, 128]
        strips = torch.cat([reader.view_rows(0.1, r, min(102, r + 9), standardise=False) for r in range(0, 102, 9)], dim=2)
        assert torch.allclose(whole, strips, atol=1e-4)
        ref = torch.from_numpy(reader.slide.view(0.1)).permute(2, 0, 1)[None].float()
        assert (whole - ref).abs().max() <= 0.5 + 1e-3


@pytest.mark.parametrize("backbone", ["lenet", "resnet16"])
def test_strip_first_stage_equals_whole_view_first_stage(blob_slide, backbone):
    """alpha from strips (halo included) equals alpha from the whole V(x, s1), with any strip height."""
    path, _ = blob_slide
    net = small_net(backbone=backbone)
    for strip_pixels in (200, 1500, 10**6):
        model = SlideZoomIn(net, (MEAN, STD), strip_pixels=strip_pixels).eval()
        with torch.no_grad(), model.open(path) as reader:
            tissue = model.allowed(reader)[0]  # strips skip glass: the tissue tiles' scores are exact, some others 0
            strips, whole = model.tile_scores(reader, strips=True), model.tile_scores(reader, strips=False)
            assert not tissue.all() and (strips[~tissue] == 0).any()
            assert torch.allclose(strips[tissue], whole[tissue], atol=1e-5)
            assert torch.allclose(model.first_stage(reader, strips=True), model.first_stage(reader, strips=False), atol=1e-6)
        everywhere = SlideZoomIn(net, (MEAN, STD), strip_pixels=strip_pixels, tissue_only=False).eval()
        with torch.no_grad(), everywhere.open(path) as reader:
            assert torch.allclose(everywhere.tile_scores(reader, strips=True), everywhere.tile_scores(reader, strips=False),
                                  atol=1e-5)
    assert receptive_halo(net.attention_a) == {"lenet": 3, "resnet16": 4}[backbone]


@pytest.mark.parametrize("shape", [(512, 640), (520, 650)])
def test_slide_path_matches_the_in_memory_model(shape):
    """On an ArraySlide, alpha, the top-k and sampled locations and the logits are those of ZoomInNet on the tensor."""
    image = smooth_rgb(*shape, seed=2)
    net = small_net().eval()
    model = SlideZoomIn(net, (MEAN, STD), strip_pixels=500, tissue_only=False).eval()
    x = (image_tensor(image) - MEAN) / STD  # [1, 3, H, W]
    with torch.no_grad(), model.open(ArraySlide(image)) as reader:
        assert torch.allclose(model.first_stage(reader), net.first_stage(x), atol=1e-6)
        ref, out = net(x, mode="topk"), model(reader, mode="topk")
        assert torch.equal(ref.tiles, out.tiles) and torch.equal(ref.subtiles, out.subtiles)
        assert torch.equal(ref.centers, out.centers)
        assert torch.allclose(ref.logits, out.logits, atol=1e-5)
        with lean_inference(model.net):  # one tile and one sub-tile at a time: the same top-k
            lean = model(reader, mode="topk")
        assert torch.equal(lean.tiles, out.tiles) and torch.allclose(lean.logits, out.logits, atol=1e-5)
        ref = net(x, mode="sample", generator=torch.Generator().manual_seed(3))
        out = model(reader, mode="sample", generator=torch.Generator().manual_seed(3))
        assert torch.equal(ref.tiles, out.tiles) and torch.equal(ref.subtiles, out.subtiles)
        assert torch.allclose(ref.logits, out.logits, atol=1e-5)


def test_subtiles_are_read_at_level_0_and_are_the_pixels_there(blob_slide):
    """On a pyramid, views come from reduced levels but every sub-tile is a level-0 read of exactly its pixels."""
    path, _ = blob_slide
    model = SlideZoomIn(small_net(), (MEAN, STD)).eval()
    with torch.no_grad(), model.open(path, record_reads=True) as reader:
        out = model(reader, mode="topk")
        levels = {kind: {lvl for k, lvl, *_ in reader.read_log if k == kind} for kind in ("view", "tile", "patch")}
        assert levels["patch"] == {0} and max(levels["view"]) > 0 and max(levels["tile"]) > 0
        r, c = (int(v) for v in out.centers[0, 0])
        got = reader.patches(torch.tensor([r]), torch.tensor([c]), (16, 16))
        raw = reader.slide.read_region((c - 8, r - 8), 0, (16, 16))
        assert torch.allclose(got, (image_tensor(raw) - MEAN) / STD, atol=1e-6)


def test_predict_returns_locations_inside_tissue_tiles(blob_slide):
    """Top-k and sampled predictions: probabilities, tiles among the tissue tiles, sub-tile centres inside their tile."""
    path, _ = blob_slide
    model = SlideZoomIn(small_net(), (MEAN, STD))
    for mode in ("topk", "sample"):
        (pred,) = model.predict([path], mode=mode, generator=torch.Generator().manual_seed(0))
        assert pred.probs.shape == (2,) and abs(pred.probs.sum() - 1) < 1e-5 and pred.mode == mode
        with model.open(path) as reader:
            tissue = reader.tissue((128, 128)).numpy().reshape(-1)
        assert 0 < tissue.sum() < tissue.size
        assert tissue[pred.tiles].all() and (pred.alpha.reshape(-1)[~tissue] == 0).all()
        # the tiles whose second stage ran: at least those used, never a tile outside the tissue
        assert len(np.unique(pred.tiles)) <= pred.opened <= tissue.sum(), (pred.opened, tissue.sum())
        tops, lefts = (pred.tiles // pred.alpha.shape[1]) * 128, (pred.tiles % pred.alpha.shape[1]) * 128
        assert ((pred.centers[:, 0] >= tops) & (pred.centers[:, 0] < tops + 128)).all()
        assert ((pred.centers[:, 1] >= lefts) & (pred.centers[:, 1] < lefts + 128)).all()
        assert len(pred.tile_boxes()) == len(np.unique(pred.tiles)) and pred.subtile_boxes().shape == (6, 4)


def test_peak_memory_is_flat_in_the_slide_size_and_ats_grows(tmp_path):
    """Zoom-In's lean inference peak on a slide with 4x the pixels stays within 10%; one-stage ATS's grows.

    The exact top-k of an untrained network opens every tissue tile here (flat attention), 4x as
    many on the big slide: one at a time, they cost no more memory.
    """
    small, big = pattern_slide(tmp_path / "s.tif", 2048), pattern_slide(tmp_path / "b.tif", 4096)
    model = SlideZoomIn(small_net(tile=256, s1=1 / 16, s2=0.25, n=4), (MEAN, STD), strip_pixels=4096).eval()
    with lean_inference(model.net):
        zoom = [host_peak_memory(lambda p=p: model.predict_one(p)) for p in (small, big)]
    assert zoom[1]["torch_mb"] <= 1.1 * zoom[0]["torch_mb"], zoom
    assert zoom[1]["numpy_mb"] <= 1.1 * zoom[0]["numpy_mb"], zoom
    torch.manual_seed(0)
    ats = SlideATS(builders.ats(in_channels=3, n_classes=2, scale=0.25, patch_size=16, n_patches=4), (MEAN, STD))
    grow = [host_peak_memory(lambda p=p: ats.predict_one(p))["torch_mb"] for p in (small, big)]
    assert grow[1] > 3 * grow[0] and grow[1] > 5 * zoom[1]["torch_mb"], (grow, zoom)


def test_errors_name_the_file(tmp_path, blob_slide):
    """A slide smaller than a tile, NaN attention and a corrupt file each raise an error naming the file; predict_all goes on."""
    path, _ = blob_slide
    tiny = tmp_path / "tiny.tif"
    write_pyramid_tiff(tiny, smooth_rgb(100, 120), tile=64)
    model = SlideZoomIn(small_net(), (MEAN, STD))
    with pytest.raises(SlideError, match=r"tiny\.tif.*smaller than one tile"):
        model.predict([tiny])
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"II*\x00" + b"\x00" * 64)
    with pytest.raises(SlideError, match="junk.tif"):
        model.predict([junk])
    preds, problems = model.predict_all([junk, path, tiny])
    assert len(preds) == 1 and len(problems) == 2
    assert "junk.tif" in problems[0] and "tiny.tif" in problems[1]
    broken = small_net()
    with torch.no_grad():
        broken.attention_a.net[-1].bias.fill_(float("nan"))
    with pytest.raises(SlideError, match=r"blob\.tif.*NaN"):
        SlideZoomIn(broken, (MEAN, STD)).predict([path])


def test_training_on_a_slide_reaches_every_network_and_eq13(blob_slide):
    """One eq. 12 step (+ contrastive, + eq. 13 MSE) on a cached view back-propagates into a, b, f and g."""
    path, _ = blob_slide
    model = SlideZoomIn(small_net(), (MEAN, STD))
    roi = SquareROI((600, 500, 700, 580))
    with model.open(path, cache_views=True, roi=roi, label=1) as reader:
        ratios, masks = roi_tiles(model, reader)
        assert ratios.shape == (8, 10) and ratios[3, 4] > 0 and ratios[0, 0] == 0 and set(masks) <= {34, 35, 44, 45}
        assert ratios[4, 5] == pytest.approx(60 * 68 / 128**2, abs=0.01)  # x 640..700 of 640..768, y 512..580 of 512..640
        loss_fn = slide_loss(warmup_epochs=0, pixel_weight=1.0, generator=torch.Generator().manual_seed(0))
        loss, parts = loss_fn(model, ([reader], torch.tensor([1])), 1)
        loss.backward()
        assert parts["contrastive"] > 0 and parts["pixel_mse"] > 0
        for name in ("attention_a", "attention_b", "features", "g"):
            grads = [p.grad for p in getattr(model.net, name).parameters()]
            assert all(g is not None for g in grads) and sum(float(g.abs().sum()) for g in grads) > 0, name
        out = model(reader, mode="sample", generator=torch.Generator().manual_seed(1))
        assert float(pixel_mse(model, reader, out).detach()) > 0
        info = pretrain_tile_classifiers(model, [reader], steps={"a": 2, "b": 1, "f": 1}, subtiles_per_tile=2)
        assert info["positive_tiles"] == 4 and info["positive_subtiles"] > 0 and info["fits"]["a"]["steps"] == 2
        info = pretrain_tile_classifiers(model, [reader], steps=1, subtiles_per_tile=1, windows={"a": 4, "b": 8}, windows_per_tile=3)
        assert info["windows"]["b"]["examples"] == 3 * info["tiles"] and info["windows"]["b"]["positive"] >= 3


def test_window_examples_centre_on_the_roi_and_label_by_the_mask():
    """Windows of a positive view hold its ROI (mask on a finer grid), a negative view's never; all clamped inside."""
    views = torch.arange(2 * 3 * 32 * 32, dtype=torch.float32).reshape(2, 3, 32, 32)  # [2, 3, 32, 32]
    mask = np.zeros((128, 128), dtype=bool)  # the s2 grid: 4x finer than the views
    mask[120:124, 0:4] = True  # one ROI at view pixel (30, 0): near an edge, so windows must be clamped
    x, y = window_examples(views, [mask, None], [1, 0], window=8, per_view=5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (10, 3, 8, 8) and y.tolist() == [1] * 5 + [0] * 5
    corner = views[0, :, 24:32, 0:8]  # the only 8x8 window inside the view that is centred as near (30, 0) as possible
    assert all(torch.equal(w, corner) for w in x[:5])
    for w in x[5:]:  # negative windows: some 8x8 block of the second view
        r0, c0 = divmod(int(w[0, 0, 0].item() - views[1, 0, 0, 0].item()), 32)
        assert torch.equal(w, views[1, :, r0 : r0 + 8, c0 : c0 + 8])
    far = np.zeros((128, 128), dtype=bool)
    far[0:4, 0:4] = True  # a labelled view whose windows are drawn at the ROI: always positive
    _, y2 = window_examples(views[:1], [far], [1], window=40, per_view=3, generator=torch.Generator().manual_seed(1))
    assert y2.tolist() == [1, 1, 1]  # window larger than the view: the whole view


def test_attention_roi_spearman():
    """Spearman's rho over tissue tiles: 1 for a monotone relation, per-slide values kept."""
    a = [np.array([[0.1, 0.2], [0.3, 0.4]]), np.array([[0.45, 0.05], [0.15, 0.25]])]
    r = [np.array([[0.0, 0.1], [0.2, 0.3]]), np.array([[0.35, 0.0], [0.05, 0.15]])]
    out = attention_roi_spearman(a, r)
    assert out["rho"] == pytest.approx(1.0, abs=0.01) and out["n_tiles"] == 8 and out["n_tiles_with_roi"] == 6
    assert out["per_slide"] == pytest.approx([1.0, 1.0])
    tissue = [np.array([[False, True], [True, True]]), np.ones((2, 2), dtype=bool)]
    assert attention_roi_spearman(a, r, tissue)["n_tiles"] == 7
