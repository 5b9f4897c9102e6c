"""Server distillation bad input. Its script refuses on a CPU before it reads data
(tests/test_server_distillation_smoke.py), so the data checks are shown where a user meets them
here: `annotated-trl validate --method server_distillation`, run bare as a user runs it, and the
checker the script calls (`load_checked_dataset` -> `scan_rows`) on each kind of mistake."""

import os
import subprocess
import sys

import pytest
from support.processes import OFFLINE_ENV, REPO

from annotated_trl.data import DatasetError, check_rows

pytestmark = pytest.mark.badinput
PROMPT = [{"role": "user", "content": "What is 2+3?"}]


def numbered(rows):
    """(location, row) pairs, as the checker reads a .jsonl file."""
    return [(f"line {i}", row) for i, row in enumerate(rows, 1)]


def test_validate_refuses_pairs_for_server_distillation_in_one_line(tiny):
    data = tiny.data / "preference"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "annotated_trl.cli",
            "validate",
            "--method",
            "server_distillation",
            data,
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {data}") and "Traceback" not in result.stderr
    assert "preference data, which server_distillation cannot train on" in lines[0]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (
            [{"text": "hi"}],
            "line 1 has language_modeling data, which server_distillation cannot train on; "
            'expected rows like {"prompt": "..."}',
        ),
        ([{"prompt": PROMPT}, {"prompt": 7}], 'line 2: column "prompt" is a number'),
        ([{"prompt": PROMPT, "chosen": "a", "rejected": "b"}], "cannot train on"),
        ([], "no rows"),
    ],
    ids=["plain-text", "prompt-not-text", "pairs", "empty"],
)
def test_checker_refuses_what_the_trainer_could_not_prompt_with(rows, expected, tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    with pytest.raises(DatasetError) as refused:
        check_rows(numbered(rows), "data.jsonl", "server_distillation", tokenizer)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_checker_accepts_prompts_and_ignores_a_completion_column(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    prompts = [{"prompt": PROMPT}, {"prompt": PROMPT}]
    assert (
        check_rows(numbered(prompts), "data.jsonl", "server_distillation", tokenizer)
        == "prompt_only"
    )
    answer = [{"role": "assistant", "content": "5"}]
    pairs = [{"prompt": PROMPT, "completion": answer}]
    assert (
        check_rows(numbered(pairs), "data.jsonl", "server_distillation", tokenizer)
        == "prompt_completion"
    )
