"""SDFT bad input: every malformed dataset is refused with one line, before anything is written.
Each case runs the real script in-process (`runpy`, the same code path as
`python sdft_training.py`); what a bare `python` process prints is checked for every script by
tests/test_badinput.py.

The mistakes SDFT invites: prompt-only data (nothing for the teacher to see: TRL would stop at
the first batch with "`privileged_context` must not be None"), a context that is empty or not
text, and a demonstration put in an SFT-style `messages` column.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "sdft_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "sdft_tiny.yaml"
EXPECTED = '{"prompt": "...", "privileged_context": "..."}'
ROW = {"prompt": "What is 1 + 1?", "privileged_context": "Example response: 1 + 1 = 2"}

# case -> (file content, words the error line must contain)
CASES = {
    "prompt-only-data": (
        jsonl([{"prompt": "What is 1 + 1?", "answer": 2}]),
        ["line 1", "prompt_only data, which sdft cannot train on", '"privileged_context"']
        + [EXPECTED],
    ),
    "empty-context": (
        jsonl([ROW, {**ROW, "privileged_context": "  "}]),
        ["line 2", 'column "privileged_context" is an empty string'],
    ),
    "context-wrong-type": (
        jsonl([{**ROW, "privileged_context": 2}]),
        ["line 1", 'column "privileged_context" is a number', "a non-empty string or a list of"],
    ),
    "context-null": (
        jsonl([{**ROW, "privileged_context": None}]),
        ["line 1", 'column "privileged_context" is null'],
    ),
    "sft-messages": (
        jsonl([{"messages": [{"role": "user", "content": "1 + 1?"}]}]),
        ["line 1", "conversational_language_modeling data, which sdft cannot train on", EXPECTED],
    ),
    "empty-file": ("", ["no rows", "expected rows like", EXPECTED]),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=[f"sdft-{c}" for c in CASES])
def test_sdft_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    content, words = CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert str(data) in message
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()


@pytest.mark.badinput
def test_sdft_conversational_prompt_with_a_string_context_is_accepted(tiny, tmp_path):
    """TRL's own docs pair a conversational prompt with a plain-string context: not refused
    (the context is not held to the prompt's kind, unlike a pair's two answers)."""
    from annotated_trl.data import validate_dataset

    data = tmp_path / "data.jsonl"
    row = {**ROW, "prompt": [{"role": "user", "content": "What is 1 + 1?"}]}
    data.write_text(jsonl([row]), encoding="utf-8")
    assert validate_dataset(str(data), "sdft").problems == []
