"""The equations of reference_guides/orpo.md, computed independently and compared with TRL.

Loss-level checks call `ORPOTrainer.odds_ratio_loss` on fixed per-sequence log-probabilities and
compare with our own float64 formula. Model-level checks take a batch the trainer itself
tokenised and collated, and compare the trainer's per-sequence log-probabilities and total loss
with our own computation: each sequence tokenised by us, run alone (no padding), scored from the
full logits.
"""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl.experimental.orpo import ORPOConfig, ORPOTrainer
from trl.experimental.orpo.orpo_trainer import log1mexp

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
BETA = 0.25  # not the default 0.1, so that a wrong weight cannot pass by accident

# Fixed average (per-token) log-probabilities of four pairs: a clear win, a loss, a tie-ish
# pair, and a chosen answer the model is almost sure of (p -> 1, where naive odds overflow).
CHOSEN = [-0.30, -2.50, -1.00, -1e-6]
REJECTED = [-1.20, -0.80, -1.01, -0.05]


def read_rows(tiny, n: int) -> list[dict]:
    lines = (tiny.data / "preference" / "train.jsonl").read_text().splitlines()[:n]
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    rows = read_rows(tiny, 4)
    # Completions of different lengths, so the average and the sum of log-probs really differ.
    rows[1] = {**rows[1], "chosen": rows[1]["chosen"] + ". The answer is correct."}
    args = ORPOConfig(
        output_dir=str(tmp_path_factory.mktemp("orpo-math")),
        beta=BETA,
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        activation_checkpointing=False,
        remove_unused_columns=False,
        per_device_train_batch_size=4,
        max_length=64,
        max_steps=10,
        learning_rate=1e-2,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    trainer = ORPOTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )
    trainer.train()  # a few steps, so predictions are no longer uniform
    trainer.model.train()
    trainer.rows = rows
    return trainer


def first_batch(trainer) -> dict:
    """The four rows in dataset order, collated by the trainer's own collator (no shuffling)."""
    features = [trainer.train_dataset[i] for i in range(len(trainer.rows))]
    return dict(trainer.data_collator(features))


def our_sequence(model, tokenizer, prompt: str, completion: str) -> dict:
    """Tokenise prompt + completion + EOS ourselves, run it alone, score it from the logits."""
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids = tokenizer(prompt + completion, add_special_tokens=False)["input_ids"]
    ids = ids + [tokenizer.eos_token_id]
    assert ids[: len(prompt_ids)] == prompt_ids  # no merge across the boundary here
    input_ids = torch.tensor([ids])
    logits = model(input_ids=input_ids).logits[0, :-1].double()
    token_logps = logits.log_softmax(-1).gather(-1, input_ids[0, 1:, None]).squeeze(-1)
    completion_logps = token_logps[len(prompt_ids) - 1 :]  # predictions of completion tokens
    return {
        "average": completion_logps.mean(),
        "sum": completion_logps.sum(),
        "n_completion": completion_logps.numel(),
        "all_nll_sum": -token_logps.sum(),  # every predicted token, the prompt's included
        "all_count": token_logps.numel(),
        "completion_nll_sum": -completion_logps.sum(),
    }


def our_pairs(trainer) -> list[tuple[dict, dict]]:
    model, tokenizer = trainer.model, trainer.processing_class
    with torch.no_grad():
        return [
            (
                our_sequence(model, tokenizer, row["prompt"], row["chosen"]),
                our_sequence(model, tokenizer, row["prompt"], row["rejected"]),
            )
            for row in trainer.rows
        ]


def log_odds64(avg_logp: torch.Tensor) -> torch.Tensor:
    """log(p / (1 - p)) the naive way, in float64: the reference for float32 results."""
    p = avg_logp.double().exp()
    return torch.log(p / (1 - p))


# ---------------------------------------------------------------------------------------------
# The odds-ratio term on fixed log-probabilities
# ---------------------------------------------------------------------------------------------


def test_orpo_odds_ratio_loss_matches_formula(trainer):
    chosen, rejected = torch.tensor(CHOSEN), torch.tensor(REJECTED)
    losses, chosen_rewards, rejected_rewards, log_odds_ratio, log_odds_chosen = (
        trainer.odds_ratio_loss(chosen, rejected)
    )
    log_or = log_odds64(chosen) - log_odds64(rejected)  # log odds(y_w) / odds(y_l)
    expected = BETA * F.logsigmoid(log_or)  # TRL returns +beta * log sigma; the loss subtracts it
    torch.testing.assert_close(losses.double(), expected, **TOL)
    torch.testing.assert_close(chosen_rewards, BETA * chosen)
    torch.testing.assert_close(rejected_rewards, BETA * rejected)
    # The two logged names: `log_odds_chosen` is the mean log odds RATIO, `log_odds_ratio` is the
    # mean of log sigma(log odds ratio).
    assert log_odds_chosen.item() == pytest.approx(log_or.mean().item(), rel=1e-5)
    assert log_odds_ratio.item() == pytest.approx(F.logsigmoid(log_or).mean().item(), rel=1e-5)
    # Sanity of the fixed inputs: pairs 0 and 3 favour chosen, pair 1 rejected.
    assert log_or[0] > 0 and log_or[1] < 0 and log_or[3] > 0


def test_orpo_log_odds_worked_example():
    # The worked example of the reference guide: average log-probs -0.5 (chosen) and -1.5
    # (rejected), i.e. p = 0.607 and 0.223.
    p_w, p_l = math.exp(-0.5), math.exp(-1.5)
    log_or = math.log(p_w / (1 - p_w)) - math.log(p_l / (1 - p_l))
    assert log_or == pytest.approx(1.6803, abs=1e-4)
    assert -math.log(1 / (1 + math.exp(-log_or))) == pytest.approx(0.1709, abs=1e-4)


def test_orpo_log1mexp_is_stable_where_naive_float32_fails():
    ells = torch.tensor([-1e-9, -1e-8, -1e-7, -1e-5, -1e-3, -0.5, -0.69, -0.70, -1.0, -10.0, -60.0])
    reference = torch.log(-torch.expm1(ells.double()))  # exact enough in float64
    stable = log1mexp(ells)  # TRL's float32 computation
    torch.testing.assert_close(stable.double(), reference, atol=1e-12, rtol=2e-6)
    naive = torch.log(1 - torch.exp(ells))  # the textbook formula, in float32
    # Near p -> 1, 1 - exp(l) rounds to 0 in float32: the log is -inf.
    assert torch.isinf(naive[0]) and torch.isinf(naive[1])
    # A bit further, it is finite but wrong by a large relative error.
    naive_error = ((naive.double() - reference) / reference).abs()
    stable_error = ((stable.double() - reference) / reference).abs()
    assert naive_error[2] > 5e-3 and stable_error[2] < 1e-6  # l = -1e-7: 1% off
    # Everywhere else (l = -60 aside, where log(1 - p) ~ -1e-26 and both round to 0) it is no worse.
    assert (stable_error[:-1] <= naive_error[:-1] + 1e-7).all()


def test_orpo_loss_is_finite_near_certain_chosen(trainer):
    chosen = torch.tensor([-1e-9, -1e-8])  # float32 exp() rounds these to exactly 1.0
    rejected = torch.tensor([-2.0, -1e-3])
    assert (chosen.exp() == 1.0).all()
    losses, *_ = trainer.odds_ratio_loss(chosen, rejected)
    assert torch.isfinite(losses).all()
    naive_log_odds = torch.log(chosen.exp() / (1 - chosen.exp()))
    assert torch.isinf(naive_log_odds).all()  # p / (1 - p) = 1 / 0
    torch.testing.assert_close(
        losses.double(), BETA * F.logsigmoid(log_odds64(chosen) - log_odds64(rejected)), **TOL
    )


# ---------------------------------------------------------------------------------------------
# The trainer's per-sequence log-probabilities and total loss, on the tiny model
# ---------------------------------------------------------------------------------------------


def test_orpo_sequence_logps_are_per_token_averages(trainer):
    batch = first_batch(trainer)
    with torch.no_grad():
        chosen_logps, rejected_logps, *_ = trainer.concatenated_forward(trainer.model, batch)
    ours = our_pairs(trainer)
    assert len({c["n_completion"] for c, _ in ours}) > 1, "completions need different lengths"
    expected_chosen = torch.stack([c["average"] for c, _ in ours]).float()
    expected_rejected = torch.stack([r["average"] for _, r in ours]).float()
    torch.testing.assert_close(chosen_logps, expected_chosen, **TOL)
    torch.testing.assert_close(rejected_logps, expected_rejected, **TOL)
    # Not the sum: with lengths > 1 the two are far apart.
    sums = torch.stack([c["sum"] for c, _ in ours]).float()
    assert (chosen_logps - sums).abs().min() > 0.1


def test_orpo_total_loss_is_nll_minus_beta_log_sigmoid(trainer):
    batch = first_batch(trainer)
    trainer._stored_metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, dict(batch)).detach()
    ours = our_pairs(trainer)
    # NLL of the chosen sequences, a token-level mean over the batch, prompt tokens INCLUDED.
    nll = sum(c["all_nll_sum"] for c, _ in ours) / sum(c["all_count"] for c, _ in ours)
    chosen = torch.stack([c["average"] for c, _ in ours])
    rejected = torch.stack([r["average"] for _, r in ours])
    odds_term = F.logsigmoid(log_odds64(chosen) - log_odds64(rejected)).mean()
    expected = nll - BETA * odds_term
    torch.testing.assert_close(loss.double(), expected, **TOL)
    stored = trainer._stored_metrics["train"]
    assert stored["nll_loss"][-1] == pytest.approx(nll.item(), rel=1e-5)
    accuracy = (chosen > rejected).double().mean().item()
    assert stored["rewards/accuracies"][-1] == pytest.approx(accuracy)
    margin = (BETA * (chosen - rejected)).mean().item()
    assert stored["rewards/margins"][-1] == pytest.approx(margin, rel=1e-4, abs=1e-6)
    # Negative control: an NLL on the completion tokens only (as in CPO) gives another loss.
    completion_nll = sum(c["completion_nll_sum"] for c, _ in ours) / sum(
        c["n_completion"] for c, _ in ours
    )
    assert abs(completion_nll - nll) > 1e-2


def test_orpo_gradient_of_odds_term_matches_paper(trainer):
    # Paper, Eq. 9-10: d/dtheta of -log sigma(log OR) = -delta * h, with
    # delta = sigma(-log OR) and h = dl_w / (1 - p_w) - dl_l / (1 - p_l).
    # Checked on the scalar inputs l_w, l_l (the chain rule through the model is autograd's).
    ell = torch.tensor([-0.7, -1.9], dtype=torch.float64, requires_grad=True)
    log_or = log_odds64(ell[0:1]) - log_odds64(ell[1:2])
    (-F.logsigmoid(log_or)).sum().backward()
    p = ell.detach().exp()
    delta = torch.sigmoid(-log_or.detach())
    expected = -delta * torch.stack([1 / (1 - p[0]), -1 / (1 - p[1])]).squeeze()
    torch.testing.assert_close(ell.grad, expected.squeeze())
