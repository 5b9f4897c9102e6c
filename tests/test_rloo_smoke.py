"""RLOO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

The tiny random policy almost never solves a problem, so the arithmetic reward alone is 0 for
nearly every completion and most groups have zero spread (no gradient). Each run therefore adds
the tiny reward model, whose scores always differ within a group: the weights must move.
"""

import json
import math

import pytest

# cli_runs: the session's subprocess runs (a fixture this module must see).
from smoke_support import assert_saved_model_works, cli_runs, trained  # noqa: F401

RECIPE = "annotated_examples/recipes/rloo_tiny.yaml"
MAX_COMPLETION = 8

# CLI_CASE runs as a subprocess, the other variant in-process (tests/smoke_support.py).
# Flags override the tiny recipe.
CASES = {
    # Plain-text prompts, LoRA adapters, no KL, advantages normalised over the batch.
    "rloo-standard-lora": (
        "prompt_only",
        [
            *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
            *["--beta", "0", "--normalize_advantages", "true"],
        ],
    ),
    # Conversational prompts, the default KL penalty in the reward (a reference model is loaded).
    "rloo-conversational-kl": ("conversational_prompt_only", []),
}
CLI_CASE = "rloo-conversational-kl"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "rloo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--reward_model_name_or_path", tiny.reward, "--reward_weights", "0.5", "1.0"],
        *["--num_generations", "4", "--per_device_train_batch_size", "8"],
        *["--max_completion_length", str(MAX_COMPLETION), "--max_steps", "4"],
        *["--logging_steps", "2", *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_rloo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    logs = [row for row in history if "reward" in row]
    assert len(logs) == 2  # max_steps 4, logging_steps 2
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
    if "--beta" in extra:
        assert all("kl" not in row for row in logs)  # beta = 0: no reference model, no KL
    else:
        # RLOO's per-token KL is log pi_old - log pi_ref: 0 before the first update, and it may
        # be negative token by token (unlike GRPO's k3 estimator).
        assert all(math.isfinite(row["kl"]) for row in logs) and logs[-1]["kl"] != 0

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
