"""Experiments on the MNIST testbeds: NeedleMNIST (Zoom-In appendix J) and O2I (thesis sec. 4.1, 4.8).

What chapter 10 needs beyond the generic loop of `experiments`:

- `CanvasSet`: the canvases of a split as float tensors [b, 1, S, S] in [0, 1], rendered on demand
  (large canvases) or held once in memory as uint8 (small ones).
- `PatchEncoder`: a small valid-convolution encoder (receptive field 32 px, stride 8) that turns a
  patch into one vector; IPS uses it as its patch encoder and Zoom-In (on raw canvases) as f.
- Remedy (ii) of Zoom-In appendix J, "pre-processing the images by a network pre-trained on ROI
  objects with labels": `RoiDetector` is the same trunk with an 11-way head (the ten digits and
  "no digit centred here"), pre-trained on windows built from the labelled training digits
  (`roi_windows`, `train_roi_detector`). `needle_maps` runs it densely over a canvas and returns
  its log-odds that a needle (a 3) is centred at each cell (stride 8), which is the image that
  Zoom-In then classifies.
- `needle_found`: in how many positive canvases the patches a model selected hold the needle.
- `ips_with_encoder` and `zoomin_with_encoder`: IPS and Zoom-In with that encoder (IPS over the
  four megapixel MNIST tasks is trained with `multitask`, as chapter 09 does).
- The reduced O2I canvases of the `cpu` profile (`o2i_noise_for`, `o2i_dataset`): a smaller canvas
  with the digits at their sizes and the noise count scaled with the canvas area (same density).
- What Zoom-In's first stage sees of a needle (appendix J, figure 8): `plot_views`, `plot_needle_crops`.
- How concentrated IPS's pooling attention is (the thesis's figure 13): `sorted_attention`,
  `plot_attention_densities`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from torch import Tensor, nn

from data_prep import o2i
from data_prep.megapixel_mnist import write_dataset
from data_prep.mnist_digits import DIGIT_SIZE, digit_pools
from zoomin_lib.chapters.multitask import N_CLASSES, TASKS, TaskRun, pack_targets, train_tasks
from zoomin_lib.geometry import view
from zoomin_lib.infra.cache import stand_in
from zoomin_lib.infra.config import default_device
from zoomin_lib.ips import IPSNet
from zoomin_lib.models import ZoomInNet
from zoomin_lib.networks import AttentionLeNet
from zoomin_lib.steps import ExtraTerm
from zoomin_lib.train.loop import evaluating, seed_everything
from zoomin_lib.train.protocol import TrainSettings, lazy_batches

__all__ = [
    "CanvasSet",
    "PatchEncoder",
    "RoiDetector",
    "NONE",
    "NEEDLE",
    "WINDOW",
    "MAP_STRIDE",
    "train_pool",
    "needle_centers",
    "roi_windows",
    "train_roi_detector",
    "needle_maps",
    "needle_rank",
    "needle_found",
    "found_by_chance",
    "zoomin_with_encoder",
    "ips_with_encoder",
    "o2i_noise_for",
    "o2i_dataset",
    "o2i_split",
    "train_ips_tasks",
    "plot_views",
    "plot_needle_crops",
    "sorted_attention",
    "plot_attention_densities",
]

NEEDLE = 3  # the digit NeedleMNIST asks about
NONE = 10  # the detector's 11th class: no digit centred in the window
WINDOW = 32  # the encoder's receptive field: a 28 px digit with 2 px of context on each side
MAP_STRIDE = 8  # the encoder's total stride
MAP_PAD = 12  # zero padding of a canvas for the dense map: cell (i, j) is the window centred at (8i + 4, 8j + 4)


# ----------------------------------------------------------------------------------------------------
# Canvases
# ----------------------------------------------------------------------------------------------------


class CanvasSet:
    """Canvases `indices` of a split (anything with `.canvas(i)` -> uint8 [S, S]) as float tensors in [0, 1].

    With `cache=True` every canvas is rendered once and held as uint8 (S^2 bytes each); else each
    `load` renders its canvases again (O2I and NeedleMNIST canvases are pure functions of the files).
    """

    def __init__(self, dataset: Any, indices: Sequence[int] | None = None, cache: bool = False) -> None:
        self.dataset = dataset
        self.indices = np.arange(len(dataset)) if indices is None else np.asarray(indices, dtype=np.int64)
        self._cache = np.stack([dataset.canvas(int(i)) for i in self.indices]) if cache and len(self.indices) else None

    def __len__(self) -> int:
        """Number of canvases in the set."""
        return len(self.indices)

    def uint8(self, k: int) -> np.ndarray:
        """Canvas k of the set (dataset canvas indices[k]), uint8 [S, S]."""
        return self._cache[k] if self._cache is not None else self.dataset.canvas(int(self.indices[k]))

    def load(self, ks: Sequence[int]) -> Tensor:
        """Canvases ks of the set as a float batch [b, 1, S, S] in [0, 1]."""
        arr = np.stack([self.uint8(int(k)) for k in ks])  # [b, S, S]
        return torch.from_numpy(arr).unsqueeze(1).float().div_(255)


# ----------------------------------------------------------------------------------------------------
# The patch encoder and the pre-trained ROI detector (remedy ii)
# ----------------------------------------------------------------------------------------------------


class PatchEncoder(nn.Module):
    """Valid convolutions Conv(4, 2)-w1, Conv(3, 2)-w2, Conv(3, 2)-w3, Conv(3, 1)-D with ReLUs, then a global max -> [K, D].

    Receptive field 32 px and stride 8: a 32x32 patch (a whole 28 px digit with its surroundings)
    gives one output vector; a larger patch gives a grid of them, max-pooled. Its cost is about
    400 multiply-accumulates per input pixel, a tenth of table 5's LeNet f (whose 13 px receptive
    field cannot span a digit). With `layer_norm` each embedding is layer-normalised: as a
    patch encoder for IPS, whose attention logits (and so its patch ranking) scale with the
    embeddings, which a freshly initialised ReLU stack makes tiny (IPS's ResNets normalise theirs).
    """

    def __init__(self, in_channels: int = 1, dim: int = 32, widths: tuple[int, int, int] = (16, 32, 32),
                 layer_norm: bool = False) -> None:
        super().__init__()
        if not isinstance(dim, int) or dim < 1:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.in_channels = in_channels
        self.out_features = dim
        w1, w2, w3 = widths
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, w1, 4, 2), nn.ReLU(),
            nn.Conv2d(w1, w2, 3, 2), nn.ReLU(),
            nn.Conv2d(w2, w3, 3, 2), nn.ReLU(),
            nn.Conv2d(w3, dim, 3, 1), nn.ReLU(),
        )
        self.norm = nn.LayerNorm(dim) if layer_norm else nn.Identity()

    def feature_map(self, x: Tensor) -> Tensor:
        """Features [B, D, h, w] of inputs x [B, C, H, W] with H, W >= 32 (cell (i, j) sees x[8i : 8i + 32, 8j : 8j + 32])."""
        if x.dim() != 4 or x.shape[1] != self.in_channels or min(x.shape[-2:]) < WINDOW:
            raise ValueError(f"PatchEncoder expects [B, {self.in_channels}, H >= {WINDOW}, W >= {WINDOW}], "
                             f"got {tuple(x.shape)}")
        return self.trunk(x)

    def forward(self, x: Tensor) -> Tensor:
        """Embeddings [K, D] of patches x [K, C, ph, pw] (global max over the feature map, then the optional LayerNorm)."""
        return self.norm(self.feature_map(x).amax(dim=(2, 3)))  # [K, D]


class RoiDetector(nn.Module):
    """Remedy (ii): the PatchEncoder trunk and a 1x1 head over 11 classes (digits 0-9, NONE), applied densely.

    `forward` classifies 32x32 windows; `dense` classifies, in one pass, every window of a canvas
    whose centre lies on the grid (8i + 4, 8j + 4), i.e. a map at stride 8 (the canvas is zero-padded
    by 12 px; H and W must be multiples of 8).
    """

    def __init__(self, in_channels: int = 1, dim: int = 32) -> None:
        super().__init__()
        self.encoder = PatchEncoder(in_channels, dim)
        self.head = nn.Conv2d(dim, NONE + 1, 1)

    def forward(self, windows: Tensor) -> Tensor:
        """Class logits [B, 11] of windows [B, C, 32, 32]."""
        if tuple(windows.shape[-2:]) != (WINDOW, WINDOW):
            raise ValueError(f"windows must be {WINDOW}x{WINDOW}, got {tuple(windows.shape)}")
        return self.head(self.encoder.feature_map(windows)).flatten(1)  # [B, 11]

    def dense(self, x: Tensor) -> Tensor:
        """Class logits [B, 11, H/8, W/8] of the windows centred at (8i + 4, 8j + 4) of canvases x [B, C, H, W]."""
        H, W = x.shape[-2:]
        if H % MAP_STRIDE or W % MAP_STRIDE:
            raise ValueError(f"the canvas sides must be multiples of {MAP_STRIDE}, got {(H, W)}")
        padded = F.pad(x, (MAP_PAD,) * 4)  # [B, C, H + 24, W + 24]
        return self.head(self.encoder.feature_map(padded))  # [B, 11, H/8, W/8]


def train_pool(dataset: Any) -> tuple[np.ndarray, np.ndarray]:
    """The training pool of labelled digits a NeedleMNIST dataset draws from: images uint8 [n, 28, 28], labels [n]."""
    pool = dataset.parameters["pool"]
    return digit_pools(pool["seed"], pool["fractions"])["train"]


def needle_centers(dataset: Any) -> np.ndarray:
    """Centre (row, col) of the needle of every canvas [N, 2]; -1 for canvases without one."""
    out = np.full((len(dataset), 2), -1, dtype=np.int64)
    for i in np.flatnonzero(dataset.targets == 1):
        k = int(np.flatnonzero(dataset.classes[i] == NEEDLE)[0])
        out[i] = dataset.positions[i, k] + DIGIT_SIZE // 2
    return out


def _window_label(center: np.ndarray, digit_centers: np.ndarray, classes: np.ndarray, jitter: int) -> int | None:
    """The class of the digit centred within `jitter` px of `center` (Chebyshev), NONE, or None when ambiguous.

    Windows centred between jitter and 2 * jitter px from a needle are ambiguous (part of a 3, not
    centred on it) and are not used.
    """
    d = np.abs(digit_centers - center).max(axis=1)  # [D]
    k = int(d.argmin())
    if d[k] <= jitter:
        return int(classes[k])
    near_needle = (classes == NEEDLE) & (d <= 2 * jitter)
    return None if near_needle.any() else NONE


def roi_windows(
    dataset: Any,
    canvas_indices: Sequence[int],
    per_canvas: int,
    none_per_canvas: int,
    rng: np.random.Generator,
    jitter: int = 4,
    needle_share: float = 0.25,
) -> tuple[np.ndarray, np.ndarray]:
    """Training windows uint8 [n, 32, 32] and labels [n] for the ROI detector, from annotated training canvases.

    Per canvas: `per_canvas` windows at random places whose central 28x28 box (shifted by up to
    `jitter` px) is overwritten with a labelled training-pool digit, a needle with probability
    `needle_share` (so every pool 3 is seen, in the clutter of real canvases: digit boxes never
    overlap, so a box holds one digit and only its surroundings show neighbours); and
    `none_per_canvas` windows cut as they are, labelled from the canvas's annotations.
    """
    images, labels = train_pool(dataset)
    needles, others = np.flatnonzero(labels == NEEDLE), np.flatnonzero(labels != NEEDLE)
    pad = WINDOW
    windows, out_labels = [], []
    for i in canvas_indices:
        canvas = np.pad(dataset.canvas(int(i)), pad)  # [S + 64, S + 64]
        size = dataset.canvas_size
        centers = dataset.positions[int(i)] + DIGIT_SIZE // 2 + pad  # [D, 2] in padded coordinates
        classes = dataset.classes[int(i)]
        for _ in range(per_canvas):
            r, c = rng.integers(pad // 2, size + pad // 2, size=2)
            big = canvas[r - jitter : r + WINDOW + jitter, c - jitter : c + WINDOW + jitter].copy()  # window + margin
            j = rng.choice(needles) if rng.random() < needle_share else rng.choice(others)
            top, left = jitter + (WINDOW - DIGIT_SIZE) // 2 + rng.integers(-jitter, jitter + 1, size=2)
            big[top : top + DIGIT_SIZE, left : left + DIGIT_SIZE] = images[j]  # the box holds this digit only
            windows.append(big[jitter : jitter + WINDOW, jitter : jitter + WINDOW])
            out_labels.append(int(labels[j]))
        drawn = 0
        while drawn < none_per_canvas:
            r, c = rng.integers(pad // 2, size + pad // 2, size=2)
            label = _window_label(np.array([r + WINDOW // 2, c + WINDOW // 2]), centers, classes, jitter)
            if label is None:
                continue
            windows.append(canvas[r : r + WINDOW, c : c + WINDOW].copy())
            out_labels.append(label)
            drawn += 1
    return np.stack(windows), np.asarray(out_labels, dtype=np.int64)


def train_roi_detector(
    windows: np.ndarray, labels: np.ndarray, epochs: int, lr: float = 2e-3, batch_size: int = 128, seed: int = 0,
) -> tuple[RoiDetector, list[float]]:
    """Pre-train a RoiDetector on windows uint8 [n, 32, 32] with labels [n] (cross-entropy, Adam); model, loss per epoch.

    It trains on `config.default_device()` (the windows move batch by batch) and is returned on the host.
    """
    seed_everything(seed)
    generator = torch.Generator().manual_seed(seed)  # the order of the windows is drawn on the host
    device = default_device()
    model = RoiDetector().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    x = torch.from_numpy(windows).unsqueeze(1)  # [n, 1, 32, 32] uint8
    y = torch.from_numpy(labels)
    losses = []
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(y), generator=generator)
        total = 0.0
        for start in range(0, len(y), batch_size):
            idx = order[start : start + batch_size]
            loss = F.cross_entropy(model(x[idx].to(device).float().div_(255)), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(idx)
        losses.append(total / len(y))
    return model.cpu().eval(), losses


@torch.no_grad()
def needle_maps(detector: RoiDetector, canvases: CanvasSet, batch_size: int = 4, dilate: int = 3) -> Tensor:
    """The detector's log-odds that a needle is centred at each cell (stride 8), floored at 0 [n, 1, S/8, S/8].

    log p(3) - log p(not 3) per cell, so that a confident needle stands out by its size (a
    probability saturates at 1 for the needle and for the loudest false alarms alike); floored at
    0 so that the background is flat; max-pooled over `dilate` x `dilate` cells, which widens a
    response from one cell to a few so that it survives the averaging of Zoom-In's V(map, s1).
    """
    detector.eval()
    out = []
    for start in range(0, len(canvases), batch_size):
        x = canvases.load(range(start, min(start + batch_size, len(canvases))))  # [b, 1, S, S]
        logp = torch.log_softmax(detector.dense(x), dim=1)  # [b, 11, S/8, S/8]
        others = torch.cat((logp[:, :NEEDLE], logp[:, NEEDLE + 1 :]), dim=1)  # [b, 10, S/8, S/8]
        odds = (logp[:, NEEDLE : NEEDLE + 1] - torch.logsumexp(others, dim=1, keepdim=True)).clamp(min=0)
        out.append(F.max_pool2d(odds, dilate, 1, dilate // 2) if dilate > 1 else odds)
    return torch.cat(out)  # [n, 1, S/8, S/8]


def needle_rank(maps: Tensor, centers: np.ndarray, radius: int = 2) -> dict[str, float]:
    """How loud the needle is in the maps [n, 1, h, w]: its value against the loudest cell elsewhere.

    For canvases with a needle (centers [n, 2] in pixels, -1 without one): the map's maximum within
    `radius` cells of the needle's cell, and the maximum outside; `louder` is the share of them
    where the needle is the loudest; `negatives_max` the mean maximum of canvases without one.
    """
    has = centers[:, 0] >= 0
    cells = (centers - MAP_STRIDE // 2) // MAP_STRIDE  # [n, 2]
    at, elsewhere = [], []
    for i in np.flatnonzero(has):
        m = maps[int(i), 0]  # [h, w]
        r, c = (int(v) for v in cells[i])
        r0, r1, c0, c1 = max(r - radius, 0), r + radius + 1, max(c - radius, 0), c + radius + 1
        at.append(float(m[r0:r1, c0:c1].max()))
        rest = m.clone()
        rest[r0:r1, c0:c1] = -1
        elsewhere.append(float(rest.max()))
    at_a, else_a = np.array(at), np.array(elsewhere)
    negatives = maps[torch.as_tensor(~has)].flatten(1).amax(1) if (~has).any() else torch.zeros(0)
    return {
        "needle_mean": float(at_a.mean()) if at_a.size else float("nan"),
        "elsewhere_mean": float(else_a.mean()) if else_a.size else float("nan"),
        "louder": float((at_a > else_a).mean()) if at_a.size else float("nan"),
        "negatives_max": float(negatives.mean()) if negatives.numel() else float("nan"),
    }


@torch.no_grad()
def needle_found(
    model: nn.Module,
    load: Callable[[Sequence[int]], Tensor],
    indices: Sequence[int],
    centers: np.ndarray,
    scale: int = 1,
    offset: int = 0,
    batch_size: int = 4,
) -> float:
    """Share of canvases `indices` (needle centred at centers[k], pixels) where a patch the model selected holds that centre.

    The model runs in its eval mode; its `centers` [B, N, 2] and `patch_size` are in input
    coordinates, mapped to the canvas by `input * scale + offset` (a needle map: scale 8, offset 4).
    """
    hits = []
    with evaluating(model, grad=True):  # as before: eval mode, gradients as the caller has them
        for start in range(0, len(indices), batch_size):
            ks = list(range(start, min(start + batch_size, len(indices))))
            out = model(load([int(indices[k]) for k in ks]), mode=getattr(model, "eval_mode", "topk"))
            patch = torch.as_tensor(model.patch_size) * scale  # [2]
            pc = out.centers * scale + offset  # [b, N, 2]
            nc = torch.as_tensor(centers[[int(indices[k]) for k in ks]]).unsqueeze(1)  # [b, 1, 2]
            lo = pc - patch // 2  # top-left of each patch, as extract_patches cuts it
            inside = ((nc >= lo) & (nc < lo + patch)).all(dim=-1)  # [b, N]
            hits += inside.any(dim=1).tolist()
    return float(np.mean(hits)) if hits else float("nan")


def found_by_chance(model: nn.Module, canvas_side: int, scale: int = 1) -> float:
    """The canvas share its selected patches cover: n_patches (or IPS's memory_size) x patch area / canvas area, at most 1.

    The chance that a patch placed at random holds the needle's centre; `scale` maps the model's
    input to canvas pixels (8 for a needle map).
    """
    count = getattr(model, "n_patches", None) or getattr(model, "memory_size")
    ph, pw = model.patch_size
    return min(1.0, count * ph * pw * scale**2 / canvas_side**2)


# ----------------------------------------------------------------------------------------------------
# Builders
# ----------------------------------------------------------------------------------------------------


def zoomin_with_encoder(
    *, in_channels: int = 1, n_classes: int = 2, scale1: float, scale2: float, tile_size: int, patch_size: int,
    n_patches: int, dim: int = 32,
) -> ZoomInNet:
    """Zoom-In with table 5's attention networks a and b (no final tanh) and a PatchEncoder as f."""
    a, b = AttentionLeNet(in_channels, final_tanh=False), AttentionLeNet(in_channels, final_tanh=False)
    return ZoomInNet(a, b, PatchEncoder(in_channels, dim), n_classes, scale1, scale2, tile_size, patch_size, n_patches)


def ips_with_encoder(
    *, in_channels: int = 1, n_classes: int | Sequence[int] = 2, patch_size: int, memory_size: int, iter_size: int,
    dim: int = 32, n_heads: int = 8, semantic: bool = False, mask_top_k: int = 0, mask_prob: float = 0.0,
) -> IPSNet:
    """IPS (thesis sec. 2.7) with a layer-normalised PatchEncoder over non-overlapping full-resolution patches.

    `semantic` gives every head its own MLP (thesis sec. 3.3), `mask_top_k` and `mask_prob` are STKIM's K and P
    (sec. 3.4); off by default.
    """
    encoder = PatchEncoder(in_channels, dim, layer_norm=True)
    return IPSNet(encoder, n_classes, patch_size, memory_size, iter_size, n_heads=n_heads, semantic=semantic,
                  mask_top_k=mask_top_k, mask_prob=mask_prob)


# ----------------------------------------------------------------------------------------------------
# The O2I canvases (thesis sec. 3.1.4), full size or reduced
# ----------------------------------------------------------------------------------------------------


def o2i_noise_for(digit_size: int, canvas_size: int, reference_canvas: int = o2i.CANVAS_SIZE,
                  reference_count: int | None = None) -> int:
    """Noise curves on a canvas_size canvas at the density of `reference_count` curves on a `reference_canvas` one.

    The reference count defaults to the thesis's formula for the digit size on its 3000x3000 canvas
    (`o2i.noise_count`: 800 curves for 28 px digits, 200 for 112 px); it is scaled by the ratio of
    the canvas areas and rounded.
    """
    count = o2i.noise_count(digit_size) if reference_count is None else reference_count
    return round(count * (canvas_size / reference_canvas) ** 2)


def o2i_dataset(
    digit_size: int, n_train: int, n_val: int, *, canvas_size: int = o2i.CANVAS_SIZE, n_noise: int | None = None,
    thickness: float = o2i.THICKNESS, seed: int = 0,
) -> Path:
    """An O2I dataset (train and val splits) cached under data_dir, regenerated only when its parameters change.

    `n_noise` defaults to `o2i_noise_for(digit_size, canvas_size)`, the thesis's count at the same density.
    """
    noise = o2i_noise_for(digit_size, canvas_size) if n_noise is None else n_noise
    params = o2i.parameters(n_train, n_val, 0, seed, digit_size, noise, thickness, canvas_size)
    name = f"o2i_{canvas_size}px_digits{digit_size}_noise{noise}_t{thickness:g}"
    return stand_in(name, params, lambda root: write_dataset(root, params))


def o2i_split(root: Path, n_train: int) -> tuple[CanvasSet, CanvasSet, np.ndarray, np.ndarray]:
    """(the first n_train training canvases, the validation canvases, their [n, 13] task targets) of an O2I dataset.

    The first n canvases, as the thesis's nested training-set sizes; canvases of up to 1000 px are
    rendered once and held in memory (`CanvasSet`).
    """
    train, val = o2i.O2IMNIST(root, "train"), o2i.O2IMNIST(root, "val")
    if n_train > len(train):
        raise ValueError(f"the dataset holds {len(train)} training canvases, not {n_train}")
    cache = train.canvas(0).shape[0] <= 1000
    return (CanvasSet(train, range(n_train), cache=cache), CanvasSet(val, cache=cache),
            pack_targets(train.targets)[:n_train], pack_targets(val.targets))


def train_ips_tasks(
    name: str, split: tuple[CanvasSet, CanvasSet, np.ndarray, np.ndarray], settings: TrainSettings, *,
    memory_size: int, iter_size: int, seed: int, patch_size: int = 50, out_dir: str | Path | None = None,
    extra_terms: Mapping[str, ExtraTerm] | None = None, **ips_kwargs: Any,
) -> tuple[TaskRun, IPSNet]:
    """IPS (`ips_with_encoder`, one head per task) trained on the four tasks of an `o2i_split` and validated on it.

    Mini-batches of `settings.batch_size` in the order of `seed`, validation in batches of 16, run
    seed `seed` (`multitask.train_tasks`, `extra_terms` added to its loss); `ips_kwargs` go to the
    builder (`semantic`, `mask_top_k`, `mask_prob`). Without them it trains what chapter 10's Part 2 does.
    """
    train, val, y_train, y_val = split

    def factory() -> IPSNet:
        return ips_with_encoder(n_classes=[N_CLASSES] * len(TASKS), patch_size=patch_size, memory_size=memory_size,
                                iter_size=iter_size, **ips_kwargs)

    return train_tasks(name, factory, settings, lazy_batches(train.load, y_train, settings.batch_size, seed),
                       lazy_batches(val.load, y_val, 16, seed, shuffle=False), run_seed=seed, out_dir=out_dir,
                       extra_terms=extra_terms)


# ----------------------------------------------------------------------------------------------------
# Figures: what Zoom-In's first stage sees of a needle (appendix J, figure 8)
# ----------------------------------------------------------------------------------------------------


def _needle_box(center: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns of the DIGIT_SIZE x DIGIT_SIZE box centred at `center` (row, col) of a canvas."""
    r, c = center
    half = DIGIT_SIZE // 2
    return slice(r - half, r + half), slice(c - half, c + half)


def plot_views(x: Tensor, center: tuple[int, int], scale: float = 0.25) -> Figure:
    """Figure 8: a canvas x [1, 1, S, S], its view V(x, scale) and the mask of the needle centred at `center`."""
    v = view(x, scale)[0, 0].numpy()  # [S * scale, S * scale]
    mask = np.zeros(tuple(x.shape[-2:]))
    mask[_needle_box(center)] = 1
    fig, axes = plt.subplots(1, 3, figsize=(12, 4))
    titles = (f"canvas, {x.shape[-2]}x{x.shape[-1]}", f"view V(x, {scale}), {v.shape[0]}x{v.shape[1]}", "ROI mask: the 3")
    for ax, img, title in zip(axes, (x[0, 0].numpy(), v, mask), titles):
        ax.imshow(img, cmap="gray")
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    return fig


def plot_needle_crops(x: Tensor, data: Any, k: int, center: tuple[int, int], scale: float = 0.25,
                      n_neighbours: int = 5) -> Figure:
    """The needle of canvas k (x [1, 1, S, S]) at full resolution and at `scale`, beside its nearest digits at `scale`.

    `data` gives the digits' top-left corners (`positions` [n, D, 2]) and classes (`classes` [n, D]).
    """
    step = round(1 / scale)  # canvas pixels per view pixel
    v = view(x, scale)[0, 0].numpy()  # [S / step, S / step]
    r, c = center
    half, small = DIGIT_SIZE // 2, DIGIT_SIZE // step
    neighbours = [int(j) for j in np.argsort(np.abs(data.positions[k] + half - (r, c)).max(1))[1 : n_neighbours + 1]]
    rows, cols = _needle_box(center)
    crops = [x[0, 0, rows, cols].numpy(), v[(r - half) // step : (r + half) // step, (c - half) // step : (c + half) // step]]
    for j in neighbours:
        top, left = data.positions[k, j] // step
        crops.append(v[top : top + small, left : left + small])
    names = ["the 3, full resolution", f"the 3 at s1 = {scale}"] + [f"a {data.classes[k, j]} at s1" for j in neighbours]
    fig, axes = plt.subplots(1, len(crops), figsize=(1.6 * len(crops), 2))
    for ax, img, name in zip(axes, crops, names):
        ax.imshow(img, cmap="gray", interpolation="nearest")
        ax.set_title(name, fontsize=8)
        ax.axis("off")
    return fig


# ----------------------------------------------------------------------------------------------------
# How concentrated IPS's pooling attention is (thesis sec. 9.5, figure 13)
# ----------------------------------------------------------------------------------------------------


def sorted_attention(model: IPSNet, load: Callable[[list[int]], Tensor], indices: Sequence[int],
                     batch_size: int = 50) -> Tensor:
    """IPS's pooling attention over its M selected patches, per canvas, sorted in decreasing order: [n, M] on the host.

    The weights are `IPSOutput.weights` (eq. 2's attention averaged over heads and task queries) in
    eval mode, so STKIM masks nothing; each row sums to 1. `load(idx)` gives the canvases [b, C, H, W].
    """
    indices = list(indices)
    if not indices:
        raise ValueError("sorted_attention needs at least one canvas")
    rows = []
    with evaluating(model):  # eval mode, no gradients
        for start in range(0, len(indices), batch_size):
            rows.append(model(load(indices[start : start + batch_size])).weights.float().cpu())  # [b, M]
    return torch.cat(rows).sort(dim=1, descending=True).values  # [n, M]


def plot_attention_densities(curves: Mapping[str, np.ndarray], panels: Mapping[str, Sequence[str]]) -> Figure:
    """Figure 13's layout: one panel per title in `panels`, one line per configuration named there.

    `curves` maps a configuration to the sorted attention [M] of one canvas; the line plots it against
    the patch's rank (1 = the most attended), so a line that falls steeply is attention held by a few patches.
    """
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 3.6), sharey=True, squeeze=False)
    for ax, (title, names) in zip(axes[0], panels.items()):
        for name in names:
            ax.plot(np.arange(1, len(curves[name]) + 1), curves[name], "o-", ms=3, label=name)
        ax.set_xlabel("patch rank (1 = most attended)")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("pooling attention")
    fig.tight_layout()
    return fig
