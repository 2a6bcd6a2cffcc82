"""N from the data on a trained Zoom-In (`beyond.adaptive.adaptive_zoomin`, `fixed_zoomin`): the estimate is unbiased
for the exact aggregate of eq. 5 (Monte Carlo with a fixed seed, within 4 standard errors), each image reads the N
the rule says (checked against a per-image reference and by counting the patches f sees), forced to one M it is
the mean of M sampled forwards of the model with the same draws, the fixed-N estimator is the forward itself, a
mean cost is met, and the host synchronisations do not grow with the batch."""

from __future__ import annotations

import math
import statistics

import pytest
import torch
from torch import Tensor, nn

from zoomin_lib.beyond.adaptive import (
    adaptive_zoomin,
    fixed_zoomin,
    logit_projection,
    tolerance_for_cost,
    round_variance,
    choose_rounds,
)
from zoomin_lib.models import ZoomInNet
from zoomin_lib.syncs import record_syncs


class CountingFeatures(nn.Module):
    """f: tanh of a linear map of the flattened 3x3 patch; counts the patches it sees."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.out_features = d
        self.lin = nn.Linear(9, d)
        self.seen = 0

    def forward(self, p: Tensor) -> Tensor:
        self.seen += p.shape[0]
        return torch.tanh(self.lin(p.flatten(1)))


def make_model() -> ZoomInNet:
    """16x16 one-channel images: 4 tiles of 8x8 (alpha on V(x, 0.5)), 16 sub-tiles a tile (beta on V(x, 0.5, c))."""
    torch.manual_seed(0)
    a, b = nn.Conv2d(1, 1, 3, padding=1), nn.Conv2d(1, 1, 3, padding=1)
    with torch.no_grad():
        a.weight.mul_(4)
        b.weight.mul_(4)
    return ZoomInNet(a, b, CountingFeatures(), 2, 0.5, 0.5, 8, 3, n_patches=4).double().eval()


def images(b: int = 2) -> Tensor:
    return torch.randn(b, 1, 16, 16, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def test_adaptive_estimate_is_unbiased_for_the_exact_aggregate():
    model, x = make_model(), images()
    reps = 3000
    with torch.no_grad():
        exact = model(x, mode="exact").features  # [2, D] eq. 5 over every sub-tile
        out = adaptive_zoomin(model, x, round_size=2, pilot=2, budget=8, tol=0.15,
                              project=logit_projection(model, margin=True), repeats=reps,
                              generator=torch.Generator().manual_seed(2))
    se = out.features.std(1) / math.sqrt(reps)  # [2, D]
    assert ((out.features.mean(1) - exact).abs() < 4 * se).all(), (out.features.mean(1), exact, se)
    assert len(set(out.rounds.flatten().tolist())) >= 3  # M really varies with the draws
    torch.testing.assert_close(out.logits, model.g(out.features))


@pytest.mark.parametrize("project", [False, True])
def test_each_image_reads_the_n_the_rule_says(project):
    model, x = make_model(), images(3)
    head = logit_projection(model) if project else None
    model.features.seen = 0
    tol, pilot, budget, r = (0.1 if project else 0.25), 3, 9, 2
    with torch.no_grad():
        out = adaptive_zoomin(model, x, round_size=r, pilot=pilot, budget=budget, tol=tol, min_rounds=2,
                              project=head, repeats=5, generator=torch.Generator().manual_seed(3))
    assert out.pilot is not None and out.pilot.shape == (3, 5, pilot, 3)
    for b in range(3):
        for j in range(5):
            rounds = out.pilot[b, j] if head is None else out.pilot[b, j] @ head  # [P, D] or [P, C]
            s2 = sum(statistics.variance(rounds[:, d].tolist()) for d in range(rounds.shape[1]))
            m = min(max(math.ceil(s2 / tol**2), 2), budget - pilot)
            assert int(out.rounds[b, j]) == m and int(out.patches[b, j]) == r * (pilot + m)
            assert abs(float(out.variance[b, j]) - s2) < 1e-9
    assert model.features.seen == int(out.patches.sum())  # no patch is read for a round an image ignores
    assert len(set(out.rounds.flatten().tolist())) >= 2
    assert (out.tile_views >= 1).all() and (out.tile_views <= 4 * (pilot + out.rounds)).all()


def test_forced_to_one_m_it_is_the_mean_of_sampled_forwards():
    model, x = make_model(), images(2)
    pilot, m, r, reps = 2, 3, 2, 4
    with torch.no_grad():
        out = adaptive_zoomin(model, x, round_size=r, pilot=pilot, budget=pilot + m, tol=1e6, min_rounds=m,
                              repeats=reps, generator=torch.Generator().manual_seed(4))
        model.n_patches = r
        gen = torch.Generator().manual_seed(4)
        first = model(x.repeat_interleave(reps * pilot, 0), mode="sample", generator=gen).features  # the pilot
        fresh = model(x.repeat_interleave(reps * m, 0), mode="sample", generator=gen).features  # [2 * reps * m, D]
    assert (out.rounds == m).all() and (out.patches == r * (pilot + m)).all()
    torch.testing.assert_close(out.pilot, first.view(2, reps, pilot, -1))
    torch.testing.assert_close(out.features, fresh.view(2, reps, m, -1).mean(2))


def test_fixed_n_is_the_sampled_forward():
    model, x = make_model(), images(2)
    with torch.no_grad():
        out = fixed_zoomin(model, x, 5, repeats=3, generator=torch.Generator().manual_seed(5))
        model.n_patches = 5
        ref = model(x.repeat_interleave(3, 0), mode="sample", generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(out.features, ref.features.view(2, 3, -1))
    torch.testing.assert_close(out.logits, ref.logits.view(2, 3, -1))
    assert (out.patches == 5).all() and (out.rounds == 1).all()
    assert out.tile_views.tolist() == [[len(set(t)) for t in ref.tiles[3 * b : 3 * b + 3].tolist()] for b in range(2)]


def test_a_mean_cost_is_met_with_the_smallest_tolerance():
    model, x = make_model(), images(4)
    with torch.no_grad():
        out = adaptive_zoomin(model, x, round_size=1, pilot=3, budget=30, mean_patches=10.0, repeats=25,
                              project=logit_projection(model), generator=torch.Generator().manual_seed(6))
    mean = float(out.patches.double().mean())
    assert 9.0 <= mean <= 10.0, mean
    s2 = out.variance.flatten()
    fewer = torch.ceil(s2 / (0.999 * out.tol) ** 2).clamp(1, 27)  # a slightly smaller tol costs more than asked
    assert float(fewer.mean()) + 3 > 10.0
    assert tolerance_for_cost(torch.tensor([1.0, 4.0]), 27, 1, 27) < 1e-6  # any tol meets a budget no image exceeds
    with pytest.raises(ValueError, match="min_rounds"):
        tolerance_for_cost(torch.tensor([1.0]), 0.5, 1, 5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_tolerance_keeps_its_mean_cost_through_rounding(dtype):
    """tol found on the pilots' variances gives choose_rounds' M a mean within the cost asked, whatever the rounding
    of s^2 / tol^2 near a whole number (a tol on a jump of the ceiling, or sqrt(s)^2 just below s)."""
    s2 = torch.tensor([0.1, 3.0], dtype=dtype)
    tol = tolerance_for_cost(s2, 1, 1, 10)
    assert float(torch.ceil(s2 / tol**2).clamp(1, 10).double().mean()) <= 1
    generator = torch.Generator().manual_seed(0)
    for _ in range(200):
        pilot = torch.randn(6, 3, 4, generator=generator, dtype=dtype) * torch.rand(6, 1, 1, generator=generator, dtype=dtype)
        s2 = round_variance(pilot)  # [6]
        tol = tolerance_for_cost(s2, 5, 1, 20)
        rounds, _ = choose_rounds(pilot, tol, budget=23)  # budget - P = 20 fresh rounds at most
        assert float(rounds.double().mean()) <= 5, (s2, tol, rounds)


def test_host_synchronisations_do_not_grow_with_the_batch():
    model = make_model()
    counts = []
    for b in (1, 4):
        with torch.no_grad(), record_syncs() as log:
            adaptive_zoomin(model, images(b), round_size=2, pilot=2, budget=10, tol=0.05, repeats=2,
                            generator=torch.Generator().manual_seed(7))
        counts.append(len(log))
    assert counts[0] == counts[1] == 10, counts


def test_arguments_are_checked():
    model, x = make_model(), images(1)
    with pytest.raises(ValueError, match="exactly one"):
        adaptive_zoomin(model, x, round_size=1, pilot=2, budget=5)
    with pytest.raises(ValueError, match="two rounds"):
        adaptive_zoomin(model, x, round_size=1, pilot=1, budget=5, tol=0.1)
    with pytest.raises(ValueError, match="min_rounds"):
        adaptive_zoomin(model, x, round_size=1, pilot=3, budget=3, tol=0.1)
    with pytest.raises(ValueError, match="repeats"):
        fixed_zoomin(model, x, 2, repeats=0)
    with pytest.raises(ValueError, match="two classes"):
        logit_projection(ZoomInNet(nn.Conv2d(1, 1, 1), nn.Conv2d(1, 1, 1), CountingFeatures(), 3, 0.5, 0.5, 8, 3, 2),
                         margin=True)
