"""What a loader could not use, said once per file, and errors that name the file whatever library raised them.

Real downloads are a little wrong: a file missing, one truncated, a line garbled. A loader here reads
what each item's label needs; whatever else is missing or unreadable it reports (`report`: a
`DataProblemWarning` naming the file and the problem, appended to the data set's `problems` list,
which the notebooks print), and an item it cannot use it skips, saying why. Only a data set left
with nothing usable, or without a class its task needs, stops, with one message (`DataSetError`).

Errors about one file are `DataFileError`s, '<file>: <problem> (<library's exception>)', so a
scipy `MatReadError`, a PIL `OSError: image file is truncated` or a JSON error never arrives
without the file it is about. `check_image` finds truncated JPEG, PNG and BMP files from their
ends (a marker, a chunk, a size) without decoding them, so a loader can check every image of a
large data set cheaply; a suspicious file is decoded to be sure.
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from PIL import Image

__all__ = [
    "DataProblemWarning",
    "DataFileError",
    "DataSetError",
    "report",
    "summarize_problems",
    "read_rgb",
    "check_image",
    "missing_classes",
]

_TAIL = 1 << 16  # bytes at the end of a file searched for its end marker


class DataProblemWarning(UserWarning):
    """A file of a data set is missing or unreadable; the loader went on without it (or without the part it held)."""


class DataFileError(ValueError):
    """One file cannot be used: the message is '<file>: <problem>'."""

    def __init__(self, path: str | os.PathLike, problem: str) -> None:
        """Keep the file and the problem apart (a loader reports them, the message joins them)."""
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class DataSetError(ValueError):
    """A data set left with nothing usable, or without a class its task needs."""


def describe(err: BaseException) -> str:
    """'<ExceptionType>: <message>' of an exception a library raised (the message alone when it is empty)."""
    text = str(err).strip()
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def report(problems: list[str], message: str, stacklevel: int = 2) -> None:
    """Append `message` to `problems` and warn with it (a DataProblemWarning)."""
    problems.append(message)
    warnings.warn(message, DataProblemWarning, stacklevel=stacklevel + 1)


def summarize_problems(problems: Sequence[str], shown: int = 10) -> str:
    """The first `shown` problems, one per line, and how many more there are."""
    lines = [f"  {p}" for p in problems[:shown]]
    if len(problems) > shown:
        lines.append(f"  ... and {len(problems) - shown} more")
    return "\n".join(lines)


def missing_classes(labels: Iterable[int], needed: Sequence[int], names: Sequence[str]) -> list[str]:
    """Names of the classes in `needed` that no label in `labels` has."""
    present = set(int(v) for v in labels)
    return [names[c] for c in needed if c not in present]


def read_rgb(path: str | os.PathLike) -> np.ndarray:
    """An image file decoded as uint8 RGB [H, W, 3] (alpha dropped, grey or palette expanded).

    FileNotFoundError or DataFileError naming the file: a missing, truncated or garbled image never
    surfaces as PIL's bare 'image file is truncated'.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: image missing")
    try:
        with Image.open(path) as img:
            if img.mode == "RGBA":
                return np.asarray(img)[..., :3].copy()  # [H, W, 3]
            return np.array(img.convert("RGB"))  # [H, W, 3], a writable copy
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as err:
        raise DataFileError(path, f"not a readable image ({describe(err)})") from err


def _tail(path: Path, n: int = _TAIL) -> bytes:
    """The last `n` bytes of a file (all of it when shorter)."""
    with open(path, "rb") as fh:
        fh.seek(0, os.SEEK_END)
        size = fh.tell()
        fh.seek(max(0, size - n))
        return fh.read()


def _bmp_short(path: Path) -> str | None:
    """'the file has N bytes, its header needs M' for an uncompressed BMP cut short, else None."""
    with open(path, "rb") as fh:
        head = fh.read(54)
    if len(head) < 26:
        return f"{len(head)} bytes, shorter than a BMP header"
    offset, info = struct.unpack_from("<II", head, 10)
    if info == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes, uncompressed
        width, height, _, bits = struct.unpack_from("<HHHH", head, 18)
        compression = 0
    elif len(head) >= 34:
        width, height, _, bits, compression = struct.unpack_from("<iiHHI", head, 18)
    else:
        return f"{len(head)} bytes, shorter than its BMP header"
    if compression not in (0, 3, 6):  # run-length or embedded JPEG/PNG: no fixed size to check
        return None
    needed = offset + ((abs(width) * bits + 31) // 32) * 4 * abs(height)
    size = path.stat().st_size
    return f"the file has {size} bytes, its header needs {needed}" if size < needed else None


def _looks_truncated(path: Path, fmt: str | None) -> str | None:
    """Why the end of a JPEG, PNG or BMP file looks cut off, or None (other formats: None)."""
    if fmt == "JPEG" and b"\xff\xd9" not in _tail(path):
        return "no end-of-image marker"
    if fmt == "PNG" and b"IEND" not in _tail(path, 64):
        return "no IEND chunk at the end"
    if fmt == "BMP":
        return _bmp_short(path)
    return None


def check_image(path: str | os.PathLike) -> str | None:
    """The problem with an image file, or None: missing, not an image, or truncated.

    Cheap for good files: the header is parsed and the end of the file looked at; only a file whose
    end looks cut off (or whose format has no such check) is decoded, at reduced size for JPEG.
    A truncation is only reported when decoding confirms it.
    """
    path = Path(path)
    if not path.is_file():
        return "image missing"
    try:
        with Image.open(path) as img:
            suspicion = _looks_truncated(path, img.format)
            if suspicion is None and img.format in ("JPEG", "PNG", "BMP"):
                return None
            if img.format == "JPEG":
                img.draft("RGB", (max(1, img.width // 8), max(1, img.height // 8)))  # decode at 1/8 scale
            img.load()
    except (OSError, ValueError, SyntaxError, struct.error, Image.DecompressionBombError) as err:
        return f"not a readable image ({describe(err)})"
    return None
