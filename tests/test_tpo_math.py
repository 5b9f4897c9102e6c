"""The equations of reference_guides/tpo.md, computed independently and compared with TRL.

Each check builds a real `TPOTrainer` (TRL 1.16.0) from a `TPOConfig` on the tiny offline policy
(its weights nudged off the near-uniform start), lets the trainer tokenise and collate four
triples of ragged lengths, and calls its `_compute_loss` once. Our side tokenises each sequence
itself, runs it alone (no padding), and computes the scores, the preference loss of every
`loss_type`, the NLL of the gold answers and the logged metrics in float64.
"""

import json

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.experimental.tpo import TPOConfig, TPOTrainer

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
BETA = 0.3  # not a default (0.01), so that a wrong weight cannot pass by accident
GAMMA = 0.7  # TPO-L's target margin, not the default 0.5

# name -> (TPOConfig overrides, scores are averages?, our per-row preference loss of h = s_w - s_l)
VARIANTS = {
    "tpo-sigmoid": ({"loss_type": "sigmoid"}, False, lambda h: -F.logsigmoid(BETA * h)),
    "tpo-sigmoid-label-smoothing": (
        {"loss_type": "sigmoid", "label_smoothing": 0.2},
        False,
        lambda h: -0.8 * F.logsigmoid(BETA * h) - 0.2 * F.logsigmoid(-BETA * h),
    ),
    "tpo-hinge": ({"loss_type": "hinge"}, False, lambda h: torch.relu(1 - BETA * h)),
    "tpo-ipo": ({"loss_type": "ipo"}, True, lambda h: (h - 1 / (2 * BETA)) ** 2),
    "tpo-l": (
        {"loss_type": "tpo-l", "tpo_l_gamma": GAMMA},
        True,
        lambda h: -F.logsigmoid(BETA * h - GAMMA),
    ),
    "tpo-l-label-smoothing": (
        {"loss_type": "tpo-l", "tpo_l_gamma": GAMMA, "label_smoothing": 0.2},
        True,
        lambda h: -0.8 * F.logsigmoid(BETA * h - GAMMA) - 0.2 * F.logsigmoid(GAMMA - BETA * h),
    ),
}
ALPHAS = [1.0, 0.4, 0.0]  # tpo_alpha: the default, another weight, and the term switched off


@pytest.fixture(scope="module")
def setup(tiny, tmp_path_factory):
    lines = (tiny.data / "triple_preference" / "train.jsonl").read_text().splitlines()[:4]
    rows = [json.loads(line) for line in lines]
    # Ragged: answers of different lengths within and across the three branches, so that the
    # sum and the mean of log-probs differ, and a per-row mean of the NLL differs from the
    # token-level mean TRL takes.
    rows[1] = {**rows[1], "chosen": rows[1]["chosen"] + ". The answer is correct."}
    rows[2] = {**rows[2], "reference": rows[2]["reference"] + ". Let us think step by step."}
    rows[3] = {**rows[3], "rejected": rows[3]["rejected"] + " or so"}
    model = AutoModelForCausalLM.from_pretrained(tiny.policy)
    torch.manual_seed(0)
    with torch.no_grad():  # move off the near-uniform initial predictions
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    setup = {"rows": rows, "model": model, "tokenizer": tokenizer}
    setup["ours"] = our_sequences(setup)
    setup["dir"] = tmp_path_factory.mktemp("tpo-math")
    return setup


def make_trainer(setup, **overrides) -> TPOTrainer:
    settings = {
        "output_dir": str(setup["dir"]),
        "beta": BETA,
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "max_length": 64,
        "report_to": "none",
        "disable_tqdm": True,
    }
    settings.update(overrides)
    trainer = TPOTrainer(
        model=setup["model"],
        args=TPOConfig(**settings),
        train_dataset=Dataset.from_list(setup["rows"]),
        processing_class=setup["tokenizer"],
    )
    trainer.model.train()
    return trainer


def trainer_step(trainer) -> tuple[torch.Tensor, dict, dict]:
    """The loss and logged metrics of one `_compute_loss` on the rows, in dataset order."""
    features = [trainer.train_dataset[i] for i in range(len(trainer.train_dataset))]
    batch = dict(trainer.data_collator(features))
    trainer._metrics["train"].clear()
    with torch.no_grad():
        loss = trainer._compute_loss(trainer.model, batch, return_outputs=False)
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.double(), metrics, batch


def our_sequence(model, tokenizer, prompt: str, completion: str) -> torch.Tensor:
    """Tokenise prompt + completion + EOS ourselves, run it alone, and return the log-prob of
    each completion token (EOS included)."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    ids = ids + [tokenizer.eos_token_id]
    assert ids[: len(prompt_ids)] == prompt_ids
    input_ids = torch.tensor([ids])
    logits = model(input_ids=input_ids).logits[0, :-1].double()
    token_logps = logits.log_softmax(-1).gather(-1, input_ids[0, 1:, None]).squeeze(-1)
    return token_logps[len(prompt_ids) - 1 :]


def our_sequences(setup) -> dict[str, list[torch.Tensor]]:
    """Per branch, per row: the completion tokens' log-probs."""
    model, tokenizer = setup["model"], setup["tokenizer"]
    with torch.no_grad():
        return {
            branch: [our_sequence(model, tokenizer, r["prompt"], r[branch]) for r in setup["rows"]]
            for branch in ("chosen", "rejected", "reference")
        }


def scores(setup, branch: str, averaged: bool) -> torch.Tensor:
    """s(y): the sum of a completion's token log-probs, or their mean (IPO, TPO-L)."""
    return torch.stack([t.mean() if averaged else t.sum() for t in setup["ours"][branch]])


def nll(setup) -> torch.Tensor:
    """The gold answers' NLL: one mean over all their completion tokens in the batch."""
    tokens = torch.cat(setup["ours"]["reference"])
    return -tokens.mean()


# ---------------------------------------------------------------------------------------------
# Equation (1): the score of an answer, a sum or a mean of its tokens' log-probs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "loss_type,averaged",
    [("sigmoid", False), ("hinge", False), ("ipo", True), ("tpo-l", True)],
    ids=["tpo-sigmoid-sum", "tpo-hinge-sum", "tpo-ipo-average", "tpo-l-average"],
)
def test_tpo_scores_are_sums_or_averages(setup, loss_type, averaged):
    trainer = make_trainer(setup, loss_type=loss_type)
    _, metrics, _ = trainer_step(trainer)
    lengths = {len(t) for branch in setup["ours"].values() for t in branch}
    assert len(lengths) > 2, "answers need different lengths"
    s_w, s_l = scores(setup, "chosen", averaged), scores(setup, "rejected", averaged)
    assert metrics["logps/chosen"] == pytest.approx(s_w.mean().item(), rel=1e-5)
    assert metrics["logps/rejected"] == pytest.approx(s_l.mean().item(), rel=1e-5)
    other = scores(setup, "chosen", not averaged).mean().item()
    assert abs(metrics["logps/chosen"] - other) > 0.1  # negative control: the other kind


# ---------------------------------------------------------------------------------------------
# Equations (2)-(4): every loss_type's preference term, plus tpo_alpha times the gold NLL
# ---------------------------------------------------------------------------------------------


# Every loss_type at the default weight; the other weights on the sigmoid and TPO-L losses.
CASES = [(v, 1.0) for v in VARIANTS] + [
    (v, a) for v in ("tpo-sigmoid", "tpo-l") for a in ALPHAS[1:]
]


@pytest.mark.parametrize("variant,alpha", CASES, ids=[f"{v}-alpha-{a}" for v, a in CASES])
def test_tpo_loss_is_preference_plus_weighted_gold_nll(setup, variant, alpha):
    overrides, averaged, formula = VARIANTS[variant]
    trainer = make_trainer(setup, **overrides, tpo_alpha=alpha)
    loss, _, batch = trainer_step(trainer)
    h = scores(setup, "chosen", averaged) - scores(setup, "rejected", averaged)
    preference = formula(h).mean()
    torch.testing.assert_close(loss, preference + alpha * nll(setup), **TOL)
    # tpo_alpha = 0 drops the gold branch from the batch: 2 sequences per row, not 3.
    assert batch["input_ids"].shape[0] == (2 if alpha == 0 else 3) * len(setup["rows"])


def test_tpo_nll_is_a_token_mean_not_a_row_mean(setup):
    """Negative control for equation (3): the per-row mean of the NLL (each gold answer weighted
    alike) is another number on these ragged answers, 1000 tolerances away; TRL weights every
    gold token alike."""
    per_row = torch.stack([-t.mean() for t in setup["ours"]["reference"]]).mean()
    assert abs(per_row - nll(setup)) > 1000 * TOL["atol"]


# ---------------------------------------------------------------------------------------------
# Equation (5): the logged implicit rewards, beta * s(y), their margin and accuracy
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("loss_type,averaged", [("sigmoid", False), ("tpo-l", True)])
def test_tpo_logged_rewards(setup, loss_type, averaged):
    trainer = make_trainer(setup, loss_type=loss_type)
    _, metrics, _ = trainer_step(trainer)
    s_w, s_l = scores(setup, "chosen", averaged), scores(setup, "rejected", averaged)
    assert metrics["rewards/chosen"] == pytest.approx((BETA * s_w).mean().item(), rel=1e-5)
    assert metrics["rewards/rejected"] == pytest.approx((BETA * s_l).mean().item(), rel=1e-5)
    margin = (BETA * (s_w - s_l)).mean().item()
    assert metrics["rewards/margins"] == pytest.approx(margin, rel=1e-4, abs=1e-6)
    assert metrics["rewards/accuracies"] == pytest.approx((s_w > s_l).double().mean().item())
    assert 0 < metrics["rewards/accuracies"] < 1  # the rows disagree: a real check
