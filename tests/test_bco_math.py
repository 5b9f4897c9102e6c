"""BCO math: every equation of reference_guides/bco.md, computed independently, equals our code.

Fixed inputs where the equation is a formula of numbers (loss, running mean, density ratio);
a real `BCOTrainer` on the tiny fixture where it is a property of the model (the reward as a sum
over completion tokens, δ updated before the loss, UDM weights from the fitted classifier). The
policy's weights are perturbed so that policy and reference differ and rewards are not zero.
"""

import math

import datasets
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, AutoTokenizer

from annotated_trl.trainers.bco import (
    BCOConfig,
    BCOTrainer,
    RunningMean,
    bco_loss,
    density_ratio_weights,
)

BETA = 0.1
pytestmark = pytest.mark.math


def bag_of_tokens(input_ids, attention_mask, vocab=384):
    counts = F.one_hot(input_ids, vocab).float() * attention_mask.unsqueeze(-1)
    return counts.sum(1) / attention_mask.sum(1, keepdim=True)


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    """A trainer whose policy differs from its reference; UDM on; one real batch of 8 rows."""
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    policy = AutoModelForCausalLM.from_pretrained(tiny.policy)
    reference = AutoModelForCausalLM.from_pretrained(tiny.policy)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.add_(0.05 * torch.randn(parameter.shape, generator=generator))
    data = datasets.load_dataset(
        "json", data_files=str(tiny.data / "unpaired_preference" / "train.jsonl")
    )["train"]
    args = BCOConfig(
        output_dir=str(tmp_path_factory.mktemp("bco-math")),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=8,
        max_length=64,
        beta=BETA,
        prompt_sample_size=64,
        min_density_ratio=0.95,
        max_density_ratio=1.02,
    )
    trainer = BCOTrainer(
        model=policy,
        ref_model=reference,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        embedding_func=bag_of_tokens,
        embedding_tokenizer=tokenizer,
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    rows = data.select(range(8))
    return trainer, tokenizer, policy, reference, batch, rows


def sequence_logp(model, tokenizer, prompt: str, completion: str) -> float:
    """log π(completion | prompt) of one unpadded row: Σ_t log softmax(logits)[token], a loop."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    full_ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    full_ids = full_ids + [tokenizer.eos_token_id]  # the trainer closes every completion with EOS
    with torch.no_grad():
        logits = model(torch.tensor([full_ids])).logits[0].double()
    total = 0.0
    for position in range(len(prompt_ids), len(full_ids)):
        log_probs = logits[position - 1] - torch.logsumexp(logits[position - 1], dim=-1)
        total += log_probs[full_ids[position]].item()
    return total


def test_bco_reward_is_beta_log_ratio_summed_over_completion_tokens(setup):
    """r_θ(x, y) = β Σ_{t ∈ completion} [log π_θ(y_t | x, y_<t) - log π_ref(y_t | x, y_<t)]."""
    trainer, tokenizer, policy, reference, batch, rows = setup
    with torch.no_grad():
        ours = BETA * (trainer.completion_logps(policy, batch)[0] - trainer.reference_logps(batch))
    expected = [
        BETA
        * (
            sequence_logp(policy, tokenizer, row["prompt"], row["completion"])
            - sequence_logp(reference, tokenizer, row["prompt"], row["completion"])
        )
        for row in rows
    ]
    assert max(abs(r) for r in expected) > 0.05  # policy and reference really differ
    assert ours.tolist() == pytest.approx(expected, abs=2e-5)


def test_bco_loss_is_a_logistic_classifier_cross_entropy():
    """ℓ = -log σ(r - δ) for desirable rows, -log σ(δ - r) for undesirable; mean over rows."""
    chosen = torch.tensor([0.3, -0.2, 1.5])
    rejected = torch.tensor([0.1, -0.7])
    delta = torch.tensor(0.25)

    def softplus(z):  # -log σ(z) = log(1 + e^{-z})
        return math.log1p(math.exp(-z))

    terms = [softplus(r - 0.25) for r in chosen.tolist()]
    terms += [softplus(0.25 - r) for r in rejected.tolist()]
    assert bco_loss(chosen, rejected, delta).item() == pytest.approx(sum(terms) / 5, rel=1e-6)

    # The same number as a binary cross-entropy with logit r - δ and target 1 / 0:
    logits = torch.cat((chosen, rejected)) - delta
    targets = torch.tensor([1.0, 1.0, 1.0, 0.0, 0.0])
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    assert bco_loss(chosen, rejected, delta).item() == pytest.approx(bce.item(), rel=1e-6)


def test_bco_udm_weights_multiply_undesirable_terms_only():
    """With UDM: ℓ_U = -w(x) log σ(δ - r); desirable terms keep weight 1."""
    chosen, rejected = torch.tensor([0.4, 0.1]), torch.tensor([-0.3, 0.6])
    delta, weights = torch.tensor(0.1), torch.tensor([2.0, 0.5])
    expected = (
        math.log1p(math.exp(-(0.4 - 0.1)))
        + math.log1p(math.exp(-(0.1 - 0.1)))
        + 2.0 * math.log1p(math.exp(-(0.1 + 0.3)))
        + 0.5 * math.log1p(math.exp(-(0.1 - 0.6)))
    ) / 4
    assert bco_loss(chosen, rejected, delta, weights).item() == pytest.approx(expected, rel=1e-6)


def test_bco_delta_is_the_mean_of_every_reward_seen():
    """δ_k = mean of all rewards in batches 1..k (batches of different sizes)."""
    generator = torch.Generator().manual_seed(1)
    batches = [torch.randn(n, generator=generator) for n in (8, 3, 16, 1)]
    running, seen = RunningMean(), []
    for batch in batches:
        running.update(batch)
        seen.extend(batch.tolist())
        assert running.mean == pytest.approx(float(np.mean(seen)), abs=1e-7)
        assert running.count == len(seen)


def test_bco_delta_is_updated_before_the_loss_and_not_by_evaluation(setup, tmp_path):
    """The loss of batch k uses δ_k, which already contains batch k's rewards; eval leaves δ."""
    trainer, _, policy, _, batch, _ = setup
    trainer.running = RunningMean(mean=0.5, count=24.0)  # as if 24 earlier rewards averaged 0.5
    classifier, trainer.classifier = trainer.classifier, None  # plain BCO for this check
    try:
        with torch.no_grad():
            rewards = BETA * (
                trainer.completion_logps(policy, batch)[0] - trainer.reference_logps(batch)
            )
            loss = trainer.bco_batch_loss(policy, batch, train=True)
        delta = (0.5 * 24 + rewards.sum().item()) / (24 + len(rewards))
        assert trainer.running.mean == pytest.approx(delta, rel=1e-6)
        chosen = batch["label"].bool()
        expected = bco_loss(rewards[chosen], rewards[~chosen], torch.tensor(delta))
        assert loss.item() == pytest.approx(expected.item(), rel=1e-6)

        with torch.no_grad():
            trainer.bco_batch_loss(policy, batch, train=False)
        assert trainer.running.mean == pytest.approx(delta, rel=1e-6)
        assert trainer.running.count == 24 + len(rewards)

        # The running mean survives a save and a load unchanged.
        trainer.running.save(tmp_path / "running.json")
        assert RunningMean.load(tmp_path / "running.json") == trainer.running
    finally:
        trainer.classifier = classifier
        trainer._stored_metrics["train"].clear()
        trainer._stored_metrics["eval"].clear()


def test_bco_density_ratio_is_clipped_odds():
    """w = clip(p / (1 - p), w_min, w_max) with p = P(desirable | x)."""
    p = torch.tensor([0.05, 0.3, 0.5, 0.7, 0.95, 1.0])
    expected = [min(max(q / (1 - q + 1e-8), 0.5), 10.0) for q in p.tolist()]
    assert density_ratio_weights(p, 0.5, 10.0).tolist() == pytest.approx(expected, rel=1e-6)
    assert density_ratio_weights(p, 0.5, 10.0)[[0, -1]].tolist() == [0.5, 10.0]


def test_bco_udm_weights_are_exp_of_the_classifier_logit(setup):
    """p/(1-p) of a logistic regression is exp(w·φ(x) + b): computed from its coefficients."""
    trainer, _, _, _, batch, _ = setup
    rejected = ~batch["label"].bool()
    ours = trainer.udm_weights(batch, rejected)

    features = bag_of_tokens(batch["embedding_input_ids"], batch["embedding_attention_mask"])
    coef = torch.tensor(trainer.classifier.coef_[0], dtype=torch.float64)
    intercept = float(trainer.classifier.intercept_[0])
    odds = torch.exp(features[rejected].double() @ coef + intercept)
    expected = odds.clamp(0.95, 1.02)
    assert len(ours) == int(rejected.sum()) > 0
    assert ours.tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    # On this batch (odds 0.94, 1.00, 1.03, 1.04) both clips act and one weight passes through.
    assert (odds < 0.95).any() and (odds > 1.02).any() and ((odds > 0.95) & (odds < 1.02)).any()


def test_bco_udm_classifier_is_balanced(setup):
    """class_weight="balanced": both labels weigh the same, whatever their counts."""
    trainer, *_ = setup
    params = trainer.classifier.get_params()
    assert params["class_weight"] == "balanced"
    assert trainer.classifier.classes_.tolist() == [0.0, 1.0]  # column 1 is P(desirable | x)


def test_bco_gradient_pushes_desirable_up_and_undesirable_down():
    """∂ℓ_D/∂r = -(1 - σ(r - δ)) < 0 and ∂ℓ_U/∂r = w σ(r - δ) > 0; δ carries no gradient."""
    chosen = torch.tensor([0.3, -1.0], requires_grad=True)
    rejected = torch.tensor([0.5, 2.0], requires_grad=True)
    delta, weights = torch.tensor(0.2), torch.tensor([1.5, 0.7])
    bco_loss(chosen, rejected, delta, weights).backward()
    sigmoid = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    expected_chosen = [-(1 - sigmoid(r - 0.2)) / 4 for r in (0.3, -1.0)]
    expected_rejected = [w * sigmoid(r - 0.2) / 4 for r, w in ((0.5, 1.5), (2.0, 0.7))]
    assert chosen.grad.tolist() == pytest.approx(expected_chosen, rel=1e-6)
    assert rejected.grad.tolist() == pytest.approx(expected_rejected, rel=1e-6)


def test_bco_loss_of_a_pair_bounds_its_dpo_loss_and_the_midpoint_is_tightest():
    """-log σ(r_w - r_l) ≤ -log σ(r_w - δ) - log σ(δ - r_l) for every δ, with equality gap
    smallest at δ = (r_w + r_l) / 2: why BCO's δ should sit between the two rewards."""
    generator = torch.Generator().manual_seed(2)
    r_w, r_l = torch.randn(20, generator=generator), torch.randn(20, generator=generator)
    dpo = -F.logsigmoid(r_w - r_l)
    grid = torch.linspace(-4, 4, 401)
    for w, l_, d in zip(r_w.tolist(), r_l.tolist(), dpo.tolist(), strict=True):
        bco = torch.stack([bco_loss(torch.tensor([w]), torch.tensor([l_]), g) * 2 for g in grid])
        assert (bco >= d - 1e-6).all()
        assert grid[bco.argmin()].item() == pytest.approx((w + l_) / 2, abs=0.02)
