"""SDPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

The tiny random policy almost never solves a problem: with the arithmetic reward alone no group
holds a success, no teacher prompt is built and the loss is exactly 0 (the weights would not
move). Both cases therefore add a format reward (tests/support/format_reward.py: 1.0 when the
completion holds a number), weighted 0.5 beside the arithmetic reward's 0.5, and lower
`success_reward_threshold` to 0.5: a completion with any number teaches its group.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/sdpo_tiny.yaml"
FORMAT_REWARD = "tests.support.format_reward.has_number"
PREFIX = "self_distillation/"
METRICS = tuple(
    PREFIX + name
    for name in (
        "reward_mean",
        "reward_std",
        "flat_group_fraction",
        "success_group_fraction",
        "success_sample_fraction",
        "reprompt_sample_fraction",
        "feedback_used_fraction",
        "distillation_loss",
    )
)

# CLI_CASE runs as a subprocess, the other variant in-process (tests/support/smoke.py).
# Flags override the tiny recipe.
CASES = {
    # Plain-text prompts with LoRA (the EMA teacher is a second adapter), the full-vocabulary
    # reverse KL mixed half and half with the clipped policy-gradient loss, evaluated once.
    "sdpo-text-lora-mixed-eval": (
        "prompt_only",
        [
            *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
            *["--distillation_mode", "full_logits", "--distillation_weight", "0.5"],
            *["--eval_strategy", "steps", "--eval_steps", "4", "--eval_max_samples", "8"],
            *["--per_device_eval_batch_size", "8"],
        ],
    ),
    # Conversational prompts, the recipe's settings (sampled-token loss, EMA teacher copy).
    "sdpo-conversational": ("conversational_prompt_only", []),
}
CLI_CASE = "sdpo-conversational"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "sdpo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--reward_funcs", "annotated_trl.toy_task.arithmetic_reward", FORMAT_REWARD],
        *["--reward_weights", "0.5", "0.5", "--success_reward_threshold", "0.5"],
        *["--per_device_train_batch_size", "16", "--max_completion_length", "8"],
        *["--max_steps", "4", "--logging_steps", "2", *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_sdpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = log_history(out)
    logs = [
        row for row in history if "loss" in row and "epoch" in row and PREFIX + "reward_mean" in row
    ]
    assert len(logs) == 2  # max_steps 4, logging_steps 2
    for row in logs:
        assert all(math.isfinite(row[k]) for k in (*METRICS, "loss", "grad_norm"))
        # Weighted 0.5 and 0.5, each 0 or 1: rewards in [0, 1]; the format reward makes some > 0.
        assert 0.0 < row[PREFIX + "reward_mean"] <= 1.0
        # Only successful siblings make teacher prompts here (no feedback column).
        assert row[PREFIX + "feedback_used_fraction"] == 0.0
        assert 0.0 < row[PREFIX + "reprompt_sample_fraction"] <= 1.0
        assert row[PREFIX + "reprompt_sample_fraction"] == row[PREFIX + "success_sample_fraction"]
        # The metric is also logged under the trainer's own name.
        assert row["sdpo/distillation_loss"] == row[PREFIX + "distillation_loss"]
        if "--distillation_weight" in extra:
            assert math.isfinite(row[PREFIX + "policy_loss"])
            assert row[PREFIX + "distillation_loss"] >= 0.0  # a true KL on the full vocabulary
        else:
            assert PREFIX + "policy_loss" not in row  # weight 1.0: no policy-gradient term

    evals = [row for row in history if "eval_loss" in row]
    if "--eval_strategy" in extra:
        assert len(evals) == 1
        assert all(math.isfinite(evals[0][f"eval_{k}"]) for k in METRICS)
    else:
        assert not evals

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
