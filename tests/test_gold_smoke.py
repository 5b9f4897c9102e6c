"""GOLD smoke test: the example script, run as a user runs it, distils a teacher of another
tokenizer into the student and saves the student.

One run, as a subprocess (tests/support/smoke.py), with the tiny recipe: `use_uld_loss` and the
fixture's GPT-2 teacher, whose tokenizer cuts the toy answers elsewhere than the student's. GOLD
logs `on_policy_loss` / `off_policy_loss` beside `loss`: with `lmbda 0.5` and two optimiser steps
per log, each log row has the one or both kinds that were drawn. The ULD loss is a sum of absolute
differences of probabilities, so it lies in [0, 2]. The same-tokenizer path (GKD's JSD) is
checked in-process by tests/test_gold_math.py.
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

RECIPE = "annotated_examples/recipes/gold_tiny.yaml"
CLI_CASE = "gold"


def case_args(tiny, case, out):
    return [
        "gold_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--teacher_model_name_or_path", tiny.gold_teacher, "--output_dir", out],
        *["--dataset_name", tiny.data / "conversational_language_modeling"],
        *["--max_steps", "6", "--logging_steps", "2", "--eval_steps", "3"],
        *["--max_completion_length", "8", "--eval_on_start", "true"],
    ]


@pytest.fixture(scope="module")
def gold_run(request):
    return trained(request, CLI_CASE)


@pytest.mark.smoke
def test_gold_script_logs_uld_and_its_two_halves(gold_run):
    history = log_history(gold_run)
    train_rows = [row for row in history if "loss" in row]
    eval_losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    assert len(train_rows) == 3 and len(eval_losses) == 3  # steps 2, 4, 6; eval at 0, 3, 6
    halves = [
        row[k] for row in train_rows for k in ("on_policy_loss", "off_policy_loss") if k in row
    ]
    assert all("on_policy_loss" in row or "off_policy_loss" in row for row in train_rows), (
        train_rows
    )
    values = [row["loss"] for row in train_rows] + eval_losses + halves
    assert all(math.isfinite(x) and 0 <= x <= 2 for x in values), values
    assert all(math.isfinite(row["grad_norm"]) for row in history if "grad_norm" in row)


@pytest.mark.smoke
def test_gold_script_changes_only_the_student_and_saves_it(tiny, gold_run):
    before = load_file(tiny.policy / "model.safetensors")
    after = load_file(gold_run / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # What was saved is the student (Qwen2, the student's tokenizer), not the GPT-2 teacher.
    model = AutoModelForCausalLM.from_pretrained(gold_run)
    assert model.config.model_type == "qwen2"
    tokenizer = AutoTokenizer.from_pretrained(gold_run)
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(tiny.policy).get_vocab()
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
