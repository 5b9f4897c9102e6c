"""Shared by the Nash-MD and XPO parity scenarios: arguments, fixture data and the run itself.

The two scenario scripts differ only in which trainer they import (trl 1.12.0's, or ours) and in
the method's own settings; everything else (model objects, data, seed, config) is built here.
"""

import argparse
from pathlib import Path

import datasets
import torch
from per_process import exit_skipping_gloo_teardown, write_json
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer


def parse_args(extra=()) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--impl", choices=("original", "ours"), required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tiny", type=Path, required=True, help="the offline fixture folder")
    parser.add_argument("--data", default="prompt_only", help="a fixture data format")
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--epochs", type=float, default=1)
    parser.add_argument("--missing_eos_penalty", type=float, default=None)
    for flag, kwargs in extra:
        parser.add_argument(flag, **kwargs)
    return parser.parse_args()


def run(args, config_class, trainer_class, **method_config) -> None:
    """Train on the fixture with `args`; write `trainer.state.log_history` to `args.out`."""
    # One thread: on a shared 2-core machine, more threads per process only contend. Both
    # implementations run with the same setting.
    torch.set_num_threads(1)
    data = args.tiny / "data" / args.data / "train.jsonl"
    dataset = datasets.load_dataset("json", data_files=str(data))["train"]
    dataset = dataset.select(range(args.rows))
    tokenizer = AutoTokenizer.from_pretrained(args.tiny / "policy")
    policy = AutoModelForCausalLM.from_pretrained(args.tiny / "policy")
    reward = AutoModelForSequenceClassification.from_pretrained(args.tiny / "reward", num_labels=1)
    config = config_class(
        output_dir=str(args.out.parent / f"{args.impl}-run"),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=4,
        num_train_epochs=args.epochs,
        max_new_tokens=8,
        max_length=64,
        temperature=0.9,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        missing_eos_penalty=args.missing_eos_penalty,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=42,
        **method_config,
    )
    trainer = trainer_class(
        model=policy,
        reward_funcs=reward,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()
    write_json(args.out, trainer.state.log_history)
    exit_skipping_gloo_teardown()
