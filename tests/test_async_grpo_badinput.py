"""Async GRPO bad input. Its script refuses on a CPU before it reads data
(tests/test_async_grpo_smoke.py), so the data checks are shown where a user meets them here:
`annotated-trl validate --method async_grpo`, run bare as a user runs it, and the checker the
script calls (`load_checked_dataset` -> `scan_rows`) on each kind of mistake."""

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


def test_validate_refuses_pairs_for_async_grpo_in_one_line(tiny):
    data = tiny.data / "preference"
    result = subprocess.run(
        [sys.executable, "-m", "annotated_trl.cli", "validate", "--method", "async_grpo", data],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"error: {data}") and "Traceback" not in result.stderr
    assert "preference data, which async_grpo cannot train on" in lines[0]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"answer": "5"}], "line 1 has columns ['answer'], which async_grpo cannot train on"),
        (
            [{"prompt": PROMPT, "answer": "5"}, {"prompt": 7, "answer": "5"}],
            'line 2: column "prompt" is a number',
        ),
        ([{"prompt": PROMPT, "chosen": "a", "rejected": "b"}], "cannot train on"),
        ([], "no rows"),
    ],
    ids=["no-prompt", "prompt-not-text", "pairs", "empty"],
)
def test_checker_refuses_what_the_rollout_worker_could_not_use(rows, expected, tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    with pytest.raises(DatasetError) as refused:
        check_rows(numbered(rows), "data.jsonl", "async_grpo", tokenizer)
    assert expected in str(refused.value) and "\n" not in str(refused.value)


def test_checker_accepts_conversational_prompts_with_extra_columns(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    rows = [{"prompt": PROMPT, "answer": "5"}, {"prompt": PROMPT, "answer": "6"}]
    assert check_rows(numbered(rows), "data.jsonl", "async_grpo", tokenizer) == "prompt_only"
