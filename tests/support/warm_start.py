"""A warm start shared by the online learning tests (GRPO, RLOO): the tiny policy after SFT,
and the one RL run both methods are measured with.

The random tiny policy almost never writes the right number, so every completion of a group
gets reward 0 and an online method has nothing to compare. After the same SFT run as
tests/test_sft_learning.py (800 steps, lr 1e-3, batch 16, answer-only loss) it solves
about 40% of the problems: groups of sampled completions then mix right and wrong answers, and
the relative advantages carry a signal. Built once per session, shared by the test workers
(~10-15 s on 2 idle cores).

Import it into a test module with `from support.warm_start import sft_warm_policy  # noqa: F401`.
"""

from pathlib import Path

import datasets
import pytest
from transformers import AutoTokenizer

from annotated_trl.toy_task import arithmetic_reward, solved_fraction  # noqa: F401
from support.once import built_once

SFT_STEPS = 800


@pytest.fixture(scope="session")
def sft_warm_policy(tiny, tmp_path_factory, seed_offset) -> Path:
    """Folder with the SFT-trained tiny policy and its tokenizer, trained once per session
    (support/once.py: the test workers share it)."""

    def build(folder: Path) -> None:
        train_sft_warm_start(tiny, folder, seed=42 + seed_offset)

    return built_once(tmp_path_factory, f"sft-warm-policy-{seed_offset}", build) / "policy"


def train_sft_warm_start(tiny, folder: Path, seed: int) -> None:
    """The SFT run; the policy and its tokenizer are saved in folder/policy."""
    from trl import SFTConfig, SFTTrainer

    data = tiny.data / "conversational_language_modeling"
    conversations = datasets.load_dataset("json", data_files=str(data / "train.jsonl"))["train"]
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    args = SFTConfig(
        output_dir=str(folder / "trainer"),
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
        seed=seed,
    )
    trainer = SFTTrainer(
        model=str(tiny.policy),
        args=args,
        train_dataset=conversations,
        processing_class=tokenizer,
    )
    trainer.train()
    trainer.save_model(str(folder / "policy"))
    tokenizer.save_pretrained(str(folder / "policy"))


def train_from_warm_start(trainer_class, config_class, tiny, policy, tmp_path_factory, steps, seed):
    """GRPO or RLOO on the toy task from the SFT warm start, with the same settings for both:
    the script's default `arithmetic_reward`, 8 prompts x 16 completions per step, at most 10
    completion tokens, lr 3e-4, `steps` steps, seed `seed` (42 in the suite).

    Returns the greedy solve rates (train / test prompts) before and after, and the logged mean
    reward of every step.
    """
    prompts = datasets.load_dataset(
        "json",
        data_files={
            split: str(tiny.data / "conversational_prompt_only" / f"{split}.jsonl")
            for split in ("train", "test")
        },
    )
    tokenizer = AutoTokenizer.from_pretrained(policy)
    args = config_class(
        output_dir=str(tmp_path_factory.mktemp("rl-learning")),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        per_device_train_batch_size=128,  # 8 prompts x 16 completions
        num_generations=16,
        max_completion_length=10,  # "3 + 4 = 7<|im_end|>" fits
        temperature=1.0,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=seed,
    )
    trainer = trainer_class(
        model=str(policy),
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=prompts["train"],
        processing_class=tokenizer,
    )

    def solved():
        trainer.model.eval()
        return {
            split: solved_fraction(trainer.model, tokenizer, prompts[split])
            for split in ("train", "test")
        }

    before = solved()
    trainer.train()
    after = solved()
    rewards = [row["reward"] for row in trainer.state.log_history if "reward" in row]
    return before, after, rewards
