"""zoomin_lib: the Zoom-In network (Kong & Henao), attention sampling and their unbiased estimators, in PyTorch.

The top level is the method: `geometry` (views, location maps, tiles), `sampling` and `hierarchical`
(the draws and the unbiased estimators of ATS eq. 4-17 and Zoom-In eq. 5-9), `pixels` (where pixels
come from), `syncs`, `networks` (tables 5-6), `models` (ZoomInNet, ATSNet, UniformNet, DeepMIL,
CNNBaseline), `ips` (IPSNet), `losses`, `steps` (the eq. 12 objective) and `builders`.
The wings: `infra` (config, atomic files, stand-in cache, slide files) < `train` (loop, protocol,
profiling, supervision) and `theory` (enumeration, symbolic, variance, memory model) < `wsi` (models on
whole slides) < `book` (runner, tables, figures, paper numbers), `bench` and the book's helpers (the only code
that imports `data_prep`). ARCHITECTURE.md draws the layers.

What a user reaches for first is re-exported here; the wings load on first use, so `import zoomin_lib`
costs only the core.
"""

from __future__ import annotations

import importlib
from typing import Any

from zoomin_lib import builders
from zoomin_lib.ips import IPSNet
from zoomin_lib.models import ATSNet, CNNBaseline, DeepMIL, UniformNet, ZoomInNet
from zoomin_lib.pixels import PixelSource, TensorSource

__version__ = "0.1.0"

_LAZY = {  # name -> the wing module that defines it
    "open_slide": "zoomin_lib.infra.slides",
    "SlideReader": "zoomin_lib.wsi.reader",
    "SlideSource": "zoomin_lib.wsi.reader",
    "SlideZoomIn": "zoomin_lib.wsi.predict",
    "SlideATS": "zoomin_lib.wsi.predict",
    "predict": "zoomin_lib.wsi.predict",
    "fit": "zoomin_lib.train.loop",
    "evaluate": "zoomin_lib.train.loop",
}

__all__ = ["builders", "IPSNet", "ATSNet", "CNNBaseline", "DeepMIL", "UniformNet", "ZoomInNet", "PixelSource",
           "TensorSource", *_LAZY]


def __getattr__(name: str) -> Any:
    """The wings' names of `_LAZY`, imported on first use."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'zoomin_lib' has no attribute {name!r}")
