"""ORPO bad input: every malformed dataset is refused with one line, before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message; one case also runs as a true subprocess to
check what a user sees: exit code 1, one line on stderr, no traceback, no output folder.
"""

import pytest
from bad_input import jsonl, refusal
from conftest import REPO, run_script

METHOD = "orpo"
SCRIPT = REPO / "annotated_examples" / f"{METHOD}_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / f"{METHOD}_tiny.yaml"
PAIR = '{"prompt": "...", "chosen": "...", "rejected": "..."}'


# name -> (file name, file content, words the error line must contain)
CASES = {
    "missing-rejected": (
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 1 + 1 = 2"}]),
        ["line 1", f"which {METHOD} cannot train on", 'missing "rejected"', PAIR],
    ),
    "missing-chosen": (
        jsonl([{"prompt": "What is 1 + 1?", "rejected": " 1 + 1 = 3"}]),
        ["line 1", f"which {METHOD} cannot train on", '"chosen"', PAIR],
    ),
    "wrong-value-type": (
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 1 + 1 = 2", "rejected": 3}]),
        ["line 1", 'column "rejected" is a number', "expected a string or a list of messages"],
    ),
    "mixed-string-and-messages": (
        jsonl(
            [
                {
                    "prompt": "What is 1 + 1?",
                    "chosen": [{"role": "assistant", "content": "1 + 1 = 2"}],
                    "rejected": " 1 + 1 = 3",
                }
            ]
        ),
        ["line 1", "a string and a list and a string", "all strings or all lists of messages"],
    ),
    "empty-file": ("", ["no rows", "expected rows like", PAIR]),
    "broken-json-line": (
        jsonl([{"prompt": "a", "chosen": " b", "rejected": " c"}]) + '{"prompt": "d", "cho\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
    "prompt-only-data": (
        jsonl([{"prompt": "What is 1 + 1?", "answer": 2}]),
        ["line 1", "prompt_only data", f"which {METHOD} cannot train on", PAIR],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=[f"{METHOD}-{c}" for c in CASES])
def test_orpo_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    content, words = CASES[case]
    data = tmp_path / "data.jsonl"
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert message.startswith("error: ") and "\n" not in message
    assert str(data) in message
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()


@pytest.mark.badinput
def test_orpo_refuses_missing_file(tiny, tmp_path, monkeypatch):
    data, out = tmp_path / "missing.jsonl", tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert message.startswith("error: ") and "no such file or folder" in message
    assert not out.exists()


@pytest.mark.badinput
def test_orpo_bad_input_as_a_user_sees_it(tiny, tmp_path):
    """A real process: exit code 1, exactly one line on stderr, no traceback, no output dir."""
    data, out = tmp_path / "pairs.jsonl", tmp_path / "out"
    data.write_text(CASES["prompt-only-data"][0], encoding="utf-8")
    result = run_script(
        f"{METHOD}_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", data, "--output_dir", out],
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and str(data) in lines[0]
    assert "prompt_only data" in lines[0]
    assert not out.exists()
