"""SDPO bad input: a malformed dataset or an unusable reward is refused with one line, before
anything is written. The dataset and reward cases are GRPO's and RLOO's
(`tests/support/reward_bad_input.py`); the others are SDPO's own: a conversational prompt that
does not end with a user turn (the teacher prompt rewrites that turn; TRL would fail only at the
first success, mid-run) and the teacher server without vLLM."""

import pytest
from support import reward_bad_input as shared
from support.bad_input import jsonl, refusal
from support.processes import REPO

KEY = "sdpo"
SCRIPT = REPO / "annotated_examples" / "sdpo_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "sdpo_tiny.yaml"
USER = {"role": "user", "content": "What is 1 + 1?"}

OWN = {
    "sdpo-prefilled-prompt": (
        [
            {"prompt": [USER], "answer": 2},
            {"prompt": [USER, {"role": "assistant", "content": "The answer is"}], "answer": 2},
        ],
        [],
        ["row 2", "'assistant' turn", "must end with a user turn"],
    ),
    "sdpo-teacher-server-without-vllm": (
        [{"prompt": "What is 1 + 1?", "answer": 2}],
        ["--use_teacher_server", "true"],
        ["--use_teacher_server needs", "--use_vllm"],
    ),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(shared.cases(KEY)))
def test_sdpo_refuses_bad_input(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_input(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_sdpo_without_reward_column_needs_a_reward(tiny, tmp_path, monkeypatch):
    shared.needs_a_reward(KEY, tiny, tmp_path, monkeypatch)


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(OWN))
def test_sdpo_refuses_what_its_teacher_cannot_use(tiny, tmp_path, monkeypatch, case):
    rows, flags, words = OWN[case]
    data = tmp_path / "data.jsonl"
    data.write_text(jsonl(rows))
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--dataset_name", data, "--output_dir", out]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args, *flags)
    for word in words:
        assert word in message, message
    assert not out.exists()
