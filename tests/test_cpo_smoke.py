"""CPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two cases: the default sigmoid loss on standard preference rows (full fine-tuning), run as a
subprocess, and SimPO (`loss_type=simpo`, `cpo_alpha=0`) with LoRA on implicit preference
rows, where TRL extracts the shared prompt, run in-process (tests/support/smoke.py). Flags
override the tiny recipe. The other loss
types differ only inside `cpo_loss`, checked in tests/test_cpo_math.py.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    train_and_eval_rows,
    trained,
)

RECIPE = "annotated_examples/recipes/cpo_tiny.yaml"
LORA = ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"]
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
    return [
        "cpo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--max_steps", "10", "--logging_steps", "5", "--eval_steps", "10", *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_cpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    train_rows, eval_rows = train_and_eval_rows(out)
    assert len(train_rows) == 2 and len(eval_rows) == 1  # logging_steps 5, eval_steps 10
    for row in train_rows:
        for name in ["loss", *METRICS]:
            assert math.isfinite(row[name]), (name, row)
        assert 0.0 <= row["rewards/accuracies"] <= 1.0
        assert row["rewards/chosen"] < 0 and row["rewards/rejected"] < 0  # beta * log p
        if "--cpo_alpha" in extra:
            assert row["nll_loss"] == 0.0  # SimPO: no NLL term at all
        else:
            assert row["nll_loss"] > 0
    for name in ["eval_loss", *(f"eval_{m}" for m in METRICS)]:
        assert math.isfinite(eval_rows[0][name]), name

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
