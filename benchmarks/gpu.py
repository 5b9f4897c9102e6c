"""GPU throughput of every example script on randomly initialised Qwen2 models of ≈0.5B / ≈1.5B.

For each size, the harness builds the models a script's tiny recipe names (`tiny/policy`,
`tiny/teacher`, `tiny/reward`, `tiny/token_classifier`) from a Qwen2 config, in bf16, with the
offline fixture's tokenizer (no downloads), then runs each script on the fixture's toy data for a
fixed number of steps, as a user runs it (one process per run), with the tiny recipe plus
`--use_cpu false --bf16 true --dtype bfloat16`. Reported per run: tokens/s, median step time,
peak GPU memory and MFU.

FLOPs are counted, not guessed from the config: every forward pass of a `Qwen2Model` in the
process adds 6·N·T when gradients are on (forward + backward of a trained model) and 2·N·T when
they are off (generation, reference, teacher and reward models), where N is that model's
parameter count and T the tokens it processed (padding included, since it is computed).
Attention's sequence-length term is left out (short sequences here). MFU = counted FLOPs /
`train()` seconds / the GPU's dense bf16 peak from the vendor's data sheet (PEAK_TFLOPS).
tokens/s counts the tokens of the gradient-carrying forwards (the trained model's own).

The models keep Qwen2.5-0.5B's and -1.5B's layer shapes (hidden size, heads, KV heads, MLP
width, tied embeddings) but the fixture's 512-token vocabulary, so the layer count is chosen to
bring N to ≈0.5B and ≈1.5B; the exact N is reported.

    python -m benchmarks.gpu                        # every script, both sizes, 10 steps
    python -m benchmarks.gpu dpo grpo --sizes 0.5b --steps 20
    python -m benchmarks.gpu --allow-cpu --tiny     # the same pipeline on CPU, tiny model, 2 steps

Without a CUDA device it refuses (exit code 2) unless `--allow-cpu --tiny` asks for the check.
"""

import argparse
import json
import os
import re
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import OFFLINE_ENV, REPO, RESULTS, TrainTimer, machine, peak_rss_mib

EXAMPLES = REPO / "annotated_examples"
RECIPES = EXAMPLES / "recipes"

# Qwen2.5 layer shapes; layers set so that N (with a 512-token vocabulary) is ≈ the size's name.
SIZES = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_attention_heads=14,
                 num_key_value_heads=2, num_hidden_layers=33),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_attention_heads=12,
                 num_key_value_heads=2, num_hidden_layers=32),
    "tiny": dict(hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 num_key_value_heads=2, num_hidden_layers=2),
}  # fmt: skip

# Dense (no sparsity) bf16 tensor-core peaks, TFLOP/s, from NVIDIA's data sheets. First match of
# the device name wins, so the more specific names come first.
PEAK_TFLOPS = [
    ("H200", 989.0),  # H200 SXM; the NVL part is rated 835 (no separate entry: name says H200)
    ("H100 NVL", 835.0),
    ("H100 PCIe", 756.0),
    ("H100", 989.0),  # SXM5
    ("A100", 312.0),
]

# The recipe's `tiny/<name>` models, and the head each one gets.
HEADS = {
    "policy": ("Qwen2ForCausalLM", {}),
    "teacher": ("Qwen2ForCausalLM", {}),
    "reward": ("Qwen2ForSequenceClassification", {"num_labels": 1}),
    "token_classifier": ("Qwen2ForTokenClassification", {"num_labels": 2}),
}


def build_models(fixture: Path, size: str, out: Path, dtype) -> dict[str, Path]:
    """Each model of HEADS at `size`, randomly initialised, saved under `out` with the fixture's
    tokenizer and generation config; returns {name: folder}."""
    import torch
    import transformers
    from transformers import AutoConfig, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(fixture / "policy")
    folders = {}
    for seed, (name, (class_name, extra)) in enumerate(HEADS.items()):
        folders[name] = out / size / name
        if (folders[name] / "config.json").exists():
            continue
        config = AutoConfig.from_pretrained(fixture / "policy")  # the tokenizer's ids
        for key, value in {**SIZES[size], **extra}.items():
            setattr(config, key, value)
        torch.manual_seed(seed)
        model = getattr(transformers, class_name)(config).to(dtype)
        model.generation_config = GenerationConfig.from_pretrained(fixture / "policy")
        model.save_pretrained(folders[name])
        tokenizer.save_pretrained(folders[name])
    return folders


class Counters:
    """FLOPs and tokens of every Qwen2Model forward, and the time of each optimiser step."""

    def __init__(self):
        import torch
        from transformers import TrainerCallback
        from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

        self.flops = self.train_tokens = 0
        self.step_ends: list[float] = []
        self.train: dict = {}
        sizes: dict[int, int] = {}
        counters = self
        forward = Qwen2Model.forward

        def counted_forward(model, input_ids=None, *args, **kwargs):
            embeds = kwargs.get("inputs_embeds")
            shape = input_ids.shape if input_ids is not None else embeds.shape[:2]
            tokens = shape[0] * shape[1]
            if id(model) not in sizes:
                sizes[id(model)] = sum(p.numel() for p in model.parameters())
            trained = torch.is_grad_enabled()
            counters.flops += (6 if trained else 2) * sizes[id(model)] * tokens
            counters.train_tokens += tokens if trained else 0
            return forward(model, input_ids, *args, **kwargs)

        Qwen2Model.forward = counted_forward

        class StepClock(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):
                counters.step_ends.append(time.perf_counter())

        def on_start(trainer):
            trainer.add_callback(StepClock())
            if torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            counters.flops = counters.train_tokens = 0
            counters.step_ends = [time.perf_counter()]

        def on_end(trainer, record):
            model = getattr(trainer.model, "policy", trainer.model)  # PPO: policy + value
            policy = sum(p.numel() for p in model.parameters())
            counters.train = {**record, "policy_parameters": policy}

        TrainTimer(on_start, on_end)

    def report(self, peak_tflops: float | None) -> dict:
        import torch

        assert self.train, "the script never called Trainer.train()"
        seconds = self.train["seconds"]
        steps = [b - a for a, b in zip(self.step_ends, self.step_ends[1:], strict=False)]
        achieved = self.flops / seconds
        on_gpu = torch.cuda.is_available()
        return {
            **self.train,
            "train_tokens": self.train_tokens,
            "tokens_per_s": self.train_tokens / seconds,
            # A trainer that never fires `on_step_end` gets the mean step time instead.
            "median_step_s": statistics.median(steps) if steps else seconds / self.train["steps"],
            "step_s": steps,
            "flops": self.flops,
            "achieved_tflops": achieved / 1e12,
            "mfu": achieved / (peak_tflops * 1e12) if peak_tflops else None,
            "peak_gpu_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if on_gpu else None,
            "peak_rss_mib": peak_rss_mib(),
        }


def run_worker(script: Path, flags: list[str], report: Path, peak_tflops: float | None) -> None:
    """In the script's own process: instrument, run the script as `__main__`, write the report."""
    counters = Counters()
    sys.argv = [str(script), *flags]
    runpy.run_path(str(script), run_name="__main__")
    report.write_text(json.dumps(counters.report(peak_tflops)))


def device() -> tuple[str, float | None]:
    """The GPU's name and its dense bf16 peak (TFLOP/s; None if not in PEAK_TFLOPS)."""
    import torch

    name = torch.cuda.get_device_name(0)
    peak = next((tflops for key, tflops in PEAK_TFLOPS if key in name), None)
    return name, peak


def flags_for(key: str, models: dict[str, Path], fixture: Path, steps: int, gpu: bool) -> list:
    """The tiny recipe, its `tiny/...` paths moved to the built models and the fixture's data."""
    recipe = yaml.safe_load((RECIPES / f"{key}_tiny.yaml").read_text())
    flags = ["--config", str(RECIPES / f"{key}_tiny.yaml")]
    for name, value in recipe.items():
        if isinstance(value, str) and value.startswith("tiny/"):
            part = value.removeprefix("tiny/")
            target = models.get(part, fixture / part)
            flags += [f"--{name}", str(target)]
    flags += ["--max_steps", str(steps), "--eval_strategy", "no", "--save_strategy", "no"]
    flags += ["--disable_tqdm", "true", "--logging_steps", str(steps)]
    if gpu:
        flags += ["--use_cpu", "false", "--bf16", "true", "--dtype", "bfloat16"]
    return flags


def gpu_only_checks() -> str:
    """The checks of the methods that cannot run on a CPU (the method table's `gpu_only` rows),
    as a Markdown list for the performance page: each one's script, what it needs and how long
    it takes, read from the `# Needs:` and `# Wall time:` paragraphs of its header."""
    from annotated_trl.methods import METHODS

    items = []
    for method in (m for m in METHODS if m.gpu_only):
        script = REPO / "benchmarks" / f"gpu_{method.key}.sh"
        header = " ".join(
            line[1:].strip() for line in script.read_text().splitlines() if line.startswith("#")
        )
        needs = re.search(r"Needs: (.*?)(?= Wall time:)", header).group(1)
        wall = re.search(r"Wall time: (.*?\.)(?: |$)", header).group(1)
        items.append(
            f"- [{method.name}](annotated_trainers/{method.key}.md): "
            f"`bash benchmarks/{script.name}`. Needs {needs} Wall time: {wall}"
        )
    import importlib.metadata

    pin = next(r for r in importlib.metadata.requires("trl") if r.startswith("vllm"))
    low, high = re.search(r">=([\d.]+)", pin)[1], re.search(r"<=([\d.]+)", pin)[1]
    items.append(f"\n`trl[vllm]==1.16.0` installs vLLM {low} to {high}, the versions TRL accepts.")
    return "\n".join(items)


def discover() -> list[str]:
    keys = [path.name.removesuffix("_training.py") for path in EXAMPLES.glob("*_training.py")]
    return sorted(key for key in keys if (RECIPES / f"{key}_tiny.yaml").exists())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("keys", nargs="*", help="scripts to run (default: all)")
    parser.add_argument("--sizes", nargs="+", choices=["0.5b", "1.5b"], default=["0.5b", "1.5b"])
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--out", type=Path, help="results folder (default: benchmarks/results)")
    parser.add_argument("--peak-tflops", type=float, help="override the GPU's dense bf16 peak")
    parser.add_argument("--allow-cpu", action="store_true", help="with --tiny: check on CPU")
    parser.add_argument("--tiny", action="store_true", help="a tiny model, 2 steps (a check)")
    if sys.argv[1:2] == ["--worker"]:  # gpu.py --worker SCRIPT REPORT PEAK *script flags
        script, report, peak, *flags = sys.argv[2:]
        run_worker(Path(script), flags, Path(report), float(peak) if peak != "none" else None)
        return 0
    args = parser.parse_args()

    import torch

    gpu = torch.cuda.is_available()
    if not gpu and not (args.allow_cpu and args.tiny):
        print(
            "gpu.py: no CUDA device here; this harness measures GPUs "
            "(`--allow-cpu --tiny` runs the same pipeline on a tiny model as a check)",
            file=sys.stderr,
        )
        return 2
    if args.tiny:
        sizes, steps = ["tiny"], 2
    else:
        sizes, steps = args.sizes, args.steps
    name, peak = device() if gpu else ("cpu", None)
    peak = args.peak_tflops or peak

    from annotated_trl.fixtures import build_all

    work = Path(tempfile.mkdtemp(prefix="bench-gpu-"))
    fixture = build_all(work / "fixture")
    dtype = torch.bfloat16 if gpu else torch.float32
    results = {"machine": {**machine(), "device": name, "peak_bf16_tflops": peak}, "runs": []}
    results["steps"] = steps
    results["flops_formula"] = "6·N·T per gradient-carrying forward, 2·N·T per other forward"
    failures = 0
    for size in sizes:
        models = build_models(fixture, size, work / "models", dtype)
        for key in args.keys or discover():
            report = work / f"{size}-{key}.json"
            command = [sys.executable, "-m", "benchmarks.gpu", "--worker"]
            command += [str(EXAMPLES / f"{key}_training.py"), str(report), str(peak or "none")]
            command += flags_for(key, models, fixture, steps, gpu)
            done = subprocess.run(
                command, cwd=REPO, env={**os.environ, **OFFLINE_ENV}, capture_output=True,
                text=True,
            )  # fmt: skip
            row = {"script": key, "size": size}
            if done.returncode == 0:
                row.update(json.loads(report.read_text()))
            else:
                failures += 1
                row["error"] = done.stderr.strip().splitlines()[-1:] or ["no output"]
            results["runs"].append(row)
            print(summary(row), flush=True)
    write(results, args.out or (RESULTS if gpu else work), name)
    return 1 if failures else 0


def summary(row: dict) -> str:
    if "error" in row:
        return f"{row['script']} {row['size']}: failed: {row['error'][0]}"
    mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "n/a"
    return (
        f"{row['script']} {row['size']}: {row['tokens_per_s']:.0f} tokens/s, "
        f"step {row['median_step_s']:.3f} s, MFU {mfu}"
    )


def write(results: dict, out: Path, device_name: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "-", device_name.lower()).strip("-")
    (out / f"gpu-{slug}.json").write_text(json.dumps(results, indent=1) + "\n")
    lines = [
        f"{results['steps']} steps per run on {device_name} "
        f"(dense bf16 peak {results['machine']['peak_bf16_tflops']} TFLOP/s). "
        f"FLOPs: {results['flops_formula']}.\n",
        "| Script | Size | N (policy) | tokens/s | median step s | peak GPU GiB | MFU |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["runs"]:
        if "error" in row:
            lines.append(f"| {row['script']} | {row['size']} | failed: {row['error'][0]} |||||")
            continue
        memory, mfu = row["peak_gpu_memory_gib"], row["mfu"]
        lines.append(
            f"| {row['script']} | {row['size']} | {row['policy_parameters'] / 1e6:,.1f}M "
            f"| {row['tokens_per_s']:.0f} | {row['median_step_s']:.3f} "
            f"| {'n/a' if memory is None else f'{memory:.1f}'} "
            f"| {'n/a' if mfu is None else f'{mfu:.1%}'} |"
        )
    (out / f"gpu-{slug}.md").write_text("\n".join(lines) + "\n")
    print(out / f"gpu-{slug}.md")


if __name__ == "__main__":
    sys.exit(main())
