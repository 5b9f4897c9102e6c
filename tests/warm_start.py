"""A warm start shared by the online learning tests (GRPO, RLOO): the tiny policy after SFT.

The random tiny policy almost never writes the right number, so every completion of a group
gets reward 0 and an online method has nothing to compare. After the same SFT run as
tests/test_sft_learning.py (800 steps, lr 1e-3, batch 16, answer-only loss) it solves
about 40% of the problems: groups of sampled completions then mix right and wrong answers, and
the relative advantages carry a signal. Built once per session (~10-15 s on 2 idle cores).

Import it into a test module with `from warm_start import sft_warm_policy  # noqa: F401`.
"""

from pathlib import Path

import pytest

from annotated_trl.toy_task import arithmetic_reward

SFT_STEPS = 800


@pytest.fixture(scope="session")
def sft_warm_policy(tiny, tmp_path_factory) -> Path:
    """Folder with the SFT-trained tiny policy and its tokenizer."""
    import datasets
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out = tmp_path_factory.mktemp("sft-warm-policy")
    data = tiny.data / "conversational_language_modeling"
    conversations = datasets.load_dataset("json", data_files=str(data / "train.jsonl"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    args = SFTConfig(
        output_dir=str(out / "trainer"),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=16,
        max_steps=SFT_STEPS,
        max_length=64,
        assistant_only_loss=True,
        logging_steps=100,
        save_strategy="no",
        report_to="none",
        seed=42,
    )
    trainer = SFTTrainer(
        model=str(tiny.policy),
        args=args,
        train_dataset=conversations,
        processing_class=tokenizer,
    )
    trainer.train()
    policy = out / "policy"
    trainer.save_model(str(policy))
    tokenizer.save_pretrained(str(policy))
    return policy


def greedy_solved_fraction(model, tokenizer, prompts) -> float:
    """Greedy-decode every prompt of a conversational prompt-only dataset; the fraction that the
    task's rule (`arithmetic_reward`) judges right."""
    import torch

    tokenizer.padding_side = "left"  # generation continues from the right edge
    texts = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        for p in prompts["prompt"]
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.no_grad():
        generated = model.generate(**batch, max_new_tokens=12, do_sample=False)
    completions = tokenizer.batch_decode(
        generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    rewards = arithmetic_reward(completions, answer=prompts["answer"])
    return sum(rewards) / len(rewards)
