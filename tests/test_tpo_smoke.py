"""TPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two cases: the default sigmoid loss on triple-preference rows (full fine-tuning; the tiny
tokenizer has a chat template, so the script renders the plain rows as chat turns), run as a
subprocess, and TPO-L (`loss_type=tpo-l`) with LoRA on implicit triples, where TRL splits the
shared prompt off all three answers, run in-process (tests/support/smoke.py). Flags override the
tiny recipe. The other loss types differ only inside `_compute_loss`, checked in
tests/test_tpo_math.py.
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
    "tpo-l-implicit-lora": (
        "implicit_triple_preference",
        ["--loss_type", "tpo-l", "--beta", "2.0", *LORA],
    ),
    "tpo-sigmoid-triple": ("triple_preference", []),
}
CLI_CASE = "tpo-sigmoid-triple"
# Every metric TPOTrainer 1.16 logs, besides the Trainer's own (loss, grad_norm, ...).
METRICS = [
    "entropy",
    "num_tokens",
    "mean_token_accuracy",
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
    return pair_smoke.case_args("tpo", tiny, data_format, extra, out, STEPS)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_tpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    train_rows, _ = pair_smoke.logged_rows(out, METRICS, STEPS)
    for row in train_rows:
        assert row["rewards/chosen"] < 0 and row["rewards/rejected"] < 0  # beta * log p
        # The loss holds the NLL of the gold answer (alpha 1): far above the preference term
        # alone, which is at most a few units for a random model.
        assert row["loss"] > 1.0
    assert train_rows[1]["num_tokens"] > train_rows[0]["num_tokens"] > 0

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
