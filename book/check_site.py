"""Check the built site as a reader would see it, and screenshot every page.

Run after ``jupyter-book build book/`` (``make book`` does)::

    .venv/bin/python book/check_site.py [_build/html]

Two passes over every HTML page of the site:

1. **Static** (no browser, :func:`check_static`): every internal link (``href`` to a local page or ``#anchor``) must
   point at a file that exists and, where it names an anchor, at an element with that ``id``; every ``<img>`` with a
   local ``src`` must point at an existing file.
2. **Browser**: the site is served on ``127.0.0.1`` by :mod:`http.server` and every page is opened in headless
   Debian Chromium, driven through ``chromedriver`` over the W3C WebDriver protocol (plain HTTP/JSON, spoken here
   with :mod:`urllib`, so nothing else is installed and nothing is ever downloaded). A page fails on any ``<img>``
   that did not load (``naturalWidth == 0``) and on any local resource (image, stylesheet, script, font) that the
   server answered with an error. A full-page PNG screenshot of each page is saved to
   ``_build/html/_screenshots/<page>.png``.

Exit status 0 when every page passed; 1 with a list of problems otherwise; 2 when Chromium or chromedriver is
missing (``apt-get install chromium chromium-driver``; ``--static-only`` skips the browser pass).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SITE = ROOT / "_build" / "html"
SCREENSHOTS = "_screenshots"
#: Folders of the build that hold assets or sources, not pages.
SKIP_DIRS = frozenset({"_static", "_sources", "_images", SCREENSHOTS, "_sphinx_design_static", ".doctrees"})
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
CHROMEDRIVER_CANDIDATES = ("/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver")
CHROMIUM_FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--disable-extensions", "--disable-default-apps", "--metrics-recording-only",
    "--hide-scrollbars", "--window-size=1280,900",
)  # fmt: skip
#: Tallest screenshot, CSS pixels (a very long page is cut there rather than exhausting memory).
MAX_SHOT_HEIGHT = 20000


# ----------------------------------------------------------------------------------------------------------------
# Static pass: pure Python, testable without a browser
# ----------------------------------------------------------------------------------------------------------------
class _PageParser(HTMLParser):
    """Collects ids, link targets and image sources of one HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.ids: set[str] = set()
        self.links: list[str] = []
        self.images: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v for k, v in attrs if v is not None}
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "a" and "name" in a:
            self.ids.add(a["name"])
        if tag == "a" and "href" in a:
            self.links.append(a["href"])
        if tag == "img" and "src" in a:
            self.images.append(a["src"])


@dataclass
class Page:
    """What :func:`parse_page` found in one HTML file."""

    path: Path
    ids: set[str] = field(default_factory=set)
    links: list[str] = field(default_factory=list)
    images: list[str] = field(default_factory=list)


def parse_page(path: Path) -> Page:
    """Parse one HTML file: its element ids, ``<a href>`` targets and ``<img src>`` values."""
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    return Page(path, parser.ids, parser.links, parser.images)


def html_pages(site: Path) -> list[Path]:
    """Every HTML page of a built site, asset folders excluded, sorted."""
    pages = []
    for p in sorted(site.rglob("*.html")):
        if not SKIP_DIRS.intersection(p.relative_to(site).parts[:-1]):
            pages.append(p)
    return pages


def _is_local(url: str) -> bool:
    parts = urlsplit(url)
    return not parts.scheme and not parts.netloc and not url.startswith("//")


def _target(page: Path, url: str, site: Path) -> tuple[Path, str]:
    parts = urlsplit(url)
    path = unquote(parts.path)
    if not path:
        target = page
    elif path.startswith("/"):
        target = site / path.lstrip("/")
    else:
        target = (page.parent / path).resolve()
    if target.is_dir():
        target = target / "index.html"
    return target, unquote(parts.fragment)


def check_static(site: Path) -> list[str]:
    """Broken internal links and missing local images of every page of ``site``.

    A link is internal when it has no scheme and no host (``page.html#x``, ``#x``, ``../a/b.html``). It is broken
    when its file does not exist, or when it names an anchor that no element of an HTML target carries as ``id``
    (or ``<a name>``). ``mailto:``, ``http(s)://`` and other links with a scheme are not followed.

    Returns:
        One message per problem, ``"<page>: <what>"``; empty when the site is sound.
    """
    site = site.resolve()
    pages = {p: parse_page(p) for p in html_pages(site)}
    problems: list[str] = []
    id_cache: dict[Path, set[str]] = {p: pg.ids for p, pg in pages.items()}
    for path, page in pages.items():
        rel = path.relative_to(site)
        for src in page.images:
            if src.startswith("data:") or not _is_local(src):
                continue
            target, _ = _target(path, src, site)
            if not target.is_file():
                problems.append(f"{rel}: image {src!r} -> missing file {target}")
        for href in page.links:
            if not _is_local(href) or href.startswith(("javascript:", "mailto:")):
                continue
            target, fragment = _target(path, href, site)
            if not target.exists():
                problems.append(f"{rel}: link {href!r} -> missing file {target}")
                continue
            if fragment and target.suffix == ".html":
                if target not in id_cache:
                    id_cache[target] = parse_page(target).ids
                if fragment not in id_cache[target]:
                    problems.append(f"{rel}: link {href!r} -> no element with id {fragment!r} in {target.name}")
    return problems


# ----------------------------------------------------------------------------------------------------------------
# Browser pass: Chromium through chromedriver (W3C WebDriver over HTTP)
# ----------------------------------------------------------------------------------------------------------------
class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    errors: list[str]

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - signature of the base class
        pass

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        if self.path.split("?")[0] != "/favicon.ico":  # browsers ask for it unprompted
            self.errors.append(f"HTTP {code} for {self.path}")
        super().send_error(code, message, explain)


@contextlib.contextmanager
def serve(site: Path) -> Iterator[tuple[str, list[str]]]:
    """Serve ``site`` on 127.0.0.1 (free port) in a thread; yields the base URL and the list of HTTP errors."""
    errors: list[str] = []
    handler = type("Handler", (_QuietHandler,), {"errors": errors})

    def make(*a: object, **k: object) -> http.server.SimpleHTTPRequestHandler:
        return handler(*a, directory=str(site), **k)  # type: ignore[arg-type]

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), make)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", errors
    finally:
        server.shutdown()
        server.server_close()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _find(candidates: tuple[str, ...], name: str) -> str | None:
    for c in candidates:
        if Path(c).is_file() and os.access(c, os.X_OK):
            return c
    return shutil.which(name)


class WebDriver:
    """A minimal W3C WebDriver client for a local chromedriver: new session, navigate, run script, screenshot.

    Hand-written on :mod:`urllib` instead of selenium because the protocol is four HTTP calls here, and selenium
    would add seven pinned packages and a "selenium-manager" that tries to download drivers.
    """

    def __init__(self, chromium: str, chromedriver: str, profile_dir: str) -> None:
        self.port = _free_port()
        self.log = tempfile.NamedTemporaryFile(prefix="chromedriver-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen([chromedriver, f"--port={self.port}"], stdout=self.log, stderr=subprocess.STDOUT)
        self.base = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while True:
            try:
                if self._call("GET", "/status")["value"].get("ready"):
                    break
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"chromedriver did not start (log: {self.log.name})")
            time.sleep(0.2)
        caps = {
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "goog:chromeOptions": {
                        "binary": chromium,
                        "args": [*CHROMIUM_FLAGS, f"--user-data-dir={profile_dir}"],
                    },
                }
            }
        }
        self.session = self._call("POST", "/session", caps)["value"]["sessionId"]

    def _call(self, method: str, path: str, body: object | None = None, timeout: float = 120) -> dict:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:500]
            raise RuntimeError(f"WebDriver {method} {path}: HTTP {exc.code}: {detail}") from None

    def _session(self, method: str, path: str, body: object | None = None) -> object:
        return self._call(method, f"/session/{self.session}{path}", body)["value"]

    def get(self, url: str) -> None:
        """Open ``url`` in the browser."""
        self._session("POST", "/url", {"url": url})

    def script(self, js: str, *args: object) -> object:
        """Run ``js`` synchronously in the page and return its result."""
        return self._session("POST", "/execute/sync", {"script": js, "args": list(args)})

    def cdp(self, cmd: str, params: dict | None = None) -> dict:
        """Send a Chrome DevTools Protocol command and return its result."""
        return self._session("POST", "/goog/cdp/execute", {"cmd": cmd, "params": params or {}})  # type: ignore[return-value]

    def full_page_png(self) -> bytes:
        """A PNG screenshot of the whole page (capped at ``MAX_SHOT_HEIGHT`` px)."""
        metrics = self.cdp("Page.getLayoutMetrics")
        size = metrics.get("cssContentSize") or metrics["contentSize"]
        width, height = int(size["width"]), min(int(size["height"]), MAX_SHOT_HEIGHT)
        shot = self.cdp(
            "Page.captureScreenshot",
            {"format": "png", "captureBeyondViewport": True,
             "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}},
        )  # fmt: skip
        return base64.b64decode(shot["data"])

    def close(self) -> None:
        """End the WebDriver session and stop chromedriver."""
        started = bool(getattr(self, "session", None))
        with contextlib.suppress(Exception):
            if started:
                self._call("DELETE", f"/session/{self.session}", timeout=30)
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()
        if started:  # keep the log only when the start failed (the error message names it)
            Path(self.log.name).unlink(missing_ok=True)


#: Run in the page: make lazy images load, then report every <img> that has not loaded.
_BROKEN_IMAGES_JS = """
for (const img of document.images) { img.loading = 'eager'; }
window.scrollTo(0, document.body.scrollHeight); window.scrollTo(0, 0);
return Array.from(document.images)
  .filter(img => !(img.complete && img.naturalWidth > 0))
  .map(img => img.getAttribute('src'));
"""


def _wait_ready(driver: WebDriver, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while driver.script("return document.readyState") != "complete":
        if time.monotonic() > deadline:
            raise RuntimeError("page did not finish loading")
        time.sleep(0.1)


def check_browser(site: Path, shots: Path, chromium: str, chromedriver: str) -> tuple[list[str], int]:
    """Open every page in headless Chromium; return problems and the number of screenshots saved."""
    site = site.resolve()
    shots.mkdir(parents=True, exist_ok=True)
    problems: list[str] = []
    n = 0
    with serve(site) as (base, http_errors), tempfile.TemporaryDirectory(prefix="chromium-profile-") as prof:
        driver = WebDriver(chromium, chromedriver, prof)
        try:
            for page in html_pages(site):
                rel = page.relative_to(site).as_posix()
                del http_errors[:]
                driver.get(f"{base}/{rel}")
                _wait_ready(driver)
                time.sleep(0.3)  # let late images (decoded after 'load') settle
                broken = driver.script(_BROKEN_IMAGES_JS)
                for src in broken or []:  # type: ignore[union-attr]
                    problems.append(f"{rel}: image {src!r} did not load in the browser")
                for err in http_errors:
                    problems.append(f"{rel}: {err}")
                out = shots / (rel.removesuffix(".html").replace("/", "__") + ".png")
                out.write_bytes(driver.full_page_png())
                n += 1
        finally:
            driver.close()
    return problems, n


def main(argv: list[str] | None = None) -> int:
    """Check every page of the built site; 0 when no page has a problem."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("site", nargs="?", type=Path, default=DEFAULT_SITE, help="built site (default: _build/html)")
    ap.add_argument("--static-only", action="store_true", help="links and files only, no browser, no screenshots")
    args = ap.parse_args(argv)
    site: Path = args.site
    if not (site / "index.html").is_file():
        print(f"{site}: no index.html; build the book first (jupyter-book build book/ or make book)", file=sys.stderr)
        return 1
    pages = html_pages(site)
    problems = check_static(site)
    print(f"static check: {len(pages)} pages, {len(problems)} problem(s)")
    if not args.static_only:
        chromium = _find(CHROMIUM_CANDIDATES, "chromium")
        chromedriver = _find(CHROMEDRIVER_CANDIDATES, "chromedriver")
        if not chromium or not chromedriver:
            print(
                "Chromium and chromedriver are needed for the browser check: apt-get install chromium chromium-driver "
                "(Debian), or run with --static-only.",
                file=sys.stderr,
            )
            return 2
        browser_problems, n = check_browser(site, site / SCREENSHOTS, chromium, chromedriver)
        problems += browser_problems
        print(f"browser check: {n} pages opened in {chromium}, screenshots in {site / SCREENSHOTS}")
    if problems:
        print(f"{len(problems)} problem(s):", file=sys.stderr)
        for p in problems:
            print(f"  {p}", file=sys.stderr)
        return 1
    print("site OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
