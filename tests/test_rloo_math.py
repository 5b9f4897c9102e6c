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
