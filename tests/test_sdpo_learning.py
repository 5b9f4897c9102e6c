"""SDPO pulls the policy towards its own re-prompted predictions: on held-out rollouts, the
reverse KL from the student (original prompt) to the EMA teacher (prompt + a successful
sibling's answer) falls.

The tiny random policy never succeeds (no teacher prompt, loss 0), so SDPO starts from the shared
SFT warm start (tests/support/warm_start.py: ~40% of problems solved greedily). Settings: the
trainer's defaults (sampled-token reverse KL, EMA teacher at rate 0.05, success threshold 1.0)
with the script's `arithmetic_reward`; 4 prompts x 8 completions per step, at most 10 completion
tokens, lr 5e-4 constant, 30 steps.

What is measured: one fixed batch of 16 held-out prompts x 8 completions, sampled from the warm
start with a fixed seed before training, with the teacher prompts the trainer builds for it
(~60% of the completions have one). On its masked completion tokens, the mean full-vocabulary
KL(student || teacher), before (teacher = student weights: the gap comes from the context alone)
and after training (the trainer's EMA teacher then).

Measured on the 2-core machine (loaded by other jobs; seed offsets 0, 1, 2, i.e. warm start and
SDPO seeds 42-44; the default CPU setting; then the same under benchmarks/cross_cpu.py): the KL
fell by 2.054, 1.677 and 2.013 nats (mean 1.915, sd 0.207); under the five CPU settings of
benchmarks/cross_cpu.py at offset 0: 2.054 / 2.054 / 1.682 / 1.682 / 1.820. Prototype runs from the
lab's SFT policy instead (seeds 42-44) fell by 1.50, 1.24, 1.18 nats from 4.67. Threshold 1.0: 4.4
sd below the mean of the test's runs and below all six runs. Tried and rejected: lr 1e-4 for 20
steps moved the KL by less than 0.01 (seed 42); lr 1e-3 for 20 steps fell by 3.6 / 1.6 / 1.4 nats,
too spread, as the reward collapses in some seeds and steps without a success teach nothing.
Wall time on the 2-core machine (load ~4): the SDPO part ~10-15 s (30 steps 7-11 s, the held-out
batch and two KL measurements ~1 s), after the shared SFT warm start.
What it does not show: a higher reward. On this toy task the 31k-parameter model cannot read a
worked answer in its context (the teacher is no better than the student; its KL to the student is
~4.7 nats at the start), so distilling it lowered the sampled solve rate in our prototype
(0.14 -> 0.06 on held-out prompts after 40 steps at 1e-4). The method needs a model that
can use the hint.
"""

import datasets
import pytest
import torch
from support.warm_start import arithmetic_reward, sft_warm_policy  # noqa: F401
from transformers import AutoTokenizer
from trl.experimental.sdpo import SDPOConfig, SDPOTrainer
from trl.experimental.sdpo.loss_utils import compute_full_logit_self_distillation_loss

STEPS = 30
THRESHOLD = 1.0  # nats; see the module docstring
HELD_OUT_PROMPTS, SAMPLES = 16, 8


def student_teacher_kl(trainer, batch) -> float:
    """Mean KL(student || teacher) over the completion tokens that have a teacher prompt."""
    with torch.no_grad():
        logits = trainer._compute_teacher_student_logits(
            trainer.model, trainer.teacher_model, batch
        )
        per_token = compute_full_logit_self_distillation_loss(
            logits.student_logits, logits.teacher_logits, distillation_alpha=1.0
        )
    mask = logits.loss_mask
    return ((per_token * mask).sum() / mask.sum()).item()


@pytest.fixture(scope="module")
def sdpo_run(tiny, sft_warm_policy, tmp_path_factory, seed_offset):  # noqa: F811
    def load(split):
        path = tiny.data / "conversational_prompt_only" / f"{split}.jsonl"
        return datasets.load_dataset("json", data_files=str(path))["train"]

    args = SDPOConfig(
        output_dir=str(tmp_path_factory.mktemp("sdpo-learning")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        learning_rate=5e-4,
        lr_scheduler_type="constant",
        per_device_train_batch_size=32,
        num_generations=8,
        max_completion_length=10,  # "3 + 4 = 7<|im_end|>" fits
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=42 + seed_offset,
    )
    trainer = SDPOTrainer(
        model=str(sft_warm_policy),
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=load("train"),
        processing_class=AutoTokenizer.from_pretrained(sft_warm_policy, padding_side="left"),
    )
    rows = [row for row in load("test").select(range(HELD_OUT_PROMPTS)) for _ in range(SAMPLES)]
    trainer.model.eval()
    with torch.random.fork_rng():  # the trainer's random stream stays put
        torch.manual_seed(7)
        batch = trainer._prepare_training_batch(rows)  # rollouts, rewards, teacher prompts
    before = student_teacher_kl(trainer, batch)
    trainer.model.train()
    trainer.train()
    after = student_teacher_kl(trainer, batch)
    return trainer, batch, before, after


@pytest.mark.learning
def test_sdpo_held_out_batch_has_teacher_prompts(sdpo_run):
    trainer, batch, before, _ = sdpo_run
    share = batch["self_distillation_mask"].mean().item()
    assert 0.2 < share < 0.95  # the warm start solves some held-out prompts, not all
    assert before > 1.0  # the hint in the context alone moves the predictions a lot
    assert trainer.state.global_step == STEPS


@pytest.mark.learning
def test_sdpo_student_moves_towards_its_reprompted_teacher(sdpo_run, measured):
    _, _, before, after = sdpo_run
    measured.at_least("held-out KL(student || teacher) fall, nats", before - after, THRESHOLD)
