"""XPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Measured on the tiny recipe (seed 42, 2 shared CPU cores): each case below (4 steps of 8 prompts)
takes 30-60 s, mostly imports and sampling. The DPO term starts at ln 2 (policy = reference);
with alpha 1e-3 the exploration term is about -0.05 (a sequence log-prob near -47).
"""

import math

import pytest
from support.online_pair import assert_finite_logs
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/xpo_tiny.yaml"
BETA, ALPHA = 0.1, 1e-3

# CLI_CASE runs as a subprocess, the other in-process (tests/support/smoke.py).
CASES = {
    # Chat prompts, full fine-tuning (a frozen copy is the reference), DPO's sigmoid loss.
    "xpo-conversational-sigmoid": ("conversational_prompt_only", ["--missing_eos_penalty", "1.0"]),
    # Plain prompts, LoRA (the reference, which also samples, is the adapter-disabled policy),
    # IPO's squared loss.
    "xpo-standard-lora-ipo": (
        "prompt_only",
        [
            *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
            *["--loss_type", "ipo"],
        ],
    ),
}
CLI_CASE = "xpo-conversational-sigmoid"
METRICS = ("loss", "loss/dpo", "loss/xpo", "objective/kl", "objective/scores_margin")


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "xpo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--reward_model_path", tiny.reward, "--reward_weights", "1.0", "0.5"],
        *["--max_steps", "4", "--logging_steps", "2", "--beta", str(BETA)],
        *["--alpha", str(ALPHA), *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_xpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = log_history(out)
    logs = [row for row in history if "loss/xpo" in row]
    assert len(logs) == 2  # max_steps 4, logging_steps 2
    assert_finite_logs(logs, METRICS)
    for row in logs:
        assert row["beta"] == BETA and row["alpha"] == ALPHA
        # The logged loss is the DPO term plus the exploration term (loss rounded to 4 digits).
        assert row["loss"] == pytest.approx(row["loss/dpo"] + row["loss/xpo"], abs=2e-4)
        assert -ALPHA * 200 < row["loss/xpo"] < 0  # alpha x a log-prob of 8 tokens
        margin = row["objective/model_scores"] - row["objective/ref_scores"]
        assert row["objective/scores_margin"] == pytest.approx(margin, abs=1e-5)
        implicit = row["rewards/chosen"] - row["rewards/rejected"]
        assert row["rewards/margins"] == pytest.approx(implicit, abs=1e-5)
        assert 0.0 <= row["rewards/accuracies"] <= 1.0
        if "ipo" in case:
            assert row["loss/dpo"] >= 0  # a square
        else:
            assert row["loss/dpo"] == pytest.approx(math.log(2), abs=0.05)
    if "--missing_eos_penalty" in extra:
        assert logs[0]["val/model_contain_eos_token"] < 1.0
        assert logs[0]["objective/model_scores"] < -0.5  # penalised: no EOS in most completions

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
