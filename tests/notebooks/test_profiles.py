"""Every chapter has settings for each profile (smoke, cpu, gpu, paper), and gpu has exactly cpu's keys.

Only the cells before a chapter's opening run here (its parameters, imports and settings cells), so the
test takes seconds: nothing is trained and no data set is generated. The runner's and the command line's
`--profile` take `gpu` too.
"""

from __future__ import annotations

import ast
import dataclasses
from pathlib import Path
from typing import Any

import pytest

from zoomin_lib.book import runner
from zoomin_lib.cli import parser as cli_parser
from zoomin_lib.cli.settings import resolve
from zoomin_lib.infra.config import PROFILES, check_profile

ROOT = Path(__file__).resolve().parents[2]
CHAPTERS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.py"))
NAMES = {"smoke": "SMOKE", "cpu": "CPU", "gpu": "GPU", "paper": "PAPER"}


def code_cells(path: Path) -> list[str]:
    """The code cells of a Jupytext percent-format file, in order (markdown cells left out)."""
    cells: list[tuple[str, list[str]]] = []
    for line in path.read_text().splitlines():
        if line.startswith("# %%"):
            cells.append((line, []))
        elif cells:
            cells[-1][1].append(line)
    return ["\n".join(body) for head, body in cells if "[markdown]" not in head]


def opening(path: Path) -> tuple[dict[str, Any], ast.Call]:
    """The namespace after the cells before the opening cell, and the opening's `open_chapter(...)` call."""
    cells = code_cells(path)
    at = next(i for i, cell in enumerate(cells) if "open_chapter(" in cell)
    namespace: dict[str, Any] = {"__name__": f"settings_of_{path.stem}"}
    for cell in cells[:at]:
        exec(compile(cell, str(path), "exec"), namespace)  # parameters, imports and settings only
    call = next(node for node in ast.walk(ast.parse(cells[at]))
                if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "open_chapter")
    return namespace, call


def key_differences(gpu: Any, cpu: Any, where: str = "") -> list[str]:
    """Where `gpu` and `cpu` differ in keys (dicts) or fields (dataclasses), recursively; values may differ."""
    if isinstance(cpu, dict) or isinstance(gpu, dict):
        if not (isinstance(cpu, dict) and isinstance(gpu, dict)):
            return [f"{where or 'settings'}: a dict in one profile only ({type(gpu).__name__} vs {type(cpu).__name__})"]
        diffs = [f"{where}{k}: only in gpu" for k in gpu.keys() - cpu.keys()]
        diffs += [f"{where}{k}: only in cpu" for k in cpu.keys() - gpu.keys()]
        for k in gpu.keys() & cpu.keys():
            diffs += key_differences(gpu[k], cpu[k], f"{where}{k}.")
        return diffs
    if dataclasses.is_dataclass(cpu) or dataclasses.is_dataclass(gpu):
        if type(cpu) is not type(gpu):
            return [f"{where or 'settings'}: {type(gpu).__name__} in gpu, {type(cpu).__name__} in cpu"]
        return [d for f in dataclasses.fields(cpu)
                for d in key_differences(getattr(gpu, f.name), getattr(cpu, f.name), f"{where}{f.name}.")]
    return []


def test_every_chapter_is_found() -> None:
    assert len(CHAPTERS) == 10


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_has_every_profile_and_gpu_has_cpus_keys(path: Path) -> None:
    namespace, call = opening(path)
    for profile, name in NAMES.items():
        assert isinstance(namespace.get(name), dict), f"{path.name}: no {name} = dict(...) settings cell ({profile})"
    assert not key_differences(namespace["GPU"], namespace["CPU"]), key_differences(namespace["GPU"], namespace["CPU"])
    settings = call.args[1]
    assert isinstance(settings, ast.Dict), f"{path.name}: open_chapter's settings are not a literal dict"
    passed = {ast.literal_eval(k): getattr(v, "id", None) for k, v in zip(settings.keys, settings.values)}
    assert passed == NAMES, f"{path.name}: open_chapter gets {passed}, expected {NAMES}"
    assert tuple(passed) == PROFILES


def test_key_differences_sees_nested_keys_and_dataclass_fields() -> None:
    @dataclasses.dataclass
    class Setup:
        a: int
        b: dict

    assert not key_differences(dict(x=1, s=Setup(1, {"k": 1})), dict(x=2, s=Setup(3, {"k": 5})))
    assert key_differences(dict(x=1, s=Setup(1, {"k": 1})), dict(x=1, s=Setup(1, {"j": 1})))
    assert key_differences(dict(x=1, y=2), dict(x=1)) and key_differences(dict(x=None), dict(x={"k": 1}))


def test_gpu_is_a_profile() -> None:
    assert PROFILES == ("smoke", "cpu", "gpu", "paper")
    assert check_profile("gpu") == "gpu"
    with pytest.raises(ValueError, match="smoke, cpu, gpu, paper"):
        check_profile("tpu")


def test_runner_takes_the_gpu_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = []
    monkeypatch.setattr(runner, "run_notebooks", lambda notebooks, out, profile, **kw: seen.append(profile) or [])
    assert runner.main(["--profile", "gpu", "--out", str(tmp_path), "notebooks/01_eq8_proof_check.ipynb"]) == 0
    assert seen == ["gpu"]
    with pytest.raises(SystemExit):
        runner.main(["--profile", "tpu", "--out", str(tmp_path), "notebooks/01_eq8_proof_check.ipynb"])


def test_command_line_takes_the_gpu_profile() -> None:
    args = cli_parser().parse_args(["train", "--data-dir", "d", "--out", "o", "--profile", "gpu"])
    assert args.profile == "gpu" and resolve("gpu")["n"] == 100
    assert cli_parser().parse_args(["stand-in", "out", "--profile", "gpu"]).profile == "gpu"


def profile_lookups(source: str) -> list[str]:
    """Per-profile values chosen outside the settings cells: a subscript `X[profile]` (or `X.get(profile)`)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Subscript) and getattr(node.slice, "id", None) == "profile":
            found.append(ast.unparse(node)[:60])
        if (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "get" and node.args
                and getattr(node.args[0], "id", None) == "profile"):
            found.append(ast.unparse(node)[:60])
    return found


@pytest.mark.parametrize("path", CHAPTERS, ids=lambda p: p.stem)
def test_settings_live_only_in_the_settings_cells(path: Path) -> None:
    """A value chosen by profile later in a chapter (e.g. `{"smoke": ..., "cpu": ...}[profile]`) can miss a profile
    that the settings cells have, and fails only halfway through a run: every such value belongs in SMOKE ... PAPER."""
    lookups = [hit for cell in code_cells(path) for hit in profile_lookups(cell)]
    assert not lookups, f"{path.name} picks values by profile outside its settings cells: {lookups}"


def test_profile_lookups_are_found() -> None:
    assert profile_lookups('A = {"smoke": 1, "cpu": 2}[profile]') == ["{'smoke': 1, 'cpu': 2}[profile]"]
    assert profile_lookups("b = table.get(profile, 3)") and not profile_lookups("c = cfg['n'] + len(profile)")
