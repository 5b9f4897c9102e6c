"""PRM parity scenario: one short run of trl 1.12.0's PRMTrainer or of ours, same everything else.

    python tests/parity_scenarios/prm.py --impl original|ours --out log.json [--last_step_only]

The only line that differs between the two runs is the import of `PRMConfig, PRMTrainer`: the
one-line change a user makes when migrating. The fixture (`annotated-trl tiny`) is built into a
temporary folder; the model is `tiny/token_classifier` (Qwen2 with a two-way token head) trained
on the stepwise-supervision toy data: 12 optimiser steps of 2 micro-batches of 8 rows (gradient
accumulation, so the loss normalisation over labelled tokens is covered), max_length 24 (some
rows are cut), a log every step and an evaluation on the 64 held-out rows every 4 steps.

Besides `--out` (the log history), the run writes two files next to it, for the test to compare:
- `<out>.tokens.json`: the trainer's tokenised train and eval datasets (`input_ids`, `labels`)
  under six set-ups: the defaults; `train_on_last_step_only`; each truncation on its own; a
  multi-token separator; a tokenizer with a BOS token.
- `<out>.config.json`: every field of `PRMConfig()` after `__post_init__`, and the declared
  default of each PRM-specific field.
"""

import argparse
import dataclasses
import tempfile
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--impl", choices=["original", "ours"], required=True)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--last_step_only", action="store_true")
parser.add_argument("--seed", type=int, default=42)
cli = parser.parse_args()

if cli.impl == "original":
    from trl.experimental.prm import PRMConfig, PRMTrainer
else:
    from annotated_trl.trainers.prm import PRMConfig, PRMTrainer

import datasets  # noqa: E402
from per_process import exit_skipping_gloo_teardown, write_json  # noqa: E402
from transformers import AutoModelForTokenClassification, AutoTokenizer  # noqa: E402

from annotated_trl.fixtures import build_all  # noqa: E402

root = build_all(Path(tempfile.mkdtemp(prefix="prm-parity-")))
model_dir = root / "token_classifier"
data_dir = root / "data" / "stepwise_supervision"
data_files = {split: str(data_dir / f"{split}.jsonl") for split in ("train", "test")}
# The fixture's first 256 training and 64 held-out rows: the PRM's full data (4096 rows, for its
# learning) would only make six tokenisations and their comparison slower.
dataset = datasets.load_dataset("json", data_files=data_files)
dataset["train"], dataset["test"] = (
    dataset["train"].select(range(256)),
    dataset["test"].select(range(64)),
)
CPU = {"use_cpu": True, "bf16": False, "gradient_checkpointing": False, "report_to": "none"}


def tokenized(name: str, tokenizer, **options) -> dict:
    """The trainer's own tokenised datasets under one set-up (the model is never trained)."""
    args = PRMConfig(output_dir=str(cli.out.parent / f"tok-{cli.impl}"), **CPU, **options)
    trainer = PRMTrainer(
        model=AutoModelForTokenClassification.from_pretrained(model_dir),
        args=args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"],
        processing_class=tokenizer,
    )
    return {
        f"{name}/{split}/{column}": values
        for split, data in (("train", trainer.train_dataset), ("eval", trainer.eval_dataset))
        for column, values in data.to_dict().items()
    }


tokenizer = AutoTokenizer.from_pretrained(model_dir)
with_bos = AutoTokenizer.from_pretrained(model_dir)
with_bos.bos_token = "<|im_start|>"  # the fixture has none; Llama-style tokenizers do
tokens = {
    **tokenized("defaults", tokenizer),
    **tokenized("last_step_only", tokenizer, train_on_last_step_only=True),
    **tokenized("short_completion", tokenizer, max_length=None, max_completion_length=8),
    **tokenized("short_total", tokenizer, max_length=16),
    **tokenized("separator", tokenizer, step_separator=" ки\n\n"),
    **tokenized("bos", with_bos),
}
write_json(cli.out.with_suffix(".tokens.json"), tokens)

default_config = PRMConfig(output_dir="prm-defaults", use_cpu=True)  # bf16 needs it on CPU
prm_fields = ("max_length", "max_completion_length", "disable_dropout", "step_separator")
prm_fields += ("train_on_last_step_only", "dataset_num_proc", "learning_rate", "logging_steps")
prm_fields += ("gradient_checkpointing", "bf16")
declared = {f.name: f.default for f in dataclasses.fields(PRMConfig) if f.name in prm_fields}
config = {"after_post_init": default_config.to_dict(), "declared": declared}
write_json(cli.out.with_suffix(".config.json"), config)

args = PRMConfig(
    output_dir=str(cli.out.parent / f"run-{cli.impl}"),
    **CPU,
    save_strategy="no",
    seed=cli.seed,
    learning_rate=1e-3,
    lr_scheduler_type="linear",
    max_steps=12,
    per_device_train_batch_size=8,
    gradient_accumulation_steps=2,
    per_device_eval_batch_size=16,
    logging_steps=1,
    eval_strategy="steps",
    eval_steps=4,
    max_length=24,
    train_on_last_step_only=cli.last_step_only,
)
trainer = PRMTrainer(
    model=AutoModelForTokenClassification.from_pretrained(model_dir),
    args=args,
    train_dataset=dataset["train"],
    eval_dataset=dataset["test"],
    processing_class=tokenizer,
)
trainer.train()
write_json(cli.out, trainer.state.log_history)
exit_skipping_gloo_teardown()
