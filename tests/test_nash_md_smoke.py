"""Nash-MD smoke tests: the example script, run as a user runs it, trains and saves a usable
model.

Measured on the tiny recipe (seed 42, 2 shared CPU cores): each case below (4 steps of 8 prompts)
takes 30-60 s, mostly imports and sampling. The tiny reward model's scores differ by about 0.1
between completions, so `rewards/probabilities` stays near 0.5; with chat prompts and
`missing_eos_penalty` 1.0 (applied, since ours looks for EOS in the completion only) most
completions lose 1.0.
"""

import pytest
from support.online_pair import assert_finite_logs
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/nash_md_tiny.yaml"
BETA = 0.1

# CLI_CASE runs as a subprocess, the other in-process (tests/support/smoke.py).
CASES = {
    # Chat prompts, full fine-tuning (a frozen copy is the reference), reward model + the
    # arithmetic reward, EOS penalty.
    "nash_md-conversational": (
        "conversational_prompt_only",
        ["--missing_eos_penalty", "1.0", "--mixture_coef", "0.5"],
    ),
    # Plain prompts, LoRA (the reference is the adapter-disabled policy, in the loss and in the
    # mixture sampler), a mixture leaning towards the policy.
    "nash_md-standard-lora": (
        "prompt_only",
        [
            *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
            *["--mixture_coef", "0.25"],
        ],
    ),
}
CLI_CASE = "nash_md-conversational"
METRICS = ("loss", "loss/kl", "loss/score", "rewards/probabilities", "rewards/chosen")


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "nash_md_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--reward_model_path", tiny.reward, "--reward_weights", "1.0", "0.5"],
        *["--max_steps", "4", "--logging_steps", "2", "--beta", str(BETA), *extra],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_nash_md_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = log_history(out)
    logs = [row for row in history if "rewards/probabilities" in row]
    assert len(logs) == 2  # max_steps 4, logging_steps 2
    assert_finite_logs(logs, METRICS)
    coef = float(extra[extra.index("--mixture_coef") + 1])
    for row in logs:
        assert row["beta"] == BETA and row["mixture_coef"] == coef
        assert 0.0 < row["rewards/probabilities"] < 1.0
        # Margins, KL and entropy are all read off the policy's own sample.
        margin = row["logps/chosen"] - row["logps/rejected"]
        assert row["rewards/margins"] == pytest.approx(margin, abs=1e-4)
        assert row["loss/kl"] == pytest.approx(row["rewards/margins"], abs=1e-4)
        assert row["objective/entropy"] == pytest.approx(-row["logps/chosen"], abs=1e-4)
        assert 0.0 <= row["rewards/accuracies"] <= 1.0
        assert row["logps/chosen"] < 0 and row["logps/rejected"] < 0
    if "--missing_eos_penalty" in extra:
        # Chat prompts: completions without EOS lose 1.0 (the fix; trl 1.12 never penalised).
        row = logs[0]
        assert row["val/model_contain_eos_token"] < 1.0
        assert row["rewards/chosen"] < -0.5

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)
