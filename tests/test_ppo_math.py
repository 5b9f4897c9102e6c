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
