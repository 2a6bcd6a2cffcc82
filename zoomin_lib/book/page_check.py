"""The rendered book checked as a reader sees it: every page opened in headless Chromium.

`python -m zoomin_lib.book.page_check [book/_build/html]` serves the built book on localhost, opens
every page in Debian's `chromium` (driven through `chromedriver` by Selenium), waits for MathJax to
typeset, scrolls to the end so that lazy images load, and fails (exit 1) on

- a broken image (one that did not load or has no pixels),
- an unrendered formula (a math element MathJax left as TeX, a MathJax error, or $...\\cmd...$ left as text
  in the prose: code and outputs shown as code are not read for it),
- an error in the browser's console,
- a chapter page showing fewer output figures than its executed notebook holds (`book/executed/NAME.ipynb`;
  an output hidden on purpose with myst-nb's remove-output tag would count as missing: no chapter hides one),
- output that is not content: "IProgress", "USDT", "profiler_start" or "<torch." in the page.

A screenshot of every page goes to `<html>/../page_check/` with `report.json`, one entry a page.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Iterator, Sequence

from zoomin_lib.infra.io import write_json

__all__ = ["CHROMIUM", "CHROMEDRIVER", "FORBIDDEN", "PageReport", "check_book", "figures_in_notebook", "save_screenshot", "main"]

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FORBIDDEN = ("IProgress", "USDT", "profiler_start", "<torch.")
SKIPPED_PAGES = ("genindex.html", "search.html")  # Sphinx's generated index and search pages
RAW_TEX = re.compile(r"\$[^$\n]{0,200}\\[A-Za-z]+[^$\n]{0,200}\$")  # $ ... \cmd ... $ left as text

# Runs in the page: waits for MathJax (if the page loads it), then reports what a reader would see.
INSPECT = """
const done = arguments[arguments.length - 1];
const settle = (window.MathJax && MathJax.startup && MathJax.startup.promise) ? MathJax.startup.promise : Promise.resolve();
settle.then(async () => {
  for (let y = 0; y < document.body.scrollHeight; y += 800) { window.scrollTo(0, y); await new Promise(r => setTimeout(r, 20)); }
  window.scrollTo(0, 0);
  const pending = Array.from(document.images).filter(i => !i.complete);
  await Promise.race([Promise.all(pending.map(i => new Promise(r => { i.onload = r; i.onerror = r; }))),
                      new Promise(r => setTimeout(r, 5000))]);
  const main = document.querySelector('main') || document.body;
  const prose = main.cloneNode(true);  // the text a reader reads as prose: no code, no typeset maths
  prose.querySelectorAll('pre, code, .highlight, mjx-container, script, style').forEach(e => e.remove());
  const broken = Array.from(document.images).filter(i => !i.complete || i.naturalWidth === 0)
                      .map(i => (i.getAttribute('src') || '').slice(0, 120));
  const figures = Array.from(main.querySelectorAll('.cell_output img, .output img'))
                       .filter(i => i.complete && i.naturalWidth > 0).length;
  const math = Array.from(document.querySelectorAll('.math'));
  const unrendered = math.filter(m => !m.querySelector('mjx-container') && !m.closest('mjx-container'))
                         .map(m => m.textContent.trim().slice(0, 80));
  const errors = Array.from(document.querySelectorAll('mjx-merror, [data-mjx-error]'))
                      .map(e => (e.getAttribute('data-mjx-error') || e.textContent).slice(0, 80));
  done({broken, figures, unrendered, mathErrors: errors, formulas: document.querySelectorAll('mjx-container').length,
        text: main.innerText, prose: prose.textContent, height: document.body.scrollHeight});
}).catch(e => done({fatal: String(e)}));
"""


@dataclass
class PageReport:
    """What the check found on one page; `problems` empty means the page passed."""

    page: str
    problems: list[str] = field(default_factory=list)
    figures: int = 0
    figures_expected: int = 0
    formulas: int = 0
    screenshot: str = ""


def figures_in_notebook(path: Path) -> int:
    """Image outputs (PNG, JPEG, SVG) of an executed notebook: the figures its page must show."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    kinds = ("image/png", "image/jpeg", "image/svg+xml")
    return sum(any(k in out.get("data", {}) for k in kinds)
               for cell in nb.get("cells", []) for out in cell.get("outputs", []))


def pages(html_dir: Path) -> list[Path]:
    """Every content page of a built book, sorted (Sphinx's index and search pages left out)."""
    return sorted(p for p in html_dir.rglob("*.html")
                  if not any(part.startswith("_") for part in p.relative_to(html_dir).parts)
                  and p.name not in SKIPPED_PAGES)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:  # the report says what matters
        pass


def _serve(directory: Path) -> tuple[ThreadingHTTPServer, str]:
    """An HTTP server for `directory` on a free localhost port, in a daemon thread, and its base URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(directory)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}/"


def _browser(chromium: str, chromedriver: str) -> Any:
    """A headless Chromium under Selenium that records the console, with no network beyond localhost."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    for binary in (chromium, chromedriver):
        if not Path(binary).exists() and shutil.which(binary) is None:
            raise FileNotFoundError(f"{binary} not found: install Debian's chromium and chromium-driver "
                                    "(apt-get install -y chromium chromium-driver; scripts/setup_browser.sh)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chromium
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
                 "--no-first-run", "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,1000"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=opts, service=Service(executable_path=chromedriver))
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(60)
    return driver


def _inspect(driver: Any, url: str) -> dict[str, Any]:
    driver.get(url)
    for _ in range(100):  # the document, then MathJax inside INSPECT
        if driver.execute_script("return document.readyState") == "complete":
            break
        time.sleep(0.1)
    return driver.execute_async_script(INSPECT)


def check_book(
    html_dir: Path,
    executed_dir: Path | None = None,
    out_dir: Path | None = None,
    chromium: str = CHROMIUM,
    chromedriver: str = CHROMEDRIVER,
) -> list[PageReport]:
    """Open every page of the built book at `html_dir` and report its problems (see the module docstring).

    Chapter pages `executed/NAME.html` must show at least as many figures as `executed_dir/NAME.ipynb`
    holds (default: `html_dir/../../executed`). Screenshots and report.json go to `out_dir`
    (default: `html_dir/../page_check`).
    """
    html_dir = Path(html_dir)
    if not (html_dir / "index.html").exists():
        raise FileNotFoundError(f"{html_dir}: no index.html; build the book first (bash scripts/build_book.sh)")
    executed_dir = Path(executed_dir) if executed_dir is not None else html_dir.parent.parent / "executed"
    out_dir = Path(out_dir) if out_dir is not None else html_dir.parent / "page_check"
    shots = out_dir / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    from selenium.common.exceptions import TimeoutException, WebDriverException

    server, base = _serve(html_dir)
    driver = None
    reports: list[PageReport] = []
    try:
        driver = _browser(chromium, chromedriver)
        for page in pages(html_dir):
            rel = page.relative_to(html_dir).as_posix()
            report = PageReport(page=rel)
            driver.get_log("browser")  # drop what earlier pages left
            try:
                seen = _inspect(driver, base + rel)
            except (TimeoutException, WebDriverException) as err:  # this page, not the whole check
                report.problems.append(f"the page did not finish loading: {type(err).__name__}: {str(err)[:200]}")
                reports.append(report)
                continue
            if "fatal" in seen:
                report.problems.append(f"the page's script failed: {seen['fatal']}")
                reports.append(report)
                continue
            report.figures, report.formulas = seen["figures"], seen["formulas"]
            report.problems += [f"broken image: {src}" for src in seen["broken"]]
            report.problems += [f"unrendered formula: {tex}" for tex in seen["unrendered"]]
            report.problems += [f"MathJax error: {err}" for err in seen["mathErrors"]]
            report.problems += [f"formula left as text: {m.group(0)[:80]}" for m in RAW_TEX.finditer(seen["prose"])]
            report.problems += [f"console error: {e['message'][:200]}" for e in driver.get_log("browser")
                                if e.get("level") == "SEVERE"]
            source = page.read_text(encoding="utf-8", errors="replace")
            for word in FORBIDDEN:
                if word in seen["text"] or word in source or word.replace("<", "&lt;") in source:
                    report.problems.append(f"output that is not content: {word!r} in the page")
            notebook = executed_dir / page.relative_to(html_dir / "executed").with_suffix(".ipynb") \
                if page.parent == html_dir / "executed" else None
            if notebook is not None and not notebook.exists():
                report.problems.append(f"no executed notebook {notebook} to count this chapter's figures against")
            elif notebook is not None:
                report.figures_expected = figures_in_notebook(notebook)
                if report.figures < report.figures_expected:
                    report.problems.append(f"shows {report.figures} figures of the {report.figures_expected} in "
                                           f"{notebook.name}")
            driver.set_window_size(1280, min(max(1000, int(seen["height"])), 8000))
            shot = shots / (rel.replace("/", "__").removesuffix(".html") + ".png")
            failure = save_screenshot(driver, shot)
            driver.set_window_size(1280, 1000)
            if failure is None:
                report.screenshot = str(shot.relative_to(out_dir))
            else:
                report.problems.append(failure)
            reports.append(report)
    finally:
        if driver is not None:
            driver.quit()
        server.shutdown()
    write_json(out_dir / "report.json", [asdict(r) for r in reports])
    return reports


def save_screenshot(driver: Any, path: Path, tries: int = 3, wait: float = 2.0) -> str | None:
    """Save `driver`'s page as `path`; None, or the problem after `tries` attempts.

    On a busy machine Chromium's renderer can miss chromedriver's 10 s deadline for one tall screenshot
    (TimeoutException); that is retried after `wait` seconds, so one slow moment does not end the whole check.
    """
    from selenium.common.exceptions import TimeoutException

    for attempt in range(tries):
        try:
            driver.save_screenshot(str(path))
            return None
        except TimeoutException as err:
            last = err
            if attempt + 1 < tries:
                time.sleep(wait)
    return f"no screenshot: the renderer did not answer {tries} times ({str(last).strip().splitlines()[0][:160]})"


def _lines(reports: Sequence[PageReport]) -> Iterator[str]:
    for r in reports:
        status = "ok" if not r.problems else f"{len(r.problems)} problem(s)"
        yield f"  {r.page:<48} {r.figures:>3} figures ({r.figures_expected} expected) {r.formulas:>4} formulas  {status}"
        yield from (f"      - {p}" for p in r.problems)


def main(argv: Sequence[str] | None = None) -> int:
    """Check the built book; exit 1 if any page has a problem, 2 if there is nothing to check."""
    parser = argparse.ArgumentParser(prog="python -m zoomin_lib.book.page_check", description=__doc__.splitlines()[0])
    parser.add_argument("html", nargs="?", default="book/_build/html", help="the built book (default: book/_build/html)")
    parser.add_argument("--executed", default=None, help="the executed notebooks (default: <html>/../../executed)")
    parser.add_argument("--out", default=None, help="screenshots and report.json (default: <html>/../page_check)")
    args = parser.parse_args(argv)
    try:
        reports = check_book(Path(args.html), args.executed and Path(args.executed), args.out and Path(args.out))
    except FileNotFoundError as err:
        print(f"page_check: {err}", file=sys.stderr)
        return 2
    print("\n".join(_lines(reports)))
    bad = [r for r in reports if r.problems]
    print(f"\npage_check: {len(reports)} pages, {len(bad)} with problems; screenshots in "
          f"{Path(args.out) if args.out else Path(args.html).parent / 'page_check'}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
