"""Peak memory of a real TRL training run per method family, measured on CPU, vs the estimate.

A Qwen2-architecture model with Qwen2.5's real vocabulary (151,936 tokens, tied embeddings) and a
small body (hidden 512, 4 layers: about 0.1B parameters, most of them the embedding, as in the
small Qwen2.5 models) is built with random weights, offline, from its config. Each family (SFT,
DPO, GRPO, Reward, GKD) trains it for two optimiser steps with TRL 1.16 in float32
(`use_cpu=True, bf16=False`, no gradient checkpointing, one row of about 32 tokens; GKD 120;
GRPO two completions), inside `torch.profiler.profile(profile_memory=True)`.

The profiler's allocation events carry the CPU allocator's running total of live tensor bytes
(`total_allocated`, counted from the moment profiling starts), so its maximum is the true peak of
tensor memory: no interpreter, library or tokenizer baseline, unlike RSS. Two steps, because the
peak comes in the second: AdamW creates its moments during the first step, and the second step's
backward pass then runs with weights, moments and new gradients all alive.

    python -m benchmarks.memory_check     # every family; writes results/memory_check.{json,md}

The test `tests/test_memory.py::test_memory_estimate_within_15_percent_of_measured_peak` runs the
same measurement and fails when an estimate drifts more than 15% from it.
"""

import contextlib
import gc
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from torch._C._profiler import _EventType  # noqa: E402
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from annotated_trl.memory import GIB, ModelShape, cpu_check_estimate  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"

# Qwen2.5's vocabulary and tied head; a body small enough to train two steps on CPU in seconds.
SHAPE = ModelShape(
    hidden_size=512,
    intermediate_size=2816,
    num_hidden_layers=4,
    key_value_size=2 * 64,
    vocab_size=151936,
    tie_word_embeddings=True,
)
HEADS = 8
BATCH = 1  # rows per step (GRPO: 2 completions of one prompt, its smallest group)
LENGTH = 32  # tokens per sequence (prompt + completion for the online methods)
COMPLETION = 8  # generated tokens per completion (GRPO)
# GKD's loss holds 17 (tokens x vocabulary) tensors at once: long enough a batch that they, not
# the end of the backward pass, set its peak, so that the check covers that term.
GKD_LENGTH = 128


def qwen2_config(tokenizer, **extra):
    ids = {"pad_token_id": tokenizer.pad_token_id, "eos_token_id": tokenizer.eos_token_id}
    return SHAPE.qwen2_config(HEADS, **ids, bos_token_id=None, **extra)


def tokenizer():
    """The offline fixture's byte-level BPE (ids below 512 are valid in the 151,936 vocabulary)."""
    from annotated_trl.fixtures import build_tokenizer

    return build_tokenizer(["the quick brown fox jumps over the lazy dog 0123456789"] * 20, 300)


def peak_tensor_bytes(run) -> int:
    """The most tensor bytes alive at once on CPU while `run()` executes, beyond those before.

    The allocator's running total is process-wide and only counts while a profiler records, so
    `run` must free what it allocates before it returns (or a later run starts higher); the
    total just before the first allocation is subtracted all the same.
    """
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()

    def walk(events):
        for event in events:
            yield event
            yield from walk(event.children)

    allocations = sorted(
        (e for e in walk(prof.profiler.kineto_results.experimental_event_tree())
         if e.tag == _EventType.Allocation),
        key=lambda e: e.start_time_ns,
    )  # fmt: skip
    first = allocations[0].extra_fields
    baseline = first.total_allocated - first.alloc_size
    return max(e.extra_fields.total_allocated for e in allocations) - baseline


def common_args(config_class, out: Path, batch: int = BATCH, **extra):
    """The CPU settings every run shares: float32, no checkpointing, two steps, nothing saved."""
    return config_class(
        output_dir=str(out),
        max_steps=2,
        per_device_train_batch_size=batch,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=1,
        disable_tqdm=True,
        seed=0,
        **extra,
    )


WORDS = "the quick brown fox jumps over the lazy dog " * 8


def sft(tok, out):
    from transformers import Qwen2ForCausalLM
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_dict({"text": [WORDS] * 8})
    model = Qwen2ForCausalLM(qwen2_config(tok))
    args = common_args(SFTConfig, out, max_length=LENGTH)
    return SFTTrainer(model=model, args=args, train_dataset=data, processing_class=tok)


def dpo(tok, out):
    from transformers import Qwen2ForCausalLM
    from trl import DPOConfig, DPOTrainer

    short = WORDS[:40]
    data = Dataset.from_dict(
        {"prompt": [short] * 8, "chosen": [WORDS] * 8, "rejected": [WORDS] * 8}
    )
    model = Qwen2ForCausalLM(qwen2_config(tok))
    # The reference TRL would build: the same architecture and dtype, frozen.
    ref = Qwen2ForCausalLM(qwen2_config(tok)).requires_grad_(False)
    args = common_args(DPOConfig, out, max_length=LENGTH)
    return DPOTrainer(
        model=model, ref_model=ref, args=args, train_dataset=data, processing_class=tok
    )


def length_reward(completions, **kwargs):
    return [float(len(c)) for c in completions]


def grpo(tok, out):
    from transformers import Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    # A prompt of LENGTH - COMPLETION tokens (the byte-level BPE here: one token per 4 characters).
    data = Dataset.from_dict({"prompt": [WORDS[: 4 * (LENGTH - COMPLETION)]] * 8})
    model = Qwen2ForCausalLM(qwen2_config(tok))
    args = common_args(
        GRPOConfig,
        out,
        batch=2,
        num_generations=2,
        max_completion_length=COMPLETION,
    )
    return GRPOTrainer(
        model=model, reward_funcs=length_reward, args=args, train_dataset=data, processing_class=tok
    )


def reward(tok, out):
    from transformers import Qwen2ForSequenceClassification
    from trl import RewardConfig, RewardTrainer

    # RewardTrainer drops pairs longer than max_length rather than truncating them: ~30 tokens.
    pair = WORDS[: 4 * LENGTH - 4]
    data = Dataset.from_dict({"chosen": [pair] * 8, "rejected": [pair] * 8})
    model = Qwen2ForSequenceClassification(qwen2_config(tok, num_labels=1))
    args = common_args(RewardConfig, out, max_length=LENGTH)
    return RewardTrainer(model=model, args=args, train_dataset=data, processing_class=tok)


def gkd(tok, out):
    from transformers import Qwen2ForCausalLM
    from trl.experimental.gkd import GKDConfig, GKDTrainer

    answer = (WORDS * 4)[:440]  # the chat is 120 tokens: it fits max_length whole
    turn = [{"role": "user", "content": WORDS[:40]}, {"role": "assistant", "content": answer}]
    data = Dataset.from_dict({"messages": [turn] * 8})
    model = Qwen2ForCausalLM(qwen2_config(tok))
    teacher = Qwen2ForCausalLM(qwen2_config(tok)).requires_grad_(False)
    # lmbda=0: the student trains on the dataset's own completions, so the run is deterministic.
    args = common_args(GKDConfig, out, max_length=GKD_LENGTH, lmbda=0.0)
    return GKDTrainer(
        model=model, teacher_model=teacher, args=args, train_dataset=data, processing_class=tok
    )


FAMILIES = {"sft": sft, "dpo": dpo, "grpo": grpo, "reward": reward, "gkd": gkd}


@dataclass(frozen=True)
class Check:
    """One family's run: its measured peak, and the batch its gradient-carrying forward saw."""

    method: str
    trainer: str
    peak_bytes: int
    sequences: int  # rows of that forward (chosen + rejected count twice)
    seq_len: int  # its padded length, which is what the tensors are sized by
    seconds: float

    def estimate(self):
        """The estimator's answer for the same run (float32, no checkpointing, CPU kernels)."""
        return cpu_check_estimate(SHAPE, self.method, self.sequences, self.seq_len)


def measure(method: str, out: Path) -> Check:
    """Build the models and the trainer and train two steps, all inside the profiler."""
    tok = tokenizer()
    torch.manual_seed(0)
    start = time.perf_counter()
    names, shapes = [], []

    def record_shape(module, args, kwargs):
        if torch.is_grad_enabled():  # the training forward, not generation or a frozen pass
            shapes.append(tuple(kwargs["input_ids"].shape))

    def run():
        trainer = FAMILIES[method](tok, out)
        trainer.model.register_forward_pre_hook(record_shape, with_kwargs=True)
        names.append(type(trainer).__name__)
        with contextlib.redirect_stdout(None):
            trainer.train()
        del trainer  # freed while the profiler still counts (see peak_tensor_bytes)
        gc.collect()

    peak = peak_tensor_bytes(run)
    sequences, seq_len = max(shapes, key=lambda shape: shape[0] * shape[1])
    seconds = time.perf_counter() - start
    return Check(method, names[0], peak, sequences, seq_len, seconds)


def write_results(checks: list[Check]) -> None:
    """benchmarks/results/memory_check.json (read by the memory page's table) and a .md copy."""
    import torch
    import transformers
    import trl

    rows = []
    for check in checks:
        estimated = check.estimate().total
        rows.append(
            {
                "method": check.method,
                "trainer": check.trainer,
                "sequences": check.sequences,
                "seq_len": check.seq_len,
                "measured_bytes": check.peak_bytes,
                "estimated_bytes": estimated,
                "error": round(estimated / check.peak_bytes - 1, 4),
                "seconds": round(check.seconds, 1),
            }
        )
    results = {
        "command": "python -m benchmarks.memory_check",
        "shape": asdict(SHAPE),
        "precision": "float32",
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "trl": trl.__version__},
        "runs": rows,
    }  # fmt: skip
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "memory_check.json").write_text(json.dumps(results, indent=2) + "\n")
    lines = [
        "# Peak memory, measured on CPU vs estimated",
        "",
        f"`{results['command']}`; model {SHAPE.params / 1e6:.1f} M parameters, float32.",
        "",
        "| Method | Trainer | Batch | Measured GiB | Estimated GiB | Error |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['method']} | {row['trainer']} | {row['sequences']} × {row['seq_len']} "
            f"| {row['measured_bytes'] / GIB:.3f} | {row['estimated_bytes'] / GIB:.3f} "
            f"| {row['error']:+.2%} |"
        )
    (RESULTS / "memory_check.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    import tempfile

    chosen = sys.argv[1:] or list(FAMILIES)
    checks = []
    with tempfile.TemporaryDirectory() as out:
        for method in chosen:
            check = measure(method, Path(out))
            total = check.estimate().total
            print(
                f"{method}: measured {check.peak_bytes / GIB:.3f} GiB, estimated "
                f"{total / GIB:.3f} GiB ({total / check.peak_bytes - 1:+.1%}), "
                f"{check.seconds:.0f} s",
                flush=True,
            )
            checks.append(check)
    if chosen == list(FAMILIES):
        write_results(checks)
