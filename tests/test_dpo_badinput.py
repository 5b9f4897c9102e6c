"""DPO bad input: every malformed preference dataset is refused with one line, before anything
is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "dpo_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "dpo_tiny.yaml"
PAIR = {"prompt": "What is 1 + 1?", "chosen": " 1 + 1 = 2", "rejected": " 1 + 1 = 3"}
EXPECTED_ROW = '{"prompt": "...", "chosen": "...", "rejected": "..."}'


# name -> (file content, words the error line must contain)
CASES = {
    "dpo-missing-rejected": (
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2"}]),
        ["line 1", "dpo cannot train on", 'missing "rejected"', EXPECTED_ROW],
    ),
    "dpo-missing-chosen": (
        jsonl([{"prompt": "What is 1 + 1?", "rejected": " 3"}]),
        ["line 1", "dpo cannot train on", 'missing "chosen"'],
    ),
    "dpo-prompt-only-data": (
        jsonl([{"prompt": "What is 1 + 1?", "answer": 2}]),
        ["line 1", "has prompt_only data, which dpo cannot train on", "expected rows like"],
    ),
    "dpo-wrong-value-type": (
        jsonl([PAIR, {**PAIR, "chosen": 2}]),
        ["line 2", 'column "chosen" is a number', "expected a string or a list of messages"],
    ),
    "dpo-rejected-not-text": (
        jsonl([{"chosen": "1 + 1 = 2", "rejected": ["1 + 1 = 3"]}]),
        ["line 1", 'column "rejected" is a list'],
    ),
    "dpo-mixed-string-and-messages": (
        jsonl(
            [
                {
                    "prompt": [{"role": "user", "content": "What is 1 + 1?"}],
                    "chosen": "2",
                    "rejected": [{"role": "assistant", "content": "3"}],
                }
            ]
        ),
        ["line 1", "all strings or all lists of messages"],
    ),
    "dpo-empty-file": ("", ["no rows", "expected rows like", EXPECTED_ROW]),
    "dpo-broken-json-line": (
        jsonl([PAIR]) + '{"prompt": "What is 1 + 2?", "chosen": " 3", "rej\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_dpo_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    content, words = CASES[case]
    data = tmp_path / "pairs.jsonl"
    data.write_text(content, encoding="utf-8")
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
