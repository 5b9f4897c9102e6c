"""The equations of reference_guides/distillation.md, computed independently and compared with TRL.

`DistillationTrainer` (TRL 1.16.0) never builds the full logits: `_chunked_divergence_loss`
takes both models' last hidden states and `lm_head` weights and projects them a vocabulary tile
at a time (`ChunkedDivergenceFunction`, with its own backward). We check its loss, gradient and
entropy against our own torch computation from full logits, for several `beta` and
temperatures, with a teacher wider than the student and masked positions, and with tiles small
enough that the online softmax really runs across tiles. One real trainer on the tiny fixture
checks how `compute_loss` aligns the completion tokens.
"""

import math
from types import SimpleNamespace

import pytest
import torch
import trl.kernels.chunked_divergence as chunked
from trl.experimental.gkd import GKDTrainer
from trl.trainer.distillation_trainer import _chunked_divergence_loss

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
B, K, H_S, H_T, V = 3, 5, 8, 12, 37  # the teacher is wider; only the vocabulary is shared


def kl(p, q):
    return (p * (p.log() - q.log())).sum(-1)


def reference(student_logits, teacher_logits, mask, beta, temperature=1.0):
    """Our generalised JSD, mean over masked-in tokens, and the student's entropy sum."""
    p_s = (student_logits / temperature).softmax(-1)
    p_t = (teacher_logits / temperature).softmax(-1)
    if beta == 0:
        per_token = kl(p_t, p_s)  # forward KL(teacher || student)
    elif beta == 1:
        per_token = kl(p_s, p_t)  # reverse KL(student || teacher)
    else:
        m = beta * p_t + (1 - beta) * p_s
        per_token = beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)
    keep = mask.bool()
    entropy = -(p_s * p_s.log()).sum(-1)
    return per_token[keep].sum() / keep.sum(), entropy[keep].sum()


def states_for_kernel():
    g = torch.Generator().manual_seed(0)
    h_s = torch.randn(B, K, H_S, generator=g)
    h_t = torch.randn(B, K, H_T, generator=g)
    w_s = torch.randn(V, H_S, generator=g) * 0.5
    w_t = torch.randn(V, H_T, generator=g) * 0.5
    mask = torch.ones(B, K, dtype=torch.long)
    mask[0, 3:] = 0  # right padding after an early EOS
    mask[2, 1:] = 0
    return h_s, h_t, w_s, w_t, mask


@pytest.fixture
def states():
    return states_for_kernel()


def library(states, beta, temperature=1.0, **kwargs):
    h_s, h_t, w_s, w_t, mask = states
    return _chunked_divergence_loss(
        h_s, h_t, w_s, w_t, mask, beta, temperature=temperature, **kwargs
    )


@pytest.mark.parametrize("temperature", [1.0, 0.7, 2.0], ids=lambda t: f"distillation-temp{t}")
@pytest.mark.parametrize("beta", [0.0, 0.25, 0.5, 1.0], ids=lambda b: f"distillation-beta{b}")
def test_distillation_chunked_loss_matches_reference(states, beta, temperature):
    h_s, h_t, w_s, w_t, mask = states
    loss, entropy_sum, n_valid = library(states, beta, temperature)
    expected, expected_entropy = reference(h_s @ w_s.T, h_t @ w_t.T, mask, beta, temperature)
    torch.testing.assert_close(loss, expected, **TOL)
    # The logged entropy is that of the *tempered* student distribution.
    torch.testing.assert_close(entropy_sum, expected_entropy, **TOL)
    assert n_valid == mask.sum() == 9


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"distillation-grad-beta{b}")
def test_distillation_chunked_gradient_matches_autograd(states, beta):
    """The kernel's hand-written backward equals autograd through our full-logits formula."""
    h_s, h_t, w_s, w_t, mask = states
    h_s1, w_s1 = h_s.clone().requires_grad_(True), w_s.clone().requires_grad_(True)
    loss, _, _ = _chunked_divergence_loss(h_s1, h_t, w_s1, w_t, mask, beta, temperature=1.3)
    grads = torch.autograd.grad(loss, (h_s1, w_s1))
    h_s2, w_s2 = h_s.clone().requires_grad_(True), w_s.clone().requires_grad_(True)
    expected, _ = reference(h_s2 @ w_s2.T, h_t @ w_t.T, mask, beta, 1.3)
    expected_grads = torch.autograd.grad(expected, (h_s2, w_s2))
    for got, want in zip(grads, expected_grads, strict=True):
        torch.testing.assert_close(got, want, **TOL)
    # No gradient may leak into masked positions.
    assert grads[0][~mask.bool()].abs().max() == 0


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0], ids=lambda b: f"distillation-tiles-beta{b}")
def test_distillation_vocabulary_tiles_do_not_change_the_result(states, beta, monkeypatch):
    """With 5-token vocabulary tiles (8 tiles for V=37) the online softmax runs across tiles."""
    whole = library(states, beta, 1.0)[0]
    monkeypatch.setattr(chunked, "VOCAB_CHUNK_SIZE", 5)
    monkeypatch.setattr(chunked, "TOKEN_CHUNK_SIZE", 4)
    tiled = library(states, beta, 1.0)[0]
    torch.testing.assert_close(tiled, whole, **TOL)


def test_distillation_ends_are_forward_and_reverse_kl(states):
    h_s, h_t, w_s, w_t, mask = states
    keep = mask.bool()
    p_s, p_t = (h_s @ w_s.T).softmax(-1), (h_t @ w_t.T).softmax(-1)
    forward = kl(p_t, p_s)[keep].mean()  # KL(teacher || student)
    reverse = kl(p_s, p_t)[keep].mean()  # KL(student || teacher)
    torch.testing.assert_close(library(states, 0.0)[0], forward, **TOL)
    torch.testing.assert_close(library(states, 1.0)[0], reverse, **TOL)
    assert abs(forward - reverse) > 1e-2


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0], ids=lambda b: f"distillation-vs-gkd-beta{b}")
def test_distillation_and_gkd_compute_the_same_divergence(states, beta):
    """Same `beta` convention in both trainers (only the defaults differ: 1.0 here, 0.5 in GKD)."""
    h_s, h_t, w_s, w_t, mask = states
    labels = torch.where(mask.bool(), 0, -100)
    gkd = GKDTrainer.generalized_jsd_loss(
        h_s @ w_s.T, h_t @ w_t.T, labels=labels, beta=beta, temperature=0.8
    )
    torch.testing.assert_close(library(states, beta, 0.8)[0], gkd, **TOL)


def test_distillation_defaults_differ_from_gkd(tiny):
    """Every row of the guide's table "Defaults, and how they differ from GKD"."""
    from transformers import AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer
    from trl.experimental.gkd import GKDConfig
    from trl.experimental.utils import DataCollatorForChatML

    distillation = DistillationConfig(output_dir="unused", use_cpu=True, bf16=False)
    gkd = GKDConfig(output_dir="unused", use_cpu=True, bf16=False)
    # beta, temperature (where it acts is checked by the GKD and Distillation loss tests)
    assert (distillation.beta, distillation.temperature) == (1.0, 1.0)
    assert (gkd.beta, gkd.temperature) == (0.5, 0.9)
    # on-policy fraction and teacher-generated data: GKD's knobs, absent from Distillation
    assert (gkd.lmbda, gkd.seq_kd) == (0.5, False)
    assert not hasattr(distillation, "lmbda") and not hasattr(distillation, "seq_kd")
    # learning rate
    assert (distillation.learning_rate, gkd.learning_rate) == (1e-6, 2e-5)
    # completion length: each has its own field, and not the other's
    assert (distillation.max_completion_length, gkd.max_new_tokens) == (512, 128)
    assert not hasattr(distillation, "max_new_tokens")
    assert not hasattr(gkd, "max_completion_length")
    # data: Distillation reads "prompt" (and images) only: a "completion" column is kept in the
    # dataset (remove_unused_columns=False) but is not among the columns the trainer uses.
    # GKD's collator reads "messages" (the last-message rule: tests/test_gkd_math.py).
    assert distillation.remove_unused_columns is False
    trainer = SimpleNamespace(_signature_columns=None)  # the method only sets this attribute
    DistillationTrainer._set_signature_columns_if_needed(trainer)
    assert trainer._signature_columns == ["prompt", "image", "images"]
    assert DataCollatorForChatML(AutoTokenizer.from_pretrained(tiny.policy)).messages_key == (
        "messages"
    )


# ---------------------------------------------------------------------------------------------
# The trainer: which positions compute_loss compares
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def distillation_trainer(tiny, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DistillationConfig, DistillationTrainer

    args = DistillationConfig(
        output_dir=str(tmp_path_factory.mktemp("distillation_math")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=2,
        temperature=1.5,
        beta=0.4,
    )
    return DistillationTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        teacher_model=AutoModelForCausalLM.from_pretrained(tiny.teacher),
        args=args,
        train_dataset=Dataset.from_list([{"prompt": "What is 1 + 1?"}] * 2),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy, padding_side="left"),
    )


def completion_inputs(tok) -> dict[str, torch.Tensor]:
    """Two prompts, left-padded, and two completions, right-padded, as generation leaves them."""
    prompts = [tok("What is 1 + 1?")["input_ids"], tok("What is 12 + 30 exactly?")["input_ids"]]
    completions = [tok(" 1 + 1 = 2")["input_ids"], tok(" 42")["input_ids"]]
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    pad = tok.pad_token_id
    return {
        "prompt_ids": torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts]),
        "prompt_mask": torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) for p in prompts]),
        "completion_ids": torch.tensor([c + [pad] * (width_c - len(c)) for c in completions]),
        "completion_mask": torch.tensor(
            [[1] * len(c) + [0] * (width_c - len(c)) for c in completions]
        ),
    }


def test_distillation_compute_loss_compares_completion_tokens(distillation_trainer):
    """Left-padded prompts, right-padded completions: the loss covers completion tokens only.

    The logits at position t predict token t + 1, so the prediction of completion token j is
    read from the position just before it (the last prompt token for j = 0).
    """
    trainer = distillation_trainer
    inputs = completion_inputs(trainer.processing_class)
    prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
    completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
    width_p, width_c = prompt_ids.shape[1], completion_ids.shape[1]
    trainer.model.eval()  # eval: reduce by the local token count, no num_items_in_batch
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, inputs)
        ids = torch.cat([prompt_ids, completion_ids], 1)
        attention = torch.cat([prompt_mask, completion_mask], 1)
        student = trainer.model(input_ids=ids, attention_mask=attention).logits
        teacher = trainer.teacher_model(input_ids=ids, attention_mask=attention).logits
    predicting = slice(width_p - 1, width_p - 1 + width_c)  # positions predicting the completion
    expected, _ = reference(
        student[:, predicting], teacher[:, predicting], completion_mask, beta=0.4, temperature=1.5
    )
    torch.testing.assert_close(loss, expected, **TOL)
    # Off by one position, the number would be different: the alignment matters.
    wrong = slice(width_p, width_p + width_c)
    shifted, _ = reference(
        student[:, wrong], teacher[:, wrong], completion_mask, beta=0.4, temperature=1.5
    )
    assert abs(shifted - loss) > 1e-3 * loss
    assert math.isfinite(trainer._metrics["eval"]["entropy"][-1])


def test_distillation_num_items_in_batch_divides_the_sum(distillation_trainer):
    """Guide, "Normaliser": in training `compute_loss` divides the summed divergence by the
    generated-token count that generation stored in the batch (`inputs["num_items_in_batch"]`,
    all processes) over the number of processes, and ignores the count `Trainer` passes; in
    evaluation it divides by the local count."""
    trainer = distillation_trainer
    inputs = completion_inputs(trainer.processing_class)
    local = int(inputs["completion_mask"].sum())
    processes = trainer.accelerator.num_processes
    assert processes == 1
    try:
        trainer.model.eval()
        with torch.no_grad():
            local_mean = trainer.compute_loss(trainer.model, inputs)
        # As if other micro-batches and processes held twice as many tokens again: N = 3 n.
        trainer.model.train()
        with torch.no_grad():
            loss = trainer.compute_loss(
                trainer.model,
                {**inputs, "num_items_in_batch": torch.tensor(3 * local)},
                num_items_in_batch=torch.tensor(1000),  # Trainer's count, from the raw batch
            )
    finally:
        trainer.model.eval()
    torch.testing.assert_close(loss, local_mean * local / (3 * local / processes), **TOL)
    assert abs(loss - local_mean / 3) < 1e-6 and abs(loss - local_mean) > 0.5 * local_mean
    # The kernel itself: the sum over the count it is given.
    loss_mean = library(states_for_kernel(), 0.5)[0]
    loss_global = library(states_for_kernel(), 0.5, num_items_in_batch=torch.tensor(18))[0]
    torch.testing.assert_close(loss_global, loss_mean * 9 / 18, **TOL)


# ---------------------------------------------------------------------------------------------
# IW-OPD (trl.experimental.iw_opd): the sampled-token objective with position weights
# ---------------------------------------------------------------------------------------------


def iw_opd_reference(student_logits, teacher_logits, tokens, mask, gamma, temperature, rollout):
    """Our IW-OPD loss, written token by token: per-token advantage a_t = log π_T - log π_old,
    weight w_t = 1 + γ (1 - Σ_{s<t} |a_s| / Σ_s |a_s|), loss -Σ w_t a_t log π_θ / N."""
    log_student = (student_logits / temperature).log_softmax(-1)
    log_teacher = (teacher_logits / temperature).log_softmax(-1)
    chosen_student = log_student.gather(-1, tokens[..., None])[..., 0]
    chosen_teacher = log_teacher.gather(-1, tokens[..., None])[..., 0]
    old = chosen_student.detach() if rollout is None else rollout
    total = torch.zeros(())
    weights = []
    for i in range(tokens.shape[0]):
        kept = [t for t in range(tokens.shape[1]) if mask[i, t]]
        advantage = {t: float(chosen_teacher[i, t] - old[i, t]) for t in kept}
        row_sum = sum(abs(a) for a in advantage.values())
        seen = 0.0  # Σ_{s<t} |a_s|: the discrepancy accumulated before token t
        for t in kept:
            weight = 1 + gamma * (1 - seen / row_sum)
            weights.append(weight)
            total = total - weight * advantage[t] * chosen_student[i, t]
            seen += abs(advantage[t])
    return total / mask.sum(), torch.tensor(weights)


def ragged_tokens():
    g = torch.Generator().manual_seed(3)
    student = torch.randn(3, 6, V, generator=g, requires_grad=True)
    teacher = torch.randn(3, 6, V, generator=g) * 2
    tokens = torch.randint(0, V, (3, 6), generator=g)
    mask = torch.ones(3, 6, dtype=torch.bool)
    mask[1, 4:] = False  # completions of 6, 4 and 2 tokens
    mask[2, 2:] = False
    rollout = torch.randn(3, 6, generator=g).clamp(max=-0.1) - 3  # sampler's log-probs
    return student, teacher, tokens, mask, rollout


@pytest.fixture(scope="module")
def iw_opd_trainer(tiny, tmp_path_factory):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.iw_opd import IWOPDConfig, IWOPDTrainer

    args = IWOPDConfig(
        output_dir=str(tmp_path_factory.mktemp("iw_opd_math")),
        use_cpu=True,
        bf16=False,
        report_to="none",
        per_device_train_batch_size=2,
        temperature=1.3,
        iw_opd_gamma=0.7,
    )
    question = [{"role": "user", "content": "What is 1 + 1?"}]
    return IWOPDTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        teacher_model=AutoModelForCausalLM.from_pretrained(tiny.teacher),
        args=args,
        train_dataset=Dataset.from_list([{"messages": question}] * 2),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy, padding_side="left"),
    )


@pytest.mark.parametrize("gamma", [0.0, 0.7, 3.0], ids=lambda g: f"iw-opd-gamma{g}")
@pytest.mark.parametrize("sampler", ["student", "rollout"], ids=lambda s: f"iw-opd-{s}")
def test_iw_opd_loss_and_gradient_match_reference(iw_opd_trainer, gamma, sampler):
    """Guide, "IW-OPD": the loss, its gradient and the logged weights, on completions of 6, 4
    and 2 tokens; the advantage against the current student or against the sampler's log-probs
    (what vLLM returns). γ = 0 is plain sampled-token OPD (every weight 1)."""
    trainer = iw_opd_trainer
    student, teacher, tokens, mask, rollout = ragged_tokens()
    rollout = rollout if sampler == "rollout" else None
    labels = torch.where(mask, tokens, -100)
    log_teacher = (teacher / 1.3).log_softmax(-1).gather(-1, tokens[..., None])[..., 0]
    trainer.iw_opd_gamma = gamma
    trainer.model.eval()  # the metrics land under "eval"
    trainer._metrics["eval"].clear()
    loss = trainer._compute_iw_opd_loss(student, tokens, labels, log_teacher, rollout)
    (grad,) = torch.autograd.grad(loss, student)
    expected, weights = iw_opd_reference(student, teacher, tokens, mask, gamma, 1.3, rollout)
    (expected_grad,) = torch.autograd.grad(expected, student)
    torch.testing.assert_close(loss, expected, **TOL)
    torch.testing.assert_close(grad, expected_grad, **TOL)
    logged = trainer._metrics["eval"]
    assert logged["iw_opd/mean_weight"][-1] == pytest.approx(weights.mean().item(), rel=1e-5)
    assert logged["iw_opd/max_weight"][-1] == pytest.approx(1 + gamma, rel=1e-6)  # first tokens
    assert logged["iw_opd/min_weight"][-1] == pytest.approx(weights.min().item(), rel=1e-5)
    assert logged["iw_opd/min_weight"][-1] >= 1.0  # weights lie in [1, 1 + γ]


def test_iw_opd_weights_fall_along_the_completion(iw_opd_trainer):
    """Each completion's weights start at 1 + γ and never rise; a token after a large
    discrepancy loses more weight than one after a small one."""
    student, teacher, tokens, mask, _ = ragged_tokens()
    _, weights = iw_opd_reference(student, teacher, tokens, mask, 0.7, 1.3, None)
    rows = torch.split(weights, mask.sum(1).tolist())
    for row in rows:
        assert row[0] == pytest.approx(1.7)
        assert (row[1:] <= row[:-1] + 1e-7).all()
    assert rows[0][1] > 1.0  # the last weight is above 1 unless the last |a| is zero


def test_iw_opd_compute_loss_reads_the_completion_with_a_local_teacher(iw_opd_trainer):
    """A real batch as generation builds it (prompts of different lengths, left-padded;
    completions of different lengths, right-padded): `compute_loss` slices from the shortest
    prompt's boundary, compares the completion tokens and nothing else."""
    trainer = iw_opd_trainer
    trainer.iw_opd_gamma = 0.7
    inputs = completion_inputs(trainer.processing_class)
    width_p, width_c = inputs["prompt_ids"].shape[1], inputs["completion_ids"].shape[1]
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    attention = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
    labels = torch.full_like(ids, -100)
    completion = torch.zeros_like(ids, dtype=torch.bool)
    completion[:, width_p:] = inputs["completion_mask"].bool()
    labels[completion] = ids[completion]
    batch = {"input_ids": ids, "attention_mask": attention, "labels": labels}
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        student = trainer.model(input_ids=ids, attention_mask=attention).logits
        teacher = trainer.teacher_model(input_ids=ids, attention_mask=attention).logits
    assert trainer._compute_prompt_length(batch) < width_p  # the shorter prompt's length
    predicting = slice(width_p - 1, width_p - 1 + width_c)
    expected, _ = iw_opd_reference(
        student[:, predicting],
        teacher[:, predicting],
        inputs["completion_ids"],
        inputs["completion_mask"].bool(),
        0.7,
        1.3,
        None,
    )
    torch.testing.assert_close(loss, expected, **TOL)


def test_iw_opd_is_on_policy_only():
    """The config refuses what the objective is not defined for: off-policy mixing (λ < 1)."""
    from trl.experimental.iw_opd import IWOPDConfig

    with pytest.raises(ValueError, match="requires lmbda=1.0"):
        IWOPDConfig(output_dir="unused", use_cpu=True, bf16=False, lmbda=0.5)
