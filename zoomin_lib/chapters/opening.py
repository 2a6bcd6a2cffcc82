"""The opening every chapter shares, in one line: `cfg, out, device = open_chapter(NAME, SETTINGS, profile, seed)`.

It checks the profile (`infra.config.PROFILES`; the chapter must have settings for it), picks the
profile's settings, makes the results folder (`results/<NAME>/`, or under $ZOOMIN_RESULTS), seeds
python, numpy and torch, and says in one printed line what this run is: chapter, profile, device
and where its results go. `device` is where the chapter's models train (`infra.config.default_device()`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, NamedTuple

import torch

from zoomin_lib.infra.config import check_profile, default_device, results_dir
from zoomin_lib.train.loop import seed_everything

__all__ = ["Chapter", "open_chapter"]


class Chapter(NamedTuple):
    """What a chapter's opening returns (unpacks as `cfg, out, device`)."""

    settings: Mapping[str, Any]  # the profile's settings
    out: Path  # the chapter's results folder
    device: torch.device  # where its models train


def open_chapter(name: str, settings: Mapping[str, Mapping[str, Any]], profile: str, seed: int = 0) -> Chapter:
    """Check `profile`, pick its `settings`, make the results folder, seed everything; one line about the run."""
    check_profile(profile)
    if profile not in settings:
        raise ValueError(f"chapter {name} has no {profile!r} profile; it has {', '.join(settings)}")
    out = results_dir(name)
    seed_everything(seed)
    device = default_device()
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({torch.get_num_threads()} threads)"
    print(f"{name}: profile {profile!r}, seed {seed}, {where}; results in {out}")
    return Chapter(settings[profile], out, device)
