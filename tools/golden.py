"""Golden curves: the per-step metrics of every script's tiny recipe, committed in tests/golden/.

    python tools/golden.py                 compare every script with its golden file
    python tools/golden.py sft dpo         ... only these
    python tools/golden.py --update [KEY]  (re)write the golden files, after checking the change

Each script runs its `recipes/<key>_tiny.yaml` for `STEPS` optimizer steps, logging every step,
in this one Python process (`runpy`, the same code path as `python script.py`), on the offline
fixture built with seed 0. `tests/test_golden.py` runs the same function and fails with a
step-by-step diff when a dependency upgrade changes what training does. The scripts list comes
from `annotated_examples/*_training.py`, so a new script needs a golden file before the test
passes: `python tools/golden.py --update <key>`.
"""

import argparse
import contextlib
import json
import math
import os
import runpy
import sys
import tempfile
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = REPO / "annotated_examples"
GOLDEN = REPO / "tests" / "golden"
STEPS = 3
# On one machine these runs are bit-for-bit repeatable (CPU, fixed seeds, no threads racing);
# `--update` checks that by running twice. Across CPUs, kernels sum in another order; measured
# with benchmarks/cross_cpu.py under five settings (AVX2 and no-SIMD kernels, 1 and 2 threads,
# MKL_CBWR=COMPATIBLE), the worst metric of any script (Nash-MD's) used 0.36 of this tolerance.
# A behaviour change from an upgrade (another loss default, a fixed bug, new masking) moves
# metrics by 1e-3 or more, as measured when the tolerance was set (see CONTRIBUTING.md).
RTOL, ATOL = 1e-4, 1e-6
# Wall-clock metrics differ on every run.
TIMING = ("runtime", "per_second", "step_time", "eps")
OFFLINE = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRL_EXPERIMENTAL_SILENCE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
}
VERSIONS = ("trl", "transformers", "torch", "accelerate", "datasets", "peft")


def script_keys() -> list[str]:
    """Every example script's key, e.g. "sft" for annotated_examples/sft_training.py, but those
    of GPU-only rows (the method table's `gpu_only`): they have no tiny recipe to run."""
    from annotated_trl.methods import METHODS

    gpu_only = {m.key for m in METHODS if m.gpu_only}
    keys = (p.name.removesuffix("_training.py") for p in EXAMPLES.glob("*_training.py"))
    return sorted(key for key in keys if key not in gpu_only)


def golden_path(key: str) -> Path:
    return GOLDEN / f"{key}.json"


def update_command(key: str) -> str:
    return f"python tools/golden.py --update {key}"


def arguments(key: str, output_dir: Path | str, examples: Path = EXAMPLES) -> list[str]:
    recipe = examples / "recipes" / f"{key}_tiny.yaml"
    # eval_steps = STEPS: a recipe that evaluates does so once, at the last step.
    return [
        *["--config", str(recipe), "--output_dir", str(output_dir), "--max_steps", str(STEPS)],
        *["--logging_steps", "1", "--eval_steps", str(STEPS), "--save_strategy", "no"],
        *["--report_to", "none"],
    ]


@contextlib.contextmanager
def _inside(folder: Path, argv: list[str]):
    """Run with `folder` as working directory and `argv` as sys.argv; restore both after."""
    old_cwd, old_argv = os.getcwd(), sys.argv
    os.chdir(folder)
    sys.argv = argv
    try:
        yield
    finally:
        os.chdir(old_cwd)
        sys.argv = old_argv


def run(key: str, tiny: Path) -> list[dict]:
    """Run `key`'s tiny recipe for STEPS steps; return its log history without timings.

    `tiny` is the offline fixture; the recipes name it `tiny/...` relative to the working
    directory, so the run happens in a scratch folder where `tiny` links to it.
    """
    import torch

    os.environ.update(OFFLINE)
    script = EXAMPLES / f"{key}_training.py"
    if not (EXAMPLES / "recipes" / f"{key}_tiny.yaml").exists():
        raise FileNotFoundError(f"{key}: no annotated_examples/recipes/{key}_tiny.yaml")
    with tempfile.TemporaryDirectory(prefix=f"golden-{key}-") as scratch:
        folder = Path(scratch)
        (folder / "tiny").symlink_to(Path(tiny).resolve(), target_is_directory=True)
        output = folder / "out"
        # Anything drawn before the trainer seeds itself is drawn from the same state.
        torch.manual_seed(0)
        with _inside(folder, [str(script), *arguments(key, output)]):
            runpy.run_path(str(script), run_name="__main__")
        history = json.loads((output / "trainer_state.json").read_text())["log_history"]
    return [
        {k: v for k, v in entry.items() if not any(t in k for t in TIMING)} for entry in history
    ]


def _close(stored, now) -> bool:
    if isinstance(stored, (int, float)) and isinstance(now, (int, float)):
        if math.isnan(stored) or math.isnan(now):
            return math.isnan(stored) and math.isnan(now)
        return abs(now - stored) <= ATOL + RTOL * abs(stored)
    return stored == now


def tolerance_used(stored: list[dict], now: list[dict]) -> float:
    """The largest |now - stored| / (ATOL + RTOL * |stored|) over every number logged in both:
    the share of its tolerance the worst metric used (a run passes below 1).
    benchmarks/cross_cpu.py reports it for each CPU setting, which is what justifies RTOL."""
    used = 0.0
    for old, new in zip(stored, now, strict=False):
        for metric in set(old) & set(new):
            a, b = old[metric], new[metric]
            numbers = all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (a, b))
            if numbers and math.isfinite(a) and math.isfinite(b):
                used = max(used, abs(b - a) / (ATOL + RTOL * abs(a)))
    return used


def diff(stored: list[dict], now: list[dict]) -> list[str]:
    """One line per difference: log entry, step, metric, stored value, value now."""
    lines = []
    if len(stored) != len(now):
        lines.append(f"log entries: stored {len(stored)}, now {len(now)}")
    for index, (old, new) in enumerate(zip(stored, now, strict=False)):
        step = old.get("step", "?")
        for metric in sorted(set(old) | set(new)):
            a, b = old.get(metric, "(missing)"), new.get(metric, "(missing)")
            if not _close(a, b):
                lines.append(f"entry {index} step {step} {metric}: stored {a!r}, now {b!r}")
    return lines


def write(key: str, history: list[dict]) -> Path:
    path = golden_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "script": f"annotated_examples/{key}_training.py",
        "arguments": arguments(key, "OUTPUT", Path("annotated_examples")),
        "tolerance": {"rtol": RTOL, "atol": ATOL},
        "versions": {package: version(package) for package in VERSIONS},
        "log_history": history,
    }
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite the golden files")
    parser.add_argument("keys", nargs="*", help="scripts to run (default: all)")
    args = parser.parse_args(argv)
    keys = args.keys or script_keys()
    unknown = sorted(set(keys) - set(script_keys()))
    if unknown:
        parser.error(f"no annotated_examples/<key>_training.py for {unknown}")

    from annotated_trl.fixtures import build_all

    failed = []
    with tempfile.TemporaryDirectory(prefix="golden-tiny-") as tiny:
        build_all(tiny, seed=0)
        for key in keys:
            history = run(key, Path(tiny))
            if args.update:
                again = run(key, Path(tiny))
                if diff(history, again):
                    print(f"{key}: two runs differ; not deterministic, nothing written:")
                    print("\n".join(f"  {line}" for line in diff(history, again)))
                    failed.append(key)
                    continue
                print(f"{key}: wrote {write(key, history).relative_to(REPO)}")
            elif not golden_path(key).exists():
                print(
                    f"{key}: no golden file; create it with python tools/golden.py --update {key}"
                )
                failed.append(key)
            else:
                stored = json.loads(golden_path(key).read_text())["log_history"]
                lines = diff(stored, history)
                print(f"{key}: " + ("matches" if not lines else f"{len(lines)} differences"))
                print("\n".join(f"  {line}" for line in lines))
                failed += [key] if lines else []
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
