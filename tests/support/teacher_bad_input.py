"""Bad-input checks shared by GKD and Distillation: both scripts take a student and a teacher, so
beside their own dataset cases (GKD trains on conversations, Distillation on prompts) they share
how a case is run, the chat-template check and the teacher cases.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message.
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

from support.bad_input import refusal, write_case
from support.processes import REPO

# teacher (a key of the `foreign_teachers` fixture) -> words the error line must contain
FOREIGN_TEACHERS = {
    "other-tokenizer": ["its tokenizer differs from the student's", "same family"],
    "wider-output": ["logits per token", "expected the same vocabulary size"],
}


def _recipe(key):
    return REPO / "annotated_examples" / "recipes" / f"{key}_tiny.yaml"


def _args(student, teacher, data, out) -> list:
    return [
        *["--model_name_or_path", student, "--teacher_model_name_or_path", teacher],
        *["--dataset_name", data, "--output_dir", out],
    ]


def _refusal(key, monkeypatch, student, teacher, data, out) -> str:
    script = REPO / "annotated_examples" / f"{key}_training.py"
    return refusal(monkeypatch, script, _recipe(key), *_args(student, teacher, data, out))


def refuses_bad_dataset(key, tiny, tmp_path, monkeypatch, case):
    """case: (file name, file content, words the error line must contain)."""
    name, content, words = case
    data, out = write_case(tmp_path, name, content), tmp_path / "out"
    message = _refusal(key, monkeypatch, tiny.policy, tiny.teacher, data, out)
    assert str(data) in message, message
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()


def refuses_student_without_chat_template(key, tiny, tmp_path, monkeypatch, student, data):
    """`data` is conversational; `student`'s tokenizer has no chat template to render it."""
    out = tmp_path / "out"
    message = _refusal(key, monkeypatch, student, tiny.teacher, data, out)
    assert "needs a chat template" in message and "tokenizer has none" in message, message
    assert str(data) in message, message
    assert not out.exists()


def refuses_foreign_teacher(key, tiny, tmp_path, monkeypatch, foreign_teachers, teacher, data):
    """`data` is good for the method; only the teacher is wrong."""
    out = tmp_path / "out"
    message = _refusal(key, monkeypatch, tiny.policy, foreign_teachers[teacher], data, out)
    assert str(foreign_teachers[teacher]) in message, message
    assert all(word in message for word in FOREIGN_TEACHERS[teacher]), message
    assert not out.exists()
