"""Gradient rules for the without-replacement estimator (ATS eq. 14-17) that are *not* unbiased.

Kept only so that chapter 01 can set them beside the exact estimator of `sampling.py` and
measure their bias by enumeration. Do not train with them. Each is written here from its formula:

- `pathwise_only`: autograd through the value formula, with no score-function term. The value
  is unbiased; the gradient ignores that the draws depend on the attention.
- `hand_written_rule(inclusive=False)`: the backward pass of the public ATS implementation,
  written as a formula. For the k-th draw (k = 0..n-1), mass m_k = 1 - S_{k-1}, q_k = a_k / m_k,
  Y_k the k-th term of the estimator and g the incoming gradient:
      dL/da_k = (1/n) <g, Y_k / q_k + sum_{j<k} f_j - k f_k>
      dL/df_k = (1/n) (m_k + (n-1-k) a_k) g
  Its feature gradient is exact; its attention gradient is not.
- `hand_written_rule(inclusive=True)`: the same rule with inclusive sums (m_k = 1 - S_k and
  sum_{j<=k} f_j), as in public PyTorch ports. The forward value is unchanged (the inclusive sums
  cancel there), so only a gradient test reveals it; both gradients are biased.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from zoomin_lib.sampling import expectation_without_replacement, sample_without_replacement
from zoomin_lib.theory.enumeration import expected_value_and_grads, without_replacement_outcomes

__all__ = ["pathwise_only", "hand_written_rule", "RULES", "gradient_bias", "monte_carlo_logit_gradient"]


def _exclusive_cumsum(x: Tensor, dim: int = 1) -> Tensor:
    """Cumulative sum that excludes the current entry."""
    return torch.cumsum(x, dim) - x


def _value(drawn: Tensor, feats: Tensor) -> Tensor:
    """The estimator's value (1/n) sum_k Y_k, and the terms Y_k [B, n, D]."""
    weighted = drawn.unsqueeze(-1) * feats  # [B, n, D]
    terms = _exclusive_cumsum(weighted) + (1 - _exclusive_cumsum(drawn)).unsqueeze(-1) * feats
    return terms.mean(1), terms


def pathwise_only(probs: Tensor, idx: Tensor, feats: Tensor) -> Tensor:
    """The without-replacement estimate with plain autograd through its value (no score term)."""
    return _value(probs.gather(1, idx), feats)[0]


class _HandWritten(torch.autograd.Function):
    """The public ATS backward rule, optionally with inclusive sums."""

    @staticmethod
    def forward(ctx, drawn: Tensor, feats: Tensor, inclusive: bool) -> Tensor:  # type: ignore[override]
        value, terms = _value(drawn, feats)
        ctx.save_for_backward(drawn, feats, terms)
        ctx.inclusive = inclusive
        return value

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        drawn, feats, terms = ctx.saved_tensors
        n = drawn.shape[1]
        k = torch.arange(n, dtype=drawn.dtype, device=drawn.device)  # [n]
        cum = torch.cumsum if ctx.inclusive else _exclusive_cumsum
        mass = 1 - cum(drawn, 1)  # [B, n]
        q = drawn / mass  # [B, n]
        g = grad.unsqueeze(1)  # [B, 1, D]
        direction = terms / q.unsqueeze(-1) + cum(feats, 1) - k.view(1, n, 1) * feats  # [B, n, D]
        grad_drawn = (g * direction).sum(-1) / n  # [B, n]
        grad_feats = (mass + (n - 1 - k) * drawn).unsqueeze(-1) * g / n  # [B, n, D]
        return grad_drawn, grad_feats, None


def hand_written_rule(probs: Tensor, idx: Tensor, feats: Tensor, inclusive: bool = False) -> Tensor:
    """The without-replacement estimate with the public ATS hand-written backward rule."""
    return _HandWritten.apply(probs.gather(1, idx), feats, inclusive)


RULES: dict[str, Callable[[Tensor, Tensor, Tensor], Tensor]] = {
    "zoomin (score surrogate)": expectation_without_replacement,
    "pathwise only": pathwise_only,
    "ATS hand-written rule": lambda p, i, f: hand_written_rule(p, i, f, inclusive=False),
    "port: inclusive sums": lambda p, i, f: hand_written_rule(p, i, f, inclusive=True),
}


def gradient_bias(k: int, n: int, dim: int = 3, seed: int = 0, logit_scale: float = 1.5) -> dict[str, dict[str, float]]:
    """Relative error of E[value], E[d/d logits] and E[d/d features] of each rule, by exact enumeration (float64)."""
    gen = torch.Generator().manual_seed(seed)
    logits = (logit_scale * torch.randn(k, generator=gen, dtype=torch.float64)).requires_grad_()
    feats = torch.randn(k, dim, generator=gen, dtype=torch.float64).requires_grad_()
    project = torch.randn(dim, generator=gen, dtype=torch.float64)
    exact = torch.softmax(logits, 0) @ feats  # [D]
    exact_grads = torch.autograd.grad((exact * project).sum(), [logits, feats])
    outcomes = list(without_replacement_outcomes(torch.softmax(logits.detach(), 0).tolist(), n))

    def rel(got: Tensor, want: Tensor) -> float:
        return float((got - want).norm() / want.norm())

    table = {}
    for name, rule in RULES.items():

        def estimate(seq: tuple, rule=rule) -> Tensor:
            idx = torch.tensor([seq])
            return rule(torch.softmax(logits, 0)[None], idx, feats[idx])

        value, (g_logits, g_feats) = expected_value_and_grads(outcomes, estimate, [logits, feats], project)
        table[name] = {
            "value": rel(value.squeeze(0), exact.detach()),
            "grad_logits": rel(g_logits, exact_grads[0]),
            "grad_features": rel(g_feats, exact_grads[1]),
        }
    return table


def monte_carlo_logit_gradient(
    rule: Callable[[Tensor, Tensor, Tensor], Tensor],
    logits: Tensor,
    feats: Tensor,
    project: Tensor,
    n: int,
    repeats: int,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Average over `repeats` independent draws of the gradient of project . estimate w.r.t. `logits` [K] (feats [K, D])."""
    logits = logits.detach().requires_grad_()
    probs = torch.softmax(logits, 0).expand(repeats, -1)  # [R, K]
    idx = sample_without_replacement(probs.detach(), n, generator)  # [R, n]
    est = rule(probs, idx, feats.detach()[idx])  # [R, D]
    (grad,) = torch.autograd.grad((est @ project).mean(), logits)
    return grad  # [K]
