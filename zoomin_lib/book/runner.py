"""Execute the chapter notebooks with papermill and report what passed, what failed and how long.

    python -m zoomin_lib.book.runner [--profile smoke|cpu|paper] [--out book/executed] [--fail-fast]
                                [notebooks ...]

Without notebook arguments it runs every ``notebooks/NN_name.ipynb`` (and every
``notebooks/NN_name.py`` that has no ``.ipynb`` yet), sorted by name. For each notebook:

1. if the Jupytext source ``NN_name.py`` beside it is newer than the ``.ipynb`` (or the
   ``.ipynb`` is missing), the ``.ipynb`` is regenerated from it (the ``.py`` is the source);
2. papermill executes it (kernel ``python3``, parameters ``{"profile": PROFILE}``, working
   directory the repository root, ``$ZOOMIN_PROFILE`` set to PROFILE for the kernel);
3. the executed copy is written to ``OUT/NN_name.ipynb`` atomically (executed into a temporary
   file, then renamed). A failing notebook leaves ``OUT/NN_name.failed.ipynb`` instead, and any
   older ``OUT/NN_name.ipynb`` is removed so that a stale copy is never rendered.

A summary table (status, seconds and the chapter's budget for the profile, `book/budgets.json`)
is printed at the end and written to ``OUT/_run_summary.json``; each failure names the cell
(number in the ``.ipynb`` and its first source line) and the exception; a cell that ran past
``--timeout`` is reported as "timed out after N s" (not as the KeyboardInterrupt the kernel shows
when it is stopped). The exit status is 0 only if every notebook passed.

Also:

- **Cache.** An executed copy is reused ("cached") when nothing it depends on changed: the key
  (`cache_key`) hashes the profile, the notebook's source, every file of `zoomin_lib` and
  `data_prep` it reaches through its imports (`book.imports.closure`; the stand-ins' parameters
  live there), the packages' data files and the pinned environment. `--no-cache` re-executes.
- **Clean pages.** Kernels run with $ZOOMIN_BATCH set, so progress bars are text
  (`infra.progress`); `clean_outputs` then keeps each bar's last line, drops library chatter
  (profiler and allocator messages, widget hints) and stray object reprs (`<... at 0x...>`).
- **Two at once.** `--jobs 2` runs two notebooks at a time, each kernel with one thread
  (OMP/MKL/torch), which on two cores beats one notebook with two threads for these chapters;
  the chapters with the longest budgets start first, so the build does not end on a long one alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from zoomin_lib.book.imports import closure, imports_of, project_modules, targets
from zoomin_lib.infra.config import PROFILE_ENV, PROFILES, check_profile, repo_root
from zoomin_lib.infra.io import read_json, write_json, write_text
from zoomin_lib.infra.progress import BATCH_ENV

NOTEBOOK_GLOB = "[0-9][0-9]_*"
SUMMARY_NAME = "_run_summary.json"
KERNEL_NAME = "python3"
_SKIP_TAGS = {"injected-parameters", "papermill-error-cell-tag"}
_KERNELSPEC = {"name": KERNEL_NAME, "display_name": "Python 3 (ipykernel)", "language": "python"}


@dataclasses.dataclass
class CellError:
    """Where and how a notebook failed."""

    cell: int | None  # 1-based number of the cell in the source .ipynb (markdown cells count)
    execution_count: int | None
    first_line: str
    ename: str
    evalue: str

    def describe(self) -> str:
        """One line: cell number, its first source line, exception type and message."""
        where = "outside any cell" if self.cell is None else f"cell {self.cell}"
        if self.execution_count is not None:
            where += f" (In [{self.execution_count}])"
        line = f" `{self.first_line}`" if self.first_line else ""
        evalue = self.evalue if len(self.evalue) <= 300 else self.evalue[:297] + "..."
        message = f"{self.ename}: {evalue}" if evalue else self.ename
        return f"{where}{line} -> {message}"


@dataclasses.dataclass
class NotebookResult:
    """The outcome of running one notebook."""

    name: str
    source: str
    status: str  # "ok", "cached", "failed" or "skipped"
    seconds: float = 0.0
    budget_seconds: float | None = None  # the chapter's budget for the profile (book/budgets.json)
    output: str | None = None
    synced: bool = False
    error: CellError | None = None

    def to_json(self) -> dict:
        """A JSON-ready dict of this result."""
        return dataclasses.asdict(self)


def discover_notebooks(folder: str | os.PathLike | None = None) -> list[Path]:
    """Every ``NN_name.ipynb`` in `folder` (default: notebooks/), plus ``NN_name.py`` without one."""
    folder = Path(folder) if folder is not None else repo_root() / "notebooks"
    stems = {p.stem for p in folder.glob(NOTEBOOK_GLOB + ".ipynb")}
    stems |= {p.stem for p in folder.glob(NOTEBOOK_GLOB + ".py")}
    return [folder / f"{stem}.ipynb" for stem in sorted(stems)]


def sync_from_source(notebook: str | os.PathLike, force: bool = False) -> bool:
    """Regenerate `notebook` from its paired Jupytext ``.py`` if that is newer; True if it did."""
    import jupytext
    import nbformat
    from jupytext.combine import combine_inputs_with_outputs

    ipynb = Path(notebook).with_suffix(".ipynb")
    py = ipynb.with_suffix(".py")
    if not py.is_file():
        return False
    if ipynb.is_file() and not force and py.stat().st_mtime <= ipynb.stat().st_mtime:
        return False
    nb = jupytext.read(py, fmt="py:percent")
    if ipynb.is_file():
        nb = combine_inputs_with_outputs(nb, nbformat.read(ipynb, as_version=4), fmt="py:percent")
    nb.metadata.setdefault("kernelspec", dict(_KERNELSPEC))
    text = jupytext.writes(nb, fmt="ipynb")
    text += "" if text.endswith("\n") else "\n"  # as `jupytext --sync` writes it: no spurious diff
    write_text(ipynb, text)  # atomically, ordinary permissions, the temporary removed on any failure
    return True


def _publish(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Give a temporary file the usual permissions (mkstemp makes it 0600), then rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, final)


def _display(path: Path) -> str:
    """`path` relative to the repository root when it lies inside it, else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(repo_root()))
    except ValueError:
        return str(path)


def _first_line(source: str) -> str:
    """The first non-blank line of a cell's source, stripped and shortened."""
    for line in source.splitlines():
        if line.strip():
            line = line.strip()
            return line if len(line) <= 100 else line[:97] + "..."
    return ""


def _strip_ansi(text: str) -> str:
    """Remove terminal colour codes from an exception message."""
    from papermill.exceptions import strip_color

    return strip_color(text)


def _cell_timeout(exc: BaseException) -> BaseException | None:
    """nbclient's CellTimeoutError if it is `exc` or an exception `exc` was raised from or during."""
    from nbclient.exceptions import CellTimeoutError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, CellTimeoutError) or type(current).__name__ == "CellTimeoutError":
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _timeout_message(exc: BaseException, timeout: float | None) -> str:
    """'timed out after N s': N is the configured timeout, else the seconds in the timeout's message."""
    if timeout is None:
        found = re.search(r"after (\d+(?:\.\d+)?) seconds", str(exc))
        timeout = float(found.group(1)) if found else None
    return "timed out" if timeout is None else f"timed out after {timeout:g} s"


def locate_error(
    executed: str | os.PathLike, exc: BaseException, timeout: float | None = None
) -> CellError:
    """Describe the failing cell of an executed notebook, numbered as in the source ``.ipynb``.

    A cell timeout (nbclient's CellTimeoutError, however papermill wraps it) is reported as
    CellTimeoutError "timed out after N s" (N = `timeout` when given) on the cell that the
    kernel interrupted, instead of the KeyboardInterrupt that cell shows.
    """
    import nbformat

    ename = getattr(exc, "ename", type(exc).__name__)
    evalue = _strip_ansi(str(getattr(exc, "evalue", exc))).strip()
    cell_timeout = _cell_timeout(exc)
    timed_out = cell_timeout is not None
    if cell_timeout is not None:
        ename, evalue = "CellTimeoutError", _timeout_message(cell_timeout, timeout)
    try:
        nb = nbformat.read(executed, as_version=4)
    except Exception:  # noqa: BLE001 - e.g. the kernel died before papermill wrote anything
        return CellError(None, None, "", ename, evalue)
    number = 0
    for cell in nb.cells:
        if _SKIP_TAGS & set(cell.get("metadata", {}).get("tags", [])):
            continue  # cells papermill added: injected parameters, error banners
        number += 1
        errors = [
            o
            for o in cell.get("outputs", [])
            if o.get("output_type") == "error"
            and not (o.get("ename") == "SystemExit" and o.get("evalue") in ("", "0"))
        ]
        if errors:
            error = errors[0]
            if timed_out:  # the interrupt that stopped the cell: report the timeout
                return CellError(number, cell.get("execution_count"), _first_line(cell.source), ename, evalue)
            return CellError(
                number,
                cell.get("execution_count"),
                _first_line(cell.source),
                error.get("ename", ename),
                _strip_ansi(error.get("evalue", "")).strip(),
            )
        if cell.get("metadata", {}).get("papermill", {}).get("exception") is True:
            return CellError(number, cell.get("execution_count"), _first_line(cell.source), ename, evalue)
    return CellError(None, None, "", ename, evalue)


# ---------------------------------------------------------------- cache, budgets, clean outputs

_DEPENDENCY_FILES = ("requirements.txt", "constraints.txt", "pyproject.toml")


def cache_key(notebook: str | os.PathLike, profile: str, root: str | os.PathLike | None = None) -> str:
    """SHA-256 of what an executed chapter depends on: profile, source, the project files it reaches, data files, pins."""
    root = Path(root) if root is not None else repo_root()
    notebook = Path(notebook)
    source = notebook.with_suffix(".py") if notebook.with_suffix(".py").is_file() else notebook.with_suffix(".ipynb")
    modules = project_modules(root)
    start = [t for m, names, _ in imports_of(source) for t in targets(m, names, modules)] if source.suffix == ".py" \
        else list(modules)  # no Jupytext source: depend on everything
    files = sorted({modules[m] for m in closure(start, modules)})
    files += sorted(p for pkg in ("zoomin_lib", "data_prep") for p in (root / pkg).rglob("*")
                    if p.is_file() and p.suffix not in (".py", ".pyc"))  # package data (paper tables, ...)
    files += [root / f for f in _DEPENDENCY_FILES if (root / f).is_file()]
    digest = hashlib.sha256(f"profile={profile}\n".encode())
    for f in [source, *files]:
        digest.update(str(Path(f).relative_to(root) if Path(f).is_relative_to(root) else f).encode() + b"\0")
        digest.update(Path(f).read_bytes() + b"\0")
    return digest.hexdigest()


def budgets(profile: str, root: str | os.PathLike | None = None) -> dict[str, float]:
    """Each chapter's budget in seconds for `profile`, from book/budgets.json (minutes); {} without one."""
    path = (Path(root) if root is not None else repo_root()) / "book" / "budgets.json"
    if not path.is_file():
        return {}
    return {name: 60.0 * float(minutes) for name, minutes in read_json(path).get(profile, {}).items()}


def longest_first(names: list[str], limits: dict[str, float]) -> list[int]:
    """Indices of `names` by decreasing budget (none: first), ties in the given order: the order to start them in."""
    return sorted(range(len(names)), key=lambda i: -limits.get(names[i], float("inf")))


_CHATTER = re.compile(r"IProgress not found|update jupyter and ipywidgets|USDT:|profiler_(start|stop)|"
                      r"CPUAllocator\.cpp|Memory block of unknown size|TqdmExperimentalWarning|"
                      r"from \.autonotebook import tqdm")
_GLUED = re.compile(r"(\])(?=[^\n\]]*?\d{1,3}%\|)")  # one bar's "[time]" run straight into the next bar
_BAR = re.compile(r"^(?P<desc>.*?)(?::\s*)?\s*\d{1,3}%\|.*\|\s*\d+/\d+")
_REPR = re.compile(r"^<[\w.]+(?: [\w.]+)* at 0x[0-9a-fA-F]+>$|^<Figure size [^>]*>$")


def _clean_stream(text: str) -> str:
    """A stream's text without chatter, each progress bar reduced to its last state (where that was printed)."""
    lines = []
    for raw in _GLUED.sub("\\1\n", text).split("\n"):
        line = [part for part in raw.split("\r") if part.strip()][-1] if raw.strip() else raw
        if not _CHATTER.search(line):
            lines.append(line)
    last: dict[str, int] = {}
    for k, line in enumerate(lines):  # the last line of each bar, by its description
        m = _BAR.match(line)
        if m:
            last[m.group("desc")] = k
    keep = [line for k, line in enumerate(lines) if not _BAR.match(line) or last[_BAR.match(line).group("desc")] == k]
    return "\n".join(keep)


def clean_outputs(nb: dict[str, Any]) -> dict[str, Any]:
    """The executed notebook `nb` (nbformat JSON) with clean pages: chatter and stray reprs gone, one line per progress bar."""
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "code":
            continue
        merged: list[dict[str, Any]] = []
        for out in cell.get("outputs", []):  # consecutive writes to one stream are one text
            if merged and out.get("output_type") == "stream" == merged[-1].get("output_type") and \
                    out.get("name") == merged[-1].get("name"):
                merged[-1] = {**merged[-1], "text": "".join(merged[-1]["text"]) + "".join(out.get("text", ""))}
            else:
                merged.append(out)
        outputs = []
        for out in merged:
            if out.get("output_type") == "stream":
                text = _clean_stream("".join(out.get("text", "")))
                if text.strip():
                    outputs.append({**out, "text": text})
                continue
            data = out.get("data", {})
            if out.get("output_type") == "execute_result" and set(data) == {"text/plain"} and \
                    _REPR.match("".join(data["text/plain"]).strip()):
                continue  # `<torch._C.Generator at 0x...>` and the like: nothing for a reader
            outputs.append(out)
        cell["outputs"] = outputs
    return nb


def _clean_file(path: str | os.PathLike) -> None:
    """Rewrite an executed notebook file with `clean_outputs` (in place; the caller publishes it)."""
    nb = json.loads(Path(path).read_text())
    Path(path).write_text(json.dumps(clean_outputs(nb), indent=1, ensure_ascii=False) + "\n")


def execute_notebook(
    notebook: str | os.PathLike,
    out_dir: str | os.PathLike,
    profile: str,
    cwd: str | os.PathLike | None = None,
    progress_bar: bool = True,
    timeout: float | None = None,
    use_cache: bool = True,
) -> NotebookResult:
    """Sync, execute and write one notebook to `out_dir` (or reuse its cached copy); failures are returned, not raised."""
    import papermill

    notebook, out_dir = Path(notebook), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = notebook.stem
    for stale in out_dir.glob(f".{name}.*.ipynb"):  # left by a run that was killed mid-way
        stale.unlink(missing_ok=True)
    result = NotebookResult(name=name, source=_display(notebook), status="failed")
    key_file, final = out_dir / f"{name}.key", out_dir / f"{name}.ipynb"
    key = cache_key(notebook, profile)
    if use_cache and final.is_file() and key_file.is_file() and key_file.read_text().strip() == key:
        result.status, result.output = "cached", _display(final)
        return result
    key_file.unlink(missing_ok=True)
    start = time.perf_counter()
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".ipynb", dir=out_dir)
    os.close(fd)
    try:
        result.synced = sync_from_source(notebook)
        if not notebook.is_file():
            raise FileNotFoundError(f"{notebook} (and no paired .py)")
        papermill.execute_notebook(
            str(notebook),
            tmp,
            parameters={"profile": profile},
            kernel_name=KERNEL_NAME,
            cwd=str(cwd if cwd is not None else repo_root()),
            progress_bar=progress_bar,
            log_output=False,
            execution_timeout=timeout,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported, then the next one runs
        result.error = locate_error(tmp, exc, timeout)
        failed = out_dir / f"{name}.failed.ipynb"
        if Path(tmp).stat().st_size > 0:
            _publish(tmp, failed)
            result.output = _display(failed)
        (out_dir / f"{name}.ipynb").unlink(missing_ok=True)
    else:
        _clean_file(tmp)
        _publish(tmp, final)
        write_text(key_file, key + "\n")  # after the copy it vouches for
        (out_dir / f"{name}.failed.ipynb").unlink(missing_ok=True)
        result.status, result.output = "ok", _display(final)
    finally:
        Path(tmp).unlink(missing_ok=True)
        result.seconds = round(time.perf_counter() - start, 2)
    return result


def run_notebooks(
    notebooks: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    profile: str,
    fail_fast: bool = False,
    progress_bar: bool = True,
    timeout: float | None = None,
    jobs: int = 1,
    use_cache: bool = True,
) -> list[NotebookResult]:
    """Execute `notebooks` (`jobs` at a time: the longest budgets first; results in the given order); after a failure, go on unless `fail_fast`."""
    check_profile(profile)
    env = {PROFILE_ENV: profile, BATCH_ENV: "1"}  # the kernels inherit them: get_profile() agrees, bars are text
    if jobs > 1:
        env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # one thread per kernel
    previous = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    limits = budgets(profile)
    failed = False

    def one(notebook: Path) -> NotebookResult:
        nonlocal failed
        if failed and fail_fast:
            return NotebookResult(notebook.stem, _display(notebook), "skipped")
        print(f"[runner] {notebook.stem}  (profile {profile})", flush=True)
        result = execute_notebook(notebook, out_dir, profile, progress_bar=progress_bar and jobs == 1,
                                  timeout=timeout, use_cache=use_cache)
        result.budget_seconds = limits.get(notebook.stem)
        if result.status == "failed":
            failed = True
            print(f"[runner] FAILED {result.name}: {result.error.describe()}", flush=True)
        else:
            over = result.budget_seconds is not None and result.seconds > result.budget_seconds
            print(f"[runner] {result.status} {result.name}: {result.seconds:.0f} s"
                  + (f" of a {result.budget_seconds:.0f} s budget" if result.budget_seconds else "")
                  + (" (OVER BUDGET)" if over else ""), flush=True)
        return result

    try:
        paths = [Path(n).with_suffix(".ipynb") for n in notebooks]
        if jobs <= 1:
            return [one(p) for p in paths]
        order = longest_first([p.stem for p in paths], limits)
        with ThreadPoolExecutor(jobs) as pool:
            done = dict(zip(order, pool.map(one, [paths[i] for i in order])))
        return [done[i] for i in range(len(paths))]
    finally:
        for k, v in previous.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def format_summary(results: Sequence[NotebookResult]) -> str:
    """The final table (notebook, status, seconds) followed by one paragraph per failure."""
    width = max([len("notebook")] + [len(r.name) for r in results])
    lines = [f"{'notebook':<{width}}  {'status':<7}  {'seconds':>8}  {'budget':>8}", "-" * (width + 29)]
    for r in results:
        budget = f"{r.budget_seconds:>8.0f}" if r.budget_seconds else f"{'':>8}"
        over = "  over budget" if r.budget_seconds and r.seconds > r.budget_seconds else ""
        lines.append(f"{r.name:<{width}}  {r.status:<7}  {r.seconds:>8.1f}  {budget}{over}")
    total = sum(r.seconds for r in results)
    lines.append("-" * (width + 29))
    lines.append(f"{'total':<{width}}  {'':<7}  {total:>8.1f}")
    failures = [r for r in results if r.status == "failed"]
    if failures:
        lines.append("")
        lines.append(f"{len(failures)} notebook(s) FAILED:")
        for r in failures:
            lines.append(f"  {r.source}: {r.error.describe() if r.error else 'unknown error'}")
            if r.output:
                lines.append(f"    executed copy with the traceback: {r.output}")
    skipped = [r.name for r in results if r.status == "skipped"]
    if skipped:
        lines.append(f"skipped after the first failure (--fail-fast): {', '.join(skipped)}")
    return "\n".join(lines)


def write_summary(
    results: Sequence[NotebookResult], out_dir: str | os.PathLike, profile: str
) -> Path:
    """Write ``OUT/_run_summary.json`` (profile, time stamp, per-notebook status and seconds)."""
    summary = {
        "profile": profile,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "ok": all(r.status in ("ok", "cached") for r in results),
        "total_seconds": round(sum(r.seconds for r in results), 2),
        "notebooks": [r.to_json() for r in results],
    }
    return write_json(Path(out_dir) / SUMMARY_NAME, summary)


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit status (0 when every notebook passed)."""
    parser = argparse.ArgumentParser(
        prog="python -m zoomin_lib.book.runner",
        description="Execute the chapter notebooks with papermill into the book's build folder.",
    )
    parser.add_argument("notebooks", nargs="*", help="default: every notebooks/NN_*.ipynb, sorted")
    parser.add_argument(
        "--profile",
        choices=PROFILES,
        default=os.environ.get(PROFILE_ENV, "cpu"),
        help="papermill parameter `profile` (default: $%s or cpu)" % PROFILE_ENV,
    )
    parser.add_argument("--out", default=None, help="folder for executed copies (default: book/executed)")
    parser.add_argument("--fail-fast", action="store_true", help="stop at the first failing notebook")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per cell (default: none)")
    parser.add_argument("--no-progress", action="store_true", help="hide papermill's progress bar")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks at a time, one thread each (default 1)")
    parser.add_argument("--no-cache", action="store_true", help="execute even when a cached copy is up to date")
    args = parser.parse_args(argv)

    root = repo_root()
    notebooks = [Path(n) for n in args.notebooks] or discover_notebooks(root / "notebooks")
    out_dir = Path(args.out) if args.out else root / "book" / "executed"
    if not notebooks:
        print(f"[runner] no notebooks found under {root / 'notebooks'}", file=sys.stderr)
        return 2
    results = run_notebooks(
        notebooks,
        out_dir,
        args.profile,
        fail_fast=args.fail_fast,
        progress_bar=not args.no_progress,
        timeout=args.timeout,
        jobs=args.jobs,
        use_cache=not args.no_cache,
    )
    summary_path = write_summary(results, out_dir, args.profile)
    print()
    print(format_summary(results))
    print(f"\n[runner] executed copies in {out_dir}; summary in {summary_path}")
    return 0 if all(r.status in ("ok", "cached") for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
