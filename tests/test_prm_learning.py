"""PRM from the random token classifier learns the step labels' prior and a little more: its
held-out log-loss falls below the best any constant predictor can reach, and its accuracy does
not collapse below the majority share. It does not beat the majority share: for that the PRM must
start from a model that can solve the problems (below).

Baselines, on the fixture's test split (512 rows, 877 steps): 539 steps are correct, so a model
that always answers "correct" has accuracy 0.615, and the best constant probability has log-loss
$H = 0.6666$ nats, the entropy of the label share.

What we measured (batch 32, constant lr, held-out numbers):
- from the random 32-wide classifier, on 256 training rows (the fixture's size before it grew),
  300-400 steps at lr 3e-4 or 1e-3: accuracy 0.55-0.64 and loss 0.657-0.78 on the old 110-step
  split, no better than the prior; from the SFT policy (chat-formatted, so the PRM's plain text is
  new to it), the same; on 4096 rows, 400 steps: loss below $H$, accuracy the majority share;
  wider (64, 128) or longer (2000 steps at lr 3e-3) from random: the same.
- from a model that first learned to solve the steps (SFT with the loss on the completion alone,
  on right two-step solutions: the lab's `sft_stepwise`), on the fixture's 4096 rows, 1200 steps
  at lr 1e-3: accuracy 0.701, 0.688, 0.662 at seeds 0-2, loss 0.535, 0.505, 0.557 on one host,
  0.672, 0.658, 0.681 and 0.568, 0.600, 0.564 on another (the lab's results.json holds the later
  run): beyond the majority class. That costs 45-92 s for the warm start and 30-60 s per run (the
  two hosts), too much for this suite: the lab runs it, and
  tests/test_lab.py::test_committed_runs_end_in_their_healthy_band checks the committed runs.

This test's thresholds, measured with benchmarks/cross_cpu.py on an AMD EPYC (its five CPU
settings agree at seed offset 0; offsets 1 and 2 on one setting): held-out loss 0.0180, 0.0257,
0.0230 below $H$ (threshold 0.005, 4 sd below the mean); accuracy 0.630, 0.634, 0.629, within
about one standard error (0.016 on 877 steps) of the majority share (threshold 0.04 below it);
the fresh head's loss 0.016 above $H$.
"""

import json
import math

import datasets
import pytest
from transformers import AutoModelForTokenClassification, AutoTokenizer

from annotated_trl.lab.experiments import PRM_CONSTANT_LOSS, PRM_MAJORITY_SHARE
from annotated_trl.trainers.prm import PRMConfig, PRMTrainer

STEPS = 400


def label_share(path) -> float:
    lines = path.read_text().splitlines()
    labels = [label for line in lines for label in json.loads(line)["labels"]]
    return sum(labels) / len(labels)


@pytest.fixture(scope="module")
def run(tiny, tmp_path_factory, seed_offset):
    data = tiny.data / "stepwise_supervision"
    args = PRMConfig(
        output_dir=str(tmp_path_factory.mktemp("prm-learning")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        max_steps=STEPS,
        max_length=64,
        logging_steps=100,
        save_strategy="no",
        report_to="none",
        seed=42 + seed_offset,
        disable_tqdm=True,
    )
    splits = {split: str(data / f"{split}.jsonl") for split in ("train", "test")}
    dataset = datasets.load_dataset("json", data_files=splits)
    trainer = PRMTrainer(
        model=AutoModelForTokenClassification.from_pretrained(tiny.token_classifier),
        args=args,
        train_dataset=dataset["train"],
        eval_dataset=dataset["test"],
        processing_class=AutoTokenizer.from_pretrained(tiny.token_classifier),
    )
    before = trainer.evaluate()
    trainer.train()
    return before, trainer.evaluate()


@pytest.mark.learning
def test_prm_held_out_loss_beats_the_label_prior(tiny, run, measured):
    share = label_share(tiny.data / "stepwise_supervision" / "test.jsonl")
    assert share == pytest.approx(539 / 877)
    prior_entropy = -(share * math.log(share) + (1 - share) * math.log(1 - share))
    # The lab's PRM bands are these baselines.
    assert (round(share, 3), round(prior_entropy, 4)) == (PRM_MAJORITY_SHARE, PRM_CONSTANT_LOSS)
    before, after = run
    measured.at_least("fresh head's loss above the prior's", before["eval_loss"] - prior_entropy, 0)
    measured.at_least("held-out loss below the prior's", prior_entropy - after["eval_loss"], 0.005)
    # Accuracy stays at the majority share: no collapse below it.
    measured.at_least(
        "held-out accuracy minus majority share", after["eval_accuracy"] - share, -0.04
    )
