"""Microns per pixel: read from a generated TIFF's resolution tags (OpenSlide and tifffile), overridden, or missing."""

from __future__ import annotations

import pytest
from slide_fixtures import smooth_rgb

from data_prep.synthetic_slides import generate
from zoomin_lib.cli import main
from zoomin_lib.cli.settings import resolve
from zoomin_lib.infra.slides import SlideError, open_slide, write_pyramid_tiff
from zoomin_lib.wsi.resolution import in_pixels, resolve_mpp, slide_mpp


@pytest.mark.parametrize("backend", ["openslide", "tifffile"])
def test_mpp_is_read_from_the_tiff_resolution_tags(tmp_path, backend):
    path = write_pyramid_tiff(tmp_path / "s.tif", smooth_rgb(300, 400), tile=256, mpp=0.5)
    with open_slide(path, backend=backend) as slide:
        x, y = slide_mpp(slide)
        assert x == pytest.approx(0.5, rel=1e-6) and y == pytest.approx(0.5, rel=1e-6)
        assert resolve_mpp(slide) == pytest.approx(0.5, rel=1e-6)
        assert resolve_mpp(slide, 0.25) == 0.25  # an explicit value overrides


def test_inch_resolution_tags_are_converted(tmp_path):
    import tifffile

    path = tmp_path / "inch.tif"
    tifffile.imwrite(path, smooth_rgb(64, 64), photometric="rgb", resolution=(25400 / 0.25, 25400 / 0.25),
                     resolutionunit="INCH", metadata=None)
    with open_slide(path, backend="tifffile") as slide:
        assert slide_mpp(slide) == pytest.approx((0.25, 0.25), rel=1e-6)


def test_a_slide_without_mpp_is_a_clear_error_when_microns_are_asked_for(tmp_path):
    path = write_pyramid_tiff(tmp_path / "plain.tif", smooth_rgb(300, 400), tile=256)
    with open_slide(path, backend="tifffile") as slide:
        assert slide_mpp(slide) is None
        with pytest.raises(SlideError, match=r"plain\.tif.*no microns per pixel.*--mpp"):
            resolve_mpp(slide)
        assert resolve_mpp(slide, 0.243) == 0.243


def test_micron_settings_become_pixels():
    cfg = resolve("smoke", ["tile_um=124.416", "patch_um=7.776", "s1_mpp=3.888", "s2_mpp=0.972"])
    px = in_pixels(cfg, 0.243)
    assert (px["tile"], px["patch"]) == (512, 32)
    assert px["s1"] == pytest.approx(1 / 16) and px["s2"] == pytest.approx(1 / 4)
    with pytest.raises(ValueError, match="finer than the slide"):
        in_pixels(resolve("smoke", ["s1_mpp=0.1"]), 0.243)


def test_train_in_microns_on_slides_without_mpp_stops_naming_the_slide(tmp_path, capsys):
    root = generate(tmp_path / "nompp", n_train_normal=1, n_train_tumor=1, n_test_normal=1, n_test_tumor=0,
                    side=1024, tile=256, metastases=(1, 1), metastasis_radius=(8.0, 12.0), spacing=200.0, mpp=None)
    args = ["train", "--data-dir", str(root), "--out", str(tmp_path / "run"), "--device", "cpu", "--set", "tile_um=124.4"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "normal_001.tif" in err and "no microns per pixel" in err and "--mpp" in err
