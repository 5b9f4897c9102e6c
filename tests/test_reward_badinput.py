"""Reward bad input: every malformed dataset is refused with one line, before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal, write_case
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "reward_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "reward_tiny.yaml"


# name -> (file name, file content, words the error line must contain)
CASES = {
    "reward-missing-rejected": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 1 + 1 = 2"}]),
        ["line 1", "reward cannot train on", 'missing "rejected"'],
    ),
    "reward-missing-chosen": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "rejected": " 1 + 1 = 3"}]),
        ["line 1", "reward cannot train on", 'missing "chosen"'],
    ),
    "reward-wrong-value-type": (
        "data.jsonl",
        jsonl(
            [
                {"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"},
                {"prompt": "What is 2 + 2?", "chosen": 4, "rejected": " 5"},
            ]
        ),
        ["line 2", '"chosen"', "a number"],
    ),
    "reward-prompt-only": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "answer": 2}]),
        ["line 1", "prompt_only data", "reward cannot train on", "expected rows like"],
    ),
    "reward-empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
    "reward-broken-json-line": (
        "data.jsonl",
        '{"chosen": "a 1", "rejected": "a 2"}\n{"chosen": "broken\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_reward_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    name, content, words = CASES[case]
    data = write_case(tmp_path, name, content)
    out = tmp_path / "out"
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        "--model_name_or_path",
        tiny.policy,
        "--dataset_name",
        data,
        "--output_dir",
        out,
    )
    assert message.startswith("error: ") and "\n" not in message
    assert str(data) in message
    for word in words:
        assert word in message, message
    assert not out.exists()
