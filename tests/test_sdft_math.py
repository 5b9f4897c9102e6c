"""The equations of reference_guides/sdft.md, computed independently and compared with TRL.

`SDFTTrainer` (TRL 1.16.0, trl.experimental.sdft): the teacher's input (its prompt with the
demonstration, then the student's own completion tokens), the per-row mean over answer tokens
(with `num_loss_tokens_to_skip`), where gradient flows (student only), and the EMA teacher's
update. Inputs are ragged (rows of different prompt and completion lengths, padded) so that a
formula that mixes rows or counts padding fails. One real trainer on the tiny fixture, built
once for the module. The divergences of `loss_utils.py` and the importance-sampling clip, which
SDPO shares, are checked on both packages in tests/test_self_distillation_losses.py.
"""

import copy

import pytest
import torch
from datasets import Dataset
from transformers import AutoTokenizer
from trl.experimental.sdft import SDFTConfig, SDFTTrainer
from trl.experimental.sdft.sdft_trainer import DistillationLogits
from trl.experimental.sdft.teacher_sync import SyncTeacherModelCallback

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
B, T, V = 3, 6, 23


def kl(p, q):
    """KL(p || q) over the last axis, from probabilities."""
    return (p * (p.log() - q.log())).sum(-1)


def jsd(p_s, p_t, alpha):
    """Our generalised JSD: alpha 0 forward KL(T || S), 1 reverse KL(S || T), else both to the
    mixture m = alpha p_T + (1 - alpha) p_S."""
    if alpha == 0:
        return kl(p_t, p_s)
    if alpha == 1:
        return kl(p_s, p_t)
    m = alpha * p_t + (1 - alpha) * p_s
    return alpha * kl(p_t, m) + (1 - alpha) * kl(p_s, m)


# --- one real trainer ---------------------------------------------------------------------


ROWS = {
    "prompt": ["What is 2 + 3?", "What is 7 * 8?", "What is 1 - 9?"],
    "privileged_context": ["Example response: 2 + 3 = 5", "Ex: 56", "Example response: 1 - 9 = -8"],
}


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    args = SDFTConfig(
        output_dir=str(tmp_path_factory.mktemp("sdft-math")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=3,
        num_generations=1,
        max_completion_length=6,
        num_loss_tokens_to_skip=1,
        distillation_topk=None,
        distillation_mode="full_logits",
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy, padding_side="left")
    return SDFTTrainer(
        model=str(tiny.policy),
        args=args,
        train_dataset=Dataset.from_dict(ROWS),
        processing_class=tokenizer,
    )


def ragged_batch(trainer):
    """Student prompts as the trainer tokenizes them, and completions of 2, 6 and 4 tokens,
    right-padded: ragged in both parts."""
    tok = trainer.processing_class
    g = torch.Generator().manual_seed(11)
    lengths = [2, 6, 4]
    completions = [torch.randint(3, len(tok), (n,), generator=g) for n in lengths]
    completion_ids = torch.full((B, max(lengths)), tok.pad_token_id)
    completion_mask = torch.zeros(B, max(lengths), dtype=torch.long)
    for i, c in enumerate(completions):
        completion_ids[i, : len(c)] = c
        completion_mask[i, : len(c)] = 1
    prompts = trainer._tokenize_prompts(ROWS["prompt"])
    width = max(map(len, prompts))
    prompt_ids = torch.full((B, width), tok.pad_token_id)
    prompt_mask = torch.zeros(B, width, dtype=torch.long)
    for i, p in enumerate(prompts):
        prompt_ids[i, width - len(p) :] = torch.tensor(p)
        prompt_mask[i, width - len(p) :] = 1
    batch = {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }
    batch.update(
        trainer.teacher_context_builder.build(
            ROWS["prompt"], ROWS["privileged_context"], completion_ids, completion_mask
        )
    )
    return batch, prompts, completions


def test_teacher_sees_prompt_then_context_then_the_students_tokens(trainer, tiny):
    """The teacher's row = its prompt (the student's prompt, a blank line, the demonstration;
    plain prompts are tokenized as they are, no chat template), left-padded, then exactly the
    student's completion columns."""
    batch, _, completions = ragged_batch(trainer)
    tok = trainer.processing_class
    for i in range(B):
        text = f"{ROWS['prompt'][i]}\n\n{ROWS['privileged_context'][i]}"
        want_prompt = tok(text)["input_ids"]
        row = batch["teacher_input_ids"][i][batch["teacher_attention_mask"][i].bool()].tolist()
        assert row == want_prompt + completions[i].tolist()
    width = batch["completion_ids"].shape[1]
    assert torch.equal(batch["teacher_input_ids"][:, -width:], batch["completion_ids"])
    # The student never sees the demonstration.
    student = tok.decode(batch["prompt_ids"][2][batch["prompt_mask"][2].bool()])
    assert "-8" not in student and "-8" in tok.decode(batch["teacher_input_ids"][2])


def test_conversational_prompt_keeps_system_turns_and_rewrites_the_last_user_turn(trainer):
    prompt = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    teacher = trainer.teacher_context_builder._compose_teacher_prompt(prompt, "Ex: 5")
    assert teacher == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2 + 3?\n\nEx: 5"},
    ]
    messages = [{"role": "assistant", "content": "2 + 3"}, {"role": "user", "content": "= 5"}]
    assert trainer.teacher_context_builder._stringify_privileged_context(messages) == "2 + 3\n= 5"


def test_logits_align_with_each_models_own_unpadded_forward(trainer):
    """Position j of the returned logits predicts completion token j, for the student after its
    prompt and for the teacher after its longer prompt, whatever the padding; only the student's
    side carries gradient."""
    batch, prompts, completions = ragged_batch(trainer)
    trainer.model.train()
    out = trainer._compute_teacher_student_logits(trainer.model, trainer.teacher_model, batch)
    assert out.student_logits.requires_grad and not out.teacher_logits.requires_grad
    tok = trainer.processing_class
    with torch.no_grad():
        for i, c in enumerate(completions):
            n = len(c)
            student_ids = torch.tensor([prompts[i] + c.tolist()])
            want = trainer.model(student_ids).logits[0, len(prompts[i]) - 1 : -1]
            torch.testing.assert_close(out.student_logits[i, :n], want, atol=1e-4, rtol=1e-4)
            teacher_row = batch["teacher_input_ids"][i][batch["teacher_attention_mask"][i].bool()]
            want = trainer.teacher_model(teacher_row[None]).logits[0, -n - 1 : -1]
            torch.testing.assert_close(out.teacher_logits[i, :n], want, atol=1e-4, rtol=1e-4)
    # num_loss_tokens_to_skip=1: the first answer token of every row is out of the loss.
    assert out.loss_mask[:, 0].sum() == 0
    assert torch.equal(out.loss_mask[:, 1:], batch["completion_mask"][:, 1:])
    assert tok.pad_token_id is not None


def test_loss_is_the_mean_over_rows_of_each_rows_token_mean(trainer):
    """loss = 1/B sum_i (sum_t m_it D_it / sum_t m_it); the logged metric weights every token
    alike instead: the two differ on ragged rows."""
    g = torch.Generator().manual_seed(12)
    s = torch.randn(B, T, V, generator=g).requires_grad_()
    t = torch.randn(B, T, V, generator=g)
    mask = torch.tensor([[0, 1, 1, 0, 0, 0], [0, 1, 1, 1, 1, 1], [0, 1, 0, 0, 0, 0]])
    ids = torch.zeros(B, T, dtype=torch.long)
    logits = DistillationLogits(ids, mask, student_logits=s, teacher_logits=t)
    trainer._metrics["train"].clear()
    loss = trainer._compute_self_distillation_loss(trainer.model, {}, logits)
    per_token = jsd(s.softmax(-1), t.softmax(-1), trainer.args.distillation_alpha)
    per_row = (per_token * mask).sum(-1) / mask.sum(-1)
    torch.testing.assert_close(loss, per_row.mean(), **TOL)
    token_mean = (per_token * mask).sum() / mask.sum()
    logged = trainer._metrics["train"]["sdft/distillation_loss"][-1]
    assert logged == pytest.approx(token_mean.item(), rel=1e-5)
    assert abs(token_mean.item() - per_row.mean().item()) > 1e-3  # the two really differ here
    # All-masked batch: zero, still attached to the student's graph.
    empty = DistillationLogits(ids, torch.zeros_like(mask), s, t)
    zero = trainer._compute_self_distillation_loss(trainer.model, {}, empty)
    assert zero.item() == 0.0 and zero.requires_grad


def test_frozen_teacher_is_a_separate_copy_of_the_starting_weights(trainer):
    """teacher_model_kind 'base' without LoRA: a second model loaded from the same checkpoint,
    with no parameter shared with the student and none trainable."""
    assert trainer.teacher_model is not trainer.model
    student = dict(trainer.model.named_parameters())
    for name, p in trainer.teacher_model.named_parameters():
        assert not p.requires_grad
        assert p.data_ptr() != student[name].data_ptr()


def test_ema_teacher_update(tiny):
    """SyncTeacherModelCallback: every `teacher_sync_steps` steps, teacher <- (1 - tau) teacher
    + tau student, tau = teacher_update_rate; no update between."""
    from transformers import AutoModelForCausalLM

    student = AutoModelForCausalLM.from_pretrained(tiny.policy)
    teacher = copy.deepcopy(student)
    with torch.no_grad():
        for p in student.parameters():
            p.add_(1.0)
    before = {n: p.detach().clone() for n, p in teacher.named_parameters()}
    callback = SyncTeacherModelCallback(teacher)
    args = type("Args", (), {"teacher_sync_steps": 2, "teacher_update_rate": 0.05})()
    state = type("State", (), {"global_step": 1})()
    callback.on_step_end(args, state, None, model=student)
    for n, p in teacher.named_parameters():
        assert torch.equal(p, before[n])  # step 1: not a sync step
    state.global_step = 2
    callback.on_step_end(args, state, None, model=student)
    for n, p in teacher.named_parameters():
        want = 0.95 * before[n] + 0.05 * dict(student.named_parameters())[n].detach()
        torch.testing.assert_close(p.detach(), want, **TOL)
