"""The command line's settings: chapter 04's profiles by name, overrides, and a slide model rebuilt from a checkpoint.

A profile fixes the geometry (tiles, scales s1 and s2, sub-tiles, N), training (epochs, learning
rate, batch, contrastive warm-up) and appendix L's pre-training, as chapter 04 does:

- `smoke`: seconds, for CI and the tests (the chapter's smoke settings);
- `cpu`: the chapter's book run on a 2-core CPU (tiles of 1024, N = 16, 20 epochs);
- `gpu`: the paper's geometry (tiles of 3200, s1 = 1/32, s2 = 1/8, 50 x 50 sub-tiles, N = 100) on a
  budget of one GPU-day (50 epochs);
- `paper`: the paper's geometry and training (200 epochs at lr 1e-4, batches of 5, sec. 4, appendix G).

`--set key=value` overrides one entry (its type is the profile's); `--set tile_um=777.6` and the other
micron settings (`wsi.resolution.in_pixels`) give sizes and scales in microns instead of pixels. A checkpoint written by
`zoomin train` records the model's configuration under `settings["model"]` (`model_config`), from
which `load_model` rebuilds the `SlideZoomIn` with its training statistics.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any, Mapping, Sequence

import torch
from torch.nn.modules.utils import consume_prefix_in_state_dict_if_present

from zoomin_lib import builders
from zoomin_lib.wsi.predict import SlideZoomIn

__all__ = ["PROFILES", "MODEL_KEYS", "resolve", "model_config", "build_model", "load_model", "pick_device"]

_MICRONS = dict(tile_um=None, patch_um=None, s1_mpp=None, s2_mpp=None)  # set: overrides tile, patch, s1, s2 (wsi.resolution)
_PAPER_GEOMETRY = dict(tile=3200, s1=1 / 32, s2=1 / 8, patch=50, n=100, backbone="lenet", strip_pixels=2**16)
PROFILES: dict[str, dict[str, Any]] = {name: {**cfg, **_MICRONS} for name, cfg in {
    "smoke": dict(tile=512, s1=1 / 16, s2=1 / 4, patch=32, n=8, backbone="lenet", strip_pixels=2**12,
                  epochs=1, warmup=0, lr=1e-3, batch=2, val_fraction=0.0, pretrain_steps={"a": 5, "b": 2, "f": 2},
                  pretrain_lr=1e-2, pretrain_windows={"a": 8, "b": 16}),
    "cpu": dict(tile=1024, s1=1 / 32, s2=1 / 8, patch=50, n=16, backbone="lenet", strip_pixels=2**16,
                epochs=20, warmup=5, lr=1e-3, batch=2, val_fraction=0.0, pretrain_steps={"a": 300, "b": 150, "f": 40},
                pretrain_lr=1e-2, pretrain_windows={"a": 8, "b": 16}),
    "gpu": {**_PAPER_GEOMETRY, "epochs": 50, "warmup": 10, "lr": 1e-4, "batch": 5, "val_fraction": 0.0,
            "pretrain_steps": {"a": 1000, "b": 1000, "f": 1000}, "pretrain_lr": 1e-3, "pretrain_windows": None},
    "paper": {**_PAPER_GEOMETRY, "epochs": 200, "warmup": 10, "lr": 1e-4, "batch": 5, "val_fraction": 0.2,
              "pretrain_steps": {"a": 2000, "b": 2000, "f": 2000}, "pretrain_lr": 1e-3, "pretrain_windows": None},
}.items()}
MODEL_KEYS = ("tile", "s1", "s2", "patch", "n", "backbone", "strip_pixels")  # what rebuilds the network


def resolve(profile: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The settings of `profile` with `key=value` overrides (a Python literal, or a bare string); errors name the key."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; expected one of {', '.join(PROFILES)}")
    cfg = dict(PROFILES[profile])
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep or key not in cfg:
            raise ValueError(f"--set {item!r}: expected key=value with key one of {', '.join(sorted(cfg))}")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        if isinstance(cfg[key], float) and isinstance(value, int):
            value = float(value)
        cfg[key] = value
    return cfg


def model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The entries of `cfg` that rebuild the network (what a checkpoint records under settings['model'])."""
    return {key: cfg[key] for key in MODEL_KEYS}


def build_model(config: Mapping[str, Any], stats: tuple[torch.Tensor, torch.Tensor] | None = None) -> SlideZoomIn:
    """A fresh `SlideZoomIn` of `config` (`model_config`) with the training statistics `stats`."""
    net = builders.zoomin(in_channels=3, n_classes=2, scale1=float(config["s1"]), scale2=float(config["s2"]),
                          tile_size=int(config["tile"]), patch_size=int(config["patch"]), n_patches=int(config["n"]),
                          backbone=str(config["backbone"]))
    return SlideZoomIn(net, stats, strip_pixels=int(config["strip_pixels"]))


def load_model(path: str | Path, device: str | torch.device = "cpu") -> SlideZoomIn:
    """The `SlideZoomIn` saved in a `zoomin train` checkpoint, on `device`, in eval mode; ValueError naming the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises RuntimeError, pickle errors, EOFError, ...
        raise ValueError(f"checkpoint {path}: not a readable checkpoint ({type(err).__name__}: {err})") from err
    config = (ckpt.get("settings") or {}).get("model") if isinstance(ckpt, dict) else None
    if not isinstance(config, dict) or any(key not in config for key in MODEL_KEYS):
        raise ValueError(f"checkpoint {path}: records no model configuration (settings['model'] with "
                         f"{', '.join(MODEL_KEYS)}); it was not written by `zoomin train`")
    model = build_model(config)
    model.trained_mpp = config.get("mpp")  # microns per pixel of the training slides (None: not known)
    state = dict(ckpt["model"])
    consume_prefix_in_state_dict_if_present(state, "module.")  # written by a DistributedDataParallel run
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"checkpoint {path}: its weights do not fit the recorded model ({err})") from err
    return model.to(torch.device(device)).eval()


def pick_device(name: str | None) -> torch.device:
    """`name` as a device ('cpu', 'cuda', 'cuda:1'); None: CUDA when available, else the CPU. Errors say what is missing."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available here (use --device cpu)")
    return device
