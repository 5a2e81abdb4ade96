"""Small additions to the Jupyter Book 1 HTML build; loaded by ``_config.yml`` (sphinx.local_extensions).

1. **plotly.js served with the book.** While Sphinx runs, the environment variable
   ``DCI_BOOK_BUILD=1`` is set; the notebook kernels inherit it, and
   :func:`dcicore.plots.use_book_renderer` then emits each figure as a bare ``<div>`` plus its
   ``Plotly.newPlot`` script, with no copy of plotly.js in the notebook. This extension writes the
   installed plotly.js once to ``_static/vendor/plotly-<version>.min.js`` and loads it in the
   ``<head>`` of every page that holds a ``plotly-graph-div``. So pages stay small (plotly.js is
   4.8 MB), the browser caches it, it works offline, and a figure draws no matter which cell
   (or page, through ``glue``) shows it.

2. **Duplicated inline scripts.** Inline ``<script>`` blocks that extensions add after the
   builder starts (sphinx-thebe's ``const THEBE_JS_URL = ...``, sphinx-togglebutton's settings)
   are written twice on every page by Sphinx 7.4: once as ``_JavaScript(None, body=...)`` from
   ``app.add_js_file`` and once as ``_JavaScript('', body=...)`` from the registry in
   ``prepare_writing``. The second ``const`` raises "SyntaxError: Identifier 'THEBE_JS_URL' has
   already been declared" in the browser. Exact duplicates are dropped per page.

``tests/test_book_browser.py`` checks both in a real browser.
"""

from __future__ import annotations

import os
from pathlib import Path

BUILD_ENV_VAR = "DCI_BOOK_BUILD"


def _plotly_js_name() -> str:
    import plotly

    return f"vendor/plotly-{plotly.__version__}.min.js"


def _add_plotly_js(app, pagename, templatename, context, doctree) -> None:
    if "plotly-graph-div" in (context.get("body") or ""):
        # A synchronous script in <head>: loaded before the figures' inline scripts run.
        app.builder.add_js_file(_plotly_js_name(), priority=450)


def _write_plotly_js(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    from plotly.offline import get_plotlyjs

    target = Path(app.builder.outdir) / "_static" / _plotly_js_name()
    target.parent.mkdir(parents=True, exist_ok=True)
    source = get_plotlyjs()
    if not target.exists() or target.read_text(encoding="utf-8") != source:
        target.write_text(source, encoding="utf-8")


def _script_key(js) -> tuple:
    filename = getattr(js, "filename", js) or ""
    attributes = getattr(js, "attributes", {}) or {}
    return (str(filename), getattr(js, "priority", None), tuple(sorted(attributes.items())))


def _dedupe_scripts(app, pagename, templatename, context, doctree) -> None:
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, kept = set(), []
    for js in scripts:
        key = _script_key(js)
        if key not in seen:
            seen.add(key)
            kept.append(js)
    # In place: Sphinx restores the list from its own copy after each page.
    scripts[:] = kept


def setup(app):
    # Set before any notebook runs, so that every kernel inherits it.
    os.environ[BUILD_ENV_VAR] = "1"
    app.connect("html-page-context", _add_plotly_js)
    # After every extension has added its per-page scripts (default priority 500).
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    app.connect("build-finished", _write_plotly_js)
    return {"version": "0.2", "parallel_read_safe": True, "parallel_write_safe": True}
