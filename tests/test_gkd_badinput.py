"""GKD bad input: every malformed dataset is refused with one line, before anything is written.

Each case runs the real script in-process (`runpy`, same code path as `python script.py`) and
expects `SystemExit` carrying the one-line message; one case also runs as a true subprocess to
check what a user sees: exit code 1, one line on stderr, no traceback, no output folder.
"""

import pytest
from bad_input import jsonl, refusal, write_case
from conftest import REPO, run_script

SCRIPT = REPO / "annotated_examples" / "gkd_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "gkd_tiny.yaml"


GOOD = {
    "messages": [
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "2"},
    ]
}

# name -> (file name, file content, words the error line must contain)
CASES = {
    "gkd-preference-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
        ["line 1", "preference data", "gkd cannot train on", '{"messages": ['],
    ),
    "gkd-prompt-only-data": (
        "data.jsonl",
        jsonl([{"prompt": "What is 1 + 1?"}]),
        ["line 1", "prompt_only data", "gkd cannot train on"],
    ),
    "gkd-messages-is-a-string": (
        "data.jsonl",
        jsonl([GOOD, {"messages": "What is 1 + 1? 2"}]),
        ["line 2", 'column "messages" is a string', "expected a non-empty list of messages"],
    ),
    "gkd-bad-message": (
        "data.jsonl",
        jsonl([{"messages": [{"role": "user", "content": 7}]}]),
        ["line 1", "message 0", '"role": one of'],
    ),
    "gkd-empty-file": ("data.jsonl", "", ["no rows", "expected rows like"]),
    "gkd-broken-json-line": (
        "data.jsonl",
        jsonl([GOOD]) + '{"messages": [\n',
        ["line 2", "not valid JSON", "one object per line"],
    ),
}


def _args(tiny, model, data, out):
    return ["--model_name_or_path", model, "--teacher_model_name_or_path", tiny.teacher] + [
        "--dataset_name",
        data,
        "--output_dir",
        out,
    ]


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_gkd_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    name, content, words = CASES[case]
    data = write_case(tmp_path, name, content)
    out = tmp_path / "out"
    message = refusal(monkeypatch, SCRIPT, RECIPE, *_args(tiny, tiny.policy, data, out))
    assert message.startswith("error: ") and "\n" not in message
    assert str(data) in message
    for word in words:
        assert word in message
    assert not out.exists()


@pytest.mark.badinput
def test_gkd_refuses_conversations_without_chat_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    data = tiny.data / "conversational_language_modeling"
    out = tmp_path / "out"
    args = _args(tiny, policy_without_chat_template, data, out)
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert "needs a chat template" in message and "tokenizer has none" in message
    assert str(data) in message
    assert not out.exists()


@pytest.mark.badinput
def test_gkd_bad_input_as_a_user_sees_it(tiny, tmp_path):
    """A real process: exit code 1, exactly one line on stderr, no traceback, no output dir."""
    out = tmp_path / "out"
    data = write_case(tmp_path, "preference.jsonl", CASES["gkd-preference-data"][1])
    result = run_script("gkd_training.py", "--config", RECIPE, *_args(tiny, tiny.policy, data, out))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and str(data) in lines[0]
    assert "gkd cannot train on" in lines[0]
    assert not out.exists()


@pytest.mark.badinput
@pytest.mark.parametrize(
    "teacher, words",
    [
        ("other-tokenizer", ["its tokenizer differs from the student's", "same family"]),
        ("wider-output", ["logits per token", "expected the same vocabulary size"]),
    ],
    ids=["gkd-teacher-other-tokenizer", "gkd-teacher-wider-output"],
)
def test_gkd_refuses_a_teacher_with_another_vocabulary(
    tiny, tmp_path, monkeypatch, foreign_teachers, teacher, words
):
    out = tmp_path / "out"
    args = _args(tiny, tiny.policy, tiny.data / "conversational_language_modeling", out)
    args[args.index("--teacher_model_name_or_path") + 1] = foreign_teachers[teacher]
    message = refusal(monkeypatch, SCRIPT, RECIPE, *args)
    assert str(foreign_teachers[teacher]) in message
    assert all(word in message for word in words), message
    assert not out.exists()
