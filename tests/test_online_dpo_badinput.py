"""Online DPO bad input: a malformed dataset or an unusable reward is refused with one line,
before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import runpy
import sys

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

KEY = "online_dpo"
SCRIPT = REPO / "annotated_examples" / f"{KEY}_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / f"{KEY}_tiny.yaml"

GOOD = jsonl([{"prompt": "What is 1 + 1?", "answer": 2}])

# name -> (file content, extra flags, words the error line must contain)
CASES = {
    f"{KEY}-missing-prompt": (
        jsonl([{"question": "What is 1 + 1?", "answer": 2}]),
        [],
        ["line 1", f"{KEY} cannot train on", '{"prompt": "..."}'],
    ),
    # Offline preference pairs: Online DPO would silently ignore chosen/rejected.
    f"{KEY}-preference-data": (
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
        [],
        ["preference data", f"{KEY} cannot train on"],
    ),
    f"{KEY}-wrong-prompt-type": (
        jsonl([{"prompt": "What is 1 + 1?"}, {"prompt": 7}]),
        [],
        ["line 2", 'column "prompt" is a number'],
    ),
    f"{KEY}-wrong-message-type": (
        jsonl([{"prompt": [{"role": "user", "content": 3}]}]),
        [],
        ["line 1", 'column "prompt" message 0'],
    ),
    f"{KEY}-empty-file": ("", [], ["no rows", "expected rows like"]),
    f"{KEY}-broken-json-line": (
        '{"prompt": "fine"}\n{"prompt": "broken\n',
        [],
        ["line 2", "not valid JSON"],
    ),
    f"{KEY}-unknown-reward-module": (
        GOOD,
        ["--reward_funcs", "no_such_package.rewards.score"],
        ["no_such_package.rewards.score", "no module named 'no_such_package'"],
    ),
    f"{KEY}-unknown-reward-function": (
        GOOD,
        ["--reward_funcs", "annotated_trl.toy_task.no_such_reward"],
        ["module 'annotated_trl.toy_task' has no 'no_such_reward'"],
    ),
    f"{KEY}-reward-not-a-dotted-path": (
        GOOD,
        ["--reward_funcs", "accuracy"],
        ["expected a dotted import path"],
    ),
    # The recipe names a reward model and one function: two rewards, three weights.
    f"{KEY}-reward-weights-mismatch": (
        GOOD,
        ["--reward_weights", "1.0", "2.0", "3.0"],
        ["3 reward weights for 2 rewards"],
    ),
}

BAD = list(CASES)


@pytest.mark.badinput
@pytest.mark.parametrize("case", BAD, ids=BAD)
def test_online_dpo_refuses_bad_input(tiny, tmp_path, monkeypatch, case):
    content, extra, words = CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--reward_model_path", tiny.reward]
    args += ["--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args, *extra)
    assert message.startswith("error: ") and "\n" not in message
    for word in words:
        assert word in message, message
    assert not out.exists()


@pytest.mark.badinput
def test_online_dpo_without_reward_column_needs_a_reward(tiny, tmp_path, monkeypatch):
    """No `answer`/`solution` column and no reward named: the script cannot guess a reward."""
    data = tmp_path / "data.jsonl"
    data.write_text(jsonl([{"prompt": "Write a haiku."}]))
    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"  # the tiny recipe without its two reward lines
    text = RECIPE.read_text()
    for line in ("reward_model_path: tiny/reward", "reward_funcs: [annotated_trl.toy_task."):
        assert line in text
    text = "\n".join(
        row
        for row in text.splitlines()
        if not row.startswith(("reward_model_path", "reward_funcs"))
    )
    recipe.write_text(text)
    monkeypatch.setattr(
        sys,
        "argv",
        [str(SCRIPT), "--config", str(recipe), "--model_name_or_path", str(tiny.policy)]
        + ["--dataset_name", str(data), "--output_dir", str(out)],
    )
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(SCRIPT), run_name="__main__")
    message = exit_info.value.code
    assert "no reward" in message and "--reward_funcs" in message and "\n" not in message
    assert "--reward_model_path" in message  # this script's flag, not GRPO's
    assert not out.exists()
