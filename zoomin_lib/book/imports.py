"""The project's import graph, read from the sources (no import is executed): which module uses which.

`project_modules` maps every module of `zoomin_lib` and `data_prep` to its file; `imports_of` lists a
file's imports of those packages (anywhere in the file, relative ones resolved); `targets` says which
modules an import statement reaches (`from zoomin_lib import builders` reaches the module
`zoomin_lib.builders`); `closure` is everything a set of modules uses, transitively, with the
`__init__` of every package on the way. The architecture test checks the layers on this graph, and
the book's runner keys its cache of executed chapters on the files a chapter reaches.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

__all__ = ["PACKAGES", "project_modules", "imports_of", "targets", "closure"]

PACKAGES = ("zoomin_lib", "data_prep")


def _module_name(path: Path, root: Path) -> str:
    """'zoomin_lib.wsi.reader' for root/zoomin_lib/wsi/reader.py; a package's `__init__` is the package."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def project_modules(root: str | Path) -> dict[str, Path]:
    """Every module of the project's packages under `root`: name -> file."""
    root = Path(root)
    return {_module_name(p, root): p for pkg in PACKAGES if (root / pkg).is_dir() for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(path: str | Path, module: str | None = None) -> list[tuple[str, list[str], int]]:
    """(module, imported names, line) of every import of the project's packages in the file (relative ones need `module`)."""
    path = Path(path)
    package = "" if module is None else (module if path.name == "__init__.py" else module.rpartition(".")[0])
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            out.append((base, [a.name for a in node.names], node.lineno))
    return [(m, names, line) for m, names, line in out if m.split(".")[0] in PACKAGES]


def targets(module: str, names: Iterable[str], modules: dict[str, Path]) -> list[str]:
    """The project modules an import of `names` from `module` reaches (a name may be a module itself)."""
    reached = [f"{module}.{n}" if f"{module}.{n}" in modules else module for n in names] or [module]
    return [m for m in dict.fromkeys(reached) if m in modules]


def closure(start: Iterable[str], modules: dict[str, Path]) -> set[str]:
    """The modules `start` uses, transitively, with the packages' `__init__` modules on the way."""
    seen: set[str] = set()
    todo = [m for m in start if m in modules]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:k]) for k in range(1, len(parts)) if ".".join(parts[:k]) in modules]
        for target, names, _ in imports_of(modules[m], m):
            todo += targets(target, names, modules)
    return seen
