"""Atomic file writes: a result or a prepared dataset is either whole on disk or absent.

Temporaries live beside their target as `.<name>.<host>-<pid>.<random>.tmp` (files and folders).
They are removed on every exit path that Python sees (an exception, Ctrl-C, and SIGTERM, which
`atomic_dir` turns into SystemExit while it runs); a process killed outright (SIGKILL, power loss)
cannot clean up, so the next write of the same target removes the temporaries whose process is
gone (`remove_stale_temporaries`). What is published gets ordinary permissions: 0666 for files and
0777 for folders, less the user's umask (0644 / 0755 with the usual umask 022), not mkstemp's
0600 / mkdtemp's 0700.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import zlib
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

__all__ = [
    "write_json",
    "read_json",
    "write_text",
    "save_torch",
    "atomic_dir",
    "remove_stale_temporaries",
]

_HOST = f"{zlib.crc32(socket.gethostname().encode()):08x}"  # which machine made a temporary (shared folders)
FOREIGN_STALE_SECONDS = 24 * 3600  # another machine's temporary is stale only when this old


def _umask() -> int:
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _ordinary_permissions(path: str | os.PathLike, folder: bool = False) -> None:
    """chmod a freshly made temporary to what open()/mkdir() would have given it: 0666 / 0777 less the umask."""
    os.chmod(path, (0o777 if folder else 0o666) & ~_umask())


def _prefix(path: Path) -> str:
    """The temporaries' name prefix for `path`: `.<name>.<host>-<pid>.`"""
    return f".{path.name}.{_HOST}-{os.getpid()}."


def _pid_alive(pid: int) -> bool:
    """True when a process `pid` exists on this machine (one we may not signal counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


_LEGACY = re.compile(r"[a-z0-9_]{8}\.(tmp|old)")  # tempfile's random part, before names carried host and pid
_OURS = re.compile(r"([0-9a-f]{8})-(\d+)\.[a-z0-9_]{8}\.(tmp|old)")


def _is_stale(tmp: Path, name: str) -> bool:
    """True when `tmp` is a temporary of target `name` that belongs to no running writer.

    This machine's: stale when its process is gone. Another machine's: when older than
    FOREIGN_STALE_SECONDS. Names without host and pid (written before they carried them): stale.
    Anything else (e.g. a temporary of the target `name.v2`) is not one of `name`'s.
    """
    rest = tmp.name[len(name) + 2 :]  # after ".<name>."
    if _LEGACY.fullmatch(rest):
        return True
    match = _OURS.fullmatch(rest)
    if match is None:
        return False
    host, pid = match.group(1), int(match.group(2))
    if host == _HOST:
        return not _pid_alive(pid)
    try:
        return time.time() - tmp.lstat().st_mtime > FOREIGN_STALE_SECONDS
    except FileNotFoundError:
        return False  # its writer just finished with it


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries `.<name>.*.tmp` / `.<name>.*.old` that earlier, killed writers of `path` left beside it.

    Temporaries of writers still running (this machine: their process exists) are kept.
    Returns what was removed.
    """
    path = Path(path)
    removed = []
    if not path.parent.is_dir():
        return removed
    for pattern in (f".{glob.escape(path.name)}.*.tmp", f".{glob.escape(path.name)}.*.old"):
        for tmp in path.parent.glob(pattern):
            if not _is_stale(tmp, path.name):
                continue
            if tmp.is_dir() and not tmp.is_symlink():
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.unlink(missing_ok=True)
            if not tmp.exists():
                removed.append(tmp)
    return removed


@contextlib.contextmanager
def _sigterm_as_exit() -> Iterator[None]:
    """While inside, SIGTERM raises SystemExit(143) so that `finally` and `except BaseException` clean up.

    Only in the main thread, and only when SIGTERM has its default action (a handler someone
    installed is left alone).
    """
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGTERM) != signal.SIG_DFL:
        yield
        return

    def terminate(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, terminate)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Run `write(tmp_path)` on a temporary file beside `path`, then rename it into place (ordinary permissions)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        with _sigterm_as_exit():
            write(tmp)
            _ordinary_permissions(tmp)  # mkstemp makes 0600
            os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _to_jsonable(obj: Any) -> Any:
    """Convert tensors and numpy scalars/arrays to plain Python for json."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().tolist()
    if hasattr(obj, "tolist") and type(obj).__module__.startswith("numpy"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write `obj` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_to_jsonable, allow_nan=True)
    return write_text(path, text + "\n")


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write `text` (UTF-8), atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file in the error if it is malformed."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not valid JSON (not UTF-8 text: {err})") from err


def save_torch(path: str | os.PathLike, obj: Any) -> Path:
    """torch.save, atomically (checkpoints are never half-written)."""
    return atomic_write(path, lambda tmp: torch.save(obj, tmp))


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside `path`; on success it is renamed to `path` (replacing it), on error removed.

    A prepared dataset is therefore either complete at `path` or absent, never half-written.
    Stale temporaries of earlier, killed writers of `path` are removed first; SIGTERM inside the
    block cleans up as an exception does; the published folder gets ordinary permissions (0777
    less the umask, not mkdtemp's 0700).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    with _sigterm_as_exit():
        tmp = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".tmp", dir=path.parent))
        try:
            yield tmp
            _ordinary_permissions(tmp, folder=True)
            if path.exists():
                old = Path(tempfile.mkdtemp(prefix=_prefix(path), suffix=".old", dir=path.parent))
                os.replace(path, old / path.name)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
