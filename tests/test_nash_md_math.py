"""Nash-MD math: each equation of reference_guides/nash_md.md, computed independently in torch,
equals what our `annotated_trl.trainers.nash_md` computes, on fixed inputs.

The trainer is real (tiny policy, frozen copy, `tiny/reward`), built once and never trained;
the loss, the sampler's mixture and the scores are called on hand-made tensors.
"""

import pytest
import torch
from support.online_pair import build_trainer, check_eos_penalty_on_completion_only

from annotated_trl.trainers.nash_md import GeometricMixture, NashMDConfig, NashMDTrainer
from annotated_trl.trainers.online_pair import value_for_epoch

BETA = 0.2


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("nash-md-math")
    return build_trainer(tiny, out, NashMDConfig, NashMDTrainer, beta=BETA)


@pytest.mark.math
def test_nash_md_bradley_terry_preference():
    """(2) P(y > y') = sigma(r(x, y) - r(x, y')) = e^r / (e^r + e^r')."""
    r, r_opponent = torch.tensor([0.3, -1.0, 2.0]), torch.tensor([0.3, 1.0, -0.5])
    expected = r.exp() / (r.exp() + r_opponent.exp())
    got = NashMDTrainer.preference_probability(r, r_opponent)
    torch.testing.assert_close(got, expected)
    assert got[0] == 0.5  # a tie is a coin flip


@pytest.mark.math
@pytest.mark.parametrize("coef", [0.0, 0.3, 1.0], ids=lambda c: f"nash_md-coef-{c}")
def test_nash_md_geometric_mixture(coef):
    """(1) pi_mix(v) = pi(v)^(1 - b) pi_ref(v)^b / Z, computed in probability space."""
    torch.manual_seed(0)
    policy_logits, reference_logits = torch.randn(2, 5, 11), torch.randn(2, 5, 11)
    mixture = GeometricMixture(
        reference=lambda ids, mask: reference_logits,
        prompt_mask=torch.ones(2, 3, dtype=torch.long),
        coef=coef,
    )
    ids = torch.zeros(2, 5, dtype=torch.long)  # 3 prompt tokens + 2 sampled so far
    log_mix = mixture(ids, scores=policy_logits[:, -1])  # generate's logits are the policy's

    p, p_ref = policy_logits[:, -1].softmax(-1), reference_logits[:, -1].softmax(-1)
    unnormalised = p ** (1 - coef) * p_ref**coef
    torch.testing.assert_close(log_mix.exp(), unnormalised / unnormalised.sum(-1, keepdim=True))


@pytest.mark.math
def test_nash_md_mixture_coef_per_epoch():
    """(6) beta_m in epoch k is the list's k-th entry, then its last one."""
    schedule = [0.5, 0.25, 0.1]
    got = [value_for_epoch(schedule, e) for e in (0, 0.5, 1.0, 1.99, 2.0, 7.3)]
    assert got == [0.5, 0.5, 0.25, 0.25, 0.1, 0.1]
    assert value_for_epoch(0.4, 3.2) == 0.4


@pytest.mark.math
def test_nash_md_loss_value(trainer):
    """(4) l = beta sum_t sg(log pi_t - log pi_ref_t) log pi_t - (P - 1/2) sum_t log pi_t."""
    logps = torch.tensor([[-1.0, -2.0, 0.0], [-0.5, -0.25, -3.0]])  # 0 = padding
    ref_logps = torch.tensor([[-1.5, -1.0, 0.0], [-0.5, -1.0, -2.0]])
    probability = torch.tensor([0.8, 0.3])

    expected = [
        BETA * sum((a - b) * a for a, b in zip(row, ref_row, strict=True)) - (p - 0.5) * sum(row)
        for row, ref_row, p in zip(logps.tolist(), ref_logps.tolist(), probability, strict=True)
    ]
    loss, score, kl = trainer.nash_md_loss(logps, ref_logps, probability)
    torch.testing.assert_close(loss, torch.tensor(expected))
    torch.testing.assert_close(score, (probability - 0.5) * logps.sum(1))
    torch.testing.assert_close(kl, (logps - ref_logps).sum(1))


@pytest.mark.math
def test_nash_md_loss_gradient_is_the_mirror_descent_direction(trainer):
    """(5) In expectation over y ~ pi, the loss's gradient is that of the regularised game,
    grad [beta KL(pi || pi_ref) - P(pi > opponent)], with P(pi > opponent) = sum_y pi(y) P(y).

    Exact expectation over a one-token vocabulary of 6 (no sampling noise)."""
    torch.manual_seed(1)
    theta = torch.randn(6, requires_grad=True)
    ref_logp = torch.randn(6).log_softmax(0)
    win = torch.rand(6)  # P(y > y') averaged over the opponent's y', for each y

    logp = theta.log_softmax(0)
    losses, _, _ = trainer.nash_md_loss(logp[:, None], ref_logp[:, None], win)
    estimate = torch.autograd.grad((logp.exp().detach() * losses).sum(), theta)[0]

    pi = theta.softmax(0)
    objective = BETA * (pi * (pi.log() - ref_logp)).sum() - (pi * win).sum()
    exact = torch.autograd.grad(objective, theta)[0]
    torch.testing.assert_close(estimate, exact)


@pytest.mark.math
def test_nash_md_eos_penalty_on_completion_only(trainer, tiny):
    """(3) r~(x, y) = r(x, y) - c [no EOS in y], EOS looked for in the completion y only."""
    got, expected = check_eos_penalty_on_completion_only(trainer, tiny)
    assert got == pytest.approx(expected, abs=1e-5)


@pytest.mark.math
def test_nash_md_kl_gradient_is_biased_beyond_one_token(trainer):
    """(5) for two-token completions, exactly over all 3 x 3 sequences of a 3-token vocabulary.

    The preference part is still exact, but pairing each token's log-ratio with its own log-prob
    drops the terms grad log pi(y_s) * sum_{t > s} (log pi_t - log pi_ref_t) (the KL still to
    come after token s), so the KL part is biased: the expected gradient equals the true one
    minus beta E[sum_s grad log pi_s * sum_{t>s} d_t], and the two differ."""
    torch.manual_seed(2)
    vocab = 3
    first = torch.randn(vocab, requires_grad=True)  # logits of y_1
    second = torch.randn(vocab, vocab, requires_grad=True)  # logits of y_2 given y_1
    ref_first = torch.randn(vocab).log_softmax(0)
    ref_second = torch.randn(vocab, vocab).log_softmax(1)
    win = torch.rand(vocab * vocab)  # P(y > y') for each sequence y = (a, b)

    a, b = torch.arange(vocab).repeat_interleave(vocab), torch.arange(vocab).repeat(vocab)
    logps = torch.stack([first.log_softmax(0)[a], second.log_softmax(1)[a, b]], dim=1)
    ref_logps = torch.stack([ref_first[a], ref_second[a, b]], dim=1)
    seq_prob = logps.sum(1).exp()
    params = [first, second]

    def grad(f):
        return torch.cat([g.flatten() for g in torch.autograd.grad(f, params, retain_graph=True)])

    losses, _, _ = trainer.nash_md_loss(logps, ref_logps, win)
    estimate = grad((seq_prob.detach() * losses).sum())
    kl = (seq_prob * (logps.sum(1) - ref_logps.sum(1))).sum()
    exact = grad(BETA * kl - (seq_prob * win).sum())
    kl_to_come = (logps - ref_logps).detach()[:, 1]  # sum over t > 1 of d_t; none after t = 2
    dropped = grad((seq_prob.detach() * kl_to_come * logps[:, 0]).sum())
    torch.testing.assert_close(estimate, exact - BETA * dropped)
    assert (estimate - exact).abs().max() > 1e-3
