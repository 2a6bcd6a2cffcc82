"""Checkpoints record the settings that shape training; resuming with other ones is refused, naming each difference.

The issue's case: an 8-epoch cosine run, then `epochs=10, lr=1e-4` with resume=True, which used to
reuse the old checkpoint silently and train epochs 9-10 at learning rate 0.0.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from zoomin_lib import builders
from zoomin_lib.train.checkpoints import settings_differences
from zoomin_lib.train.fingerprint import fingerprint
from zoomin_lib.train.loop import CheckpointMismatchError, settings_record
from zoomin_lib.train.protocol import TrainSettings, run_folds, run_method, tensor_batches


def _data(n: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 16, 16, generator=gen), torch.arange(n) % 2


def _cnn() -> torch.nn.Module:
    return builders.cnn(in_channels=1, n_classes=2, channels=4, n_conv=2)


def _run(tmp_path, settings: TrainSettings, resume: bool, data=None, record=None, factory=_cnn):
    x, y = _data() if data is None else data
    return run_method("CNN", factory, settings, tensor_batches(x, y, 4, seed=0), [(x, y)], run_seed=0,
                      tag="CNN_r0_f0", out_dir=tmp_path, resume=resume,
                      record={"data": fingerprint(x, y), **(record or {})})


def _interrupted(tmp_path, settings: TrainSettings, after: int) -> None:
    """Train `settings` but stop (as a killed process would) once `after` epochs are checkpointed."""
    batches = tensor_batches(*_data(), 4, seed=0)

    def dying(epoch: int):
        if epoch == after:
            raise KeyboardInterrupt
        return batches(epoch)

    with pytest.raises(KeyboardInterrupt):
        run_method("CNN", _cnn, settings, dying, [_data()], run_seed=0, tag="CNN_r0_f0", out_dir=tmp_path,
                   resume=False, record={"data": fingerprint(*_data())})


COSINE_8 = TrainSettings(epochs=8, batch_size=4, lr=3e-3, cosine_decay=True, contrastive=False)


def test_resuming_with_other_epochs_and_lr_is_refused_naming_each_difference(tmp_path):
    """The issue's case: an 8-epoch cosine run, then epochs=10, lr=1e-4: refused, and the checkpoint is left as it was."""
    _run(tmp_path, COSINE_8, resume=False)
    ckpt = tmp_path / "checkpoints" / "CNN_r0_f0.pt"
    before = ckpt.read_bytes()
    changed = TrainSettings(epochs=10, batch_size=4, lr=1e-4, cosine_decay=True, contrastive=False)
    with pytest.raises(CheckpointMismatchError) as info:
        _run(tmp_path, changed, resume=True)
    message = str(info.value)
    assert str(ckpt) in message
    for line in ("epochs: checkpoint 8, now 10", "optimizer.lr: checkpoint 0.003, now 0.0001",
                 "scheduler.T_max: checkpoint 8, now 10", "training.epochs: checkpoint 8, now 10",
                 "training.lr: checkpoint 0.003, now 0.0001"):
        assert line in message
    assert "resume=False" in message  # how to start afresh
    assert ckpt.read_bytes() == before
    # asked to start afresh, the run trains all 10 epochs at the new settings and overwrites the checkpoint
    result, _ = _run(tmp_path, changed, resume=False)
    assert [h["epoch"] for h in result.history] == list(range(1, 11))
    saved = torch.load(ckpt, weights_only=True)
    assert saved["epoch"] == 10 and saved["settings"]["optimizer"]["lr"] == 1e-4
    # and now resuming with the same settings is accepted (nothing left to train)
    again, _ = _run(tmp_path, changed, resume=True)
    assert again.history == result.history


def test_resuming_on_other_data_architecture_or_profile_is_refused(tmp_path):
    """The data fingerprint, the architecture, the method and what the caller records are all checked."""
    _run(tmp_path, COSINE_8, resume=False, record={"profile": "smoke"})
    with pytest.raises(CheckpointMismatchError, match=r"data: checkpoint '[0-9a-f]{16}', now '[0-9a-f]{16}'"):
        _run(tmp_path, COSINE_8, resume=True, data=_data(seed=1), record={"profile": "smoke"})
    with pytest.raises(CheckpointMismatchError, match="profile: checkpoint 'smoke', now 'cpu'"):
        _run(tmp_path, COSINE_8, resume=True, record={"profile": "cpu"})
    wider = lambda: builders.cnn(in_channels=1, n_classes=2, channels=6, n_conv=2)  # noqa: E731
    with pytest.raises(CheckpointMismatchError, match=r"architecture\.parameters: checkpoint"):
        _run(tmp_path, COSINE_8, resume=True, record={"profile": "smoke"}, factory=wider)


def test_resume_after_interruption_with_the_same_settings_is_bit_identical(tmp_path):
    """Interrupted after 3 of 8 epochs, resumed with the same settings: the same weights as an uninterrupted run."""
    straight, model_straight = _run(tmp_path / "straight", COSINE_8, resume=False)
    _interrupted(tmp_path / "resumed", COSINE_8, after=3)
    assert torch.load(tmp_path / "resumed" / "checkpoints" / "CNN_r0_f0.pt", weights_only=True)["epoch"] == 3
    resumed, model_resumed = _run(tmp_path / "resumed", COSINE_8, resume=True)
    for a, b in zip(model_straight.state_dict().values(), model_resumed.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in straight.history]


def test_checkpoint_without_a_settings_record_is_not_resumed(tmp_path):
    """A checkpoint from before checkpoints held settings cannot be checked: refused, saying how to start afresh."""
    _run(tmp_path, COSINE_8, resume=False)
    ckpt = tmp_path / "checkpoints" / "CNN_r0_f0.pt"
    old = torch.load(ckpt, weights_only=True)
    del old["settings"]
    torch.save(old, ckpt)
    with pytest.raises(CheckpointMismatchError, match="records no training settings.*resume=False"):
        _run(tmp_path, COSINE_8, resume=True)


def test_run_folds_records_each_fold_and_refuses_other_folds(tmp_path):
    """run_folds fingerprints the data and the fold's indices: a checkpoint of another split is not resumed."""
    x, y = _data(12)
    fold = lambda train, test: type("F", (), {"repetition": 0, "fold": 0, "train": train, "test": test})  # noqa: E731
    settings = {"CNN": TrainSettings(epochs=1, batch_size=4, lr=1e-3, contrastive=False)}
    run_folds({"CNN": _cnn}, settings, x, y, [fold(np.arange(8), np.arange(8, 12))], out_dir=tmp_path,
              progress=False, record={"profile": "smoke"})
    run_folds({"CNN": _cnn}, settings, x, y, [fold(np.arange(8), np.arange(8, 12))], out_dir=tmp_path,
              progress=False, record={"profile": "smoke"}, resume=True)
    with pytest.raises(CheckpointMismatchError, match="data: checkpoint"):
        run_folds({"CNN": _cnn}, settings, x, y, [fold(np.arange(4, 12), np.arange(4))], out_dir=tmp_path,
                  progress=False, record={"profile": "smoke"}, resume=True)


def test_settings_record_and_differences():
    """The record holds class and hyper-parameters, not progress; differences read '<key>: checkpoint a, now b'."""
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=5)
    record = settings_record(model, opt, 5, sched, extra={"seed": np.int64(3)})
    assert record["optimizer"]["class"] == "Adam" and record["optimizer"]["betas"] == [0.9, 0.999]
    assert record["scheduler"] == {"class": "CosineAnnealingLR", "T_max": 5, "eta_min": 0.0}
    assert record["seed"] == 3 and type(record["seed"]) is int
    assert "foreach" not in record["optimizer"]
    for _ in range(3):
        opt.step()
        sched.step()  # progress changes the lr, not the record
    assert settings_record(model, opt, 5, sched, extra={"seed": 3}) == record
    other = settings_record(torch.nn.Linear(2, 3), torch.optim.SGD(model.parameters(), lr=0.1), 5)
    diffs = settings_differences(record, other)
    assert "optimizer.class: checkpoint 'Adam', now 'SGD'" in diffs
    assert "optimizer.betas: checkpoint [0.9, 0.999], now not set" in diffs
    assert any(d.startswith("scheduler: checkpoint {'class': 'CosineAnnealingLR'") and d.endswith("now None") for d in diffs)
    assert "seed: checkpoint 3, now not set" in diffs
    assert settings_differences(record, record) == []


def test_fingerprint_tells_data_apart():
    """Equal data give equal digests; a changed value, order, dtype or subset gives another."""
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    assert fingerprint(x, [1, 2]) == fingerprint(x.copy(), [1, 2]) == fingerprint(torch.from_numpy(x), [1, 2])
    assert fingerprint(np.int64(3)) == fingerprint(3)
    y = x.copy()
    y[2, 3] += 1
    assert len({fingerprint(x), fingerprint(y), fingerprint(x.astype(np.float64)), fingerprint(x[:2]),
                fingerprint(x, [1, 2]), fingerprint(x, [2, 1])}) == 6
    big = np.zeros(3 * 2**20, dtype=np.float32)
    moved = big.copy()
    moved[1] = 1.0  # off the strided sample: the sum still tells them apart
    assert fingerprint(big) != fingerprint(moved)


def test_extra_terms_enter_the_objective_and_the_record(tmp_path):
    """A constant extra term of 2 adds 2 to every batch's objective (its gradient is 0, so the weights are those
    of the run without it); a checkpoint trained with it is not resumed without it."""
    x, y = _data()
    settings = TrainSettings(epochs=2, batch_size=4, lr=3e-3, contrastive=False)
    two = {"two": lambda model, out, y, extra: torch.tensor(2.0)}
    plain, model_plain = _run(tmp_path / "plain", settings, resume=False)
    result, model = run_method("CNN", _cnn, settings, tensor_batches(x, y, 4, seed=0), [(x, y)], run_seed=0,
                               tag="CNN_r0_f0", out_dir=tmp_path / "two", extra_terms=two,
                               record={"data": fingerprint(x, y)})
    for with_term, without in zip(result.history, plain.history):
        assert with_term["two"] == 2.0 and with_term["total"] == pytest.approx(without["total"] + 2.0)
    for a, b in zip(model_plain.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)
    with pytest.raises(CheckpointMismatchError, match="extra_terms"):
        _run(tmp_path / "two", settings, resume=True)
    boxed = TrainSettings(epochs=1, batch_size=4, lr=3e-3, contrastive=False, box_weight=1.0)
    with pytest.raises(ValueError, match="box_attention"):
        run_method("CNN", _cnn, boxed, tensor_batches(x, y, 4, seed=0), [(x, y)], run_seed=0, tag="CNN_r0_f0",
                   extra_terms={"box_attention": two["two"]})
