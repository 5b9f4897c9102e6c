"""GKD bad input: every malformed dataset is refused with one line, before anything is written.
The dataset cases are GKD's own (it trains on conversations); how they run, the chat-template
check and the teacher cases are shared with Distillation: see
`tests/support/teacher_bad_input.py`."""

import pytest
from support import teacher_bad_input as shared
from support.bad_input import jsonl

KEY = "gkd"
# The fixture folder of conversations GKD trains on.
CONVERSATIONS = "conversational_language_modeling"
GOOD = {
    "messages": [
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
    ]
}

# case -> (file name, file content, words the error line must contain)
CASES = {
    "preference-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
        ["line 1", "preference data", "gkd cannot train on", '{"messages": ['],
    ),
    "prompt-only-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?"}]),
        ["line 1", "prompt_only data", "gkd cannot train on"],
    ),
    "messages-is-a-string": (
        "data.jsonl",
        jsonl([GOOD, {"messages": "What is 1 + 1? 2"}]),
        ["line 2", 'column "messages" is a string', "expected a non-empty list of messages"],
    ),
    "bad-message": (
        "data.jsonl",
        jsonl([{"messages": [{"role": "user", "content": 7}]}]),
        ["line 1", "message 0", '"role": one of'],
    ),
    "empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
    "broken-json-line": (
        "data.jsonl",
        jsonl([GOOD]) + '{"messages": [\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
}
TEACHERS = list(shared.FOREIGN_TEACHERS)


@pytest.mark.badinput
@pytest.mark.parametrize("case", CASES, ids=[f"{KEY}-{c}" for c in CASES])
def test_gkd_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_dataset(KEY, tiny, tmp_path, monkeypatch, CASES[case])


@pytest.mark.badinput
def test_gkd_refuses_conversations_without_chat_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    data = tiny.data / CONVERSATIONS
    student = policy_without_chat_template
    shared.refuses_student_without_chat_template(KEY, tiny, tmp_path, monkeypatch, student, data)


@pytest.mark.badinput
@pytest.mark.parametrize("teacher", TEACHERS, ids=[f"{KEY}-teacher-{t}" for t in TEACHERS])
def test_gkd_refuses_a_teacher_with_another_vocabulary(
    tiny, tmp_path, monkeypatch, foreign_teachers, teacher
):
    data = tiny.data / CONVERSATIONS
    shared.refuses_foreign_teacher(
        KEY, tiny, tmp_path, monkeypatch, foreign_teachers, teacher, data
    )
