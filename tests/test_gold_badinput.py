"""GOLD bad input: every malformed dataset is refused with one line, before anything is written.
The dataset cases are GOLD's own (conversations or prompt/completion pairs); how they run and the
chat-template check are shared with GKD and Distillation (`tests/support/teacher_bad_input.py`).
The teacher cases are GOLD's: without `use_uld_loss` a teacher of another tokenizer is refused
(TRL would resize its embeddings to the student's vocabulary without a word); with it, the same
teacher is what the method is for."""

import pytest
from support import teacher_bad_input as shared
from support.bad_input import jsonl, refusal
from support.processes import REPO

KEY = "gold"
SCRIPT = REPO / "annotated_examples" / "gold_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "gold_tiny.yaml"
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
        ["line 1", "preference data", "gold cannot train on", '{"messages": ['],
    ),
    # GOLD's collator needs an answer after the prompt: prompts alone cannot be distilled.
    "prompt-only-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?"}]),
        ["line 1", "prompt_only data", "gold cannot train on"],
    ),
    "completion-is-a-number": (
        "data.jsonl",
        jsonl(
            [
                {"prompt": "What is 1 + 1?", "completion": " 2"},
                {"prompt": "1 + 2?", "completion": 3},
            ]
        ),
        ["line 2", 'column "completion" is a number'],
    ),
    "messages-is-a-string": (
        "data.jsonl",
        jsonl([GOOD, {"messages": "What is 1 + 1? 2"}]),
        ["line 2", 'column "messages" is a string', "expected a non-empty list of messages"],
    ),
    "empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", CASES, ids=[f"{KEY}-{c}" for c in CASES])
def test_gold_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_dataset(KEY, tiny, tmp_path, monkeypatch, CASES[case])


@pytest.mark.badinput
def test_gold_refuses_conversations_without_chat_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    data = tiny.data / "conversational_language_modeling"
    student = policy_without_chat_template
    shared.refuses_student_without_chat_template(KEY, tiny, tmp_path, monkeypatch, student, data)


@pytest.mark.badinput
def test_gold_without_uld_refuses_a_teacher_with_another_tokenizer(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    message = refusal(
        monkeypatch, SCRIPT, RECIPE,
        *["--model_name_or_path", tiny.policy, "--teacher_model_name_or_path", tiny.gold_teacher],
        *["--dataset_name", tiny.data / "conversational_language_modeling"],
        *["--output_dir", out, "--use_uld_loss", "false"],
    )  # fmt: skip
    assert str(tiny.gold_teacher) in message and "its tokenizer differs" in message, message
    assert not out.exists()
