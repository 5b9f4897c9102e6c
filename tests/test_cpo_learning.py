"""CPO learns the toy task's preferences: on held-out pairs, the chosen (right) answer gains on
the rejected (wrong) one, while the NLL term (cpo_alpha 1) teaches the task itself.

One CPOTrainer run with the default loss (sigmoid, beta 0.1, cpo_alpha 1.0) from the random
tiny policy (150 steps, batch 16, lr 1e-3, seed 0), evaluated on the 64 held-out pairs before
and after. Measured on the shared 2-core machine: rewards/accuracies 0.4375 -> 0.625,
rewards/margins 0.0027 -> 0.0228, nll_loss 5.96 -> 1.45. (SimPO, beta 2.0 and cpo_alpha 0,
same settings: accuracies 0.406 -> 0.719, margins -0.014 -> 0.396; not run here, to keep the
CPU budget.)
The asserted thresholds leave room for thread-count noise.
"""

import datasets
import pytest
from transformers import AutoTokenizer
from trl.experimental.cpo import CPOConfig, CPOTrainer

STEPS = 150


@pytest.fixture(scope="module")
def before_and_after(tiny, tmp_path_factory):
    files = {split: str(tiny.data / "preference" / f"{split}.jsonl") for split in ("train", "test")}
    pairs = datasets.load_dataset("json", data_files=files)
    args = CPOConfig(
        output_dir=str(tmp_path_factory.mktemp("cpo-learning")),
        loss_type="sigmoid",
        beta=0.1,
        cpo_alpha=1.0,
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
    trainer = CPOTrainer(
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
def test_cpo_raises_heldout_reward_accuracy(before_and_after):
    before, after = before_and_after
    assert before["eval_rewards/accuracies"] < 0.5
    assert after["eval_rewards/accuracies"] >= 0.55
    assert after["eval_rewards/accuracies"] >= before["eval_rewards/accuracies"] + 0.1


@pytest.mark.learning
def test_cpo_raises_heldout_margin(before_and_after):
    before, after = before_and_after
    assert before["eval_rewards/margins"] < 0.005
    assert after["eval_rewards/margins"] > 0.01
    assert after["eval_rewards/margins"] > before["eval_rewards/margins"] + 0.01


@pytest.mark.learning
def test_cpo_nll_term_teaches_the_task(before_and_after):
    before, after = before_and_after
    assert before["eval_nll_loss"] > 5.0  # a random model over a 384-token vocabulary
    assert after["eval_nll_loss"] < 2.5
