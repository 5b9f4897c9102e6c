"""What the ORPO and CPO learning tests share: both add an NLL term to a preference loss and log
the same reward metrics, so one run and two of the checks serve both.

The run: the method's trainer from the random tiny policy on the toy preference pairs (150 steps,
batch 16, constant lr 1e-3, seed 0), evaluated on the 64 held-out pairs before and after. The
method passes its own loss settings.
"""

import datasets
from transformers import AutoTokenizer

STEPS = 150


def before_and_after(
    tiny, output_dir, seed, config_class, trainer_class, data="preference", **loss_args
) -> tuple:
    """Train once on the fixture's `data` (pairs; TPO: triples); return the eval metrics before
    and after."""
    files = {split: str(tiny.data / data / f"{split}.jsonl") for split in ("train", "test")}
    pairs = datasets.load_dataset("json", data_files=files)
    args = config_class(
        output_dir=str(output_dir),
        **loss_args,
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
        seed=seed,
    )
    trainer = trainer_class(
        model=str(tiny.policy),
        args=args,
        train_dataset=pairs["train"],
        eval_dataset=pairs["test"],
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )
    before = trainer.evaluate()
    trainer.train()
    return before, trainer.evaluate()


def raises_heldout_reward_accuracy(before, after, measured):
    start, end = before["eval_rewards/accuracies"], after["eval_rewards/accuracies"]
    assert start < 0.5  # the initial model is the same for every seed
    measured.at_least("held-out reward accuracy", end, 0.5)
    measured.at_least("held-out reward accuracy gain", end - start, 0.06)


def nll_term_teaches_the_task(before, after, measured):
    assert before["eval_nll_loss"] > 5.0  # a random model over a 384-token vocabulary
    measured.at_most("held-out NLL", after["eval_nll_loss"], 2.5)
