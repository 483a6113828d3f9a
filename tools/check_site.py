"""Open the built documentation site in headless Chromium and check what a reader would see (``make docs-check``).

The site folder (``make docs`` builds ``site/``) is served on 127.0.0.1 by a thread of this process, and
Playwright drives the system's Chromium (Debian's ``chromium`` package; Playwright's own browser download is not
used). For the home page, one API page and one results page:

- no console error, no uncaught page error, no failed request and no HTTP error;
- every image loaded (``naturalWidth > 0``), and a results page has at least one;
- code blocks rendered: each ``pre > code`` is visible, monospaced and, for code in a named language, highlighted;

then the search box, given "value head", must list at least one result. A screenshot of each page and of the search
results is written to the output folder, with ``report.json``. The exit status is 1 if any check failed.

    python tools/check_site.py site --out site-check
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import shutil
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from playwright.sync_api import TimeoutError as PlaywrightTimeoutError
from playwright.sync_api import sync_playwright

PAGES = {
    "home": "",
    "api": "api/sppo_rl/",
    "results": "results/control_suite/",
}
SEARCH_QUERY = "value head"
VIEWPORT = {"width": 1280, "height": 900}
TIMEOUT_MS = 60_000


@dataclass
class PageReport:
    name: str
    url: str
    title: str = ""
    console_errors: list[str] = field(default_factory=list)
    failed_requests: list[str] = field(default_factory=list)
    images: int = 0
    broken_images: list[str] = field(default_factory=list)
    code_blocks: int = 0
    unrendered_code_blocks: int = 0
    screenshots: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    """Serve ``folder`` on 127.0.0.1 (a free port) while the block runs; yields the base URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def find_chromium(given: str | None) -> str:
    """The Chromium executable: ``given``, else ``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH."""
    for candidate in (given, os.environ.get("CHROMIUM"), "chromium", "chromium-browser"):
        if candidate and (path := shutil.which(candidate)):
            return path
    raise SystemExit(
        "check_site: no Chromium found: install Debian's package (apt-get install chromium) or pass --chromium"
    )


_IMAGES_JS = """() => Array.from(document.images).map(img => ({
    src: img.currentSrc || img.src, complete: img.complete, width: img.naturalWidth}))"""

# A code block is rendered when its <pre> has a size on the page, its text is set in a monospaced font and, for code
# in a named language (Markdown's ```python), the highlighter has coloured its tokens. Plain blocks (reST ``::`` in
# docstrings, console output) have no tokens to colour.
_CODE_JS = """() => Array.from(document.querySelectorAll('article pre > code')).map(code => {
    const box = code.parentElement.getBoundingClientRect();
    const holder = code.closest('.highlight');
    const language = holder ? (Array.from(holder.classList).find(c => c.startsWith('language-')) || '') : '';
    return {visible: box.width > 0 && box.height > 0 && code.textContent.trim().length > 0,
            monospace: /mono/i.test(getComputedStyle(code).fontFamily),
            language: language.replace('language-', ''),
            tokens: code.querySelectorAll('span[class]').length, text: code.textContent.slice(0, 60)};
})"""


def check_page(context: Any, name: str, url: str, out: Path) -> PageReport:
    report = PageReport(name=name, url=url)
    page = context.new_page()
    page.on("console", lambda msg: msg.type == "error" and report.console_errors.append(msg.text))
    page.on("pageerror", lambda err: report.console_errors.append(f"uncaught: {err}"))
    page.on("requestfailed", lambda req: report.failed_requests.append(f"{req.url} ({req.failure})"))
    page.on("response", lambda r: r.status >= 400 and report.failed_requests.append(f"{r.url} ({r.status})"))
    response = page.goto(url, wait_until="networkidle", timeout=TIMEOUT_MS)
    if response is None or not response.ok:
        report.problems.append(f"the page did not load: {response.status if response else 'no response'}")
    report.title = page.title()
    images = page.evaluate(_IMAGES_JS)
    report.images = len(images)
    report.broken_images = [img["src"] for img in images if not img["complete"] or img["width"] == 0]
    blocks = page.evaluate(_CODE_JS)
    report.code_blocks = len(blocks)
    report.unrendered_code_blocks = sum(
        1
        for block in blocks
        if not block["visible"]
        or not block["monospace"]
        or (block["language"] not in ("", "text") and block["tokens"] == 0)
    )
    # what a reader sees first, and the whole page (not for the API page: tens of thousands of pixels)
    shot = out / f"{name}.png"
    page.screenshot(path=str(shot))
    report.screenshots = [str(shot)]
    if name != "api":
        page.screenshot(path=str(out / f"{name}-full.png"), full_page=True)
        report.screenshots.append(str(out / f"{name}-full.png"))
    if images:
        page.locator("article img").first.screenshot(path=str(out / f"{name}-image.png"))
        report.screenshots.append(str(out / f"{name}-image.png"))
    page.close()

    if report.console_errors:
        report.problems.append(f"console errors: {report.console_errors}")
    if report.failed_requests:
        report.problems.append(f"failed requests: {report.failed_requests}")
    if report.broken_images:
        report.problems.append(f"images not loaded: {report.broken_images}")
    if name == "results" and report.images == 0:
        report.problems.append("a results page without its plots")
    if report.code_blocks == 0 and name != "results":
        report.problems.append("no code block on the page")
    if report.unrendered_code_blocks:
        report.problems.append(f"{report.unrendered_code_blocks} code block(s) not rendered")
    return report


def check_search(context: Any, base: str, out: Path) -> dict[str, Any]:
    """Type the query into the search box of the home page; the results the reader sees."""
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda msg: msg.type == "error" and errors.append(msg.text))
    page.on("pageerror", lambda err: errors.append(f"uncaught: {err}"))
    page.goto(base, wait_until="networkidle", timeout=TIMEOUT_MS)
    page.click("input.md-search__input", timeout=TIMEOUT_MS)
    page.keyboard.type(SEARCH_QUERY, delay=20)  # as a reader types: the search box reacts to key events
    problems = []
    try:
        page.wait_for_selector(".md-search-result__item", timeout=TIMEOUT_MS)
    except PlaywrightTimeoutError:
        problems.append(f"no search result for {SEARCH_QUERY!r} within {TIMEOUT_MS / 1000:.0f} s")
    results = page.eval_on_selector_all(".md-search-result__item", "items => items.map(i => i.innerText)")
    if results and not any(SEARCH_QUERY in text.lower() for text in results):
        problems.append(f"no search result shows {SEARCH_QUERY!r}")
    meta = page.inner_text(".md-search-result__meta") if page.query_selector(".md-search-result__meta") else ""
    shot = out / "search.png"
    page.screenshot(path=str(shot))
    page.close()
    if errors:
        problems.append(f"console errors: {errors}")
    titles = [text.strip().split("\n")[0] for text in results]
    return {"query": SEARCH_QUERY, "meta": meta, "results": titles, "screenshot": str(shot), "problems": problems}


def check_site(site: Path, out: Path, chromium: str | None = None) -> dict[str, Any]:
    """Run every check on the built site in ``site``; screenshots and ``report.json`` go to ``out``."""
    if not (site / "index.html").is_file():
        raise SystemExit(f"check_site: {site}/index.html not found: build the site first (make docs)")
    out.mkdir(parents=True, exist_ok=True)
    executable = find_chromium(chromium)
    with serve(site) as base, sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox refuses to start
        browser = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        context = browser.new_context(viewport=VIEWPORT)
        pages = [check_page(context, name, base + path, out) for name, path in PAGES.items()]
        search = check_search(context, base, out)
        browser.close()
    report = {
        "chromium": executable,
        "pages": [asdict(p) for p in pages],
        "search": search,
        "ok": not any(p.problems for p in pages) and not search["problems"],
    }
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("site", nargs="?", default="site", help="the built site (default: site)")
    parser.add_argument("--out", default="site-check", help="screenshots and report.json (default: site-check)")
    parser.add_argument("--chromium", default=None, help="Chromium executable (default: $CHROMIUM, chromium)")
    args = parser.parse_args(argv)
    report = check_site(Path(args.site), Path(args.out), args.chromium)
    for page in report["pages"]:
        status = "ok" if not page["problems"] else "FAILED: " + "; ".join(page["problems"])
        print(
            f"{page['name']:8s} {page['url']}: {page['images']} images, {page['code_blocks']} code blocks, "
            f"{len(page['console_errors'])} console errors -> {status}"
        )
    search = report["search"]
    status = "ok" if not search["problems"] else "FAILED: " + "; ".join(search["problems"])
    print(f"search   {search['query']!r}: {len(search['results'])} results ({search['meta']}) -> {status}")
    print(f"screenshots and report.json in {args.out}/")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
