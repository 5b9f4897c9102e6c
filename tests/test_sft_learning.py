"""SFT learns the toy task: held-out loss falls, token accuracy rises, and the model solves
arithmetic problems it never saw, as judged by the task's rule.

Measured with benchmarks/cross_cpu.py (benchmarks/results/cross_cpu.md) on an AMD EPYC (800
steps, batch 16, lr 1e-3), under five CPU settings (AVX2 and no-SIMD kernels, 1 and 2 threads,
MKL_CBWR=COMPATIBLE) at seed offset 0, then seed offsets 1 and 2:
- eval loss 5.95 -> 0.41, a drop of 5.54 / 5.57 / 5.56 / 5.57 / 5.58, then 5.60 / 5.58
  (threshold 4.0);
- answer-token accuracy 0.002 -> 0.883 / 0.883 / 0.870 / 0.893 / 0.880, then 0.906 / 0.909
  (threshold 0.75: 11 sd below the mean);
- held-out problems solved by greedy decoding 0 -> 0.328 / 0.359 / 0.375 / 0.391 / 0.422, then
  0.266 / 0.328 (threshold 0.2: mean 0.353, sd 0.051, 3.0 sd below).
Greedy answers are the one number here that the CPU setting moves: a logit that differs in its
last bit can flip which token is argmax, and the answer with it.
"""

import datasets
import pytest
import torch
from transformers import AutoTokenizer
from trl import SFTConfig, SFTTrainer

from annotated_trl.toy_task import arithmetic_reward

STEPS = 800


def _solved_fraction(model, tokenizer, prompts: datasets.Dataset) -> float:
    """Greedy-decode every held-out prompt; the fraction whose last integer is right."""
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


@pytest.fixture(scope="module")
def before_and_after(tiny, tmp_path_factory, seed_offset):
    files = lambda fmt: {  # noqa: E731
        split: str(tiny.data / fmt / f"{split}.jsonl") for split in ("train", "test")
    }
    conversations = datasets.load_dataset(
        "json", data_files=files("conversational_language_modeling")
    )
    held_out_prompts = datasets.load_dataset(
        "json", data_files=files("conversational_prompt_only")
    )["test"]
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    args = SFTConfig(
        output_dir=str(tmp_path_factory.mktemp("sft-learning")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        max_steps=STEPS,
        max_length=64,
        assistant_only_loss=True,  # loss and accuracy on the answer, not on the question
        logging_steps=100,
        save_strategy="no",
        report_to="none",
        seed=42 + seed_offset,
    )
    trainer = SFTTrainer(
        model=str(tiny.policy),
        args=args,
        train_dataset=conversations["train"],
        eval_dataset=conversations["test"],
        processing_class=tokenizer,
    )

    def measure():
        metrics = trainer.evaluate()
        metrics["solved"] = _solved_fraction(trainer.model, tokenizer, held_out_prompts)
        return metrics

    before = measure()
    trainer.train()
    return before, measure()


@pytest.mark.learning
def test_sft_lowers_heldout_loss(before_and_after, measured):
    before, after = before_and_after
    assert before["eval_loss"] > 5.0  # a random model over a 384-token vocabulary
    measured.at_least("held-out loss drop", before["eval_loss"] - after["eval_loss"], 4.0)


@pytest.mark.learning
def test_sft_raises_token_accuracy(before_and_after, measured):
    before, after = before_and_after
    assert before["eval_mean_token_accuracy"] < 0.05
    measured.at_least("held-out answer-token accuracy", after["eval_mean_token_accuracy"], 0.75)


@pytest.mark.learning
def test_sft_solves_unseen_problems(before_and_after, measured):
    before, after = before_and_after
    assert before["solved"] == 0.0
    measured.at_least("held-out problems solved (greedy)", after["solved"], 0.2)
