"""Zoom-In with three levels on lazy slides (zoomin_lib.wsi.levels): the slide path equals the tensor path, also
on sides that are not multiples of the tile; reads stay inside the slide and inside its tissue; inference is
sampling with a fixed seed; training on slides reaches every level."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from slide_fixtures import smooth_rgb, tissue_blob

from zoomin_lib.beyond.levels import build_levels
from zoomin_lib.infra.slides import ArraySlide, SlideError, write_pyramid_tiff
from zoomin_lib.train.profiling import lean_inference
from zoomin_lib.train.protocol import image_tensor
from zoomin_lib.wsi.levels import SlideLevelsZoomIn
from zoomin_lib.wsi.train import fit_slides

MEAN = torch.tensor([0.55, 0.45, 0.6]).view(1, 3, 1, 1)
STD = torch.tensor([0.2, 0.25, 0.22]).view(1, 3, 1, 1)
TILE, CELL, PATCH = 128, 32, 16


def small_levels(n: int = 4, n3: int = 2):
    """Tiles of 128 on V(x, 1/8), cells of 32 on V(tile, 1/4), n3 leaves on V(cell, 1/2) (2 px apart), 16 x 16 patches."""
    torch.manual_seed(0)
    return build_levels(in_channels=3, n_classes=2, scales=[1 / 8, 1 / 4, 1 / 2], cell_sizes=[TILE, CELL],
                        patch_size=PATCH, n_patches=n, n_children=[n3])


@pytest.fixture(scope="module")
def odd_blob(tmp_path_factory) -> Path:
    """A pyramidal TIFF of 1000 x 1100 (neither side a multiple of 128) with a tissue disc reaching the right border."""
    image, _ = tissue_blob(1000, 1100, centre=(560, 900), radius=300, seed=1)
    path = tmp_path_factory.mktemp("slides") / "odd_blob.tif"
    write_pyramid_tiff(path, image, tile=256)
    return path


@pytest.mark.parametrize("shape", [(512, 640), (520, 650)])
def test_slide_path_matches_the_in_memory_model(shape):
    """On an ArraySlide, alpha, the sampled tiles, cells and patch centres and the logits are those on the tensor."""
    image = smooth_rgb(*shape, seed=2)
    net = small_levels().eval()
    model = SlideLevelsZoomIn(net, (MEAN, STD), strip_pixels=500, tissue_only=False).eval()
    x = (image_tensor(image) - MEAN) / STD  # [1, 3, H, W]
    with torch.no_grad(), model.open(ArraySlide(image)) as reader:
        assert torch.allclose(model.first_stage(reader), net.first_stage(x), atol=1e-6)
        for seed in (3, 4):
            ref = net(x, mode="sample", generator=torch.Generator().manual_seed(seed))
            out = model(reader, mode="sample", generator=torch.Generator().manual_seed(seed))
            assert torch.equal(ref.tiles, out.tiles) and torch.equal(ref.subtiles, out.subtiles)
            assert torch.equal(ref.centers, out.centers)
            assert torch.allclose(ref.logits, out.logits, atol=1e-5)
            with lean_inference(model.net):  # one cell view and one patch at a time: the same draws and logits
                lean = model(reader, mode="sample", generator=torch.Generator().manual_seed(seed))
            assert torch.equal(lean.centers, out.centers) and torch.allclose(lean.logits, out.logits, atol=1e-5)


def test_reads_stay_inside_the_slide_when_its_sides_are_not_multiples_of_the_tile(odd_blob):
    """Every tile (border tiles included) may be drawn: each cell read starts inside the slide, each patch is centred in it."""
    model = SlideLevelsZoomIn(small_levels(n=8), (MEAN, STD), tissue_only=False).eval()
    with model.open(odd_blob, record_reads=True) as reader:
        H, W = reader.shape
        assert H % TILE and W % TILE
        for seed in range(6):
            pred = model.predict_one(reader, generator=torch.Generator().manual_seed(seed))
            assert ((pred.centers[:, 0] < H) & (pred.centers[:, 1] < W)).all() and (pred.centers >= 0).all()
        cells = [(x, y) for kind, _, x, y, *_ in reader.read_log if kind == "tile"]
        patches = [(x + PATCH // 2, y + PATCH // 2) for kind, _, x, y, *_ in reader.read_log if kind == "patch"]
        assert cells and patches and all(x < W and y < H for x, y in cells + patches)
        assert any(x >= (W // TILE) * TILE or y >= (H // TILE) * TILE for x, y in cells)  # partial edge tiles were read


def test_reads_stay_inside_tissue_and_inference_is_a_fixed_seed_sample(odd_blob):
    """Tiles, cells and patches are all read inside tissue tiles; predicting twice gives the same draws."""
    model = SlideLevelsZoomIn(small_levels(n=6), (MEAN, STD))
    with model.open(odd_blob, record_reads=True) as reader:
        tissue = reader.tissue((TILE, TILE)).numpy()  # [n_rows, n_cols]
        assert 0 < tissue.sum() < tissue.size
        first, again = model.predict_one(reader), model.predict_one(reader)
        reads = [(kind, x, y) for kind, _, x, y, *_ in reader.read_log if kind in ("tile", "patch")]
    assert np.array_equal(first.centers, again.centers) and np.allclose(first.probs, again.probs)
    assert first.mode == "sample" and first.centers.shape == (6 * 2, 2) and len(first.tiles) == len(first.centers)
    assert tissue.reshape(-1)[first.tiles].all() and (first.alpha[~tissue] == 0).all()
    for kind, x, y in reads:
        r, c = (y + PATCH // 2, x + PATCH // 2) if kind == "patch" else (y, x)
        assert tissue[r // TILE, c // TILE], (kind, x, y)
    tops, lefts = (first.tiles // first.alpha.shape[1]) * TILE, (first.tiles % first.alpha.shape[1]) * TILE
    assert ((first.centers[:, 0] >= tops) & (first.centers[:, 0] < tops + TILE)).all()
    assert ((first.centers[:, 1] >= lefts) & (first.centers[:, 1] < lefts + TILE)).all()


def test_only_sampling_on_a_slide_and_errors_name_the_file(odd_blob):
    model = SlideLevelsZoomIn(small_levels(), (MEAN, STD))
    with pytest.raises(ValueError, match="no top-k"):
        model.predict([odd_blob], mode="topk")
    with pytest.raises(ValueError, match="wraps a LevelsZoomIn"):
        SlideLevelsZoomIn(torch.nn.Linear(1, 1))
    broken = small_levels()
    with torch.no_grad():
        broken.deeper[0].net[-1].bias.fill_(float("nan"))
    with pytest.raises(SlideError, match=r"odd_blob\.tif.*NaN"):
        SlideLevelsZoomIn(broken, (MEAN, STD)).predict([odd_blob])


def test_fit_slides_trains_every_level_with_the_contrastive_sample(odd_blob):
    """One epoch of `fit_slides` (eq. 12, contrastive from epoch 0) on two labelled readers moves a, b, level 3, f and g."""
    model = SlideLevelsZoomIn(small_levels(), (MEAN, STD))
    before = {k: v.clone() for k, v in model.net.state_dict().items()}
    readers = [model.open(odd_blob, label=y, cache_views=True) for y in (0, 1)]
    history = fit_slides(model, readers, epochs=1, lr=1e-2, batch_size=2, warmup_epochs=0,
                         generator=torch.Generator().manual_seed(0), progress=False, device="cpu")
    for r in readers:
        r.close()
    assert len(history) == 1 and history[0]["contrastive"] > 0
    for prefix in ("attention_a", "attention_b", "deeper.0", "features", "g"):
        assert any(not torch.equal(v, before[k]) for k, v in model.net.state_dict().items() if k.startswith(prefix)), prefix
