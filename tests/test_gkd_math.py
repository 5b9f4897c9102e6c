"""The equations of reference_guides/gkd.md, computed independently and compared with TRL.

`GKDTrainer.generalized_jsd_loss` (TRL 1.16.0) is checked on fixed student/teacher logits against
our own torch computation of the generalised Jensen–Shannon divergence of Agarwal et al. (2024,
Eq. 1), for several `beta` and temperatures, with positions masked by `labels == -100`. The two
ends are checked against the forward and reverse KL written out directly, and the interior
against the limits that make those ends the natural ones. One real `GKDTrainer` on the tiny
fixture checks what `compute_loss` feeds the function (the shift, the mask, the temperature).
"""

import json
import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.gkd import GKDConfig, GKDTrainer  # noqa: E402

pytestmark = pytest.mark.math

TOL = {"atol": 1e-6, "rtol": 1e-5}
gjsd = GKDTrainer.generalized_jsd_loss


# ---------------------------------------------------------------------------------------------
# Our reference: the divergences written out from their definitions
# ---------------------------------------------------------------------------------------------


def kl(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """KL(p || q) over the last axis, from probabilities."""
    return (p * (p.log() - q.log())).sum(-1)


def reference_per_token(student_logits, teacher_logits, beta, temperature=1.0):
    """Per-position divergence; beta 0 and 1 are TRL's plain forward and reverse KL."""
    p_s = (student_logits / temperature).softmax(-1)
    p_t = (teacher_logits / temperature).softmax(-1)
    if beta == 0:
        return kl(p_t, p_s)  # forward KL(teacher || student)
    if beta == 1:
        return kl(p_s, p_t)  # reverse KL(student || teacher)
    m = beta * p_t + (1 - beta) * p_s
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


def reference_loss(student_logits, teacher_logits, labels, beta, temperature=1.0):
    """Mean over the positions whose label is not -100."""
    per_token = reference_per_token(student_logits, teacher_logits, beta, temperature)
    mask = labels != -100
    return per_token[mask].sum() / mask.sum()


@pytest.fixture
def logits():
    """Fixed logits (B=3, T=6, V=11) and labels with padding and prompt positions masked."""
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(3, 6, 11, generator=generator) * 2
    teacher = torch.randn(3, 6, 11, generator=generator) * 2
    labels = torch.randint(0, 11, (3, 6), generator=generator)
    labels[0, :2] = -100  # a prompt
    labels[1, 4:] = -100  # padding
    labels[2, :1] = -100
    return student, teacher, labels


# ---------------------------------------------------------------------------------------------
# The loss function
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0], ids=lambda t: f"gkd-temp{t}")
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0], ids=lambda b: f"gkd-beta{b}")
def test_gkd_generalized_jsd_matches_reference(logits, beta, temperature):
    student, teacher, labels = logits
    loss = gjsd(student, teacher, labels=labels, beta=beta, temperature=temperature)
    expected = reference_loss(student, teacher, labels, beta, temperature)
    torch.testing.assert_close(loss, expected, **TOL)


def test_gkd_beta0_is_forward_kl_and_beta1_is_reverse_kl(logits):
    student, teacher, labels = logits
    mask = labels != -100
    p_s, p_t = student.softmax(-1), teacher.softmax(-1)
    forward = (p_t * (p_t.log() - p_s.log())).sum(-1)[mask].mean()  # KL(teacher || student)
    reverse = (p_s * (p_s.log() - p_t.log())).sum(-1)[mask].mean()  # KL(student || teacher)
    torch.testing.assert_close(gjsd(student, teacher, labels=labels, beta=0.0), forward, **TOL)
    torch.testing.assert_close(gjsd(student, teacher, labels=labels, beta=1.0), reverse, **TOL)
    assert abs(forward - reverse) > 1e-2  # the two ends really differ on these logits


@pytest.mark.parametrize("beta", [1e-3, 1e-4], ids=lambda b: f"gkd-small-beta{b}")
def test_gkd_interior_tends_to_forward_kl_near_beta0(logits, beta):
    """JSD(beta) / beta -> KL(teacher || student) as beta -> 0: the formula's own limit.

    The value itself tends to 0, so TRL's `beta == 0` branch is a jump to the limit of the
    *rescaled* divergence, not a continuous end point.
    """
    student, teacher, labels = logits
    forward = gjsd(student, teacher, labels=labels, beta=0.0)
    small = gjsd(student, teacher, labels=labels, beta=beta)
    assert small < 10 * beta * forward
    torch.testing.assert_close(small / beta, forward, atol=0, rtol=50 * beta)


@pytest.mark.parametrize("beta", [1 - 1e-3, 1 - 1e-4], ids=lambda b: f"gkd-large-beta{b}")
def test_gkd_interior_tends_to_reverse_kl_near_beta1(logits, beta):
    student, teacher, labels = logits
    reverse = gjsd(student, teacher, labels=labels, beta=1.0)
    near = gjsd(student, teacher, labels=labels, beta=beta)
    torch.testing.assert_close(near / (1 - beta), reverse, atol=0, rtol=50 * (1 - beta))


def test_gkd_beta_half_is_symmetric(logits):
    student, teacher, labels = logits
    one_way = gjsd(student, teacher, labels=labels, beta=0.5)
    other_way = gjsd(teacher, student, labels=labels, beta=0.5)
    torch.testing.assert_close(one_way, other_way, **TOL)
    # ... and bounded by ln 2, the Jensen–Shannon divergence's maximum.
    assert 0 < one_way < torch.log(torch.tensor(2.0))


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"gkd-mask-beta{b}")
def test_gkd_masked_positions_do_not_count(logits, beta):
    student, teacher, labels = logits
    loss = gjsd(student, teacher, labels=labels, beta=beta)
    scrambled = student.clone()
    scrambled[labels == -100] = torch.randn_like(scrambled[labels == -100]) * 10
    torch.testing.assert_close(gjsd(scrambled, teacher, labels=labels, beta=beta), loss, **TOL)
    # The mean is over unmasked *tokens* (13 here), not over sequences or all 18 positions.
    per_token = reference_per_token(student, teacher, beta)
    n_tokens = int((labels != -100).sum())
    assert n_tokens == 13
    torch.testing.assert_close(loss, per_token[labels != -100].sum() / n_tokens, **TOL)
    assert abs(loss - per_token.mean()) > 1e-4


def test_gkd_num_items_in_batch_divides_the_sum(logits):
    """Gradient accumulation: each micro-batch's sum over the window's token count."""
    student, teacher, labels = logits
    halves = [slice(0, 1), slice(1, 3)]
    n_total = (labels != -100).sum()
    summed = sum(
        gjsd(student[h], teacher[h], labels=labels[h], beta=0.5, num_items_in_batch=n_total)
        for h in halves
    )
    torch.testing.assert_close(summed, gjsd(student, teacher, labels=labels, beta=0.5), **TOL)


def test_gkd_gradient_of_forward_kl_is_student_minus_teacher(logits):
    """d KL(p_T || p_S) / d student logits = p_S - p_T at each counted position, / N tokens."""
    student, teacher, labels = logits
    student = student.clone().requires_grad_(True)
    loss = gjsd(student, teacher, labels=labels, beta=0.0)
    (grad,) = torch.autograd.grad(loss, student)
    mask = (labels != -100).unsqueeze(-1)
    expected = (student.softmax(-1) - teacher.softmax(-1)).detach() * mask / mask.sum()
    torch.testing.assert_close(grad, expected, **TOL)


# ---------------------------------------------------------------------------------------------
# The trainer: what compute_loss feeds the function
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gkd_trainer(tiny, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = tiny.data / "conversational_language_modeling" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:4]]
    args = GKDConfig(
        output_dir=str(tmp_path_factory.mktemp("gkd_math")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        max_length=64,
        per_device_train_batch_size=4,
        temperature=0.5,  # a sampling temperature far from 1, to see whether the loss uses it
        beta=0.3,
    )
    trainer = GKDTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        teacher_model=AutoModelForCausalLM.from_pretrained(tiny.teacher),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )
    return trainer


def test_gkd_compute_loss_shifts_masks_and_ignores_temperature(gkd_trainer):
    trainer = gkd_trainer
    batch = next(iter(trainer.get_train_dataloader()))
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, dict(batch))
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        student = trainer.model(**inputs).logits[:, :-1]
        teacher = trainer.teacher_model(**inputs).logits[:, :-1]
    labels = batch["labels"][:, 1:]  # logits at t predict the token at t + 1
    expected = reference_loss(student, teacher, labels, beta=0.3, temperature=1.0)
    torch.testing.assert_close(loss, expected, **TOL)
    # The configured temperature (0.5) shapes sampling only: with it the loss would differ.
    tempered = reference_loss(student, teacher, labels, beta=0.3, temperature=0.5)
    assert abs(tempered - loss) > 1e-3 * loss


def test_gkd_collator_labels_only_the_last_message(gkd_trainer):
    trainer = gkd_trainer
    batch = next(iter(trainer.get_train_dataloader()))
    tokenizer = trainer.processing_class
    for labels, ids in zip(batch["labels"], batch["input_ids"], strict=True):
        kept = labels[labels != -100]
        text = tokenizer.decode(kept)
        # The answer "a op b = c" and the end of the turn; never the user's question.
        assert " = " in text and "What is" not in text
        assert torch.equal(kept, ids[labels != -100])


def test_gkd_collator_labels_only_the_last_message_of_a_conversation(gkd_trainer):
    """Multi-turn rows: earlier assistant turns are context (in `input_ids` and `prompts`), never
    targets; only the final message is labelled."""
    trainer = gkd_trainer
    tokenizer = trainer.processing_class
    messages = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4"},
        {"role": "user", "content": "And 3 + 5?"},
        {"role": "assistant", "content": "3 + 5 = 8"},
    ]
    batch = trainer.data_collator([{"messages": messages}, {"messages": messages[:2]}])
    for row, final in ((0, "3 + 5 = 8"), (1, "2 + 2 = 4")):
        labels, ids = batch["labels"][row], batch["input_ids"][row]
        kept = tokenizer.decode(labels[labels != -100])
        assert final in kept
        assert torch.equal(labels[labels != -100], ids[labels != -100])
        assert "What is" not in kept and "And 3 + 5?" not in kept
    kept = tokenizer.decode(batch["labels"][0][batch["labels"][0] != -100])
    assert "2 + 2 = 4" not in kept  # the first answer is context only...
    context = tokenizer.decode(batch["input_ids"][0])
    assert "2 + 2 = 4" in context and "And 3 + 5?" in context  # ...but it is in the input
    prompt = tokenizer.decode(batch["prompts"][0][batch["prompt_attention_mask"][0] == 1])
    assert "2 + 2 = 4" in prompt and "3 + 5 = 8" not in prompt
