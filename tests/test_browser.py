"""A real headless Chromium views the built site: math is typeset, search answers, and no request
leaves 127.0.0.1.

Uses Debian's chromium (`apt-get install -y chromium`), driven by the playwright package; never
`playwright install`, which downloads a browser.
"""

import contextlib
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from docs_support import html_path, site_pages

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# The first of these pages that has math is opened; the home page always has some.
MATH_PAGES = ["reference_guides/notation.md", "reference_guides/sft.md", "index.md"]
SEARCH_WORD = "tokenizer"  # in docs/getting-started.md


@pytest.fixture(scope="module")
def server(built_site):
    """`python -m http.server` on a free local port, serving the built site."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=built_site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/"
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1)
            break
        except OSError:
            time.sleep(0.1)
    yield url
    proc.terminate()
    proc.wait(timeout=10)


@pytest.fixture(scope="module")
def visit(server, built_site):
    """Open a page with math, then search; record what the browser saw and every request."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} not found: install it with `apt-get install -y chromium`")
    from playwright.sync_api import sync_playwright

    math_page = next(
        uri for uri in MATH_PAGES if 'class="arithmatex"' in read(built_site / html_path(uri))
    )
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        context = browser.new_context()  # a fresh, throw-away profile
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()

        page.goto(server + html_path(math_page), wait_until="networkidle")
        settle(page, ".arithmatex .katex")  # the tests below report what is missing
        math = page.eval_on_selector_all(
            ".arithmatex",
            "els => els.map(e => ({katex: !!e.querySelector('.katex'),"
            " raw: [...e.childNodes].filter(n => n.nodeType === 3).map(n => n.data).join('')}))",
        )

        hits = search(page, SEARCH_WORD)
        page.wait_for_load_state("networkidle")
        browser.close()
    return {"page": math_page, "math": math, "hits": hits, "requests": requests}


def settle(page, selector: str, timeout_ms: int = 15_000) -> bool:
    """Wait for `selector` to appear; absence is for the tests to report."""
    from playwright.sync_api import TimeoutError

    with contextlib.suppress(TimeoutError):
        page.wait_for_selector(selector, timeout=timeout_ms)
        return True
    return False


def search(page, word: str) -> int:
    """Type `word` into Material's search box; return the number of results shown."""
    # Material searches on key events (so no `fill`), and a query typed before its worker has
    # loaded the index is dropped: type it again until results show.
    box = page.locator("input.md-search__input")
    for _ in range(10):
        box.fill("")
        box.press_sequentially(word, delay=20)
        if settle(page, ".md-search-result__item", timeout_ms=1_500):
            return page.locator(".md-search-result__item").count()
    return 0


def read(path: Path) -> str:
    return path.read_text(encoding="utf-8") if path.exists() else ""


def test_math_is_typeset(visit):
    assert visit["math"], f"no .arithmatex element on {visit['page']}"
    untypeset = [m["raw"] for m in visit["math"] if not m["katex"]]
    assert not untypeset, f"math left as TeX on {visit['page']}: {untypeset[:3]}"
    # No delimiter survives as visible text: KaTeX replaced the element's content.
    leftovers = [
        m["raw"] for m in visit["math"] if any(d in m["raw"] for d in ("$$", "\\[", "\\("))
    ]
    assert not leftovers, leftovers[:3]


def test_search_answers(visit):
    assert visit["hits"] >= 1


def test_every_request_stays_local(visit):
    assert visit["requests"], "no request was recorded"
    outside = [
        url
        for url in visit["requests"]
        if urlsplit(url).scheme not in ("data", "blob") and urlsplit(url).hostname != "127.0.0.1"
    ]
    assert not outside, f"requests that left 127.0.0.1: {outside}"


@pytest.fixture(scope="module")
def math_on_every_page(server, built_site):
    """Open every page that has math, in one browser; per page, the formulas KaTeX failed on."""
    from playwright.sync_api import sync_playwright

    pages = [u for u in site_pages() if 'class="arithmatex"' in read(built_site / html_path(u))]
    assert len(pages) > 3, "expected math on the reference guides"
    failures = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page()
        for uri in pages:
            page.goto(server + html_path(uri), wait_until="networkidle")
            settle(page, ".arithmatex .katex")
            # `throwOnError: false` makes KaTeX show a bad formula in red as .katex-error.
            failures[uri] = page.eval_on_selector_all(
                ".arithmatex",
                "els => els.filter(e => !e.querySelector('.katex')"
                " || e.querySelector('.katex-error')).map(e => e.textContent.slice(0, 120))",
            )
        browser.close()
    return failures


@pytest.mark.parametrize("uri", site_pages())
def test_every_formula_renders(math_on_every_page, uri):
    assert not math_on_every_page.get(uri), f"{uri}: {math_on_every_page[uri][:3]}"
