"""Tests of zoomin_lib.train.loop: learning, evaluation metrics, resume determinism, NaN errors."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from zoomin_lib.infra.config import default_device
from zoomin_lib.infra.io import read_json
from zoomin_lib.train.loop import (
    CheckpointMismatchError,
    NonFiniteLossError,
    binary_auc,
    evaluate,
    fit,
    seed_everything,
    write_metrics,
)


def _blobs(n: int = 256, seed: int = 0) -> TensorDataset:
    """Two separable Gaussian blobs in 2-D, labels 0/1."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2  # [N]
    centres = torch.tensor([[-2.0, -2.0], [2.0, 2.0]])
    x = centres[y] + 0.7 * torch.randn(n, 2, generator=gen)  # [N, 2]
    return TensorDataset(x, y)


def _model() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Dropout(0.2), torch.nn.Linear(2, 2))


def _loss(model, batch, epoch):
    x, y = batch
    loss = F.cross_entropy(model(x), y)
    return loss, {"ce": loss.item()}


def _predict(model, batch):
    x, y = batch
    return model(x), y


class _Killed(Exception):
    """Stands for the process dying at the start of an epoch (after the previous epoch's checkpoint)."""


def _killed_at(loss_fn, epoch: int | None):
    """`loss_fn`, except that it raises _Killed at the first batch of 0-based `epoch` (None: never)."""
    def wrapped(model, batch, e):
        if e == epoch:
            raise _Killed(f"killed at epoch {e}")
        return loss_fn(model, batch, e)
    return wrapped


def _loader_for_epoch(data, seed):
    """A loader reseeded per epoch, so epoch e always sees the same order."""
    def make(epoch):
        return DataLoader(data, batch_size=32, shuffle=True,
                          generator=torch.Generator().manual_seed(seed * 1000 + epoch))
    return make


def test_fit_learns_and_evaluate_reports(tmp_path):
    seed_everything(0)
    data = _blobs()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.2)
    history = fit(model, _loader_for_epoch(data, 0), _loss, opt, 4, progress=False,
                  eval_fn=lambda m: evaluate(m, DataLoader(data, batch_size=64), _predict))
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert history[-1]["loss"] < history[0]["loss"]
    assert history[0]["ce"] == pytest.approx(history[0]["loss"])
    metrics = evaluate(model, DataLoader(data, batch_size=64), _predict)
    assert metrics["accuracy"] > 0.9 and metrics["auc"] > 0.95
    assert metrics["n"] == 256 and metrics["support"] == [128, 128]
    assert sum(metrics["correct"]) == round(metrics["accuracy"] * 256)
    assert history[-1]["val_accuracy"] == metrics["accuracy"]
    path = write_metrics(tmp_path / "m.json", metrics)
    assert read_json(path)["accuracy"] == metrics["accuracy"]


@pytest.mark.parametrize("per_epoch_loader", [True, False])
def test_resume_gives_same_weights(tmp_path, per_epoch_loader):
    data = _blobs(128)

    def run(ckpt, killed_at=None):
        seed_everything(1)
        model = _model()
        opt = torch.optim.Adam(model.parameters(), lr=0.05)
        # the plain DataLoader shuffles with the global torch RNG, restored on resume
        batches = (_loader_for_epoch(data, 1) if per_epoch_loader
                   else DataLoader(data, batch_size=32, shuffle=True))
        history = fit(model, batches, _killed_at(_loss, killed_at), opt, 4, checkpoint_path=ckpt, progress=False)
        return model, history

    straight, hist_straight = run(None)
    with pytest.raises(_Killed):
        run(tmp_path / "ckpt.pt", killed_at=2)  # interrupted after 2 epochs
    resumed, hist_resumed = run(tmp_path / "ckpt.pt")  # fresh objects, resumes at epoch 3
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in hist_resumed] == [h["loss"] for h in hist_straight]


def test_resume_restores_generators(tmp_path):
    gen = seed_everything(3, "cpu")
    full = torch.nn.Linear(2, 2)
    ckpt = tmp_path / "gen.pt"

    def train(model, generator, path, killed_at=None):
        opt = torch.optim.SGD(model.parameters(), lr=0.1)

        def loss_fn(m, batch, epoch):
            noise = torch.randn(4, 2, generator=generator)
            return F.cross_entropy(m(batch + noise), torch.tensor([0, 1, 0, 1])), {}

        fit(model, [torch.zeros(4, 2)] * 3, _killed_at(loss_fn, killed_at), opt, 3, checkpoint_path=path,
            progress=False, generators=[generator])

    train(full, gen, None)
    gen2 = seed_everything(3, "cpu")
    part = torch.nn.Linear(2, 2)
    with pytest.raises(_Killed):
        train(part, gen2, ckpt, killed_at=1)
    gen3 = seed_everything(99, "cpu")  # a different state: the checkpoint must restore it
    resumed = torch.nn.Linear(2, 2)
    train(resumed, gen3, ckpt)
    assert torch.equal(full.weight, resumed.weight)


def _tiny_fit(path, epochs, killed_at=None, lr=0.1, **kwargs):
    """Train a Linear(2, 2) on one fixed batch with SGD; return (model, history)."""
    torch.manual_seed(0)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    batch = (torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
    kwargs.setdefault("progress", False)
    loss_fn = _killed_at(lambda m, b, e: (F.cross_entropy(m(b[0]), b[1]), {}), killed_at)
    history = fit(model, [batch], loss_fn, opt, epochs, checkpoint_path=path, **kwargs)
    return model, history


def test_resume_with_numpy_and_tensor_eval_values(tmp_path):
    """eval_fn values of numpy/torch types are stored as plain Python, so weights_only loading resumes."""
    def eval_fn(model):
        return {"auc": np.float64(0.75), "per_class": np.array([1, 2]), "n": np.int64(3),
                "t": torch.tensor(0.5), "nested": {"a": (np.float32(0.25), None, "s")}}

    with pytest.raises(_Killed):
        _tiny_fit(tmp_path / "ck.pt", 2, killed_at=1, eval_fn=eval_fn)
    _, history = _tiny_fit(tmp_path / "ck.pt", 2, eval_fn=eval_fn)  # resumes from epoch 1
    assert [h["epoch"] for h in history] == [1, 2]
    for h in history:
        assert h["val_auc"] == 0.75 and type(h["val_auc"]) is float
        assert h["val_per_class"] == [1, 2] and type(h["val_n"]) is int and h["val_t"] == 0.5
        assert h["val_nested"] == {"a": [0.25, None, "s"]}
    with pytest.raises(TypeError, match="val_bad"):
        _tiny_fit(None, 1, eval_fn=lambda m: {"bad": object()})


def test_resume_with_another_scheduler_is_refused(tmp_path):
    """A checkpoint saved without a scheduler is not resumed with one (nor the reverse): the refusal names it."""
    _tiny_fit(tmp_path / "ck.pt", 2)  # saved without a scheduler

    def with_scheduler(epochs, resume=True):
        torch.manual_seed(0)
        model = torch.nn.Linear(2, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
        batch = (torch.randn(4, 2), torch.tensor([0, 1, 0, 1]))
        return fit(model, [batch], lambda m, b, e: (F.cross_entropy(m(b[0]), b[1]), {}), opt, epochs,
                   checkpoint_path=tmp_path / "ck.pt", scheduler=sched, progress=False, resume=resume)

    with pytest.raises(CheckpointMismatchError, match=r"scheduler: checkpoint None, now \{'class': 'StepLR'"):
        with_scheduler(2)
    assert len(with_scheduler(2, resume=False)) == 2  # afresh: the checkpoint is overwritten
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(with_scheduler(2)) == 2  # now the checkpoint holds the same scheduler: resumed, nothing left
    with pytest.raises(CheckpointMismatchError, match=r"scheduler: checkpoint \{'class': 'StepLR'.*, now None"):
        _tiny_fit(tmp_path / "ck.pt", 2)


def test_epoch_without_batches_is_an_error():
    """A one-shot iterable is exhausted after epoch 1: epoch 2 must fail, naming the epoch."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = iter([torch.zeros(1, 2), torch.ones(1, 2)])
    with pytest.raises(ValueError, match=r"epoch 2 \(0-based 1\) yielded no batches"):
        fit(model, batches, lambda m, b, e: (m(b).sum(), {}), opt, 3, progress=False)
    with pytest.raises(ValueError, match=r"epoch 1 .*no batches"):
        fit(model, [], lambda m, b, e: (m(b).sum(), {}), opt, 1, progress=False)


def test_nan_loss_names_epoch_and_batch():
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)

    def loss_fn(m, batch, epoch):
        loss = m(batch).sum()
        return (loss * float("nan") if epoch == 1 and batch[0, 0] == 3 else loss), {}

    batches = [torch.full((1, 2), float(i)) for i in range(5)]
    with pytest.raises(NonFiniteLossError, match=r"epoch 2 .*batch 3"):
        fit(model, batches, loss_fn, opt, 3, progress=False)


def test_binary_auc_rank_formula():
    assert binary_auc(torch.tensor([0.1, 0.4, 0.35, 0.8]), torch.tensor([0, 0, 1, 1])) == 0.75
    assert binary_auc([0.5, 0.5], [0, 1]) == 0.5  # a tie counts one half
    assert math.isnan(binary_auc([0.1, 0.2], [1, 1]))


def test_evaluate_counts_and_missing_class():
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    target = torch.tensor([0, 0, 0])
    metrics = evaluate(torch.nn.Identity(), [(logits, target)], lambda m, b: b)
    assert metrics["accuracy"] == pytest.approx(2 / 3)
    assert metrics["support"] == [3, 0] and metrics["predicted"] == [2, 1]
    assert metrics["confusion"] == [[2, 1], [0, 0]]
    assert metrics["auc"] is None
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, target).item())


def test_seed_everything_generator_device(monkeypatch):
    """The generator lives on the device asked for; by default on config.default_device()."""
    gen = seed_everything(0, "cpu")
    assert gen.device.type == "cpu"
    assert seed_everything(0, torch.device("cpu")).device.type == "cpu"
    assert seed_everything(0).device.type == default_device().type
    monkeypatch.setattr("zoomin_lib.train.loop.default_device", lambda: torch.device("cpu"))
    assert seed_everything(0).device.type == "cpu"


def test_seed_everything_is_reproducible():
    g1 = seed_everything(5, "cpu")
    a = (torch.rand(3), torch.rand(2, generator=g1))
    g2 = seed_everything(5, "cpu")
    b = (torch.rand(3), torch.rand(2, generator=g2))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_atomic_dir_is_all_or_nothing(tmp_path):
    """A folder written through atomic_dir appears whole on success and not at all on error."""
    import pytest

    from zoomin_lib.infra.io import atomic_dir

    target = tmp_path / "prepared"
    with pytest.raises(RuntimeError):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("x")
            raise RuntimeError("interrupted")
    assert not target.exists() and list(tmp_path.iterdir()) == []
    with atomic_dir(target) as tmp:
        (tmp / "a.txt").write_text("1")
    with atomic_dir(target) as tmp:  # replacing a complete folder
        (tmp / "b.txt").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["prepared"]
