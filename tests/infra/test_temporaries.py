"""Temporaries never outlive their writer for long, and what is published has ordinary permissions.

A generator killed outright (SIGKILL) leaves its hidden `.NAME.<host>-<pid>.XXXX.tmp` folder; the
next write of the same target removes it. SIGTERM and exceptions clean up at once. Published
files get 0666 and folders 0777 less the umask (not mkstemp's 0600 / mkdtemp's 0700).
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from data_prep import colon_cancer
from zoomin_lib.infra import io
from zoomin_lib.infra.config import data_dir

REPO = Path(__file__).resolve().parents[2]


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _python(code: str) -> subprocess.Popen:
    """Start `code` in a fresh interpreter that imports this checkout."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(condition, timeout: float = 60.0) -> None:
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_published_folders_and_files_get_ordinary_permissions(tmp_path: Path, umask: int) -> None:
    """atomic_dir's folder and write_json's file follow the umask, not mkdtemp's 0700 / mkstemp's 0600."""
    old = os.umask(umask)
    try:
        with io.atomic_dir(tmp_path / "prepared") as tmp:
            (tmp / "sub").mkdir()
            io.write_json(tmp / "sub" / "a.json", {"a": 1})
        io.write_json(tmp_path / "b.json", [1])
    finally:
        os.umask(old)
    assert _mode(tmp_path / "prepared") == 0o777 & ~umask
    assert _mode(tmp_path / "prepared" / "sub" / "a.json") == 0o666 & ~umask
    assert _mode(tmp_path / "b.json") == 0o666 & ~umask
    assert _hidden(tmp_path) == []


def test_generated_dataset_folder_is_0755(tmp_path: Path) -> None:
    """A generated data set is readable by others (0755 with umask 022), as the issue found it was not (0700)."""
    old = os.umask(0o022)
    try:
        root = colon_cancer.write_synthetic(tmp_path / "colon", n_images=2, size=64)
    finally:
        os.umask(old)
    assert _mode(root) == 0o755
    assert _mode(root / "Classification" / "img1" / "img1_epithelial.mat") == 0o644


def test_sigkilled_generator_leaves_nothing_a_loader_reads_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    """SIGKILL mid-way: the target is absent, a hidden temporary is left; the next generator run removes it."""
    root = tmp_path / "colon"
    proc = _python(f"""
        from data_prep import colon_cancer
        colon_cancer.write_synthetic({str(root)!r}, n_images=400, size=64)
    """)
    try:
        # wait until the generator is writing images into its temporary folder
        _wait_for(lambda: any(tmp_path.glob(".colon.*.tmp/Classification/img3")) or proc.poll() is not None)
        assert proc.poll() is None, proc.communicate()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not root.exists()  # nothing half-written where a loader looks
    left = _hidden(tmp_path)
    assert len(left) == 1 and left[0].startswith(".colon.") and left[0].endswith(".tmp")
    with pytest.raises(FileNotFoundError, match="no such folder|no Classification folder"):
        colon_cancer.load_colon_cancer(root, progress=False)

    colon_cancer.write_synthetic(root, n_images=2, size=64)  # the next run
    assert _hidden(tmp_path) == []
    assert len(colon_cancer.load_colon_cancer(root, progress=False)) == 2


def test_sigterm_inside_atomic_dir_removes_the_temporary(tmp_path: Path) -> None:
    """SIGTERM while a folder is being written: the process exits (143) and leaves no temporary."""
    proc = _python(f"""
        import time
        from pathlib import Path
        from zoomin_lib.infra.io import atomic_dir
        with atomic_dir({str(tmp_path / "target")!r}) as tmp:
            (tmp / "half.txt").write_text("x")
            print("writing", flush=True)
            time.sleep(60)
    """)
    try:
        assert proc.stdout.readline().strip() == "writing"
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143
    assert list(tmp_path.iterdir()) == []


def test_only_temporaries_of_dead_writers_are_removed(tmp_path: Path) -> None:
    """A running writer's temporary (this process) is kept; a dead one's, an old-style one's are removed; another target's are kept."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = io._HOST
    alive = tmp_path / f".data.{host}-{os.getpid()}.abcd1234.tmp"
    gone = tmp_path / f".data.{host}-{dead.pid}.efgh5678.tmp"
    legacy = tmp_path / ".data.x1y2z3_4.tmp"
    other_target = tmp_path / f".data.v2.{host}-{dead.pid}.ijkl9012.tmp"
    foreign = tmp_path / ".data.00000000-1.mnop3456.tmp"  # another machine's, just made
    for p in (alive, gone, legacy, other_target, foreign):
        p.mkdir()
        (p / "f").write_text("x")
    removed = io.remove_stale_temporaries(tmp_path / "data")
    assert sorted(p.name for p in removed) == sorted([gone.name, legacy.name])
    assert alive.is_dir() and other_target.is_dir() and foreign.is_dir()
    assert not gone.exists() and not legacy.exists()
    old = time.time() - io.FOREIGN_STALE_SECONDS - 60
    os.utime(foreign, (old, old))
    assert io.remove_stale_temporaries(tmp_path / "data") == [foreign]


def test_data_dir_removes_what_a_killed_generator_left(tmp_path: Path, monkeypatch) -> None:
    """Asking for a cached data set's folder also clears the dead temporaries beside it."""
    monkeypatch.setenv("ZOOMIN_DATA", str(tmp_path))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".colon_cancer_synthetic.{io._HOST}-{dead.pid}.abcdefgh.tmp"
    stale.mkdir()
    (stale / "Classification").mkdir()
    assert data_dir("colon_cancer_synthetic") == tmp_path / "colon_cancer_synthetic"
    assert _hidden(tmp_path) == []


def test_failed_file_write_leaves_no_temporary(tmp_path: Path) -> None:
    """An exception half-way through writing a file removes its temporary; the target keeps its old content."""
    io.save_torch(tmp_path / "c.pt", {"v": 1})

    def half_then_fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(tmp_path / "c.pt", half_then_fail)
    with pytest.raises(Exception):
        io.save_torch(tmp_path / "c.pt", {"v": lambda: 0})  # a lambda cannot be pickled
    assert _hidden(tmp_path) == []
    import torch

    assert torch.load(tmp_path / "c.pt", weights_only=True) == {"v": 1}
