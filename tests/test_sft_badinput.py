"""SFT bad input: every malformed dataset is refused with one line, before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message. What a user sees from a bare `python`
process is checked for every script by tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "sft_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "sft_tiny.yaml"


# name -> (file name, file content, words the error line must contain)
CASES = {
    "sft-no-usable-columns": (
        "data.jsonl",
        jsonl([{"question": "2 + 2", "answer": 4}]),
        ["line 1", "sft cannot train on", '{"text": "..."}'],
    ),
    "sft-other-method-format": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
        ["preference data", "sft cannot train on"],
    ),
    "sft-wrong-value-type": (
        "data.jsonl",
        jsonl([{"text": "What is 1 + 1? 2"}, {"text": 2}]),
        ["line 2", 'column "text" is a number', "expected a non-empty string"],
    ),
    "sft-mixed-prompt-completion-types": (
        "data.jsonl",
        jsonl([{"prompt": [{"role": "user", "content": "Hi"}], "completion": "Hello"}]),
        ["line 1", "a list and a string", "all strings or all lists of messages"],
    ),
    "sft-bad-message": (
        "data.jsonl",
        jsonl([{"messages": [{"role": "robot", "content": "beep"}]}]),
        ["line 1", "message 0", '"role": one of'],
    ),
    "sft-inconsistent-rows": (
        "data.jsonl",
        jsonl([{"text": "a"}, {"prompt": "b", "completion": "c"}]),
        ["line 2", "same columns"],
    ),
    "sft-empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
    "sft-broken-json-line": (
        "data.jsonl",
        '{"text": "fine"}\n{"text": "broken\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
    "sft-json-not-a-list": ("data.json", '{"text": "a"}', ["top level is an object", "list"]),
    "sft-non-utf8": ("data.jsonl", b'{"text": "caf\xe9"}\n', ["line 1", "not valid UTF-8"]),
    "sft-missing-file": (None, None, ["no such file or folder"]),
}


def _write(tmp_path, name, content):
    if name is None:
        return tmp_path / "missing.jsonl"
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode())
    return path


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_sft_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    name, content, words = CASES[case]
    data = _write(tmp_path, name, content)
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
    assert str(data) in message or str(data.name) in message
    for word in words:
        assert word in message
    assert not out.exists()


@pytest.mark.badinput
def test_sft_refuses_conversations_without_chat_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    data = tiny.data / "conversational_language_modeling"
    out = tmp_path / "out"
    args = ["--model_name_or_path", policy_without_chat_template, "--dataset_name", data]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args, "--output_dir", out)
    assert "needs a chat template" in message and "tokenizer has none" in message
    assert str(data) in message
    assert not out.exists()
