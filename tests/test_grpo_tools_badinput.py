"""GRPO-with-tools bad input: a malformed dataset, an unusable reward, environment or tool, or a
model whose chat template cannot call tools is refused with one line, before anything is written
and before the model loads.

The dataset and reward cases are GRPO's (`tests/support/reward_bad_input.py`: the script checks
prompts and loads rewards with the same code); the tool cases are this script's own.
"""

import pytest
from support import reward_bad_input as shared
from support.bad_input import jsonl, refusal
from support.processes import REPO

KEY = "grpo_tools"
SCRIPT = REPO / "annotated_examples" / f"{KEY}_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / f"{KEY}_tiny.yaml"

# name -> (extra flags, words the error line must contain); the data is good.
TOOL_CASES = {
    "unknown-environment-module": (
        ["--environment", "no_such_package.envs.Game"],
        ["environment 'no_such_package.envs.Game'", "no module named 'no_such_package'"],
    ),
    "environment-not-a-class": (
        ["--environment", "annotated_trl.tool_task.add"],
        ["is not a class with a reset method"],
    ),
    "unknown-tool": (
        ["--environment", "none", "--tools", "annotated_trl.tool_task.divide"],
        ["tool 'annotated_trl.tool_task.divide'", "has no 'divide'"],
    ),
    "no-tools": (["--environment", "none"], ["no tools", "--environment", "--tools"]),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(shared.cases(KEY)))
def test_grpo_tools_refuses_bad_input(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_input(KEY, tiny, tmp_path, monkeypatch, case)


def _refusal(tiny, tmp_path, monkeypatch, model, *extra, recipe=RECIPE):
    data = tmp_path / "data.jsonl"
    data.write_text(
        jsonl([{"prompt": [{"role": "user", "content": "What is 2 + 3?"}], "answer": 5}])
    )
    out = tmp_path / "out"
    args = ["--model_name_or_path", model, "--dataset_name", data, "--output_dir", out, *extra]
    message = refusal(monkeypatch, SCRIPT, recipe, *args)
    assert not out.exists()
    return message


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(TOOL_CASES))
def test_grpo_tools_refuses_a_bad_tool_setup(tiny, tmp_path, monkeypatch, case):
    extra, words = TOOL_CASES[case]
    message = _refusal(tiny, tmp_path, monkeypatch, tiny.root / "tool_policy", *extra)
    for word in words:
        assert word in message, message


@pytest.mark.badinput
def test_grpo_tools_refuses_a_chat_template_without_tools(tiny, tmp_path, monkeypatch):
    """The plain tiny policy's ChatML template drops `tool_calls` and `tools`: refused before the
    model loads (GRPOTrainer would refuse only after loading it)."""
    message = _refusal(tiny, tmp_path, monkeypatch, tiny.policy)
    assert "cannot render tool calls" in message and str(tiny.policy) in message


@pytest.mark.badinput
def test_grpo_tools_without_any_reward(tiny, tmp_path, monkeypatch):
    """Plain tools (no environment, so no get_reward) and no reward function: nothing to learn."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        RECIPE.read_text().replace(
            "reward_funcs: [annotated_trl.tool_task.final_answer_reward]", ""
        )
    )
    message = _refusal(
        tiny,
        tmp_path,
        monkeypatch,
        tiny.root / "tool_policy",
        *["--environment", "none", "--tools", "annotated_trl.tool_task.add"],
        recipe=recipe,
    )
    assert "no reward" in message and "get_reward" in message
