"""PRM bad input: every malformed dataset is refused with one line, before anything is written.

Most checks are `annotated_trl.data`'s (stepwise supervision: one boolean label per step, a
non-empty list of non-empty steps); the script adds one of its own, for chat-formatted prompts,
which the trainer (like trl 1.12's) cannot tokenise. Each case runs the real script in-process
(`runpy`, same code path as `python script.py`) and expects `SystemExit` carrying the one-line
message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal, write_case
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "prm_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "prm_tiny.yaml"
GOOD = {"prompt": "What is 1 + 2 + 3?", "completions": ["1 + 2 = 3", "3 + 3 = 6"]}

# name -> (file name, content as bytes or text, words the error line must contain)
CASES = {
    "prm-label-step-count-mismatch": (
        "data.jsonl",
        jsonl([{**GOOD, "labels": [True]}]),
        ["line 1", '"labels" has 1 labels but "completions" has 2 steps', "one label per step"],
    ),
    "prm-labels-not-booleans": (
        "data.jsonl",
        jsonl([{**GOOD, "labels": [True, True]}, {**GOOD, "labels": [1, 0]}]),
        ["line 2", 'column "labels"', "expected a list of true/false, one per step"],
    ),
    "prm-no-steps": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 2?", "completions": [], "labels": []}]),
        ["line 1", 'column "completions"', "expected a non-empty list of strings"],
    ),
    "prm-missing-labels": (
        "data.jsonl",
        jsonl([GOOD]),
        ["line 1", "prm cannot train on", 'missing "labels"', '"completions": ["..."'],
    ),
    "prm-missing-prompt": (
        "data.jsonl",
        jsonl([{"completions": ["1 + 2 = 3"], "labels": [True]}]),
        ["line 1", "prm cannot train on", 'missing "prompt"'],
    ),
    "prm-preference-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 2?", "chosen": " 3", "rejected": " 4"}]),
        ["line 1", "preference data", "prm cannot train on"],
    ),
    "prm-unpaired-preference-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 2?", "completion": " 3", "label": True}]),
        ["line 1", "unpaired_preference data", "prm cannot train on"],
    ),
    "prm-empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
    "prm-broken-json-line": (
        "data.jsonl",
        jsonl([{**GOOD, "labels": [True, True]}]) + '{"prompt": "broken\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
    "prm-not-utf8": (
        "data.jsonl",
        jsonl([{**GOOD, "labels": [True, True]}]).encode() + b'{"prompt": "caf\xe9"}\n',
        ["line 2", "not valid UTF-8"],
    ),
    "prm-chat-prompt": (
        "data.jsonl",
        jsonl(
            [
                {
                    "prompt": [{"role": "user", "content": "What is 1 + 2 + 3?"}],
                    "completions": GOOD["completions"],
                    "labels": [True, True],
                }
            ]
        ),
        ['column "prompt" holds chat messages', "plain-text prompts", "expected rows like"],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_prm_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    name, content, words = CASES[case]
    data = write_case(tmp_path, name, content)
    out = tmp_path / "out"
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        *["--model_name_or_path", tiny.token_classifier],
        *["--dataset_name", data, "--output_dir", out],
    )
    assert str(data) in message
    for word in words:
        assert word in message, message
    assert not out.exists()


@pytest.mark.badinput
def test_prm_chat_prompt_without_chat_template(policy_without_chat_template, tmp_path, monkeypatch):
    """Chat-formatted data and a tokenizer without a template: refused by the data check."""
    row = {"prompt": [{"role": "user", "content": "What is 1 + 2?"}], "completions": ["1 + 2 = 3"]}
    data = write_case(tmp_path, "chat.jsonl", jsonl([{**row, "labels": [True]}]))
    out = tmp_path / "out"
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        *["--model_name_or_path", policy_without_chat_template],
        *["--dataset_name", data, "--output_dir", out],
    )
    assert str(data) in message and "needs a chat template" in message, message
    assert not out.exists()
