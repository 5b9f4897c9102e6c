"""The equations of reference_guides/a2po.md, computed independently and compared with TRL.

One real `A2POTrainer` (TRL 1.16.0, `trl.experimental.a2po`) on the tiny policy serves the
module, with a reference model perturbed so that log(pi / pi_ref) is not zero. Checked against
our own torch code:

- stage 1, `A2POTrainer._estimate_optimal_values`: V*(x) = beta1 log mean_j exp(r_j / beta1),
  per prompt, over two batches of prompts whose rewards differ (binary and not), and the prompt
  that no sample solved is dropped from the training set but keeps its V*;
- stage 2, `_prepare_inputs` + `compute_loss`: the squared error between
  beta2 log(pi / pi_ref) of the whole completion (summed up to and including its first EOS) and
  r - V*, on completions of ragged lengths, with beta1 != beta2;
- the derivation: at the KL-regularised optimum pi* = pi_ref exp(r / beta) / Z, the implicit
  reward beta log(pi* / pi_ref) equals r - V* exactly (the loss is 0 there), by exact
  enumeration on a small categorical policy; and V* lies between the mean and the best reward.
"""

import math

import pytest
import torch
from datasets import Dataset
from trl.experimental.a2po import A2POConfig, A2POTrainer

pytestmark = pytest.mark.math

N = 4  # reference samples per prompt in stage 1
T = 6  # completion tokens
BETA1, BETA2 = 0.3, 0.2  # both far from the defaults (0.5, 1e-3), and from each other
TOL = {"atol": 1e-5, "rtol": 1e-5}
ANSWERS = (6, 28, 4)
# Stage 1: the N rewards of each prompt's reference samples. Prompt 6: one success in four, where
# the mean (0.25) and V* (0.61 at beta1 = 0.3) differ clearly; prompt 28: graded rewards; prompt
# 4: never solved, dropped by filter_all_incorrect.
STAGE1 = {6: [1.0, 0.0, 0.0, 0.0], 28: [0.9, 0.1, 0.5, 0.3], 4: [0.0, 0.0, 0.0, 0.0]}
# Stage 2: one reward per prompt of the batch.
STAGE2 = {6: 1.0, 28: 0.0}
calls: list[dict] = []


def scripted_reward(prompts, completions, answer, **kwargs):
    """Stage 1 sends N contiguous samples per prompt, stage 2 one: the count tells them apart."""
    calls.append({"prompts": prompts, "completions": completions, "answer": answer})
    if len(answer) % N == 0 and all(answer[i] == answer[i - i % N] for i in range(len(answer))):
        return [STAGE1[a][i % N] for i, a in enumerate(answer)]
    return [STAGE2[a] for a in answer]


def row(answer: int) -> dict:
    question = {6: "What is 6 - 0?", 28: "What is 4 * 7?", 4: "What is 2 + 2?"}[answer]
    return {"prompt": [{"role": "user", "content": question}], "answer": answer}


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    from transformers import AutoTokenizer

    args = A2POConfig(
        output_dir=str(tmp_path_factory.mktemp("a2po-math")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=2,  # stage 1 in two batches: 2 prompts, then 1
        num_value_samples=N,
        max_completion_length=T,
        beta1=BETA1,
        beta2=BETA2,
        seed=0,
    )
    trainer = A2POTrainer(
        model=str(tiny.policy),
        reward_funcs=scripted_reward,
        args=args,
        train_dataset=Dataset.from_list([row(a) for a in ANSWERS]),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy, padding_side="left"),
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a reference that differs from the policy: log(pi / pi_ref) != 0
        for p in trainer.ref_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    trainer._estimate_optimal_values()  # stage 1, as train() runs it before the first step
    trainer.model.train()
    return trainer


def prompt_text(trainer, answer: int) -> str:
    return trainer.processing_class.apply_chat_template(
        row(answer)["prompt"], add_generation_prompt=True, tokenize=False
    )


def log_mean_exp_value(rewards: list[float], beta: float) -> float:
    """V* = beta log (1/N) sum_j exp(r_j / beta), in float64 the direct way."""
    return beta * math.log(sum(math.exp(r / beta) for r in rewards) / len(rewards))


def test_a2po_stage1_value_is_log_mean_exp_of_reference_rewards(trainer):
    stage1 = [c for c in calls if len(c["answer"]) % N == 0][:2]
    # Two batches (2 prompts, then 1), each prompt's N samples contiguous, columns repeated.
    assert [c["answer"] for c in stage1] == [[6] * N + [28] * N, [4] * N]
    assert stage1[0]["prompts"][0] == row(6)["prompt"]  # the raw prompt, not the template
    assert all(isinstance(c, str) for c in stage1[0]["completions"])  # text, not messages
    values = trainer._optimal_values
    assert set(values) == {prompt_text(trainer, a) for a in ANSWERS}  # keyed by rendered prompt
    for answer, rewards in STAGE1.items():
        expected = log_mean_exp_value(rewards, BETA1)
        assert values[prompt_text(trainer, answer)] == pytest.approx(expected, abs=1e-6)
    # A wrong formula fails: the plain mean of prompt 6's rewards is 0.25, V* about 0.61.
    v6 = values[prompt_text(trainer, 6)]
    assert v6 > sum(STAGE1[6]) / N + 0.3
    # filter_all_incorrect: prompt 4 (every sample 0) leaves the training set, keeps its V*.
    assert [r["answer"] for r in trainer.train_dataset] == [6, 28]
    assert values[prompt_text(trainer, 4)] == pytest.approx(0.0, abs=1e-7)


def sequence_logps(model, ids, prompt_mask, completion_mask):
    """sum_t m_t log pi(y_t | x, y_<t), from the full logits."""
    n_prompt = prompt_mask.shape[1]
    attention = torch.cat([prompt_mask, completion_mask], 1)
    logits = model(input_ids=ids, attention_mask=attention).logits[:, n_prompt - 1 : -1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, ids[:, n_prompt:, None])[..., 0]
    return (logps * completion_mask).sum(-1)


def test_a2po_stage2_loss_is_least_squares_on_optimal_advantage(trainer, monkeypatch):
    tokenizer = trainer.processing_class
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    a, b, c = (tokenizer.convert_tokens_to_ids(t) for t in ("1", "2", "3"))
    # Ragged completions: EOS after 2 tokens then padding; none (cut at T tokens).
    completions = torch.tensor([[a, b, eos, pad, pad, pad], [c, a, b, c, a, b]])

    def fixed_generate(input_ids, attention_mask, generation_config):
        assert generation_config.num_return_sequences == 1  # one completion per prompt
        return torch.cat([input_ids, completions], dim=1)

    monkeypatch.setattr(trainer.model, "generate", fixed_generate)
    inputs = trainer._prepare_inputs([row(6), row(28)])
    n_prompt = inputs["input_ids"].shape[1] - T
    prompt_mask = inputs["attention_mask"][:, :n_prompt]  # the tokenizer's (left padding)
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [1] * T])  # up to and including the first EOS
    torch.testing.assert_close(inputs["attention_mask"][:, n_prompt:], mask, check_dtype=False)

    ids = inputs["input_ids"]
    with torch.no_grad():
        policy = sequence_logps(trainer.model, ids, prompt_mask, mask)
        ref = sequence_logps(trainer.ref_model, ids, prompt_mask, mask)
    torch.testing.assert_close(inputs["ref_logps"], ref, **TOL)
    v_star = torch.tensor([log_mean_exp_value(STAGE1[k], BETA1) for k in (6, 28)])
    rewards = torch.tensor([STAGE2[6], STAGE2[28]])
    torch.testing.assert_close(inputs["v_star"], v_star.float(), **TOL)
    torch.testing.assert_close(inputs["rewards"], rewards, **TOL)

    implicit = BETA2 * (policy - ref)
    assert implicit.abs().min() > 1e-3  # the perturbed reference: the implicit reward counts
    expected = ((implicit - (rewards - v_star.float())) ** 2).mean()
    loss = trainer.compute_loss(trainer.model, inputs)
    torch.testing.assert_close(loss, expected, **TOL)
    # What a wrong formula would give differs: per-token means instead of sums, or the EOS
    # dropped from the mask, or the group-free mean reward in place of V*.
    lengths = mask.sum(-1)
    token_mean = ((BETA2 * (policy - ref) / lengths - (rewards - v_star)) ** 2).mean()
    plain_mean = torch.tensor([sum(STAGE1[k]) / N for k in (6, 28)])
    with_mean = ((implicit - (rewards - plain_mean)) ** 2).mean()
    for wrong in (token_mean, with_mean):
        assert abs(wrong.item() - loss.item()) > 1e-3

    # Logged: means over the batch.
    metrics = trainer._metrics["train"]
    assert metrics["reward"][-1] == pytest.approx(rewards.mean().item())
    assert metrics["v_star"][-1] == pytest.approx(v_star.mean().item(), abs=1e-6)
    assert metrics["implicit_reward"][-1] == pytest.approx(implicit.mean().item(), abs=1e-5)
    assert metrics["advantage"][-1] == pytest.approx((rewards - v_star).mean().item(), abs=1e-6)

    # The gradient is the regression's: 2/B sum_i (beta2 dlogp_i - A_i) beta2 grad log pi(y_i).
    trainer.model.zero_grad()
    trainer.compute_loss(trainer.model, inputs).backward()
    weight = trainer.model.get_input_embeddings().weight
    got = weight.grad.clone()
    trainer.model.zero_grad()
    residual = implicit - (rewards - v_star.float())
    logps = sequence_logps(trainer.model, ids, prompt_mask, mask)
    (2 / len(rewards) * residual * BETA2 * logps).sum().backward()
    torch.testing.assert_close(got, weight.grad, atol=1e-6, rtol=1e-4)
    trainer.model.zero_grad()


def test_a2po_optimal_policy_makes_the_regression_exact():
    """On a 4-outcome categorical: pi* = pi_ref exp(r / beta) / Z maximises
    E_pi[r] - beta KL(pi || pi_ref); with V* = beta log E_ref[exp(r / beta)],
    beta log(pi* / pi_ref) = r - V* for every outcome: A*-PO's loss is 0 at pi* and only there.
    """
    torch.manual_seed(0)
    beta = 0.3
    ref = torch.softmax(torch.randn(4, dtype=torch.float64), 0)
    r = torch.tensor([1.0, 0.0, 0.0, 1.0], dtype=torch.float64)
    v_star = beta * torch.log((ref * torch.exp(r / beta)).sum())
    optimal = ref * torch.exp(r / beta) / torch.exp(v_star / beta)
    assert optimal.sum().item() == pytest.approx(1.0, abs=1e-12)  # Z = exp(V* / beta)
    torch.testing.assert_close(beta * torch.log(optimal / ref), r - v_star)

    def objective(p):  # the KL-regularised return
        return (p * r).sum() - beta * (p * torch.log(p / ref)).sum()

    assert objective(optimal).item() == pytest.approx(v_star.item(), abs=1e-12)  # its value is V*
    for _ in range(20):  # any other policy does worse, and leaves a residual
        other = torch.softmax(torch.randn(4, dtype=torch.float64), 0)
        assert objective(other) < objective(optimal)
        residual = beta * torch.log(other / ref) - (r - v_star)
        assert (other * residual**2).sum() > 1e-6


def test_a2po_value_lies_between_mean_and_best_reward():
    """V* >= mean (Jensen), <= max; beta1 -> infinity gives the mean, beta1 -> 0 the max."""
    rewards = [1.0, 0.0, 0.0, 0.0]
    for beta in (0.05, 0.3, 0.5, 2.0):
        v = log_mean_exp_value(rewards, beta)
        assert 0.25 < v < 1.0
    assert log_mean_exp_value(rewards, 1e4) == pytest.approx(0.25, abs=1e-4)
    # At beta -> 0 the estimate approaches max + beta log(k / N): k of N samples were the best.
    assert log_mean_exp_value(rewards, 0.01) == pytest.approx(1.0 + 0.01 * math.log(1 / 4))
