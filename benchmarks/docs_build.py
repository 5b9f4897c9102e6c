"""`mkdocs build --strict`: how long it takes, and how much of it is mkdocstrings, our hooks and
the rest.

Each repetition is a fresh process that builds the site the way `mkdocs build --strict` does
(`load_config`, `on_startup`, `build`) with timers around:

- every plugin event handler, attributed to the plugin or hook that registered it (mkdocs keeps
  that origin), so our hooks (`docs/hooks/*.py`) are timed one by one;
- mkdocstrings' Markdown block processor, which collects and renders each `::: identifier` while
  a page's Markdown is converted, outside any plugin event (mkdocstrings' cost is that plus its
  own and autorefs' event handlers).

"rest" is the build's time minus all of that: mkdocs itself, Markdown, the theme's templates,
copying assets. The process's whole wall time (interpreter start and imports included) is
reported too, since that is what a person waiting for `mkdocs build` sees.

    .venv/bin/python -m benchmarks.docs_build --reps 3
"""

import argparse
import json
import logging
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from benchmarks.common import PROTOCOL, REPO, RESULTS, machine, write_results

MKDOCSTRINGS = {"mkdocstrings", "autorefs"}


def timed(function, totals: dict, name: str):
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            totals[name] += time.perf_counter() - start

    return wrapper


def build_once(site_dir: Path) -> dict:
    """One instrumented strict build; seconds per part."""
    from mkdocs.commands.build import build
    from mkdocs.config import load_config
    from mkdocs.plugins import PluginCollection
    from mkdocstrings import AutoDocProcessor

    totals: dict[str, float] = defaultdict(float)
    AutoDocProcessor.run = timed(AutoDocProcessor.run, totals, "mkdocstrings")
    run_event = PluginCollection.run_event

    def run_timed_event(collection, name, *args, **kwargs):
        events = collection.events[name]
        for index, method in enumerate(events):
            if not getattr(method, "timed", False):
                origin = collection._event_origins.get(method, "<unknown>")
                part = "mkdocstrings" if origin in MKDOCSTRINGS else origin
                events[index] = timed(method, totals, part)
                events[index].timed = True
        return run_event(collection, name, *args, **kwargs)

    PluginCollection.run_event = run_timed_event
    start = time.perf_counter()
    config = load_config(str(REPO / "mkdocs.yml"), strict=True, site_dir=str(site_dir))
    config.plugins.on_startup(command="build", dirty=False)
    try:
        build(config)
    finally:
        config.plugins.on_shutdown()
    total = time.perf_counter() - start
    hooks = {name: seconds for name, seconds in totals.items() if name.startswith("docs/hooks/")}
    plugins = {
        name: seconds
        for name, seconds in totals.items()
        if name not in hooks and name != "mkdocstrings"
    }
    return {
        "build_s": total,
        "mkdocstrings_s": totals["mkdocstrings"],
        "hooks_s": sum(hooks.values()),
        "other_plugins_s": sum(plugins.values()),
        "rest_s": total - sum(totals.values()),
        "hooks": hooks,
        "other_plugins": plugins,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=3, help="builds, each in a fresh process")
    parser.add_argument("--note", default="", help="a sentence stored with the results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        try:
            print(PROTOCOL + json.dumps(build_once(args.worker)), flush=True)
        except BaseException as error:  # Abort carries the reason: say it, whatever it is
            print(f"build failed: {type(error).__name__}: {error}", file=sys.stderr, flush=True)
            raise
        return

    results = {"machine": machine(), "reps": args.reps, "note": args.note}
    builds = []
    for _ in range(args.reps):
        site = Path(tempfile.mkdtemp(prefix="bench-site-"))
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.docs_build", "--worker", str(site)],
            cwd=REPO,
            capture_output=True,
            text=True,
        )
        wall = time.perf_counter() - start
        if done.returncode != 0:
            sys.exit(f"the strict build failed (exit {done.returncode}):\n{done.stderr[-3000:]}")
        line = next(line for line in done.stdout.splitlines() if line.startswith(PROTOCOL))
        builds.append({**json.loads(line[len(PROTOCOL) :]), "process_s": wall})
        print(f"build {len(builds)}: {json.dumps(builds[-1])}", flush=True)
    medians = {
        key: statistics.median(build[key] for build in builds)
        for key in ("process_s", "build_s", "mkdocstrings_s", "hooks_s", "other_plugins_s")
    }
    medians["rest_s"] = statistics.median(build["rest_s"] for build in builds)
    hooks = sorted({name for build in builds for name in build["hooks"]})
    medians["hooks"] = {h: statistics.median(b["hooks"].get(h, 0) for b in builds) for h in hooks}
    results.update(builds=builds, median=medians)
    print(write_results("docs_build", results, table(results), args.out))


def table(results: dict) -> str:
    median = results["median"]
    lines = [
        f"Median of {results['reps']} strict builds, each in a fresh process.\n",
        "| Part | seconds | share of build |",
        "|---|---|---|",
    ]
    parts = [
        ("mkdocstrings (collect + render, its events, autorefs)", median["mkdocstrings_s"]),
        ("our hooks, all", median["hooks_s"]),
        *((f"&nbsp;&nbsp;`{name}`", seconds) for name, seconds in median["hooks"].items()),
        ("other plugins (search, offline, ...)", median["other_plugins_s"]),
        ("rest: mkdocs, Markdown, theme, assets", median["rest_s"]),
        ("**build**", median["build_s"]),
    ]
    for name, seconds in parts:
        lines.append(f"| {name} | {seconds:.2f} | {seconds / median['build_s']:.0%} |")
    lines.append(f"| whole process (start-up and imports included) | {median['process_s']:.2f} | |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
