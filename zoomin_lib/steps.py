"""One training step and one prediction for the sampling models, for `train.loop.fit` / `train.loop.evaluate`.

`predictor` predicts in a model's mode (by default its `eval_mode`); in the "sample" mode it can
average the class probabilities of several draws (`draws`).

`sampling_loss` is the per-batch objective of Zoom-In eq. 12: cross-entropy on the sampled
prediction, entropy regularisation of alpha and of every sampled beta^c, and, from epoch
`warmup_epochs` on (sec. 4: "after training without it for 10 epochs"), the contrastive loss of
sec. 2.2 on the images whose label is not the reference class, predicted from tiles drawn from
1 - alpha and sub-tiles from 1 - beta. Each model says how it trains and predicts (`train_mode`,
`eval_mode`) and whether a contrastive sample means anything for it (`supports_contrastive`:
not for uniform sampling, whose complement is itself, nor for the CNN). ATSNet (one stage, no
betas) takes the same loss; a model without attention gets plain cross-entropy.

In train mode the contrastive forward also passes through BatchNorm layers (ResNet16 features),
so their running statistics see the low-attention patches too.

`extra_terms` adds named terms to the objective, each a function of the model, its output, the
labels and the batch's extra entries (after x and y): appendix L's supervision from annotations
plugs in here (`zoomin_lib.train.supervision.box_term`) without the objective knowing about
annotations, and so do IPS's Semantic and Diversity regularisers (`zoomin_lib.ips.regulariser_terms`),
also for models without an attention distribution.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
from torch import Tensor, nn

from zoomin_lib.losses import contrastive_loss, weighted_cross_entropy, zoomin_objective
from zoomin_lib.models import ModelOutput

__all__ = ["ExtraTerm", "sampling_loss", "predictor"]

Batch = Sequence[Tensor]  # (images [B, C, H, W], labels [B], extra entries ...)
# (model, output, y, batch[2:]) -> a scalar added to the objective
ExtraTerm = Callable[[nn.Module, ModelOutput, Tensor, Sequence[Tensor]], Tensor]


def sampling_loss(
    *,
    warmup_epochs: int = 10,
    lam: float = 1e-5,
    class_weights: Sequence[float] | Tensor | None = None,
    reference_class: int = 0,
    contrastive: bool = True,
    generator: torch.Generator | None = None,
    extra_terms: Mapping[str, ExtraTerm] | None = None,
) -> Callable[[nn.Module, Batch, int], tuple[Tensor, dict[str, float]]]:
    """The loss_fn(model, (x, y, *extra), epoch) of eq. 12 for `train.loop.fit`; contrastive from `warmup_epochs` on.

    Each of `extra_terms` (name -> term(model, out, y, extra)) is added to the objective and reported under its name.
    """
    if warmup_epochs < 0:
        raise ValueError(f"warmup_epochs must be >= 0, got {warmup_epochs}")

    def loss_fn(model: nn.Module, batch: Batch, epoch: int) -> tuple[Tensor, dict[str, float]]:
        x, y, *extra = batch
        out = model(x, mode=getattr(model, "train_mode", "sample"), generator=generator)
        con = None
        if out.alpha is None:  # no attention distribution: plain (weighted) cross-entropy
            total = weighted_cross_entropy(out.logits, y, class_weights)
            parts = {"total": float(total.detach()), "ce": float(total.detach())}
        else:
            total, parts = zoomin_objective(
                out.logits, y, out.alpha, out.betas, lam=lam, class_weights=class_weights,
                reference_class=reference_class,
            )
            use_contrastive = contrastive and epoch >= warmup_epochs and getattr(model, "supports_contrastive", False)
            positive = y != reference_class
            con = total.new_zeros(())
            if use_contrastive and bool(positive.any()):
                negative_view = model(x[positive], mode=model.train_mode, generator=generator, contrastive=True)
                con = contrastive_loss(negative_view.logits, y[positive], reference_class, reduction="sum") / len(y)
            parts["contrastive"] = float(con.detach())
        for name, term in (extra_terms or {}).items():
            value = term(model, out, y, extra)
            parts[name] = float(value.detach())
            total = total + value
        if con is not None:
            total = total + con
        parts["total"] = float(total.detach())
        return total, parts

    return loss_fn


def predictor(
    mode: str | None = None, generator: torch.Generator | None = None, draws: int = 1
) -> Callable[[nn.Module, Batch], tuple[Tensor, Tensor]]:
    """The predict_fn(model, (x, y)) for `train.loop.evaluate`: logits in `mode`, by default the model's `eval_mode`.

    With `draws` > 1 and the "sample" mode, the model runs `draws` times and the prediction is the mean
    of the draws' class probabilities, returned as its logarithm (logits whose softmax is that mean):
    the expected prediction over draws of the one-draw prediction the training loss is taken on,
    estimated with less variance than one draw gives. (It is not the full model of eq. 5: the mean of
    probabilities is not the classifier of the mean feature.) `evaluate`'s loss is then the
    cross-entropy of that mean, at most the mean of the single draws' (Jensen). Deterministic modes ("topk",
    "exact") run once whatever `draws` is.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws must be a positive int, got {draws!r}")

    def predict_fn(model: nn.Module, batch: Batch) -> tuple[Tensor, Tensor]:
        x, y, *_ = batch
        chosen = mode or getattr(model, "eval_mode", "topk")
        if draws == 1 or chosen != "sample":
            return model(x, mode=chosen, generator=generator).logits, y
        probs = sum(model(x, mode=chosen, generator=generator).logits.softmax(dim=1) for _ in range(draws))  # [B, C]
        return (probs / draws).clamp_min(torch.finfo(probs.dtype).tiny).log(), y

    return predict_fn
