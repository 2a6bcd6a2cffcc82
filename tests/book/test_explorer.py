"""The attention explorer shows what the model did: the same tiles, sub-tiles, betas and prediction as the model itself."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from slide_fixtures import tissue_blob

import zoomin_lib.book.explorer as explorer
from zoomin_lib import builders
from zoomin_lib.infra.slides import write_pyramid_tiff
from zoomin_lib.wsi.predict import SlideATS, SlideZoomIn


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    zoom = builders.zoomin(in_channels=3, n_classes=2, scale1=0.1, scale2=0.2, tile_size=100, patch_size=15,
                           n_patches=5)
    ats = builders.ats(in_channels=3, n_classes=2, scale=0.2, patch_size=15, n_patches=5)
    uniform = builders.uniform(in_channels=3, n_classes=2, scale=0.2, patch_size=15, n_patches=5)
    return {"Zoom-In": zoom, "ATS": ats, "U": uniform}


@pytest.fixture(scope="module")
def image():
    return torch.randn(3, 300, 250, generator=torch.Generator().manual_seed(1))  # a partial edge tile column


def test_topk_look_is_the_models_own_topk_at_that_n(nets, image):
    zoom = nets["Zoom-In"].train()
    lk = explorer.look(zoom, image, n=8, mode="topk")
    assert zoom.n_patches == 5 and zoom.training  # N and the training flag come back
    zoom.n_patches = 8
    with torch.no_grad():
        out = zoom.eval()(image[None], mode="topk")
    zoom.n_patches = 5
    zoom.train()
    np.testing.assert_array_equal(lk.tiles, out.tiles[0].numpy())
    np.testing.assert_array_equal(lk.centers, out.centers[0].numpy())
    np.testing.assert_allclose(lk.weights, out.weights[0].numpy(), rtol=1e-6)
    np.testing.assert_allclose(lk.probs, torch.softmax(out.logits, 1)[0].numpy(), rtol=1e-5)
    np.testing.assert_allclose(lk.attention.reshape(-1), out.alpha[0].numpy(), rtol=1e-6)
    assert lk.patches.shape == (8, 15, 15, 3) and 0 <= lk.patches.min() and lk.patches.max() <= 1


def test_the_opened_tile_is_the_ranked_used_tile_with_its_own_beta(nets, image):
    zoom = nets["Zoom-In"]
    for rank in range(3):
        lk = explorer.look(zoom, image, n=8, mode="sample", seed=4, rank=rank)
        used = np.unique(lk.tiles)
        by_alpha = used[np.argsort(-lk.attention.reshape(-1)[used], kind="stable")]
        np.testing.assert_array_equal(lk.used_tiles, by_alpha)
        assert lk.chosen == by_alpha[rank % len(by_alpha)]
        with torch.no_grad():
            beta = zoom.eval().second_stage(image[None], torch.tensor([0]), torch.tensor([lk.chosen]))[0]
        np.testing.assert_allclose(lk.beta.reshape(-1), beta.numpy(), rtol=1e-6)
        assert lk.beta.shape == zoom.subview_size and lk.weights is None and len(lk.tiles) == 8


def test_a_sampled_look_is_repeatable_by_its_seed(nets, image):
    a = explorer.look(nets["Zoom-In"], image, n=6, mode="sample", seed=7)
    b = explorer.look(nets["Zoom-In"], image, n=6, mode="sample", seed=7)
    np.testing.assert_array_equal(a.centers, b.centers)
    ats = explorer.look(nets["ATS"], image, n=6, mode="sample", seed=7)
    assert ats.tile_size is None and ats.attention.shape == (60, 50) and len(ats.centers) == 6
    np.testing.assert_allclose(ats.attention.sum(), 1.0, rtol=1e-5)


def test_defaults_and_refusals(nets, image):
    uniform = explorer.look(nets["U"], image)
    assert uniform.mode == "sample" and uniform.attention is None  # uniform sampling: no top-k, no attention
    assert explorer.look(nets["ATS"], image).mode == "topk"
    with pytest.raises(ValueError, match="reads no patches"):
        explorer.look(builders.cnn(in_channels=3, n_classes=2, scale=0.2), image)
    with pytest.raises(ValueError, match="mode must be"):
        explorer.look(nets["ATS"], image, mode="exact")
    zoom = nets["Zoom-In"].train()
    with pytest.raises(ValueError):  # more sub-tiles than the image's tiles hold
        explorer.look(zoom, image, n=10_000, mode="topk")
    assert zoom.n_patches == 5 and zoom.training  # given back after the error too
    with pytest.raises(ValueError, match="one image at a time"):
        explorer.look(nets["ATS"], image.expand(2, -1, -1, -1))


def test_the_snapshot_has_a_row_per_method_and_is_saved(nets, image, tmp_path):
    fig = explorer.attention_explorer(nets, {"one": image, "two": -image}, classes=["neg", "pos"],
                                      save_to=(tmp_path, "explorer"), live=False)
    assert isinstance(fig, Figure) and len(fig.axes) == 4 * len(nets)
    assert (tmp_path / "explorer.png").stat().st_size > 10_000


def test_live_controls_redraw_with_what_they_name(nets, image, monkeypatch):
    pytest.importorskip("ipywidgets")
    calls = []
    real = explorer.look

    def recording(model, item, **kw):
        calls.append(kw)
        return real(model, item, **kw)

    monkeypatch.setattr(explorer, "look", recording)
    ui = explorer.attention_explorer(nets, {"one": image, "two": -image}, live=True)
    controls = {w.description: w for box in ui.children[:2] for w in box.children}
    assert set(controls) == {"image", "method", "mode", "N", "tile rank", "seed"}
    controls["N"].value = 11
    assert calls[-1]["n"] == 11 and calls[-1]["method"] == "Zoom-In"
    controls["method"].value = "U"  # a new method starts at its own mode and N, in one redraw
    assert len(calls) == 3 and calls[-1] == {**calls[-1], "method": "U", "mode": "sample", "n": 5}
    controls["N"].value = 9
    controls["image"].value = "two"
    assert calls[-1]["n"] == 9 and calls[-1]["image"] == "two" and calls[-1]["method"] == "U"
    controls["mode"].value = "topk"  # uniform has no top-k: the explorer says so instead of failing
    assert calls[-1]["mode"] == "topk" and calls[-1]["method"] == "U"
    controls["tile rank"].value = 19  # past the last used tile: the last one, not a wrap-around
    controls["method"].value = "Zoom-In"
    lk = real(nets["Zoom-In"], image, n=5, mode="topk", rank=19)
    assert lk.chosen == lk.used_tiles[-1]


def test_on_a_slide_the_look_stays_in_the_tissue(tmp_path):
    pixels, truth = tissue_blob(512, 640, centre=(260, 330), radius=150, seed=2)
    path = write_pyramid_tiff(tmp_path / "blob.tif", pixels, tile=256)
    torch.manual_seed(0)
    zoom = SlideZoomIn(builders.zoomin(in_channels=3, n_classes=2, scale1=0.125, scale2=0.25, tile_size=64,
                                       patch_size=16, n_patches=6))
    ats = SlideATS(builders.ats(in_channels=3, n_classes=2, scale=0.25, patch_size=16, n_patches=6))
    with zoom.open(path) as reader:
        lk = explorer.look(zoom, reader, n=9, mode="sample", seed=1)
        allowed = reader.tissue(zoom.net.tile_size).reshape(-1).numpy()
        assert allowed[lk.tiles].all() and (lk.attention.reshape(-1)[~allowed] == 0).all()
        # the overview is the slide's own colours (the reader's standardisation undone)
        small = lk.overview
        glass = small[:20, :20].mean(axis=(0, 1))
        np.testing.assert_allclose(glass, pixels[:20, :20].mean(axis=(0, 1)) / 255, atol=0.03)
        fig = explorer.attention_explorer({"Zoom-In": zoom, "ATS": ats}, {"blob": reader}, live=False)
        assert len(fig.axes) == 8
    by_path = explorer.look(zoom, path, n=9, mode="sample", seed=1)  # each model opens the slide with its statistics
    np.testing.assert_array_equal(by_path.centers, lk.centers)
    with pytest.raises(ValueError, match="does not read slides"):
        explorer.look(zoom.net, path)


def test_the_boxes_are_drawn_where_the_model_read(nets, image):
    """Panel 1: each used tile's box at its top-left, each patch's box at centre - size // 2; panel 2: shifted by the tile."""
    from matplotlib.patches import Rectangle

    from zoomin_lib.geometry import tile_top_left

    lk = explorer.look(nets["Zoom-In"], image, n=8, mode="sample", seed=2, rank=0)
    fig = explorer.draw_look(lk)
    boxes = [[tuple(map(float, r.get_xy())) + (r.get_width(), r.get_height()) for r in ax.patches
              if isinstance(r, Rectangle)] for ax in fig.axes[:2]]
    ph, pw = lk.patch_size
    for t in lk.used_tiles:
        top, left = tile_top_left(torch.tensor([int(t)]), lk.size, lk.tile_size)
        assert (float(left), float(top), 100.0, 100.0) in boxes[0]
    for r, c in lk.centers:
        assert (float(c - pw // 2), float(r - ph // 2), float(pw), float(ph)) in boxes[0]
    top, left = tile_top_left(torch.tensor([lk.chosen]), lk.size, lk.tile_size)
    inside = lk.centers[lk.tiles == lk.chosen]
    assert len(boxes[1]) == len(inside)
    for r, c in inside:
        assert (float(c - pw // 2 - int(left)), float(r - ph // 2 - int(top)), float(pw), float(ph)) in boxes[1]
