"""The equations of reference_guides/grpo.md, computed independently and compared with TRL.

One real `GRPOTrainer` (TRL 1.16.0) on the tiny policy serves the whole module. Two library
functions are checked against our own torch code:

- `GRPOTrainer._generate_and_score_completions`: it samples completions, calls the reward
  functions and returns the advantages. Our reward functions return fixed numbers, so the
  advantages are known whatever the completions are;
- `GRPOTrainer._compute_loss`: given fixed token ids, masks, advantages, "old" and reference
  log-probabilities, it returns the loss. The old log-probabilities are the current ones plus
  noise, so ratios differ from 1 and the clip is active for some tokens. Our version computes the
  per-token log-probabilities from the full logits of a plain forward pass.
"""

import pytest
import torch
from datasets import Dataset
from transformers import TrainerCallback
from trl import GRPOConfig, GRPOTrainer

pytestmark = pytest.mark.math

G = 4  # num_generations
GA = 2  # gradient_accumulation_steps (= steps_per_generation by default)
T = 6  # max_completion_length
EPS, EPS_HIGH, BETA = 0.2, 0.28, 0.04
TOL = {"atol": 1e-5, "rtol": 1e-5}
LOSS_TYPES = ["grpo", "dr_grpo", "dapo", "bnpo", "cispo", "sapo", "luspo", "vespo"]


class FixedReward:
    """A reward function that returns preset values, in order: the advantages become known."""

    def __init__(self, name, values):
        self.__name__ = name
        self.values = values

    def __call__(self, completions, **kwargs):
        assert len(completions) == len(self.values)
        assert kwargs["answer"] == [6] * G + [28] * G  # extra columns arrive, one per completion
        return list(self.values)


# Two prompts x G = 8 completions. Group 1 has spread; group 2 is constant for the first function.
R1 = [0.9, 0.1, 0.5, 0.3, 1.0, 1.0, 1.0, 1.0]
R2 = [1.0, 0.0, 0.0, 1.0, 0.0, 1.0, 0.0, 0.0]
WEIGHTS = [0.5, 2.0]


# The settings the module's two trainers (GRPO's and GMPO's) share.
SETTINGS = {
    "use_cpu": True,
    "bf16": False,
    "activation_checkpointing": False,
    "report_to": "none",
    "num_generations": G,
    "per_device_train_batch_size": G,
    "gradient_accumulation_steps": GA,
    "max_completion_length": T,
    "beta": BETA,
    "seed": 0,
}


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": "What is 6 - 0?"}], "answer": 6},
            {"prompt": [{"role": "user", "content": "What is 4 * 7?"}], "answer": 28},
        ]
    )
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo-math")),
        **SETTINGS,
        epsilon=EPS,
        epsilon_high=EPS_HIGH,
        reward_weights=WEIGHTS,
    )
    trainer = GRPOTrainer(
        model=str(tiny.policy),
        reward_funcs=[FixedReward("r1", R1), FixedReward("r2", R2)],
        args=args,
        train_dataset=dataset,
    )
    # The training loop sets this before each optimizer step (the number of micro-batches).
    trainer.current_gradient_accumulation_steps = GA
    trainer.model.train()
    return trainer


# ---------------------------------------------------------------------------------------------
# Advantages
# ---------------------------------------------------------------------------------------------


def expected_advantages(rewards: torch.Tensor, scale: str) -> torch.Tensor:
    groups = rewards.view(-1, G)
    centred = groups - groups.mean(dim=1, keepdim=True)
    if scale == "group":
        centred = centred / (groups.std(dim=1, keepdim=True) + 1e-4)  # Bessel-corrected std
    elif scale == "batch":
        centred = centred / (rewards.std() + 1e-4)
    return centred.view(-1)


def _score(trainer, rows):
    inputs = [rows[0]] * G + [rows[1]] * G  # what the repeat sampler feeds one generation round
    return trainer._generate_and_score_completions([dict(r) for r in inputs])


@pytest.mark.parametrize("scale", ["group", "batch", "none"], ids=lambda s: f"grpo-{s}")
def test_grpo_advantages_per_scale_rewards(trainer, scale):
    trainer.scale_rewards = scale
    trainer.multi_objective_aggregation = "sum_then_normalize"
    output = _score(trainer, trainer.train_dataset.to_list())
    rewards = WEIGHTS[0] * torch.tensor(R1) + WEIGHTS[1] * torch.tensor(R2)
    torch.testing.assert_close(output["advantages"], expected_advantages(rewards, scale), **TOL)
    # Advantages are centred in each group: they sum to zero there.
    assert output["advantages"].view(-1, G).sum(dim=1).abs().max() < 1e-5
    metrics = trainer._metrics["train"]
    assert metrics["reward"][-1] == pytest.approx(rewards.mean().item(), abs=1e-6)
    assert metrics["rewards/r1/mean"][-1] == pytest.approx(sum(R1) / len(R1), abs=1e-6)
    assert metrics["frac_reward_zero_std"][-1] == 0.0  # the weighted sum has spread in both groups


@pytest.mark.parametrize("scale", ["group", "none"])
def test_grpo_advantages_normalize_then_sum(trainer, scale):
    """GDPO: each reward normalised in its group first, then the weighted sum over the batch;
    `scale_rewards` is not read on this branch."""
    trainer.multi_objective_aggregation, trainer.scale_rewards = "normalize_then_sum", scale
    try:
        output = _score(trainer, trainer.train_dataset.to_list())
    finally:
        trainer.multi_objective_aggregation, trainer.scale_rewards = "sum_then_normalize", "group"
    per_func = [expected_advantages(torch.tensor(r), "group") for r in (R1, R2)]
    summed = WEIGHTS[0] * per_func[0] + WEIGHTS[1] * per_func[1]
    expected = (summed - summed.mean()) / (summed.std() + 1e-4)
    torch.testing.assert_close(output["advantages"], expected, **TOL)
    # Summing first (the default) gives other advantages on these rewards.
    summed_first = WEIGHTS[0] * torch.tensor(R1) + WEIGHTS[1] * torch.tensor(R2)
    assert not torch.allclose(expected, expected_advantages(summed_first, "group"), atol=1e-2)


def test_grpo_zero_spread_group_gets_zero_advantage(trainer):
    """A group whose completions all score the same has advantage 0 for all of them."""
    groups = torch.tensor(R1).view(-1, G)
    advantages = expected_advantages(torch.tensor(R1), "group").view(-1, G)
    assert groups[1].std() == 0 and advantages[1].abs().max() == 0


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def batch(trainer):
    """Fixed inputs for `_compute_loss`: 8 completions of different lengths."""
    gen = torch.Generator().manual_seed(0)
    vocab = trainer.model.config.vocab_size
    b, p = 2 * G, 5
    lengths = torch.tensor([6, 3, 5, 1, 6, 2, 4, 6])
    completion_mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    inputs = {
        "prompt_ids": torch.randint(0, vocab, (b, p), generator=gen),
        "prompt_mask": torch.ones(b, p, dtype=torch.long),
        "completion_ids": torch.randint(0, vocab, (b, T), generator=gen),
        "completion_mask": completion_mask,
        "advantages": torch.randn(b, generator=gen),
    }
    logps = our_logps(trainer.model, inputs).detach()
    inputs["old_per_token_logps"] = logps + 0.3 * torch.randn(b, T, generator=gen)
    inputs["ref_per_token_logps"] = logps + 0.2 * torch.randn(b, T, generator=gen)
    # Completion tokens of the whole generation batch (GA micro-batches); this one holds half.
    inputs["num_items_in_batch"] = completion_mask.sum() * GA
    return inputs


def our_logps(model, inputs) -> torch.Tensor:
    """log pi(y_t | x, y_<t) from the full logits: logits at position j predict token j + 1."""
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    logits = model(input_ids=ids, attention_mask=mask).logits
    logits = logits[:, -T - 1 : -1]
    return torch.log_softmax(logits.float(), dim=-1).gather(
        -1, inputs["completion_ids"][..., None]
    )[..., 0]


def expected_loss(trainer, inputs, loss_type, level="token", eps=EPS, eps_high=EPS_HIGH, beta=BETA):
    with torch.no_grad():
        logps = our_logps(trainer.model, inputs)
    m = inputs["completion_mask"].float()
    a = inputs["advantages"][:, None]
    log_ratio = logps - inputs["old_per_token_logps"]
    if level == "sequence":  # GSPO: one ratio per sequence, the mean log-ratio over its tokens
        log_ratio_is = ((log_ratio * m).sum(-1) / m.sum(-1))[:, None]
    else:
        log_ratio_is = log_ratio
    ratio = torch.exp(log_ratio_is)

    if loss_type == "cispo":
        per_token = -torch.clamp(ratio, max=eps_high) * a * logps
    elif loss_type == "sapo":
        tau = torch.where(a > 0, 1.0, 1.05)  # sapo_temperature_pos, sapo_temperature_neg
        per_token = -torch.sigmoid(tau * (ratio - 1)) * 4 / tau * a
    elif loss_type == "vespo":
        log_w = (log_ratio * m).sum(-1, keepdim=True)  # the sequence's summed log-ratio
        k = torch.where(a >= 0, 2.0, 3.0)  # vespo_k_pos, vespo_k_neg
        lam = torch.where(a >= 0, 3.0, 2.0)  # vespo_lambda_pos, vespo_lambda_neg
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w))
        per_token = -phi * a * logps
    else:  # the PPO clipped surrogate
        clipped = torch.clamp(ratio, 1 - eps, 1 + eps_high)
        per_token = -torch.min(ratio * a, clipped * a)

    ref_diff = inputs["ref_per_token_logps"] - logps
    k3 = torch.exp(ref_diff) - ref_diff - 1  # Schulman's estimator of KL(pi_theta || pi_ref)
    per_token = per_token + beta * k3 * ratio  # use_bias_correction_kl: weighted by the ratio
    per_token = per_token * m  # broadcasts (B, 1) sequence-level terms over the tokens

    n_tokens = m.sum(-1)
    if loss_type in ("grpo", "sapo"):
        return (per_token.sum(-1) / n_tokens).mean() / GA
    if loss_type == "bnpo":
        return per_token.sum() / m.sum() / GA
    if loss_type == "dr_grpo":
        return per_token.sum() / (m.shape[0] * T) / GA
    if loss_type == "luspo":
        return per_token.sum(-1).mean() / GA
    # dapo, cispo, vespo: the token count of the whole generation batch, so that summing the GA
    # micro-batch gradients gives one average over every completion token of the batch.
    return per_token.sum() / inputs["num_items_in_batch"]


def _library_loss(trainer, batch, loss_type, level="token"):
    trainer.loss_type = loss_type
    trainer.importance_sampling_level = level
    try:
        return trainer._compute_loss(trainer.model, dict(batch))
    finally:
        trainer.loss_type, trainer.importance_sampling_level = "dapo", "token"


@pytest.mark.parametrize("loss_type", LOSS_TYPES, ids=lambda t: f"grpo-loss-{t}")
def test_grpo_loss_type_matches_library(trainer, batch, loss_type):
    level = "sequence" if loss_type == "luspo" else "token"  # LUSPO is defined on GSPO's ratio
    ours = expected_loss(trainer, batch, loss_type, level)
    torch.testing.assert_close(_library_loss(trainer, batch, loss_type, level), ours, **TOL)


def test_grpo_sequence_level_importance_sampling_gspo(trainer, batch):
    ours = expected_loss(trainer, batch, "grpo", level="sequence")
    torch.testing.assert_close(_library_loss(trainer, batch, "grpo", "sequence"), ours, **TOL)
    assert not torch.allclose(ours, expected_loss(trainer, batch, "grpo", level="token"))


def test_grpo_clip_ratio_metric(trainer, batch):
    """`clip_ratio/region_mean`: tokens where the clip removed the gradient, over all tokens."""
    _library_loss(trainer, batch, "dapo")
    with torch.no_grad():
        ratio = torch.exp(our_logps(trainer.model, batch) - batch["old_per_token_logps"])
    a = batch["advantages"][:, None]
    m = batch["completion_mask"].bool()
    clipped = ((ratio < 1 - EPS) & (a < 0)) | ((ratio > 1 + EPS_HIGH) & (a > 0))
    expected = clipped[m].float().mean().item()
    assert 0 < expected < 1  # the noise on the old log-probs makes the clip bite somewhere
    assert trainer._metrics["train"]["clip_ratio/region_mean"][-1] == pytest.approx(expected)


def test_grpo_kl_metric_is_k3(trainer, batch):
    _library_loss(trainer, batch, "dapo")
    with torch.no_grad():
        logps = our_logps(trainer.model, batch)
    ratio = torch.exp(logps - batch["old_per_token_logps"])
    diff = batch["ref_per_token_logps"] - logps
    k3 = (torch.exp(diff) - diff - 1) * ratio
    m = batch["completion_mask"].bool()
    assert trainer._metrics["train"]["kl"][-1] == pytest.approx(k3[m].mean().item(), rel=1e-5)


def test_grpo_on_policy_gradient_is_policy_gradient(trainer, batch):
    """With pi_old = pi_theta (ratio 1, the first update of a batch) and no KL, the gradient of
    the dapo loss is the REINFORCE gradient -(1/N) sum_i A_i sum_t grad log pi(y_it), although
    the loss value itself is just -(1/N) sum_i A_i |y_i|."""
    on_policy = {k: v for k, v in batch.items() if k not in ("old_per_token_logps",)}
    trainer.beta = 0.0
    try:
        trainer.model.zero_grad()
        loss = _library_loss(trainer, on_policy, "dapo")
        loss.backward()
        library_grad = [p.grad.clone() for p in trainer.model.parameters()]
        trainer.model.zero_grad()
    finally:
        trainer.beta = BETA
    m = batch["completion_mask"].float()
    a = batch["advantages"][:, None]
    n = batch["num_items_in_batch"]
    assert loss.item() == pytest.approx((-(a * m).sum() / n).item(), abs=1e-6)
    reinforce = -(a * our_logps(trainer.model, batch) * m).sum() / n
    ours = torch.autograd.grad(reinforce, list(trainer.model.parameters()))
    for got, want in zip(library_grad, ours, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_grpo_kl_ratio_makes_the_gradient_that_of_kl_policy_ref():
    """Why TRL multiplies k3 by the ratio (use_bias_correction_kl): exact expectations over a
    6-token vocabulary at the sampling policy (ratio 1). The gradient of E[k3] is that of
    KL(pi_ref || pi); the gradient of E[ratio * k3] is that of KL(pi || pi_ref); they differ."""
    torch.manual_seed(0)
    logits = torch.randn(6, requires_grad=True)
    ref = torch.randn(6).log_softmax(-1)
    logp = logits.log_softmax(-1)
    sampling = logp.exp().detach()  # y ~ pi_theta: pi_old = pi_theta, ratio 1
    delta = ref - logp
    k3 = delta.exp() - delta - 1
    ratio = (logp - logp.detach()).exp()

    def grad(f):
        return torch.autograd.grad(f, logits, retain_graph=True)[0]

    plain, with_ratio = grad((sampling * k3).sum()), grad((sampling * ratio * k3).sum())
    kl_policy_ref = grad((logp.exp() * (logp - ref)).sum())
    kl_ref_policy = grad((ref.exp() * (ref - logp)).sum())
    torch.testing.assert_close(plain, kl_ref_policy)
    torch.testing.assert_close(with_ratio, kl_policy_ref)
    assert (plain - with_ratio).abs().max() > 1e-2


@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
def test_grpo_sequence_ratio_changes_nothing_on_policy(trainer, batch, loss_type):
    """GSPO's sequence-level ratio differs from the token ratio only once the policy has moved:
    on-policy (ratio 1, no KL) both give the same gradient, for any normaliser."""
    on_policy = {k: v for k, v in batch.items() if k != "old_per_token_logps"}
    grads = {}
    trainer.beta = 0.0
    try:
        for level in ("token", "sequence"):
            trainer.model.zero_grad()
            _library_loss(trainer, on_policy, loss_type, level).backward()
            grads[level] = [p.grad.clone() for p in trainer.model.parameters()]
        trainer.model.zero_grad()
    finally:
        trainer.beta = BETA
    for token, sequence in zip(grads["token"], grads["sequence"], strict=True):
        torch.testing.assert_close(token, sequence, atol=1e-6, rtol=1e-4)


@pytest.mark.parametrize("loss_type", ["dapo", "cispo", "vespo"])
def test_grpo_token_normaliser_is_one_optimiser_steps_share(trainer, batch, loss_type):
    """dapo, cispo and vespo divide by N_gen / processes x GA / steps_per_generation: the tokens
    one optimiser step takes from the generation batch. The other tests run with
    steps_per_generation = GA, where this is N_gen; here it is 2 GA, and the loss doubles."""
    default = trainer.args.steps_per_generation
    trainer.args.steps_per_generation = 2 * GA
    try:
        got = _library_loss(trainer, batch, loss_type)
    finally:
        trainer.args.steps_per_generation = default
    torch.testing.assert_close(got, expected_loss(trainer, batch, loss_type) * 2, **TOL)


# ---------------------------------------------------------------------------------------------
# The weight each token gets: reference_guides/grpo.md, "One group, token by token"
# ---------------------------------------------------------------------------------------------


def token_weights(trainer, loss_type, lengths, advantages, log_ratio, epsilon_high):
    """d loss / d log pi(y_t) from the library's `_compute_loss`, divided by -A: the weight with
    which each token's log-probability is pushed up (or, for A < 0, down). One micro-batch per
    optimiser step and per generation (K = S = 1), one process, no KL (beta = 0), and
    log pi - log pi_old = `log_ratio` per token."""
    b, t = len(lengths), max(lengths)
    mask = (torch.arange(t)[None, :] < torch.tensor(lengths)[:, None]).long()
    logps = torch.full((b, t), -1.0, requires_grad=True)
    inputs = {
        "prompt_ids": torch.zeros(b, 1, dtype=torch.long),
        "prompt_mask": torch.ones(b, 1, dtype=torch.long),
        "completion_ids": torch.zeros(b, t, dtype=torch.long),
        "completion_mask": mask,
        "advantages": torch.tensor(advantages, dtype=torch.float),
        "old_per_token_logps": (logps - torch.as_tensor(log_ratio, dtype=torch.float)).detach(),
        "num_items_in_batch": mask.sum(),
    }
    level = "sequence" if loss_type == "luspo" else "token"
    saved = {
        name: getattr(trainer, name)
        for name in ("beta", "epsilon_high", "current_gradient_accumulation_steps")
    }
    saved["_get_per_token_logps_and_entropies"] = trainer._get_per_token_logps_and_entropies
    trainer.beta, trainer.epsilon_high, trainer.current_gradient_accumulation_steps = (
        0.0,
        epsilon_high,
        1,
    )
    trainer._get_per_token_logps_and_entropies = lambda *a, **k: (logps, torch.zeros(b, t), None)
    trainer.loss_type, trainer.importance_sampling_level = loss_type, level
    steps_per_generation, trainer.args.steps_per_generation = trainer.args.steps_per_generation, 1
    try:
        trainer._compute_loss(trainer.model, inputs).backward()
    finally:
        for name, value in saved.items():
            setattr(trainer, name, value)
        trainer.loss_type, trainer.importance_sampling_level = "dapo", "token"
        trainer.args.steps_per_generation = steps_per_generation
    a = inputs["advantages"][:, None]
    return (-logps.grad / a * mask).tolist()


def page_table(heading: str) -> list[list[str]]:
    """The cells of the first table under `heading` in reference_guides/grpo.md."""
    from support.processes import REPO

    text = (REPO / "reference_guides" / "grpo.md").read_text().split(heading, 1)[1]
    rows = [line for line in text.splitlines() if line.startswith("|")]
    table = []
    for line in rows:
        if set(line) <= set("|-: "):
            continue
        table.append([cell.strip().strip("`") for cell in line.strip("|").split("|")])
        if len(table) > 1 and not text.split(line, 1)[1].startswith("\n|"):
            break
    return table[1:]  # without the header


WORKED_LENGTHS, WORKED_ADVANTAGES = [2, 6], [1.0, -1.0]


@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_grpo_token_weights_match_the_page(trainer, loss_type):
    """The worked group: a short right answer (2 tokens, A = +1) and a long wrong one (6, A = -1),
    on-policy. Each row of the page's table is what `_compute_loss` differentiates to."""
    rows = {row[0]: row for row in page_table("### One group, token by token")}
    short, long = token_weights(
        trainer, loss_type, WORKED_LENGTHS, WORKED_ADVANTAGES, 0.0, epsilon_high=5.0
    )
    page = rows[loss_type]
    # Columns: loss_type, weight of each short token, of each long token, short total, long total.
    assert float(page[1]) == pytest.approx(short[0], abs=5e-4)
    assert float(page[2]) == pytest.approx(long[0], abs=5e-4)
    assert float(page[3]) == pytest.approx(sum(short), abs=5e-4)
    assert float(page[4]) == pytest.approx(sum(long), abs=5e-4)
    assert len(set(short[:2])) == 1 and len(set(long)) == 1  # every token of a sequence alike


RATIOS = [0.5, 0.8, 1.0, 1.25, 2.0]


@pytest.mark.parametrize("loss_type", ["dapo", "cispo", "sapo"])
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_grpo_weight_as_a_function_of_the_ratio_matches_the_page(trainer, loss_type, sign):
    """One completion whose five tokens have ratios RATIOS: the per-token weight times the
    normaliser's inverse, at GRPOConfig's default clip (epsilon 0.2 both ways) for `dapo`, and
    epsilon_high 5 (the cap, as the CISPO paper sets it) for `cispo`."""
    n = len(RATIOS)
    log_ratio = torch.log(torch.tensor([RATIOS]))
    epsilon_high = 5.0 if loss_type == "cispo" else 0.2
    (weights,) = token_weights(trainer, loss_type, [n], [sign], log_ratio, epsilon_high)
    normaliser = n  # dapo and cispo: 1 / N_gen; sapo: 1 / (B |y|); here both are 1 / 5
    rows = {(row[0], row[1]): row for row in page_table("### The weight as the ratio moves")}
    page = rows[(loss_type, "+1" if sign > 0 else "−1")]
    for cell, weight in zip(page[2:], weights, strict=True):
        assert float(cell) == pytest.approx(weight * normaliser, abs=5e-3)


# ---------------------------------------------------------------------------------------------
# Reproducing the papers: reference_guides/grpo.md, "Reproduce a paper"
# ---------------------------------------------------------------------------------------------

# Each paper's loss, written from the paper (not from the page's settings): how the per-token
# terms are aggregated, the clip (or CISPO's cap), the KL coefficient, the ratio's level.
PAPER_LOSSES = {
    "DeepSeekMath (GRPO)": {"loss_type": "grpo", "eps": 0.2, "eps_high": 0.2, "beta": 0.04},
    "DAPO": {"loss_type": "dapo", "eps": 0.2, "eps_high": 0.28, "beta": 0.0},
    "Dr. GRPO": {"loss_type": "dr_grpo", "eps": 0.2, "eps_high": 0.2, "beta": 0.0},
    "GSPO": {"loss_type": "grpo", "level": "sequence", "eps": 3e-4, "eps_high": 4e-4, "beta": 0.0},
    "CISPO (MiniMax-M1, ScaleRL)": {"loss_type": "cispo", "eps": 0.2, "eps_high": 5.0, "beta": 0.0},
    "SAPO": {"loss_type": "sapo", "eps": 0.2, "eps_high": 0.2, "beta": 0.0},
}


def page_settings(cell: str) -> dict:
    """`loss_type="dapo"`, `epsilon_high=0.28` -> {"loss_type": "dapo", "epsilon_high": 0.28}."""
    import ast

    pairs = [item.strip().strip("`") for item in cell.split("`,")]
    return {k.strip(): ast.literal_eval(v.strip()) for k, v in (p.split("=", 1) for p in pairs)}


@pytest.mark.parametrize("paper", list(PAPER_LOSSES))
def test_grpo_paper_settings_give_the_papers_loss(trainer, batch, paper):
    """The page's GRPOConfig settings for each paper are valid config fields, and with them the
    library's `_compute_loss` equals the paper's loss on the fixed batch (ragged lengths, ratios
    away from 1 so that the clip acts)."""
    import dataclasses

    rows = {row[0]: row for row in page_table("## Reproduce a paper")}
    settings = page_settings(rows[paper][1])
    # GRPOConfig's own defaults, overridden by the page's settings (constructing a second config
    # would reset the trainer's Accelerator state).
    args = {f.name: f.default for f in dataclasses.fields(GRPOConfig)}
    assert set(settings) <= set(args), f"not GRPOConfig fields: {set(settings) - set(args)}"
    args.update(settings)
    saved = {n: getattr(trainer, n) for n in ("beta", "epsilon_low", "epsilon_high")}
    trainer.beta, trainer.epsilon_low = args["beta"], args["epsilon"]
    trainer.epsilon_high = (
        args["epsilon_high"] if args["epsilon_high"] is not None else args["epsilon"]
    )
    try:
        library = _library_loss(
            trainer, batch, args["loss_type"], args["importance_sampling_level"]
        )
    finally:
        for name, value in saved.items():
            setattr(trainer, name, value)
    torch.testing.assert_close(library, expected_loss(trainer, batch, **PAPER_LOSSES[paper]), **TOL)


# ---------------------------------------------------------------------------------------------
# Counting: reference_guides/grpo.md, "What one step holds"
# ---------------------------------------------------------------------------------------------


def short_run(tiny, tmp_path, reward, prompts, **config) -> GRPOTrainer:
    """A GRPOTrainer on the tiny policy, `prompts` conversational prompts, groups of 4 and
    completions of at most 4 tokens, ready to train for a few real steps."""
    rows = [{"prompt": [{"role": "user", "content": f"What is {i} + 1?"}]} for i in range(prompts)]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        num_generations=4,
        max_completion_length=4,
        save_strategy="no",
        disable_tqdm=True,
        seed=0,
        **config,
    )
    return GRPOTrainer(
        model=str(tiny.policy),
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_list(rows),
    )


def test_grpo_counting_of_the_worked_example(tiny, tmp_path):
    """A real run with the page's worked settings (B = 8 completions per micro-batch, K = 2
    accumulation steps, S = 4 steps per generation, G = 4, num_iterations 2, one process, 4
    optimiser steps): a reward function that records its calls counts the generation rounds,
    the completions per round and the distinct prompts in them. `_compute_loss`, recorded too,
    shows which old log-probabilities each micro-batch uses: since K is not a multiple of
    S x num_iterations they are computed, once, at generation; the S slices are used in order,
    twice, with the same old log-probabilities, and the ratio is 1 only before the round's first
    optimiser step."""
    calls, micro = [], []

    def recording_reward(prompts, completions, **kwargs):
        calls.append([str(p) for p in prompts])
        return [float(len(str(c)) % 5) for c in completions]  # varied: the policy moves

    trainer = short_run(
        tiny,
        tmp_path,
        recording_reward,
        prompts=40,
        per_device_train_batch_size=8,
        gradient_accumulation_steps=2,
        steps_per_generation=4,
        num_iterations=2,
        max_steps=4,
        learning_rate=1e-2,
    )
    args = trainer.args
    assert args.generation_batch_size == 8 * 1 * 4  # B x P x S completions
    compute_loss = trainer._compute_loss

    def recording_loss(model, inputs):
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        n = inputs["completion_ids"].shape[1]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=mask).logits[:, -n - 1 : -1]
        logps = torch.log_softmax(logits.float(), -1)
        logps = logps.gather(-1, inputs["completion_ids"][..., None])[..., 0]
        micro.append((inputs, logps * inputs["completion_mask"]))
        return compute_loss(model, inputs)

    trainer._compute_loss = recording_loss
    trainer.train()
    assert len(micro) == 8
    for j in range(4):  # pass 2 reuses the slices of pass 1, in the same order
        (first, _), (second, _) = micro[j], micro[j + 4]
        assert torch.equal(first["completion_ids"], second["completion_ids"])
        assert first["old_per_token_logps"] is not None
        assert torch.equal(first["old_per_token_logps"], second["old_per_token_logps"])
    drift = [
        ((logps - inputs["old_per_token_logps"]) * inputs["completion_mask"]).abs().max().item()
        for inputs, logps in micro
    ]
    assert max(drift[:2]) < 1e-4  # the first optimiser step: the policy that sampled
    assert min(drift[2:]) > 1e-3  # after it, every micro-batch sees a moved policy
    assert trainer.state.global_step == 4
    # 4 optimiser steps x K = 8 micro-batches; a generation round feeds S x num_iterations = 8.
    assert len(calls) == 1
    (round_prompts,) = calls
    assert len(round_prompts) == 32  # B x P x S completions, scored in one call
    assert len(set(round_prompts)) == 32 // 4  # 8 prompts, each G = 4 times in a row
    assert all(round_prompts[i] == round_prompts[i - i % 4] for i in range(32))


# ---------------------------------------------------------------------------------------------
# Knobs that change which tokens learn: reference_guides/grpo.md, "Knobs that gate the loss"
# ---------------------------------------------------------------------------------------------


def our_logps_and_entropies(model, inputs):
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
    mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits[:, -T - 1 : -1].float()
    logp_all = torch.log_softmax(logits, dim=-1)
    logps = logp_all.gather(-1, inputs["completion_ids"][..., None])[..., 0]
    return logps, -(logp_all.exp() * logp_all).sum(-1)


def gated_dapo_loss(trainer, inputs, delta=None, top_entropy_quantile=1.0, off_policy=None):
    """The default loss (dapo, token ratio, clip 0.2 / 0.28, beta k3) with the three gates of the
    page, written from the equations: delta caps the unclipped ratio; only tokens at or above the
    (1 - q) entropy quantile of the batch keep their policy term; a sequence with A < 0 whose
    mean log(pi_old / pi) exceeds the threshold loses its policy term. The KL term stays."""
    logps, entropies = our_logps_and_entropies(trainer.model, inputs)
    m = inputs["completion_mask"].float()
    a = inputs["advantages"][:, None]
    ratio = torch.exp(logps - inputs["old_per_token_logps"])
    unclipped = ratio if delta is None else torch.clamp(ratio, max=delta)
    clipped = torch.clamp(ratio, 1 - EPS, 1 + EPS_HIGH)
    policy = -torch.min(unclipped * a, clipped * a)
    if off_policy is not None:
        drift = ((inputs["old_per_token_logps"] - logps) * m).sum(-1, keepdim=True) / m.sum(
            -1, keepdim=True
        )
        policy = policy * ((a >= 0) | (drift <= off_policy)).float()
    if top_entropy_quantile < 1.0:
        cut = torch.quantile(entropies[m.bool()], 1 - top_entropy_quantile)
        policy = policy * (entropies >= cut).float()
    ref_diff = inputs["ref_per_token_logps"] - logps
    per_token = policy + BETA * (torch.exp(ref_diff) - ref_diff - 1) * ratio
    return (per_token * m).sum() / inputs["num_items_in_batch"]


GATES = {
    "delta": {"delta": 1.1},
    "top_entropy_quantile": {"top_entropy_quantile": 0.5},
    "off_policy_mask_threshold": {"off_policy": 0.05},
}


@pytest.mark.parametrize("gate", list(GATES))
def test_grpo_gates_match_library(trainer, batch, gate):
    ours = gated_dapo_loss(trainer, batch, **GATES[gate])
    value = next(iter(GATES[gate].values()))
    saved = (trainer.args.delta, trainer.top_entropy_quantile, trainer.off_policy_mask_threshold)
    if gate == "delta":
        trainer.args.delta = value
    elif gate == "top_entropy_quantile":
        trainer.top_entropy_quantile = value
    else:
        trainer.off_policy_mask_threshold = value
    try:
        library = _library_loss(trainer, batch, "dapo")
    finally:
        trainer.args.delta, trainer.top_entropy_quantile, trainer.off_policy_mask_threshold = saved
    torch.testing.assert_close(library, ours, **TOL)
    # The gate acts on this batch: without it, the loss is another number.
    assert not torch.isclose(ours, gated_dapo_loss(trainer, batch))


def test_grpo_mask_truncated_completions_masks_the_loss_not_the_group(trainer):
    """`mask_truncated_completions`: a completion cut at `max_completion_length` (no EOS) gets a
    zero loss mask, m_{i,t} <- m_{i,t} [y_i ended], while its reward still enters its group's mean
    and std (the advantages equal those of the unmasked groups)."""
    # The random tiny policy almost never says EOS within 6 tokens: raise its EOS logit by 4 while
    # sampling, so that about half the completions end and half are cut.
    eos_boost = torch.zeros(trainer.model.config.vocab_size)
    eos_boost[trainer.eos_token_ids] = 4.0
    hook = trainer.model.lm_head.register_forward_hook(lambda module, args, out: out + eos_boost)
    trainer.mask_truncated_completions = True
    trainer.scale_rewards = "group"  # other tests leave it changed
    try:
        torch.manual_seed(3)
        output = _score(trainer, trainer.train_dataset.to_list())
    finally:
        trainer.mask_truncated_completions = False
        hook.remove()
    eos = torch.tensor(trainer.eos_token_ids)
    ended = torch.isin(output["completion_ids"], eos).any(dim=1)
    kept = output["completion_mask"].sum(dim=1) > 0
    assert torch.equal(kept, ended) and ended.any() and not ended.all()
    rewards = WEIGHTS[0] * torch.tensor(R1) + WEIGHTS[1] * torch.tensor(R2)
    torch.testing.assert_close(output["advantages"], expected_advantages(rewards, "group"), **TOL)


@pytest.mark.parametrize("adaptive_gate", [None, "below target", "above target"])
def test_grpo_entropy_bonus_is_the_mean_entropy_whatever_the_loss_type(
    trainer, batch, adaptive_gate
):
    """L = L_policy - c * mean entropy / K, the mean over the micro-batch's completion tokens,
    for every loss_type. With `use_adaptive_entropy` the coefficient applies only while the last
    optimiser step's entropy was at or below `entropy_target`."""
    _, entropies = our_logps_and_entropies(trainer.model, batch)
    m = batch["completion_mask"].float()
    mean_entropy = (entropies * m).sum() / m.sum()
    coef = 0.1
    names = ("entropy_coef", "use_adaptive_entropy", "_entropy_bonus_enabled")
    names += ("_last_world_entropy", "_entropy_window_stats")
    saved = {name: getattr(trainer, name) for name in names}
    for loss_type in ("dapo", "grpo"):
        without = _library_loss(trainer, batch, loss_type)
        trainer.entropy_coef, trainer._entropy_bonus_enabled = coef, True
        applied = coef
        if adaptive_gate is not None:
            trainer.use_adaptive_entropy = True
            below = adaptive_gate == "below target"
            trainer._last_world_entropy = trainer.args.entropy_target + (-0.1 if below else 0.1)
            applied = coef if below else 0.0
        try:
            with_bonus = _library_loss(trainer, batch, loss_type)
        finally:
            for name, value in saved.items():
                setattr(trainer, name, value)
        expected = without - applied * mean_entropy / GA
        torch.testing.assert_close(with_bonus, expected, **TOL)


def vllm_importance_ratio(old_logps, sampling_logps, mask, mode, clip_min, clip_max):
    """The page's equations for `vllm_importance_sampling_mode`: the ratio of the training
    model's to vLLM's probability of each sampled token (or of the whole completion), truncated
    to [clip_min, clip_max] or set to 0 outside it."""
    diff = torch.nan_to_num((old_logps - sampling_logps) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, clip_min, clip_max)
    low = -torch.inf if clip_min is None else clip_min
    return torch.where((ratio < low) | (ratio > clip_max), 0.0, ratio)


@pytest.mark.parametrize(
    "mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]
)
def test_grpo_vllm_importance_ratio_weights_the_policy_term(trainer, batch, mode):
    """vLLM samples with its own kernels, so its probabilities differ a little from the training
    model's. The ratio is computed where vLLM's log-probs arrive (generation, not run on these
    CPU machines); `_compute_loss` multiplies the policy term by it, before the KL term. Checked:
    that multiplication, with the ratio of each mode from the page's equations."""
    gen = torch.Generator().manual_seed(5)
    m = batch["completion_mask"].float()
    sampling = batch["old_per_token_logps"] + 0.5 * torch.randn(m.shape, generator=gen)
    ratio = vllm_importance_ratio(batch["old_per_token_logps"], sampling, m, mode, None, 1.5)
    assert (ratio == 0).any() if mode.endswith("mask") else (ratio == 1.5).any()
    saved = (trainer.use_vllm, trainer.vllm_importance_sampling_correction)
    trainer.use_vllm, trainer.vllm_importance_sampling_correction = True, True
    try:
        weighted = _library_loss(trainer, {**batch, "importance_sampling_ratio": ratio}, "dapo")
    finally:
        trainer.use_vllm, trainer.vllm_importance_sampling_correction = saved
    logps = our_logps(trainer.model, batch).detach()
    a = batch["advantages"][:, None]
    rho = torch.exp(logps - batch["old_per_token_logps"])
    policy = -torch.min(rho * a, torch.clamp(rho, 1 - EPS, 1 + EPS_HIGH) * a) * ratio
    ref_diff = batch["ref_per_token_logps"] - logps
    per_token = policy + BETA * (torch.exp(ref_diff) - ref_diff - 1) * rho
    expected = (per_token * m).sum() / batch["num_items_in_batch"]
    torch.testing.assert_close(weighted, expected, **TOL)


def test_grpo_sync_ref_model_mixes_the_reference_towards_the_policy(tiny, tmp_path):
    """`sync_ref_model`: after every `ref_model_sync_steps`-th optimiser step the reference
    becomes alpha * policy + (1 - alpha) * reference, parameter by parameter (TR-DPO's soft
    update), with the policy as it is after that step. A real 2-step run, synced every step."""
    alpha = 0.6
    trainer = short_run(
        tiny,
        tmp_path,
        # Longer answers score more: groups do not tie, so the policy moves.
        lambda completions, **kwargs: [float(len(c[0]["content"])) for c in completions],
        prompts=8,
        per_device_train_batch_size=4,
        beta=0.04,
        sync_ref_model=True,
        ref_model_mixup_alpha=alpha,
        ref_model_sync_steps=1,
        learning_rate=1e-2,
        max_steps=2,
    )
    reference = [p.detach().clone() for p in trainer.ref_model.parameters()]
    start = list(reference)
    policy_after = []

    class Snapshot(TrainerCallback):
        def on_step_end(self, args, state, control, model=None, **kwargs):
            policy_after.append([p.detach().clone() for p in model.parameters()])

    # Inserted first, so that it sees the policy before the sync callback runs (which reads
    # the same, already stepped, policy).
    trainer.callback_handler.callbacks.insert(0, Snapshot())
    trainer.train()
    for policy in policy_after:  # two syncs, one per step
        reference = [alpha * p + (1 - alpha) * r for p, r in zip(policy, reference, strict=True)]
    for ours, library in zip(reference, trainer.ref_model.parameters(), strict=True):
        torch.testing.assert_close(library.detach(), ours, atol=1e-6, rtol=1e-5)
    # Not trivially: the policy moved away from where the reference started.
    assert len(policy_after) == 2
    assert any(not torch.equal(p, r) for p, r in zip(policy_after[-1], start, strict=True))
    assert any(not torch.equal(p, r) for p, r in zip(policy_after[-1], reference, strict=True))


# ---------------------------------------------------------------------------------------------
# GMPO (trl.experimental.gmpo): the geometric mean of the token ratios
# ---------------------------------------------------------------------------------------------

GMPO_EPS, GMPO_EPS_HIGH = 0.4, 0.3  # log space; unequal, so swapping them would fail


@pytest.fixture(scope="module")
def gmpo_trainer(tiny, tmp_path_factory):
    """A GMPOTrainer with the module's settings, its clip range in log space."""
    from trl.experimental.gmpo import GMPOConfig, GMPOTrainer

    args = GMPOConfig(
        output_dir=str(tmp_path_factory.mktemp("gmpo-math")),
        **SETTINGS,
        epsilon=GMPO_EPS,
        epsilon_high=GMPO_EPS_HIGH,
    )
    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": "What is 6 - 0?"}]}])
    trainer = GMPOTrainer(
        model=str(tiny.policy), reward_funcs=FixedReward("r1", R1), args=args, train_dataset=dataset
    )
    trainer.current_gradient_accumulation_steps = GA
    trainer.model.train()
    return trainer


def clipped_log_ratio(log_ratio, a, eps=GMPO_EPS, eps_high=GMPO_EPS_HIGH):
    """PPO's min written in log space: a token stops pulling once its ratio has moved past
    the clip in the direction its advantage pushes."""
    clip = torch.clamp(log_ratio, -eps, eps_high)
    return torch.where(a > 0, torch.minimum(log_ratio, clip), torch.maximum(log_ratio, clip))


def geometric_mean_ratio(log_ratio, a, m):
    """rho_bar_i = exp(mean over the completion's tokens of the clipped log-ratios)."""
    return torch.exp((clipped_log_ratio(log_ratio, a) * m).sum(-1) / m.sum(-1))


def gmpo_expected_loss(model, inputs, beta=BETA):
    """(1/KB) sum_i [-rho_bar_i A_i + beta * (token mean of k3 over y_i)]."""
    logps = our_logps(model, inputs)
    m = inputs["completion_mask"].float()
    a = inputs["advantages"]
    old = inputs.get("old_per_token_logps", logps.detach())
    rho_bar = geometric_mean_ratio(logps - old, a[:, None], m)
    diff = inputs["ref_per_token_logps"] - logps
    k3 = torch.exp(diff) - diff - 1  # not weighted by the ratio, unlike GRPO's term
    per_sequence = -rho_bar * a + beta * (k3 * m).sum(-1) / m.sum(-1)
    return per_sequence.mean() / GA


def test_gmpo_loss_matches_library(gmpo_trainer, batch):
    with torch.no_grad():
        ours = gmpo_expected_loss(gmpo_trainer.model, batch)
        library = gmpo_trainer._compute_loss(gmpo_trainer.model, dict(batch))
    torch.testing.assert_close(library, ours, **TOL)
    # The clip bites on both sides somewhere in this batch (else the test would not see it).
    log_ratio = our_logps(gmpo_trainer.model, batch).detach() - batch["old_per_token_logps"]
    m = batch["completion_mask"].bool()
    assert (log_ratio[m] < -GMPO_EPS).any() and (log_ratio[m] > GMPO_EPS_HIGH).any()


def test_gmpo_paper_form_is_the_signed_geometric_mean_of_the_clipped_surrogates(batch):
    """The paper writes the objective as (prod_t |min(rho A, clip(rho) A)|)^(1/|y|) sgn(A);
    TRL's exp(mean clipped log-ratio) A is the same number."""
    gen = torch.Generator().manual_seed(1)
    log_ratio = 0.5 * torch.randn(2 * G, T, generator=gen)
    a = batch["advantages"][:, None]
    m = batch["completion_mask"].float()
    ratio = torch.exp(log_ratio)
    clip = torch.clamp(
        ratio, torch.exp(torch.tensor(-GMPO_EPS)), torch.exp(torch.tensor(GMPO_EPS_HIGH))
    )
    surrogate = torch.minimum(ratio * a, clip * a).abs()
    paper = torch.exp((torch.log(surrogate) * m).sum(-1) / m.sum(-1)) * torch.sign(a[:, 0])
    torch.testing.assert_close(paper, geometric_mean_ratio(log_ratio, a, m) * a[:, 0], **TOL)


def test_gmpo_on_policy_gradient_is_that_of_grpo(trainer, gmpo_trainer, batch):
    """On-policy (every ratio 1, nothing clipped) and without KL, GMPO's gradient is GRPO's
    with `loss_type="grpo"`: -A_i / (K B |y_i|) on each token's log-probability. The two differ
    once the policy has moved: GMPO weighs every token of y_i by rho_bar_i, GRPO by its own
    ratio."""
    on_policy = {k: v for k, v in batch.items() if k != "old_per_token_logps"}
    grads = []
    for t, loss_type in ((gmpo_trainer, None), (trainer, "grpo")):
        t.beta = 0.0
        try:
            t.model.zero_grad()
            loss = (
                t._compute_loss(t.model, dict(on_policy))
                if loss_type is None
                else (_library_loss(t, on_policy, loss_type))
            )
            loss.backward()
            grads.append([p.grad.clone() for p in t.model.parameters()])
            t.model.zero_grad()
        finally:
            t.beta = BETA
    assert any(g.abs().sum() > 0 for g in grads[0])
    for gmpo, grpo in zip(*grads, strict=True):
        torch.testing.assert_close(gmpo, grpo, atol=1e-6, rtol=1e-4)
