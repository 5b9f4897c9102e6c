"""XPO math: each equation of reference_guides/xpo.md, computed independently in torch, equals
what our `annotated_trl.trainers.xpo` computes, on fixed inputs.

The trainer is real (tiny policy, frozen copy, `tiny/reward`), built once and never trained;
the loss and the scores are called on hand-made tensors.
"""

import math

import pytest
import torch
from support.online_pair import build_trainer, check_eos_penalty_on_completion_only

from annotated_trl.trainers.online_pair import value_for_epoch
from annotated_trl.trainers.xpo import XPOConfig, XPOTrainer

BETA, ALPHA = 0.2, 0.05
# Sequence log-probs of 3 pairs: pi(y), pi(y~), pi_ref(y), pi_ref(y~); y the policy's sample,
# y~ the reference's. Pair 1: the policy's sample wins; pair 2 the reference's; pair 3 a tie.
POLICY_ON_OWN = torch.tensor([-10.0, -12.0, -8.0])
POLICY_ON_REF = torch.tensor([-11.0, -9.0, -14.0])
REF_ON_OWN = torch.tensor([-10.5, -11.0, -9.0])
REF_ON_REF = torch.tensor([-10.0, -9.5, -13.0])
SCORES, REF_SCORES = torch.tensor([1.0, -0.5, 0.2]), torch.tensor([0.0, 0.5, 0.2])


def independent_h():
    """h = log pi(y_w)/pi_ref(y_w) - log pi(y_l)/pi_ref(y_l), row by row, ties to the policy."""
    rows = []
    for i in range(3):
        own = POLICY_ON_OWN[i].item() - REF_ON_OWN[i].item()
        ref = POLICY_ON_REF[i].item() - REF_ON_REF[i].item()
        rows.append(own - ref if SCORES[i] >= REF_SCORES[i] else ref - own)
    return torch.tensor(rows)


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    out = tmp_path_factory.mktemp("xpo-math")
    return build_trainer(tiny, out, XPOConfig, XPOTrainer, beta=BETA, alpha=ALPHA)


def losses(trainer, loss_type):
    trainer.args.loss_type = loss_type
    args = (POLICY_ON_OWN, POLICY_ON_REF, REF_ON_OWN, REF_ON_REF, SCORES >= REF_SCORES)
    return trainer.xpo_loss(*args)


@pytest.mark.math
def test_xpo_sigmoid_loss(trainer):
    """(1) DPO: -log sigma(beta h) = log(1 + exp(-beta h))."""
    dpo, _, chosen, rejected = losses(trainer, "sigmoid")
    h = independent_h()
    torch.testing.assert_close(dpo, torch.tensor([math.log1p(math.exp(-BETA * v)) for v in h]))
    torch.testing.assert_close(chosen - rejected, h)


@pytest.mark.math
def test_xpo_ipo_loss(trainer):
    """(2) IPO: (h - 1 / (2 beta))^2."""
    dpo, _, _, _ = losses(trainer, "ipo")
    torch.testing.assert_close(dpo, (independent_h() - 1 / (2 * BETA)) ** 2)


@pytest.mark.math
def test_xpo_exploration_term(trainer):
    """(3) alpha log pi(y~ | x) on the reference's sample, whichever sample won."""
    _, exploration, _, _ = losses(trainer, "sigmoid")
    torch.testing.assert_close(exploration, ALPHA * POLICY_ON_REF)


@pytest.mark.math
def test_xpo_exploration_lowers_the_reference_sample(trainer):
    """(4) d loss / d log pi(y~) = d DPO / d log pi(y~) + alpha: the bonus adds alpha > 0, so a
    gradient step moves probability away from what the reference would say."""
    trainer.args.loss_type = "sigmoid"
    policy_on_ref = POLICY_ON_REF.clone().requires_grad_()
    wins = SCORES >= REF_SCORES
    dpo, exploration, _, _ = trainer.xpo_loss(
        POLICY_ON_OWN, policy_on_ref, REF_ON_OWN, REF_ON_REF, wins
    )
    grad_total = torch.autograd.grad((dpo + exploration).sum(), policy_on_ref, retain_graph=True)
    grad_dpo = torch.autograd.grad(dpo.sum(), policy_on_ref)[0]
    torch.testing.assert_close(grad_total[0] - grad_dpo, torch.full((3,), ALPHA))
    # DPO's own push on y~: down when it lost (pair 1), up when it won (pair 2).
    assert grad_dpo[0] > 0 > grad_dpo[1]


@pytest.mark.math
def test_xpo_bonus_is_optimism(trainer):
    """(5) With pi = pi_r, the KL-optimal policy of a reward r (pi_r ~ pi_ref exp(r / beta)),
    the mean bonus over y~ ~ pi_ref is
    alpha E_ref[log pi_r(y~)] = (alpha / beta) (E_ref[r] - J*(r)) + alpha E_ref[log pi_ref],
    with J*(r) = max_pi E_pi[r] - beta KL(pi || pi_ref) = beta log E_ref[exp(r / beta)].
    Minimising it favours rewards whose best policy beats the reference by the most.
    Exact, over a vocabulary of 7 one-token completions."""
    torch.manual_seed(2)
    reward, ref_logp = torch.randn(7), torch.randn(7).log_softmax(0)
    policy_logp = (ref_logp + reward / BETA).log_softmax(0)  # pi_r
    trainer.args.loss_type = "sigmoid"
    zeros, wins = torch.zeros(7), torch.ones(7, dtype=torch.bool)
    _, exploration, _, _ = trainer.xpo_loss(zeros, policy_logp, zeros, ref_logp, wins)
    mean_bonus = (ref_logp.exp() * exploration).sum()

    ref = ref_logp.exp()
    best_value = BETA * torch.log((ref * (reward / BETA).exp()).sum())
    pi_r = policy_logp.exp()  # J* is attained by pi_r: check it, then use the closed form
    value_of_pi_r = (pi_r * reward).sum() - BETA * (pi_r * (policy_logp - ref_logp)).sum()
    torch.testing.assert_close(value_of_pi_r, best_value)
    expected = ALPHA / BETA * ((ref * reward).sum() - best_value) + ALPHA * (ref * ref_logp).sum()
    torch.testing.assert_close(mean_bonus, expected)


@pytest.mark.math
def test_xpo_alpha_per_epoch():
    """(6) alpha in epoch k is the list's k-th entry, then its last one."""
    assert [value_for_epoch([1e-5, 1e-6], e) for e in (0.0, 0.9, 1.0, 5.5)] == [
        1e-5,
        1e-5,
        1e-6,
        1e-6,
    ]


@pytest.mark.math
def test_xpo_eos_penalty_on_completion_only(trainer, tiny):
    """(7) r~(x, y) = r(x, y) - c [no EOS in y], EOS looked for in the completion y only."""
    got, expected = check_eos_penalty_on_completion_only(trainer, tiny)
    assert got == pytest.approx(expected, abs=1e-5)
