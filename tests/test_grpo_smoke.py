"""GRPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Both variants add the tiny reward model to the arithmetic reward (tests/support/group_smoke.py says
why).
"""

import pytest
from support import group_smoke
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    trained,
)

# CLI_CASE runs as a subprocess, the other variant in-process (tests/support/smoke.py).
# Flags override the tiny recipe.
CASES = {
    # Plain-text prompts, LoRA adapters, GSPO-style sequence-level ratio, no std scaling.
    "grpo-standard-lora-gspo": (
        "prompt_only",
        [
            *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
            *["--importance_sampling_level", "sequence", "--loss_type", "grpo"],
            *["--scale_rewards", "none"],
        ],
    ),
    # Conversational prompts, KL on (a reference model is loaded), two weighted rewards.
    "grpo-conversational-kl": ("conversational_prompt_only", ["--beta", "0.04"]),
}
CLI_CASE = "grpo-conversational-kl"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return group_smoke.case_args("grpo", tiny, data_format, extra, out)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_grpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    logs = group_smoke.reward_logs(out)
    if "--beta" in extra:
        # Schulman's k3 estimator is >= 0 token by token; it is 0 at the first step only.
        assert all(row["kl"] >= 0 for row in logs) and logs[-1]["kl"] > 0
    else:
        assert all("kl" not in row for row in logs)  # beta = 0: no reference model, no KL

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
