"""Tests of zoomin_lib.book.runner on tiny notebooks written into tmp_path (about 2 s of kernels)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from zoomin_lib.book import runner
from zoomin_lib.infra.config import repo_root

OK_PY = '''# %% [markdown]
# # A notebook that passes

# %% tags=["parameters"]
profile = "cpu"

# %%
import os
print(f"profile={profile} env={os.environ['ZOOMIN_PROFILE']}")
'''


def _failing_notebook(path: Path) -> Path:
    """A notebook whose 4th cell raises, with a parameters cell."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    params = nbformat.v4.new_code_cell('profile = "cpu"')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A notebook that fails"),
        params,
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("\n# the claim\nassert x == 2, f'x is {x} under {profile}'\ny = 3"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    nbformat.write(nb, path)
    return path


def test_discover_notebooks_sorted_and_includes_py_only(tmp_path: Path) -> None:
    for name in ["02_b.ipynb", "02_b.py", "01_a.ipynb", "03_c.py", "scratch.ipynb", "1_x.ipynb"]:
        (tmp_path / name).write_text("{}")
    found = runner.discover_notebooks(tmp_path)
    assert [p.name for p in found] == ["01_a.ipynb", "02_b.ipynb", "03_c.ipynb"]


def test_sync_from_source_only_when_py_is_newer(tmp_path: Path) -> None:
    py = tmp_path / "01_ok.py"
    py.write_text(OK_PY)
    ipynb = py.with_suffix(".ipynb")
    assert runner.sync_from_source(ipynb)  # .ipynb missing: created from the .py
    nb = nbformat.read(ipynb, as_version=4)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    assert [c.metadata.get("tags") for c in nb.cells if c.cell_type == "code"][0] == ["parameters"]
    assert not runner.sync_from_source(ipynb)  # up to date: untouched
    py.write_text(OK_PY.replace('profile = "cpu"', 'profile = "cpu"\nseed = 0'))
    os.utime(py, (ipynb.stat().st_mtime + 5,) * 2)
    assert runner.sync_from_source(ipynb)
    assert "seed = 0" in nbformat.read(ipynb, as_version=4).cells[1].source


def test_cli_runs_passing_and_reports_failing_notebook(tmp_path: Path) -> None:
    (tmp_path / "01_ok.py").write_text(OK_PY)  # only the Jupytext source: the runner pairs it
    bad = _failing_notebook(tmp_path / "02_bad.ipynb")
    out = tmp_path / "executed"
    out.mkdir()
    (out / ".01_ok.k1ll3d.ipynb").write_text("{}")  # the temporary file of an earlier run that was killed
    env = {k: v for k, v in os.environ.items() if k != "ZOOMIN_PROFILE"}
    proc = subprocess.run(
        [sys.executable, "-m", "zoomin_lib.book.runner", "--profile", "smoke", "--out", str(out),
         "--no-progress", str(tmp_path / "01_ok.py"), str(bad)],
        cwd=repo_root(Path(__file__).parent), env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr

    # the passing notebook: executed atomically into OUT with the injected profile
    executed = nbformat.read(out / "01_ok.ipynb", as_version=4)
    injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
    assert len(injected) == 1 and 'profile = "smoke"' in injected[0].source
    printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
    assert "profile=smoke env=smoke" in printed
    assert not list(out.glob(".*"))  # no temporary files left behind, not even a killed run's

    # the failing one: named with its cell number, first line and exception
    summary_text = proc.stdout
    assert "1 notebook(s) FAILED" in summary_text
    assert "02_bad.ipynb: cell 4" in summary_text
    assert "`# the claim`" in summary_text
    assert "AssertionError: x is 1 under smoke" in summary_text
    assert (out / "02_bad.failed.ipynb").is_file() and not (out / "02_bad.ipynb").exists()

    summary = json.loads((out / runner.SUMMARY_NAME).read_text())
    assert summary["profile"] == "smoke" and summary["ok"] is False
    by_name = {n["name"]: n for n in summary["notebooks"]}
    assert by_name["01_ok"]["status"] == "ok" and by_name["01_ok"]["synced"] is True
    assert by_name["02_bad"]["status"] == "failed"
    assert by_name["02_bad"]["error"]["cell"] == 4
    assert by_name["02_bad"]["error"]["ename"] == "AssertionError"
    assert all(n["seconds"] > 0 for n in summary["notebooks"])


def test_fail_fast_skips_the_rest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOOMIN_PROFILE", "cpu")  # run_notebooks sets it for the kernel
    bad = _failing_notebook(tmp_path / "01_bad.ipynb")
    (tmp_path / "02_ok.py").write_text(OK_PY)
    results = runner.run_notebooks(
        [bad, tmp_path / "02_ok.ipynb"], tmp_path / "out", "smoke", fail_fast=True, progress_bar=False
    )
    assert [r.status for r in results] == ["failed", "skipped"]
    assert results[0].error is not None and results[0].error.first_line == "# the claim"
    table = runner.format_summary(results)
    assert "skipped after the first failure" in table and "01_bad" in table


def test_cell_timeout_is_reported_as_a_timeout(tmp_path: Path) -> None:
    """A cell past the timeout is named with its number and first line and 'timed out after N s'."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell("# A notebook that hangs"),
        nbformat.v4.new_code_cell("x = 1"),
        nbformat.v4.new_code_cell("# sleep past the timeout\nimport time\ntime.sleep(60)"),
        nbformat.v4.new_code_cell("print('never reached')"),
    ]
    path = tmp_path / "01_slow.ipynb"
    nbformat.write(nb, path)
    result = runner.execute_notebook(path, tmp_path / "out", "smoke", cwd=tmp_path, progress_bar=False, timeout=2)
    assert result.status == "failed" and result.seconds < 30
    error = result.error
    assert error is not None and error.cell == 3 and error.first_line == "# sleep past the timeout"
    assert error.ename == "CellTimeoutError" and error.evalue == "timed out after 2 s"
    assert "cell 3" in error.describe() and "KeyboardInterrupt" not in error.describe()

    # however the timeout is wrapped, it is recognised; N comes from nbclient's message
    from nbclient.exceptions import CellTimeoutError

    try:
        try:
            raise CellTimeoutError("A cell timed out while it was being executed, after 2 seconds.")
        except CellTimeoutError as inner:
            raise RuntimeError("papermill gave up") from inner
    except RuntimeError as wrapped:
        located = runner.locate_error(tmp_path / "out" / "01_slow.failed.ipynb", wrapped)
    assert (located.cell, located.evalue) == (3, "timed out after 2 s")


def test_unknown_profile_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown profile"):
        runner.run_notebooks([], tmp_path, "tpu")


CHATTY_PY = '''# %% tags=["parameters"]
profile = "cpu"

# %%
import sys
import torch
from zoomin_lib.geometry import view_size
from zoomin_lib.infra.progress import tqdm
print("IProgress not found. Please update jupyter and ipywidgets.", file=sys.stderr)
print("USDT:2026-12-04 profiler_start", file=sys.stderr)
for _ in tqdm(range(30), desc="epochs", mininterval=0):
    pass
print("result", view_size((300, 300), 1 / 3))
torch.manual_seed(0)
'''


def test_pages_are_clean_and_an_unchanged_chapter_is_cached(tmp_path: Path, monkeypatch) -> None:
    """No chatter, no `<torch.` repr, one line for the bar; a second run reuses the copy until a file it imports changes."""
    root = tmp_path / "repo"
    root.mkdir()
    for pkg in ("zoomin_lib", "data_prep"):  # a copy of the project's sources: the cache key reads them
        subprocess.run(["cp", "-r", str(repo_root() / pkg), str(root / pkg)], check=True)
    (root / "notebooks").mkdir()
    nb = root / "notebooks" / "01_chatty.py"
    nb.write_text(CHATTY_PY)
    monkeypatch.setattr(runner, "repo_root", lambda *a: root)
    out = root / "executed"
    first = runner.run_notebooks([nb], out, "smoke", progress_bar=False)
    assert first[0].status == "ok", first[0].error and first[0].error.describe()
    outputs = [o for c in json.loads((out / "01_chatty.ipynb").read_text())["cells"] for o in c.get("outputs", [])]
    shown = json.dumps(outputs)
    assert "IProgress" not in shown and "USDT" not in shown and "profiler_start" not in shown and "<torch." not in shown
    streams = "".join("".join(o["text"]) for o in outputs if o["output_type"] == "stream")
    assert streams.count("epochs") == 1 and "30/30" in streams and "result (100, 100)" in streams
    assert runner.run_notebooks([nb], out, "smoke", progress_bar=False)[0].status == "cached"
    assert runner.run_notebooks([nb], out, "cpu", progress_bar=False)[0].status == "ok"  # another profile
    (root / "zoomin_lib" / "chapters" / "results.py").write_text("# not imported by the chapter\n")
    assert runner.run_notebooks([nb], out, "cpu", progress_bar=False)[0].status == "cached"
    geometry = root / "zoomin_lib" / "geometry.py"
    geometry.write_text(geometry.read_text() + "\n# a change the chapter reaches\n")
    assert runner.run_notebooks([nb], out, "cpu", progress_bar=False)[0].status == "ok"


def test_budgets_are_read_per_profile(tmp_path: Path) -> None:
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "budgets.json").write_text(json.dumps({"cpu": {"03_x": 1.5}}))
    assert runner.budgets("cpu", tmp_path) == {"03_x": 90.0} and runner.budgets("smoke", tmp_path) == {}


def test_two_at_once_start_with_the_longest_budgets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = ["01_a", "02_b", "03_c", "04_no_budget", "05_d"]
    limits = {"01_a": 60.0, "02_b": 600.0, "03_c": 120.0, "05_d": 120.0}
    assert [names[i] for i in runner.longest_first(names, limits)] == ["04_no_budget", "02_b", "03_c", "05_d", "01_a"]
    monkeypatch.setattr(runner, "execute_notebook",
                        lambda nb, out, profile, **kw: runner.NotebookResult(Path(nb).stem, str(nb), "ok"))
    monkeypatch.setattr(runner, "budgets", lambda profile: limits)
    results = runner.run_notebooks([tmp_path / f"{n}.ipynb" for n in names], tmp_path / "out", "smoke",
                                   progress_bar=False, jobs=2)
    assert [r.name for r in results] == names  # reported in the given order
