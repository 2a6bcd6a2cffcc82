"""A local Sphinx extension: every page loads each script once.

Jupyter Book 1.x registers sphinx-thebe's and sphinx-togglebutton's inline configuration twice, so
every page declared `const THEBE_JS_URL` twice and the browser's console reported a SyntaxError
(`python -m zoomin_lib.book.page_check` fails on console errors). Identical script entries are
dropped here, the first kept, just before each page is written.
"""

from __future__ import annotations

from typing import Any


def _once(app: Any, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    seen, kept = set(), []
    for script in context.get("script_files", []):
        # the same file (None and "" alike: inline) with the same attributes, whatever its priority
        key = (str(getattr(script, "filename", script) or ""),
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            kept.append(script)
    context["script_files"] = kept


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
