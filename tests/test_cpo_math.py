"""The equations of reference_guides/cpo.md, computed independently and compared with TRL.

Loss-level checks build a real `CPOTrainer` per loss variant (TRL 1.16.0) on the tiny offline
policy and call its `cpo_loss` on fixed per-sequence scores, against our own float64 formula.
Model-level checks take rows the trainer itself tokenised and collated and compare its
per-sequence scores (sum or average of completion log-probs) and its total loss with our own
computation: each sequence tokenised by us, run alone (no padding), scored from the logits.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.experimental.cpo import CPOConfig, CPOTrainer

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
BETA = 0.3  # not the default 0.1, so that a wrong weight cannot pass by accident

# Fixed per-sequence scores of four pairs (average log-probs; the sums are 10x, as for 10
# tokens). Pair 0 favours chosen, pair 1 rejected, pair 2 is nearly tied.
CHOSEN = torch.tensor([-0.40, -2.10, -1.00, -0.05])
REJECTED = torch.tensor([-1.30, -0.90, -1.02, -0.70])

# name -> (CPOConfig overrides, scores are averages?, our float64 per-pair loss from h, s_w and s_l
# (named w and r below))
VARIANTS = {
    "cpo-sigmoid": ({"loss_type": "sigmoid"}, False, lambda h, w, r: -F.logsigmoid(BETA * h)),
    "cpo-sigmoid-label-smoothing": (
        {"loss_type": "sigmoid", "label_smoothing": 0.2},
        False,
        lambda h, w, r: -0.8 * F.logsigmoid(BETA * h) - 0.2 * F.logsigmoid(-BETA * h),
    ),
    "cpo-hinge": ({"loss_type": "hinge"}, False, lambda h, w, r: torch.relu(1 - BETA * h)),
    "cpo-ipo": ({"loss_type": "ipo"}, True, lambda h, w, r: (h - 1 / (2 * BETA)) ** 2),
    "cpo-simpo": (
        {"loss_type": "simpo", "simpo_gamma": 0.7, "cpo_alpha": 0.0},
        True,
        lambda h, w, r: -F.logsigmoid(BETA * h - 0.7),
    ),
    # "alphapo" alone is SimPO with cpo_alpha forced to 0: alpha stays at its default 0.0.
    "cpo-alphapo-default-alpha": (
        {"loss_type": "alphapo"},
        True,
        lambda h, w, r: -F.logsigmoid(BETA * h - 0.5),
    ),
    # With alpha != 0 the score s becomes r = (1 - p^-alpha) / alpha, p = exp(s).
    "cpo-alphapo-alpha": (
        {"loss_type": "alphapo", "alpha": 0.25},
        True,
        lambda h, w, r: -F.logsigmoid(BETA * (alphapo_r(w, 0.25) - alphapo_r(r, 0.25)) - 0.5),
    ),
    "cpo-sigmoid-alpha": (
        {"loss_type": "sigmoid", "alpha": -0.5},
        False,
        lambda h, w, r: -F.logsigmoid(BETA * (alphapo_r(w, -0.5) - alphapo_r(r, -0.5))),
    ),
}


def alphapo_r(score: torch.Tensor, alpha: float) -> torch.Tensor:
    return (1 - score.exp() ** (-alpha)) / alpha


def read_rows(tiny, n: int) -> list[dict]:
    lines = (tiny.data / "preference" / "train.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    rows = read_rows(tiny, 4)
    # Completions of different lengths, so the average and the sum of log-probs really differ.
    rows[1] = {**rows[1], "chosen": rows[1]["chosen"] + ". The answer is correct."}
    model = AutoModelForCausalLM.from_pretrained(tiny.policy)
    torch.manual_seed(0)
    with torch.no_grad():  # move off the near-uniform initial predictions
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return {
        "rows": rows,
        "model": model,
        "tokenizer": AutoTokenizer.from_pretrained(tiny.policy),
        "dir": tmp_path_factory.mktemp("cpo-math"),
    }


def make_trainer(setup, **overrides) -> CPOTrainer:
    settings = {
        "output_dir": str(setup["dir"]),
        "beta": BETA,
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "activation_checkpointing": False,
        "remove_unused_columns": False,
        "max_length": 64,
        "report_to": "none",
        "disable_tqdm": True,
    }
    settings.update(overrides)
    trainer = CPOTrainer(
        model=setup["model"],
        args=CPOConfig(**settings),
        train_dataset=Dataset.from_list(setup["rows"]),
        processing_class=setup["tokenizer"],
    )
    trainer.model.train()
    return trainer


def rows_batch(trainer) -> dict:
    """The rows in dataset order, collated by the trainer's own collator (no shuffling)."""
    features = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    return dict(trainer.data_collator(features))


def our_sequence(model, tokenizer, prompt: str, completion: str) -> dict:
    """Tokenise prompt + completion + EOS ourselves, run it alone, score it from the logits."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    ids = ids + [tokenizer.eos_token_id]
    assert ids[: len(prompt_ids)] == prompt_ids
    input_ids = torch.tensor([ids])
    logits = model(input_ids=input_ids).logits[0, :-1].double()
    token_logps = logits.log_softmax(-1).gather(-1, input_ids[0, 1:, None]).squeeze(-1)
    completion_logps = token_logps[len(prompt_ids) - 1 :]
    return {"average": completion_logps.mean(), "sum": completion_logps.sum(), "n": len(ids)}


def our_scores(setup, kind: str) -> tuple[torch.Tensor, torch.Tensor, dict]:
    model, tokenizer = setup["model"], setup["tokenizer"]
    with torch.no_grad():
        pairs = [
            (
                our_sequence(model, tokenizer, r["prompt"], r["chosen"]),
                our_sequence(model, tokenizer, r["prompt"], r["rejected"]),
            )
            for r in setup["rows"]
        ]
    chosen = torch.stack([c[kind] for c, _ in pairs])
    rejected = torch.stack([r[kind] for _, r in pairs])
    return chosen, rejected, pairs


# ---------------------------------------------------------------------------------------------
# Every loss_type on fixed scores
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS), ids=list(VARIANTS))
def test_cpo_loss_matches_formula(setup, variant):
    overrides, averaged, formula = VARIANTS[variant]
    trainer = make_trainer(setup, **overrides)
    chosen, rejected = (CHOSEN, REJECTED) if averaged else (10 * CHOSEN, 10 * REJECTED)
    losses, chosen_rewards, rejected_rewards = trainer.cpo_loss(chosen, rejected)
    w, r = chosen.double(), rejected.double()
    torch.testing.assert_close(losses.double(), formula(w - r, w, r), **TOL)
    alpha = trainer.alpha
    expected_w = BETA * (alphapo_r(w, alpha) if alpha else w)
    expected_l = BETA * (alphapo_r(r, alpha) if alpha else r)
    torch.testing.assert_close(chosen_rewards.double(), expected_w, **TOL)
    torch.testing.assert_close(rejected_rewards.double(), expected_l, **TOL)


def test_cpo_alphapo_is_simpo_without_nll():
    config = CPOConfig(output_dir="unused", loss_type="alphapo", cpo_alpha=1.0, use_cpu=True)
    assert (config.loss_type, config.cpo_alpha, config.alpha) == ("simpo", 0.0, 0.0)


def test_cpo_alpha_limit_is_log_probability():
    # r_alpha(p) = (1 - p^-alpha) / alpha -> log p as alpha -> 0: AlphaPO generalises SimPO.
    s = CHOSEN.double()
    torch.testing.assert_close(alphapo_r(s, 1e-7), s, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Per-sequence scores and total loss, on the tiny model
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss_type,kind",
    [("sigmoid", "sum"), ("hinge", "sum"), ("ipo", "average"), ("simpo", "average")],
    ids=["cpo-sigmoid-sum", "cpo-hinge-sum", "cpo-ipo-average", "cpo-simpo-average"],
)
def test_cpo_sequence_scores_sum_or_average(setup, loss_type, kind):
    trainer = make_trainer(setup, loss_type=loss_type)
    with torch.no_grad():
        chosen, rejected, *_ = trainer.concatenated_forward(trainer.model, rows_batch(trainer))
    ours_w, ours_l, pairs = our_scores(setup, kind)
    assert len({c["n"] for c, _ in pairs}) > 1, "sequences need different lengths"
    torch.testing.assert_close(chosen, ours_w.float(), **TOL)
    torch.testing.assert_close(rejected, ours_l.float(), **TOL)
    other_w, _, _ = our_scores(setup, "average" if kind == "sum" else "sum")
    assert (chosen.double() - other_w).abs().min() > 0.1  # negative control


@pytest.mark.parametrize(
    "cpo_alpha", [1.0, 0.5, 0.0], ids=["cpo-alpha-1", "cpo-alpha-0.5", "cpo-alpha-0"]
)
def test_cpo_total_loss_is_preference_plus_weighted_nll(setup, cpo_alpha):
    trainer = make_trainer(setup, loss_type="sigmoid", cpo_alpha=cpo_alpha)
    batch = rows_batch(trainer)
    trainer._stored_metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, dict(batch)).detach()
    model, tokenizer = setup["model"], setup["tokenizer"]
    # Our NLL: chosen COMPLETION tokens only (EOS included), a token-level mean over the batch.
    nll_sum, count = 0.0, 0
    with torch.no_grad():
        for row in setup["rows"]:
            seq = our_sequence(model, tokenizer, row["prompt"], row["chosen"])
            prompt_len = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
            n_completion = seq["n"] - prompt_len
            nll_sum += -seq["average"] * n_completion
            count += n_completion
    nll = nll_sum / count
    w, r, _ = our_scores(setup, "sum")
    preference = -F.logsigmoid(BETA * (w - r)).mean()
    expected = preference + cpo_alpha * nll
    torch.testing.assert_close(loss.double(), expected, **TOL)
    stored = trainer._stored_metrics["train"]
    assert stored["nll_loss"][-1] == pytest.approx(nll.item() if cpo_alpha else 0.0, rel=1e-5)
    assert stored["rewards/accuracies"][-1] == pytest.approx((w > r).double().mean().item())
    margin = (BETA * (w - r)).mean().item()
    assert stored["rewards/margins"][-1] == pytest.approx(margin, rel=1e-4, abs=1e-6)
