"""Plotly figures for the chapters, and the renderer that gets them into the book.

Explained in: the landing page of the book (``book/index.md``, "How to run it") and used by every
chapter notebook.

Why a renderer at all
---------------------
Plotly ≥ 6 shows a figure in Jupyter as the MIME type ``application/vnd.plotly.v1+json`` only.
JupyterLab draws that with plotly's lab extension, but Jupyter Book (myst-nb) cannot: it drops the
output with the warning ``mystnb.unknown_mime_type`` and the figure is missing from the HTML page.
The ``"notebook"`` renderer emits ``text/html`` instead, with plotly.js embedded once per notebook
(in the output of the first figure), so the page also works offline.

Plotly's own ``"notebook"`` renderer adds, to every figure, a ``<script>`` that loads MathJax from
a CDN. On a book page that is a failed network request when offline, and a second MathJax on a
page that already has Sphinx's. :func:`use_book_renderer` therefore re-registers ``"notebook"``
as the same renderer without that script. Consequence for authors: do not put LaTeX (``$...$``)
in plotly titles, axis labels or hover text; write Unicode and HTML tags instead, e.g.
``"ω<sub>e</sub>"`` or ``"delay (s)"``.

Rules for chapter authors
-------------------------
- Call :func:`use_book_renderer` in the notebook's first code cell (after ``import dcicore``).
- The first figure a notebook shows also carries plotly.js; never give that cell the tag
  ``remove-output`` or ``remove-cell`` (``remove-input`` and ``hide-input`` are fine), or every
  later figure on the page fails to draw. The book's browser test (``tests/test_book_browser.py``)
  catches this.
- The environment variable ``PLOTLY_RENDERER`` wins: when it is set (``make book`` sets it to
  ``notebook``), its value is used as given.
"""

from __future__ import annotations

import os

import plotly.io as pio
from plotly.io._base_renderers import NotebookRenderer

__all__ = ["use_book_renderer"]


class _OfflineNotebookRenderer(NotebookRenderer):
    """Plotly's ``"notebook"`` renderer minus its per-figure MathJax CDN ``<script>``.

    Output: ``{"text/html": "<div>…</div>"}``; plotly.js itself comes from :meth:`activate`
    (inherited), which embeds it once per kernel session.
    """

    def to_mimebundle(self, fig_dict: dict) -> dict:
        html = pio.to_html(
            fig_dict,
            config=self.config,
            auto_play=self.auto_play,
            include_plotlyjs=self.include_plotlyjs,
            include_mathjax=False,  # NOTE: the whole point of this class
            post_script=self.post_script,
            full_html=False,
            animation_opts=self.animation_opts,
            default_width="100%",
            default_height=525,
            validate=False,
        )
        return {"text/html": html}


def use_book_renderer() -> None:
    """Make plotly figures reach the book's HTML pages and work offline.

    Sets ``plotly.io.renderers.default = "notebook"`` (plotly.js embedded once per notebook,
    emitted as ``text/html``), unless the environment variable ``PLOTLY_RENDERER`` is set, in
    which case that value is kept. Either way the name ``"notebook"`` is re-registered as
    :class:`_OfflineNotebookRenderer`, which loads nothing from a CDN.

    Call it in the first code cell of every chapter notebook::

        import dcicore
        from dcicore.plots import use_book_renderer
        use_book_renderer()

    Note: in JupyterLab the ``"notebook"`` renderer also works (the notebook must be trusted,
    which it is once executed there). Set ``PLOTLY_RENDERER=plotly_mimetype`` before starting
    Jupyter to get plotly's lab extension instead; the book build must not use that.

    It returns nothing (so that a notebook cell ending with the call prints nothing); read
    ``plotly.io.renderers.default`` for the name in force.
    """
    pio.renderers["notebook"] = _OfflineNotebookRenderer()
    name = os.environ.get("PLOTLY_RENDERER") or "notebook"
    # Re-resolve the names so that "notebook" points to the renderer just registered.
    pio.renderers.default = name
