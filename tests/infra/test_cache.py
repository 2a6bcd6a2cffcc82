"""infra.cache: one folder per parameters, written once, rewritten when its writer was killed or its record differs."""

from __future__ import annotations

from pathlib import Path

from zoomin_lib.infra.cache import RECORD, stand_in, stand_in_key
from zoomin_lib.infra.io import atomic_dir


def _writer(calls: list):
    def write(folder: Path) -> None:
        calls.append(folder)
        with atomic_dir(folder) as tmp:
            (tmp / "data.txt").write_text("x")

    return write


def test_written_once_per_parameters_and_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    calls: list = []
    a = stand_in("toy", {"n": 2, "sizes": (3, 4)}, _writer(calls))
    assert a == tmp_path / "toy" / stand_in_key({"n": 2, "sizes": [3, 4]}) and (a / "data.txt").is_file()
    assert stand_in("toy", {"sizes": (3, 4), "n": 2}, _writer(calls)) == a and len(calls) == 1  # order and tuples aside
    b = stand_in("toy", {"n": 3, "sizes": (3, 4)}, _writer(calls))
    assert b != a and b.parent == a.parent and len(calls) == 2 and (a / "data.txt").is_file()


def test_a_folder_without_its_record_or_with_a_broken_one_is_written_again(tmp_path):
    calls: list = []
    a = stand_in("toy", {"n": 1}, _writer(calls), base=tmp_path)
    (a / RECORD).unlink()  # as if the writer had been killed after publishing the data, before the record
    assert stand_in("toy", {"n": 1}, _writer(calls), base=tmp_path) == a and len(calls) == 2
    (a / RECORD).write_text("{broken")
    stand_in("toy", {"n": 1}, _writer(calls), base=tmp_path)
    assert len(calls) == 3
