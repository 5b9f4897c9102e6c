"""The equations of reference_guides/kto.md, computed independently and compared with TRL.

Each test takes a batch that a real `KTOTrainer` (TRL 1.16.0) prepared and collated on the tiny
offline policy, and checks one equation against our own torch computation. Our sequence
log-probabilities come from the model's full logits; TRL's come from its fused LM head, which
never builds them, so agreement is a real check.

To pin the reference log-probabilities to chosen values, two trainers run with
`precompute_ref_log_probs=True`: the loss then reads `ref_logps` and `ref_KL_logps` from the batch,
and we overwrite them. One more trainer keeps the default path (a frozen reference model) with a
perturbed policy, to check the whole computation end to end.
"""

import json
import logging

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import KTOConfig, KTOTrainer
from trl.data_utils import extract_prompt

pytestmark = pytest.mark.math

TOL = {"atol": 1e-5, "rtol": 1e-5}
BATCH = 4


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def read_rows(tiny, fmt: str, n: int) -> list[dict]:
    lines = (tiny.data / fmt / "train.jsonl").read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def make_trainer(tiny, tmp_path, rows, model=None, **overrides) -> KTOTrainer:
    settings = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "activation_checkpointing": False,
        "report_to": "none",
        "max_length": 64,
        "per_device_train_batch_size": BATCH,
        "disable_tqdm": True,
        "seed": 0,
    }
    settings.update(overrides)
    trainer = KTOTrainer(
        model=model if model is not None else str(tiny.policy),
        args=KTOConfig(**settings),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )
    trainer.model.train()  # metrics are filed under "train" only in training mode
    return trainer


def first_batch(trainer: KTOTrainer) -> dict:
    return dict(next(iter(trainer.get_train_dataloader())))


def sequence_logps(model, input_ids, attention_mask, completion_mask) -> torch.Tensor:
    """Our own log pi(y | x): full logits, shift by one, gather, sum over completion tokens."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits.float()
    log_probs = logits[:, :-1].log_softmax(-1)
    targets = input_ids[:, 1:]
    token_logps = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return (token_logps * completion_mask[:, 1:]).sum(-1)


def own_logps(model, batch: dict, prefix: str = "") -> torch.Tensor:
    return sequence_logps(
        model,
        batch[f"{prefix}input_ids"],
        batch[f"{prefix}attention_mask"],
        batch[f"{prefix}completion_mask"],
    )


def kto_loss_by_hand(
    logps, ref_logps, kl_logps, ref_kl_logps, labels, beta, w_d, w_u, loss_type="kto"
) -> dict:
    """The reference guide's equations, written from the paper, not from TRL."""
    r = logps - ref_logps  # implicit reward log pi / pi_ref, one per row
    if loss_type == "kto":
        # z0: mean log-ratio on the mismatched pairs, no gradient, never below zero.
        z0 = (kl_logps - ref_kl_logps).mean().detach().clamp(min=0)
        desirable = w_d * (1 - torch.sigmoid(beta * (r - z0)))
        undesirable = w_u * (1 - torch.sigmoid(beta * (z0 - r)))
    else:  # apo_zero_unpaired: the reference point is 0
        z0 = torch.zeros(())
        desirable = w_d * (1 - torch.sigmoid(beta * r))
        undesirable = w_u * torch.sigmoid(beta * r)
    per_row = torch.where(labels, desirable, undesirable)
    return {"loss": per_row.mean(), "z0": z0, "r": r}


# ---------------------------------------------------------------------------------------------
# Loss, per loss_type, with fixed reference and KL log-probs
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def precomputed(tiny, tmp_path_factory):
    """One trainer per loss_type, both reading reference log-probs from the batch."""
    rows = read_rows(tiny, "unpaired_preference", 8)
    return {
        loss_type: make_trainer(
            tiny,
            tmp_path_factory.mktemp(f"kto_{loss_type}"),
            rows,
            loss_type=loss_type,
            precompute_ref_log_probs=True,
            beta=0.5,
            desirable_weight=1.5,
            undesirable_weight=0.75,
        )
        for loss_type in ("kto", "apo_zero_unpaired")
    }


# case -> (loss_type, offset of the reference log-probs, offset of the reference KL log-probs).
# Offsets are added to the policy's own log-probs, so r = -offset on every row, and the KL
# estimate is -offset too: +3 on the KL side makes it negative, which TRL clamps to 0.
LOSS_CASES = {
    "kto-positive-z0": ("kto", torch.tensor([1.0, -2.0, 0.5, 3.0]), -2.5),
    "kto-clamped-z0": ("kto", torch.tensor([1.0, -2.0, 0.5, 3.0]), 3.0),
    "kto-apo_zero_unpaired": ("apo_zero_unpaired", torch.tensor([1.0, -2.0, 0.5, 3.0]), 0.0),
}


@pytest.mark.parametrize("case", list(LOSS_CASES), ids=list(LOSS_CASES))
def test_kto_loss_matches_formula(precomputed, case):
    loss_type, ref_offset, kl_offset = LOSS_CASES[case]
    trainer = precomputed[loss_type]
    batch = first_batch(trainer)
    labels = batch["label"].bool()
    assert labels.any() and (~labels).any(), "the batch needs both labels"
    with torch.no_grad():
        logps = own_logps(trainer.model, batch)
        batch["ref_logps"] = logps + ref_offset
        if loss_type == "kto":
            kl_logps = own_logps(trainer.model, batch, "KL_")
            batch["ref_KL_logps"] = kl_logps + kl_offset
        else:
            assert "KL_input_ids" not in batch  # no mismatched pairs are even built
            kl_logps = torch.zeros(BATCH)
            batch["ref_KL_logps"] = kl_logps

    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, dict(batch))
    expected = kto_loss_by_hand(
        logps,
        batch["ref_logps"],
        kl_logps,
        batch["ref_KL_logps"],
        labels,
        beta=0.5,
        w_d=1.5,
        w_u=0.75,
        loss_type=loss_type,
    )
    torch.testing.assert_close(loss.detach(), expected["loss"], **TOL)

    metrics = trainer._metrics["train"]
    expected_kl = {"kto-positive-z0": 2.5, "kto-clamped-z0": 0.0}.get(case, 0.0)
    assert metrics["kl"][-1] == pytest.approx(expected_kl, abs=1e-5)
    # Rewards are beta * log-ratio, averaged per label; z0 does not enter them.
    r = expected["r"]
    assert metrics["rewards/chosen"][-1] == pytest.approx(0.5 * r[labels].mean().item(), abs=1e-5)
    assert metrics["rewards/rejected"][-1] == pytest.approx(
        0.5 * r[~labels].mean().item(), abs=1e-5
    )
    assert metrics["rewards/margins"][-1] == pytest.approx(
        metrics["rewards/chosen"][-1] - metrics["rewards/rejected"][-1]
    )
    assert metrics["logps/chosen"][-1] == pytest.approx(logps[labels].mean().item(), rel=1e-5)


def test_kto_loss_is_a_plain_mean_over_rows_not_a_weighted_mean(precomputed):
    # With weights 1.5 / 0.75 the loss is mean(w_i * l_i), not sum(w_i * l_i) / sum(w_i).
    trainer = precomputed["kto"]
    batch = first_batch(trainer)
    labels = batch["label"].bool()
    with torch.no_grad():
        logps = own_logps(trainer.model, batch)
        batch["ref_logps"], batch["ref_KL_logps"] = logps, torch.zeros(BATCH)
        kl = own_logps(trainer.model, batch, "KL_")
        batch["ref_KL_logps"] = kl  # r = 0 and z0 = 0: every row's unweighted loss is 1/2
    loss = trainer.compute_loss(trainer.model, dict(batch)).item()
    weights = torch.where(labels, 1.5, 0.75)
    assert loss == pytest.approx((weights * 0.5).mean().item(), rel=1e-6)
    assert abs(loss - 0.5) > 1e-2  # what a weight-normalised mean would give


# ---------------------------------------------------------------------------------------------
# End to end: a real reference model, a perturbed policy
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def perturbed(tiny, tmp_path_factory):
    rows = read_rows(tiny, "unpaired_preference", 8)
    trainer = make_trainer(tiny, tmp_path_factory.mktemp("kto_e2e"), rows)
    # Random noise usually *lowers* the log-prob of mismatched completions, so the KL estimate
    # would be negative and clamped to 0; this seed gives a positive one (0.999), which keeps
    # the reference point in play. Seeds 0-3 give -1.25 to -0.44.
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        for p in trainer.model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=generator))
    reference = AutoModelForCausalLM.from_pretrained(tiny.policy)
    return trainer, reference


def test_kto_per_sequence_logps_match_own_computation(perturbed):
    trainer, reference = perturbed
    batch = first_batch(trainer)
    with torch.no_grad():
        trl_logps, trl_kl_logps = trainer.compute_ref_log_probs(trainer.model, batch)
        ours, ours_kl = own_logps(trainer.model, batch), own_logps(trainer.model, batch, "KL_")
    torch.testing.assert_close(trl_logps, ours, **TOL)
    torch.testing.assert_close(trl_kl_logps, ours_kl, **TOL)
    # The sum runs over completion tokens only: the prompt is masked, and so is padding.
    assert (batch["completion_mask"].sum(-1) < batch["attention_mask"].sum(-1)).all()
    with torch.no_grad():
        ref_logps, _ = trainer.compute_ref_log_probs(trainer.ref_model, batch)
        torch.testing.assert_close(ref_logps, own_logps(reference, batch), **TOL)


def test_kto_loss_end_to_end_with_reference_model(perturbed):
    trainer, reference = perturbed
    batch = first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        expected = kto_loss_by_hand(
            own_logps(trainer.model, batch),
            own_logps(reference, batch),
            own_logps(trainer.model, batch, "KL_"),
            own_logps(reference, batch, "KL_"),
            batch["label"].bool(),
            beta=0.1,
            w_d=1.0,
            w_u=1.0,
        )
    assert expected["z0"] > 0, "the perturbed policy should have drifted from the reference"
    torch.testing.assert_close(loss.detach(), expected["loss"], **TOL)


def test_kto_reference_point_carries_no_gradient(perturbed):
    trainer, reference = perturbed
    batch = first_batch(trainer)
    params = [p for p in trainer.model.parameters() if p.requires_grad]
    trl_grads = torch.autograd.grad(trainer.compute_loss(trainer.model, dict(batch)), params)

    logps = own_logps(trainer.model, batch)
    kl_logps = own_logps(trainer.model, batch, "KL_")  # with gradient, on purpose
    with torch.no_grad():
        ref, ref_kl = own_logps(reference, batch), own_logps(reference, batch, "KL_")
    labels, beta = batch["label"].bool(), 0.1
    r = logps - ref
    z0_live = (kl_logps - ref_kl).mean().clamp(min=0)

    def loss_with(z0):
        per_row = torch.where(
            labels, 1 - torch.sigmoid(beta * (r - z0)), 1 - torch.sigmoid(beta * (z0 - r))
        )
        return per_row.mean()

    detached = torch.autograd.grad(loss_with(z0_live.detach()), params, retain_graph=True)
    live = torch.autograd.grad(loss_with(z0_live), params)
    for ours, theirs in zip(detached, trl_grads, strict=True):
        torch.testing.assert_close(theirs, ours, atol=1e-7, rtol=1e-4)
    # Negative control: letting the gradient through z0 gives a different update.
    assert max((a - b).abs().max() for a, b in zip(live, trl_grads, strict=True)) > 1e-6


def test_kto_value_gradient_signs():
    # d/dr of the desirable loss is -beta * s(1 - s) with s = sigma(beta (r - z0)): raising a
    # desirable reward lowers the loss; for an undesirable row raising r raises the loss.
    r = torch.tensor(0.7, requires_grad=True)
    beta, z0 = 0.5, 0.2
    s = torch.sigmoid(torch.tensor(beta * (0.7 - z0)))
    (g_d,) = torch.autograd.grad(1 - torch.sigmoid(beta * (r - z0)), r)
    (g_u,) = torch.autograd.grad(1 - torch.sigmoid(beta * (z0 - r)), r)
    torch.testing.assert_close(g_d, -beta * s * (1 - s))
    torch.testing.assert_close(g_u, beta * s * (1 - s))


def test_kto_value_is_concave_for_gains_and_convex_for_losses(precomputed):
    """The library's loss on desirable rows, read as a value v(r) = 1 - loss / w_d over a grid
    of implicit rewards r around z0: second differences negative above z0, positive below."""
    trainer = precomputed["kto"]
    batch = first_batch(trainer)
    batch["label"] = torch.ones_like(batch["label"])  # every row desirable
    with torch.no_grad():
        logps = own_logps(trainer.model, batch)
        kl_logps = own_logps(trainer.model, batch, "KL_")
    batch["ref_KL_logps"] = kl_logps - 1.0  # z0 = 1
    grid = torch.arange(-3.0, 5.5, 0.5)
    values = []
    for r in grid:
        batch["ref_logps"] = logps - r  # every row has the implicit reward r
        with torch.no_grad():
            loss = trainer.compute_loss(trainer.model, dict(batch))
        values.append(1 - loss.item() / 1.5)
    values = torch.tensor(values, dtype=torch.float64)
    second = values[2:] - 2 * values[1:-1] + values[:-2]  # at grid[1:-1]
    middle = grid[1:-1]
    assert (second[middle > 1.0] < 0).all() and (second[middle < 1.0] > 0).all()


# ---------------------------------------------------------------------------------------------
# Data: KL completions, unpairing, implicit prompts, the weight warning
# ---------------------------------------------------------------------------------------------


def test_kto_kl_completions_rotate_within_each_batch(precomputed):
    dataset = precomputed["kto"].train_dataset
    completions, kl = dataset["completion_ids"], dataset["KL_completion_ids"]
    for start in range(0, len(dataset), BATCH):
        chunk = completions[start : start + BATCH]
        # (x_1, y_n), (x_2, y_1), ..., (x_n, y_{n-1}): each prompt gets the previous completion.
        assert kl[start : start + BATCH] == [chunk[-1], *chunk[:-1]]
    # The collator builds the mismatched sequence from the row's own prompt.
    batch = first_batch(precomputed["kto"])
    prompt_len = (batch["completion_mask"] == 0) & (batch["attention_mask"] == 1)
    kl_prompt_len = (batch["KL_completion_mask"] == 0) & (batch["KL_attention_mask"] == 1)
    assert torch.equal(prompt_len.sum(-1), kl_prompt_len.sum(-1))


def test_kto_unpairs_preference_rows(tiny, tmp_path):
    pairs = read_rows(tiny, "preference", 3)
    trainer = make_trainer(tiny, tmp_path, pairs, per_device_train_batch_size=2)
    tokenizer = trainer.processing_class
    eos = tokenizer.eos_token
    # One map batch: all the chosen rows first (label True), then all the rejected ones.
    expected = [(p["prompt"], p["chosen"] + eos, True) for p in pairs]
    expected += [(p["prompt"], p["rejected"] + eos, False) for p in pairs]
    prepared = trainer.train_dataset
    assert len(prepared) == 2 * len(pairs)
    for row, (prompt, completion, label) in zip(prepared, expected, strict=True):
        assert row["label"] is label
        assert row["prompt_ids"] == tokenizer(prompt)["input_ids"]
        assert (
            row["prompt_ids"] + row["completion_ids"] == tokenizer(prompt + completion)["input_ids"]
        )


def test_kto_extracts_implicit_prompt_as_longest_common_prefix(tiny):
    rows = read_rows(tiny, "implicit_preference", 4)
    for row in rows:
        chosen, rejected = row["chosen"], row["rejected"]
        n = next(i for i, (a, b) in enumerate(zip(chosen, rejected, strict=False)) if a != b)
        if chosen[n - 1] == " ":  # the separating space goes with the completion
            n -= 1
        got = extract_prompt(row)
        assert got == {"prompt": chosen[:n], "chosen": chosen[n:], "rejected": rejected[n:]}
        # On the toy rows the shared prefix runs into the answer: "6 - 0 =" (and, for 28 vs 29,
        # even the "2") becomes part of the "prompt"; only the rest is trained on.
        assert got["prompt"].startswith("What is") and " = " in got["prompt"] + " "


def _weight_warnings(tiny, tmp_path, caplog, **weights) -> list[str]:
    rows = read_rows(tiny, "unpaired_preference", 32)
    desirable = [r for r in rows if r["label"]]
    undesirable = [r for r in rows if not r["label"]][:4]  # n_D = 16, n_U = 4
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        make_trainer(
            tiny, tmp_path, desirable + undesirable, loss_type="apo_zero_unpaired", **weights
        )
    return [r.getMessage() for r in caplog.records if "desirable_weight in [" in r.getMessage()]


def test_kto_warns_when_weights_are_out_of_the_papers_range(tiny, tmp_path, caplog):
    # n_D / n_U = 4: lambda_D n_D / (lambda_U n_U) must be in [1, 4/3]. TRL's bounds for
    # lambda_D are n_U / n_D * [1, 1.33] = [0.25, 0.33]; for lambda_U, n_D / n_U / [1.33, 1].
    assert _weight_warnings(tiny, tmp_path, caplog)  # 1.0 / 1.0: ratio 4, out of range
    (message,) = _weight_warnings(tiny, tmp_path, caplog, desirable_weight=2.0)
    assert "desirable_weight in [0.25, 0.33]" in message
    assert "undesirable_weight in [6.02, 8.0]" in message
    assert not _weight_warnings(tiny, tmp_path, caplog, desirable_weight=0.3)
    assert not _weight_warnings(tiny, tmp_path, caplog, undesirable_weight=3.5)
