"""Our ports of the trainers TRL removed vs trl 1.12.0's originals: time per optimiser step.

Reuses the parity scenarios (`tests/parity_scenarios/<key>.py`, see tests/support/parity.py):
each one trains with `--impl original` (trl 1.12.0 from .oracle/trl-1.12, first on PYTHONPATH) or
`--impl ours` (annotated_trl.trainers), and nothing else differs between the two runs. Here each
implementation gets a long-lived worker process; runs alternate ours/original, the first of each
is a warm-up, and the ratio is median(ours) / median(original) of `train()` seconds per step
(benchmarks/common.py). Goal: <= 1.0.

    .venv/bin/python -m benchmarks.ports               # every scenario, 3 repetitions
    .venv/bin/python -m benchmarks.ports ppo --reps 5

Every scenario file is picked up (helpers that are not scenarios are named in HELPERS); a
scenario that takes `--tiny` gets a fixture built once for the whole run.
"""

import argparse
import runpy
import sys
import tempfile
from pathlib import Path

from benchmarks.common import (
    REPO,
    RESULTS,
    Worker,
    compare,
    counted_timer,
    machine,
    per_step,
    rerender,
    serve,
    spread,
    work_cells,
    write_results,
)

SCENARIOS = REPO / "tests" / "parity_scenarios"
ORACLE = REPO / ".oracle" / "trl-1.12"
HELPERS = {"online_pair", "per_process"}  # modules the scenarios import, not scenarios themselves
# Longer runs than the parity tests use, where their few steps leave the timing to noise: the
# online scenarios' 16 prompts make 4 steps of ~0.04 s, whose spread was ±25%.
SCENARIO_ARGS = {"nash_md": ["--rows", "64"], "xpo": ["--rows", "64"]}


def discover() -> list[str]:
    return sorted(path.stem for path in SCENARIOS.glob("*.py") if path.stem not in HELPERS)


def takes_tiny(key: str) -> bool:
    """Whether the scenario (or a helper it imports) has a `--tiny FOLDER` argument."""
    sources = [SCENARIOS / f"{key}.py", *(SCENARIOS / f"{helper}.py" for helper in HELPERS)]
    scenario = sources[0].read_text()
    used = [sources[0]] + [path for path in sources[1:] if f"from {path.stem} " in scenario]
    return any('"--tiny"' in path.read_text() for path in used)


def worker(key: str, impl: str, fixture: Path | None, work: Path) -> None:
    counts, timer = counted_timer()
    sys.path.insert(0, str(SCENARIOS))  # as `python scenario.py` would, for its helpers
    runs = iter(range(1_000_000))

    def run_once() -> dict:
        out = work / f"{impl}-{next(runs)}" / "log.json"
        out.parent.mkdir(parents=True)
        sys.argv = [str(SCENARIOS / f"{key}.py"), "--impl", impl, "--out", str(out)]
        sys.argv += ["--tiny", str(fixture)] if fixture else []
        sys.argv += SCENARIO_ARGS.get(key, [])
        runpy.run_path(sys.argv[0], run_name="__main__")
        run = timer.last()
        return {**run, "seconds": run["seconds"] / run["steps"], "work": per_step(counts, run)}

    serve(run_once)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("keys", nargs="*", help="scenarios to measure (default: all)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per side (plus a warm-up)")
    parser.add_argument("--note", default="", help="a sentence stored with the results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument("--render", action="store_true", help="rewrite the .md from the .json")
    parser.add_argument("--worker", choices=["ours", "original"], help=argparse.SUPPRESS)
    parser.add_argument("--fixture", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.render:
        print(rerender("ports", table, args.out))
        return
    if args.worker:
        (key,) = args.keys
        worker(key, args.worker, args.fixture, args.work)
        return

    assert (ORACLE / "trl" / "__init__.py").exists(), f"{ORACLE} is missing: run `make setup`"
    from annotated_trl.fixtures import build_all

    work = Path(tempfile.mkdtemp(prefix="bench-ports-"))
    fixture = build_all(work / "tiny")
    results = {"machine": machine(), "reps": args.reps, "note": args.note, "ports": {}}
    results["unfinished"] = args.keys or discover()
    for key in list(results["unfinished"]):
        command = [sys.executable, "-m", "benchmarks.ports", key, "--work", str(work / key)]
        command += ["--fixture", str(fixture)] if takes_tiny(key) else []
        ours = Worker(f"{key}-ours", [*command, "--worker", "ours"], work)
        original = Worker(
            f"{key}-original",
            [*command, "--worker", "original"],
            work,
            env={"PYTHONPATH": str(ORACLE)},
        )
        result = compare(ours, original, reps=args.reps)
        results["unfinished"].remove(key)
        results["ports"][key] = {
            "ours": result[f"{key}-ours"],
            "original": result[f"{key}-original"],
            "ratio": result["ratio"],
        }
        print(f"{key}: ours/original = {result['ratio']:.3f} per step", flush=True)
        write_results("ports", results, table(results), args.out)  # keep what is done so far
    print(write_results("ports", results, table(results), args.out))


def table(results: dict) -> str:
    lines = [
        f"{results['reps']} timed runs per side after a warm-up; median `train()` seconds per "
        "optimiser step on the parity scenario. Goal: ours / trl 1.12.0 ≤ 1.0. Model forwards "
        "per step: Qwen2 forward passes of every model (policy, reference, reward, value) and "
        "the tokens they read, counted, ours / 1.12.\n",
        "| Scenario | Trainer | steps | ours s/step (range) | trl 1.12.0 s/step (range) "
        "| ours / 1.12 | model forwards per step | tokens per step "
        "| peak RSS ours MiB | peak RSS 1.12 MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results["ports"].items():
        ours, original = row["ours"], row["original"]
        work = work_cells(ours, original)
        lines.append(
            f"| {key} | {ours['trainer']} | {ours['steps']} | {spread(ours)} "
            f"| {spread(original)} | {row['ratio']:.3f} | {work[0]} | {work[1]} "
            f"| {ours['peak_rss_mib']:.0f} | {original['peak_rss_mib']:.0f} |"
        )
    for key in results["unfinished"]:
        lines.append(f"| {key} | — | — | — | — | not measured in this run | — | — | — | — |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
