"""SDPO's equations (reference_guides/sdpo.md), each computed independently and compared with
TRL's code on ragged, padded inputs where a wrong formula gives another number: the teacher
prompt, the masking and averaging of the loss, the detached teacher and the EMA update, against
one tiny SDPOTrainer built once for the module (`teacher_model_kind="ema"`, the default). The
divergences of `trl.experimental.sdpo.loss_utils` (a copy of SDFT's) are checked on both
packages in tests/test_self_distillation_losses.py.
"""

import types

import datasets
import pytest
import torch
from transformers import AutoTokenizer, TrainerControl, TrainerState
from trl.experimental.sdpo import SDPOConfig, SDPOTrainer
from trl.experimental.sdpo.loss_utils import compute_sampled_token_self_distillation_loss
from trl.experimental.sdpo.teacher_sync import SyncTeacherModelCallback

pytestmark = pytest.mark.math

# --- The trainer: teacher prompt, masking, averaging, detached teacher, EMA ---------------------

G = 4  # completions per prompt in the module's trainer


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    prompts = datasets.load_dataset(
        "json", data_files=str(tiny.data / "conversational_prompt_only" / "train.jsonl")
    )["train"].select(range(8))
    args = SDPOConfig(
        output_dir=str(tmp_path_factory.mktemp("sdpo-math")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        per_device_train_batch_size=2 * G,
        num_generations=G,
        max_completion_length=6,
        report_to="none",
    )
    return SDPOTrainer(
        model=str(tiny.policy),
        reward_funcs=lambda completions, **kw: [0.0] * len(completions),
        args=args,
        train_dataset=prompts,
        processing_class=AutoTokenizer.from_pretrained(tiny.policy, padding_side="left"),
    )


def test_teacher_prompt_holds_the_first_successful_sibling(trainer):
    tok = trainer.processing_class
    trainer.model.train()
    completions = [f"{i} + {i} = {2 * i}" for i in range(2 * G)]
    ids = [tok(c, add_special_tokens=False)["input_ids"] for c in completions]
    width = max(map(len, ids))  # ragged: right-padded like the rollouts
    completion_ids = torch.tensor([x + [tok.pad_token_id] * (width - len(x)) for x in ids])
    completion_mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in ids])
    prompts = [[{"role": "user", "content": f"Q{g}?"}] for g in range(2) for _ in range(G)]
    # Group 0: rollouts 1 and 3 succeed. Group 1: only rollout 6 succeeds.
    rewards = torch.tensor([0.0, 1.0, 0.5, 1.0, 0.0, 0.0, 1.0, 0.0])
    out = trainer.teacher_context_builder.build(
        {"completion_ids": completion_ids, "completion_mask": completion_mask}, prompts, rewards
    )
    # Rollout 1's first other success is 3; 3's is 1; 6 has no other success in its group.
    demo = {0: 1, 1: 3, 2: 1, 3: 1, 4: 6, 5: 6, 7: 6}
    assert out["self_distillation_mask"].tolist() == [1, 1, 1, 1, 1, 1, 0, 1]
    args = trainer.args
    for i in range(2 * G):
        text = tok.decode(out["teacher_input_ids"][i][out["teacher_attention_mask"][i].bool()])
        if i in demo:
            solution = args.solution_template.format(
                successful_previous_attempt=completions[demo[i]]
            )
            user = args.reprompt_template.format(
                prompt=prompts[i][0]["content"], solution=solution, feedback=""
            )
        else:  # no teacher prompt: the original one
            user = prompts[i][0]["content"]
        rendered = tok.apply_chat_template(
            [{"role": "user", "content": user}], add_generation_prompt=True, tokenize=False
        )
        assert text == rendered + completions[i]
    # The completion is appended unchanged after the left-padded teacher prompt (same width).
    assert torch.equal(out["teacher_input_ids"][:, -width:], completion_ids)
    assert torch.equal(out["teacher_attention_mask"][:, -width:], completion_mask)
    metrics = trainer.teacher_context_builder.last_metrics
    assert metrics["self_distillation/success_group_fraction"] == 1.0
    assert metrics["self_distillation/reprompt_sample_fraction"] == 7 / 8


def batch_for_loss(trainer):
    """A ragged batch of 3 completions; the second has no teacher prompt (mask 0)."""
    g = torch.Generator().manual_seed(5)
    prompt_ids = torch.randint(3, 50, (3, 4), generator=g)
    prompt_mask = torch.tensor([[0, 1, 1, 1], [1, 1, 1, 1], [0, 0, 1, 1]])
    completion_ids = torch.randint(3, 50, (3, 5), generator=g)
    completion_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 0]])
    teacher_ids = torch.cat([torch.randint(3, 50, (3, 7), generator=g), completion_ids], 1)
    teacher_mask = torch.cat([torch.tensor([[0, 0, 1, 1, 1, 1, 1]] * 3), completion_mask], 1)
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "teacher_input_ids": teacher_ids,
        "teacher_attention_mask": teacher_mask,
        "self_distillation_mask": torch.tensor([1.0, 0.0, 1.0]),
    }


def test_loss_averages_each_sequence_then_the_batch(trainer):
    inputs = batch_for_loss(trainer)
    trainer.model.train()
    trainer._metrics["train"].clear()
    logits = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, inputs)
    # The teacher is detached: no graph, whatever the teacher model is.
    assert logits.student_logits.requires_grad and not logits.teacher_logits.requires_grad
    loss = trainer._compute_self_distillation_loss(trainer.model, inputs, logits)
    per_token = compute_sampled_token_self_distillation_loss(
        logits.student_logits,
        logits.teacher_logits,
        inputs["completion_ids"],
        distillation_alpha=1.0,
    )
    mask = inputs["completion_mask"] * inputs["self_distillation_mask"][:, None]
    # Sequence means over its own tokens, then a mean over all 3 sequences (the masked-out one
    # counts as 0 in the denominator of 3).
    expected = ((per_token * mask).sum(1) / mask.sum(1).clamp(min=1)).sum() / 3
    torch.testing.assert_close(loss, expected)
    # The logged metric is a token mean instead: another number on ragged lengths.
    logged = trainer._metrics["train"]["self_distillation/distillation_loss"][-1]
    token_mean = ((per_token * mask).sum() / mask.sum()).item()
    assert logged == pytest.approx(token_mean, rel=1e-5)
    assert abs(token_mean - expected.item()) > 1e-3
    # No old log-probs (one step per generation): no importance ratio, even with is_clip 2.0.
    assert "old_per_token_logps" not in inputs and trainer.args.distillation_is_clip == 2.0


def test_student_and_teacher_logits_are_aligned_to_the_completion(trainer):
    inputs = batch_for_loss(trainer)
    logits = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, inputs)
    # Position t scores completion token t: the logits of the step before it, / temperature.
    with torch.no_grad():
        full = trainer.model(
            input_ids=torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1),
            attention_mask=torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1),
        ).logits
    expected = full[:, 3:-1] / trainer.args.temperature
    torch.testing.assert_close(logits.student_logits.detach(), expected, rtol=1e-4, atol=1e-5)


def test_ema_teacher_follows_the_student_every_sync_step():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().clone() for p in teacher.parameters()]
    callback = SyncTeacherModelCallback(teacher_model=teacher)
    args = types.SimpleNamespace(teacher_sync_steps=2, teacher_update_rate=0.05)
    state = TrainerState()
    state.global_step = 3  # not a multiple of 2: no update
    callback.on_step_end(args, state, TrainerControl(), model=student)
    assert all(torch.equal(a, b) for a, b in zip(before, teacher.parameters(), strict=True))
    state.global_step = 4
    callback.on_step_end(args, state, TrainerControl(), model=student)
    for old, new, s in zip(before, teacher.parameters(), student.parameters(), strict=True):
        torch.testing.assert_close(new.detach(), 0.95 * old + 0.05 * s.detach())


def test_ema_teacher_starts_as_a_separate_frozen_copy(trainer):
    assert trainer.teacher_model is not trainer.model
    assert not any(p.requires_grad for p in trainer.teacher_model.parameters())
    student = dict(trainer.model.named_parameters())
    # Loaded again from model_name_or_path: equal to the student before any step.
    assert all(torch.equal(p, student[n]) for n, p in trainer.teacher_model.named_parameters())
