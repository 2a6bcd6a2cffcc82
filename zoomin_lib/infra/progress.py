"""Progress bars: a widget in Jupyter, one plain line of text when a notebook runs unattended.

`tqdm` here is `tqdm.auto.tqdm` (an ipywidgets bar in a live notebook, text in a terminal), except
when $ZOOMIN_BATCH is set (the book's runner and scripts/test.sh set it for the kernels they start): then a text
bar, refreshed rarely, whose last state the runner keeps as the one line the rendered page shows
(`zoomin_lib.book.runner.clean_outputs`). A widget's final state is not saved in an executed
notebook, so a batch run must not draw widgets.
"""

from __future__ import annotations

import os
from typing import Any

from tqdm import tqdm as _text_tqdm

__all__ = ["BATCH_ENV", "tqdm"]

BATCH_ENV = "ZOOMIN_BATCH"


def tqdm(*args: Any, **kwargs: Any) -> Any:
    """A progress bar: `tqdm.auto` interactively, a text bar (at most every 5 s) when $ZOOMIN_BATCH is set."""
    if os.environ.get(BATCH_ENV):
        kwargs.setdefault("mininterval", 5.0)
        return _text_tqdm(*args, **kwargs)
    from tqdm.auto import tqdm as auto_tqdm  # imported here: in a kernel it warns when ipywidgets is missing

    return auto_tqdm(*args, **kwargs)
