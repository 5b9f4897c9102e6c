"""GRPO-with-tools smoke tests: the example script, run as a user runs it, rolls out, trains and
saves a usable model.

The subprocess run starts from the fixture's random tool policy, which almost never writes a
parseable call: it checks that the script starts, logs the tool metrics and saves. The
in-process variant starts from the warm start of the learning test (shared, built once per
session: tests/support/tool_warm_start.py), with stateless tools instead of the environment and
one round of calls at most: real multi-turn rollouts through the script, and the weights move.
"""

import math
from types import SimpleNamespace

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)
from support.tool_warm_start import tool_warm_policy  # noqa: F401
from transformers import AutoTokenizer

from annotated_trl import tool_task

STEPS, LOGGING_STEPS = 4, 2
CASES = {
    # The recipe as it is: the Calculator environment, its reward and the final-answer reward.
    "grpo-tools-environment": [],
    # Plain functions as tools, no environment (so no environment reward), one round at most.
    "grpo-tools-stateless-one-round": [
        *["--environment", "none", "--tools", "annotated_trl.tool_task.add"],
        *["annotated_trl.tool_task.multiply", "--max_tool_calling_iterations", "1"],
    ],
}
CLI_CASE = "grpo-tools-environment"


def case_args(tiny, case, out, policy=None):
    return [
        "grpo_tools_training.py",
        *["--config", "annotated_examples/recipes/grpo_tools_tiny.yaml"],
        *["--model_name_or_path", policy or tiny.root / "tool_policy", "--output_dir", out],
        *["--dataset_name", tiny.data / "tool_calling"],
        *["--num_generations", "4", "--per_device_train_batch_size", "8"],
        *["--max_steps", STEPS, "--logging_steps", LOGGING_STEPS, *CASES[case]],
    ]


@pytest.fixture
def warm_case_args(monkeypatch, request, tool_warm_policy):  # noqa: F811
    """The in-process variant starts from the warm start."""

    def from_warm_start(tiny, case, out, original=request.module.case_args):
        return original(tiny, case, out, tool_warm_policy)

    monkeypatch.setattr(request.module, "case_args", from_warm_start)
    return tool_warm_policy


def _logs(out):
    logs = [row for row in log_history(out) if "reward" in row]
    assert len(logs) == STEPS // LOGGING_STEPS
    for row in logs:
        assert 0.0 <= row["rewards/final_answer_reward/mean"] <= 1.0
        assert row["tools/call_frequency"] >= 0.0
        assert 0.0 <= row["tools/failure_frequency"] <= 1.0
        assert math.isfinite(row["loss"])
    return logs


@pytest.mark.smoke
def test_grpo_tools_script_runs_from_the_random_tool_policy(request, tiny):
    out = trained(request, CLI_CASE)
    logs = _logs(out)
    assert all(0.0 <= row["rewards/Calculator/mean"] <= 1.0 for row in logs)
    # The saved tokenizer still parses tool calls.
    assert AutoTokenizer.from_pretrained(out).response_template == tool_task.TOOL_RESPONSE_TEMPLATE


@pytest.mark.smoke
def test_grpo_tools_script_calls_tools_and_trains(request, tiny, warm_case_args):
    out = trained(request, "grpo-tools-stateless-one-round")
    logs = _logs(out)
    assert all("rewards/Calculator/mean" not in row for row in logs)  # no environment
    assert sum(row["tools/call_frequency"] for row in logs) > 0  # the tool loop ran
    assert_saved_model_works(SimpleNamespace(policy=warm_case_args), out, lora=False)


@pytest.mark.smoke
def test_demonstrations_render_as_the_prompts_do(tiny):
    """The demonstrations carry the tool list as a system message; rendered, it is exactly what a
    prompt rendered with `tools=` (as GRPOTrainer renders it) starts with."""
    tokenizer = AutoTokenizer.from_pretrained(tiny.root / "tool_policy")
    question = [{"role": "user", "content": "What is 7 * 8?"}]
    with_tools = tokenizer.apply_chat_template(
        question, tools=tool_task.tool_schemas(), add_generation_prompt=True, tokenize=False
    )
    as_message = tokenizer.apply_chat_template(
        [tool_task.TOOLS_SYSTEM_MESSAGE, *question], add_generation_prompt=True, tokenize=False
    )
    assert with_tools == as_message
