"""The tests whose verdict rests on a measured number, run under several CPU numerics.

A learning test asserts that training moved a number (a solve rate, a held-out margin) past a
threshold; a golden test, that a short run logs what is stored. Both were measured on one
machine. On another CPU, PyTorch and MKL pick other kernels, which sum in another order; one
float differs in its last bit, one sampled token differs, and an RL run takes another path. This
runs `pytest -m "learning or golden"` under settings that change those kernels on this machine:

- `ATEN_CPU_CAPABILITY`: PyTorch's own vectorised kernels, `default` (no SIMD), `avx2`, and
  `avx512` where the CPU has it;
- `OMP_NUM_THREADS` 1 and 2: how reductions and matrix products are split;
- `MKL_ENABLE_INSTRUCTIONS` and `MKL_CBWR`: which code path MKL's matrix products take.

Before a setting runs, a fingerprint (the kernel set, the thread count, and a hash of a tiny
Qwen2's logits, gradients and samples at a GRPO step's shape) is computed under it; a setting
whose fingerprint equals one already run computes the same numbers and is skipped (`--all` runs
it anyway). The thread count is part of it because threads change sums at larger shapes than
the hash covers. `--seed-offsets 0 1 2`
repeats every setting with every learning test's seeds shifted (`pytest --seed-offset`), which
measures the spread over seeds too.

Every threshold goes through the `measured` fixture (tests/support/measured.py), which records
the value and its threshold; this reports them all: each run's value, the mean and standard
deviation over runs, and the margin (mean - threshold) in standard deviations. Runs accumulate in
`benchmarks/results/cross_cpu.json` under the CPU's name, so runs from several machines sit side
by side; `cross_cpu.md` shows them.

    .venv/bin/python -m benchmarks.cross_cpu                       # every setting, seed offset 0
    .venv/bin/python -m benchmarks.cross_cpu --seed-offsets 1 2 --settings native-2t
    .venv/bin/python -m benchmarks.cross_cpu --list                # the settings and fingerprints
    .venv/bin/python -m benchmarks.cross_cpu --table               # rewrite the .md from the .json

It exits 1 if any test failed under any setting that ran.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import OFFLINE_ENV, REPO, RESULTS, machine, render

NAME = "cross_cpu"
RECORDS_ENV = "CROSS_CPU_RECORDS"  # where the plugin writes its records (one JSON line a test)
SELECTION = ["-m", "learning or golden"]
PYTEST = [str(Path(sys.executable).with_name("pytest"))]  # the README's `.venv/bin/pytest`

# name -> environment. Threads are always set: torch's default follows the cores.
SETTINGS = {
    "native-2t": {"OMP_NUM_THREADS": "2"},
    "native-1t": {"OMP_NUM_THREADS": "1"},
    "default-2t": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "2"},
    "default-1t": {"ATEN_CPU_CAPABILITY": "default", "OMP_NUM_THREADS": "1"},
    "avx2-2t": {"ATEN_CPU_CAPABILITY": "avx2", "OMP_NUM_THREADS": "2"},
    "avx512-2t": {"ATEN_CPU_CAPABILITY": "avx512", "OMP_NUM_THREADS": "2"},
    "mkl-sse42-2t": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2", "OMP_NUM_THREADS": "2"},
    "mkl-avx2-1t": {"MKL_ENABLE_INSTRUCTIONS": "AVX2", "OMP_NUM_THREADS": "1"},
    "mkl-compatible-2t": {"MKL_CBWR": "COMPATIBLE", "OMP_NUM_THREADS": "2"},
}

FINGERPRINT = """
import hashlib, torch
from transformers import Qwen2Config, Qwen2ForCausalLM
torch.manual_seed(0)
config = Qwen2Config(vocab_size=384, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
model = Qwen2ForCausalLM(config)
ids = torch.randint(0, 384, (128, 40))  # a GRPO step's 128 completions, prompt included
out = model(input_ids=ids, labels=ids)
out.loss.backward()
samples = torch.multinomial(out.logits[:, -1].softmax(-1), 4, replacement=True)
digest = hashlib.sha256()
for tensor in (out.logits, *(p.grad for p in model.parameters()), samples):
    digest.update(tensor.detach().numpy().tobytes())
print(torch.backends.cpu.get_cpu_capability(), torch.get_num_threads(), digest.hexdigest()[:16])
"""


# ---- the plugin, loaded into the pytest process ----------------------------------------------


def pytest_runtest_logreport(report):
    if report.when == "call" or report.failed:
        record = {
            "test": report.nodeid,
            "when": report.when,
            "outcome": report.outcome,
            "seconds": report.duration,
            "measured": dict(report.user_properties),
        }
        with open(os.environ[RECORDS_ENV], "a") as records:
            records.write(json.dumps(record) + "\n")


# ---- the coordinator ------------------------------------------------------------------------


def cpu_flags() -> set[str]:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def available_settings() -> dict[str, dict]:
    """The settings this CPU can run: ATen refuses a capability the CPU lacks (and silently
    falls back to its best one, which would only repeat another setting)."""
    flags = cpu_flags()
    needs = {"avx2": "avx2", "avx512": "avx512f"}
    return {
        name: env
        for name, env in SETTINGS.items()
        if needs.get(env.get("ATEN_CPU_CAPABILITY", ""), "") in flags | {""}
    }


def fingerprint(env: dict) -> str:
    done = subprocess.run(
        [sys.executable, "-c", FINGERPRINT],
        env={**os.environ, **OFFLINE_ENV, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout.strip()


def run_tests(env: dict, seed_offset: int, extra: list[str]) -> dict:
    records = Path(tempfile.mkstemp(prefix="cross-cpu-", suffix=".jsonl")[1])
    # The plugin is this module, found from the repository root (pyproject.toml's `pythonpath`).
    command = [*PYTEST, "-p", "benchmarks.cross_cpu", "-p", "no:cacheprovider", "-q", *SELECTION]
    command += [f"--seed-offset={seed_offset}", *extra]
    run_env = {**os.environ, **OFFLINE_ENV, **env, RECORDS_ENV: str(records)}
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=run_env, capture_output=True, text=True)
    tests = [json.loads(line) for line in records.read_text().splitlines()]
    records.unlink()
    lines = done.stdout.strip().splitlines()
    return {
        "wall_s": time.perf_counter() - start,
        "exit_code": done.returncode,
        "summary": lines[-1] if lines else done.stderr[-500:],
        "tests": tests,
    }


def current_tests() -> set[str]:
    """The ids of the tests that SELECTION collects now: records of removed tests are dropped."""
    done = subprocess.run(
        [*PYTEST, "--collect-only", "-q", "-p", "no:cacheprovider", *SELECTION],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        check=True,
    )
    return {line for line in done.stdout.splitlines() if "::" in line}


def merge(stored: dict, run: dict, keep: set[str]) -> dict:
    """Fold one pytest invocation into a setting's record: each test keeps its latest result,
    so a `-k` rerun of a few tests leaves the others' earlier results in place."""
    stored.setdefault("tests", {})
    for test in run["tests"]:
        stored["tests"][test["test"]] = test | {"measured_at": run["measured_at"]}
    stored["tests"] = {test: record for test, record in stored["tests"].items() if test in keep}
    invocation = {k: run[k] for k in ("measured_at", "summary", "wall_s", "exit_code", "args")}
    stored.setdefault("invocations", []).append(invocation)
    return stored


def quantities(runs: dict) -> dict:
    """(test, quantity) -> its threshold, if any, and the value of every run that recorded it.

    A record is `{"value": v, "at_least" or "at_most": threshold}` (tests/support/measured.py) or
    a bare number with no threshold of its own (the golden curves' share of their tolerance). The
    threshold shown is the latest one recorded: the one the test asserts now."""
    table: dict = {}
    for run_name, run in runs.items():
        for test in run["tests"].values():
            for quantity, record in test["measured"].items():
                record = record if isinstance(record, dict) else {"value": record}
                entry = table.setdefault((test["test"], quantity), {"values": {}, "at": ""})
                if test["measured_at"] >= entry["at"]:
                    entry["threshold"] = {k: v for k, v in record.items() if k != "value"}
                    entry["at"] = test["measured_at"]
                entry["values"][run_name] = record["value"]
    return table


def margin(entry: dict) -> tuple[float, float, float | None, int]:
    """Mean, standard deviation, (mean - threshold) / sd in the passing direction, and how many
    recorded values fall short of the current threshold."""
    values = list(entry["values"].values())
    mean = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    if not entry["threshold"]:
        return mean, sd, None, 0
    (kind, threshold), *_ = entry["threshold"].items()
    sign = 1 if kind == "at_least" else -1
    short = sum(sign * (value - threshold) < 0 for value in values)
    return mean, sd, (sign * (mean - threshold) / sd if sd > 0 else float("inf")), short


PIPE = "\\|"  # a "|" inside a Markdown table cell


def table(results: dict) -> str:
    runs = results["runs"]
    lines = [
        "| Run | CPU | fingerprint | tests recorded | last run | minutes |",
        "|---|---|---|---|---|---|",
    ]
    for name, run in runs.items():
        last = run["invocations"][-1]
        lines.append(
            f"| `{name}` | {run['cpu']} | `{run['fingerprint']}` | {len(run['tests'])} | "
            f"{last['measured_at']}: {last['summary']} | {last['wall_s'] / 60:.1f} |"
        )
    lines += [
        "",
        "| Test: quantity | threshold | n | min | max | mean | sd | margin in sd | short |",
    ]
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for (test, quantity), entry in sorted(quantities(runs).items()):
        values = list(entry["values"].values())
        mean, sd, sds, short = margin(entry)
        threshold = "—"
        if entry["threshold"]:
            (kind, bound), *_ = entry["threshold"].items()
            threshold = f"{'≥' if kind == 'at_least' else '≤'} {bound:g}"
        lines.append(
            f"| `{test.split('::')[-1]}`: {quantity.replace('|', PIPE)} | {threshold} | "
            f"{len(values)} | "
            f"{min(values):.4g} | {max(values):.4g} | {mean:.4g} | {sd:.3g} | "
            f"{'—' if sds is None else f'{sds:.1f}'} | {short} |"
        )
    return "\n".join(lines) + "\n"


def upgrade(results: dict) -> dict:
    """Results written before runs were merged per test: one invocation each, tests as a list."""
    for run in results["runs"].values():
        if isinstance(run["tests"], list):
            at = run["measured_at"]
            run["tests"] = {t["test"]: t | {"measured_at": at} for t in run.pop("tests")}
            keys = ("measured_at", "summary", "wall_s", "exit_code")
            run["invocations"] = [{k: run.pop(k) for k in keys} | {"args": []}]
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="*", help="names from SETTINGS (default: all)")
    parser.add_argument("--seed-offsets", nargs="*", type=int, default=[0])
    parser.add_argument("--all", action="store_true", help="run settings with equal fingerprints")
    parser.add_argument("--list", action="store_true", help="print settings and fingerprints")
    parser.add_argument("--table", action="store_true", help="rewrite the .md from the .json")
    parser.add_argument("pytest_args", nargs="*", help="passed to pytest after `--`")
    args = parser.parse_args()

    path = RESULTS / f"{NAME}.json"
    results = upgrade(json.loads(path.read_text())) if path.exists() else {"runs": {}}
    if args.table:
        print(render(NAME, results, table(results)).read_text())
        return
    settings = available_settings()
    unknown = set(args.settings or []) - set(SETTINGS)
    if unknown:
        parser.error(f"unknown settings {sorted(unknown)}; choose from {sorted(SETTINGS)}")
    chosen = [name for name in settings if name in (args.settings or settings)]
    results["machine"] = machine()
    cpu = results["machine"]["cpu"]
    seen: dict[str, str] = {}
    failed = False
    keep = set() if args.list else current_tests()
    for name in chosen:
        print_ = fingerprint(settings[name])
        if print_ in seen and not args.all:
            print(f"{name}: fingerprint {print_} as {seen[print_]}: same numerics, skipped")
            continue
        seen.setdefault(print_, name)
        print(f"{name}: fingerprint {print_}", flush=True)
        if args.list:
            continue
        for offset in args.seed_offsets:
            run = run_tests(settings[name], offset, args.pytest_args)
            run.update(
                measured_at=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                args=args.pytest_args,
            )
            stored = results["runs"].setdefault(f"{name} seed+{offset} ({cpu})", {})
            stored.update(cpu=cpu, env=settings[name], fingerprint=print_, seed_offset=offset)
            merge(stored, run, keep)
            print(f"  seed offset {offset}: {run['summary']} ({run['wall_s'] / 60:.1f} min)")
            failed |= run["exit_code"] != 0
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(results, indent=1) + "\n")  # keep what is done so far
    if not args.list:
        results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
        results["measured_at"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        path.write_text(json.dumps(results, indent=1) + "\n")
        print(render(NAME, results, table(results)).read_text())
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
