"""TPO bad input: every malformed triple dataset is refused with one line, before anything is
written. Each case runs the real script in-process (`runpy`, the same code path as
`python tpo_training.py`); what a bare `python` process prints is checked for every script by
tests/test_badinput.py.

The mistake TPO invites is a DPO pair without its gold answer: it is refused by name, with the
column to add, not deep inside TRL's tokenisation.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "tpo_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "tpo_tiny.yaml"
TRIPLE = '{"prompt": "...", "chosen": "...", "rejected": "...", "reference": "..."}'
ROW = {"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3", "reference": " 1 + 1 = 2"}

# case -> (file content, words the error line must contain)
CASES = {
    "dpo-pair-without-reference": (
        jsonl([{k: v for k, v in ROW.items() if k != "reference"}]),
        ["line 1", "preference data, which tpo cannot train on", '(missing "reference")', TRIPLE],
    ),
    "missing-rejected": (
        jsonl([{k: v for k, v in ROW.items() if k != "rejected"}]),
        ["line 1", "which tpo cannot train on", '"rejected"', TRIPLE],
    ),
    "reference-wrong-type": (
        jsonl([ROW, {**ROW, "reference": 2}]),
        ["line 2", 'column "reference" is a number', "expected a string or a list of messages"],
    ),
    "empty-reference": (
        jsonl([{**ROW, "reference": ""}]),
        ["line 1", 'column "reference" is an empty string'],
    ),
    "reference-messages-with-string-answers": (
        jsonl([{**ROW, "reference": [{"role": "assistant", "content": "1 + 1 = 2"}]}]),
        ["line 1", "all strings or all lists of messages"],
    ),
    "implicit-reference-without-the-prompt": (
        jsonl(
            [
                {
                    "chosen": "What is 1 + 1? 2",
                    "rejected": "What is 1 + 1? 3",
                    "reference": "1 + 1 = 2",
                }
            ]
        ),
        ["line 1", 'column "reference" does not start with the prompt', 'a "prompt" column'],
    ),
    "empty-file": ("", ["no rows", "expected rows like", TRIPLE]),
    "prompt-only-data": (
        jsonl([{"prompt": "What is 1 + 1?", "answer": 2}]),
        ["line 1", "prompt_only data", "which tpo cannot train on", TRIPLE],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=[f"tpo-{c}" for c in CASES])
def test_tpo_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
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
def test_tpo_refuses_missing_file(tiny, tmp_path, monkeypatch):
    data, out = tmp_path / "missing.jsonl", tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    assert "no such file or folder" in refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert not out.exists()
