"""The rendered-book check finds what a reader would see broken: run on a small site with one fault a page."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from zoomin_lib.book.page_check import CHROMEDRIVER, CHROMIUM, check_book, figures_in_notebook, pages

PNG = base64.b64decode(  # a 1x1 PNG
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")


def page(body: str) -> str:
    return f"<!doctype html><html><head><link rel='icon' href='data:,'></head><body><main>{body}</main></body></html>"


def notebook(images: int) -> str:
    outputs = [{"output_type": "display_data", "data": {"image/png": "x"}, "metadata": {}}] * images
    cells = [{"cell_type": "code", "source": "", "metadata": {}, "outputs": outputs, "execution_count": 1}]
    return json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5})


@pytest.fixture
def site(tmp_path: Path) -> Path:
    html = tmp_path / "_build" / "html"
    (html / "executed").mkdir(parents=True)
    (html / "_static").mkdir()
    (html / "fig.png").write_bytes(PNG)
    (html / "index.html").write_text(page("<p>fine</p><img src='fig.png'>"))
    (html / "broken.html").write_text(page("<img src='missing.png'>"))
    (html / "maths.html").write_text(page("<span class='math'>\\(\\alpha_c\\)</span><p>and $\\beta^c$ as text</p>"))
    (html / "code.html").write_text(page("<pre>ax.set_xlabel(r'$\\alpha_c$')</pre><p>prose</p>"))  # code: not a formula
    (html / "console.html").write_text(page("<script>console.error('boom')</script>"))
    (html / "chatter.html").write_text(page("<pre>IProgress not found. &lt;torch._C.Generator at 0x7f&gt;</pre>"))
    (html / "executed" / "ch.html").write_text(page("<img src='../fig.png'><div class='cell_output'>"
                                                    "<img src='../fig.png'></div>"))  # 1 output figure of 2
    (html / "executed" / "lost.html").write_text(page("<p>no notebook behind it</p>"))
    (html / "genindex.html").write_text(page("<img src='nothing.png'>"))  # Sphinx's index: not a content page
    executed = tmp_path / "executed"
    executed.mkdir()
    (executed / "ch.ipynb").write_text(notebook(2))
    return html


def test_pages_and_figures_are_counted_from_the_build(site):
    assert [p.name for p in pages(site)] == ["broken.html", "chatter.html", "code.html", "console.html", "ch.html",
                                             "lost.html", "index.html", "maths.html"]
    assert figures_in_notebook(site.parent.parent / "executed" / "ch.ipynb") == 2


@pytest.mark.skipif(not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
                    reason="Debian's chromium and chromium-driver are not installed (scripts/setup_browser.sh)")
def test_each_fault_is_found_on_its_page_and_only_there(site, tmp_path):
    reports = {r.page: r for r in check_book(site, out_dir=tmp_path / "check")}
    assert reports["index.html"].problems == [] and reports["index.html"].figures == 0  # not an output figure
    assert any("broken image: missing.png" in p for p in reports["broken.html"].problems)
    maths = reports["maths.html"].problems
    assert any(p.startswith("unrendered formula") for p in maths)
    assert any(p.startswith("formula left as text: $\\beta^c$") for p in maths)
    assert any("console error" in p and "boom" in p for p in reports["console.html"].problems)
    chatter = reports["chatter.html"].problems
    assert any("'IProgress'" in p for p in chatter) and any("'<torch.'" in p for p in chatter)
    assert reports["executed/ch.html"].problems == ["shows 1 figures of the 2 in ch.ipynb"]
    assert reports["code.html"].problems == []
    assert any("no executed notebook" in p for p in reports["executed/lost.html"].problems)
    assert (tmp_path / "check" / "screenshots" / "index.png").stat().st_size > 1000
    assert len(json.loads((tmp_path / "check" / "report.json").read_text())) == 8


class _SlowRenderer:
    """A driver whose first `misses` screenshots time out, as Chromium's renderer does on a busy machine."""

    def __init__(self, misses: int) -> None:
        self.misses, self.calls = misses, 0

    def save_screenshot(self, path: str) -> bool:
        from selenium.common.exceptions import TimeoutException

        self.calls += 1
        if self.calls <= self.misses:
            raise TimeoutException("timeout: Timed out receiving message from renderer: 10.000\n  (Session info)")
        Path(path).write_bytes(b"png")
        return True


def test_a_screenshot_that_times_out_is_retried_then_reported(tmp_path):
    pytest.importorskip("selenium")
    from zoomin_lib.book.page_check import save_screenshot

    driver = _SlowRenderer(misses=2)
    assert save_screenshot(driver, tmp_path / "a.png", tries=3, wait=0) is None
    assert driver.calls == 3 and (tmp_path / "a.png").read_bytes() == b"png"
    driver = _SlowRenderer(misses=5)
    problem = save_screenshot(driver, tmp_path / "b.png", tries=3, wait=0)
    assert driver.calls == 3 and not (tmp_path / "b.png").exists()
    assert problem == ("no screenshot: the renderer did not answer 3 times (Message: timeout: Timed out receiving "
                       "message from renderer: 10.000)")
