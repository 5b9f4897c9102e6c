"""The equations of reference_guides/reward.md, computed independently and compared with TRL.

A real `RewardTrainer` (TRL 1.16.0) is built once on the tiny sequence-classification fixture.
Loss and metric tests feed `compute_loss` a stand-in model that returns fixed rewards, so the
numbers are known exactly; the head tests run the real model on a batch the trainer collated and
recompute the reward from the transformer's hidden states and the score weight by hand.
"""

import json
import math
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from trl import RewardConfig, RewardTrainer

pytestmark = pytest.mark.math

TOL = {"atol": 1e-6, "rtol": 1e-6}

# Fixed rewards for a batch of B = 4 pairs: chosen first, then rejected (the collator's order).
CHOSEN = torch.tensor([1.5, -0.25, 0.75, 2.0])
REJECTED = torch.tensor([0.5, 0.25, -1.0, 2.5])
MARGIN = torch.tensor([0.5, 0.0, 1.0, 0.25])


def read_rows(tiny, fmt: str, n: int) -> list[dict]:
    lines = (tiny.data / fmt / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def make_trainer(tiny, tmp_path, rows, tokenizer=None, **overrides) -> RewardTrainer:
    settings = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "report_to": "none",
        "max_length": 64,
        "per_device_train_batch_size": 4,
        "seed": 0,
        "disable_tqdm": True,
    }
    settings.update(overrides)
    trainer = RewardTrainer(
        model=AutoModelForSequenceClassification.from_pretrained(tiny.reward),
        args=RewardConfig(**settings),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer or AutoTokenizer.from_pretrained(tiny.reward),
    )
    trainer.model.train()  # `compute_loss` files its metrics under "train" only in training mode
    return trainer


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    return make_trainer(
        tiny, tmp_path_factory.mktemp("reward_math"), read_rows(tiny, "preference", 8)
    )


class FixedRewards(torch.nn.Module):
    """Stands in for the model: returns the given rewards as (2B, 1) logits, whatever the input."""

    def __init__(self, rewards: torch.Tensor):
        super().__init__()
        self.rewards = torch.nn.Parameter(rewards.clone().unsqueeze(-1))

    def forward(self, **inputs):
        return SimpleNamespace(logits=self.rewards)


def fixed_inputs(margin=None) -> dict:
    attention_mask = torch.ones(8, 5, dtype=torch.long)
    attention_mask[2:, 3:] = 0  # 2 * 5 + 6 * 3 = 28 real tokens
    inputs = {"input_ids": torch.zeros(8, 5, dtype=torch.long), "attention_mask": attention_mask}
    if margin is not None:
        inputs["margin"] = margin
    return inputs


def bradley_terry(chosen, rejected, margin=None, center=None) -> torch.Tensor:
    """Our own loss: mean of log(1 + exp(-(r_w - r_l - mu))) plus eta * mean (r_w + r_l)^2."""
    difference = chosen - rejected - (0.0 if margin is None else margin)
    loss = torch.log1p(torch.exp(-difference)).mean()
    if center is not None:
        loss = loss + center * ((chosen + rejected) ** 2).mean()
    return loss


def library_loss(trainer, margin=None, center=None):
    previous = trainer.args.center_rewards_coefficient
    trainer.args.center_rewards_coefficient = center
    try:
        model = FixedRewards(torch.cat([CHOSEN, REJECTED]))
        loss = trainer.compute_loss(model, fixed_inputs(margin))
    finally:
        trainer.args.center_rewards_coefficient = previous
    return loss, model


# ---------------------------------------------------------------------------------------------
# Loss
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "margin, center",
    [(None, None), (MARGIN, None), (None, 0.01), (MARGIN, 0.5)],
    ids=["reward-bt", "reward-bt-margin", "reward-bt-center", "reward-bt-margin-center"],
)
def test_reward_loss_matches_bradley_terry(trainer, margin, center):
    loss, model = library_loss(trainer, margin, center)
    torch.testing.assert_close(
        loss.detach(), bradley_terry(CHOSEN, REJECTED, margin, center), **TOL
    )

    # Gradient: d/d r_w = -sigma(-(d)) / B + 2 eta (r_w + r_l) / B, and d/d r_l is minus the
    # first term plus the same centring term.
    (grad,) = torch.autograd.grad(loss, model.rewards)
    difference = CHOSEN - REJECTED - (0.0 if margin is None else margin)
    push = torch.sigmoid(-difference) / len(CHOSEN)
    centring = 2 * (center or 0.0) * (CHOSEN + REJECTED) / len(CHOSEN)
    expected = torch.cat([-push + centring, push + centring])
    torch.testing.assert_close(grad.squeeze(-1), expected, **TOL)


def test_reward_loss_sees_only_differences_unless_centred(trainer):
    # Adding the same constant to every reward leaves Bradley-Terry unchanged; centring is not.
    for center, should_change in ((None, False), (0.01, True)):
        trainer.args.center_rewards_coefficient = center
        try:
            base = trainer.compute_loss(FixedRewards(torch.cat([CHOSEN, REJECTED])), fixed_inputs())
            shifted = trainer.compute_loss(
                FixedRewards(torch.cat([CHOSEN, REJECTED]) + 3.0), fixed_inputs()
            )
        finally:
            trainer.args.center_rewards_coefficient = None
        assert (abs(shifted.item() - base.item()) > 1e-3) is should_change


def test_reward_loss_of_indifferent_model_is_log_two(trainer):
    # A model that gives both completions the same reward: sigma(0) = 1/2, loss ln 2.
    model = FixedRewards(torch.full((8,), 0.3))
    loss = trainer.compute_loss(model, fixed_inputs())
    assert loss.item() == pytest.approx(math.log(2))


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_reward_metrics_equal_their_definitions(trainer):
    trainer._metrics["train"].clear()
    trainer._total_train_tokens = 0
    trainer.compute_loss(FixedRewards(torch.cat([CHOSEN, REJECTED])), fixed_inputs())
    metrics = trainer._metrics["train"]
    everything = torch.cat([CHOSEN, REJECTED])
    assert metrics["accuracy"] == [pytest.approx((CHOSEN > REJECTED).float().mean().item())]
    assert metrics["accuracy"] == [0.5]  # pairs 1 and 3 are right, 2 and 4 wrong
    assert metrics["margin"] == [pytest.approx((CHOSEN - REJECTED).mean().item())]
    assert metrics["min_reward"] == [everything.min().item()]
    assert metrics["max_reward"] == [everything.max().item()]
    assert metrics["mean_reward"] == [pytest.approx(everything.mean().item())]
    assert metrics["num_tokens"] == [28]  # the attention mask's sum, chosen and rejected

    # A tie is not a success: accuracy uses a strict >.
    trainer.compute_loss(FixedRewards(torch.zeros(8)), fixed_inputs())
    assert metrics["accuracy"][-1] == 0.0
    assert metrics["num_tokens"] == [56]  # cumulative

    # At logging time each metric is the plain mean of its per-step values.
    trainer.log({"loss": 0.0})
    logged = trainer.state.log_history[-1]
    assert logged["accuracy"] == pytest.approx(0.25)
    assert logged["margin"] == pytest.approx((CHOSEN - REJECTED).mean().item() / 2)
    assert logged["num_tokens"] == 56


def test_reward_margin_column_does_not_change_the_metrics(trainer):
    # The logged margin is the raw mean reward gap, not the gap minus the dataset's margin.
    trainer._metrics["train"].clear()
    trainer.compute_loss(FixedRewards(torch.cat([CHOSEN, REJECTED])), fixed_inputs(MARGIN))
    assert trainer._metrics["train"]["margin"] == [pytest.approx((CHOSEN - REJECTED).mean().item())]
    assert trainer._metrics["train"]["accuracy"] == [0.5]


# ---------------------------------------------------------------------------------------------
# The head: the reward is the score of the last non-pad token
# ---------------------------------------------------------------------------------------------


def head_by_hand(model, input_ids, attention_mask, pad_token_id) -> torch.Tensor:
    """Reward from the body's hidden states and the score weight, at the last non-pad token."""
    hidden = model.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
    positions = torch.arange(input_ids.shape[1])
    last = torch.where(input_ids != pad_token_id, positions, -1).max(-1).values
    return hidden[torch.arange(len(input_ids)), last] @ model.score.weight.squeeze(0)


def test_reward_batch_is_chosen_then_rejected_with_eos(tiny, trainer):
    tokenizer = trainer.processing_class
    rows = read_rows(tiny, "preference", 4)
    prepared = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(
        [{k: r[k] for k in ("chosen_ids", "rejected_ids")} for r in prepared]
    )
    for i, row in enumerate(rows):
        for half, key in ((0, "chosen"), (4, "rejected")):
            # The explicit prompt is glued in front, and EOS is appended to plain text.
            ids = tokenizer(row["prompt"] + row[key] + tokenizer.eos_token)["input_ids"]
            input_ids = batch["input_ids"][half + i]
            assert input_ids[: len(ids)].tolist() == ids
            assert (input_ids[len(ids) :] == tokenizer.pad_token_id).all()  # right padding
            assert batch["attention_mask"][half + i].sum() == len(ids)


def test_reward_rewards_are_the_score_at_the_last_non_pad_token(trainer):
    batch = dict(next(iter(trainer.get_train_dataloader())))
    assert (batch["attention_mask"] == 0).any(), "the batch needs padding"
    model = trainer.model
    with torch.no_grad():
        loss, outputs = trainer.compute_loss(model, dict(batch), return_outputs=True)
        ours = head_by_hand(model, batch["input_ids"], batch["attention_mask"], 0)
        # The same position read from the attention mask: the last real token, here the EOS.
        hidden = model.model(**{k: batch[k] for k in ("input_ids", "attention_mask")})
        last = batch["attention_mask"].sum(-1) - 1
        by_mask = hidden.last_hidden_state[torch.arange(len(last)), last] @ model.score.weight[0]
    torch.testing.assert_close(outputs.logits.squeeze(-1), ours, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours, by_mask, atol=1e-5, rtol=1e-5)
    chosen, rejected = ours.chunk(2)
    torch.testing.assert_close(loss, bradley_terry(chosen, rejected), atol=1e-5, rtol=1e-5)


def test_reward_pad_equal_to_eos_reads_the_token_before_eos(tiny, tmp_path):
    # When pad = EOS, the appended EOS looks like padding: the reward moves one token left.
    tokenizer = AutoTokenizer.from_pretrained(tiny.reward)
    tokenizer.pad_token = tokenizer.eos_token
    trainer = make_trainer(tiny, tmp_path, read_rows(tiny, "preference", 4), tokenizer=tokenizer)
    model = trainer.model
    assert model.config.pad_token_id == tokenizer.eos_token_id  # TRL copies it onto the config
    batch = dict(next(iter(trainer.get_train_dataloader())))
    with torch.no_grad():
        rewards = model(**batch).logits.squeeze(-1)
        hidden = model.model(**batch).last_hidden_state
    last_real = batch["attention_mask"].sum(-1) - 1
    assert (
        batch["input_ids"][torch.arange(len(last_real)), last_real] == tokenizer.eos_token_id
    ).all()
    at_eos = hidden[torch.arange(len(last_real)), last_real] @ model.score.weight[0]
    before_eos = hidden[torch.arange(len(last_real)), last_real - 1] @ model.score.weight[0]
    torch.testing.assert_close(rewards, before_eos, atol=1e-5, rtol=1e-5)
    assert (rewards - at_eos).abs().max() > 1e-4


def test_reward_explicit_and_implicit_prompts_tokenise_the_same(tiny, tmp_path):
    explicit = read_rows(tiny, "preference", 4)
    implicit = [
        {"chosen": r["prompt"] + r["chosen"], "rejected": r["prompt"] + r["rejected"]}
        for r in explicit
    ]
    a = make_trainer(tiny, tmp_path / "a", explicit).train_dataset
    b = make_trainer(tiny, tmp_path / "b", implicit).train_dataset
    assert a["chosen_ids"] == b["chosen_ids"] and a["rejected_ids"] == b["rejected_ids"]


def test_reward_pairs_longer_than_max_length_are_dropped(tiny, tmp_path):
    rows = read_rows(tiny, "preference", 4)
    rows[2] = {**rows[2], "rejected": rows[2]["rejected"] + " and so on" * 20}
    prepared = make_trainer(tiny, tmp_path, rows, max_length=32).train_dataset
    assert len(prepared) == 3  # the whole pair goes, though only its rejected side is too long
    assert all(len(r["chosen_ids"]) <= 32 and len(r["rejected_ids"]) <= 32 for r in prepared)
