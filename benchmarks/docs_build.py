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

`--against REV` also builds the site as it was at git revision REV (a temporary worktree, its own
`src/` first on the path), alternating with the current builds so both see the same machine
load, and reports the ratio of the medians.

    .venv/bin/python -m benchmarks.docs_build --reps 3
    .venv/bin/python -m benchmarks.docs_build --reps 3 --against HEAD~1
"""

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from contextlib import contextmanager
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
    parser.add_argument("--against", metavar="REV", help="also build git revision REV, alternately")
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
    with checkout(args.against) as baseline:
        builds, before = [], []
        for _ in range(args.reps):
            if baseline:
                before.append(timed_build(baseline))
                print(f"{args.against} {len(before)}: {json.dumps(before[-1])}", flush=True)
            builds.append(timed_build(REPO))
            print(f"build {len(builds)}: {json.dumps(builds[-1])}", flush=True)
    results.update(builds=builds, median=medians(builds))
    if baseline:
        results["against"] = {"rev": args.against, "builds": before, "median": medians(before)}
    print(write_results("docs_build", results, table(results), args.out))


@contextmanager
def checkout(rev: str | None):
    """A temporary worktree of `rev` (None: nothing), sharing this checkout's node_modules."""
    if rev is None:
        yield None
        return
    folder = Path(tempfile.mkdtemp(prefix="bench-rev-")) / "repo"
    subprocess.run(
        ["git", "worktree", "add", "-q", "--detach", str(folder), rev], cwd=REPO, check=True
    )
    try:
        (folder / "node_modules").symlink_to(REPO / "node_modules")
        yield folder
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(folder)], cwd=REPO, check=True)


def timed_build(repo: Path) -> dict:
    """One instrumented build of the site in `repo`, in a fresh process, with `repo`'s package."""
    site = Path(tempfile.mkdtemp(prefix="bench-site-"))
    env = {**os.environ, "PYTHONPATH": str(repo / "src")}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.docs_build", "--worker", str(site)],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
    )
    wall = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(
            f"the strict build in {repo} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        )
    line = next(line for line in done.stdout.splitlines() if line.startswith(PROTOCOL))
    return {**json.loads(line[len(PROTOCOL) :]), "process_s": wall}


def medians(builds: list[dict]) -> dict:
    keys = ("process_s", "build_s", "mkdocstrings_s", "hooks_s", "other_plugins_s", "rest_s")
    median = {key: statistics.median(build[key] for build in builds) for key in keys}
    hooks = sorted({name for build in builds for name in build["hooks"]})
    median["hooks"] = {h: statistics.median(b["hooks"].get(h, 0) for b in builds) for h in hooks}
    return median


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
    if against := results.get("against"):
        before = against["median"]
        lines.append(
            f"\nBuilt alternately with the site at `{against['rev']}`: its median build "
            f"{before['build_s']:.2f} s (our hooks {before['hooks_s']:.2f} s); now / then = "
            f"**{median['build_s'] / before['build_s']:.2f}**. Builds, then and now: "
            + ", ".join(
                f"{b['build_s']:.1f} / {a['build_s']:.1f}"
                for b, a in zip(against["builds"], results["builds"], strict=True)
            )
            + " s."
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
