"""GKD smoke test: the example script, run as a user runs it, trains the student and saves it.

One run, as a subprocess (tests/support/smoke.py). `lmbda 0.5` with `seq_kd true` lets the
random draw of each step pick among all three sources of answers: the student's samples, the
teacher's samples and the dataset's. GKD logs no metric of its own; `loss` and `eval_loss` are
the generalised JSD, which is non-negative and, between two random near-uniform models, small
(about 5e-3 at the start on the fixture), so we assert finiteness, sign and the weights moving,
not `loss > some constant`.
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

RECIPE = "annotated_examples/recipes/gkd_tiny.yaml"


CLI_CASE = "gkd"


def case_args(tiny, case, out):
    return [
        "gkd_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--teacher_model_name_or_path", tiny.teacher, "--output_dir", out],
        *["--dataset_name", tiny.data / "conversational_language_modeling"],
        *["--max_steps", "6", "--logging_steps", "2", "--eval_steps", "3"],
        *["--max_new_tokens", "8", "--seq_kd", "true", "--eval_on_start", "true"],
    ]


@pytest.fixture(scope="module")
def gkd_run(request):
    return trained(request, CLI_CASE)


@pytest.mark.smoke
def test_gkd_script_logs_divergence(gkd_run):
    history = log_history(gkd_run)
    losses = [row["loss"] for row in history if "loss" in row]
    eval_losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    assert len(losses) == 3 and len(eval_losses) == 3  # steps 2, 4, 6; eval at 0, 3, 6
    # A divergence: finite and non-negative (TRL's JSD can be exactly 0 only if the models agree).
    assert all(math.isfinite(x) and x >= 0 for x in losses + eval_losses)
    assert all(math.isfinite(row["grad_norm"]) for row in history if "grad_norm" in row)
    # GKD adds no metric of its own to the log.
    keys = set().union(*history)
    assert not {k for k in keys if "/" in k or k.startswith("entropy")}


@pytest.mark.smoke
def test_gkd_script_changes_only_the_student_and_saves_it(tiny, gkd_run):
    before = load_file(tiny.policy / "model.safetensors")
    after = load_file(gkd_run / "model.safetensors")
    assert before.keys() == after.keys()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    # What was saved is the student (hidden 32), not the teacher (hidden 64).
    model = AutoModelForCausalLM.from_pretrained(gkd_run)
    assert (
        model.config.hidden_size
        == AutoModelForCausalLM.from_pretrained(tiny.policy).config.hidden_size
    )
    tokenizer = AutoTokenizer.from_pretrained(gkd_run)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]
