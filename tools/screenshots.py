"""Screenshots of built pages at desktop and phone width, to look at before calling a page done.

    mkdocs build --site-dir /tmp/site
    python tools/screenshots.py /tmp/site annotated_trainers/grpo.html reference_guides/dpo.html#x

writes /tmp/screenshots/<page>[_<anchor>]_<width>.png for widths 1400 and 390 (full-page with
--full). Uses Debian's chromium through playwright, like tests/test_browser.py; serves the site
on 127.0.0.1 only.
"""

import argparse
import socket
import subprocess
import sys
import time
from pathlib import Path

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run"]
WIDTHS = {1400: 900, 390: 844}  # width -> viewport height


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("site", type=Path, help="a built site folder")
    parser.add_argument("pages", nargs="+", help="page paths, optionally with #anchor")
    parser.add_argument("--out", type=Path, default=Path("/tmp/screenshots"))
    parser.add_argument("--full", action="store_true", help="the whole page, not one screen")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "--bind", "127.0.0.1", str(port)],
        cwd=args.site,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            for spec in args.pages:
                path, _, anchor = spec.partition("#")
                for width, height in WIDTHS.items():
                    page = browser.new_page(viewport={"width": width, "height": height})
                    page.goto(f"http://127.0.0.1:{port}/{path}", wait_until="networkidle")
                    page.wait_for_timeout(500)  # KaTeX typesets and math is fitted after load
                    if anchor:  # ids may start with a digit: no CSS selector
                        page.evaluate(f"document.getElementById({anchor!r})?.scrollIntoView()")
                        page.wait_for_timeout(300)
                    name = path.removesuffix(".html").replace("/", "_")
                    shot = args.out / f"{name}{'_' + anchor if anchor else ''}_{width}.png"
                    page.screenshot(path=shot, full_page=args.full)
                    print(shot)
                    page.close()
            browser.close()
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
