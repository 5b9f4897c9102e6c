"""The lab on a GPU: every method's GPU recipe (Qwen 0.5B class), a short budget, one results file.

The CPU lab (`runner.py`) trains the toy pipeline; this one trains what a practitioner runs: each
method's `annotated_examples/recipes/<key>.yaml` (a pretrained model and a Hub dataset) under
`accelerate launch`, for `--steps` optimiser steps at each seed, one run at a time (the GPU is
the shared resource). The recipes are independent of one another: each names its own reward
model or teacher, so there is no pipeline to order. The methods are the CPU lab's: Async GRPO and
Server distillation need a vLLM server on GPUs of their own, which a lab run does not start.

Nothing starts until every recipe passes `annotated-trl doctor`: its errors (a batch that does
not divide, a prompt that leaves no room for the completion) and, with `--offline`, a model or
dataset missing from the local cache stop the lab in seconds, one line each with its fix,
instead of an hour in. The results file has the CPU lab's shape (provenance, runs with
their command, wall time, logged history), with the peak GPU memory `nvidia-smi` reports
(the CUDA context included) in place of the process's resident memory.
"""

import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from annotated_trl.lab.runner import (
    EXAMPLES,
    POINTS,
    REPO,
    last_line,
    results_json,
    rounded_log,
)
from annotated_trl.methods import BY_KEY

RECIPES = EXAMPLES / "recipes"
ACCELERATE_CONFIG = REPO / "accelerate_configs" / "single_gpu.yaml"


def processes(accelerate_config: Path) -> int:
    return int(yaml.safe_load(accelerate_config.read_text()).get("num_processes", 1))


def episodes_per_step(settings: dict, world: int) -> int:
    """PPO counts episodes (prompts), not steps: one step takes per_device_train_batch_size x
    gradient_accumulation_steps x num_mini_batches prompts on each process."""
    per_process = settings["per_device_train_batch_size"] * settings["gradient_accumulation_steps"]
    return per_process * settings["num_mini_batches"] * world


def launch_argv(
    key: str, seed: int, steps: int, out: Path, accelerate_config: Path, recipes: Path = RECIPES
) -> list[str]:
    """`accelerate launch ...` for one run of `key`'s recipe: `steps` steps, ~POINTS logged."""
    from annotated_trl.doctor import read_settings

    recipe = recipes / f"{key}.yaml"
    budget = ["--max_steps", str(steps)]
    if key == "ppo":  # the recipe's values over PPOConfig's defaults
        per_step = episodes_per_step(
            read_settings(BY_KEY[key], str(recipe)), processes(accelerate_config)
        )
        budget = ["--total_episodes", str(steps * per_step)]
    return [
        *[sys.executable, "-m", "accelerate.commands.launch"],
        *["--config_file", str(accelerate_config)],
        str(EXAMPLES / f"{key}_training.py"),
        *["--config", str(recipe), *budget, "--logging_steps", str(max(1, steps // POINTS))],
        *["--seed", str(seed), "--output_dir", str(out / "runs" / key / f"seed{seed}")],
        *["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"],
    ]


def _in_cache(model: str) -> bool:
    """A model folder, or a Hub model whose config the local cache holds."""
    from huggingface_hub import try_to_load_from_cache

    return Path(model).is_dir() or isinstance(try_to_load_from_cache(model, "config.json"), str)


def preflight(
    methods: list[str], accelerate_config: Path, offline: bool, recipes: Path = RECIPES
) -> tuple[list[str], dict[str, float | None]]:
    """What would stop a run, one line each with its fix: the doctor's errors for every recipe
    and, `offline` (the machine cannot reach the Hub), every model or dataset the recipe names
    that the local cache lacks (online, the script downloads them and the doctor only warns).
    Also the doctor's memory estimate of each recipe, in bytes (None without the model's
    config), which the results keep beside the measured peak."""
    from annotated_trl.doctor import ERROR, WARN, run_doctor

    world = processes(accelerate_config)
    errors, estimates = [], {}
    for key in methods:
        recipe_path = recipes / f"{key}.yaml"
        recipe = yaml.safe_load(recipe_path.read_text())
        findings = run_doctor(key, str(recipe_path), num_processes=world)
        estimates[key] = next((f.amount for f in findings if f.topic == "memory"), None)
        for f in findings:
            if f.level == ERROR:
                errors.append(f"{key}: {f.message}; fix: {f.fix}")
            elif offline and f.level == WARN and f.topic == "dataset":
                name = recipe["dataset_name"]
                errors.append(
                    f"{key}: dataset {name} is not in the local cache and --offline keeps the "
                    f"Hub out; fix: `hf download --repo-type dataset {name}` while online"
                )
        flags = ["model_name_or_path", *dict(BY_KEY[key].fixture.models)]
        for model in dict.fromkeys(recipe[flag] for flag in flags if flag in recipe):
            if offline and not _in_cache(model):
                errors.append(
                    f"{key}: model {model} is not in the local cache and --offline keeps the Hub "
                    f"out; fix: `hf download {model}` while online"
                )
    return errors, estimates


class PeakGpuMemory:
    """The largest `memory.used` any GPU reports while the block runs, in MiB, polled twice a
    second; None where `nvidia-smi` is missing. It counts every process on the device: run the
    lab on GPUs of its own."""

    def __enter__(self):
        self.peak, self._stop = None, threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        query = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"]
        while not self._stop.is_set():
            try:
                used = subprocess.run(query, capture_output=True, text=True, timeout=5).stdout
            except (OSError, subprocess.TimeoutExpired):
                return
            values = [int(v) for v in used.split() if v.isdigit()]
            if values:
                self.peak = max(self.peak or 0, *values)
            self._stop.wait(0.5)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def run_gpu_lab(
    out: Path,
    methods: list[str],
    seeds: list[int],
    steps: int,
    accelerate_config: Path,
    offline: bool,
    estimates: dict[str, float | None],
    recipes: Path = RECIPES,
) -> dict:
    """Train each method's recipe at each seed, one run at a time; write `out/results.json`.
    `offline`: the runs read the Hub cache only (the preflight has checked it holds them).
    `estimates`: the preflight's memory estimates, recorded beside each run's measured peak."""
    from annotated_trl import OFFLINE_ENV
    from annotated_trl.lab.runner import _provenance

    env = {**os.environ, **(OFFLINE_ENV if offline else {})}
    started, done, failed = time.time(), [], []
    for seed in seeds:
        for key in methods:
            argv = launch_argv(key, seed, steps, out, accelerate_config, recipes)
            folder = Path(argv[argv.index("--output_dir") + 1])
            folder.mkdir(parents=True, exist_ok=True)
            began = time.time()
            with open(folder / "log.txt", "w") as log, PeakGpuMemory() as memory:
                print(shlex.join(argv), file=log, flush=True)
                code = subprocess.run(
                    argv, stdout=log, stderr=subprocess.STDOUT, env=env
                ).returncode
            wall = time.time() - began
            if code != 0:
                failed.append(f"{key} seed {seed}")
                print(f"FAILED {key} seed {seed}: {last_line(folder)}", flush=True)
                continue
            history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
            command = shlex.join(["accelerate", "launch", *argv[3:]])
            done.append(
                {
                    "experiment": key,
                    "method": key,
                    "seed": seed,
                    "command": command.replace(f"{REPO}/", ""),
                    "steps": max(row.get("step", 0) for row in history),
                    "wall_s": round(wall, 2),
                    "peak_gpu_mib": memory.peak,
                    "estimated_gpu_mib": _mib(estimates.get(key)),
                    "log": rounded_log(history),
                }
            )
            print(f"{key} seed {seed}: {wall:.0f} s", flush=True)
    provenance = _provenance(time.time() - started, seeds, 1, False, 0.0)
    provenance["machine"] = f"{_gpu_names()}; {processes(accelerate_config)} process(es)"
    provenance["steps"] = steps
    results = {"provenance": provenance, "runs": done, "failed": failed}
    (out / "results.json").write_text(results_json(results))
    return results


def _gpu_names() -> str:
    import torch

    if not torch.cuda.is_available():
        return "no GPU (a check run on the CPU)"
    count = torch.cuda.device_count()
    return f"{count} x {torch.cuda.get_device_name(0)}"


def _mib(nbytes: float | None) -> float | None:
    return None if nbytes is None else round(nbytes / 2**20, 1)


def markdown_name(key: str) -> str:
    """A method's name as Markdown text: A*-PO's star is a literal, not emphasis."""
    return BY_KEY[key].name.replace("*", r"\*")


def summary_table(results: dict) -> str:
    """One Markdown row per method of a GPU lab's results: its runs, time per step, peak GPU
    memory measured and estimated, and where each of its lab curves (the CPU lab's, from
    `experiments.py`) went from the first logged value to the last, mean of the seeds."""
    from statistics import mean

    from annotated_trl.lab.experiments import BY_METHOD

    def cell(mib: float | None) -> str:
        return "—" if mib is None else f"{mib:,.0f}"

    by_method: dict[str, list[dict]] = {}
    for run in results["runs"]:
        by_method.setdefault(run["method"], []).append(run)
    rows = [
        "| Method | Runs | Steps | Wall seconds per step, start-up included "
        "| Peak GPU memory, MiB (nvidia-smi) "
        "| Estimated, MiB (doctor) | First → last logged (mean of the runs) |",
        "|---|---|---|---|---|---|---|",
    ]
    for key, runs in by_method.items():
        moved = []
        for curve in BY_METHOD[key].curves:
            series = [[row[curve.key] for row in run["log"] if curve.key in row] for run in runs]
            if all(series):
                first, last = mean(s[0] for s in series), mean(s[-1] for s in series)
                moved.append(f"`{curve.key}` {first:.3g} → {last:.3g}")
        peaks = [run["peak_gpu_mib"] for run in runs if run["peak_gpu_mib"] is not None]
        rows.append(
            f"| {markdown_name(key)} | {len(runs)} | {runs[0]['steps']} "
            f"| {mean(run['wall_s'] / run['steps'] for run in runs):.2f} "
            f"| {cell(max(peaks) if peaks else None)} | {cell(runs[0]['estimated_gpu_mib'])} "
            f"| {'; '.join(moved) or '—'} |"
        )
    return "\n".join(rows)
