"""The test suite's own speed: wall time of the README's test command, and where the time goes.

Runs `.venv/bin/pytest` from the repository root, as `make test` does, with this file loaded as
a pytest plugin (`-p suite`) that times every test's setup, call and teardown and notes its
markers. A test with two markers counts under both; a test with none counts as "(no marker)".
The smoke tests start their subprocess runs ahead in background threads (tests/support/smoke.py),
so a smoke test's time is its own in-process work plus any wait for its subprocess, and the
marker times add up to the wall time only roughly.

    .venv/bin/python -m benchmarks.suite                     # the whole suite, once (~24 min)
    .venv/bin/python -m benchmarks.suite -m smoke --reps 3   # one selection: the smoke budget
    .venv/bin/python -m benchmarks.suite --import-floor -m smoke --reps 3  # and its floor

Every run also reports the CPU time it used (pytest and every process it started), so the wall
time can be read against the cores: a run that keeps both cores of the CI machine busy cannot
get faster by running more at once. `--import-floor` measures what the smoke tests cannot avoid:
each example script started once in a fresh process with `--help` (it imports all it imports,
prints its help and exits), one at a time. The smoke tests start every script once that way, so
the sum of those CPU seconds, over the cores, is a lower bound on their wall time.

Each selection is stored under its pytest arguments ("all" without any) in
`benchmarks/results/suite.json`, beside the selections measured before; `suite.md` shows them all.
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from benchmarks.common import OFFLINE_ENV, REPO, RESULTS, machine, render

NAME = "suite"
RECORDS_ENV = "SUITE_BENCH_RECORDS"  # where the plugin writes its records (one JSON line a test)
NO_MARKER = "(no marker)"


# ---- the plugin, loaded into the pytest process ----------------------------------------------

_started: dict[str, float] = {}
_markers: dict[str, list[str]] = {}
_outcomes: dict[str, str] = {}


def _project_markers(config) -> set[str]:
    """The markers pyproject.toml declares (not those plugins add, such as xdist's)."""
    with open(config.rootpath / "pyproject.toml", "rb") as project:
        declared = tomllib.load(project)["tool"]["pytest"]["ini_options"]["markers"]
    return {line.split(":", 1)[0] for line in declared}


def pytest_runtest_logstart(nodeid, location):
    _started[nodeid] = time.perf_counter()


def pytest_runtest_setup(item):
    declared = _project_markers(item.config)
    _markers[item.nodeid] = sorted({m.name for m in item.iter_markers()} & declared)


def pytest_runtest_logreport(report):
    if report.failed or report.when == "call" or report.nodeid not in _outcomes:
        _outcomes[report.nodeid] = "failed" if report.failed else report.outcome


def pytest_runtest_logfinish(nodeid, location):
    seconds = time.perf_counter() - _started.pop(nodeid)
    if nodeid not in _markers:  # pytest-xdist's controller: the worker that ran it records it
        return
    record = {"test": nodeid, "markers": _markers[nodeid], "seconds": seconds}
    record["worker"] = os.environ.get("PYTEST_XDIST_WORKER", "main")
    record["ended"] = time.time()
    record["outcome"] = _outcomes.get(nodeid, "unknown")
    with open(os.environ[RECORDS_ENV], "a") as records:
        records.write(json.dumps(record) + "\n")


# ---- the coordinator ------------------------------------------------------------------------


def run_suite(selection: list[str]) -> dict:
    """One pytest run over `selection` (pytest arguments): wall time, exit code, test records."""
    records = Path(tempfile.mkstemp(prefix="suite-", suffix=".jsonl")[1])
    started = time.time()
    pytest = Path(sys.executable).with_name("pytest")  # the README's `.venv/bin/pytest`
    # The plugin is this module, found from the repository root (pyproject.toml's `pythonpath`).
    command = [str(pytest), "-p", "benchmarks.suite", "-p", "no:cacheprovider", "-q", *selection]
    env = {**os.environ, **OFFLINE_ENV, RECORDS_ENV: str(records)}
    start, cpu_before = time.perf_counter(), children_cpu_s()
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    wall, cpu = time.perf_counter() - start, children_cpu_s() - cpu_before
    tests = [json.loads(line) for line in records.read_text().splitlines()]
    for test in tests:
        test["ended"] -= started  # seconds into the run
    if os.environ.get("SUITE_KEEP_RECORDS"):
        (Path(tempfile.gettempdir()) / "suite-last.jsonl").write_text(records.read_text())
    records.unlink()
    summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else ""
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "exit_code": done.returncode,
        "summary": summary,
        "tests": tests,
    }


def children_cpu_s() -> float:
    """User + system CPU seconds of every finished process this one has waited for, and theirs."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def import_floor() -> dict:
    """CPU seconds of `python <script> --help` for every example script, one fresh process each."""
    env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1"}  # as the smoke tests run them
    scripts = {}
    for script in sorted((REPO / "annotated_examples").glob("*_training.py")):
        before = children_cpu_s()
        done = subprocess.run([sys.executable, str(script), "--help"], env=env, capture_output=True)
        if done.returncode != 0:
            sys.exit(f"{script.name} --help failed: {done.stderr.decode()[-500:]}")
        scripts[script.name] = children_cpu_s() - before
        print(f"{script.name} --help: {scripts[script.name]:.2f} CPU-s")
    return {"scripts": scripts, "total_cpu_s": sum(scripts.values()), "cores": os.cpu_count()}


def split_by_marker(tests: list[dict]) -> dict:
    """marker -> number of tests and their summed seconds."""
    split: dict[str, dict] = {}
    for test in tests:
        for marker in test["markers"] or [NO_MARKER]:
            entry = split.setdefault(marker, {"tests": 0, "seconds": 0.0})
            entry["tests"] += 1
            entry["seconds"] += test["seconds"]
    return split


def seconds_per_file(tests: list[dict]) -> dict:
    """test file -> the seconds its tests took, longest first (tests/support/schedule.py starts
    the longest files first from these)."""
    files: dict[str, float] = {}
    for test in tests:
        path = test["test"].split("::")[0]
        files[path] = files.get(path, 0.0) + test["seconds"]
    return {path: round(s, 1) for path, s in sorted(files.items(), key=lambda item: -item[1])}


def measure(selection: list[str], reps: int) -> dict:
    runs = []
    for rep in range(reps):
        run = run_suite(selection)
        print(
            f"run {rep + 1}: {run['wall_s']:.1f} s, {run['cpu_s']:.0f} CPU-s, "
            f"exit {run['exit_code']}: {run['summary']}"
        )
        if run["exit_code"] != 0:
            failed = [test["test"] for test in run["tests"] if test["outcome"] == "failed"]
            sys.exit(
                f"the test run failed (exit {run['exit_code']}): {run['summary']}\n"
                + "\n".join(f"failed: {test}" for test in failed)
            )
        runs.append(run)
    median_run = sorted(runs, key=lambda run: run["wall_s"])[len(runs) // 2]
    slowest = sorted(median_run["tests"], key=lambda test: -test["seconds"])[:10]
    return {
        "wall_s": [run["wall_s"] for run in runs],
        "median_wall_s": statistics.median(run["wall_s"] for run in runs),
        "cpu_s": [run["cpu_s"] for run in runs],
        "summary": median_run["summary"],
        "by_marker": split_by_marker(median_run["tests"]),
        "seconds_per_file": seconds_per_file(median_run["tests"]),
        "slowest": [{"test": t["test"], "seconds": t["seconds"]} for t in slowest],
    }


def table(results: dict) -> str:
    parts = []
    cores = results["machine"]["cores"]
    for selection, measured in results["selections"].items():
        walls = ", ".join(f"{wall:.0f}" for wall in measured["wall_s"])
        cpus = ", ".join(f"{cpu:.0f}" for cpu in measured["cpu_s"])
        pairs = zip(measured["cpu_s"], measured["wall_s"], strict=True)
        busy = statistics.mean(cpu / wall for cpu, wall in pairs)
        parts.append(
            f"**`pytest{'' if selection == 'all' else ' ' + selection}`**: "
            f"{measured['median_wall_s']:.0f} s wall (median of {len(measured['wall_s'])}: "
            f"{walls} s; {cpus} CPU-s, i.e. {busy:.2f} of {cores} cores busy on average); "
            f"{measured['summary']}, measured {measured['measured_at']}.\n"
        )
        rows = sorted(measured["by_marker"].items(), key=lambda item: -item[1]["seconds"])
        lines = ["| Marker | tests | seconds in those tests |", "|---|---|---|"]
        lines += [f"| {name} | {e['tests']} | {e['seconds']:.0f} |" for name, e in rows]
        lines += ["", "| Slowest tests | seconds |", "|---|---|"]
        lines += [f"| `{t['test']}` | {t['seconds']:.1f} |" for t in measured["slowest"]]
        parts.append("\n".join(lines) + "\n")
    if "import_floor" in results:
        floor = results["import_floor"]
        costs = floor["scripts"].values()
        parts.append(
            f"**Cost of a bare start**, measured {floor['measured_at']}: starting each of the "
            f"{len(floor['scripts'])} example scripts in a fresh process (`--help`: its imports, "
            f"nothing else) costs {min(costs):.1f}–{max(costs):.1f} CPU-s, "
            f"{floor['total_cpu_s']:.0f} CPU-s in all: what a bare `python script.py` costs "
            "before its first step. The suite starts one script that way, where what a user's "
            "terminal shows is the point (tests/test_badinput.py); every other script run is "
            "forked from a warm interpreter (tests/support/warm.py).\n"
        )
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-m", dest="marker_expression", help="pytest marker expression")
    parser.add_argument("tests", nargs="*", help="test files or ids (default: all of tests/)")
    parser.add_argument("--reps", type=int, default=1, help="test runs; the median is kept")
    parser.add_argument("--note", default="", help="a sentence stored with the results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--import-floor", action="store_true", help="also measure every script's import cost"
    )
    args = parser.parse_args()

    path = args.out / f"{NAME}.json"
    results = json.loads(path.read_text()) if path.exists() else {"selections": {}}
    results["machine"] = machine()
    results["note"] = args.note
    selection = [*(["-m", args.marker_expression] if args.marker_expression else []), *args.tests]
    if args.import_floor:
        results["import_floor"] = import_floor()
        results["import_floor"]["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    measured = measure(selection, args.reps)
    measured["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    measured["load_average_1min_at_end"] = os.getloadavg()[0]
    results["selections"][shlex.join(selection) or "all"] = measured
    results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    results["measured_at"] = measured["measured_at"]
    args.out.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=1) + "\n")
    print(render(NAME, results, table(results), args.out).read_text())


if __name__ == "__main__":
    main()
