"""BCO parity: our `annotated_trl.trainers.bco` logs what trl 1.12.0's `BCOTrainer` logs.

Each case runs tests/parity_scenarios/bco.py twice, in fresh processes, once importing
`trl.experimental.bco` from trl 1.12.0 and once ours (the only difference), on the tiny fixture:
same policy, a reference model loaded from the same files, same data, seed 42, float32 on CPU,
8 optimiser steps of 2 accumulated micro-batches of 8 rows, a log every step, an evaluation every
4 steps. Every logged number is compared at every step: loss, grad_norm, learning_rate, epoch,
rewards/{chosen,rejected,margins}, logps/*, logits/*, delta, and all their eval_ twins.

Cases: thumbs-up/down rows with and without UDM (the density-ratio weights, clipped to
[0.9, 1.1] so that both clips act: the weights of this run range over 0.83-1.19 before clipping,
measured), and conversational *paired* rows (unpaired by the trainer, chat template applied,
completions cut to `max_length=24`), where the first 8 steps see only desirable rows.

Tolerance: `math.isclose(rel_tol=1e-6, abs_tol=1e-7)`. Measured (seed 42): loss, grad_norm and
eval_loss are bit-for-bit equal in the plain and UDM cases; the largest differences are 1.9e-6
on logps/logits (values ~55, relative 3.5e-8), 6e-5 on eval_logits/chosen (value -686, relative
9e-8), 1.5e-8 on eval_rewards/margins, and one float32 ulp (1.6e-7 relative) on one grad_norm
of the conversational case. Why not zero: trl 1.12 sums the logged values in a float32 tensor,
we sum Python floats; and 1.12 keeps δ's update in float32 where we use float64, so δ can land
one float32 ulp apart when it enters the loss. Margins are differences of two means of ~0.2, so
their absolute error is bounded by the rewards' float32 ulp (1.5e-8), hence the absolute floor.
A real behavioural difference (δ updated after the loss, a reward averaged instead of summed,
a UDM weight on desirable rows) moves these numbers by 1e-4 or more.

`total_flos` is not compared: it is `Trainer`'s FLOP estimate, computed only when a batch has an
`input_ids` key. 1.12's batches had `completion_input_ids` instead and reported 0.
"""

import pytest
from support.parity import assert_same_logs, run_scenario

CASES = {
    "bco-plain": [],
    "bco-udm": ["--udm", "--min_density_ratio", 0.9, "--max_density_ratio", 1.1],
    "bco-conversational-paired-truncated": [
        *["--data", "conversational_preference", "--max_length", 24]
    ],
}
EXACT = ("loss", "grad_norm", "learning_rate", "epoch", "eval_loss")


@pytest.mark.parity
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bco_logs_what_trl_1_12_logs(tmp_path, case):
    original = run_scenario("bco", "original", tmp_path, *CASES[case])
    ours = run_scenario("bco", "ours", tmp_path, *CASES[case])

    compared = assert_same_logs(original, ours, rel=1e-6, abs_=1e-7, ignore={"total_flos"})
    train_rows = [row for row in ours if "loss" in row]
    eval_rows = [row for row in ours if "eval_loss" in row]
    assert len(train_rows) == 8 and [row["step"] for row in eval_rows] == [4, 8]
    assert compared >= 8 * 10 + 2 * 8  # every train and eval metric, not a subset

    # δ moves: the running mean is really updated, not stuck at its initial 0.
    assert train_rows[0]["delta"] == 0.0 and train_rows[-1]["delta"] != 0.0
    if case != "bco-conversational-paired-truncated":
        for a, b in zip(original, ours, strict=True):
            for key in EXACT:
                assert a.get(key) == b.get(key), (case, a["step"], key, a.get(key), b.get(key))
    else:  # paired data unpaired in order: 128 desirable rows before any undesirable one
        assert all("rewards/rejected" not in row for row in train_rows)


@pytest.mark.parity
def test_bco_config_has_trl_1_12_fields_and_defaults(tmp_path):
    """Every field of trl 1.12.0's BCOConfig exists in ours with the same default.

    One documented exception: `train_sampling_strategy` defaults to "sequential" in ours. 1.12
    inherited "random" from TrainingArguments but ignored it, always reading rows in order.
    """
    from support.parity import config_defaults, original_config_defaults

    from annotated_trl.trainers.bco import BCOConfig

    original = original_config_defaults("bco", "BCOConfig", tmp_path)
    ours = config_defaults(BCOConfig)
    assert set(original) <= set(ours), set(original) - set(ours)
    different = {k: (v, ours[k]) for k, v in original.items() if ours[k] != v}
    assert different == {"train_sampling_strategy": ("'random'", "'sequential'")}
    for name in ("beta", "max_length", "learning_rate", "prompt_sample_size", "max_density_ratio"):
        assert name in original  # the comparison covers the BCO fields, not only inherited ones
