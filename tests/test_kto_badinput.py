"""KTO bad input: every malformed dataset is refused with one line, before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.

The label must be a JSON boolean. TRL 1.16 itself does not check it: measured here, labels
`1`/`0` train silently (a number is taken as a truth value), and `"yes"`/`"no"` fail while the
trainer counts desirable rows, with `TypeError: unsupported operand type(s) for +: 'int' and
'str'`, a message that names neither the file nor the column.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "kto_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "kto_tiny.yaml"

GOOD = {"prompt": "What is 1 + 1?", "completion": " 1 + 1 = 2", "label": True}


# name -> (file content, words the error line must contain)
CASES = {
    "kto-missing-label": (
        jsonl([{"prompt": "What is 1 + 1?", "completion": " 1 + 1 = 2"}]),
        ["line 1", "prompt_completion data", "kto cannot train on", '"label": true'],
    ),
    "kto-label-string": (
        jsonl([GOOD, {**GOOD, "label": "yes"}]),
        ["line 2", 'column "label" is a string', "expected true or false"],
    ),
    "kto-label-number": (
        jsonl([{**GOOD, "label": 1}]),
        ["line 1", 'column "label" is a number', "expected true or false"],
    ),
    "kto-label-null": (
        jsonl([GOOD, GOOD, {**GOOD, "label": None}]),
        ["line 3", 'column "label" is null', "expected true or false"],
    ),
    "kto-completion-wrong-type": (
        jsonl([{**GOOD, "completion": 2}]),
        ["line 1", 'column "completion" is a number', "a string or a list of messages"],
    ),
    "kto-mixed-prompt-completion-types": (
        jsonl([{**GOOD, "prompt": [{"role": "user", "content": "What is 1 + 1?"}]}]),
        ["line 1", "a list and a string", "all strings or all lists of messages"],
    ),
    "kto-preference-wrong-type": (
        jsonl([{"prompt": "What is 1 + 1?", "chosen": 2, "rejected": " 1 + 1 = 3"}]),
        ["line 1", 'column "chosen" is a number'],
    ),
    "kto-inconsistent-rows": (
        jsonl([GOOD, {"prompt": "a", "chosen": " b", "rejected": " c"}]),
        ["line 2", "unpaired_preference data", "same columns"],
    ),
    "kto-prompt-only": (
        jsonl([{"prompt": "What is 1 + 1?"}]),
        ["line 1", "prompt_only data", "kto cannot train on", "expected rows like"],
    ),
    "kto-empty-file": ("", ["no rows", "expected rows like"]),
    "kto-broken-json-line": (
        jsonl([GOOD]) + '{"prompt": "What is 2 + 2?", "completion\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kto_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    content, words = CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert message.startswith("error: ") and "\n" not in message
    assert str(data) in message
    for word in words:
        assert word in message, message
    assert not out.exists()
