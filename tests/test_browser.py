"""A real headless Chromium views the built site: every page is crawled (math typeset, no
console error, no request leaving 127.0.0.1, nothing wider than its column at desktop and phone
width, walkthrough notes beside their code), search answers and finds every method by name, and
the "Which trainer?" chooser leads to every method listed in STATUS.md.

Uses Debian's chromium (`apt-get install -y chromium`), driven by the playwright package; never
`playwright install`, which downloads a browser.
"""

import contextlib
import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import pytest
from support.docs import html_path, site_pages
from test_site_pages import METHODS

from annotated_trl.methods import CPU_METHODS

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
SEARCH_INDEX = "search/search_index.json"


# Like GitHub Pages: a missing file is answered with the site's 404.html and status 404.
NOT_FOUND_SERVER = """
import functools, http.server, os, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def send_error(self, code, message=None, explain=None):
        page = os.path.join(sys.argv[2], "404.html")
        if code != 404 or not os.path.exists(page):
            return super().send_error(code, message, explain)
        body = open(page, "rb").read()
        self.send_response(404)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""


@pytest.fixture(scope="module")
def server(built_site):
    """A local server for the folder above the site, so the site lives under /annotated-trl/
    (as on GitHub Pages); missing files get the site's 404 page. Yields the site's URL."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-c", NOT_FOUND_SERVER, str(port), str(built_site)],
        cwd=built_site.parent,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}/{built_site.name}/"
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
    # Material searches on key events (`fill` alone searches nothing), and a query typed before
    # its worker has loaded the index is dropped: type it again until results show.
    # Results of an earlier query are cleared first, with keys, so that they are not counted.
    # All but the last character are filled in without key events, so that the one query sent
    # is the whole word: typed key by key, the answer to "PP" could arrive after "PPO" was typed
    # and be read as its results (seen once under load, for PPO).
    box = page.locator("input.md-search__input")
    for _ in range(10):
        box.press("Control+a")
        box.press("Backspace")
        page.locator(".md-search-result__item").first.wait_for(state="detached")
        box.fill(word[:-1])
        box.press(word[-1])
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


# Desktop and phone: (width, height) of the viewport.
WIDTHS = {"desktop": (1400, 900), "phone": (390, 844)}

# Code, math, tables, pictures and text that run past the content column, or scroll inside
# their own box (a reader sees a cut-off). Material lets code blocks and tables bleed into the
# column's padding on phones, so the limit is the content column's box, `.md-content`.
CUT_OFF = """() => {
  const limit = document.querySelector('.md-content').getBoundingClientRect().right + 1;
  const found = [];
  const selector = 'pre, code, table, .arithmatex, .md-typeset__scrollwrap, img, svg, p, li';
  for (const el of document.querySelector('article').querySelectorAll(selector)) {
    const box = el.getBoundingClientRect();
    if (box.width === 0 || found.some(f => f.contains(el))) continue;  // hidden, or inside one
    const scrolls = ['auto', 'scroll', 'hidden'].includes(getComputedStyle(el).overflowX)
      && el.scrollWidth > el.clientWidth + 1;
    if (scrolls || box.right > limit) found.push(el);
  }
  const wide = document.documentElement.scrollWidth > window.innerWidth + 1 ? ['the page'] : [];
  return wide.concat(found.map(el => `<${el.tagName.toLowerCase()}> ${el.scrollWidth}px in `
    + `${Math.round(limit - el.getBoundingClientRect().left)}px: `
    + el.textContent.replace(/\\s+/g, ' ').trim().slice(0, 60)));
}"""

# Walk steps whose note is not beside its code: side by side on a desktop (tops aligned, note
# on the left), the note just above its code on a phone.
NOTE_AWAY = """(phone) => [...document.querySelectorAll('.walk-step')].flatMap(step => {
  const note = step.querySelector('.docco-doc').getBoundingClientRect();
  const code = step.querySelector('.docco-code').getBoundingClientRect();
  if (note.height === 0) return [];  // the lines before a walk's first note have none
  const beside = phone ? note.bottom <= code.top + 1 && code.top - note.bottom < 40
                       : note.right <= code.left && Math.abs(note.top - code.top) < 8;
  return beside ? [] : [step.querySelector('.docco-doc').textContent.trim().slice(0, 60)];
})"""


# The lab's charts (inline SVG): each must be drawn at a readable size, its tick labels at least
# MIN_CHART_TEXT_PX, at both widths.
MIN_CHART_TEXT_PX = 8
SMALL_CHARTS = """(min) => [...document.querySelectorAll('article svg.lab-chart')].flatMap(svg => {
  const box = svg.getBoundingClientRect();
  const text = svg.querySelector('text');
  const px = text ? text.getBoundingClientRect().height : 0;
  return box.width < 200 || px < min ? [`${svg.querySelector('title').textContent}: `
    + `${Math.round(box.width)}px wide, text ${px.toFixed(1)}px`] : [];
})"""

# Math glyphs in table cells smaller than this many pixels (fractions in a cell's text style
# came out at 7 px before katex-init.js typeset them in display style).
MIN_TABLE_MATH_PX = 7.5
TINY_TABLE_MATH = """(min) => [...document.querySelectorAll('article table .katex *')].filter(el =>
    [...el.childNodes].some(n => n.nodeType === 3 && n.data.trim() && n.data !== '\\u200b')
    && parseFloat(getComputedStyle(el).fontSize) < min).map(el => el.textContent.slice(0, 20))"""


# Resolves once the web fonts have arrived and the site's scripts have re-fitted tables and math
# to them (fit.js and katex-init.js wait for `document.fonts.ready` too, and asked first).
FONTS_FITTED = (
    """() => document.fonts.ready.then(() => new Promise(done => requestAnimationFrame(done)))"""
)

# Resolves once the page has taken a new width and the site's scripts have re-fitted math and
# tables to it (they do, 100 ms after the last resize event). A fixed wait was not enough with
# several tabs busy at once.
RESIZED = """async (width) => {
  const frame = () => new Promise(done => requestAnimationFrame(done));
  while (window.innerWidth !== width) await frame();
  await frame();  // the resize event is dispatched before this frame's callbacks
  await new Promise(done => setTimeout(done, 150));  // after the re-fits queued by the event
  await frame();
}"""

# Pages open at once in the crawl: a page load is mostly waiting (for the network to go quiet, for
# a resize to settle), so a few tabs keep the browser busy; measured on the 2-core machine, the
# crawl of 64 pages took 252 s one tab at a time.
CRAWL_TABS = 2


@pytest.fixture(scope="module")
def crawl(server, built_site):
    """Open every page in one browser, a few tabs at once; per page, what went wrong in it.

    - "math": formulas KaTeX did not typeset, or showed in red (`throwOnError: false`);
    - "console": console errors and uncaught exceptions;
    - "outside": requests to anything but 127.0.0.1 (data: and blob: URLs are local);
    - "cut_off" and "note_away", per width: see CUT_OFF and NOTE_AWAY.
    """
    import asyncio

    from playwright.async_api import async_playwright

    async def inspect(page, uri: str, seen: dict[str, list]) -> dict:
        """Load `uri` in `page` and measure it at every width; `seen` collects its events."""
        await page.goto(server + html_path(uri), wait_until="networkidle")
        await page.evaluate(FONTS_FITTED)
        if 'class="arithmatex"' in read(built_site / html_path(uri)):
            await settle_async(page, ".arithmatex .katex")
            seen["math"] = await page.eval_on_selector_all(
                ".arithmatex",
                "els => els.filter(e => !e.querySelector('.katex')"
                " || e.querySelector('.katex-error')).map(e => e.textContent.slice(0, 120))",
            )
        found = {k: list(v) for k, v in seen.items()}
        # Pages load at the first width (a resize from a phone's width leaves Material's drawer
        # sliding for a moment: the page measures wider than it is).
        for name, (width, height) in WIDTHS.items():
            if page.viewport_size != {"width": width, "height": height}:
                await page.set_viewport_size({"width": width, "height": height})
                await page.evaluate(RESIZED, width)
            if name == "desktop":
                found["tiny_math"] = await page.evaluate(TINY_TABLE_MATH, MIN_TABLE_MATH_PX)
            found[f"cut_off/{name}"] = await page.evaluate(CUT_OFF)
            found[f"note_away/{name}"] = await page.evaluate(NOTE_AWAY, name == "phone")
            found[f"small_charts/{name}"] = await page.evaluate(SMALL_CHARTS, MIN_CHART_TEXT_PX)
            found[f"charts/{name}"] = await page.locator("article svg.lab-chart").count()
        width, height = WIDTHS["desktop"]
        await page.set_viewport_size({"width": width, "height": height})
        return found

    async def tab(context, queue: list[str], results: dict) -> None:
        """One tab: take pages off `queue` until it is empty."""
        page = await context.new_page()
        seen: dict[str, list] = {}

        def note(kind: str, text: str) -> None:
            seen[kind].append(text)

        page.on(
            "console", lambda m: note("console", f"error: {m.text}") if m.type == "error" else 0
        )
        page.on("pageerror", lambda e: note("console", f"exception: {e}"))
        # A failed load shows in the console without its URL; record the URL here.
        page.on(
            "response",
            lambda r: note("console", f"HTTP {r.status}: {r.url}") if r.status >= 400 else 0,
        )
        page.on("request", lambda r: note("outside", r.url) if not is_local(r.url) else 0)
        while queue:
            uri = queue.pop(0)
            seen.update(console=[], outside=[], math=[])
            results[uri] = await inspect(page, uri, seen)
        await page.close()

    # Material builds its search index in a worker on every page load: for the 1.8 MB index that
    # was half of the crawl's CPU (chromium: 223 CPU-s with it, 114 without, measured 2026-12-06).
    # The crawl's pages get an index of one page; the search tests below load the real one.
    index = json.loads((built_site / SEARCH_INDEX).read_text(encoding="utf-8"))
    one_doc = {**index, "docs": index["docs"][:1]}

    async def crawl_all() -> dict:
        results: dict[str, dict] = {}
        queue = site_pages()
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            width, height = WIDTHS["desktop"]
            context = await browser.new_context(viewport={"width": width, "height": height})
            await context.route(f"**/{SEARCH_INDEX}", lambda route: route.fulfill(json=one_doc))
            await asyncio.gather(*(tab(context, queue, results) for _ in range(CRAWL_TABS)))
            await browser.close()
        return results

    return asyncio.run(crawl_all())


async def settle_async(page, selector: str, timeout_ms: int = 15_000) -> bool:
    """`settle` for the crawl's asynchronous pages."""
    from playwright.async_api import TimeoutError

    with contextlib.suppress(TimeoutError):
        await page.wait_for_selector(selector, timeout=timeout_ms)
        return True
    return False


def is_local(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("data", "blob") or parts.hostname == "127.0.0.1"


@pytest.fixture(scope="module")
def math_on_every_page(crawl, built_site):
    pages = [u for u in site_pages() if 'class="arithmatex"' in read(built_site / html_path(u))]
    assert len(pages) > 3, "expected math on the reference guides"
    return {uri: crawl[uri]["math"] for uri in pages}


@pytest.mark.parametrize("uri", site_pages())
def test_every_formula_renders(math_on_every_page, uri):
    assert not math_on_every_page.get(uri), f"{uri}: {math_on_every_page[uri][:3]}"


@pytest.mark.parametrize("uri", site_pages())
def test_no_console_errors(crawl, uri):
    assert not crawl[uri]["console"], f"{uri}: {crawl[uri]['console'][:5]}"


@pytest.mark.parametrize("uri", site_pages())
def test_no_request_leaves_localhost(crawl, uri):
    assert not crawl[uri]["outside"], f"{uri}: {crawl[uri]['outside'][:5]}"


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("uri", site_pages())
def test_nothing_is_cut_off(crawl, uri, width):
    assert not crawl[uri][f"cut_off/{width}"], f"{uri}: {crawl[uri][f'cut_off/{width}'][:5]}"


@pytest.mark.parametrize("uri", site_pages())
def test_math_in_tables_is_readable(crawl, uri):
    assert not crawl[uri]["tiny_math"], (
        f"{uri}: glyphs under {MIN_TABLE_MATH_PX}px: {crawl[uri]['tiny_math'][:5]}"
    )


@pytest.mark.parametrize("width", list(WIDTHS))
@pytest.mark.parametrize("uri", [u for u in site_pages() if u.startswith("annotated_trainers/")])
def test_walkthrough_notes_sit_beside_their_code(crawl, uri, width):
    away = crawl[uri][f"note_away/{width}"]
    assert not away, f"{uri}: notes not beside their code: {away[:3]}"


@pytest.mark.parametrize("width", list(WIDTHS))
def test_lab_charts_are_drawn_readably(crawl, width):
    """Every chart is on the page and readable: the lab page holds them all, each walkthrough
    its method's (a GPU-only method has no lab run: the lab trains on a CPU)."""
    walkthroughs = [f"annotated_trainers/{m.key}.md" for m in CPU_METHODS]
    assert crawl["lab/index.md"][f"charts/{width}"] > 40
    assert all(crawl[u][f"charts/{width}"] >= 1 for u in walkthroughs)
    small = {u: r[f"small_charts/{width}"] for u, r in crawl.items() if r[f"small_charts/{width}"]}
    assert not small, small


# --- The chooser and search, for every method listed in STATUS.md ------------------------------


@pytest.fixture(scope="module")
def browser_page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser.new_page()
        browser.close()


# The answer section (an <h2 id>) that holds a link to the method's walkthrough; marks the first
# such link so that it can be clicked.
FIND_IN_ANSWER = """key => {
  const answers = [...document.querySelectorAll('a[href^="#"]')]
    .filter(a => a.closest('article') && !a.classList.contains('headerlink'));
  for (const answer of answers) {
    let node = document.getElementById(answer.getAttribute('href').slice(1));
    if (!node || node.tagName !== 'H2') continue;
    for (node = node.nextElementSibling; node && node.tagName !== 'H2';
         node = node.nextElementSibling) {
      const link = node.querySelector(`a[href="annotated_trainers/${key}.html"]`);
      if (link) { link.setAttribute('data-probe', key); return answer.getAttribute('href'); }
    }
  }
  return null;
}"""


@pytest.mark.parametrize("key", list(METHODS))
def test_chooser_reaches_each_method(server, browser_page, key):
    """On "Which trainer?": click a data answer; it holds a link to the method's walkthrough,
    a page the server has. (Following the link is the browser's part; the crawl opens every
    page.)"""
    page = browser_page
    if urlsplit(page.url).path != urlsplit(server + "which-trainer.html").path:
        page.goto(server + "which-trainer.html", wait_until="networkidle")
    answer = page.evaluate(FIND_IN_ANSWER, key)
    assert answer, f"no answer on the chooser leads to {key}"
    page.locator(f'article a[href="{answer}"]').first.click()
    assert page.url.endswith(answer)
    link = page.locator(f'[data-probe="{key}"]')
    assert link.is_visible()
    target = link.evaluate("a => a.href")
    assert target == server + f"annotated_trainers/{key}.html"
    assert page.request.get(target).ok


@pytest.mark.parametrize("key", list(METHODS))
def test_search_finds_each_method_by_name(server, browser_page, key):
    page = browser_page
    if page.url != server + "index.html":  # one page, searched once per method
        page.goto(server + "index.html", wait_until="networkidle")
    links = search_links(page, METHODS[key])
    wanted = (f"annotated_trainers/{key}.html", f"reference_guides/{key}.html")
    assert any(urlsplit(href).path.endswith(wanted) for href in links), (METHODS[key], links[:10])


def search_links(page, words: str) -> list[str]:
    """Type `words` into the search box; the links of the results shown."""
    if search(page, words) == 0:
        return []
    return page.eval_on_selector_all(
        ".md-search-result__item a", "els => els.map(e => e.getAttribute('href'))"
    )


# Last: it shares the chooser's browser (one sync playwright at a time per process).
def test_not_found_page_works_under_the_sub_path(server, browser_page):
    """A missing page deep under the sub-path gets a styled 404 whose links lead into the site."""
    page = browser_page.context.browser.new_page()  # its own listener, not on the shared page
    failed = []
    page.on("response", lambda r: failed.append(r.url) if r.status >= 400 else None)
    response = page.goto(server + "no/such/deep/page.html", wait_until="networkidle")
    assert response.status == 404
    assert failed == [server + "no/such/deep/page.html"], f"assets that did not load: {failed}"
    assert page.locator("article h1").inner_text().strip() == "404 - Not found"
    home = page.locator("a.md-header__button.md-logo").get_attribute("href")
    page.goto(urljoin(page.url, home), wait_until="networkidle")
    assert page.url in (server, server + "index.html")
    assert page.title().startswith("Annotated TRL")
    page.close()
