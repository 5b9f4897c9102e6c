"""Distillation smoke test: the example script, run as a user runs it, trains and saves the student.

One run, as a subprocess (tests/support/smoke.py). Every step generates completions with the student
(transformers `generate`; vLLM is not available on CPU) and logs the trainer's own metrics: the
divergence `loss`, the student's `entropy`, completion lengths and the clipped ratio. On the
fixture the losses are small (about 1e-2 between two random near-uniform models), so we assert
ranges, not `loss > some constant`.
"""

import math

import pytest
import torch
from safetensors.torch import load_file
from support.smoke import (
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)
from transformers import AutoModelForCausalLM, AutoTokenizer

RECIPE = "annotated_examples/recipes/distillation_tiny.yaml"
MAX_COMPLETION = 8
VOCAB = 512  # the fixture tokenizer's vocabulary: entropy is at most ln 512 = 6.24 nats


CLI_CASE = "distillation"


def case_args(tiny, case, out):
    return [
        "distillation_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--teacher_model_name_or_path", tiny.teacher, "--output_dir", out],
        *["--dataset_name", tiny.data / "prompt_only"],
        *["--max_steps", "6", "--logging_steps", "2", "--eval_steps", "3"],
        *["--max_completion_length", str(MAX_COMPLETION)],
    ]


@pytest.fixture(scope="module")
def distillation_run(request):
    return trained(request, CLI_CASE)


@pytest.mark.smoke
def test_distillation_script_logs_its_metrics(distillation_run):
    history = log_history(distillation_run)
    train = [row for row in history if "loss" in row]
    evals = [row for row in history if "eval_loss" in row]
    assert len(train) == 3 and len(evals) == 2  # steps 2, 4, 6; eval at 3, 6
    for row in train:
        assert math.isfinite(row["loss"]) and row["loss"] >= 0
        assert 0 < row["entropy"] <= math.log(VOCAB) + 1e-4
        assert 1 <= row["completions/min_length"] <= row["completions/mean_length"]
        assert row["completions/mean_length"] <= row["completions/max_length"] <= MAX_COMPLETION
        assert 0.0 <= row["completions/clipped_ratio"] <= 1.0
        assert row["num_tokens"] > 0 and row["step_time"] > 0
    for row in evals:
        assert math.isfinite(row["eval_loss"]) and row["eval_loss"] >= 0
        assert 0 < row["eval_entropy"] <= math.log(VOCAB) + 1e-4
    # The token counter grows: every step generated new completions.
    counts = [row["num_tokens"] for row in train]
    assert counts == sorted(counts) and counts[0] < counts[-1]


@pytest.mark.smoke
def test_distillation_script_changes_the_student_and_saves_it(tiny, distillation_run):
    before = load_file(tiny.policy / "model.safetensors")
    after = load_file(distillation_run / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    model = AutoModelForCausalLM.from_pretrained(distillation_run)
    assert model.config.hidden_size == 32  # the student, not the teacher (hidden 64)
    tokenizer = AutoTokenizer.from_pretrained(distillation_run)
    prompt = tokenizer("What is 2 + 3?", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
