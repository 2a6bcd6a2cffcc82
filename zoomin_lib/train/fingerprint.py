"""A short digest of a data set, a fold or a subset: what a checkpoint records as the data it was trained on.

`fingerprint(*parts)` digests arrays and tensors (dtype, shape, values), paths, numbers, strings,
lists and dicts with SHA-256; another data set, fold or subset gives another digest, so resuming
a checkpoint on other data is refused (`train.loop.fit`'s settings record).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np
from torch import Tensor

__all__ = ["fingerprint"]

SAMPLE = 2**20  # entries of a large array that are digested (a strided sample, plus the sum of all)


def fingerprint(*parts: Any) -> str:
    """A short digest (16 hex digits) of data: arrays and tensors (dtype, shape, values), paths, numbers, strings, lists, dicts.

    What a checkpoint records as its data: another data set, fold or subset gives another digest.
    Arrays of over SAMPLE entries are digested from a strided sample of SAMPLE of them plus their sum.
    """
    digest = hashlib.sha256()

    def feed(part: Any) -> None:
        if isinstance(part, Tensor):
            part = part.detach().cpu().numpy()
        if isinstance(part, np.generic):
            part = part.item()  # a numpy scalar digests as the Python number it equals
        if isinstance(part, np.ndarray):
            digest.update(f"array{part.dtype}{part.shape}".encode())
            flat = part.reshape(-1)
            if flat.size > SAMPLE:
                digest.update(repr(float(flat.sum(dtype=np.float64))).encode())
                flat = flat[:: -(-flat.size // SAMPLE)]
            digest.update(np.ascontiguousarray(flat).tobytes())
        elif isinstance(part, Mapping):
            digest.update(b"{")
            for key in sorted(part, key=str):
                feed(str(key))
                feed(part[key])
            digest.update(b"}")
        elif isinstance(part, (list, tuple)):
            digest.update(b"[")
            for item in part:
                feed(item)
            digest.update(b"]")
        else:
            digest.update(f"{type(part).__name__}:{part};".encode())

    feed(list(parts))
    return digest.hexdigest()[:16]
