"""ORPO learns the toy task's preferences: on held-out pairs, the chosen (right) answer gains on
the rejected (wrong) one, while the NLL term teaches the task itself.

One ORPOTrainer run from the random tiny policy (150 steps, batch 16, lr 1e-3, beta 0.1,
seed 0), evaluated on the 64 held-out pairs before and after. Measured on the shared 2-core
machine (seeds 0 and 1 shuffle the data differently; the initial model is the same):
rewards/accuracies 0.406 -> 0.656 / 0.609, rewards/margins -0.0007 -> 0.0020 / 0.0021,
log_odds_chosen -0.0069 -> 0.0258 / 0.0269, nll_loss 5.98 -> 1.45 / 1.46.
The asserted thresholds leave room for thread-count noise.
"""

import datasets
import pytest
from transformers import AutoTokenizer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

STEPS = 150


@pytest.fixture(scope="module")
def before_and_after(tiny, tmp_path_factory):
    files = {split: str(tiny.data / "preference" / f"{split}.jsonl") for split in ("train", "test")}
    pairs = datasets.load_dataset("json", data_files=files)
    args = ORPOConfig(
        output_dir=str(tmp_path_factory.mktemp("orpo-learning")),
        beta=0.1,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
        remove_unused_columns=False,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        max_steps=STEPS,
        max_length=64,
        logging_steps=50,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    trainer = ORPOTrainer(
        model=str(tiny.policy),
        args=args,
        train_dataset=pairs["train"],
        eval_dataset=pairs["test"],
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )
    before = trainer.evaluate()
    trainer.train()
    return before, trainer.evaluate()


@pytest.mark.learning
def test_orpo_raises_heldout_reward_accuracy(before_and_after):
    before, after = before_and_after
    assert before["eval_rewards/accuracies"] < 0.5
    assert after["eval_rewards/accuracies"] >= 0.55
    assert after["eval_rewards/accuracies"] >= before["eval_rewards/accuracies"] + 0.1


@pytest.mark.learning
def test_orpo_raises_heldout_margin_and_log_odds(before_and_after):
    before, after = before_and_after
    assert before["eval_rewards/margins"] < 0.0005
    assert after["eval_rewards/margins"] > 0.001
    assert before["eval_log_odds_chosen"] < 0.0
    assert after["eval_log_odds_chosen"] > 0.01
    # log sigma(log OR) starts at -ln 2 and rises with the log odds ratio.
    assert after["eval_log_odds_ratio"] > before["eval_log_odds_ratio"]


@pytest.mark.learning
def test_orpo_nll_term_teaches_the_task(before_and_after):
    before, after = before_and_after
    assert before["eval_nll_loss"] > 5.0  # a random model over a 384-token vocabulary
    assert after["eval_nll_loss"] < 2.5
