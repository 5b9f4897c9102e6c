"""Online DPO smoke tests: the example script, run as a user runs it, trains and saves a usable
model.

The tiny random policy almost never solves a problem, so the arithmetic reward alone ties 0-0 on
nearly every pair; the tiny recipe therefore also uses the tiny reward model, whose scores
always differ. Measured on the tiny recipe (seed 42, 2 CPU cores, 30 steps): loss 0.695 -> 0.682,
`rewards/accuracies` 0.30 -> 0.75, `objective/kl` 0.09 nats at the end; each case below (4 steps)
takes about 15 s, mostly imports.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/online_dpo_tiny.yaml"
BETA = 0.1

# CLI_CASE runs as a subprocess, the other variant in-process (tests/support/smoke.py).
# Flags override the tiny recipe.
CASES = {
    # Plain-text prompts, LoRA (the reference is the adapter-disabled model), IPO loss, and an
    # EOS penalty larger than any tiny score: a completion without EOS always loses to one with.
    "online_dpo-standard-lora-ipo": (
        "prompt_only",
        [
            *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
            *["--loss_type", "ipo", "--missing_eos_penalty", "1.0"],
        ],
    ),
    # Conversational prompts, full fine-tuning (a frozen copy is the reference), sigmoid loss.
    "online_dpo-conversational-sigmoid": ("conversational_prompt_only", []),
}
CLI_CASE = "online_dpo-conversational-sigmoid"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "online_dpo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--reward_model_path", tiny.reward, "--reward_weights", "1.0", "0.5"],
        *["--max_steps", "4", "--logging_steps", "2", "--beta", str(BETA), *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_online_dpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = log_history(out)
    logs = [row for row in history if "rewards/margins" in row]
    assert len(logs) == 2  # max_steps 4, logging_steps 2
    for row in logs:
        assert row["beta"] == pytest.approx(BETA)
        # The chosen completion is the higher-scored one: the external margin is never negative.
        assert row["objective/scores_margin"] >= 0
        assert math.isfinite(row["objective/scores"])
        # DPO's implicit reward: margins = chosen - rejected, accuracy a fraction.
        margin = row["rewards/chosen"] - row["rewards/rejected"]
        assert row["rewards/margins"] == pytest.approx(margin, abs=1e-4)
        assert 0.0 <= row["rewards/accuracies"] <= 1.0
        # Non-score reward is -beta x KL; the RLHF reward is score + non-score reward.
        assert row["objective/non_score_reward"] == pytest.approx(
            -BETA * row["objective/kl"], rel=1e-3, abs=1e-6
        )
        expected = row["objective/scores"] + row["objective/non_score_reward"]
        assert row["objective/rlhf_reward"] == pytest.approx(expected, abs=1e-4)
        # Sequence log-probabilities of sampled tokens are negative; their negation, positive.
        assert row["logps/chosen"] < 0 and row["logps/rejected"] < 0
        assert row["objective/entropy"] > 0
        assert 0.0 <= row["val/contain_eos_token"] <= 1.0
        assert math.isfinite(row["loss"]) and row["grad_norm"] > 0
        if "ipo" in case:
            assert row["loss"] >= 0  # a square
        else:
            # -log sigmoid(beta * h) with |beta * h| small: close to ln 2 on these short runs.
            assert row["loss"] == pytest.approx(math.log(2), abs=0.05)

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
