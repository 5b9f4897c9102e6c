"""BCO bad input: every malformed dataset is refused with one line, before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message that names the file, the line and the
expected format; the output directory must not exist afterwards.

The checks are `annotated_trl.data`'s (method "bco": unpaired preference rows, or paired rows
that the trainer unpairs), and they run before any model is loaded. Without them a label column
of numbers would reach the trainer, whose collator turns `1`/`0` into `True`/`False` without a
word; strings fail deep inside `torch.tensor` with a message that names neither file nor column.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "bco_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "bco_tiny.yaml"

GOOD = {"prompt": "What is 1 + 1?", "completion": " 1 + 1 = 2", "label": True}
CHAT = {
    "prompt": [{"role": "user", "content": "What is 1 + 1?"}],
    "completion": [{"role": "assistant", "content": "1 + 1 = 2"}],
    "label": True,
}

# name -> (file content as bytes, words the error line must contain)
CASES = {
    "bco-label-yes": (
        jsonl([GOOD, {**GOOD, "label": "yes"}]),
        ["line 2", 'column "label" is a string', "expected true or false"],
    ),
    "bco-label-number": (
        jsonl([{**GOOD, "label": 1}]),
        ["line 1", 'column "label" is a number', "expected true or false"],
    ),
    "bco-label-null": (
        jsonl([GOOD, {**GOOD, "label": None}]),
        ["line 2", 'column "label" is null', "expected true or false"],
    ),
    "bco-missing-label": (
        jsonl([{"prompt": "What is 1 + 1?", "completion": " 1 + 1 = 2"}]),
        ["line 1", "prompt_completion data", "bco cannot train on", '"label": true'],
    ),
    "bco-missing-completion": (
        jsonl([{"prompt": "What is 1 + 1?", "label": True}]),
        ["line 1", "bco cannot train on", '(missing "completion")'],
    ),
    "bco-prompt-only": (
        jsonl([{"prompt": "What is 1 + 1?"}]),
        ["line 1", "prompt_only data", "bco cannot train on", "expected rows like"],
    ),
    "bco-inconsistent-rows": (
        jsonl([GOOD, {"prompt": "a", "chosen": " b", "rejected": " c"}]),
        ["line 2", "unpaired_preference data", "same columns"],
    ),
    "bco-empty-file": ("", ["no rows", "expected rows like"]),
    "bco-broken-json-line": (
        jsonl([GOOD]) + '{"prompt": "What is 2 + 2?", "completion\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
    "bco-not-utf8": (
        jsonl([GOOD]).encode() + b'{"prompt": "caf\xe9", "completion": " x", "label": true}\n',
        ["line 2 is not valid UTF-8", "expected UTF-8 text"],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bco_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    content, words = CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_bytes(content if isinstance(content, bytes) else content.encode())
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert str(data) in message
    for word in words:
        assert word in message, message
    assert not out.exists()


@pytest.mark.badinput
def test_bco_refuses_conversational_rows_without_chat_template(
    tmp_path, monkeypatch, policy_without_chat_template
):
    data = tmp_path / "chat.jsonl"
    data.write_text(jsonl([CHAT, {**CHAT, "label": False}]), encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model_name_or_path", policy_without_chat_template]
    args += ["--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert str(data) in message and "needs a chat template" in message, message
    assert not out.exists()
