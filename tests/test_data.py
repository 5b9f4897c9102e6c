"""The dataset checker on its own: every TRL format, every kind of column, every hint."""

import json

import pytest
from transformers import AutoTokenizer

from annotated_trl.data import (
    FORMATS,
    METHOD_FORMATS,
    DatasetError,
    check_rows,
    detect_format,
    load_checked_dataset,
    validate_dataset,
)

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


def test_triples_and_pairs_name_the_column_to_add_or_remove():
    """TPO's triples are a pair plus `reference`: each side names the one column that differs."""
    triple = {**PAIR, "reference": " 1 + 1 = 2"}
    assert _check("tpo", triple) == "triple_preference"
    assert '(missing "reference")' in _error("tpo", PAIR)
    message = _error("dpo", triple)
    assert "has triple_preference data, which dpo cannot train on" in message
    assert '(remove "reference")' in message


def test_implicit_triple_reference_must_start_with_the_extracted_prompt():
    # TRL splits the prompt off by characters: " 11" and " 13" share "1", " 4 + 7" does not.
    row = {"chosen": "Q? 11", "rejected": "Q? 13", "reference": "Q? 4 + 7 = 11"}
    assert 'column "reference" does not start with the prompt' in _error("tpo", row)
    assert _check("tpo", {**row, "rejected": "Q? 9"}) == "implicit_triple_preference"


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


# ---------------------------------------------------------------------------------------------
# Every method x every kind of bad data. The same table drives `annotated-trl validate`
# (tests/test_cli.py). A case is (file bytes, words the problem line must contain, tokenizer);
# here each case must be refused by `validate_dataset` *and* by `load_checked_dataset` (what the
# scripts call) with the same first line.

QUESTION = "What is 1 + 1?"
USER = [{"role": "user", "content": QUESTION}]
ANSWER = [{"role": "assistant", "content": "1 + 1 = 2"}]
WRONG = [{"role": "assistant", "content": "1 + 1 = 3"}]

# A good row of each format, plain and conversational.
PLAIN_ROWS = {
    "stepwise_supervision": {
        "prompt": QUESTION,
        "completions": ["1 + 1", "= 2"],
        "labels": [True, True],
    },
    "unpaired_preference": {"prompt": QUESTION, "completion": " 1 + 1 = 2", "label": True},
    "triple_preference": {**PAIR, "reference": " 1 + 1 = 2"},
    "implicit_triple_preference": {
        "chosen": "What is 1 + 1? 2",
        "rejected": "What is 1 + 1? 3",
        "reference": "What is 1 + 1? 1 + 1 = 2",
    },
    "preference": PAIR,
    "implicit_preference": {"chosen": "1 + 1 = 2", "rejected": "1 + 1 = 3"},
    "prompt_completion": {"prompt": QUESTION, "completion": " 1 + 1 = 2"},
    "language_modeling": {"text": "1 + 1 = 2"},
    "conversational_language_modeling": {"messages": USER + ANSWER},
    "privileged_context": {"prompt": QUESTION, "privileged_context": "Example: 1 + 1 = 2"},
    "prompt_only": {"prompt": QUESTION, "answer": "2"},
}
CONVERSATIONAL_ROWS = {
    "stepwise_supervision": {**PLAIN_ROWS["stepwise_supervision"], "prompt": USER},
    "unpaired_preference": {
        **PLAIN_ROWS["unpaired_preference"],
        "prompt": USER,
        "completion": ANSWER,
    },
    "triple_preference": {"prompt": USER, "chosen": ANSWER, "rejected": WRONG, "reference": ANSWER},
    "implicit_triple_preference": {
        "chosen": USER + ANSWER,
        "rejected": USER + WRONG,
        "reference": USER + ANSWER,
    },
    "preference": {"prompt": USER, "chosen": ANSWER, "rejected": WRONG},
    "implicit_preference": {"chosen": USER + ANSWER, "rejected": USER + WRONG},
    "prompt_completion": {"prompt": USER, "completion": ANSWER},
    "language_modeling": {"messages": USER + ANSWER},
    "conversational_language_modeling": {"messages": USER + ANSWER},
    # SDFT's context may stay a string beside a conversational prompt (TRL's docs do so).
    "privileged_context": {"prompt": USER, "privileged_context": "Example: 1 + 1 = 2"},
    "prompt_only": {"prompt": USER, "answer": "2"},
}
LABELS = {"kto": "label", "bco": "label", "prm": "labels"}


def _lines(*rows) -> bytes:
    return b"".join(json.dumps(row).encode() + b"\n" for row in rows)


def _cases(method: str) -> dict:
    """case -> (file bytes, words its first problem line must contain, needs_template_less)."""
    fmt = METHOD_FORMATS[method][0]
    good = PLAIN_ROWS[fmt]
    columns = list(FORMATS[fmt])
    dropped = columns[-1]
    other = next(f for f in FORMATS if f not in METHOD_FORMATS[method])
    cases = {
        "missing-column": (
            _lines({**{c: v for c, v in good.items() if c != dropped}, "id": 1}),
            ["line 1", f"which {method} cannot train on", f'"{dropped}"', "expected rows like"],
            False,
        ),
        "wrong-value-type": (
            _lines(good, {**good, columns[0]: 7}),
            ["line 2", f'column "{columns[0]}" is a number', "expected"],
            False,
        ),
        "empty-file": (b"", ["no rows", "expected rows like"], False),
        "broken-json-line": (
            _lines(good) + b'{"prompt": "What is 2 + 2?", "compl\n',
            ["line 2 is not valid JSON", "expected one object per line"],
            False,
        ),
        "another-methods-format": (
            _lines(PLAIN_ROWS[other]),
            ["line 1", f"has {other} data, which {method} cannot train on", "expected rows like"],
            False,
        ),
        "not-utf8": (
            _lines(good) + "1 + 1 = 2 \N{EM DASH} z\n".encode("cp1252"),
            ["line 2 is not valid UTF-8", "expected UTF-8 text"],
            False,
        ),
        "conversational-without-chat-template": (
            _lines(CONVERSATIONAL_ROWS[fmt]),
            ["conversational data needs a chat template", "the tokenizer has none"],
            True,
        ),
    }
    if method in LABELS:
        column = LABELS[method]
        bad_label = ["yes", "no"] if method == "prm" else "yes"
        words = [f'column "{column}"', "is a string", "expected", "true"]
        cases["non-boolean-label"] = (_lines(good, {**good, column: bad_label}), words, False)
    if fmt == "stepwise_supervision":
        cases["length-mismatch"] = (
            _lines({**good, "labels": [True]}),
            ["line 1", 'has 1 labels but "completions" has 2 steps', "one label per step"],
            False,
        )
    return cases


# "<method>-<case>" -> (method, file bytes, words, needs_template_less)
TABLE = {
    f"{method}-{case}": (method, *spec)
    for method in METHOD_FORMATS
    for case, spec in _cases(method).items()
}
EVERY_METHOD = {
    "missing-column",
    "wrong-value-type",
    "empty-file",
    "broken-json-line",
    "another-methods-format",
    "not-utf8",
    "conversational-without-chat-template",
}


def test_every_method_has_every_case():
    for method in METHOD_FORMATS:
        expected = EVERY_METHOD | ({"non-boolean-label"} if method in LABELS else set())
        expected |= {"length-mismatch"} if method == "prm" else set()
        assert set(_cases(method)) == expected, method


@pytest.mark.badinput
@pytest.mark.parametrize("case_id", list(TABLE), ids=list(TABLE))
def test_validator_and_scripts_name_the_problem(case_id, tmp_path, policy_without_chat_template):
    method, content, words, needs_tokenizer = TABLE[case_id]
    path = tmp_path / "data.jsonl"
    path.write_bytes(content)
    tokenizer = None
    if needs_tokenizer:
        tokenizer = AutoTokenizer.from_pretrained(policy_without_chat_template)
        assert not tokenizer.chat_template
    report = validate_dataset(str(path), method, tokenizer)
    assert report.problems, f"{case_id}: not refused"
    first = report.problems[0]
    assert first.startswith(f"{path}: ") and "\n" not in first
    for word in words:
        assert word in first, first
    # The scripts stop at the same first problem.
    with pytest.raises(DatasetError) as info:
        load_checked_dataset(str(path), method, tokenizer)
    assert str(info.value) == first


def test_good_rows_pass_for_every_method(tmp_path, tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    for method, formats in METHOD_FORMATS.items():
        for fmt in formats:
            for rows in (PLAIN_ROWS, CONVERSATIONAL_ROWS):
                path = tmp_path / "ok.jsonl"
                path.write_bytes(_lines(rows[fmt], rows[fmt]))
                report = validate_dataset(str(path), method, tokenizer)
                assert report.problems == [], (method, fmt, report.problems)
                assert report.rows == {"train": 2}
                messages = rows is CONVERSATIONAL_ROWS or fmt == "conversational_language_modeling"
                assert report.conversational == messages


@pytest.mark.badinput
def test_validate_lists_every_problem_and_counts_beyond_the_limit(tmp_path):
    good = PLAIN_ROWS["unpaired_preference"]
    rows = [{**good, "label": "yes"} for _ in range(5)] + [good, {**good, "completion": 3}]
    path = tmp_path / "d.jsonl"
    path.write_bytes(_lines(*rows) + b"{oops\n\xff\n")
    report = validate_dataset(str(path), "kto", limit=4)
    assert len(report.problems) == 4 and report.more == 5  # 5 labels, 1 type, 1 JSON, 1 UTF-8
    assert [p.split(": ")[1] for p in report.problems] == ["line 1", "line 2", "line 3", "line 4"]
    everything = validate_dataset(str(path), "kto", limit=100).problems
    assert len(everything) == 9
    assert 'line 7: column "completion" is a number' in everything[5]
    assert everything[7].endswith(
        "line 8 is not valid JSON (Expecting property name enclosed in "
        "double quotes); expected one object per line"
    )
    assert "line 9 is not valid UTF-8" in everything[8]


@pytest.mark.badinput
def test_a_row_with_other_columns_midway_is_named(tmp_path):
    good = PLAIN_ROWS["preference"]
    path = tmp_path / "d.jsonl"
    path.write_bytes(_lines(good, {"prompt": "p", "chosen": "c"}, good))
    problems = validate_dataset(str(path), "dpo").problems
    assert problems == [
        f"{path}: line 2 has columns ['chosen', 'prompt'] but earlier rows are preference data; "
        "every row must have the same columns"
    ]


@pytest.mark.badinput
def test_json_file_problems(tmp_path):
    broken = tmp_path / "broken.json"
    broken.write_text('[{"text": "a"}, ', encoding="utf-8")
    assert "not valid JSON" in validate_dataset(str(broken), "sft").problems[0]
    not_a_list = tmp_path / "obj.json"
    not_a_list.write_text('{"text": "a"}', encoding="utf-8")
    assert "top level is an object; expected a list of objects" in str(
        validate_dataset(str(not_a_list), "sft").problems[0]
    )
    rows = tmp_path / "rows.json"
    rows.write_text('[{"text": "a"}, {"text": 5}]', encoding="utf-8")
    assert validate_dataset(str(rows), "sft").problems == [
        f'{rows}: row 2: column "text" is a number; expected a non-empty string'
    ]


@pytest.mark.badinput
def test_missing_path_and_offline_hub_name_are_one_line(tmp_path):
    with pytest.raises(DatasetError, match="no such file or folder"):
        validate_dataset(str(tmp_path / "nope.jsonl"), "sft")
    # Tests run offline (conftest): a Hub name must fail as one line that says why.
    with pytest.raises(DatasetError) as info:
        validate_dataset("trl-lib/Capybara", "sft")
    message = str(info.value)
    assert message.startswith("trl-lib/Capybara: could not load from the Hub (")
    assert "\n" not in message
