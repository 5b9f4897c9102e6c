"""Distillation bad input: every malformed dataset is refused with one line, nothing written.
The dataset cases are Distillation's own (it trains on prompts); how they run, the chat-template
check and the teacher cases are shared with GKD: see `tests/support/teacher_bad_input.py`."""

import pytest
from support import teacher_bad_input as shared
from support.bad_input import jsonl

KEY = "distillation"

# case -> (file name, file content, words the error line must contain)
CASES = {
    "preference-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
        ["line 1", "preference data", "distillation cannot train on", '{"prompt": "..."}'],
    ),
    "conversation-data": (
        "data.jsonl",
        jsonl([{"messages": [{"role": "user", "content": "What is 1 + 1?"}]}]),
        ["line 1", "conversational_language_modeling data", "distillation cannot train on"],
    ),
    "prompt-is-a-number": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?"}, {"prompt": 2}]),
        ["line 2", 'column "prompt" is a number', "expected a string or a list of messages"],
    ),
    "empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
    "broken-json-line": (
        "data.jsonl",
        '{"prompt": "What is 1 + 1?"}\n{"prompt": "What is\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
}
TEACHERS = list(shared.FOREIGN_TEACHERS)


@pytest.mark.badinput
@pytest.mark.parametrize("case", CASES, ids=[f"{KEY}-{c}" for c in CASES])
def test_distillation_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_dataset(KEY, tiny, tmp_path, monkeypatch, CASES[case])


@pytest.mark.badinput
def test_distillation_refuses_conversational_prompts_without_chat_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    data = tiny.data / "conversational_prompt_only"
    student = policy_without_chat_template
    shared.refuses_student_without_chat_template(KEY, tiny, tmp_path, monkeypatch, student, data)


@pytest.mark.badinput
@pytest.mark.parametrize("teacher", TEACHERS, ids=[f"{KEY}-teacher-{t}" for t in TEACHERS])
def test_distillation_refuses_a_teacher_with_another_vocabulary(
    tiny, tmp_path, monkeypatch, foreign_teachers, teacher
):
    data = tiny.data / "prompt_only"
    shared.refuses_foreign_teacher(
        KEY, tiny, tmp_path, monkeypatch, foreign_teachers, teacher, data
    )
