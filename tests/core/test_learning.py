"""End to end: ZoomInNet learns a tiny synthetic needle task through fit() and the eq. 12 loss.

The data are a synthetic stand-in made here: dim noise, and in positives one bright 5x5 square.
Beyond accuracy, the test checks that the *first-stage attention* learns (its mass on the
needle's tile rises from uniform), which only happens if the score-function gradient of the
tile draws reaches the attention network a.
"""

import pytest
import torch

from zoomin_lib.models import ZoomInNet
from zoomin_lib.networks import AttentionLeNet, FeatureLeNet
from zoomin_lib.steps import predictor, sampling_loss
from zoomin_lib.train.loop import evaluate, fit, seed_everything

SIZE, TILE, SQUARE = 64, 32, 5


def _needles(n: int, gen: torch.Generator):
    """Images [n, 1, 64, 64] and labels [n]; odd indices hold one bright square."""
    x = 0.1 * torch.rand(n, 1, SIZE, SIZE, generator=gen)
    y = torch.arange(n) % 2
    for i in range(1, n, 2):
        r, c = torch.randint(0, SIZE - SQUARE, (2,), generator=gen).tolist()
        x[i, :, r : r + SQUARE, c : c + SQUARE] = 1.0
    return x, y


def _needle_tile_mass(model: ZoomInNet, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean first-stage attention on the tile holding the needle, over the positives."""
    pos = x[y == 1]
    flat = pos[:, 0].flatten(1).argmax(1)
    tile = (flat // SIZE // TILE) * (SIZE // TILE) + (flat % SIZE) // TILE
    with torch.no_grad():
        return float(model.first_stage(pos).gather(1, tile[:, None]).mean())


def test_zoomin_learns_needles_and_its_attention_moves(tmp_path):
    gen = seed_everything(0, "cpu")  # the data and the model live on the CPU
    x_train, y_train = _needles(64, gen)
    x_test, y_test = _needles(64, gen)
    model = ZoomInNet(AttentionLeNet(1), AttentionLeNet(1, final_tanh=False), FeatureLeNet(1), 2,
                      scale1=0.25, scale2=0.5, tile_size=TILE, patch_size=8, n_patches=4)
    mass_before = _needle_tile_mass(model, x_test, y_test)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = fit(
        model,
        lambda epoch: [(x_train[i : i + 8], y_train[i : i + 8]) for i in range(0, 64, 8)],
        sampling_loss(warmup_epochs=4, generator=gen),
        optimizer,
        14,
        eval_fn=lambda m: evaluate(m, [(x_test, y_test)], predictor("topk")),
        checkpoint_path=tmp_path / "ckpt.pt",
        progress=False,
        generators=[gen],
    )
    assert abs(mass_before - 0.25) < 0.01  # four tiles, untrained: uniform
    assert _needle_tile_mass(model, x_test, y_test) > 0.3
    assert all(h["contrastive"] == 0 for h in history[:4]) and all(h["contrastive"] > 0 for h in history[4:])
    assert max(h["val_accuracy"] for h in history[-3:]) >= 0.9
    assert (tmp_path / "ckpt.pt").is_file()


def test_steps_follow_each_models_modes():
    """Deep MIL trains and predicts in exact mode without a contrastive term; nor does U-N (its complement is itself)."""
    from zoomin_lib.models import DeepMIL, UniformNet

    gen = torch.Generator().manual_seed(0)
    x, y = _needles(4, gen)
    loss_fn = sampling_loss(warmup_epochs=0, generator=gen)
    mil = DeepMIL(FeatureLeNet(1), 2, patch_size=8)
    loss, parts = loss_fn(mil, (x, y), epoch=3)
    loss.backward()
    assert parts["contrastive"] == 0 and all(p.grad is not None for p in mil.parameters())
    assert predictor()(mil, (x, y))[0].shape == (4, 2)
    uniform = UniformNet(FeatureLeNet(1), 2, scale=0.125, patch_size=8, n_patches=3)
    _, parts = loss_fn(uniform, (x, y), epoch=3)
    assert parts["contrastive"] == 0
    assert predictor(generator=gen)(uniform, (x, y))[0].shape == (4, 2)  # evaluates by sampling


def test_predictor_with_draws_is_the_mean_of_each_draws_probabilities():
    from zoomin_lib import builders

    model = builders.ats(in_channels=1, n_classes=3, scale=0.25, patch_size=5, n_patches=2).eval()
    x, y = torch.rand(4, 1, 32, 32, generator=torch.Generator().manual_seed(0)), torch.tensor([0, 1, 2, 0])
    with torch.no_grad():
        logits, target = predictor("sample", torch.Generator().manual_seed(5), draws=3)(model, (x, y))
        g = torch.Generator().manual_seed(5)  # the reference: three draws in a row from the same generator
        each = [model(x, mode="sample", generator=g).logits.softmax(1) for _ in range(3)]  # 3 x [B, C]
        one, _ = predictor("sample", torch.Generator().manual_seed(5))(model, (x, y))
    torch.testing.assert_close(logits.softmax(1), sum(each) / 3)
    assert not torch.allclose(each[0], each[1])  # the draws differ: the mean is not one draw
    torch.testing.assert_close(one, model(x, mode="sample", generator=torch.Generator().manual_seed(5)).logits)
    assert target is y
    calls = []
    model.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():  # a deterministic mode runs once: its logits as they are
        top, _ = predictor("topk", draws=4)(model, (x, y))
        assert len(calls) == 1
        torch.testing.assert_close(top, model(x, mode="topk").logits)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="draws must be a positive int"):
            predictor(draws=bad)
