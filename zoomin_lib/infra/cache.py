"""The stand-in cache: a generated data set is written once per parameters, atomically, and reused after.

Every data set without a download (the synthetic stand-ins of `data_prep`) is cached the same way:
`stand_in(name, parameters, write)` is the folder `<data_dir>/<name>/<key>`, where `key` is the first
12 hex digits of the SHA-256 of the parameters as JSON. If the folder is complete (its record
`stand_in.json` holds the same parameters) it is returned as it is; otherwise `write(folder)` writes it
(the writers publish a folder atomically, `infra.io.atomic_dir`) and the record is written last,
atomically: a folder whose writer was killed has no record and is written again. Different
parameters live side by side (the smoke and cpu profiles, two seeds), never overwriting each other.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable, Mapping

from zoomin_lib.infra.config import data_dir
from zoomin_lib.infra.io import read_json, write_json

__all__ = ["RECORD", "stand_in_key", "stand_in"]

RECORD = "stand_in.json"


def _plain(parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The parameters as they read back from JSON (tuples become lists, keys strings)."""
    return json.loads(json.dumps(parameters, sort_keys=True, default=str))


def stand_in_key(parameters: Mapping[str, Any]) -> str:
    """12 hex digits of the SHA-256 of the parameters' JSON (sorted keys)."""
    text = json.dumps(_plain(parameters), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def stand_in(
    name: str, parameters: Mapping[str, Any], write: Callable[[Path], Any], *, base: str | os.PathLike | None = None
) -> Path:
    """The folder of stand-in `name` for `parameters`, written by `write(folder)` only when absent or incomplete.

    `base` replaces `data_dir(name)` (the folder that holds one sub-folder per parameters).
    """
    folder = (Path(base) if base is not None else data_dir(name)) / stand_in_key(parameters)
    record = folder / RECORD
    try:
        done = record.is_file() and read_json(record) == _plain(parameters)
    except ValueError:  # an unreadable record: write the data set again
        done = False
    if not done:
        write(folder)
        write_json(record, _plain(parameters))
    return folder
