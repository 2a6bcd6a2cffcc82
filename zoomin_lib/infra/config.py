"""Run settings shared by the notebooks: profile, device, results folder, data cache."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from zoomin_lib.infra.io import remove_stale_temporaries

PROFILES = ("smoke", "cpu", "gpu", "paper")  # gpu: closer to the papers' scale, minutes a chapter on one GPU
PROFILE_ENV = "ZOOMIN_PROFILE"
RESULTS_ENV = "ZOOMIN_RESULTS"
DATA_ENV = "ZOOMIN_DATA"


def get_profile(default: str = "cpu") -> str:
    """The profile from $ZOOMIN_PROFILE (CI sets `smoke`), else `default`."""
    profile = os.environ.get(PROFILE_ENV, default)
    return check_profile(profile)


def check_profile(profile: str) -> str:
    """Return `profile` if it is one of PROFILES, else raise a ValueError naming them."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    return profile


def default_device() -> torch.device:
    """CUDA when available, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _is_checkout(folder: Path) -> bool:
    """True when `folder` is a zoomin checkout (pyproject.toml beside zoomin_lib/)."""
    return (folder / "pyproject.toml").is_file() and (folder / "zoomin_lib").is_dir()


def repo_root(start: str | os.PathLike | None = None) -> Path:
    """The checkout above `start` (default: cwd); else the checkout this package is installed from; else cwd."""
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if _is_checkout(folder):
            return folder
    installed = Path(__file__).resolve().parent.parent  # editable install: the checkout itself
    return installed if _is_checkout(installed) else here


def results_dir(chapter: str) -> Path:
    """`results/<chapter>/` under $ZOOMIN_RESULTS or the repository root; created if missing."""
    base = Path(os.environ[RESULTS_ENV]) if RESULTS_ENV in os.environ else repo_root() / "results"
    path = base / chapter
    path.mkdir(parents=True, exist_ok=True)
    return path


def data_dir(name: str) -> Path:
    """`data/<name>/` under $ZOOMIN_DATA or the repository root (generated datasets are cached there); created if missing.

    Temporaries that a killed generator left beside it are removed (`io.remove_stale_temporaries`).
    """
    base = Path(os.environ[DATA_ENV]) if DATA_ENV in os.environ else repo_root() / "data"
    path = base / name
    remove_stale_temporaries(path)  # left beside it by a generator that was killed
    path.mkdir(parents=True, exist_ok=True)
    return path
