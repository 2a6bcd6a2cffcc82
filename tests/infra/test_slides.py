"""zoomin_lib.infra.slides: a pyramidal TIFF written level by level, read by OpenSlide, tifffile and as an array."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import torch
from slide_fixtures import smooth_rgb, tissue_blob

from zoomin_lib import geometry
from zoomin_lib.infra.slides import (
    ArraySlide,
    OpenSlideSlide,
    Slide,
    SlideError,
    TiffSlide,
    downsample2,
    hsv_saturation,
    open_slide,
    tile_fraction,
    tissue_mask,
    tissue_tiles,
    write_pyramid_tiff,
)

H, W = 1024, 1536  # level 0; 6 x 4 tiles of 256
LEVELS = 3
BACKENDS = ("openslide", "tifffile", "array")


@pytest.fixture(scope="module")
def source() -> list[np.ndarray]:
    """The level-0 array and the 2x2-mean levels the writer must produce from it."""
    levels = [smooth_rgb(H, W, seed=1)]
    for _ in range(LEVELS - 1):
        levels.append(downsample2(levels[-1]))
    return levels


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory: pytest.TempPathFactory, source: list[np.ndarray]) -> Path:
    """The fixture slide, written from a tile function that is never asked for more than one tile."""
    asked = []

    def tile(y: int, x: int, h: int, w: int) -> np.ndarray:
        asked.append((h, w))
        return source[0][y : y + h, x : x + w]

    path = write_pyramid_tiff(tmp_path_factory.mktemp("slides") / "slide.tif", tile, shape=(H, W), levels=LEVELS, mpp=0.25)
    assert max(max(hw) for hw in asked) <= 256 and len(asked) == 6 * 4
    return path


def _open(kind: str, path: Path, source: list[np.ndarray]) -> Slide:
    """The slide through one backend."""
    if kind == "openslide":
        return open_slide(path)  # OpenSlide is tried first
    if kind == "tifffile":
        return open_slide(path, backend="tifffile")
    return ArraySlide(source[0], levels=LEVELS)


def test_openslide_and_tifffile_see_main_ifd_levels(pyramid: Path) -> None:
    """Levels are main IFDs flagged reduced (NewSubfileType 1), no SubIFDs; both readers see all of them."""
    osr = openslide.OpenSlide(str(pyramid))
    assert osr.level_count == LEVELS > 1
    assert osr.level_dimensions == ((W, H), (W // 2, H // 2), (W // 4, H // 4))
    assert float(osr.properties["openslide.mpp-x"]) == pytest.approx(0.25)
    osr.close()
    with tifffile.TiffFile(pyramid) as tif:
        assert len(tif.pages) == LEVELS
        assert [int(p.subfiletype) for p in tif.pages] == [0, 1, 1]
        assert all(p.is_tiled and p.tilewidth == 256 and not p.subifds for p in tif.pages)
        assert [lvl.shape for lvl in tif.series[0].levels] == [(H, W, 3), (H // 2, W // 2, 3), (H // 4, W // 4, 3)]
    assert isinstance(open_slide(pyramid), OpenSlideSlide)
    assert isinstance(open_slide(pyramid, backend="tifffile"), TiffSlide)


@pytest.mark.parametrize("kind", BACKENDS)
def test_geometry_of_each_backend(kind: str, pyramid: Path, source: list[np.ndarray]) -> None:
    """dimensions, level_count, level_dimensions and level_downsamples as OpenSlide reports them."""
    with _open(kind, pyramid, source) as slide:
        assert slide.dimensions == (W, H) and slide.shape == (H, W)
        assert slide.level_count == LEVELS
        assert slide.level_dimensions == ((W, H), (W // 2, H // 2), (W // 4, H // 4))
        assert slide.level_downsamples == pytest.approx((1.0, 2.0, 4.0))
        assert slide.get_best_level_for_downsample(3.0) == 1


@pytest.mark.parametrize("kind", BACKENDS)
def test_read_region_equals_the_source(kind: str, pyramid: Path, source: list[np.ndarray]) -> None:
    """Level 0 exactly (across tile borders), lower levels equal the 2x2-mean arrays, white outside."""
    with _open(kind, pyramid, source) as slide:
        region = slide.read_region((250, 200), 0, (300, 330))  # crosses tile borders at 256 and 512
        assert region.dtype == np.uint8 and region.shape == (330, 300, 3)
        np.testing.assert_array_equal(region, source[0][200:530, 250:550])
        for level in (1, 2):
            ds = 2**level
            np.testing.assert_array_equal(
                slide.read_region((96 * ds, 40 * ds), level, (150, 90)), source[level][40:130, 96:246]
            )
        corner = slide.read_region((W - 100, H - 60), 0, (300, 200))  # partly beyond the bottom-right
        np.testing.assert_array_equal(corner[:60, :100], source[0][H - 60 :, W - 100 :])
        assert (corner[60:] == 255).all() and (corner[:, 100:] == 255).all()
        before = slide.read_region((-40, -8), 1, (100, 50))  # partly before the top-left, level 1
        np.testing.assert_array_equal(before[4:, 20:], source[1][:46, :80])
        assert (before[:4] == 255).all() and (before[:, :20] == 255).all()
        assert (slide.read_region((5 * W, 0), 2, (10, 10)) == 255).all()  # wholly outside
        whole = slide.read_region((0, 0), 2, slide.level_dimensions[2])
        np.testing.assert_array_equal(whole, source[2])


@pytest.mark.parametrize("kind", BACKENDS)
def test_view_has_the_exact_size_and_matches_geometry_view(kind: str, pyramid: Path, source: list[np.ndarray]) -> None:
    """view(s) is [floor(sH), floor(sW), 3] for any s and close to geometry.view of the whole array."""
    full = torch.from_numpy(source[0]).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
    with _open(kind, pyramid, source) as slide:
        for scale, level in ((1.0, 0), (0.5, 1), (0.29, 1), (0.25, 2), (0.1, 2), (0.03125, 2)):
            v = slide.view(scale)
            expected = geometry.view(full, scale)[0].permute(1, 2, 0).numpy()  # [h, w, 3]
            assert v.dtype == np.uint8 and v.shape == expected.shape == (*geometry.view_size((H, W), scale), 3)
            assert slide.view_level(scale) == level
            diff = np.abs(v.astype(np.float64) - expected)
            assert diff.mean() < 2.5 and diff.max() < 20, (scale, diff.mean(), diff.max())
        np.testing.assert_array_equal(slide.view(0.25), source[2])  # an exact level is returned as is


def test_array_view_is_geometry_view(source: list[np.ndarray]) -> None:
    """With level 0 only, the strip-wise separable resize is geometry.view up to rounding."""
    full = torch.from_numpy(source[0]).permute(2, 0, 1)[None].float()  # [1, 3, H, W]
    for scale in (0.3, 0.125, 0.07):
        v = ArraySlide(source[0]).view(scale).astype(np.float64)
        expected = geometry.view(full, scale)[0].permute(1, 2, 0).numpy()
        assert np.abs(v - expected).max() <= 0.5 + 1e-3


def test_writer_inputs_agree_and_jpeg_is_read(tmp_path: Path, source: list[np.ndarray]) -> None:
    """Array, row strips of odd heights and a tile function give the same pixels; JPEG pyramids open too."""
    small = source[0][:600, :700]
    a = write_pyramid_tiff(tmp_path / "a.tif", small)
    strips = (small[y : y + 37] for y in range(0, 600, 37))
    b = write_pyramid_tiff(tmp_path / "b.tif", strips, shape=(600, 700))
    with TiffSlide(a) as sa, TiffSlide(b) as sb:
        assert sa.level_dimensions == ((700, 600), (350, 300), (175, 150))  # halved until one tile fits
        for level in range(3):
            np.testing.assert_array_equal(
                sa.read_region((0, 0), level, sa.level_dimensions[level]),
                sb.read_region((0, 0), level, sb.level_dimensions[level]),
            )
    j = write_pyramid_tiff(tmp_path / "j.tif", small, compression="jpeg", quality=95)
    with open_slide(j) as sj:
        assert isinstance(sj, OpenSlideSlide) and sj.level_count == 3
        by_openslide = sj.read_region((0, 0), 0, (700, 600)).astype(int)
        assert np.abs(by_openslide - small).mean() < 6  # lossy, on a noisy image
    with TiffSlide(j) as tj:
        assert np.abs(tj.read_region((0, 0), 0, (700, 600)).astype(int) - by_openslide).max() <= 2
    with pytest.raises(ValueError, match="strips hold 592 rows"):
        write_pyramid_tiff(tmp_path / "c.tif", (small[y : y + 37] for y in range(0, 592, 37)), shape=(600, 700))


def test_uniform_tiles_short_cut_gives_the_2x2_means(tmp_path: Path, source: list[np.ndarray]) -> None:
    """Glass tiles skip the read-back past level 0, yet every level is exactly the 2x2 mean of the one below.

    An odd-sized image with a content patch off the tile grid on two glass colours (so some tiles mix
    colours); written losslessly from a tile function that reuses one writable buffer (the writer must
    not trust an array object it saw before) and from read-only shared glass tiles (it may).
    """
    H2, W2 = 1100, 1300
    image = np.full((H2, W2, 3), 241, np.uint8)
    image[:, 900:] = (200, 210, 220)  # a second uniform colour, starting inside a tile
    image[300:700, 250:640] = source[0][:400, :390]  # content across tile borders
    levels = [image]
    while max(levels[-1].shape[:2]) > 256:
        levels.append(downsample2(levels[-1]))
    buffers: dict[tuple[int, int], np.ndarray] = {}
    shared: dict[tuple[int, int, tuple[int, ...]], np.ndarray] = {}

    def reused(y: int, x: int, h: int, w: int) -> np.ndarray:
        view = buffers.setdefault((h, w), np.empty((h, w, 3), np.uint8))  # the same object each time
        view[:] = image[y : y + h, x : x + w]
        return view

    def sharing(y: int, x: int, h: int, w: int) -> np.ndarray:
        block = image[y : y + h, x : x + w]
        colour = tuple(int(v) for v in block[0, 0])
        if (block == block[0, 0]).all():
            if (h, w, colour) not in shared:
                shared[(h, w, colour)] = np.full((h, w, 3), colour, np.uint8)
                shared[(h, w, colour)].flags.writeable = False
            return shared[(h, w, colour)]
        return block

    for name, fn in (("reused", reused), ("sharing", sharing)):
        path = write_pyramid_tiff(tmp_path / f"{name}.tif", fn, shape=(H2, W2))
        with tifffile.TiffFile(path) as tif:
            assert len(tif.pages) == len(levels)
            for k, page in enumerate(tif.pages):
                np.testing.assert_array_equal(page.asarray(), levels[k], err_msg=f"{name}: level {k}")


def test_writer_is_atomic(tmp_path: Path, source: list[np.ndarray]) -> None:
    """A failing tile function leaves neither the file nor a temporary behind."""

    def bad(y: int, x: int, h: int, w: int) -> np.ndarray:
        if y > 0:
            raise RuntimeError("source went away")
        return source[0][y : y + h, x : x + w]

    with pytest.raises(RuntimeError, match="went away"):
        write_pyramid_tiff(tmp_path / "x.tif", bad, shape=(600, 700))
    with pytest.raises(ValueError, match=r"tile\(y=0, x=0, h=256, w=256\)"):
        write_pyramid_tiff(tmp_path / "x.tif", lambda y, x, h, w: np.zeros((h, w), np.uint8), shape=(600, 700))
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("fraction", [0.02, 0.5, 0.97, 0.999])
def test_truncated_copy_names_the_file(fraction: float, pyramid: Path, tmp_path: Path) -> None:
    """A truncated copy fails to open through either backend, naming the file."""
    data = pyramid.read_bytes()
    broken = tmp_path / "broken.tif"
    broken.write_bytes(data[: int(len(data) * fraction)])
    for backend in (None, "tifffile"):
        with pytest.raises(SlideError, match=f"cannot read slide {broken}: .*(truncated|corrupt|offset)"):
            open_slide(broken, backend=backend)


def test_bad_files_name_the_file(tmp_path: Path) -> None:
    """A non-image file, a missing file and a folder give errors naming the path."""
    junk = tmp_path / "notes.tif"
    junk.write_text("not an image at all")
    with pytest.raises(SlideError, match=f"cannot read slide {junk}: .*not a readable TIFF"):
        open_slide(junk)
    with pytest.raises(FileNotFoundError, match=f"cannot read slide {tmp_path / 'gone.tif'}: no such file"):
        open_slide(tmp_path / "gone.tif")
    with pytest.raises(SlideError, match="not a file"):
        open_slide(tmp_path)
    with pytest.raises(ValueError, match="level must be an int"):
        ArraySlide(np.zeros((8, 8, 3), np.uint8)).read_region((0, 0), 1, (2, 2))


def test_hsv_saturation_matches_skimage() -> None:
    """Per pixel, the saturation skimage's rgb2hsv gives (black included: 0)."""
    from skimage.color import rgb2hsv

    rgb = np.random.default_rng(1).integers(0, 256, (9, 7, 3), dtype=np.uint8)
    rgb[0, 0] = 0  # black
    rgb[0, 1] = 128  # grey
    sat = hsv_saturation(rgb)
    assert sat.dtype == np.float32 and sat.shape == (9, 7) and sat[0, 0] == 0 and sat[0, 1] == 0
    np.testing.assert_allclose(sat, rgb2hsv(rgb)[..., 1], atol=1e-6)


def test_tissue_mask_finds_a_blob() -> None:
    """Otsu on saturation finds a pink disc on white glass (IoU > 0.9), and nothing on blank glass."""
    image, truth = tissue_blob(600, 900, centre=(300, 600), radius=170, seed=3)
    slide = ArraySlide(image)
    mask = tissue_mask(slide, 0.1)  # [60, 90]
    small_truth = ArraySlide(truth.astype(np.uint8) * 255).view(0.1)[..., 0] >= 128
    assert mask.shape == (60, 90)
    iou = (mask & small_truth).sum() / (mask | small_truth).sum()
    assert iou > 0.95, iou
    assert np.array_equal(tissue_mask(slide.view(0.1)), mask)  # a view works as well as the slide
    glass = np.clip(242 + np.random.default_rng(0).normal(0, 3, (80, 120, 3)), 0, 255).astype(np.uint8)
    assert not tissue_mask(glass).any()  # Otsu would split the noise; the saturation floor keeps it empty
    assert not tissue_mask(np.full((80, 120, 3), 242, np.uint8)).any()
    half = np.full((80, 120, 3), 242, np.uint8)
    half[:, :50] = (205, 120, 170)  # tissue up to the left edge and the top and bottom rows
    np.testing.assert_array_equal(tissue_mask(half), np.arange(120)[None, :].repeat(80, 0) < 50)


def test_tissue_tiles_marks_the_right_tiles() -> None:
    """Tiles overlapping the blob's footprint are True; the tile grid is ceil (partial tiles count)."""
    image, truth = tissue_blob(600, 900, centre=(300, 600), radius=170, seed=3)  # rows 130..470, cols 430..770
    mask = tissue_mask(ArraySlide(image), 0.1)
    tiles = tissue_tiles(mask, 250, (900, 600))  # 3 rows x 4 columns; the last row and column are partial
    expected = np.array([[0, 1, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(tiles, expected)
    by_truth = [[truth[r * 250 : (r + 1) * 250, c * 250 : (c + 1) * 250].any() for c in range(4)] for r in range(3)]
    np.testing.assert_array_equal(expected, by_truth)


def test_tile_fraction_is_exact_on_a_hand_mask() -> None:
    """A mask at half resolution: each 4x4 level-0 tile covers 2x2 mask pixels, partial tiles fewer."""
    mask = np.zeros((5, 6), bool)
    mask[0, 0] = True
    mask[2:4, 2:4] = True
    mask[4, 5] = True
    frac = tile_fraction(mask, 4, (12, 10))  # level 0 W=12, H=10 -> 3 x 3 tiles, last row 2 high
    np.testing.assert_allclose(frac, [[0.25, 0, 0], [0, 1, 0], [0, 0, 0.5]])
    assert tissue_tiles(mask, 4, (12, 10)).sum() == 3
    assert tissue_tiles(mask, (4, 4), (12, 10), min_fraction=0.3).sum() == 2


def test_other_tiff_layouts_are_read_by_tifffile(tmp_path: Path, source: list[np.ndarray]) -> None:
    """Stripped, grey, RGBA and SubIFD pyramids: OpenSlide misses them or their levels; open_slide still reads them."""
    img = source[0][:300, :400]
    stripped = tmp_path / "stripped.tif"
    tifffile.imwrite(stripped, img, photometric="rgb")  # not tiled: OpenSlide refuses it
    with open_slide(stripped) as s:
        assert isinstance(s, TiffSlide)
        np.testing.assert_array_equal(s.read_region((390, 290), 0, (20, 20))[:10, :10], img[290:, 390:])
    grey = tmp_path / "grey.tif"
    tifffile.imwrite(grey, img[..., 1], tile=(64, 64))
    with open_slide(grey, backend="tifffile") as s:
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (400, 300)), np.repeat(img[..., 1:2], 3, axis=2))
    rgba = np.concatenate([img, np.full((300, 400, 1), 255, np.uint8)], axis=2)
    rgba[:, :100, 3] = 0  # transparent on the left: background
    rgba_path = tmp_path / "rgba.tif"
    tifffile.imwrite(rgba_path, rgba, tile=(64, 64), photometric="rgb", extrasamples=["unassalpha"])
    with open_slide(rgba_path, backend="tifffile") as s:
        region = s.read_region((0, 0), 0, (400, 300))
        assert (region[:, :100] == 255).all()
        np.testing.assert_array_equal(region[:, 100:], img[:, 100:])
    levels = [img, downsample2(img), downsample2(downsample2(img))]
    sub = tmp_path / "subifds.tif"
    with tifffile.TiffWriter(sub) as tw:
        tw.write(levels[0], tile=(64, 64), photometric="rgb", subifds=2)
        for lvl in levels[1:]:
            tw.write(lvl, tile=(64, 64), photometric="rgb", subfiletype=1)
    assert openslide.OpenSlide(str(sub)).level_count == 1  # OpenSlide ignores SubIFDs
    with open_slide(sub) as s:
        assert isinstance(s, TiffSlide) and s.level_count == 3
        np.testing.assert_array_equal(s.read_region((0, 0), 2, (100, 75)), levels[2])
