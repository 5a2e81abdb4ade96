"""The built book, opened page by page in a real (headless) browser.

What it checks, for every page named in ``_toc.yml``:

- the page exists in ``_build/html``;
- loading it raises no JavaScript exception and logs no console error;
- every request it makes succeeds: local files (no 404) and external resources such as a CDN
  (they fail on a machine without internet, e.g. CI: the book must not depend on them);
- MathJax (served with the book) typeset the page's math without a TeX error;
- every plotly figure (``.plotly-graph-div``) has drawn its ``svg.main-svg``, and the page's HTML
  does not hold a plotly MIME bundle (``application/vnd.plotly.v1+json``) without a figure div:
  that is the trace of a figure myst-nb dropped (see ``dcicore/plots.py``).

How: a session fixture builds the book (``jupyter-book build . -W -n --keep-going`` with
``DCI_BUDGET=quick`` and ``PLOTLY_RENDERER=notebook``) unless ``DCI_BOOK_PREBUILT=1`` says that
``_build/html`` is already built and fresh; ``_build/html`` is served on 127.0.0.1 on a free port;
``/usr/bin/chromium --headless`` is driven through the Chrome DevTools Protocol (CDP) over a
websocket (package ``websocket-client``). Without chromium the tests are skipped, except under
``CI`` (set), where they fail: ``.ci/run`` installs it.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
CHROMIUM = Path("/usr/bin/chromium")
PLOTLY_MIME = "application/vnd.plotly.v1+json"
BUILD_TIMEOUT_S = 3600
PAGE_TIMEOUT_S = 60  # load plus settling, per page
SETTLE_S = 1.0  # a page is settled when nothing happened on the network for this long
PLOT_WAIT_S = 15  # plotly figures get this long to draw after the page settled


# ---------------------------------------------------------------- the pages of the TOC


def toc_docnames(toc_path: Path = ROOT / "_toc.yml") -> list[str]:
    """Every document named in a jb-book ``_toc.yml`` (root first), without file extension."""
    toc = yaml.safe_load(toc_path.read_text(encoding="utf-8"))
    names = [toc["root"]]

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                names.append(node["file"])
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(toc)
    return [str(Path(n).with_suffix("")) if Path(n).suffix in (".md", ".ipynb") else n for n in names]


DOCNAMES = toc_docnames()


# ---------------------------------------------------------------- fixtures


def _chromium_or_skip() -> None:
    if CHROMIUM.exists():
        return
    msg = f"{CHROMIUM} not found: install it with `apt-get install -y chromium` (.ci/run does)"
    if os.environ.get("CI"):
        pytest.fail(f"CI is set and {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="session")
def built_book() -> Path:
    """``_build/html``, built now unless ``DCI_BOOK_PREBUILT=1``."""
    _chromium_or_skip()  # no point in a build that no browser will look at
    if os.environ.get("DCI_BOOK_PREBUILT") == "1":
        if not (HTML / "index.html").exists():
            pytest.fail(f"DCI_BOOK_PREBUILT=1 but {HTML / 'index.html'} does not exist")
        return HTML
    venv_jb = ROOT / ".venv" / "bin" / "jupyter-book"
    jb = venv_jb if venv_jb.exists() else Path(sys.executable).parent / "jupyter-book"
    env = dict(os.environ, DCI_BUDGET="quick", PLOTLY_RENDERER="notebook")
    cmd = [str(jb), "build", ".", "--all", "-W", "-n", "--keep-going"]
    proc = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S
    )
    if proc.returncode != 0:
        pytest.fail(f"`{' '.join(cmd)}` failed with exit code {proc.returncode}:\n"
                    + _build_failure_summary(proc.stdout + "\n" + proc.stderr))
    return HTML


def _build_failure_summary(log: str) -> str:
    """The build's warnings, the failing notebook cell (if any) and the end of the log."""
    warnings = [ln for ln in log.splitlines() if "WARNING:" in ln or "ERROR:" in ln]
    parts = ["\n".join(warnings[-30:])] if warnings else []
    cell = log.rfind("An error occurred while executing the following cell")
    if cell >= 0:
        parts.append(log[cell:cell + 4000])
    parts.append(log[-1500:])
    return "\n...\n".join(parts)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass


@pytest.fixture(scope="session")
def server(built_book: Path):
    """Base URL of ``_build/html`` served on 127.0.0.1 (a free port) from a thread."""
    handler = functools.partial(_QuietHandler, directory=str(built_book))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=10)


@pytest.fixture(scope="session")
def browser(server):
    """A headless chromium with a fresh profile, and a CDP client attached to it."""
    _chromium_or_skip()
    profile = tempfile.mkdtemp(prefix="dci-chromium-")
    args = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--mute-audio",
        f"--user-data-dir={profile}",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
        "about:blank",
    ]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    client = None
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if proc.poll() is not None:
                err = proc.stderr.read().decode(errors="replace")[-3000:]
                pytest.fail(f"chromium exited with code {proc.returncode}:\n{err}")
            if time.monotonic() > deadline:
                pytest.fail("chromium did not open its DevTools port within 60 s")
            time.sleep(0.1)
        port, path = port_file.read_text().splitlines()[:2]
        client = CDP(f"ws://127.0.0.1:{port}{path}")
        yield client
    finally:
        if client is not None:
            client.close()
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        shutil.rmtree(profile, ignore_errors=True)


# ---------------------------------------------------------------- a minimal CDP client


class CDP:
    """Chrome DevTools Protocol over one browser-level websocket, with flattened sessions."""

    def __init__(self, ws_url: str):
        import websocket  # websocket-client

        self._ws_mod = websocket
        # suppress_origin: chromium refuses websocket clients that send an Origin it was not
        # told to allow (--remote-allow-origins); a client without Origin is accepted.
        self.ws = websocket.create_connection(ws_url, timeout=30, suppress_origin=True)
        self._next_id = 0
        self.events: list[dict] = []

    def close(self) -> None:
        try:
            self.ws.close()
        except Exception:  # noqa: BLE001 - closing a dead socket is fine
            pass

    def _recv(self, timeout: float) -> dict | None:
        self.ws.settimeout(max(timeout, 0.01))
        try:
            return json.loads(self.ws.recv())
        except self._ws_mod.WebSocketTimeoutException:
            return None

    def send(self, method: str, params: dict | None = None, session_id: str | None = None,
             timeout: float = 30.0) -> dict:
        self._next_id += 1
        msg_id = self._next_id
        msg = {"id": msg_id, "method": method, "params": params or {}}
        if session_id:
            msg["sessionId"] = session_id
        self.ws.send(json.dumps(msg))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            reply = self._recv(deadline - time.monotonic())
            if reply is None:
                continue
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"CDP {method} failed: {reply['error']}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)
        raise TimeoutError(f"CDP {method}: no reply within {timeout} s")

    def pump(self, seconds: float) -> int:
        """Read events for ``seconds``; return how many arrived."""
        n = 0
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            msg = self._recv(left)
            if msg is not None and "method" in msg:
                self.events.append(msg)
                n += 1
        return n

    def evaluate(self, expression: str, session_id: str):
        result = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session_id=session_id,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating {expression[:60]!r}: {result['exceptionDetails']}")
        return result["result"].get("value")


MATH_STATE_JS = r"""(async () => {
  const mj = window.MathJax;
  if (mj && mj.startup && mj.startup.promise) {
    await Promise.race([mj.startup.promise, new Promise(r => setTimeout(r, 15000))]);
  }
  return {
    math: document.querySelectorAll('.math').length,
    typeset: document.querySelectorAll('mjx-container').length,
    mathjax: !!(mj && mj.startup),
    errors: [
      ...[...document.querySelectorAll('mjx-merror')]
        .map(e => e.getAttribute('data-mjx-error') || e.textContent),
      // an undefined macro is shown as red text (MathJax's noundefined package)
      ...[...document.querySelectorAll('mjx-assistive-mml mtext[mathcolor="red"]')]
        .filter(e => e.textContent.startsWith('\\'))
        .map(e => 'undefined macro ' + e.textContent),
    ],
  };
})()"""

PLOTLY_STATE_JS = """(() => {
  const divs = [...document.querySelectorAll('.plotly-graph-div')];
  return {
    count: divs.length,
    undrawn: divs.filter(d => !d.querySelector('svg.main-svg')).map(d => d.id || '(no id)'),
    plotly: typeof window.Plotly !== 'undefined',
  };
})()"""


def visit(cdp: CDP, url: str, server_base: str) -> dict:
    """Open ``url`` in a new tab, let it settle, and report what went wrong.

    Returns ``{"problems": [str, ...], "plotly": {...}, "math": {...}, "external": [url, ...]}``.
    """
    problems: list[str] = []
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    sid = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    try:
        for domain in ("Page", "Runtime", "Log", "Network"):
            cdp.send(f"{domain}.enable", session_id=sid)
        first_event = len(cdp.events)
        nav = cdp.send("Page.navigate", {"url": url}, session_id=sid)
        if nav.get("errorText"):
            return {"problems": [f"navigation failed: {nav['errorText']}"], "plotly": {},
                    "math": {}, "external": []}

        # Wait for the load event, then until the network has been quiet for SETTLE_S.
        mine = lambda: [e for e in cdp.events[first_event:] if e.get("sessionId") == sid]  # noqa: E731
        deadline = time.monotonic() + PAGE_TIMEOUT_S
        while not any(e["method"] == "Page.loadEventFired" for e in mine()):
            if time.monotonic() > deadline:
                problems.append(f"no load event within {PAGE_TIMEOUT_S} s")
                break
            cdp.pump(0.2)
        while time.monotonic() < deadline:
            events = mine()
            started = {e["params"]["requestId"] for e in events
                       if e["method"] == "Network.requestWillBeSent"}
            ended = {e["params"]["requestId"] for e in events
                     if e["method"] in ("Network.loadingFinished", "Network.loadingFailed")}
            if cdp.pump(SETTLE_S) == 0 and started <= ended:
                break

        # Plotly figures draw from inline scripts; give slow ones a little time.
        plot = cdp.evaluate(PLOTLY_STATE_JS, sid)
        plot_deadline = time.monotonic() + PLOT_WAIT_S
        while plot["undrawn"] and time.monotonic() < plot_deadline:
            cdp.pump(0.5)
            plot = cdp.evaluate(PLOTLY_STATE_JS, sid)
        math = cdp.evaluate(MATH_STATE_JS, sid)
        cdp.pump(0.2)
    finally:
        try:
            cdp.send("Target.closeTarget", {"targetId": target})
        except Exception:  # noqa: BLE001 - the page may already be gone
            pass

    events = [e for e in cdp.events[first_event:] if e.get("sessionId") == sid]
    requests = {}
    external = []
    for e in events:
        m, p = e["method"], e["params"]
        if m == "Network.requestWillBeSent":
            req_url = p["request"]["url"]
            requests[p["requestId"]] = req_url
            parts = urlsplit(req_url)
            if parts.scheme in ("http", "https", "ws", "wss") and not req_url.startswith(server_base):
                external.append(req_url)
    for e in events:
        m, p = e["method"], e["params"]
        if m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            desc = (d.get("exception") or {}).get("description") or d.get("text")
            problems.append(f"uncaught exception: {desc} ({d.get('url', '')}:{d.get('lineNumber')})")
        elif m == "Runtime.consoleAPICalled" and p["type"] in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"])
            problems.append(f"console.{p['type']}: {args}")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            entry = p["entry"]
            if entry.get("url", "").endswith("/favicon.ico"):
                continue
            problems.append(f"browser log error: {entry['text']} {entry.get('url', '')}".rstrip())
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            req_url = requests.get(p["requestId"], "?")
            where = "external" if req_url in external else "local"
            problems.append(f"{where} request failed ({p.get('errorText')}): {req_url}")
        elif m == "Network.responseReceived" and p["response"]["status"] >= 400:
            if p["response"]["url"].endswith("/favicon.ico"):
                continue
            problems.append(f"HTTP {p['response']['status']}: {p['response']['url']}")
    return {"problems": problems, "plotly": plot, "math": math, "external": external}


# ---------------------------------------------------------------- the tests


def test_toc_is_read():
    assert DOCNAMES[0] == "book/index"
    assert len(DOCNAMES) == len(set(DOCNAMES)), "a page is listed twice in _toc.yml"


@pytest.mark.parametrize("docname", DOCNAMES)
def test_page_in_browser(docname, built_book, server, browser):
    page = built_book / f"{docname}.html"
    assert page.exists(), f"{docname} is in _toc.yml but {page.relative_to(ROOT)} was not built"

    html = page.read_text(encoding="utf-8")
    if PLOTLY_MIME in html and "plotly-graph-div" not in html:
        pytest.fail(f"{docname}: a plotly figure reached the page only as {PLOTLY_MIME} "
                    "(myst-nb cannot draw it); call dcicore.plots.use_book_renderer() first")

    report = visit(browser, f"{server}/{docname}.html", server)
    plot = report["plotly"]
    problems = list(report["problems"])
    if plot.get("count") and not plot.get("plotly"):
        problems.append("page has plotly figures but window.Plotly is undefined")
    if plot.get("undrawn"):
        problems.append(f"plotly figures not drawn (no svg.main-svg): {plot['undrawn']}")
    math = report["math"]
    if math.get("math") and not math.get("typeset"):
        problems.append(f"{math['math']} math elements but MathJax typeset none "
                        f"(MathJax loaded: {math.get('mathjax')})")
    if math.get("errors"):
        problems.append(f"MathJax errors: {math['errors']}")
    assert not problems, f"{docname}:\n  " + "\n  ".join(problems)
