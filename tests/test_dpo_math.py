"""The equations of reference_guides/dpo.md, computed independently and compared with TRL.

`DPOTrainer` (TRL 1.16.0) computes every loss inside `compute_loss`, from one forward pass of a
batch, so each test builds a real trainer on the tiny offline policy and takes a batch that the
trainer itself tokenised and collated. The reference log-probs are the batch's
`ref_chosen_logps` / `ref_rejected_logps` columns (the `precompute_ref_log_probs=True` path),
which we overwrite with fixed values, so that every implicit reward is non-zero and known. The
policy's sequence log-probs are recomputed here from the full logits (TRL's fused LM head never
builds them), and each `loss_type` is written out below in plain torch from its paper's formula.
"""

import math

import pytest
import torch
import torch.nn.functional as F
from datasets import load_dataset
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
from trl import DPOConfig, DPOTrainer

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
BETA = 0.1
EPS = 0.1  # label_smoothing where a loss uses it
TAU = 0.05  # discopop_tau, DPOConfig's default


def make_trainer(tiny, tmp_path, rows=8, trainer_class=DPOTrainer, callbacks=None, **overrides):
    dataset = load_dataset("json", data_files=str(tiny.data / "preference" / "train.jsonl"))
    settings = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "report_to": "none",
        "max_length": 64,
        "per_device_train_batch_size": rows,
        "beta": BETA,
        "seed": 0,
        "disable_tqdm": True,
    }
    settings.update(overrides)
    trainer = trainer_class(
        model=str(tiny.policy),
        args=DPOConfig(**settings),
        train_dataset=dataset["train"].select(range(rows)),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
        callbacks=callbacks,
    )
    trainer.model.train()  # metrics are filed under "train" only in training mode
    return trainer


def first_batch(trainer) -> dict:
    return dict(next(iter(trainer.get_train_dataloader())))


def token_logps(model, batch) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token log-probs of the completion tokens, and their mask, from the full logits."""
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    # Shift by one: the logits at position t predict the token at position t + 1.
    log_probs = logits[:, :-1].log_softmax(-1)
    targets = batch["input_ids"][:, 1:]
    mask = batch["completion_mask"][:, 1:].float()
    per_token = log_probs.gather(-1, targets[..., None])[..., 0] * mask
    return per_token, mask


def sequence_logps(model, batch) -> torch.Tensor:
    """log pi(y | x) = sum of the completion tokens' log-probs; the batch is [chosen; rejected]."""
    per_token, _ = token_logps(model, batch)
    return per_token.sum(-1)


# Fixed offsets: log pi_theta - log pi_ref for each chosen and rejected completion of the batch.
# Signs and sizes are mixed so that every loss is away from its flat or saturated regions and
# `aot`'s sorting really permutes.
CHOSEN_LOGRATIOS = torch.tensor([2.0, -1.5, 0.5, 6.0, -4.0, 1.0, 3.0, -0.5])
REJECTED_LOGRATIOS = torch.tensor([-1.0, 2.5, 0.0, -3.0, 1.5, 4.0, -2.0, 0.25])


def with_fixed_reference(trainer, batch) -> tuple[dict, dict]:
    """Put reference log-probs in the batch so that the log-ratios are the fixed ones above."""
    with torch.no_grad():
        logps = sequence_logps(trainer.model, batch)
    chosen, rejected = logps.chunk(2)
    batch = {
        **batch,
        "ref_chosen_logps": chosen - CHOSEN_LOGRATIOS,
        "ref_rejected_logps": rejected - REJECTED_LOGRATIOS,
    }
    lengths = batch["completion_mask"].sum(-1).float()
    parts = {
        "pi_w": chosen,
        "pi_l": rejected,
        "ref_w": batch["ref_chosen_logps"],
        "ref_l": batch["ref_rejected_logps"],
        "len_w": lengths.chunk(2)[0],
        "len_l": lengths.chunk(2)[1],
    }
    return batch, parts


# ---------------------------------------------------------------------------------------------
# Every loss_type, written from its formula
# ---------------------------------------------------------------------------------------------


def expected_loss(loss_type: str, p: dict, sft_nll: torch.Tensor) -> torch.Tensor:
    b = BETA
    d_w, d_l = p["pi_w"] - p["ref_w"], p["pi_l"] - p["ref_l"]  # log-ratios
    u = b * (d_w - d_l)  # the DPO logit: difference of implicit rewards
    logsig = F.logsigmoid
    if loss_type == "sigmoid":  # DPO
        per_pair = -logsig(u)
    elif loss_type == "hinge":  # SLiC
        per_pair = torch.relu(1 - u)
    elif loss_type == "ipo":  # squared loss to 1/(2 tau), on per-token log-ratios
        per_pair = (d_w / p["len_w"] - d_l / p["len_l"] - 1 / (2 * b)) ** 2
    elif loss_type == "exo_pair":  # KL(q_theta || [1 - eps, eps]) over the pair
        q_w, q_l = torch.sigmoid(u), torch.sigmoid(-u)
        per_pair = q_w * (logsig(u) - math.log(1 - EPS)) + q_l * (logsig(-u) - math.log(EPS))
    elif loss_type == "nca_pair":
        r_w, r_l = b * d_w, b * d_l
        per_pair = -logsig(r_w) - 0.5 * logsig(-r_w) - 0.5 * logsig(-r_l)
    elif loss_type == "robust":  # unbiased under label flips with probability eps
        per_pair = (-(1 - EPS) * logsig(u) + EPS * logsig(-u)) / (1 - 2 * EPS)
    elif loss_type == "bco_pair":
        per_pair = -logsig(b * d_w) - logsig(-b * d_l)
    elif loss_type == "sppo_hard":
        per_pair = (d_w - 1 / (2 * b)) ** 2 + (d_l + 1 / (2 * b)) ** 2
    elif loss_type == "aot":  # sorted policy margins against sorted reference margins
        delta = (
            torch.sort(p["pi_w"] - p["pi_l"]).values - torch.sort(p["ref_w"] - p["ref_l"]).values
        )
        per_pair = -(1 - EPS) * logsig(b * delta) - EPS * logsig(-b * delta)
    elif loss_type == "aot_unpaired":  # sorted chosen log-ratios against sorted rejected ones
        delta = torch.sort(d_w).values - torch.sort(d_l).values
        per_pair = -(1 - EPS) * logsig(b * delta) - EPS * logsig(-b * delta)
    elif loss_type == "apo_zero":
        per_pair = (1 - torch.sigmoid(b * d_w)) + torch.sigmoid(b * d_l)
    elif loss_type == "apo_down":
        per_pair = torch.sigmoid(b * d_w) + (1 - torch.sigmoid(u))
    elif loss_type == "discopop":  # log-ratio modulated blend of logistic and exponential
        mix = torch.sigmoid(u / TAU)
        per_pair = (1 - mix) * -logsig(u) + mix * torch.exp(-u)
    elif loss_type == "sft":  # NLL of the chosen tokens, token-level mean over the batch
        return sft_nll
    elif loss_type == "sigmoid_norm":  # DPO on per-token (length-normalised) log-ratios
        per_pair = -logsig(b * (d_w / p["len_w"] - d_l / p["len_l"]))
    else:
        raise AssertionError(loss_type)
    return per_pair.mean()


def chosen_token_nll(model, batch) -> torch.Tensor:
    per_token, mask = token_logps(model, batch)
    chosen_tokens, chosen_mask = per_token.chunk(2)[0], mask.chunk(2)[0]
    return -chosen_tokens.sum() / chosen_mask.sum()


# All loss types that DPOConfig documents and DPOTrainer._compute_loss implements in TRL 1.16.0.
LOSS_TYPES = [
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
]
USES_LABEL_SMOOTHING = {"exo_pair", "robust", "aot", "aot_unpaired"}


def test_dpo_loss_type_list_is_complete():
    """The list above is exactly the set of names the installed trainer's loss branches on."""
    import inspect
    import re

    source = inspect.getsource(DPOTrainer._compute_loss)
    assert set(re.findall(r'loss_type == "(\w+)"', source)) == set(LOSS_TYPES)


@pytest.fixture(scope="module")
def policy_batch(tiny, tmp_path_factory):
    """One trainer per module for the policy side; per-loss trainers reuse its batch."""
    trainer = make_trainer(tiny, tmp_path_factory.mktemp("dpo_math"), precompute_ref_log_probs=True)
    return trainer, first_batch(trainer)


@pytest.mark.parametrize("loss_type", LOSS_TYPES, ids=[f"dpo-{t}" for t in LOSS_TYPES])
def test_dpo_loss_type_matches_formula(tiny, tmp_path, loss_type):
    extra = {"label_smoothing": EPS} if loss_type in USES_LABEL_SMOOTHING else {}
    trainer = make_trainer(
        tiny, tmp_path, loss_type=loss_type, precompute_ref_log_probs=True, **extra
    )
    assert trainer.ref_model is None  # precompute: no reference model kept in memory
    batch, parts = with_fixed_reference(trainer, first_batch(trainer))
    loss = trainer.compute_loss(trainer.model, batch).detach()
    with torch.no_grad():
        expected = expected_loss(loss_type, parts, chosen_token_nll(trainer.model, batch))
    torch.testing.assert_close(loss, expected, **TOL)


def test_dpo_loss_weights_combine_as_a_weighted_sum(tiny, tmp_path):
    """MPO-style mixture: loss_type=[sigmoid, bco_pair, sft] with loss_weights=[0.8, 0.2, 1.0]."""
    types, weights = ["sigmoid", "bco_pair", "sft"], [0.8, 0.2, 1.0]
    trainer = make_trainer(
        tiny, tmp_path, loss_type=types, loss_weights=weights, precompute_ref_log_probs=True
    )
    batch, parts = with_fixed_reference(trainer, first_batch(trainer))
    loss = trainer.compute_loss(trainer.model, batch).detach()
    with torch.no_grad():
        nll = chosen_token_nll(trainer.model, batch)
        terms = [expected_loss(t, parts, nll) for t in types]
    torch.testing.assert_close(loss, sum(w * t for w, t in zip(weights, terms, strict=True)), **TOL)
    # And a mismatched number of weights is refused when the config is built.
    with pytest.raises(ValueError, match="same length"):
        DPOConfig(output_dir=str(tmp_path), loss_type=types, loss_weights=[1.0, 1.0])


def test_dpo_exo_pair_requires_label_smoothing(tiny, tmp_path):
    with pytest.raises(ValueError, match="Label smoothing must be greater than 0.0"):
        make_trainer(tiny, tmp_path, loss_type="exo_pair", precompute_ref_log_probs=True)


# ---------------------------------------------------------------------------------------------
# Sequence log-probs, implicit rewards and metrics
# ---------------------------------------------------------------------------------------------


def test_dpo_sequence_logp_is_sum_of_masked_token_logps(policy_batch):
    """`logps/chosen|rejected` are batch means of TRL's log pi(y|x): our masked token sums."""
    trainer, batch = policy_batch
    batch, parts = with_fixed_reference(trainer, batch)
    trainer._metrics["train"].clear()
    trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["logps/chosen"] == pytest.approx(parts["pi_w"].mean().item(), rel=1e-5)
    assert metrics["logps/rejected"] == pytest.approx(parts["pi_l"].mean().item(), rel=1e-5)
    # Only completion tokens count: the prompt is in the sequence but not in the sum.
    assert (batch["completion_mask"].sum(-1) < batch["attention_mask"].sum(-1)).all()


def test_dpo_reward_metrics_are_beta_times_log_ratios(policy_batch):
    trainer, batch = policy_batch
    batch, parts = with_fixed_reference(trainer, batch)
    trainer._metrics["train"].clear()
    trainer.compute_loss(trainer.model, batch)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    r_w, r_l = BETA * CHOSEN_LOGRATIOS, BETA * REJECTED_LOGRATIOS
    assert metrics["rewards/chosen"] == pytest.approx(r_w.mean().item(), abs=1e-5)
    assert metrics["rewards/rejected"] == pytest.approx(r_l.mean().item(), abs=1e-5)
    assert metrics["rewards/margins"] == pytest.approx((r_w - r_l).mean().item(), abs=1e-5)
    assert metrics["rewards/accuracies"] == pytest.approx((r_w > r_l).float().mean().item())


def test_dpo_untrained_policy_equals_reference_loss_is_ln2(tiny, tmp_path):
    """With the default separate reference copy, at step 0 policy = reference: every implicit
    reward is 0, the loss is ln 2, and accuracy counts no strict win."""
    trainer = make_trainer(tiny, tmp_path)
    assert trainer.ref_model is not None and trainer.ref_model is not trainer.model
    loss = trainer.compute_loss(trainer.model, first_batch(trainer)).item()
    assert loss == pytest.approx(math.log(2), abs=1e-6)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    assert metrics["rewards/margins"] == 0.0 and metrics["rewards/accuracies"] == 0.0


def test_dpo_gradient_is_weighted_by_sigmoid_of_reward_gap(policy_batch):
    """grad L = -(beta/B) sum sigma(r_l - r_w) [grad log pi(y_w|x) - grad log pi(y_l|x)]:
    TRL's parameter gradient equals that of a surrogate whose weight is detached."""
    trainer, batch = policy_batch
    batch, _ = with_fixed_reference(trainer, batch)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    loss = trainer.compute_loss(trainer.model, batch)
    trl_grads = torch.autograd.grad(loss, params)

    logps = sequence_logps(trainer.model, batch)
    pi_w, pi_l = logps.chunk(2)
    r_w = BETA * (pi_w - batch["ref_chosen_logps"])
    r_l = BETA * (pi_l - batch["ref_rejected_logps"])
    weight = torch.sigmoid(r_l - r_w).detach()
    surrogate = -(BETA * weight * (pi_w - pi_l)).mean()
    ours = torch.autograd.grad(surrogate, params)
    for theirs, mine in zip(trl_grads, ours, strict=True):
        torch.testing.assert_close(theirs, mine, atol=1e-6, rtol=1e-4)
    # The weight really varies across pairs: badly ranked pairs get pushed harder.
    assert weight.max() - weight.min() > 0.3


# ---------------------------------------------------------------------------------------------
# Reference-model strategies
# ---------------------------------------------------------------------------------------------


def test_dpo_precomputed_reference_columns_are_reference_logps(policy_batch, tiny):
    """precompute_ref_log_probs=True stores log pi_ref(y|x) per row before training; with no
    ref_model given, the reference is the untouched starting checkpoint."""
    trainer, _ = policy_batch
    assert trainer.ref_model is None
    batch = first_batch(trainer)  # the stored columns, not our overwritten values
    base = AutoModelForCausalLM.from_pretrained(tiny.policy)
    with torch.no_grad():
        expected = sequence_logps(base, batch)
    stored = torch.cat([batch["ref_chosen_logps"], batch["ref_rejected_logps"]])
    torch.testing.assert_close(stored, expected, atol=1e-4, rtol=1e-5)


class _Snapshots(TrainerCallback):
    """Reference parameters before each step, and policy and reference after it."""

    def __init__(self, trainer):
        self.trainer, self.steps = trainer, []

    def _first(self, model):
        return next(model.parameters()).detach().clone()

    def on_step_begin(self, args, state, control, **kwargs):
        self.steps.append({"ref_before": self._first(self.trainer.ref_model)})

    def on_step_end(self, args, state, control, **kwargs):  # runs after SyncRefModelCallback
        self.steps[-1]["policy"] = self._first(self.trainer.model)
        self.steps[-1]["ref_after"] = self._first(self.trainer.ref_model)


def test_dpo_sync_ref_model_mixes_policy_into_reference(tiny, tmp_path):
    """TR-DPO: every ref_model_sync_steps steps, pi_ref <- alpha pi_theta + (1 - alpha) pi_ref."""
    alpha = 0.6
    trainer = make_trainer(
        tiny,
        tmp_path,
        rows=8,
        per_device_train_batch_size=4,
        sync_ref_model=True,
        ref_model_mixup_alpha=alpha,
        ref_model_sync_steps=2,
        max_steps=4,
        learning_rate=1e-2,
        save_strategy="no",
    )
    snapshots = _Snapshots(trainer)
    trainer.add_callback(snapshots)
    trainer.train()
    assert len(snapshots.steps) == 4
    for step, snap in enumerate(snapshots.steps, start=1):
        if step % 2 == 0:
            mixed = alpha * snap["policy"] + (1 - alpha) * snap["ref_before"]
            torch.testing.assert_close(snap["ref_after"], mixed)
            assert not torch.equal(snap["ref_after"], snap["ref_before"])
        else:
            assert torch.equal(snap["ref_after"], snap["ref_before"])


# BEMA (trl.experimental.bema_for_ref_model): the reference is a bias-corrected EMA of the policy.
LAG, GAMMA, KAPPA, ETA = 2, 1.5, 0.5, 0.2  # rho, gamma, ema_power, bias_power (lag, multiplier)


class _EveryStep(TrainerCallback):
    """All parameters of the policy and of the reference after each step (runs after BEMA's)."""

    def __init__(self, trainer):
        self.trainer, self.policy, self.ref = trainer, [], []

    def on_step_end(self, args, state, control, **kwargs):
        for model, kept in ((self.trainer.model, self.policy), (self.trainer.ref_model, self.ref)):
            kept.append([p.detach().clone() for p in model.parameters()])


def bema_weights(thetas: list[list[torch.Tensor]], after: int, every: int) -> dict[int, list]:
    """theta'_t = EMA_t + alpha_t (theta_t - theta_0) at every BEMA update step t, with
    EMA_t = (1 - beta_t) EMA_prev + beta_t theta_t, beta_t = (rho + gamma t)^-kappa and
    alpha_t = (rho + gamma t)^-eta; theta_0 = EMA = theta at step `after` (thetas[t - 1] is the
    policy after step t)."""
    theta0 = thetas[after - 1]
    ema = [p.clone() for p in theta0]
    out = {}
    for t in range(after + every, len(thetas) + 1, every):
        beta, alpha = (LAG + GAMMA * t) ** -KAPPA, (LAG + GAMMA * t) ** -ETA
        ema = [(1 - beta) * e + beta * p for e, p in zip(ema, thetas[t - 1], strict=True)]
        drift = [p - p0 for p, p0 in zip(thetas[t - 1], theta0, strict=True)]
        out[t] = [e + alpha * d for e, d in zip(ema, drift, strict=True)]
    return out


def test_dpo_bema_reference_is_the_bias_corrected_ema_of_the_policy(tiny, tmp_path):
    """BEMA updates at steps 3 and 5 (after 1, every 2); the reference takes the BEMA weights at
    steps 1, 3 and 5 (every 2 from step 1). At step 1 no BEMA update has happened yet: the
    reference gets the weights the policy started from."""
    from trl.experimental.bema_for_ref_model import BEMACallback
    from trl.experimental.bema_for_ref_model import DPOTrainer as BEMADPOTrainer

    bema = BEMACallback(
        update_freq=2,
        update_after=1,
        lag=LAG,
        multiplier=GAMMA,
        ema_power=KAPPA,
        bias_power=ETA,
        update_ref_model=True,
        ref_model_update_freq=2,
        ref_model_update_after=1,
    )
    trainer = make_trainer(
        tiny,
        tmp_path,
        rows=10,
        trainer_class=BEMADPOTrainer,
        callbacks=[bema],
        per_device_train_batch_size=2,
        max_steps=5,
        learning_rate=1e-2,
        save_strategy="no",
    )
    start = [p.detach().clone() for p in trainer.model.parameters()]
    seen = _EveryStep(trainer)
    trainer.add_callback(seen)
    trainer.train()

    expected = bema_weights(seen.policy, after=1, every=2)
    assert sorted(expected) == [3, 5]
    for got, want in zip(seen.ref[0], start, strict=True):  # step 1: the starting weights
        torch.testing.assert_close(got, want)
    for step in (3, 5):
        for got, want in zip(seen.ref[step - 1], expected[step], strict=True):
            torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
        # A lagged copy, not the policy itself.
        assert not torch.allclose(seen.ref[step - 1][0], seen.policy[step - 1][0])
    for got, want in zip(seen.ref[1], seen.ref[0], strict=True):  # step 2: unchanged
        torch.testing.assert_close(got, want)


# ---------------------------------------------------------------------------------------------
# Modifiers: f-divergences, LD-DPO, WPO
# ---------------------------------------------------------------------------------------------


def f_score(delta: torch.Tensor, kind: str, alpha: float = 0.5) -> torch.Tensor:
    """f'(pi/pi_ref) written in terms of the log-ratio delta, for each f-DPO regulariser."""
    if kind == "forward_kl":  # f(t) = -log t  ->  f'(t) = 1 - 1/t
        return 1 - torch.exp(-delta)
    if kind == "js_divergence":  # f'(t) = log(2t / (1 + t))
        return torch.log(2 * torch.exp(delta) / (1 + torch.exp(delta)))
    if kind == "alpha_divergence":  # f'(t) = (t^(alpha - 1) - 1) / (alpha - 1)
        return (torch.exp((alpha - 1) * delta) - 1) / (alpha - 1)
    raise AssertionError(kind)


F_DIVERGENCES = ["forward_kl", "js_divergence", "alpha_divergence"]


@pytest.mark.parametrize("kind", F_DIVERGENCES, ids=[f"dpo-{k}" for k in F_DIVERGENCES])
def test_dpo_f_divergence_replaces_log_ratio_by_f_prime(tiny, tmp_path, kind):
    trainer = make_trainer(tiny, tmp_path, f_divergence_type=kind, precompute_ref_log_probs=True)
    batch, _ = with_fixed_reference(trainer, first_batch(trainer))
    loss = trainer.compute_loss(trainer.model, batch).detach()
    score_w, score_l = f_score(CHOSEN_LOGRATIOS, kind), f_score(REJECTED_LOGRATIOS, kind)
    expected = -F.logsigmoid(BETA * (score_w - score_l)).mean()
    torch.testing.assert_close(loss, expected, **TOL)


def test_dpo_alpha_divergence_coef_is_one_minus_the_papers_alpha(tiny, tmp_path):
    """f-DPO (Wang et al. 2023) writes the alpha-divergence's f'(u) = (1 - u^(-a)) / a; TRL's
    `f_alpha_divergence_coef` c gives (u^(c-1) - 1) / (c - 1), the paper's with a = 1 - c. At
    the default c = 0.5 the two agree, so test c = 0.3: it is the paper's a = 0.7, not 0.3."""
    coef = 0.3
    trainer = make_trainer(
        tiny,
        tmp_path,
        f_divergence_type="alpha_divergence",
        f_alpha_divergence_coef=coef,
        precompute_ref_log_probs=True,
    )
    batch, _ = with_fixed_reference(trainer, first_batch(trainer))
    loss = trainer.compute_loss(trainer.model, batch).detach()

    def paper_loss(a):
        score_w = (1 - torch.exp(-a * CHOSEN_LOGRATIOS)) / a
        score_l = (1 - torch.exp(-a * REJECTED_LOGRATIOS)) / a
        return -F.logsigmoid(BETA * (score_w - score_l)).mean()

    torch.testing.assert_close(loss, paper_loss(1 - coef), **TOL)
    assert not torch.allclose(loss, paper_loss(coef), **TOL)


def test_dpo_ld_alpha_downweights_the_longer_answers_tail(tiny, tmp_path):
    """LD-DPO: log pi = (sum over the first min(|y_w|, |y_l|) tokens) + alpha * (the rest)."""
    ld_alpha = 0.3
    trainer = make_trainer(tiny, tmp_path, ld_alpha=ld_alpha, precompute_ref_log_probs=True)
    batch = first_batch(trainer)
    with torch.no_grad():
        per_token, mask = token_logps(trainer.model, batch)
    lengths = mask.sum(-1)
    len_w, len_l = lengths.chunk(2)
    assert (len_w != len_l).any(), "the batch needs pairs of different lengths"
    shared = torch.minimum(len_w, len_l).repeat(2)
    position = mask.cumsum(-1) * mask  # 1, 2, ... along each completion, 0 elsewhere
    weights = torch.where(position > shared[:, None], ld_alpha, 1.0) * mask
    ld_logps = (per_token * weights).sum(-1)
    ld_w, ld_l = ld_logps.chunk(2)
    ref_w, ref_l = ld_w - CHOSEN_LOGRATIOS, ld_l - REJECTED_LOGRATIOS
    batch = {**batch, "ref_chosen_logps": ref_w, "ref_rejected_logps": ref_l}
    loss = trainer.compute_loss(trainer.model, batch).detach()
    expected = -F.logsigmoid(BETA * (CHOSEN_LOGRATIOS - REJECTED_LOGRATIOS)).mean()
    torch.testing.assert_close(loss, expected, **TOL)


def test_dpo_use_weighting_multiplies_by_wpo_weights(tiny, tmp_path):
    """WPO: each pair's loss times w(y_w) w(y_l), w(y) = exp(mean_t [log p_t - log sum_v p_v^2])."""
    trainer = make_trainer(tiny, tmp_path, use_weighting=True, precompute_ref_log_probs=True)
    batch, parts = with_fixed_reference(trainer, first_batch(trainer))
    loss = trainer.compute_loss(trainer.model, batch).detach()
    with torch.no_grad():
        logits = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits[:, :-1]
        log_probs = logits.log_softmax(-1)
        log_sum_sq = torch.logsumexp(2 * log_probs, dim=-1)  # log sum_v p_v^2
        per_token, mask = token_logps(trainer.model, batch)
        mean_aligned = ((per_token - log_sum_sq) * mask).sum(-1) / mask.sum(-1)
        w_w, w_l = torch.exp(mean_aligned).chunk(2)
    per_pair = -F.logsigmoid(BETA * (CHOSEN_LOGRATIOS - REJECTED_LOGRATIOS))
    torch.testing.assert_close(loss, (per_pair * w_w * w_l).mean(), **TOL)
    # The weights are not 1: this is not plain DPO.
    assert abs(loss - per_pair.mean()) > 1e-3


# Merge-model callback (trl.experimental.merge_model_callback): at the end of training, mergekit
# merges the last checkpoint with the model the run started from.


def test_dpo_merge_callback_writes_the_linear_merge_of_policy_and_start(tiny, tmp_path):
    """`MergeConfig("linear")`: merged = (0.5 θ_T + 0.5 θ_0) / (0.5 + 0.5), in float16, written
    to checkpoint-<last step>/merged; the target defaults to the model's own `_name_or_path`."""
    from safetensors.torch import load_file
    from trl.experimental.merge_model_callback import MergeConfig, MergeModelCallback

    merge = MergeModelCallback(MergeConfig("linear"))
    trainer = make_trainer(
        tiny, tmp_path, rows=4, callbacks=[merge], max_steps=2, learning_rate=1e-2, save_steps=2
    )
    start = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    trainer.train()
    trained = {name: p.detach() for name, p in trainer.model.named_parameters()}
    merged = load_file(tmp_path / "checkpoint-2" / "merged" / "model.safetensors")
    assert merge.merge_config.target_model_path == str(tiny.policy)
    for name, weight in trained.items():
        if name not in merged:  # tied embeddings are saved once
            continue
        assert merged[name].dtype == torch.float16
        expected = (0.5 * weight + 0.5 * start[name]).half()
        torch.testing.assert_close(merged[name], expected, atol=2e-3, rtol=2e-3)
    moved = max((trained[n] - start[n]).abs().max() for n in merged)
    assert moved > 1e-2  # training moved the weights, so the half-way point is not the start


def test_dpo_merge_callback_needs_a_checkpoint_at_the_last_step(tiny, tmp_path):
    """With nothing saved at the end (`save_strategy="no"`) there is no checkpoint to merge:
    mergekit takes the missing folder for a Hub repository name and fails on it, after training."""
    from trl.experimental.merge_model_callback import MergeConfig, MergeModelCallback

    merge = MergeModelCallback(MergeConfig("linear"))
    trainer = make_trainer(
        tiny, tmp_path, rows=4, callbacks=[merge], max_steps=1, save_strategy="no"
    )
    with pytest.raises(OSError, match="Repo id must be in the form.*checkpoint-1"):
        trainer.train()
