"""The equations of reference_guides/rloo.md, computed independently and compared with TRL.

One real `RLOOTrainer` (TRL 1.16.0) on the tiny policy serves the module. The reference model is
perturbed, so that the KL penalty is not zero. Checked against our own torch code:

- `RLOOTrainer._generate_and_score_completions`: fixed rewards minus the KL penalty, then the
  leave-one-out baseline, give the advantages it returns;
- `RLOOTrainer._compute_loss`: the clipped surrogate on whole-sequence ratios, on fixed inputs;
- the identity between RLOO's and GRPO's (unscaled) advantages, and the unbiasedness of the
  leave-one-out baseline, by exact enumeration on a small categorical policy.
"""

import itertools

import pytest
import torch
from datasets import Dataset
from trl import RLOOConfig, RLOOTrainer

pytestmark = pytest.mark.math

G = 4
T = 6
EPS, EPS_HIGH, BETA = 0.2, 0.28, 0.05
TOL = {"atol": 1e-5, "rtol": 1e-5}
REWARDS = [0.9, 0.1, 0.5, 0.3, 1.0, 1.0, 0.0, 1.0]


def fixed_reward(completions, answer, **kwargs):
    assert answer == [6] * G + [28] * G  # extra columns arrive, one value per completion
    return list(REWARDS)


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": "What is 6 - 0?"}], "answer": 6},
            {"prompt": [{"role": "user", "content": "What is 4 * 7?"}], "answer": 28},
        ]
    )
    args = RLOOConfig(
        output_dir=str(tmp_path_factory.mktemp("rloo-math")),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        num_generations=G,
        per_device_train_batch_size=2 * G,
        max_completion_length=T,
        beta=BETA,
        epsilon=EPS,
        epsilon_high=EPS_HIGH,
        seed=0,
    )
    trainer = RLOOTrainer(
        model=str(tiny.policy), reward_funcs=fixed_reward, args=args, train_dataset=dataset
    )
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():  # a reference that differs from the policy: the KL is not zero
        for p in trainer.ref_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    trainer.model.train()
    return trainer


def seq_logps(model, prompt_ids, prompt_mask, completion_ids, completion_mask):
    """Per-token log pi(y_t | x, y_<t) from the full logits, masked."""
    ids = torch.cat([prompt_ids, completion_ids], dim=1)
    mask = torch.cat([prompt_mask, completion_mask], dim=1)
    n = completion_ids.shape[1]
    logits = model(input_ids=ids, attention_mask=mask).logits[:, -n - 1 : -1]
    logps = torch.log_softmax(logits.float(), -1).gather(-1, completion_ids[..., None])[..., 0]
    return logps * completion_mask


def leave_one_out(rewards: torch.Tensor) -> torch.Tensor:
    groups = rewards.view(-1, G)
    baseline = (groups.sum(dim=1, keepdim=True) - groups) / (G - 1)  # mean of the others
    return (groups - baseline).view(-1)


def test_rloo_advantages_with_kl_in_reward(trainer):
    rows = trainer.train_dataset.to_list()
    output = trainer._generate_and_score_completions([dict(rows[0])] * G + [dict(rows[1])] * G)
    args = [output[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")]
    with torch.no_grad():
        policy = seq_logps(trainer.model, *args)
        ref = seq_logps(trainer.ref_model, *args)
    torch.testing.assert_close(output["old_logps"], policy.sum(-1), **TOL)
    kl = (policy - ref).sum(-1)  # k1, summed over the sequence's tokens
    assert kl.abs().min() > 0
    shaped = torch.tensor(REWARDS) - BETA * kl
    torch.testing.assert_close(output["advantages"], leave_one_out(shaped), **TOL)
    # Logged: the reward before the penalty, and the mean per-token KL.
    metrics = trainer._metrics["train"]
    assert metrics["reward"][-1] == pytest.approx(sum(REWARDS) / len(REWARDS), abs=1e-6)
    mask = output["completion_mask"].bool()
    assert metrics["kl"][-1] == pytest.approx((policy - ref)[mask].mean().item(), rel=1e-4)


def test_rloo_advantage_is_scaled_group_centred_reward():
    """A_i = r_i - mean_{j != i} r_j = G / (G - 1) * (r_i - mean_j r_j)."""
    rewards = torch.tensor(REWARDS)
    groups = rewards.view(-1, G)
    centred = (groups - groups.mean(dim=1, keepdim=True)).view(-1)
    torch.testing.assert_close(leave_one_out(rewards), G / (G - 1) * centred)


def test_rloo_leave_one_out_baseline_is_unbiased():
    """Exact expectation over every group of G samples from a 3-outcome softmax policy: the
    leave-one-out estimator's mean gradient equals the true gradient of E[r]; the estimator
    whose baseline includes the sample itself (plain group mean) is biased by (G-1)/G."""
    logits = torch.tensor([0.3, -0.2, 0.5], requires_grad=True)
    reward = torch.tensor([1.0, 0.0, 2.0])
    probs = torch.softmax(logits, 0)
    (true_grad,) = torch.autograd.grad((probs * reward).sum(), logits)

    loo = torch.zeros(3)
    with_self = torch.zeros(3)
    for outcome in itertools.product(range(3), repeat=G):
        y = torch.tensor(outcome)
        weight = probs.detach()[y].prod()
        r = reward[y]
        a_loo = leave_one_out(r)
        a_self = r - r.mean()
        for adv, total in ((a_loo, loo), (a_self, with_self)):
            logp = torch.log_softmax(logits, 0)[y]
            (grad,) = torch.autograd.grad((adv * logp).sum() / G, logits)
            total += weight * grad
    torch.testing.assert_close(loo, true_grad, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(with_self, (G - 1) / G * true_grad, atol=1e-6, rtol=1e-5)


def test_rloo_loss_matches_library(trainer):
    gen = torch.Generator().manual_seed(0)
    vocab = trainer.model.config.vocab_size
    b, p = 2 * G, 5
    lengths = torch.tensor([6, 3, 5, 1, 6, 2, 4, 6])
    inputs = {
        "prompt_ids": torch.randint(0, vocab, (b, p), generator=gen),
        "prompt_mask": torch.ones(b, p, dtype=torch.long),
        "completion_ids": torch.randint(0, vocab, (b, T), generator=gen),
        "completion_mask": (torch.arange(T)[None, :] < lengths[:, None]).long(),
        "advantages": torch.randn(b, generator=gen),
    }
    args = [inputs[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")]
    with torch.no_grad():
        logps = seq_logps(trainer.model, *args).sum(-1)
    inputs["old_logps"] = logps + 0.3 * torch.randn(b, generator=gen)
    ratio = torch.exp(logps - inputs["old_logps"])  # one ratio per sequence
    a = inputs["advantages"]
    ours = -torch.min(ratio * a, torch.clamp(ratio, 1 - EPS, 1 + EPS_HIGH) * a).mean()
    loss = trainer._compute_loss(trainer.model, inputs)
    torch.testing.assert_close(loss, ours, **TOL)
    clipped = ((ratio < 1 - EPS) & (a < 0)) | ((ratio > 1 + EPS_HIGH) & (a > 0))
    assert 0 < clipped.float().mean() < 1
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(
        clipped.float().mean().item()
    )


# ---------------------------------------------------------------------------------------------
# The options that change the math: reference_guides/rloo.md, "Every option that changes the math"
# ---------------------------------------------------------------------------------------------


def _score_both_prompts(trainer):
    rows = trainer.train_dataset.to_list()
    return trainer._generate_and_score_completions([dict(rows[0])] * G + [dict(rows[1])] * G)


def _kl_per_sequence(trainer, output):
    args = [output[k] for k in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")]
    with torch.no_grad():
        return (seq_logps(trainer.model, *args) - seq_logps(trainer.ref_model, *args)).sum(-1)


def test_rloo_reward_clip_then_kl_then_batch_normalised_advantages(trainer):
    """`reward_clip_range=(lo, hi)` clamps the weighted reward before the KL penalty;
    `normalize_advantages=True` standardises the leave-one-out advantages over the whole
    generation batch: (A - mean A) / (std A + 1e-4), Bessel-corrected."""
    lo, hi = 0.2, 0.95
    trainer.reward_clip_range, trainer.normalize_advantages = (lo, hi), True
    try:
        output = _score_both_prompts(trainer)
    finally:
        trainer.reward_clip_range, trainer.normalize_advantages = None, False
    clipped = torch.tensor(REWARDS).clamp(lo, hi)
    assert not torch.equal(clipped, torch.tensor(REWARDS))  # the clip acts on these rewards
    shaped = clipped - BETA * _kl_per_sequence(trainer, output)
    loo = leave_one_out(shaped)
    expected = (loo - loo.mean()) / (loo.std() + 1e-4)
    torch.testing.assert_close(output["advantages"], expected, **TOL)
    # Clipping after the penalty, or not normalising, gives other numbers.
    after = (torch.tensor(REWARDS) - BETA * _kl_per_sequence(trainer, output)).clamp(lo, hi)
    wrong = leave_one_out(after)
    assert not torch.allclose((wrong - wrong.mean()) / (wrong.std() + 1e-4), expected, atol=1e-3)
    assert not torch.allclose(loo, expected, atol=1e-3)


def test_rloo_mask_truncated_completions_drops_gradient_and_kl_not_the_baseline(trainer):
    """`mask_truncated_completions=True`: a completion cut at `max_completion_length` gets
    m_{i,t} = 0, so its summed log-probabilities are 0 (old and new), its KL penalty is 0 and
    its ratio is exactly 1: it adds the constant -A_i / B to the loss and no gradient. Its
    reward still enters its siblings' leave-one-out baselines."""
    eos_boost = torch.zeros(trainer.model.config.vocab_size)
    eos_boost[trainer.eos_token_ids] = 4.0  # about half the completions end within T tokens
    hook = trainer.model.lm_head.register_forward_hook(lambda module, args, out: out + eos_boost)
    trainer.mask_truncated_completions = True
    try:
        torch.manual_seed(3)
        output = _score_both_prompts(trainer)
    finally:
        trainer.mask_truncated_completions = False
        hook.remove()
    ended = torch.isin(output["completion_ids"], torch.tensor(trainer.eos_token_ids)).any(dim=1)
    assert ended.any() and not ended.all()
    assert torch.equal(output["completion_mask"].sum(dim=1) > 0, ended)
    assert torch.all(output["old_logps"][~ended] == 0)
    kl = _kl_per_sequence(trainer, output)
    assert torch.all(kl[~ended] == 0) and torch.all(kl[ended] != 0)
    shaped = torch.tensor(REWARDS) - BETA * kl  # truncated rows keep their reward, unpenalised
    torch.testing.assert_close(output["advantages"], leave_one_out(shaped), **TOL)

    # The loss: only the truncated completions carry an advantage here. Their ratio is
    # exp(0 - 0) = 1, a constant, so the loss is -mean_i A_i [truncated] and no gradient flows.
    inputs = dict(output)
    inputs["advantages"] = torch.where(ended, 0.0, output["advantages"])
    trainer.model.zero_grad()
    loss = trainer._compute_loss(trainer.model, inputs)
    loss.backward()
    expected = -inputs["advantages"].sum() / len(REWARDS)
    assert expected.abs() > 1e-3
    torch.testing.assert_close(loss, expected, **TOL)
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert all(torch.all(g == 0) for g in grads)
    trainer.model.zero_grad()


def test_rloo_num_iterations_reuses_the_generation_and_its_old_logps(tiny, tmp_path):
    """A real run with B = 4 completions per micro-batch, K = 2 accumulation steps, S = 4 steps
    per generation, G = 2, num_iterations mu = 2, 4 optimiser steps: one generation round
    (S mu / K = 4 steps); its S slices are each used mu = 2 times, in order 0 1 2 3 0 1 2 3, with
    the old log-probabilities computed once, at generation; the ratio is 1 on the first
    optimiser step's micro-batches and moves after it. The Trainer divides `_compute_loss` by K
    (no `labels`, so no `num_items_in_batch`)."""
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}]} for i in range(40)]

    def length_reward(completions, **kwargs):  # varied rewards, so that the policy moves
        return [float(len(str(c)) % 5) for c in completions]

    args = RLOOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        num_generations=2,
        max_completion_length=4,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_iterations=2,
        max_steps=4,
        beta=0.0,
        learning_rate=1e-2,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
    )
    trainer = RLOOTrainer(
        model=str(tiny.policy),
        reward_funcs=length_reward,
        args=args,
        train_dataset=Dataset.from_list(rows),
    )
    generations, micro, steps = [], [], []
    generate, compute_loss, training_step = (
        trainer._generate_and_score_completions,
        trainer._compute_loss,
        trainer.training_step,
    )

    def recording_generate(batch):
        out = generate(batch)
        generations.append(out)
        return out

    def recording_loss(model, inputs):
        keys = ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask")
        with torch.no_grad():
            logps = seq_logps(model, *[inputs[k] for k in keys]).sum(-1)
        loss = compute_loss(model, inputs)
        micro.append((inputs, logps, loss.detach()))
        return loss

    def recording_step(model, inputs, num_items_in_batch):
        steps.append((num_items_in_batch, training_step(model, inputs, num_items_in_batch)))
        return steps[-1][1]

    trainer._generate_and_score_completions = recording_generate
    trainer._compute_loss = recording_loss
    trainer.training_step = recording_step
    trainer.train()

    assert trainer.state.global_step == 4 and len(generations) == 1 and len(micro) == 8
    for j in range(4):  # pass 2 reuses pass 1's slices, old log-probs included
        first, second = micro[j][0], micro[j + 4][0]
        assert torch.equal(first["completion_ids"], second["completion_ids"])
        assert torch.equal(first["old_logps"], second["old_logps"])
    seen = torch.cat([m[0]["old_logps"] for m in micro[:4]])
    assert torch.equal(seen.sort().values, generations[0]["old_logps"].sort().values)
    log_ratios = [(logps - inputs["old_logps"]).abs().max().item() for inputs, logps, _ in micro]
    assert max(log_ratios[:2]) < 1e-4  # before the first optimiser step: rho = 1
    assert min(log_ratios[2:]) > 1e-3  # every later micro-batch sees a moved policy
    for (items, returned), (_, _, loss) in zip(steps, micro, strict=True):
        assert items is None
        torch.testing.assert_close(returned, loss / 2, **TOL)
