"""Host synchronisations: the few a forward pass needs, named, counted, and allowed; every other one is a bug.

A GPU runs ahead of the Python that drives it only while the host never waits for a device value.
`.item()`, `float()`, `bool()`, `.tolist()`, `.nonzero()`, `torch.unique` and copies to the host
all wait. The models of `zoomin_lib.models` keep a constant number of such waits per forward,
whatever the batch size B, the number of patches N or of distinct tiles N' (see each model's
docstring for its count):

- `host_sync(reason)` marks one deliberate synchronisation. Under
  `torch.cuda.set_sync_debug_mode("error")` (which raises on every other one) it lets the marked
  operation through, and it adds `reason` to every active `record_syncs()` log, so tests can
  count them on any device.
- `Checks` gathers the argument checks of a forward as 0-d boolean tensors on the device and
  resolves them all with one synchronisation at the end, raising the first failed check's
  message: a NaN in the input still gives a clear error, at the price of one wait, not one per
  check.
"""

from __future__ import annotations

import contextlib
import threading
from typing import Callable, Iterator

import torch
from torch import Tensor

__all__ = ["host_sync", "record_syncs", "Checks"]

_local = threading.local()


def _logs() -> list[list[str]]:
    """The active `record_syncs` logs of this thread."""
    if not hasattr(_local, "logs"):
        _local.logs = []
    return _local.logs


@contextlib.contextmanager
def host_sync(reason: str) -> Iterator[None]:
    """Allow one deliberate host synchronisation inside the block (and record `reason`)."""
    for log in _logs():
        log.append(reason)
    if not torch.cuda.is_available():
        yield
        return
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode(0)
    try:
        yield
    finally:
        torch.cuda.set_sync_debug_mode(previous)


@contextlib.contextmanager
def record_syncs() -> Iterator[list[str]]:
    """Collect the reasons of every `host_sync` entered in the block (this thread), in order."""
    log: list[str] = []
    _logs().append(log)
    try:
        yield log
    finally:
        _logs().remove(log)


class Checks:
    """Checks of one forward pass, kept on the device and resolved together with a single synchronisation."""

    def __init__(self) -> None:
        self._items: list[tuple[Tensor, str | Callable[[], str]]] = []

    def add(self, ok: Tensor, message: str | Callable[[], str]) -> None:
        """Record that `ok` (a boolean tensor, any shape) must be all True, else ValueError(message)."""
        self._items.append((ok.all(), message))

    def resolve(self) -> None:
        """One synchronisation for all recorded checks; raise the first failure's message (a callable is called then)."""
        if not self._items:
            return
        flags = torch.stack([ok.reshape(()) for ok, _ in self._items])
        with host_sync("argument checks"):
            passed = flags.cpu().tolist()
        items, self._items = self._items, []
        for ok, (_, message) in zip(passed, items):
            if not ok:
                raise ValueError(message() if callable(message) else message)
