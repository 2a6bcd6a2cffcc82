"""The layers hold themselves: no module imports upward, no import cycle, no private name crosses a module border.

The layers (ARCHITECTURE.md), each importing only those listed for it:

    core (zoomin_lib/*.py)  <  infra  <  beyond  <  data_prep, train, theory  <  wsi  <  bench, book  <  chapters, cli

data_prep builds on the core and infra alone; only `zoomin_lib.chapters` and the command line import
data_prep. Imports anywhere in a file count, also inside functions.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from zoomin_lib.book.imports import imports_of, project_modules, targets

ROOT = Path(__file__).resolve().parent.parent
CORE, ALL = "core", ("core", "infra", "beyond", "data_prep", "train", "theory", "wsi", "bench", "book", "chapters",
                     "cli")
MAY_IMPORT = {
    "core": {"core"},
    "infra": {"core", "infra"},
    "beyond": {"core", "infra", "beyond"},
    "data_prep": {"core", "infra", "data_prep"},
    "train": {"core", "infra", "beyond", "train"},
    "theory": {"core", "infra", "beyond", "theory"},
    "wsi": {"core", "infra", "beyond", "train", "wsi"},
    "bench": {"core", "infra", "beyond", "train", "theory", "wsi", "bench"},
    "book": {"core", "infra", "beyond", "train", "theory", "wsi", "book"},
    "chapters": set(ALL) - {"cli"},
    "cli": set(ALL),
}


def layer(module: str) -> str:
    """The layer of a module of zoomin_lib or data_prep."""
    parts = module.split(".")
    if parts[0] == "data_prep":
        return "data_prep"
    if len(parts) == 1 or parts[1] in ("__main__",):
        return "cli" if parts[-1] == "__main__" else CORE
    return parts[1] if parts[1] in MAY_IMPORT else CORE


def violations(root: Path) -> list[str]:
    """Every upward import, private name imported from another module, and import cycle under root."""
    modules = project_modules(root)
    graph: dict[str, set[str]] = {m: set() for m in modules}
    found = []
    for module, path in modules.items():
        for target, names, line in imports_of(path, module):
            for t in targets(target, names, modules):  # `from zoomin_lib import builders` reaches a module
                if layer(t) not in MAY_IMPORT[layer(module)]:
                    found.append(f"{path.relative_to(root)}:{line}: {layer(module)} module {module} imports "
                                 f"{layer(t)} module {t} (upward)")
                if t != module and t != module.rpartition(".")[0]:
                    graph[module].add(t)
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    found.append(f"{path.relative_to(root)}:{line}: {module} imports the private name {n} of {target}")
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                found.append("import cycle: " + " -> ".join(stack[stack.index(t):] + [t]))
            elif t not in state:
                visit(t, stack + [t])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])
    return found


def test_the_project_keeps_its_layers():
    assert violations(ROOT) == []


@pytest.mark.parametrize("source, expected", [
    ("from zoomin_lib.wsi.reader import SlideReader\n", "upward"),  # the core reaching for a wing
    ("from data_prep.colon_cancer import load_colon_cancer\n", "upward"),  # the core reaching for data_prep
    ("from zoomin_lib.models import _check_mode\n", "private name"),
])
def test_an_upward_import_a_private_name_and_a_cycle_are_caught(tmp_path: Path, source: str, expected: str):
    """A small tree in the project's shape, with one deliberate offence: the checker names it."""
    for rel in ("zoomin_lib/__init__.py", "zoomin_lib/models.py", "zoomin_lib/wsi/__init__.py", "zoomin_lib/wsi/reader.py",
                "data_prep/__init__.py", "data_prep/colon_cancer.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("from zoomin_lib.models import ZoomInNet\n" if rel.endswith("reader.py") else "")
    (tmp_path / "zoomin_lib/geometry.py").write_text(source)
    assert violations(tmp_path) == [] or True  # shape check below
    found = violations(tmp_path)
    assert len(found) == 1 and expected in found[0] and "geometry.py" in found[0], found
    (tmp_path / "zoomin_lib/geometry.py").write_text("")
    (tmp_path / "zoomin_lib/sampling.py").write_text("import zoomin_lib.pixels\n")
    (tmp_path / "zoomin_lib/pixels.py").write_text("from zoomin_lib.sampling import draw\n")
    assert any("import cycle" in v for v in violations(tmp_path))


def test_the_core_imports_without_data_prep_or_wings():
    """`import zoomin_lib, zoomin_lib.models` with data_prep absent loads no wing."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['data_prep'] = None; import zoomin_lib, zoomin_lib.models; "
            "wings = sorted(m for m in sys.modules if m.startswith('zoomin_lib.') and m.count('.') > 1 or "
            "m.split('.')[1:2] and m.split('.')[1] in ('infra', 'train', 'theory', 'wsi', 'book', 'chapters', 'bench')); "
            "print(wings); assert not wings")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr + out.stdout
