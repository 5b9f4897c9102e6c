"""SDFT moves the student towards its own demonstration-conditioned predictions, on prompts it
never trained on.

One SDFTTrainer run from the random tiny policy on the toy prompts, the teacher being the same
starting weights shown "Example response: 3 + 4 = 7" after the question (the tiny recipe's
settings: frozen "base" teacher, generalised JSD alpha 0.5 on the student's top-100 tokens, one
answer per prompt, batch 16, constant lr 1e-3), 40 steps, evaluated on the 64 held-out prompts
before and after. The method's own metric is that divergence on the student's fresh samples
(`eval_sdft/distillation_loss`, a mean over answer tokens).

What a random model can show: it barely reads its context, so its demonstration-conditioned
teacher differs from it by about 1.6e-4 nats per token and carries no knowledge of the sums;
the test shows the mechanism (the gap to the teacher closes on held-out prompts, the teacher
does not move), not that the task is learnt. A 2-layer model that copies answers out of its
context would first need an SFT warm start: 400 steps of SFT on prompt + demonstration -> answer
left greedy accuracy with the demonstration at 1.6% (measured), too far for a CPU test.
Measured on the 2-core CI machine (load ~4), seeds 42 / 43 / 44 (data order and sampling):
held-out divergence 1.62e-4 -> 1.28e-4 / 1.35e-4 / 1.27e-4 (ratio 0.79 / 0.82 / 0.78;
threshold 0.9). At lr 1e-2 it grows instead (1.6e-4 -> 3.4e-4 .. 5.5e-4): steps too large.
"""

import datasets
import pytest
import torch
from transformers import AutoTokenizer
from trl.experimental.sdft import SDFTConfig, SDFTTrainer

METRIC = "eval_sdft/distillation_loss"


@pytest.fixture(scope="module")
def sdft_run(tiny, tmp_path_factory, seed_offset):
    data = datasets.load_dataset(
        "json",
        data_files={
            split: str(tiny.data / "privileged_context" / f"{split}.jsonl")
            for split in ("train", "test")
        },
    )
    args = SDFTConfig(
        output_dir=str(tmp_path_factory.mktemp("sdft-learning")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=16,
        per_device_eval_batch_size=64,
        num_generations=1,
        max_completion_length=16,
        max_steps=40,
        logging_steps=40,
        save_strategy="no",
        disable_tqdm=True,
        seed=42 + seed_offset,
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy, padding_side="left")
    trainer = SDFTTrainer(
        model=str(tiny.policy),
        args=args,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        processing_class=tokenizer,
    )
    teacher_before = {n: p.detach().clone() for n, p in trainer.teacher_model.named_parameters()}
    student_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.evaluate()  # the metrics are in the log, not in evaluate()'s return value
    before = trainer.state.log_history[-1]
    trainer.train()
    trainer.evaluate()
    after = trainer.state.log_history[-1]
    return before, after, trainer, teacher_before, student_before


@pytest.mark.learning
def test_sdft_closes_the_gap_to_its_demonstration_conditioned_self(sdft_run, measured):
    before, after, *_ = sdft_run
    # The same starting model for every seed: only the sampled answers differ.
    assert 1e-4 < before[METRIC] < 3e-4
    measured.at_most("held-out divergence ratio", after[METRIC] / before[METRIC], 0.9)


@pytest.mark.learning
def test_sdft_trains_the_student_and_leaves_the_base_teacher(sdft_run):
    _, _, trainer, teacher_before, student_before = sdft_run
    for name, p in trainer.teacher_model.named_parameters():
        assert torch.equal(p, teacher_before[name]), name
    moved = [not torch.equal(p, student_before[n]) for n, p in trainer.model.named_parameters()]
    assert all(moved)
