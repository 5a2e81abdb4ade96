"""Plotly figures for the chapters, and the renderer that gets them into the book.

Explained in: the landing page of the book (``book/index.md``, "How to run it"); used by every
chapter notebook.

Why a renderer at all
---------------------
Plotly ≥ 6 shows a figure in Jupyter as the MIME type ``application/vnd.plotly.v1+json`` only.
JupyterLab draws that with plotly's lab extension, but Jupyter Book (myst-nb) cannot: it drops the
output with the warning ``mystnb.unknown_mime_type`` and the figure is missing from the HTML page.
An HTML renderer fixes that. :func:`use_book_renderer` sets one up, in one of two forms:

- **During the book build** (the book's Sphinx extension ``book/_ext/dci_book.py`` sets
  ``DCI_BOOK_BUILD=1``, and the kernels inherit it): each figure is a ``<div>`` plus its
  ``Plotly.newPlot`` script, without plotly.js; the extension serves plotly.js once, as a static
  file loaded by every page that has a figure. Pages stay small and work offline.
- **Anywhere else** (JupyterLab, nbval, Binder): plotly's ``"notebook"`` renderer, which embeds
  plotly.js in the notebook once, in the output of the first figure shown.

In both forms plotly's per-figure ``<script>`` that loads MathJax from a CDN is left out: offline
it is a failed request, and on a book page it would start a second MathJax next to Sphinx's.
Consequence for authors: no LaTeX (``$...$``) in plotly titles, axis labels or hover text; write
Unicode and HTML tags instead, e.g. ``"ω<sub>e</sub>"`` or ``"delay (s)"``.

Rules for chapter authors
-------------------------
- Call :func:`use_book_renderer` in the notebook's first code cell (after ``import dcicore``).
- Use ``plotly.graph_objects.Figure`` (not ``FigureWidget``, which needs a live kernel) and let the
  cell show it (last expression, or ``fig.show()``).
- The environment variable ``PLOTLY_RENDERER`` wins: when it is set (``make book`` sets it to
  ``notebook``), its value names the renderer; ``"notebook"`` means the form chosen above.
- ``tests/test_book_browser.py`` opens every page in headless chromium and fails on a figure
  that did not draw.
"""

from __future__ import annotations

import os

import plotly.io as pio
from plotly.io._base_renderers import NotebookRenderer

__all__ = ["use_book_renderer", "BOOK_BUILD_ENV_VAR"]

#: Set to "1" by the book's Sphinx extension while the book builds (see book/_ext/dci_book.py).
BOOK_BUILD_ENV_VAR = "DCI_BOOK_BUILD"


class _OfflineNotebookRenderer(NotebookRenderer):
    """Plotly's ``"notebook"`` renderer minus its per-figure MathJax CDN ``<script>``.

    Output: ``{"text/html": "<div>…</div>"}``. plotly.js itself comes from :meth:`activate`
    (inherited), which embeds it once per kernel session.
    """

    def to_mimebundle(self, fig_dict: dict) -> dict:
        html = pio.to_html(
            fig_dict,
            config=self.config,
            auto_play=self.auto_play,
            include_plotlyjs=self.include_plotlyjs,
            include_mathjax=False,  # NOTE: the point of this class
            post_script=self.post_script,
            full_html=False,
            animation_opts=self.animation_opts,
            default_width="100%",
            default_height=525,
            validate=False,
        )
        return {"text/html": html}


class _BookPageRenderer(_OfflineNotebookRenderer):
    """The same ``<div>`` without ever embedding plotly.js: the book page loads it."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.global_init = False  # NOTE: no plotly.js in the notebook; see book/_ext/dci_book.py


def use_book_renderer() -> None:
    """Make plotly figures reach the book's HTML pages and work offline.

    Registers the name ``"notebook"`` as the right HTML renderer for where the code runs (see the
    module docstring: a bare ``<div>`` while the book builds, plotly's notebook renderer with
    plotly.js embedded elsewhere; never a CDN) and sets
    ``plotly.io.renderers.default = "notebook"``, unless the environment variable
    ``PLOTLY_RENDERER`` is set, in which case its value is kept.

    Call it in the first code cell of every chapter notebook::

        import dcicore
        from dcicore.plots import use_book_renderer
        use_book_renderer()

    Note: in JupyterLab the ``"notebook"`` renderer works once the notebook is trusted (it is
    after you run it). Set ``PLOTLY_RENDERER=plotly_mimetype`` before starting Jupyter to use
    plotly's lab extension instead; the book build must not use that.

    It returns nothing (so that a cell ending with the call prints nothing); read
    ``plotly.io.renderers.default`` for the name in force.
    """
    if os.environ.get(BOOK_BUILD_ENV_VAR) == "1":
        pio.renderers["notebook"] = _BookPageRenderer()
    else:
        pio.renderers["notebook"] = _OfflineNotebookRenderer()
    # Re-resolve the names so that "notebook" points to the renderer just registered.
    pio.renderers.default = os.environ.get("PLOTLY_RENDERER") or "notebook"
