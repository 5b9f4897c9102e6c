"""The divergences SDPO and SDFT share, computed independently and compared with TRL's code.

`trl.experimental.sdpo.loss_utils` and `trl.experimental.sdft.loss_utils` are two copies of the
same functions (TRL 1.16.0); every test runs on both, so a change to one copy shows here. The
equations are (3)-(6) of reference_guides/sdft.md and (1)-(4) of reference_guides/sdpo.md:
the generalised JSD over the full vocabulary and over the student's top-k tokens (renormalised,
or with a tail bucket), the sampled-token reverse-KL surrogate, and the importance-sampling clip.
The trainers' own use of them (which tokens, which average, which teacher) is in
tests/test_sdpo_math.py and tests/test_sdft_math.py.
"""

import importlib

import pytest
import torch

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
B, T, V = 3, 6, 23  # sequences, completion positions, vocabulary


@pytest.fixture(params=["sdpo", "sdft"])
def losses(request):
    return importlib.import_module(f"trl.experimental.{request.param}.loss_utils")


def kl(p, q):
    """KL(p || q) over the last axis, from probabilities."""
    return (p * (p.log() - q.log())).sum(-1)


def jsd(p_s, p_t, alpha):
    """The generalised JSD: alpha 0 forward KL(T || S), 1 reverse KL(S || T), else both to the
    mixture m = alpha p_T + (1 - alpha) p_S."""
    if alpha == 0:
        return kl(p_t, p_s)
    if alpha == 1:
        return kl(p_s, p_t)
    m = alpha * p_t + (1 - alpha) * p_s
    return alpha * kl(p_t, m) + (1 - alpha) * kl(p_s, m)


def logits(seed, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, V, generator=g) * scale


@pytest.mark.parametrize("alpha", [0.0, 0.3, 0.5, 1.0])
def test_full_vocabulary_divergence(losses, alpha):
    s, t = logits(0), logits(1)
    ours = jsd(s.softmax(-1), t.softmax(-1), alpha)
    theirs = losses.compute_full_logit_self_distillation_loss(s, t, distillation_alpha=alpha)
    torch.testing.assert_close(theirs, ours, **TOL)
    # alpha 0 and 1 are different divergences: a formula with the two swapped fails here.
    p_s, p_t = s.softmax(-1), t.softmax(-1)
    assert not torch.allclose(jsd(p_s, p_t, 0.0), jsd(p_s, p_t, 1.0))


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("add_tail", [False, True])
def test_topk_divergence_on_the_students_support(losses, alpha, add_tail):
    s, t = logits(2), logits(3)
    k = 5
    p_s, p_t = s.softmax(-1), t.softmax(-1)
    index = p_s.topk(k, dim=-1).indices  # the *student's* k most likely tokens
    q_s, q_t = p_s.gather(-1, index), p_t.gather(-1, index)
    if add_tail:  # one more outcome holding the mass outside the k
        q_s = torch.cat([q_s, 1 - q_s.sum(-1, keepdim=True)], -1)
        q_t = torch.cat([q_t, 1 - q_t.sum(-1, keepdim=True)], -1)
    else:  # renormalised on the k
        q_s, q_t = q_s / q_s.sum(-1, keepdim=True), q_t / q_t.sum(-1, keepdim=True)
    theirs = losses.compute_topk_self_distillation_loss(
        s, t, distillation_topk=k, distillation_alpha=alpha, distillation_add_tail=add_tail
    )
    torch.testing.assert_close(theirs, jsd(q_s, q_t, alpha), **TOL)
    if add_tail and alpha == 1.0:  # merging outcomes cannot raise a KL
        assert (kl(p_s, p_t) >= theirs - 1e-5).all()
    # With k = V it is the full-vocabulary divergence.
    full = losses.compute_topk_self_distillation_loss(
        s, t, distillation_topk=V, distillation_alpha=alpha, distillation_add_tail=False
    )
    torch.testing.assert_close(full, jsd(p_s, p_t, alpha), **TOL)


def test_tail_bucket_sums_to_one(losses):
    s = logits(4).log_softmax(-1)[..., :7]
    bucket = losses.add_tail_bucket(s).exp()
    torch.testing.assert_close(bucket.sum(-1), torch.ones(B, T), **TOL)
    torch.testing.assert_close(bucket[..., -1], 1 - s.exp().sum(-1), **TOL)


def test_sampled_token_surrogate_has_the_reverse_kl_estimators_gradient(losses):
    """Per token: stopgrad(log s(y) - log t(y)) * log s(y). Its value is that product (negative
    where the student is surer of the token than the teacher: not a divergence), and its
    gradient is (log s(y) - log t(y)) * grad log s(y): the score-function gradient of reverse
    KL at the sampled token, with the teacher held fixed."""
    s, t = logits(5).requires_grad_(), logits(6)
    y = torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(7))
    theirs = losses.compute_sampled_token_self_distillation_loss(s, t, y, distillation_alpha=1.0)
    log_s = s.log_softmax(-1).gather(-1, y[..., None])[..., 0]
    log_t = t.log_softmax(-1).gather(-1, y[..., None])[..., 0]
    torch.testing.assert_close(theirs, (log_s - log_t) * log_s, **TOL)
    assert (theirs < 0).any()
    (grad,) = torch.autograd.grad(theirs.sum(), s)
    one_hot = torch.nn.functional.one_hot(y, V).float()
    want = (log_s - log_t).detach()[..., None] * (one_hot - s.softmax(-1).detach())
    torch.testing.assert_close(grad, want, **TOL)
    (not_this,) = torch.autograd.grad(((log_s - log_t) * log_s).sum(), s)  # no stop-gradient
    assert not torch.allclose(grad, not_this)
    with pytest.raises(ValueError, match="alpha=1.0|reverse KL"):
        losses.compute_sampled_token_self_distillation_loss(s, t, y, distillation_alpha=0.5)


def test_importance_sampling_clip(losses):
    """Each token's loss times min(pi_theta(y) / pi_old(y), C), the ratio detached."""
    g = torch.Generator().manual_seed(8)
    per_token = torch.rand(B, T, generator=g).requires_grad_()
    new = torch.randn(B, T, generator=g).requires_grad_()
    old = new.detach() + torch.randn(B, T, generator=g)
    theirs = losses.apply_importance_sampling_clipping(per_token, new, old, clip_coeff=2.0)
    ratio = (new.detach() - old).exp().clamp(max=2.0)
    torch.testing.assert_close(theirs, per_token * ratio, **TOL)
    assert (ratio == 2.0).any() and (ratio > 1.0).any() and (ratio < 1.0).any()
    theirs.sum().backward()
    assert new.grad is None  # no gradient through the ratio
    torch.testing.assert_close(per_token.grad, ratio, **TOL)


def test_divergence_helper_is_kl_div_with_the_right_direction(losses):
    p = logits(9).log_softmax(-1)
    q = logits(10).log_softmax(-1)
    torch.testing.assert_close(losses.compute_divergence(p, q, 0.0), kl(q.exp(), p.exp()), **TOL)
    torch.testing.assert_close(losses.compute_divergence(p, q, 1.0), kl(p.exp(), q.exp()), **TOL)
