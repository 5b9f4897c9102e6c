"""SDFT smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two cases. The recipe's defaults (frozen starting model as teacher, top-100 generalised JSD) on
`prompt` + `privileged_context` rows, run as a subprocess. Then LoRA with an EMA teacher on
conversational prompt + completion demonstrations (the script words each completion as the
teacher's context), full-vocabulary reverse KL, run in-process (tests/support/smoke.py): with
pure LoRA the moving-average teacher lives in a second adapter, "teacher", that PEFT saves
beside the student's. Flags override the tiny recipe. The losses themselves are checked in
tests/test_sdft_math.py.
"""

import math

import pytest
from safetensors.torch import load_file
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    train_and_eval_rows,
    trained,
)

RECIPE = "annotated_examples/recipes/sdft_tiny.yaml"
LORA = ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"]
CASES = {
    "sdft-lora-ema-demonstrations": (
        "conversational_prompt_completion",
        [*LORA, "--teacher_model_kind", "ema", "--distillation_mode", "full_logits"]
        + ["--distillation_alpha", "1.0"],
    ),
    "sdft-base-topk": ("privileged_context", []),
}
CLI_CASE = "sdft-base-topk"
# Every metric SDFTTrainer 1.16 logs, besides the Trainer's own (loss, grad_norm, ...).
METRICS = [
    "completions/mean_length",
    "completions/min_length",
    "completions/max_length",
    "completions/clipped_ratio",
    "completions/mean_terminated_length",
    "completions/min_terminated_length",
    "completions/max_terminated_length",
    "self_distillation/distillation_loss",
    "sdft/distillation_loss",
]


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "sdft_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--max_steps", "6", "--logging_steps", "3", "--eval_steps", "6", *extra],
        *["--eval_max_samples", "16"],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_sdft_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    train_rows, eval_rows = train_and_eval_rows(out)
    assert len(train_rows) == 2 and len(eval_rows) == 1  # logging_steps 3, eval_steps 6
    for row in train_rows:
        for name in ["loss", *METRICS]:
            assert math.isfinite(row[name]), (name, row)
        # Every divergence here is >= 0; the two names log the same number.
        assert row["sdft/distillation_loss"] == row["self_distillation/distillation_loss"] >= 0
        assert 0.0 <= row["completions/clipped_ratio"] <= 1.0
        assert 1 <= row["completions/min_length"] <= row["completions/max_length"] <= 16
    for name in ["eval_loss", *(f"eval_{m}" for m in METRICS)]:
        assert math.isfinite(eval_rows[0][name]), name

    lora = "--use_peft" in extra
    assert_saved_model_works(tiny, out, lora=lora)
    if lora:
        # The EMA teacher adapter is saved too, in its own folder; after 6 steps at rate 0.05
        # from zero it holds 1 - 0.95^6 = 26% of (a moving average of) the student's weights.
        teacher = load_file(out / "teacher" / "adapter_model.safetensors")
        student = load_file(out / "adapter_model.safetensors")
        assert teacher.keys() == student.keys()
        name = next(k for k in student if "lora_A" in k)
        ratio = (teacher[name].norm() / student[name].norm()).item()
        assert 0.15 < ratio < 0.4, ratio
