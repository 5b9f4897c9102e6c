"""`annotated-trl`: build the offline fixtures, check a dataset, or run the lab.

annotated-trl tiny DIR                          tiny models + toy data under DIR
annotated-trl validate --method sft DATASET     "OK: ..." (exit 0) or one line per problem (exit 2)
annotated-trl lab --out runs/lab                every method on the toy task, 3 seeds
annotated-trl lab-gpu --out runs/lab-gpu --steps 100
    every method's GPU recipe under `accelerate launch`, after `doctor` passed them all
annotated-trl lab-figures runs/lab/results.json --out docs/lab/figures
annotated-trl lab-merge runs/lab-x/results.json --into docs/lab/results.json
annotated-trl doctor --method grpo --config annotated_examples/recipes/grpo.yaml
    pre-flight for a GPU job, offline: the recipe's batch arithmetic, chat template, pad token,
    reward functions, lengths against the data and memory, each finding with its fix and the
    troubleshooting entry that explains it (exit 0, or 2 when a finding is an error);
    --dataset, --model replace the recipe's, --num_processes counts the GPUs
annotated-trl memory Qwen2.5-1.5B --method dpo --seq_len 2048 --lora_rank 16
    one GPU's training memory by part, offline, for a config.json, model folder or preset
annotated-trl notebook sft --out .              sft_training.ipynb, made from the script
"""

import argparse
import sys
from pathlib import Path


def _tiny(args: argparse.Namespace) -> int:
    from annotated_trl.fixtures import build_all

    out = build_all(args.directory, seed=args.seed)
    print(f"built tiny models and toy data in {out}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    """Print "OK: ..." and return 0, or print one "error: ..." line per problem and return 2."""
    import datasets

    from annotated_trl.data import DatasetError, validate_dataset

    datasets.disable_progress_bars()
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoProcessor

        try:  # the tokenizer of a text model; a vision-language model's processor (its images)
            tokenizer = AutoProcessor.from_pretrained(args.tokenizer)
        except Exception as err:  # missing folder, no network, not a tokenizer: all one line
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            print(f"error: --tokenizer {args.tokenizer}: could not load ({first})", file=sys.stderr)
            return 2
    try:
        report = validate_dataset(
            args.dataset, args.method, tokenizer, args.dataset_config, limit=args.max_problems
        )
    except DatasetError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if report.problems:
        for problem in report.problems:
            print(f"error: {problem}", file=sys.stderr)
        if report.more:
            print(
                f"error: ... and {report.more} more problems (show them with --max_problems)",
                file=sys.stderr,
            )
        return 2
    kind = "conversational" if report.conversational else "plain text"
    splits = ", ".join(f"{split}: {rows}" for split, rows in report.rows.items())
    template = ""
    if report.conversational:
        template = ", chat template checked" if tokenizer else ", chat template not checked"
    print(
        f"OK: {report.format} ({kind}), {sum(report.rows.values())} rows ({splits}); "
        f"fits {args.method}{template}"
    )
    return 0


def _lab(args: argparse.Namespace) -> int:
    from annotated_trl.lab.runner import run_lab
    from annotated_trl.output import OutputDirError, check_output_dir

    try:
        check_output_dir(args.out)
    except OutputDirError as error:
        print(f"error: {error}".replace("--output_dir", "--out"), file=sys.stderr)
        return 2
    results = run_lab(Path(args.out), args.methods, args.seeds, args.jobs, args.quick)
    print(f"{len(results['runs'])} runs in {results['provenance']['wall_s']:.0f} s: {args.out}")
    if results["failed"]:
        print(f"error: {len(results['failed'])} runs failed: {', '.join(results['failed'])}")
        return 1
    return 0


def _lab_gpu(args: argparse.Namespace) -> int:
    """Refuse a bad invocation or a failing recipe in one line each (exit 2) before anything
    trains; --dry_run prints the commands; otherwise train, exit 1 if a run failed."""
    import shlex

    import torch

    from annotated_trl.lab.gpu import launch_argv, preflight, run_gpu_lab
    from annotated_trl.output import OutputDirError, check_output_dir

    config = Path(args.accelerate_config)
    problem = None
    if args.steps < 1:
        problem = f"--steps {args.steps}: expected 1 or more"
    elif not config.is_file():
        problem = f"--accelerate_config {config}: no such file (see accelerate_configs/)"
    elif not args.dry_run and not torch.cuda.is_available():
        problem = (
            "lab-gpu trains on CUDA GPUs and torch sees none; here, `annotated-trl lab` runs the "
            "CPU lab, and --dry_run prints the GPU lab's commands"
        )
    else:
        try:
            check_output_dir(args.out)
        except OutputDirError as error:
            problem = str(error).replace("--output_dir", "--out")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    errors, estimates = preflight(args.methods, config, args.offline)
    for line in errors:
        print(f"error: {line}", file=sys.stderr)
    if errors:
        return 2
    out = Path(args.out)
    if args.dry_run:
        for seed in args.seeds:
            for key in args.methods:
                print(shlex.join(launch_argv(key, seed, args.steps, out, config)))
        return 0
    results = run_gpu_lab(
        out, args.methods, args.seeds, args.steps, config, args.offline, estimates
    )
    print(f"{len(results['runs'])} runs in {results['provenance']['wall_s']:.0f} s: {args.out}")
    if results["failed"]:
        print(f"error: {len(results['failed'])} runs failed: {', '.join(results['failed'])}")
        return 1
    return 0


def _lab_figures(args: argparse.Namespace) -> int:
    from annotated_trl.lab.figures import write_all

    if not Path(args.results).is_file():
        print(
            f"error: {args.results}: no such file; run `annotated-trl lab` first", file=sys.stderr
        )
        return 2
    written = write_all(Path(args.results), Path(args.out))
    print(f"wrote {len(written)} figures to {args.out}")
    return 0


def _lab_merge(args: argparse.Namespace) -> int:
    import json

    from annotated_trl.lab.runner import merge_results, results_json

    files = {}
    for path in (args.update, args.into):
        try:
            files[path] = json.loads(Path(path).read_text())
        except (OSError, ValueError) as error:
            print(f"error: {path}: {getattr(error, 'strerror', None) or error}", file=sys.stderr)
            return 2
    update, base = files[args.update], files[args.into]
    if update["failed"] or update["provenance"]["quick"]:
        why = "has failed runs" if update["failed"] else "is a --quick check"
        print(f"error: {args.update} {why}; run the lab again without it", file=sys.stderr)
        return 2
    merged = merge_results(base, update)
    Path(args.into).write_text(results_json(merged))
    replaced = ", ".join(merged["provenance"]["updates"][-1]["experiments"]) or "nothing"
    print(f"{args.into}: {replaced} from {args.update}; {len(merged['runs'])} runs in all")
    return 0


def _doctor(args: argparse.Namespace) -> int:
    """Print every finding, then a summary; 0 when none is an error, else 2."""
    import datasets

    from annotated_trl.doctor import DoctorError, exit_code, render, run_doctor

    datasets.disable_progress_bars()
    try:
        findings = run_doctor(
            args.method, args.config, args.dataset, args.model, args.num_processes
        )
    except DoctorError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(render(findings))
    return exit_code(findings)


def _memory(args: argparse.Namespace) -> int:
    """Print the estimate's breakdown (exit 0), or one error line (exit 2)."""
    from annotated_trl.memory import report

    try:
        text = report(
            args.model,
            args.method,
            precision=args.precision,
            lora_rank=args.lora_rank,
            gradient_checkpointing=not args.no_gradient_checkpointing,
            zero_stage=args.zero_stage,
            num_gpus=args.num_gpus,
            seq_len=args.seq_len,
            batch_size=args.batch_size,
        )
    except ValueError as error:  # no or unreadable config.json: one line
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(text)
    return 0


def _notebook(args: argparse.Namespace) -> int:
    """Write <out>/<key>_training.ipynb from annotated_examples/<key>_training.py (exit 0), or
    one error line (exit 2)."""
    from annotated_trl.methods import BY_KEY
    from annotated_trl.notebook import notebook_json

    if args.method not in BY_KEY:
        print(
            f"error: unknown method {args.method!r}; one of: {', '.join(BY_KEY)}", file=sys.stderr
        )
        return 2
    # The scripts are not part of the installed package: they live in the repository.
    examples = Path(__file__).resolve().parents[2] / "annotated_examples"
    script = examples / f"{args.method}_training.py"
    if not script.is_file():
        print(
            f"error: {script}: no such file (install from a clone of the repository)",
            file=sys.stderr,
        )
        return 2
    out = Path(args.out) / f"{script.stem}.ipynb"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(notebook_json(script), encoding="utf-8")
    except OSError as error:
        print(f"error: --out {args.out}: {error.strerror or error}", file=sys.stderr)
        return 2
    print(f"wrote {out}; run it from the repository root")
    return 0


def main(argv: list[str] | None = None) -> int:
    from annotated_trl.data import METHOD_FORMATS
    from annotated_trl.lab.experiments import ORDER
    from annotated_trl.methods import METHODS

    parser = argparse.ArgumentParser(prog="annotated-trl", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)

    tiny = commands.add_parser("tiny", help="build the tiny offline models and toy data")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(run=_tiny)

    validate = commands.add_parser("validate", help="check a dataset fits a method")
    validate.add_argument("dataset", help="Hub name, folder, or .json/.jsonl file")
    validate.add_argument("--method", required=True, choices=sorted(METHOD_FORMATS))
    validate.add_argument("--dataset_config", default=None)
    validate.add_argument("--tokenizer", help="model or tokenizer path, to check chat templates")
    validate.add_argument(
        "--max_problems", type=int, default=20, help="problems to print before counting the rest"
    )
    validate.set_defaults(run=_validate)

    lab = commands.add_parser("lab", help="train every method on the toy task, several seeds")
    lab.add_argument("--methods", nargs="+", choices=ORDER, default=ORDER)
    lab.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    lab.add_argument("--jobs", type=int, default=2, help="runs at a time (one thread each)")
    lab.add_argument("--out", default="runs/lab", help="runs, their logs and results.json")
    lab.add_argument("--quick", action="store_true", help="3 steps a run: check the lab works")
    lab.set_defaults(run=_lab)

    gpu = commands.add_parser("lab-gpu", help="every method's GPU recipe, a short budget")
    gpu.add_argument("--methods", nargs="+", choices=ORDER, default=ORDER)
    gpu.add_argument("--seeds", nargs="+", type=int, default=[0])
    gpu.add_argument("--steps", type=int, default=100, help="optimiser steps per run")
    gpu.add_argument("--out", default="runs/lab-gpu", help="runs, their logs and results.json")
    gpu.add_argument(
        "--accelerate_config",
        default="accelerate_configs/single_gpu.yaml",
        help="how `accelerate launch` starts each run (num_processes: GPUs)",
    )
    gpu.add_argument(
        "--offline",
        action="store_true",
        help="no Hub: every model and dataset must be in the local cache (checked first)",
    )
    gpu.add_argument(
        "--dry_run",
        action="store_true",
        help="check the recipes, print the commands, train nothing",
    )
    gpu.set_defaults(run=_lab_gpu)

    figures = commands.add_parser("lab-figures", help="the site's charts from the lab's results")
    figures.add_argument("results", help="results.json written by `annotated-trl lab`")
    figures.add_argument("--out", default="docs/lab/figures")
    figures.set_defaults(run=_lab_figures)

    merge = commands.add_parser("lab-merge", help="put a lab run's experiments into results")
    merge.add_argument("update", help="results.json of `annotated-trl lab --methods ...`")
    merge.add_argument("--into", default="docs/lab/results.json", help="results to update")
    merge.set_defaults(run=_lab_merge)

    doctor = commands.add_parser("doctor", help="check a recipe, its data and model, offline")
    doctor.add_argument("--method", required=True, choices=[m.key for m in METHODS])
    doctor.add_argument("--config", required=True, help="the recipe (YAML) the script will run")
    doctor.add_argument("--dataset", help="instead of the recipe's dataset_name")
    doctor.add_argument("--model", help="instead of the recipe's model_name_or_path")
    doctor.add_argument("--num_processes", type=int, default=1, help="GPUs (processes) in all")
    doctor.set_defaults(run=_doctor)

    memory = commands.add_parser("memory", help="estimate one GPU's training memory, offline")
    memory.add_argument("model", help="config.json, a local model folder, or a preset name")
    memory.add_argument("--method", required=True, choices=[m.key for m in METHODS])
    memory.add_argument("--seq_len", type=int, default=1024, help="prompt + completion tokens")
    memory.add_argument("--batch_size", type=int, default=1, help="rows per GPU per micro-step")
    memory.add_argument(
        "--precision",
        default="bf16-autocast",
        choices=["bf16-autocast", "float32", "bfloat16"],
        help="bf16-autocast: TRL's default (float32 weights); bfloat16: --dtype bfloat16",
    )
    memory.add_argument("--num_gpus", type=int, default=1)
    memory.add_argument("--zero_stage", type=int, default=0, choices=[0, 1, 2, 3])
    memory.add_argument("--lora_rank", type=int, default=None, help="LoRA r (default: full)")
    memory.add_argument("--no_gradient_checkpointing", action="store_true")
    memory.set_defaults(run=_memory)

    notebook = commands.add_parser("notebook", help="an annotated script as a Jupyter notebook")
    # Checked by _notebook, not by `choices`: argparse would answer with its usage text too.
    notebook.add_argument("method", help="the method's key, e.g. sft or grpo")
    notebook.add_argument("--out", default=".", help="folder to write <method>_training.ipynb to")
    notebook.set_defaults(run=_notebook)

    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
