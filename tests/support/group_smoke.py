"""What the GRPO and RLOO smoke tests share: both scripts sample a group of completions per prompt,
score them with a reward function and a reward model, and log the rewards the same way.

The tiny random policy almost never solves a problem, so the arithmetic reward alone is 0 for
nearly every completion and most groups have zero spread (no gradient). Each run therefore adds
the tiny reward model, whose scores always differ within a group: the weights must move.
"""

import math

import pytest

from support.smoke import log_history

MAX_COMPLETION = 8
STEPS, LOGGING_STEPS = 4, 2


def case_args(key: str, tiny, data_format: str, extra: list[str], out) -> list:
    return [
        f"{key}_training.py",
        *["--config", f"annotated_examples/recipes/{key}_tiny.yaml"],
        *["--model_name_or_path", tiny.policy, "--output_dir", out],
        *["--dataset_name", tiny.data / data_format],
        *["--reward_model_name_or_path", tiny.reward, "--reward_weights", "0.5", "1.0"],
        *["--num_generations", "4", "--per_device_train_batch_size", "8"],
        *["--max_completion_length", MAX_COMPLETION, "--max_steps", STEPS],
        *["--logging_steps", LOGGING_STEPS, *extra],
    ]


def reward_logs(out) -> list[dict]:
    """The logged training rows, each checked for what both trainers log about rewards."""
    history = log_history(out)
    logs = [row for row in history if "reward" in row]
    assert len(logs) == STEPS // LOGGING_STEPS
    for row in logs:
        # Both rewards are logged under their own names: the function's and the model folder's.
        assert 0.0 <= row["rewards/arithmetic_reward/mean"] <= 1.0
        assert math.isfinite(row["rewards/reward/mean"])
        # The summed reward uses the weights: 0.5 x reward model + 1.0 x arithmetic.
        expected = 0.5 * row["rewards/reward/mean"] + row["rewards/arithmetic_reward/mean"]
        assert row["reward"] == pytest.approx(expected, abs=1e-4)
        assert row["reward_std"] > 0  # the reward model separates completions
        assert 0.0 <= row["frac_reward_zero_std"] < 1.0
        assert 0 < row["completions/mean_length"] <= MAX_COMPLETION
        assert 0.0 <= row["completions/clipped_ratio"] <= 1.0
        assert 0.0 <= row["clip_ratio/region_mean"] <= 1.0
        assert row["entropy"] > 0
        assert math.isfinite(row["loss"])  # often ~0 on an on-policy step: not asserted > 0
    return logs
