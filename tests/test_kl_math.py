"""The equations of reference_guides/kl.md, by exact enumeration over a small vocabulary.

Every expectation here is a sum over all tokens weighted by their probability, not a sample
mean: what the page states holds exactly, and a wrong statement fails by more than rounding.
Where TRL uses an estimator, the method's own math test checks TRL's code against these
formulas (the page names each test).
"""

import pytest
import torch

pytestmark = pytest.mark.math

V = 7  # vocabulary size
TOL = {"atol": 1e-10, "rtol": 1e-9}


@pytest.fixture
def logits():
    """The policy's logits (the parameters) and the reference's, far enough apart that the
    estimators differ from one another."""
    gen = torch.Generator().manual_seed(0)
    theta = torch.randn(V, generator=gen, dtype=torch.float64).requires_grad_()
    ref = torch.randn(V, generator=gen, dtype=torch.float64)
    return theta, ref


def log_probs(theta, ref):
    return torch.log_softmax(theta, -1), torch.log_softmax(ref, -1)


def k1(log_ratio):
    return log_ratio


def k2(log_ratio):
    return log_ratio**2 / 2


def k3(log_ratio):
    return torch.exp(-log_ratio) - 1 + log_ratio  # (r - 1) - log r, with r = ref / pi


ESTIMATORS = {"k1": k1, "k2": k2, "k3": k3}


def forward_kl(logp, logq):
    return (logp.exp() * (logp - logq)).sum()


def reverse_kl(logp, logq):
    return (logq.exp() * (logq - logp)).sum()


def grad(value, theta):
    (g,) = torch.autograd.grad(value, theta, retain_graph=True)
    return g


def in_the_loss(k, theta, ref):
    """E over y ~ pi of the gradient of k(y): what backpropagating a sampled batch's mean of
    k gives on average (the sampling distribution is not differentiated)."""
    logp, logq = log_probs(theta, ref)
    return grad((logp.exp().detach() * k(logp - logq)).sum(), theta)


def in_the_reward(k, theta, ref):
    """E over y ~ pi of k(y) times the score, k held constant: the gradient REINFORCE takes
    when k is subtracted from the reward (the sign: of the penalty, to be minimised)."""
    logp, logq = log_probs(theta, ref)
    return grad((logp.exp().detach() * k(logp - logq).detach() * logp).sum(), theta)


@pytest.mark.parametrize("name", ["k1", "k3"])
def test_kl_k1_and_k3_are_unbiased(logits, name):
    logp, logq = log_probs(*logits)
    expectation = (logp.exp() * ESTIMATORS[name](logp - logq)).sum()
    torch.testing.assert_close(expectation, forward_kl(logp, logq), **TOL)


def test_kl_k2_is_biased_k3_never_negative_k1_can_be(logits):
    logp, logq = log_probs(*logits)
    log_ratio = logp - logq
    assert not torch.isclose((logp.exp() * k2(log_ratio)).sum(), forward_kl(logp, logq))
    assert (k3(log_ratio) >= 0).all() and (k1(log_ratio) < 0).any()


def test_kl_k1_in_the_loss_has_no_gradient(logits):
    torch.testing.assert_close(in_the_loss(k1, *logits), torch.zeros(V, dtype=torch.float64))


def test_kl_k2_in_the_loss_is_the_gradient_of_forward_kl(logits):
    logp, logq = log_probs(*logits)
    torch.testing.assert_close(in_the_loss(k2, *logits), grad(forward_kl(logp, logq), logits[0]))


def test_kl_k3_in_the_loss_is_the_gradient_of_reverse_kl(logits):
    logp, logq = log_probs(*logits)
    torch.testing.assert_close(in_the_loss(k3, *logits), grad(reverse_kl(logp, logq), logits[0]))


def test_kl_k3_times_the_ratio_in_the_loss_is_the_gradient_of_forward_kl(logits):
    """GRPO's `use_bias_correction_kl`: rho k3 with rho = pi / sg(pi) (1 in value)."""
    theta, ref = logits
    logp, logq = log_probs(theta, ref)
    rho = torch.exp(logp - logp.detach())
    weighted = (logp.exp().detach() * rho * k3(logp - logq)).sum()
    torch.testing.assert_close(grad(weighted, theta), grad(forward_kl(logp, logq), theta))


def test_kl_k1_in_the_reward_is_the_gradient_of_forward_kl(logits):
    logp, logq = log_probs(*logits)
    torch.testing.assert_close(in_the_reward(k1, *logits), grad(forward_kl(logp, logq), logits[0]))


def test_kl_k3_in_the_reward_is_forward_minus_reverse(logits):
    """The full gradient of E[k3] (= forward KL) splits into the score part (k3 in the reward)
    and the pathwise part (k3 in the loss, = reverse KL's gradient)."""
    logp, logq = log_probs(*logits)
    expected = grad(forward_kl(logp, logq), logits[0]) - grad(reverse_kl(logp, logq), logits[0])
    torch.testing.assert_close(in_the_reward(k3, *logits), expected)
    assert not torch.allclose(expected, grad(forward_kl(logp, logq), logits[0]))


def test_kl_per_token_k1_sums_to_the_sequence_kl():
    """Two-token sequences: the sum over tokens of k1, in expectation over sequences from pi, is
    the KL between the two sequence distributions (the chain rule). RLOO and PPO sum per-token
    estimates over the completion."""
    gen = torch.Generator().manual_seed(1)
    first = torch.randn(2, V, generator=gen, dtype=torch.float64).log_softmax(-1)  # pi, ref
    second = torch.randn(2, V, V, generator=gen, dtype=torch.float64).log_softmax(-1)
    (p1, q1), (p2, q2) = first, second  # p2[a, b] = log pi(y2 = b | y1 = a)
    joint_p, joint_q = p1[:, None] + p2, q1[:, None] + q2
    summed_k1 = (p1 - q1)[:, None] + (p2 - q2)
    expectation = (joint_p.exp() * summed_k1).sum()
    torch.testing.assert_close(expectation, (joint_p.exp() * (joint_p - joint_q)).sum(), **TOL)
