"""Bad-input cases shared by GRPO and RLOO: both scripts check prompts and load reward functions
with the same code (`annotated_trl.data`, `annotated_trl.rewards`), so they share the cases.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

from annotated_trl.methods import BY_KEY
from support.bad_input import jsonl, refusal
from support.processes import REPO

GOOD = jsonl([{"prompt": "What is 1 + 1?", "answer": 2}])


def _paths(key):
    return (
        REPO / "annotated_examples" / f"{key}_training.py",
        REPO / "annotated_examples" / "recipes" / f"{key}_tiny.yaml",
    )


def cases(key: str) -> dict:
    """name -> (file content, extra flags, words the error line must contain)."""
    return {
        f"{key}-missing-prompt": (
            jsonl([{"question": "What is 1 + 1?", "answer": 2}]),
            [],
            ["line 1", f"{key} cannot train on", '{"prompt": "..."}'],
        ),
        f"{key}-preference-data": (
            jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
            [],
            ["preference data", f"{key} cannot train on"],
        ),
        f"{key}-wrong-prompt-type": (
            jsonl([{"prompt": "What is 1 + 1?"}, {"prompt": 7}]),
            [],
            ["line 2", 'column "prompt" is a number'],
        ),
        f"{key}-empty-file": ("", [], ["no rows", "expected rows like"]),
        f"{key}-broken-json-line": (
            '{"prompt": "fine"}\n{"prompt": "broken\n',
            [],
            ["line 2", "not valid JSON"],
        ),
        f"{key}-unknown-reward-module": (
            GOOD,
            ["--reward_funcs", "no_such_package.rewards.score"],
            ["no_such_package.rewards.score", "no module named 'no_such_package'"],
        ),
        f"{key}-unknown-reward-function": (
            GOOD,
            ["--reward_funcs", "annotated_trl.toy_task.no_such_reward"],
            ["module 'annotated_trl.toy_task' has no 'no_such_reward'"],
        ),
        f"{key}-reward-not-a-dotted-path": (
            GOOD,
            ["--reward_funcs", "accuracy"],
            ["expected a dotted import path"],
        ),
        f"{key}-reward-weights-mismatch": (
            GOOD,
            ["--reward_weights", "1.0", "2.0"],
            ["2 reward weights for 1 rewards"],
        ),
    }


def refuses_bad_input(key, tiny, tmp_path, monkeypatch, case):
    content, extra, words = cases(key)[case]
    script, recipe = _paths(key)
    data = tmp_path / "data.jsonl"
    data.write_text(content)
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    # The models the method needs besides the policy (the recipe's `tiny/...` paths are relative
    # to a repository that has no fixture in it).
    models = [x for flag, m in BY_KEY[key].fixture.models for x in (f"--{flag}", tiny.root / m)]
    message = refusal(monkeypatch, script, recipe, *args, *models, *extra)
    for word in words:
        assert word in message, message
    assert not out.exists()


def needs_a_reward(key, tiny, tmp_path, monkeypatch):
    """No `answer`/`solution` column and no reward given: the script cannot guess a reward."""
    script, recipe = _paths(key)
    data = tmp_path / "data.jsonl"
    data.write_text(jsonl([{"prompt": "Write a haiku."}]))
    out = tmp_path / "out"
    no_reward = tmp_path / "recipe.yaml"  # the tiny recipe without its reward_funcs line
    text = recipe.read_text()
    no_reward.write_text(
        text.replace("reward_funcs: [annotated_trl.toy_task.arithmetic_reward]", "")
    )
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, script, no_reward, *args)
    assert "no reward" in message and "--reward_funcs" in message
    assert not out.exists()
