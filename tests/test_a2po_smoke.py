"""A*-PO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

The tiny random policy almost never solves a problem: with the arithmetic reward alone, every
reward and every V* would be 0, and so would the regression's target and gradient (the weights
would not move). Both cases therefore add a format reward (tests/support/format_reward.py: 1.0
when the completion holds a number), weighted 0.5 beside the arithmetic reward's 0.5. Both train
on 32 prompts (`--train_max_samples`) with 2 reference samples each, for 4 steps of 8 prompts,
keeping every prompt (the tiny recipe's `filter_all_incorrect: false`).
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/a2po_tiny.yaml"
FORMAT_REWARD = "tests.support.format_reward.has_number"
METRICS = ("reward", "v_star", "advantage", "implicit_reward")

# CLI_CASE runs as a subprocess, the other variant in-process (tests/support/smoke.py).
# Flags override the tiny recipe.
CASES = {
    # Plain-text prompts, evaluated on 8 held-out prompts (stage 1 estimates V* for them too),
    # beta1 and beta2 both off their defaults.
    "a2po-standard-eval": (
        "prompt_only",
        [
            *["--eval_strategy", "steps", "--eval_steps", "4", "--eval_max_samples", "8"],
            *["--beta1", "0.3", "--beta2", "0.05"],
        ],
    ),
    # Conversational prompts, the recipe's settings.
    "a2po-conversational": ("conversational_prompt_only", []),
}
CLI_CASE = "a2po-conversational"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "a2po_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--reward_funcs", "annotated_trl.toy_task.arithmetic_reward", FORMAT_REWARD],
        *["--reward_weights", "0.5", "0.5"],
        *["--train_max_samples", "32", "--num_value_samples", "2"],
        *["--per_device_train_batch_size", "8", "--max_completion_length", "8"],
        *["--max_steps", "4", "--logging_steps", "2", *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_a2po_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = log_history(out)
    logs = [row for row in history if "v_star" in row]
    assert len(logs) == 2  # max_steps 4, logging_steps 2
    for row in logs:
        assert all(math.isfinite(row[k]) for k in (*METRICS, "loss", "grad_norm"))
        # Weighted 0.5 and 0.5, each 0 or 1: rewards in {0, 0.5, 1}, and V*, a soft maximum of
        # them, between 0 and 1; the format reward makes both positive.
        assert 0.0 < row["reward"] <= 1.0
        assert 0.0 < row["v_star"] <= 1.0
        # Batch means: mean(r - V*) = mean(r) - mean(V*), exactly up to float rounding.
        assert row["advantage"] == pytest.approx(row["reward"] - row["v_star"], abs=1e-5)
        assert row["loss"] >= 0  # a mean of squares
    # Two epochs of 32 prompts at 8 per step would be 8 steps: 4 steps are half an epoch each
    # (no prompt was dropped: the recipe keeps the never-solved ones).
    assert logs[-1]["epoch"] == pytest.approx(1.0)

    evals = [row for row in history if "eval_loss" in row]
    if "--eval_strategy" in extra:
        assert len(evals) == 1
        assert all(math.isfinite(evals[0][f"eval_{k}"]) for k in METRICS)
    else:
        assert not evals

    assert_saved_model_works(tiny, out, lora=False)
