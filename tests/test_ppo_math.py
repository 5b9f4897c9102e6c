"""PPO math: every equation of reference_guides/ppo.md, computed here independently (plain
Python floats, closed forms instead of recursions, exact sums instead of estimators) and compared
with the functions `annotated_trl.trainers.ppo.PPOTrainer` calls, on fixed inputs.

Inputs are float64, so agreement is to ~1e-12: any larger gap is a real difference.
"""

import math

import pytest
import torch

from annotated_trl.trainers.ppo import (
    INVALID_LOGPROB,
    add_score,
    clipped_policy_loss,
    clipped_value_loss,
    generalized_advantages,
    masked_whiten,
    per_token_kl,
    response_masks,
    truncate_response,
)

TOL = 1e-12
FRACTION_TOL = 1e-7  # clip fractions are float32 means of 0/1 flags, as in trl 1.12


def _fixed(*shape, scale=1.0, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return scale * torch.randn(*shape, generator=generator, dtype=torch.float64)


# A mask with ragged rows, as padding makes them: row lengths 5, 3, 6, 1.
MASK = torch.tensor(
    [[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0]], dtype=bool
)


@pytest.mark.math
def test_ppo_clipped_surrogate():
    """L^CLIP = mean over response tokens of max(-A ρ, -A clip(ρ, 1-ε, 1+ε)), ρ = exp(Δ log π)."""
    eps = 0.2
    old = _fixed(4, 6, seed=1) - 2
    new = old + _fixed(4, 6, scale=0.4, seed=2)  # ratios well outside [0.8, 1.2] for some
    advantages = _fixed(4, 6, seed=3)
    loss, clipfrac, ratio = clipped_policy_loss(new, old, advantages, MASK, eps)

    terms, clipped_count, count = [], 0, 0
    for i in range(4):
        for t in range(6):
            if not MASK[i, t]:
                continue
            rho = math.exp(new[i, t].item() - old[i, t].item())
            a = advantages[i, t].item()
            plain, clipped = -a * rho, -a * min(max(rho, 1 - eps), 1 + eps)
            terms.append(max(plain, clipped))
            clipped_count += clipped > plain
            count += 1
    assert 0 < clipped_count < count  # the case exercises both branches
    assert loss.item() == pytest.approx(sum(terms) / count, abs=TOL)
    assert clipfrac.item() == pytest.approx(clipped_count / count, abs=FRACTION_TOL)
    assert torch.allclose(ratio, (new - old).exp(), atol=TOL, rtol=0)


@pytest.mark.math
def test_ppo_clipped_surrogate_gradient_vanishes_outside_the_trust_region():
    """Where the clip is active (ρ > 1+ε with A > 0), that token contributes no gradient."""
    old = torch.zeros(1, 2, dtype=torch.float64)
    new = torch.tensor([[0.5, 0.0]], dtype=torch.float64, requires_grad=True)  # ρ = 1.65, 1
    advantages = torch.tensor([[1.0, 1.0]], dtype=torch.float64)
    loss, _, _ = clipped_policy_loss(new, old, advantages, torch.ones(1, 2, dtype=bool), 0.2)
    loss.backward()
    assert new.grad[0, 0].item() == 0.0
    assert new.grad[0, 1].item() == pytest.approx(-0.5, abs=TOL)  # -A ρ / 2 tokens


@pytest.mark.math
def test_ppo_clipped_value_loss():
    """L^V = ½ mean max((V - R)², (clip(V, V_old ± ε_V) - R)²) over the value mask."""
    eps_v = 0.2
    old_values, returns = _fixed(4, 6, seed=4), _fixed(4, 6, seed=5)
    new_values = old_values + _fixed(4, 6, scale=0.5, seed=6)
    loss, clipfrac = clipped_value_loss(new_values, old_values, returns, MASK, eps_v)

    terms, clipped_count, count = [], 0, 0
    for i in range(4):
        for t in range(6):
            if not MASK[i, t]:
                continue
            v, v_old, r = new_values[i, t].item(), old_values[i, t].item(), returns[i, t].item()
            v_clipped = min(max(v, v_old - eps_v), v_old + eps_v)
            plain, clipped = (v - r) ** 2, (v_clipped - r) ** 2
            terms.append(max(plain, clipped))
            clipped_count += clipped > plain
            count += 1
    assert 0 < clipped_count < count
    assert loss.item() == pytest.approx(0.5 * sum(terms) / count, abs=TOL)
    assert clipfrac.item() == pytest.approx(clipped_count / count, abs=FRACTION_TOL)


@pytest.mark.parametrize("gamma, lam", [(1.0, 0.95), (0.9, 0.8), (1.0, 1.0), (0.99, 0.0)])
@pytest.mark.math
def test_ppo_gae(gamma, lam):
    """GAE in closed form, A_t = Σ_l (γλ)^l δ_{t+l}, δ_t = r_t + γ V_{t+1} - V_t (V_T = 0),
    equals the backward recursion; returns are A_t + V_t."""
    rewards, values = _fixed(3, 7, seed=7), _fixed(3, 7, seed=8)
    advantages, returns = generalized_advantages(rewards, values, gamma, lam)
    length = rewards.shape[1]
    for i in range(3):
        r, v = rewards[i].tolist(), values[i].tolist() + [0.0]
        deltas = [r[t] + gamma * v[t + 1] - v[t] for t in range(length)]
        for t in range(length):
            expected = sum((gamma * lam) ** k * deltas[t + k] for k in range(length - t))
            assert advantages[i, t].item() == pytest.approx(expected, abs=1e-10)
            assert returns[i, t].item() == pytest.approx(expected + v[t], abs=1e-10)
    if lam == 1.0 and gamma == 1.0:  # Monte Carlo: the return is the reward-to-go
        to_go = rewards.flip(1).cumsum(1).flip(1)
        assert torch.allclose(returns, to_go, atol=1e-10, rtol=0)


@pytest.mark.math
def test_ppo_kl_estimators():
    """k1 = log π - log π_ref and k3 = (r - 1) - log r with r = π_ref / π, per token; sampled
    from π, both average to the exact KL(π ‖ π_ref) = Σ π log(π / π_ref); k3 is never negative
    and has the lower variance."""
    logprobs = torch.log(torch.tensor([0.5, 0.2, 0.9, 0.05], dtype=torch.float64))
    ref_logprobs = torch.log(torch.tensor([0.4, 0.3, 0.9, 0.2], dtype=torch.float64))
    k1, k3 = (per_token_kl(logprobs, ref_logprobs, e) for e in ("k1", "k3"))
    for i in range(4):
        p, q = logprobs[i].exp().item(), ref_logprobs[i].exp().item()
        assert k1[i].item() == pytest.approx(math.log(p / q), abs=TOL)
        assert k3[i].item() == pytest.approx(q / p - 1 - math.log(q / p), abs=TOL)
    assert (k3 >= 0).all() and (k1 < 0).any()

    # Unbiasedness, on a 5-token vocabulary with 200k samples from π.
    pi = torch.tensor([0.4, 0.25, 0.2, 0.1, 0.05], dtype=torch.float64)
    ref = torch.tensor([0.3, 0.3, 0.2, 0.1, 0.1], dtype=torch.float64)
    exact = (pi * (pi / ref).log()).sum().item()
    samples = torch.multinomial(
        pi, 200_000, replacement=True, generator=torch.Generator().manual_seed(0)
    )
    k1, k3 = (per_token_kl(pi.log()[samples], ref.log()[samples], e) for e in ("k1", "k3"))
    assert k1.mean().item() == pytest.approx(exact, abs=2e-3)
    assert k3.mean().item() == pytest.approx(exact, abs=2e-3)
    assert k3.var() < k1.var()


@pytest.mark.math
def test_ppo_whitening():
    """whiten(x) = (x - mean) / sqrt(var + 1e-8) over the masked entries, var with Bessel's
    correction; shift_mean=False (used for rewards) adds the mean back.

    The Bessel factor n / (n - 1) is a ratio of two integer tensors, which torch computes in
    float32 (as trl 1.12 does): agreement is to ~1e-8, not 1e-12."""
    values = _fixed(4, 6, seed=9) + 3
    kept = [values[i, t].item() for i in range(4) for t in range(6) if MASK[i, t]]
    n = len(kept)
    mean = sum(kept) / n
    var = sum((x - mean) ** 2 for x in kept) / (n - 1)
    whitened = masked_whiten(values, MASK)
    not_shifted = masked_whiten(values, MASK, shift_mean=False)
    for i in range(4):
        for t in range(6):
            expected = (values[i, t].item() - mean) / math.sqrt(var + 1e-8)
            assert whitened[i, t].item() == pytest.approx(expected, abs=1e-7)
            assert not_shifted[i, t].item() == pytest.approx(expected + mean, abs=1e-7)
    kept_whitened = whitened[MASK]
    assert kept_whitened.mean().item() == pytest.approx(0.0, abs=1e-9)
    assert kept_whitened.std().item() == pytest.approx(1.0, abs=1e-6)


@pytest.mark.math
def test_ppo_truncation_after_the_stop_token():
    """Everything after the first stop token becomes padding; the stop token stays."""
    stop, pad = 2, 0
    responses = torch.tensor([[5, 2, 7, 2], [5, 6, 7, 8], [2, 9, 9, 9]])
    expected = torch.tensor([[5, 2, 0, 0], [5, 6, 7, 8], [2, 0, 0, 0]])
    assert torch.equal(truncate_response(stop, pad, responses), expected)


@pytest.mark.math
def test_ppo_rewards_and_masks():
    """r_t = -β KL_t, plus the score at position ℓ+1 after the last kept token ℓ (at ℓ when
    ℓ is the window's last position). The policy mask keeps t ≤ ℓ, the value mask t ≤ ℓ+1."""
    beta, length = 0.05, 5
    sequence_lengths = torch.tensor([1, 4, 3])  # last kept token; row 1 fills the window
    scores = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    kl = _fixed(3, length, seed=10).abs()
    padding_mask, padding_mask_p1 = response_masks(sequence_lengths, length)
    rewards = add_score(-beta * kl, scores, sequence_lengths)

    for i, last in enumerate(sequence_lengths.tolist()):
        score_at = last + 1 if last + 1 < length else last
        for t in range(length):
            assert padding_mask[i, t].item() == (t > last)
            assert padding_mask_p1[i, t].item() == (t > last + 1)
            expected = -beta * kl[i, t].item() + (scores[i].item() if t == score_at else 0.0)
            assert rewards[i, t].item() == pytest.approx(expected, abs=TOL)
    # The score lands where the value model is still trained (value mask), past the policy mask.
    assert not padding_mask_p1[0, 2] and padding_mask[0, 2]
    assert INVALID_LOGPROB > 0  # never a real log-probability: a missed mask shows


# --- The options, through the real training loop ------------------------------------------------
#
# The tests above check each function; these run `PPOTrainer.train` for one update on the tiny
# fixture and recompute, from the rollout's raw tensors and the page's equations, what the loop
# hands to the optimisation: so an option wired to the wrong place (the penalty after the
# rewards, whitening over the wrong mask, the estimator ignored) fails here.

OPTIONS = {
    "defaults": {"kl_estimator": "k1", "whiten_rewards": False},
    "k3-whiten-eos-penalty": {
        "kl_estimator": "k3",
        "whiten_rewards": True,
        "missing_eos_penalty": 1.0,
        "gamma": 0.9,
        "lam": 0.8,
        "vf_coef": 0.5,
        "cliprange": 0.1,
        "cliprange_value": 0.1,
        "kl_coef": 0.3,
    },
}


def one_update(tiny, out, eos_boost=3.0, **config):
    """One PPO update on 8 tiny prompts (4 per micro-batch, 2 micro-batches, 2 epochs), responses
    of at most 6 tokens that stop at EOS. The policy's EOS logit is raised by `eos_boost` after
    the frozen reference was copied: some responses stop early (ragged lengths) and the KL is
    not 0. Returns the trainer and what it recorded: the rollout (cloned before the loop edits
    it), each micro-batch with its statistics, and each loss passed to backward."""
    import datasets
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

    from annotated_trl.trainers.ppo import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny.policy, padding_side="left")
    rows = datasets.load_dataset(
        "json", data_files=str(tiny.data / "prompt_only" / "train.jsonl"), split="train"
    ).select(range(8))
    rows = rows.map(lambda r: {"input_ids": tokenizer(r["prompt"])["input_ids"]})
    args = PPOConfig(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        num_sample_generations=0,
        per_device_train_batch_size=4,
        gradient_accumulation_steps=2,
        num_ppo_epochs=2,
        total_episodes=8,
        response_length=6,
        stop_token="eos",
        temperature=1.0,
        learning_rate=1e-2,
        seed=0,
        **config,
    )
    scorer = AutoModelForSequenceClassification
    trainer = PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        ref_model=None,
        reward_model=scorer.from_pretrained(tiny.reward, num_labels=1),
        value_model=scorer.from_pretrained(tiny.reward, num_labels=1),
        train_dataset=rows.remove_columns(["prompt", "answer"]),
    )
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    boost = torch.zeros(policy.config.vocab_size)
    boost[tokenizer.eos_token_id] = eos_boost
    policy.lm_head.register_forward_hook(lambda module, args, out: out + boost)

    record = {"micro": [], "backward": []}
    rollout, step, backward = (
        trainer.rollout,
        trainer.optimisation_step,
        trainer.accelerator.backward,
    )

    def recording_rollout(*a, **k):
        roll = rollout(*a, **k)
        record["roll"] = {k: v.clone() if torch.is_tensor(v) else v for k, v in roll.items()}
        return roll

    def recording_step(micro_batch, context_length):
        stats = step(micro_batch, context_length)
        record["micro"].append((micro_batch, stats))
        return stats

    def recording_backward(loss, **kwargs):
        record["backward"].append(loss.detach().clone())
        return backward(loss, **kwargs)

    trainer.rollout, trainer.optimisation_step = recording_rollout, recording_step
    trainer.accelerator.backward = recording_backward
    torch.manual_seed(0)
    trainer.train()
    return trainer, record


def expected_from_rollout(roll, args, eos_id: int, pad_id: int) -> dict:
    """The page's equations, from the rollout's raw tensors, in plain torch (float64)."""
    post = roll["postprocessed"]
    rows, width = post.shape
    is_pad = post == pad_id
    last = torch.where(is_pad.any(1), is_pad.float().argmax(1), torch.tensor(width)) - 1
    t = torch.arange(width)[None, :]
    keep, keep_v = t <= last[:, None], t <= last[:, None] + 1  # m_t and m^V_t
    penalty = args.missing_eos_penalty or 0.0
    scores = roll["scores"].double() - penalty * (~(post == eos_id).any(1)).double()
    logp = torch.where(keep, roll["logprobs"].double(), 1.0)
    ref = torch.where(keep, roll["ref_logprobs"].double(), 1.0)
    if args.kl_estimator == "k1":
        kl = logp - ref
    else:
        u = torch.exp(ref - logp)
        kl = (u - 1) - torch.log(u)
    rewards = -args.kl_coef * kl
    rewards[torch.arange(rows), torch.clamp(last + 1, max=width - 1)] += scores
    if args.whiten_rewards:
        mean, var = rewards[keep_v].mean(), rewards[keep_v].var()  # var: Bessel-corrected
        rewards = torch.where(keep_v, (rewards - mean) / torch.sqrt(var + 1e-8) + mean, 0.0)
    values = torch.where(keep_v, roll["values"].double(), 0.0)
    deltas = rewards + args.gamma * torch.cat([values[:, 1:], torch.zeros(rows, 1)], 1) - values
    discount = args.gamma * args.lam
    advantages = torch.stack(
        [sum(discount**k * deltas[:, s + k] for k in range(width - s)) for s in range(width)], 1
    )
    returns = advantages + values
    mean, var = advantages[keep].mean(), advantages[keep].var()
    advantages = torch.where(keep, (advantages - mean) / torch.sqrt(var + 1e-8), 0.0)
    return {
        "keep": keep,
        "scores": scores,
        "kl": kl,
        "logprobs": logp,
        "values": values,
        "returns": returns,
        "advantages": advantages,
    }


def _rows_of(micro_batch, roll) -> list[int]:
    """Which rollout rows a shuffled micro-batch holds."""
    return [
        next(
            i
            for i in range(len(roll["query_responses"]))
            if torch.equal(q, roll["query_responses"][i])
        )
        for q in micro_batch["query_responses"]
    ]


@pytest.mark.math
@pytest.mark.parametrize("options", list(OPTIONS), ids=[f"ppo-{o}" for o in OPTIONS])
def test_ppo_options_through_the_training_loop(tiny, tmp_path, options):
    """`missing_eos_penalty`, `kl_estimator`, `kl_coef`, `whiten_rewards`, `gamma`, `lam`: the
    advantages, returns, values and old log-probabilities of every micro-batch equal the page's
    equations applied to the rollout; `objective/scores` and `objective/kl` are the penalised
    scores and the chosen estimator's summed KL; each backward pass gets
    L^CLIP + vf_coef L^V; `num_ppo_epochs` passes use every rollout row once each."""
    trainer, record = one_update(tiny, tmp_path, **OPTIONS[options])
    args, tok, roll = trainer.args, trainer.processing_class, record["roll"]
    expected = expected_from_rollout(roll, args, tok.eos_token_id, tok.pad_token_id)
    keep = expected["keep"]
    assert 0 < keep.sum() < keep.numel()  # ragged lengths: some responses stopped early
    assert (expected["kl"][keep].abs() > 1e-6).any()  # the KL is not 0
    if args.missing_eos_penalty:
        assert 0 < (expected["scores"] < roll["scores"].double() - 0.5).sum() < len(keep)

    assert len(record["micro"]) == args.num_ppo_epochs * 2
    for epoch in range(args.num_ppo_epochs):
        seen = []
        for micro_batch, _ in record["micro"][2 * epoch : 2 * epoch + 2]:
            rows = _rows_of(micro_batch, roll)
            seen += rows
            for name in ("advantages", "returns", "values", "logprobs"):
                torch.testing.assert_close(
                    micro_batch[name].double(), expected[name][rows], atol=2e-5, rtol=1e-5
                )
        assert sorted(seen) == list(range(len(keep)))  # each row once per epoch

    log = trainer.state.log_history[0]
    assert log["objective/scores"] == pytest.approx(expected["scores"].mean().item(), abs=1e-5)
    assert log["objective/kl"] == pytest.approx(expected["kl"].sum(1).mean().item(), abs=1e-5)
    for loss, (_, stats) in zip(record["backward"], record["micro"], strict=True):
        combined = stats["pg_loss"] + args.vf_coef * stats["vf_loss"]
        torch.testing.assert_close(loss, combined, atol=1e-6, rtol=1e-6)


@pytest.mark.math
def test_ppo_approxkl_and_ratio_are_unmasked_means_the_loss_is_masked(tiny, tmp_path):
    """After one update, one more micro-batch with old log-probabilities moved away from the
    current ones: `approxkl` = ½ mean of (log ρ)² over every response position, padding
    included (where both log-probabilities are the placeholder 1.0, so log ρ = 0), the `ratio`
    statistic likewise; the policy loss is the mean of the clipped surrogate over kept tokens."""
    trainer, record = one_update(tiny, tmp_path, eos_boost=6.0, **OPTIONS["defaults"])
    args, pad_id = trainer.args, trainer.processing_class.pad_token_id
    context = record["roll"]["context_length"]
    micro_batch = dict(record["micro"][0][0])
    keep = ~micro_batch["padding_mask"]
    assert keep.float().mean() < 0.8  # enough padding for the two means to differ
    gen = torch.Generator().manual_seed(0)
    old = micro_batch["logprobs"] + 0.3 * torch.randn(keep.shape, generator=gen) * keep
    micro_batch["logprobs"] = old

    # log pi_theta of the responses, at the sampling temperature, from a forward pass of our own.
    policy = trainer.accelerator.unwrap_model(trainer.model).policy
    ids = micro_batch["query_responses"]
    attention = ids != pad_id
    with torch.no_grad():
        logits = policy(
            input_ids=ids.masked_fill(~attention, 0),
            attention_mask=attention,
            position_ids=(attention.cumsum(1) - 1).clamp(min=0),
        ).logits[:, context - 1 : -1] / (args.temperature + 1e-7)
    new = torch.log_softmax(logits, -1).gather(-1, micro_batch["responses"][..., None])[..., 0]
    new = torch.where(keep, new, 1.0)
    stats = trainer.optimisation_step(micro_batch, context)

    log_ratio = new - old
    torch.testing.assert_close(stats["approxkl"], 0.5 * (log_ratio**2).mean(), **SMALL)
    masked = 0.5 * (log_ratio[keep] ** 2).mean()
    assert abs(masked - stats["approxkl"]) > 0.1 * masked  # not the mean over kept tokens
    ratio = log_ratio.exp()
    torch.testing.assert_close(stats["ratio"], ratio.mean(), **SMALL)
    a = micro_batch["advantages"]
    surrogate = torch.max(-a * ratio, -a * ratio.clamp(1 - args.cliprange, 1 + args.cliprange))
    torch.testing.assert_close(stats["pg_loss"], surrogate[keep].mean(), **SMALL)


SMALL = {"atol": 1e-5, "rtol": 1e-4}
