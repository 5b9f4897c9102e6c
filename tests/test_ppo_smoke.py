"""PPO smoke test: the example script, run as a user runs it (one subprocess, the tiny recipe on
conversational prompts, started ahead by tests/smoke_support.py), trains, logs finite metrics at
every update and saves a policy that reloads and generates.
"""

import math

import pytest
from smoke_support import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/ppo_tiny.yaml"
UPDATES = 4  # 32 episodes of 8 responses

# One variant, run as a subprocess (tests/smoke_support.py). Flags override the tiny recipe.
CASES = {"ppo-conversational": "conversational_prompt_only"}
CLI_CASE = "ppo-conversational"


def case_args(tiny, case, out):
    return [
        "ppo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--reward_model_path", tiny.reward, "--output_dir", out],
        *["--dataset_name", tiny.data / CASES[case], "--total_episodes", "32"],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_ppo_script_trains_and_saves(request, tiny, case):
    out = trained(request, case)

    history = log_history(out)
    assert [row["step"] for row in history] == list(range(1, UPDATES + 1))
    assert [row["episode"] for row in history] == [8 * s for s in range(1, UPDATES + 1)]
    for row in history:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, (int, float)))
        assert row["objective/entropy"] > 0
        assert 0 <= row["policy/clipfrac_avg"] <= 1 and 0 <= row["val/clipfrac_avg"] <= 1
        assert row["loss/value_avg"] > 0
        assert 0 <= row["val/num_eos_tokens"] <= 8 * 8  # 8 responses of at most 8 tokens
        # What PPO maximises: the score minus the KL penalty, summed over tokens.
        assert row["objective/rlhf_reward"] == pytest.approx(
            row["objective/scores"] + row["objective/non_score_reward"], abs=1e-5
        )
        assert row["objective/non_score_reward"] == pytest.approx(
            -0.05 * row["objective/kl"], abs=1e-6
        )
    # The policy starts as its reference: KL 0 up to rounding (sampling with a KV cache and the
    # reference's full forward pass round differently, ~1e-7).
    assert abs(history[0]["objective/kl"]) < 1e-4
    assert abs(history[-1]["objective/kl"]) > 1e-3  # and has moved by the last update
    assert history[0]["lr"] > history[-1]["lr"] > 0  # linear decay over the updates

    # The saved model is the policy (not the value model), with new weights.
    assert_saved_model_works(tiny, out, lora=False)
