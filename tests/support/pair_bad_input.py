"""Bad-input cases shared by ORPO and CPO: both read preference pairs through the same checker
(`annotated_trl.data`), so they share the cases.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

from support.bad_input import jsonl, refusal
from support.processes import REPO

PAIR = '{"prompt": "...", "chosen": "...", "rejected": "..."}'


def _paths(key):
    return (
        REPO / "annotated_examples" / f"{key}_training.py",
        REPO / "annotated_examples" / "recipes" / f"{key}_tiny.yaml",
    )


def cases(key: str) -> dict:
    """case -> (file content, words the error line must contain)."""
    return {
        "missing-rejected": (
            jsonl([{"prompt": "What is 1 + 1?", "chosen": " 1 + 1 = 2"}]),
            ["line 1", f"which {key} cannot train on", 'missing "rejected"', PAIR],
        ),
        "missing-chosen": (
            jsonl([{"prompt": "What is 1 + 1?", "rejected": " 1 + 1 = 3"}]),
            ["line 1", f"which {key} cannot train on", '"chosen"', PAIR],
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
            ["line 1", "prompt_only data", f"which {key} cannot train on", PAIR],
        ),
    }


def refuses_bad_dataset(key, tiny, tmp_path, monkeypatch, case):
    content, words = cases(key)[case]
    script, recipe = _paths(key)
    data = tmp_path / "data.jsonl"
    data.write_text(content, encoding="utf-8")
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, script, recipe, *args)
    assert str(data) in message
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()


def refuses_missing_file(key, tiny, tmp_path, monkeypatch):
    script, recipe = _paths(key)
    data, out = tmp_path / "missing.jsonl", tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    assert "no such file or folder" in refusal(monkeypatch, script, recipe, *args)
    assert not out.exists()
