"""Where the model looked, as GeoJSON that QuPath imports as annotations (level-0 pixel coordinates).

`slide_geojson` builds a FeatureCollection of Polygons for one slide:

- `tissue`: the tissue contour (Otsu on a thumbnail, `infra.slides.tissue_mask`), holes as inner rings;
- `tile`: the tiles the prediction drew and the `top` tiles of highest first-stage attention, with their
  alpha, rank by alpha and whether they were drawn;
- `subtile`: the sub-tiles aggregated, with alpha * beta (the joint attention of eq. 5) and the
  aggregation weight.

`overlay_figure` draws such a collection over a thumbnail of the slide, as a viewer would show it.

Each feature's `properties` carry QuPath's `objectType` ("annotation"), a `classification` (name and
colour), a `name` and `measurements` (the numbers above); every ring is closed (first point = last)
and lies inside the slide: x in [0, W], y in [0, H].
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Polygon as MplPolygon
from matplotlib.path import Path as MplPath
from skimage.measure import approximate_polygon, find_contours

from zoomin_lib.wsi.predict import SlidePrediction

__all__ = ["tissue_rings", "box_ring", "feature", "slide_geojson", "overlay_figure"]

COLOURS = {"tissue": [0, 160, 0], "tile": [230, 160, 0], "subtile": [200, 0, 200]}


def _closed(ring: np.ndarray) -> list[list[float]]:
    """A ring [P, 2] as a closed list of [x, y] (first point repeated at the end)."""
    pts = [[float(x), float(y)] for x, y in ring]
    if pts[0] != pts[-1]:
        pts.append(list(pts[0]))
    return pts


def _signed_area(ring: np.ndarray) -> float:
    """Shoelace area of a ring [P, 2] (x, y): positive when counter-clockwise in x-right, y-up axes."""
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(np.roll(x, -1), y))


def tissue_rings(mask: np.ndarray, shape: tuple[int, int], tolerance: float = 0.75) -> list[list[list[list[float]]]]:
    """Polygons (outer ring, then its holes) of the tissue `mask` bool [h, w], in level-0 pixels of a slide of `shape` (H, W).

    Contours at 0.5 of the zero-padded mask (so that every contour closes), simplified by
    `tolerance` mask pixels, scaled to level 0 and clipped inside the slide. An outer contour and a
    hole turn opposite ways; each hole joins the outer ring that holds its first point.
    """
    h, w = mask.shape
    H, W = shape
    sy, sx = H / h, W / w
    outers, holes = [], []
    for contour in find_contours(np.pad(mask.astype(float), 1), 0.5):  # [P, 2] (row, col), padded
        contour = approximate_polygon(contour, tolerance)
        if len(contour) < 4:
            continue
        xy = np.stack([np.clip((contour[:, 1] - 0.5) * sx, 0, W), np.clip((contour[:, 0] - 0.5) * sy, 0, H)], axis=1)
        if abs(_signed_area(xy)) == 0:
            continue
        # skimage keeps high values on one side; in image axes (y down) an outer contour has positive shoelace area
        (outers if _signed_area(contour[:, ::-1]) > 0 else holes).append(xy)
    polygons = [[xy] for xy in outers]
    for hole in holes:
        for poly in polygons:
            if MplPath(poly[0]).contains_point(hole[0]):
                poly.append(hole)
                break
    return [[_closed(ring) for ring in poly] for poly in polygons]


def box_ring(x: float, y: float, w: float, h: float, shape: tuple[int, int]) -> list[list[float]]:
    """The closed ring of the box (x, y, w, h) clipped inside a slide of `shape` (H, W), clockwise in image axes."""
    H, W = shape
    x0, y0 = min(max(float(x), 0.0), W), min(max(float(y), 0.0), H)
    x1, y1 = min(max(float(x + w), 0.0), W), min(max(float(y + h), 0.0), H)
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]


def feature(kind: str, rings: Sequence[Sequence[Sequence[float]]], name: str, measurements: dict[str, float],
            **extra: Any) -> dict[str, Any]:
    """One GeoJSON Polygon feature with QuPath's annotation properties."""
    return {"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [list(r) for r in rings]},
            "properties": {"objectType": "annotation", "kind": kind, "name": name,
                           "classification": {"name": kind, "color": COLOURS[kind]},
                           "measurements": measurements, **measurements, **extra}}


def slide_geojson(
    pred: SlidePrediction,
    shape: tuple[int, int],
    tissue: np.ndarray | None,
    joint: np.ndarray | None = None,
    top: int = 10,
) -> dict[str, Any]:
    """The FeatureCollection of one Zoom-In prediction on a slide of `shape` (H, W); see the module docstring.

    `tissue` is the tissue mask bool [h, w] of a thumbnail (None: no contour); `joint` [N] the
    alpha * beta of each sub-tile (None: left out); `top` how many tiles of highest alpha are listed
    beside the drawn ones.
    """
    if pred.alpha is None:
        raise ValueError(f"{pred.slide}: the GeoJSON needs Zoom-In's first-stage attention (alpha)")
    alpha = np.asarray(pred.alpha, dtype=np.float64)  # [n_rows, n_cols]
    n_cols = alpha.shape[1]
    th, tw = pred.tile_size
    features = []
    for k, rings in enumerate(tissue_rings(tissue, shape) if tissue is not None else []):
        features.append(feature("tissue", rings, f"tissue {k + 1}", {}))
    flat = alpha.reshape(-1)  # [T]
    order = np.argsort(-flat, kind="stable")  # tiles by decreasing alpha
    rank = np.empty_like(order)
    rank[order] = np.arange(len(order))
    drawn = set(int(t) for t in np.unique(pred.tiles))
    listed = sorted(drawn | set(int(t) for t in order[:top]), key=lambda t: rank[t])
    for t in listed:
        ring = box_ring((t % n_cols) * tw, (t // n_cols) * th, tw, th, shape)
        features.append(feature("tile", [ring], f"tile {t} (alpha rank {int(rank[t]) + 1})",
                                {"alpha": float(flat[t]), "alpha_rank": int(rank[t]) + 1},
                                tile=t, drawn=t in drawn))
    weights = pred.weights if pred.weights is not None else np.full(len(pred.centers), 1 / max(1, len(pred.centers)))
    for k, (box, t) in enumerate(zip(pred.subtile_boxes(), pred.tiles)):
        values = {"alpha": float(flat[int(t)]), "weight": float(weights[k])}
        if joint is not None:
            values["alpha_beta"] = float(joint[k])
        features.append(feature("subtile", [box_ring(*box, shape)], f"sub-tile {k + 1} of tile {int(t)}", values,
                                tile=int(t)))
    H, W = shape
    return {"type": "FeatureCollection", "features": features,
            "properties": {"slide": pred.slide, "width": W, "height": H, "coordinates": "level-0 pixels (x right, y down)",
                           "probability": float(pred.probs[1]) if len(pred.probs) > 1 else float(pred.probs[0]),
                           "predicted": pred.predicted}}


def overlay_figure(image: np.ndarray, doc: dict[str, Any], title: str = "") -> Figure:
    """The thumbnail `image` uint8 [h, w, 3] with every ring of the FeatureCollection `doc` drawn over it.

    Level-0 coordinates are scaled by the thumbnail's size over the slide's (`doc["properties"]`
    width and height); tissue in green, tiles in orange (the most attended one thicker), sub-tiles in magenta.
    """
    h, w = image.shape[:2]
    W, H = doc["properties"]["width"], doc["properties"]["height"]
    fig = Figure(figsize=(6, 6 * h / w + 0.6))
    ax = fig.add_subplot()
    ax.imshow(image)
    for feat in doc["features"]:
        props = feat["properties"]
        width = 2.5 if props.get("alpha_rank") == 1 else 1.0
        for ring in feat["geometry"]["coordinates"]:
            xy = np.asarray(ring, dtype=float) * [w / W, h / H]  # [P, 2] in thumbnail pixels
            ax.add_patch(MplPolygon(xy, closed=True, fill=False, linewidth=width,
                                    edgecolor=np.array(COLOURS[props["kind"]]) / 255))
    ax.legend(handles=[Line2D([], [], color=np.array(c) / 255, label=k) for k, c in COLOURS.items()], loc="lower left",
              fontsize=8)
    ax.set_axis_off()
    ax.set_title(title or f"{doc['properties']['slide']}: p = {doc['properties']['probability']:.3f}", fontsize=10)
    return fig
