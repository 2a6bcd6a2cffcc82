"""Every chapter is a Jupytext source notebooks/NN_name.py with a paired, output-free .ipynb.

The notebooks themselves are executed by nbval (``pytest notebooks --nbval-lax``, see
scripts/test.sh); this file only checks that the pair is in sync and follows the conventions.
"""

from __future__ import annotations

import ast
from pathlib import Path

import jupytext
import nbformat
import pytest

from zoomin_lib.infra.config import repo_root

NOTEBOOKS = repo_root(Path(__file__).parent) / "notebooks"
SOURCES = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.py"))
IPYNBS = sorted(NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))


def _code(nb: nbformat.NotebookNode) -> list[str]:
    """The sources of the code cells, trailing blank lines ignored."""
    return [c.source.rstrip() for c in nb.cells if c.cell_type == "code"]


def _first_assigned_name(source: str) -> str | None:
    """The name bound by the first assignment statement of a cell (imports do not count)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name):
            return node.targets[0].id
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            return node.target.id
        if isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            return None
    return None


def _check_parameters_cell(nb: nbformat.NotebookNode, where: str) -> None:
    """There is exactly one cell tagged `parameters` and its first assignment is `profile`."""
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{where}: expected one cell tagged 'parameters', found {len(cells)}"
    assert cells[0].cell_type == "code", f"{where}: the 'parameters' cell must be a code cell"
    name = _first_assigned_name(cells[0].source)
    assert name == "profile", f"{where}: the parameters cell must assign `profile` first, not {name!r}"


@pytest.mark.parametrize("py", SOURCES, ids=[p.stem for p in SOURCES])
def test_source_has_paired_ipynb_in_sync(py: Path) -> None:
    ipynb = py.with_suffix(".ipynb")
    assert ipynb.is_file(), f"{ipynb.name} missing: run `jupytext --sync notebooks/{py.name}`"
    source = jupytext.read(py, fmt="py:percent")
    paired = nbformat.read(ipynb, as_version=4)
    assert _code(paired) == _code(source), (
        f"{ipynb.name} is out of sync with {py.name}: run `jupytext --sync notebooks/{py.name}`"
    )
    _check_parameters_cell(source, py.name)
    _check_parameters_cell(paired, ipynb.name)


@pytest.mark.parametrize("ipynb", IPYNBS, ids=[p.stem for p in IPYNBS])
def test_ipynb_is_committed_without_outputs(ipynb: Path) -> None:
    assert ipynb.with_suffix(".py").is_file(), f"{ipynb.name} has no Jupytext source {ipynb.stem}.py"
    nb = nbformat.read(ipynb, as_version=4)
    dirty = [
        i + 1
        for i, c in enumerate(nb.cells)
        if c.cell_type == "code" and (c.get("outputs") or c.get("execution_count") is not None)
    ]
    assert not dirty, (
        f"{ipynb.name}: cells {dirty} have outputs or execution counts; clear them "
        f"(`jupyter nbconvert --clear-output --inplace` or re-sync from the .py)"
    )
    assert nb.metadata.get("kernelspec", {}).get("language", "python") == "python"


def _toc_chapters() -> list[str]:
    """The `executed/NN_name` entries of book/_toc.yml, as NN_name."""
    import yaml

    toc = yaml.safe_load((NOTEBOOKS.parent / "book" / "_toc.yml").read_text())
    files: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("file"), str):
                files.append(node["file"])
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [f.split("/", 1)[1] for f in files if f.startswith("executed/")]


def test_book_toc_matches_the_notebooks() -> None:
    chapters = _toc_chapters()
    notebooks = sorted({p.stem for p in [*SOURCES, *IPYNBS]})
    if not notebooks:
        pytest.skip("no chapter notebooks yet")
    missing = [c for c in chapters if c not in notebooks]
    assert not missing, f"book/_toc.yml lists chapters with no notebooks/NN_name.py: {missing}"
    unlisted = [n for n in notebooks if n not in chapters]
    assert not unlisted, f"add these to book/_toc.yml as `- file: executed/NN_name`: {unlisted}"
    assert chapters == sorted(chapters), "book/_toc.yml should list the chapters in NN order"


MAX_CELL_LINES = 24  # issue 15: "the longest under 25 lines"


@pytest.mark.parametrize("py", SOURCES, ids=lambda p: p.name)
def test_chapters_read_like_lessons(py: Path) -> None:
    """Every code cell is at most MAX_CELL_LINES lines and follows prose (a markdown cell); the parameters cell excepted."""
    nb = jupytext.read(py)
    problems = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        n = len(cell.source.rstrip().splitlines())
        if n > MAX_CELL_LINES:
            problems.append(f"code cell {i} has {n} lines (at most {MAX_CELL_LINES})")
        if "parameters" not in cell.metadata.get("tags", []) and (i == 0 or nb.cells[i - 1].cell_type != "markdown"):
            problems.append(f"code cell {i} follows no prose")
    assert not problems, f"{py.name}: " + "; ".join(problems)
