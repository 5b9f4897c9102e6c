"""The dataset checker on its own: every TRL format, every kind of column, every hint."""

import pytest

from annotated_trl.data import DatasetError, check_rows, detect_format

PAIR = {"prompt": "What is 1 + 1?", "chosen": " 1 + 1 = 2", "rejected": " 1 + 1 = 3"}
MSG = [{"role": "user", "content": "Hi"}]


def _check(method, *rows):
    return check_rows(((f"line {i}", r) for i, r in enumerate(rows, 1)), "data.jsonl", method)


def _error(method, *rows) -> str:
    with pytest.raises(DatasetError) as info:
        _check(method, *rows)
    return str(info.value)


@pytest.mark.parametrize(
    "row, fmt",
    [
        ({"text": "a"}, "language_modeling"),
        ({"messages": MSG}, "conversational_language_modeling"),
        ({"prompt": "a", "completion": "b"}, "prompt_completion"),
        (PAIR, "preference"),
        ({"chosen": "a", "rejected": "b"}, "implicit_preference"),
        ({"prompt": "a", "completion": "b", "label": True}, "unpaired_preference"),
        ({"prompt": "a"}, "prompt_only"),
        ({"prompt": "a", "completions": ["b"], "labels": [True]}, "stepwise_supervision"),
        ({"question": "a"}, None),
    ],
)
def test_detect_format(row, fmt):
    assert detect_format(row) == fmt


def test_pairwise_methods_take_explicit_and_implicit_pairs():
    for method in ("dpo", "reward", "orpo", "cpo", "kto"):
        assert _check(method, PAIR) == "preference"
        assert _check(method, {"chosen": "a", "rejected": "b"}) == "implicit_preference"
    answer = [{"role": "assistant", "content": "2"}]
    conversational = {"prompt": MSG, "chosen": answer, "rejected": answer}
    assert _check("dpo", conversational) == "preference"


def test_prompt_only_data_to_a_pairwise_method_names_what_is_missing():
    message = _error("dpo", {"prompt": "What is 1 + 1?"})
    assert "line 1 has prompt_only data, which dpo cannot train on" in message
    assert '(missing "chosen", "rejected")' in message


def test_missing_rejected_is_named():
    message = _error("reward", {"prompt": "p", "chosen": "c"})
    assert 'missing "rejected"' in message


@pytest.mark.parametrize("label", ["yes", 1, None])
def test_kto_label_must_be_boolean(label):
    message = _error("kto", {"prompt": "p", "completion": "c", "label": label})
    assert 'column "label"' in message and "expected true or false" in message


def test_pair_mixing_strings_and_messages_is_refused():
    message = _error("dpo", {**PAIR, "chosen": [{"role": "assistant", "content": "2"}]})
    assert "expected all strings or all lists of messages" in message


def test_empty_completion_is_refused_but_empty_prompt_is_allowed():
    assert _check("dpo", {**PAIR, "prompt": ""}) == "preference"
    assert 'column "chosen" is an empty string' in _error("dpo", {**PAIR, "chosen": ""})


def test_stepwise_labels_must_match_steps():
    from annotated_trl.data import _check_row

    row = {"prompt": "p", "completions": ["a", "b"], "labels": [True]}
    assert "has 1 labels but" in _check_row(row, "stepwise_supervision", "text")
    row = {"prompt": "p", "completions": ["a"], "labels": ["true"]}
    assert "expected a list of true/false" in _check_row(row, "stepwise_supervision", "text")
    row = {"prompt": "p", "completions": "a", "labels": [True]}
    assert "expected a non-empty list of strings" in _check_row(row, "stepwise_supervision", "text")


@pytest.mark.parametrize("margin", ["x", True, [1]])
def test_reward_margin_must_be_a_number(margin):
    assert _check("reward", {**PAIR, "margin": 1.5}) == "preference"
    message = _error("reward", {**PAIR, "margin": margin})
    assert 'column "margin"' in message and "expected a number" in message
