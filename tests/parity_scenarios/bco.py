"""BCO parity scenario: one short run of trl 1.12.0's BCOTrainer or of ours, same everything else.

    python tests/parity_scenarios/bco.py --impl original|ours --out log.json [--udm] [...]

The only line that differs between the two runs is the import of `BCOConfig, BCOTrainer`: the
one-line change a user makes when migrating. The fixture (`annotated-trl tiny`) is built into a
temporary folder; the policy is `tiny/policy` and the reference a second copy of it loaded from
the same files, trained on the unpaired-preference toy data (labels alternate true/false in the
file, so every batch holds both). 8 optimiser steps of 2 micro-batches of 8 rows (gradient
accumulation, so the loss scaling is covered), a log every step and an evaluation on 32 held-out
rows every 4 steps.

`--udm` adds underlying-distribution matching: a logistic-regression classifier on prompt
embeddings, fitted at construction, weights every undesirable row. The embedding function is a
deterministic bag of tokens (the normalised histogram of a prompt's token ids), defined here, so
both runs fit the same classifier on the same sampled prompts.
"""

import argparse
import tempfile
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--impl", choices=["original", "ours"], required=True)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--udm", action="store_true")
parser.add_argument("--data", default="unpaired_preference")
parser.add_argument("--max_length", type=int, default=64)
parser.add_argument("--min_density_ratio", type=float, default=0.5)
parser.add_argument("--max_density_ratio", type=float, default=10.0)
parser.add_argument("--seed", type=int, default=42)
cli = parser.parse_args()

if cli.impl == "original":
    from trl.experimental.bco import BCOConfig, BCOTrainer
else:
    from annotated_trl.trainers.bco import BCOConfig, BCOTrainer

import datasets  # noqa: E402
import torch  # noqa: E402
from per_process import exit_skipping_gloo_teardown, write_json  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

from annotated_trl.fixtures import build_all  # noqa: E402

root = build_all(Path(tempfile.mkdtemp(prefix="bco-parity-")))
tokenizer = AutoTokenizer.from_pretrained(root / "policy")
data_dir = root / "data" / cli.data
data_files = {split: str(data_dir / f"{split}.jsonl") for split in ("train", "test")}
dataset = datasets.load_dataset("json", data_files=data_files)


def bag_of_tokens(input_ids, attention_mask):
    """A prompt's embedding: how often each token id occurs in it, divided by its length."""
    counts = torch.nn.functional.one_hot(input_ids, len(tokenizer)).float()
    counts = (counts * attention_mask.unsqueeze(-1)).sum(dim=1)
    return counts / attention_mask.sum(dim=1, keepdim=True)


args = BCOConfig(
    output_dir=str(cli.out.parent / f"run-{cli.impl}"),
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    report_to="none",
    save_strategy="no",
    seed=cli.seed,
    learning_rate=1e-3,
    lr_scheduler_type="linear",
    max_steps=8,
    per_device_train_batch_size=8,
    gradient_accumulation_steps=2,
    per_device_eval_batch_size=16,
    logging_steps=1,
    eval_strategy="steps",
    eval_steps=4,
    max_length=cli.max_length,
    beta=0.1,
    prompt_sample_size=64,
    min_density_ratio=cli.min_density_ratio,
    max_density_ratio=cli.max_density_ratio,
)
udm = {"embedding_func": bag_of_tokens, "embedding_tokenizer": tokenizer} if cli.udm else {}
trainer = BCOTrainer(
    model=AutoModelForCausalLM.from_pretrained(root / "policy"),
    ref_model=AutoModelForCausalLM.from_pretrained(root / "policy"),
    args=args,
    train_dataset=dataset["train"],
    eval_dataset=dataset["test"].select(range(32)),
    processing_class=tokenizer,
    **udm,
)
trainer.train()
write_json(cli.out, trainer.state.log_history)
exit_skipping_gloo_teardown()
