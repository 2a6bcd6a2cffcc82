"""Fixture writers shared by test_slides.py and test_camelyon16.py: images, ASAP XML, a Camelyon16 tree."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from zoomin_lib.infra.slides import write_pyramid_tiff


def smooth_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A random-ish but smooth uint8 [H, W, 3] image (sinusoids plus mild noise), so views are comparable."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)  # [H, W] each
    phases = rng.uniform(0, 2 * np.pi, size=(3, 2))
    channels = [
        128 + 90 * np.sin(xx / 53.0 + phases[c, 0]) * np.cos(yy / 71.0 + phases[c, 1]) for c in range(3)
    ]
    image = np.stack(channels, axis=-1) + rng.normal(0, 6, size=(height, width, 3))  # [H, W, 3]
    return np.clip(np.round(image), 0, 255).astype(np.uint8)


def tissue_blob(
    height: int, width: int, centre: tuple[float, float], radius: float, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """(RGB uint8 [H, W, 3], truth bool [H, W]): a pink textured disc on near-white glass."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    truth = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius**2  # [H, W]
    glass = 242 + rng.normal(0, 3, size=(height, width, 3))  # [H, W, 3]
    tissue = np.array([205.0, 120.0, 170.0]) + rng.normal(0, 12, size=(height, width, 3))  # H&E-like pink
    image = np.where(truth[..., None], tissue, glass)
    return np.clip(np.round(image), 0, 255).astype(np.uint8), truth


def write_slide(
    path: Path, height: int, width: int, seed: int = 0, levels: int | None = None, tile: int = 256
) -> np.ndarray:
    """A small pyramidal TIFF slide at `path` (written by `write_pyramid_tiff`); returns its level-0 pixels."""
    image = smooth_rgb(height, width, seed)
    write_pyramid_tiff(path, image, tile=tile, levels=levels)
    return image


def asap_xml(annotations: list[tuple[str, str, str, list[tuple[float, float]]]]) -> str:
    """ASAP XML text for (name, group, type, [(x, y), ...]) entries, coordinates written in reverse order."""
    parts = ['<?xml version="1.0"?>', "<ASAP_Annotations>", "\t<Annotations>"]
    for name, group, kind, coords in annotations:
        parts.append(f'\t\t<Annotation Name="{name}" Type="{kind}" PartOfGroup="{group}" Color="#F4FA58">')
        parts.append("\t\t\t<Coordinates>")
        for order in reversed(range(len(coords))):  # Order, not document order, gives the sequence
            x, y = coords[order]
            parts.append(f'\t\t\t\t<Coordinate Order="{order}" X="{x}" Y="{y}" />')
        parts.append("\t\t\t</Coordinates>")
        parts.append("\t\t</Annotation>")
    parts += ["\t</Annotations>", "\t<AnnotationGroups>"]
    for group in sorted({a[1] for a in annotations}):
        parts.append(f'\t\t<Group Name="{group}" PartOfGroup="None" Color="#64FE2E"><Attributes /></Group>')
    parts += ["\t</AnnotationGroups>", "</ASAP_Annotations>", ""]
    return "\n".join(parts)


def square(x0: float, y0: float, x1: float, y1: float) -> list[tuple[float, float]]:
    """The corners of an axis-aligned rectangle, clockwise from (x0, y0)."""
    return [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]


def write_camelyon16(
    root: Path,
    normal: int = 2,
    tumour: int = 2,
    test: dict[str, str] | None = None,
    size: tuple[int, int] = (320, 288),
    extra_columns: bool = False,
) -> Path:
    """A Camelyon16 tree in the distributed layout with tiny slides; returns `root`.

    training/normal/normal_NNN.tif, training/tumor/tumor_NNN.tif with
    training/lesion_annotations/tumor_NNN.xml, testing/images/test_NNN.tif and
    testing/reference.csv (no header; `extra_columns` adds the real file's trailing columns).
    """
    test = {"test_001": "Tumor", "test_002": "Normal"} if test is None else test
    h, w = size
    (root / "training/normal").mkdir(parents=True)
    (root / "training/tumor").mkdir(parents=True)
    (root / "training/lesion_annotations").mkdir(parents=True)
    (root / "testing/images").mkdir(parents=True)
    seed = 0
    for i in range(1, normal + 1):
        write_slide(root / f"training/normal/normal_{i:03d}.tif", h, w, seed := seed + 1, levels=2)
    for i in range(1, tumour + 1):
        write_slide(root / f"training/tumor/tumor_{i:03d}.tif", h, w, seed := seed + 1, levels=2)
        xml = asap_xml([("_0", "_0", "Polygon", square(10, 10, 50, 50))])
        (root / f"training/lesion_annotations/tumor_{i:03d}.xml").write_text(xml)
    lines = []
    for slide_id, label in test.items():
        write_slide(root / f"testing/images/{slide_id}.tif", h, w, seed := seed + 1, levels=2)
        extra = (",Macro,Primary" if label == "Tumor" else ",,") if extra_columns else ""
        lines.append(f"{slide_id},{label}{extra}")
    (root / "testing/reference.csv").write_text("\n".join(lines) + "\n")
    return root
