"""RLOO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Both variants add the tiny reward model to the arithmetic reward (tests/support/group_smoke.py says
why).
"""

import math

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
    return group_smoke.case_args("rloo", tiny, data_format, extra, out)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_rloo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    logs = group_smoke.reward_logs(out)
    if "--beta" in extra:
        assert all("kl" not in row for row in logs)  # beta = 0: no reference model, no KL
    else:
        # RLOO's per-token KL is log pi_old - log pi_ref: 0 before the first update, and it may
        # be negative token by token (unlike GRPO's k3 estimator).
        assert all(math.isfinite(row["kl"]) for row in logs) and logs[-1]["kl"] != 0

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
