"""CPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two cases: the default sigmoid loss on standard preference rows (full fine-tuning), run as a
subprocess, and SimPO (`loss_type=simpo`, `cpo_alpha=0`) with LoRA on implicit preference
rows, where TRL extracts the shared prompt, run in-process (tests/support/smoke.py). Flags
override the tiny recipe. The other loss
types differ only inside `cpo_loss`, checked in tests/test_cpo_math.py.
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
    "cpo-simpo-implicit-lora": (
        "implicit_preference",
        ["--loss_type", "simpo", "--cpo_alpha", "0", "--beta", "2.0", *LORA],
    ),
    "cpo-sigmoid-preference": ("preference", []),
}
CLI_CASE = "cpo-sigmoid-preference"
# Every metric CPOTrainer 1.16 logs, besides the Trainer's own (loss, grad_norm, ...).
METRICS = [
    "nll_loss",
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
    return pair_smoke.case_args("cpo", tiny, data_format, extra, out, STEPS)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_cpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    train_rows, _ = pair_smoke.logged_rows(out, METRICS, STEPS)
    for row in train_rows:
        assert row["rewards/chosen"] < 0 and row["rewards/rejected"] < 0  # beta * log p
        if "--cpo_alpha" in extra:
            assert row["nll_loss"] == 0.0  # SimPO: no NLL term at all
        else:
            assert row["nll_loss"] > 0

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
