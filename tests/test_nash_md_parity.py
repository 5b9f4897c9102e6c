"""Nash-MD parity: our `annotated_trl.trainers.nash_md` logs what trl 1.12.0's `NashMDTrainer`
logs, and differs where we fixed 1.12.

Each run is tests/parity_scenarios/nash_md.py in a fresh process, importing
`trl.experimental.nash_md` from trl 1.12.0 or ours (the only difference), on the tiny fixture:
the tiny policy, its frozen copy as reference, the `tiny/reward` reward model, 16 plain-text
prompt-only rows, seed 42, float32 on CPU, batch 4, 8 new tokens, temperature 0.9, lr 1e-3,
4 steps, a log every step. Both completions (the policy's and the geometric mixture's) are
sampled, so equal logs also mean equal samples.

Tolerance: `math.isclose(rel_tol=1e-6, abs_tol=1e-7)`. Measured (seed 42): every number of every
step is bit-for-bit equal (max |diff| 0): same samples, same float32 operations in the same order.
The tolerance only leaves room for a BLAS that reorders a sum; a behavioural difference (another
baseline than 1/2, the KL estimated on other tokens, a mixture without normalisation) moves
these numbers by 1e-3 or more.
"""

import os
import subprocess
import sys

import pytest
from support.parity import SCENARIOS, assert_same_logs, oracle_trl, run_scenario
from support.processes import OFFLINE_ENV

METRICS = (
    "loss/kl", "loss/score", "objective/entropy", "rewards/probabilities", "rewards/accuracies",
    "rewards/margins", "rewards/chosen", "rewards/rejected", "logps/chosen", "logps/rejected",
    "val/model_contain_eos_token", "val/ref_contain_eos_token", "beta", "mixture_coef",
)  # fmt: skip


@pytest.mark.parity
def test_nash_md_logs_what_trl_1_12_logs(tiny, tmp_path):
    # Plain-text prompts contain no EOS, so 1.12's EOS check agrees with ours: the penalty
    # (1.0, larger than any tiny score difference) applies identically in both.
    args = ["--tiny", tiny.root, "--missing_eos_penalty", 1.0, "--mixture_coef", 0.3]
    original = run_scenario("nash_md", "original", tmp_path, *args)
    ours = run_scenario("nash_md", "ours", tmp_path, *args)

    compared = assert_same_logs(original, ours, rel=1e-6, abs_=1e-7)
    steps = [row for row in ours if "loss" in row]
    assert len(steps) == 4 and all(set(METRICS) <= set(row) for row in steps)
    assert compared >= 4 * (len(METRICS) + 3)  # + loss, grad_norm, learning_rate
    assert all(row["mixture_coef"] == 0.3 for row in steps)
    # The run trains: the policy drifts from the reference after the first step.
    assert steps[0]["loss/kl"] == 0.0 and steps[-1]["loss/kl"] != 0.0


@pytest.mark.parity
def test_nash_md_eos_penalty_looks_at_the_completion_only(tiny, tmp_path):
    """The fix: with chat prompts (whose turns end in the EOS token `<|im_end|>`) trl 1.12 finds
    EOS in every row and never applies `missing_eos_penalty`; ours penalises each completion
    that has none. One step (4 prompts), so both runs sample the same completions from the same
    weights: ours must score exactly `penalty x (fraction without EOS)` lower, 1.12 not at all.
    """
    penalty = 2.0
    args = ["--tiny", tiny.root, "--data", "conversational_prompt_only", "--rows", 4]
    penalised = [*args, "--missing_eos_penalty", penalty]
    original = run_scenario("nash_md", "original", tmp_path / "penalty", *penalised)
    ours = run_scenario("nash_md", "ours", tmp_path / "penalty", *penalised)
    (a,), (b,) = ([r for r in log if "loss" in r] for log in (original, ours))

    pairs = {
        "rewards/chosen": "val/model_contain_eos_token",
        "rewards/rejected": "val/ref_contain_eos_token",
    }
    for score, eos in pairs.items():
        assert a[eos] == b[eos] < 1.0  # same samples, and some lack EOS
        # Ours subtracts the penalty from every completion without EOS (tests/test_nash_md_math.py
        # checks that row by row), so this gap means 1.12 subtracted it from none.
        assert b[score] == pytest.approx(a[score] - penalty * (1 - b[eos]), abs=1e-5)


@pytest.mark.parity
def test_nash_md_mixture_coef_per_epoch(tiny, tmp_path):
    """A list gives one coefficient per epoch. trl 1.12 indexed the list with the float
    `state.epoch` and raised TypeError on the second step; ours uses the epoch's integer part.
    8 rows, batch 4, 2 epochs: steps 1-2 are epoch 0, steps 3-4 epoch 1."""
    args = ["--tiny", tiny.root, "--rows", 8, "--epochs", 2, "--mixture_coef", 0.5, 0.25]
    ours = run_scenario("nash_md", "ours", tmp_path, *args)
    assert [row["mixture_coef"] for row in ours if "loss" in row] == [0.5, 0.5, 0.25, 0.25]

    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(oracle_trl())}
    command = [sys.executable, SCENARIOS / "nash_md.py", "--impl", "original"]
    command += ["--out", tmp_path / "original.json", *args]
    result = subprocess.run(
        list(map(str, command)), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode != 0
    assert "TypeError: list indices must be integers or slices, not float" in result.stderr
    assert not (tmp_path / "original.json").exists()
