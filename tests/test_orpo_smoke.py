"""ORPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two cases: standard preference rows with full fine-tuning, run as a subprocess, and
conversational preference rows (rendered by the chat template) with LoRA, run in-process
(tests/support/smoke.py). Flags override the tiny recipe.
"""

import pytest
from support import pair_smoke
from support.script_runs import LORA
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    trained,
)

STEPS = 10
CASES = {
    "orpo-conversational-lora": ("conversational_preference", LORA),
    "orpo-preference": ("preference", []),
}
CLI_CASE = "orpo-preference"
# Every metric ORPOTrainer 1.16 logs, besides the Trainer's own (loss, grad_norm, ...).
METRICS = [
    "nll_loss",
    "log_odds_ratio",
    "log_odds_chosen",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
]


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return pair_smoke.case_args("orpo", tiny, data_format, extra, out, STEPS)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_orpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    train_rows, _ = pair_smoke.logged_rows(out, METRICS, STEPS)
    for row in train_rows:
        assert row["rewards/chosen"] < 0 and row["rewards/rejected"] < 0  # beta * mean log p
        assert row["log_odds_ratio"] < 0  # log sigmoid(.) is never positive

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
