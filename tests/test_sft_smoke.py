"""SFT smoke tests: the example script, run as a user runs it, trains and saves a usable model.

One variant per data shape SFT accepts, plus LoRA: the recipe's own shape (conversational) runs
as a subprocess, the others in-process (tests/support/smoke.py). Two-process `accelerate launch`
runs are in tests/test_distributed.py.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/sft_tiny.yaml"

# One variant per data shape SFT accepts, plus LoRA. Flags override the tiny recipe.
CASES = {
    "sft-text": ("language_modeling", ["--assistant_only_loss", "false"]),
    "sft-prompt-completion": ("prompt_completion", ["--assistant_only_loss", "false"]),
    "sft-conversational-prompt-completion": ("conversational_prompt_completion", []),
    "sft-lora": (
        "conversational_language_modeling",
        ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
    ),
    "sft-conversational": ("conversational_language_modeling", []),
}
CLI_CASE = "sft-conversational"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "sft_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--max_steps", "20", "--logging_steps", "5", "--eval_steps", "10", *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_sft_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = log_history(out)
    train_losses = [row["loss"] for row in history if "loss" in row]
    eval_losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    assert len(train_losses) == 4 and len(eval_losses) == 2  # logging_steps 5, eval_steps 10
    assert all(math.isfinite(x) for x in train_losses + eval_losses)
    accuracies = [row["mean_token_accuracy"] for row in history if "mean_token_accuracy" in row]
    assert all(0.0 <= a <= 1.0 for a in accuracies)

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
