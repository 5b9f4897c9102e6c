"""Example scripts vs bare TRL: does a script add anything to the training loop it drives?

For every `annotated_examples/<key>_training.py` with a tiny recipe, two worker processes train
on the same offline fixture with the same config (the tiny recipe plus the same overrides):

- script: the script itself, run as `__main__` (`runpy`), exactly as `python script.py` would;
- bare: the same TRL trainer class built directly from that config, a tokenizer and the raw
  JSONL rows (`datasets.load_dataset`), with none of the script's checking or wiring.

Only `trainer.train()` is timed (benchmarks/common.py), so what differs is what the script
changes inside the loop: the dataset it hands over, its reward functions, model-loading options.
Goal: script / bare <= 1.03. Also reports each worker's peak RSS.

    .venv/bin/python -m benchmarks.scripts                 # every script, 3 repetitions
    .venv/bin/python -m benchmarks.scripts dpo grpo --reps 5 --steps 20

New scripts are found automatically; their bare counterparts come from the method table
(`annotated_trl.methods`: the trainer's classes and the models it holds).
"""

import argparse
import importlib
import runpy
import sys
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from annotated_trl.methods import METHODS, Method
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

EXAMPLES = REPO / "annotated_examples"
SIDES = ("script", "bare")
RECIPES = EXAMPLES / "recipes"


@dataclass(frozen=True)
class Bare:
    """How to build a script's trainer directly: classes by dotted path, and its extras."""

    trainer: str
    config: str
    rewards: bool = False  # takes `reward_funcs` (a reward model path first, then functions)
    teacher: bool = False  # takes `teacher_model` (the config's teacher_model_name_or_path)
    inputs: str | None = None  # a function below: (recipe, tokenizer, rows) -> constructor kwargs


def prm_inputs(recipe, tokenizer, rows) -> dict:
    """trl 1.12's PRMTrainer takes a model object (a token classifier), not a name."""
    from transformers import AutoModelForTokenClassification

    return {"model": AutoModelForTokenClassification.from_pretrained(recipe["model_name_or_path"])}


def ppo_inputs(recipe, tokenizer, rows) -> dict:
    """trl 1.12's PPOTrainer takes token ids (prompts rendered by the chat template, padded on
    the left) and model objects: the policy, and the reward model twice (scorer and value)."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    tokenizer.padding_side = "left"

    def tokenize(row):
        text = tokenizer.apply_chat_template(
            row["prompt"], add_generation_prompt=True, tokenize=False
        )
        return {"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}

    def scorer():
        return AutoModelForSequenceClassification.from_pretrained(
            recipe["reward_model_path"], num_labels=1
        )

    return {
        "model": AutoModelForCausalLM.from_pretrained(recipe["model_name_or_path"]),
        "ref_model": None,
        "reward_model": scorer(),
        "value_model": scorer(),
        "train_dataset": rows.map(tokenize, remove_columns=rows.column_names),
    }


# The trainers that take model objects or token ids where the script passes names.
INPUTS = {"prm": prm_inputs, "ppo": ppo_inputs}


def bare(method: Method) -> Bare:
    """From the method table: the classes, and the extras its constructor takes. Online methods
    without a teacher are scored by `reward_funcs` (PPO's scorers are objects, in INPUTS)."""
    special = method.key in INPUTS
    return Bare(
        trainer=f"{method.module}.{method.trainer}",
        config=f"{method.module}.{method.config}",
        rewards=method.holds.generates and not method.holds.teacher and not special,
        teacher=method.holds.teacher,
        inputs=method.key if special else None,
    )


BARE = {m.key: bare(m) for m in METHODS}


def discover() -> list[str]:
    """Every example script that has a tiny recipe, by key."""
    keys = [path.name.removesuffix("_training.py") for path in EXAMPLES.glob("*_training.py")]
    return sorted(key for key in keys if (RECIPES / f"{key}_tiny.yaml").exists())


def overrides(key: str, fixture: Path, steps: int) -> dict:
    """What the benchmark changes in the tiny recipe: its `tiny/...` paths moved to `fixture`,
    `steps` optimiser steps, no evaluation, no progress bar."""
    recipe = yaml.safe_load((RECIPES / f"{key}_tiny.yaml").read_text())
    moved = {
        name: str(fixture / value.removeprefix("tiny/"))
        for name, value in recipe.items()
        if isinstance(value, str) and value.startswith("tiny/")
    }
    return {**moved, "max_steps": steps, "eval_strategy": "no", "disable_tqdm": True}


def as_flags(options: dict) -> list[str]:
    return [flag for name, value in options.items() for flag in (f"--{name}", str(value))]


def import_object(dotted: str):
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def script_worker(key: str, changes: dict, out: Path) -> None:
    counts, timer = counted_timer()
    script = EXAMPLES / f"{key}_training.py"
    runs = iter(range(1_000_000))

    def run_once() -> dict:
        output_dir = out / f"script-{next(runs)}"
        flags = as_flags({**changes, "output_dir": output_dir})
        sys.argv = [str(script), "--config", str(RECIPES / f"{key}_tiny.yaml"), *flags]
        runpy.run_path(str(script), run_name="__main__")
        return {**timer.last(), "work": per_step(counts, timer.last())}

    serve(run_once)


def bare_worker(key: str, changes: dict, out: Path) -> None:
    import datasets
    from transformers import AutoTokenizer

    recipe = {**yaml.safe_load((RECIPES / f"{key}_tiny.yaml").read_text()), **changes}

    counts, timer = counted_timer()
    spec = BARE[key]
    trainer_class, config_class = import_object(spec.trainer), import_object(spec.config)
    names = {field.name for field in fields(config_class)}
    runs = iter(range(1_000_000))

    def run_once() -> dict:
        options = {k: v for k, v in recipe.items() if k in names}
        config = config_class(**{**options, "output_dir": str(out / f"bare-{next(runs)}")})
        model = recipe["model_name_or_path"]
        rows = str(Path(recipe["dataset_name"]) / "train.jsonl")
        extras = {}
        if spec.rewards:
            reward_model = recipe.get("reward_model_name_or_path") or recipe.get(
                "reward_model_path"
            )
            functions = [import_object(path) for path in recipe.get("reward_funcs") or []]
            extras["reward_funcs"] = [reward_model] * bool(reward_model) + functions
        if spec.teacher:
            extras["teacher_model"] = config.teacher_model_name_or_path
        tokenizer = AutoTokenizer.from_pretrained(model)
        kwargs = {
            "model": model,
            "args": config,
            "train_dataset": datasets.load_dataset("json", data_files=rows, split="train"),
            "processing_class": tokenizer,
            **extras,
        }
        if spec.inputs:
            kwargs.update(INPUTS[spec.inputs](recipe, tokenizer, kwargs["train_dataset"]))
        trainer = trainer_class(**kwargs)
        trainer.train()
        return {**timer.last(), "work": per_step(counts, timer.last())}

    serve(run_once)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("keys", nargs="*", help="scripts to measure (default: all)")
    parser.add_argument("--reps", type=int, default=3, help="timed runs per side (plus a warm-up)")
    parser.add_argument("--steps", type=int, default=10, help="optimiser steps per run")
    parser.add_argument("--note", default="", help="a sentence stored with the results")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results folder")
    parser.add_argument(
        "--render", action="store_true", help="rewrite scripts.md from scripts.json"
    )
    parser.add_argument("--worker", choices=["script", "bare"], help=argparse.SUPPRESS)
    parser.add_argument("--fixture", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.render:
        print(rerender("scripts", table, args.out))
        return
    if args.worker:
        (key,) = args.keys
        changes = overrides(key, args.fixture, args.steps)
        worker = script_worker if args.worker == "script" else bare_worker
        worker(key, changes, args.work)
        return

    from annotated_trl.fixtures import build_all

    keys = args.keys or discover()
    work = Path(tempfile.mkdtemp(prefix="bench-scripts-"))
    fixture = build_all(work / "tiny")
    results = {"machine": machine(), "reps": args.reps, "steps": args.steps, "note": args.note}
    results["scripts"], results["missing_bare_builder"] = {}, []
    results["unfinished"] = [key for key in keys if key in BARE]
    for key in keys:
        if key not in BARE:
            results["missing_bare_builder"].append(key)
            print(f"{key}: no row in BARE, skipped", flush=True)
            continue
        command = [sys.executable, "-m", "benchmarks.scripts", key, "--steps", str(args.steps)]
        command += ["--fixture", str(fixture), "--work", str(work / key)]
        sides = [Worker(f"{key}-{side}", [*command, "--worker", side], work) for side in SIDES]
        result = compare(*sides, reps=args.reps)
        results["unfinished"].remove(key)
        results["scripts"][key] = {
            "script": result[f"{key}-script"],
            "bare": result[f"{key}-bare"],
            "ratio": result["ratio"],
        }
        print(f"{key}: script/bare = {result['ratio']:.3f}", flush=True)
        write_results("scripts", results, table(results), args.out)  # keep what is done so far
    results["unfinished"] = []
    print(write_results("scripts", results, table(results), args.out))


def table(results: dict) -> str:
    lines = [
        f"{results['reps']} timed runs per side after a warm-up, {results['steps']} steps each; "
        "median `trainer.train()` time. Goal: script / bare ≤ 1.03. Model forwards per step: "
        "Qwen2 forward passes of every model (policy, reference, teacher, reward, value) and the "
        "tokens they read, counted, script / bare.\n",
        "| Script | Trainer | script s (range) | bare s (range) | script / bare "
        "| model forwards per step | tokens per step | peak RSS script MiB | peak RSS bare MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, row in results["scripts"].items():
        script, bare = row["script"], row["bare"]
        forwards, tokens = work_cells(script, bare)
        lines.append(
            f"| {key} | {script['trainer']} | {spread(script)} | {spread(bare)} "
            f"| {row['ratio']:.3f} | {forwards} | {tokens} "
            f"| {script['peak_rss_mib']:.0f} | {bare['peak_rss_mib']:.0f} |"
        )
    for key in results["missing_bare_builder"]:
        lines.append(f"| {key} | — | — | — | no bare builder yet | — | — | — | — |")
    for key in results["unfinished"]:
        lines.append(f"| {key} | — | — | — | not measured in this run | — | — | — | — |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
