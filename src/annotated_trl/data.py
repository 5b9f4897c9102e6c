"""Load a dataset the way `trl <method>` does, and refuse bad data with one clear line.

`--dataset_name` may be a Hub dataset, a local folder of `<split>.jsonl` / `<split>.json` files,
or a single `.json` / `.jsonl` file (its rows become the `train` split). Local files are read
here, line by line, so that an error names the file and the line; TRL would otherwise fail much
later, deep inside tokenisation, with a traceback that names neither.
"""

import json
from pathlib import Path

import datasets

# What a TRL dataset format looks like: the columns that identify it, in detection order
# (most specific first). Conversational variants hold lists of {"role", "content"} messages
# where the standard variants hold strings.
FORMATS = {
    "stepwise_supervision": ("prompt", "completions", "labels"),
    "unpaired_preference": ("prompt", "completion", "label"),
    "preference": ("prompt", "chosen", "rejected"),
    "implicit_preference": ("chosen", "rejected"),
    "prompt_completion": ("prompt", "completion"),
    "language_modeling": ("text",),
    "conversational_language_modeling": ("messages",),
    "sharegpt_conversations": ("conversations",),
    "prompt_only": ("prompt",),
}

# The formats each method trains on (TRL's dataset-format table, checked against its trainers).
METHOD_FORMATS = {
    "sft": ("language_modeling", "conversational_language_modeling", "prompt_completion"),
}

ROLES = {"system", "user", "assistant", "tool"}
EXPECTED = {
    "language_modeling": '{"text": "..."}',
    "conversational_language_modeling": '{"messages": [{"role": "user", "content": "..."}, ...]}',
    "prompt_completion": '{"prompt": "...", "completion": "..."} (both strings or both messages)',
}


class DatasetError(ValueError):
    """A user's dataset is unusable. The message is one line: file, problem, expected format."""


def _expected(method: str) -> str:
    return " or ".join(EXPECTED[f] for f in METHOD_FORMATS[method])


def detect_format(row: dict, text_field: str = "text") -> str | None:
    """The TRL format a row is in, by its columns; None when no format matches."""
    columns = set(row) | ({"text"} if text_field in row else set())
    for name, required in FORMATS.items():
        if set(required) <= columns:
            return name
    return None


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _describe(value) -> str:
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    kind |= {list: "a list", dict: "an object", type(None): "null"}
    return kind.get(type(value), type(value).__name__)


def _check_messages(value, column: str) -> str | None:
    if not _is_messages(value) or not value:
        return f'column "{column}" is {_describe(value)}; expected a non-empty list of messages'
    for i, message in enumerate(value):
        if message.get("role") not in ROLES or not isinstance(message.get("content"), str):
            return (
                f'column "{column}" message {i} is {json.dumps(message)[:80]}; expected '
                f'{{"role": one of {sorted(ROLES)}, "content": a string}}'
            )
    return None


def _check_row(row: dict, fmt: str, text_field: str) -> str | None:
    """The problem with one row of a supported format, or None."""
    if fmt == "language_modeling":
        value = row[text_field]
        if not isinstance(value, str) or not value:
            return f'column "{text_field}" is {_describe(value)}; expected a non-empty string'
        return None
    if fmt == "conversational_language_modeling":
        return _check_messages(row["messages"], "messages")
    # prompt_completion: both strings, or both lists of messages.
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return None if completion else 'column "completion" is an empty string'
    if _is_messages(prompt) and _is_messages(completion):
        return _check_messages(prompt, "prompt") or _check_messages(completion, "completion")
    return (
        f'columns "prompt" and "completion" are {_describe(prompt)} and {_describe(completion)}; '
        "expected both strings or both lists of messages"
    )


def _is_conversational(row: dict, fmt: str) -> bool:
    return fmt == "conversational_language_modeling" or (
        fmt == "prompt_completion" and _is_messages(row["prompt"])
    )


def check_rows(rows, source: str, method: str, tokenizer=None, text_field: str = "text") -> str:
    """Check every row; return the detected format or raise DatasetError naming the first problem.

    `rows` yields (location, row) pairs, e.g. ("line 3", {...}).
    """
    fmt, count = None, 0
    for location, row in rows:
        count += 1
        if not isinstance(row, dict):
            raise DatasetError(f"{source}: {location} is {_describe(row)}; expected a JSON object")
        row_format = detect_format(row, text_field)
        if fmt is None:
            fmt = row_format
            if fmt not in METHOD_FORMATS[method]:
                found = f"{fmt} data" if fmt else f"columns {sorted(row)}"
                raise DatasetError(
                    f"{source}: {location} has {found}, which {method} cannot train on; "
                    f"expected rows like {_expected(method)}"
                )
            if (
                _is_conversational(row, fmt)
                and tokenizer is not None
                and not tokenizer.chat_template
            ):
                raise DatasetError(
                    f"{source}: conversational data needs a chat template, and the tokenizer has "
                    "none; pass a model whose tokenizer has one, or use plain-text rows like "
                    f"{EXPECTED['language_modeling']}"
                )
        elif row_format != fmt:
            raise DatasetError(
                f"{source}: {location} has columns {sorted(row)} but earlier rows are {fmt} data; "
                "every row must have the same columns"
            )
        problem = _check_row(row, fmt, text_field)
        if problem:
            raise DatasetError(f"{source}: {location}: {problem}")
    if count == 0:
        raise DatasetError(f"{source}: no rows; expected rows like {_expected(method)}")
    return fmt


def _read_local(path: Path):
    """Yield (location, row) from a .jsonl or .json file, refusing undecodable input."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise DatasetError(f"{path}: line {line} is not valid UTF-8; expected UTF-8 text") from None
    if path.suffix == ".json":
        try:
            rows = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{path}: not valid JSON ({err}); expected a list of objects"
            ) from None
        if not isinstance(rows, list):
            raise DatasetError(
                f"{path}: top level is {_describe(rows)}; expected a list of objects"
            )
        yield from ((f"row {i}", row) for i, row in enumerate(rows, 1))
        return
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{path}: line {number} is not valid JSON ({err.msg}); expected one object per line"
            ) from None
        yield f"line {number}", row


def _local_split_files(path: Path) -> dict[str, Path]:
    if path.is_file():
        if path.suffix not in (".json", ".jsonl"):
            raise DatasetError(f"{path}: unsupported file type; expected a .json or .jsonl file")
        return {"train": path}
    files = sorted(path.glob("*.jsonl")) + sorted(path.glob("*.json"))
    if not files:
        raise DatasetError(f"{path}: no .json or .jsonl files; expected train.jsonl (+ test.jsonl)")
    return {f.stem: f for f in files}


def load_checked_dataset(
    name: str, method: str, tokenizer=None, config: str | None = None, text_field: str = "text"
) -> datasets.DatasetDict:
    """Load `name` (Hub id, folder, or .json/.jsonl file) and check it fits `method`."""
    path = Path(name)
    if path.exists():
        split_files = _local_split_files(path)
        for file in split_files.values():
            check_rows(_read_local(file), str(file), method, tokenizer, text_field)
        files = {split: str(file) for split, file in split_files.items()}
        return datasets.load_dataset("json", data_files=files)
    if path.suffix in (".json", ".jsonl") or name.startswith((".", "/")):
        raise DatasetError(
            f"{name}: no such file or folder; expected a .json/.jsonl file or folder"
        )
    try:
        loaded = datasets.load_dataset(name, name=config)
    except Exception as err:  # the Hub's errors are many; the user needs the first line of one
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatasetError(f"{name}: could not load from the Hub ({first_line})") from None
    for split, dataset in loaded.items():
        rows = ((f"row {i}", row) for i, row in enumerate(dataset, 1))
        check_rows(rows, f"{name}[{split}]", method, tokenizer, text_field)
    return loaded
