"""Load a dataset the way `trl <method>` does, and refuse bad data with one clear line.

`--dataset_name` may be a Hub dataset, a local folder of `<split>.jsonl` / `<split>.json` files,
or a single `.json` / `.jsonl` file (its rows become the `train` split). Local files are read
here, line by line, so that an error names the file and the line; TRL would otherwise fail much
later, deep inside tokenisation, with a traceback that names neither.

The scripts stop at the first problem (`load_checked_dataset`); `annotated-trl validate` lists
them all, one line each (`validate_dataset`). Both run the same checks (`scan_rows`).

The scripts' `ScriptArguments` (TRL's, plus `--eval_max_samples`) and `eval_subset` are here
too: which rows of the test split an evaluation uses.
"""

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import trl

from annotated_trl import image_data
from annotated_trl.methods import METHODS, PAIRS

# What a value in a column must be.
STRING = "a non-empty string"
MESSAGES = "a non-empty list of messages"
TEXT = "a string or a list of messages"  # all TEXT columns of a row agree: plain or conversational
LABEL = "true or false"
STEPS = "a non-empty list of strings"
STEP_LABELS = "a list of true/false, one per step"
# SDFT's teacher-only text: a string, or messages whose texts are joined. Not a TEXT column: a
# conversational prompt with a string context is what TRL's own docs show.
CONTEXT = "a non-empty string or a list of messages"

# TRL's dataset formats: the columns that identify each, in detection order (most specific
# first), with what each column must hold. Conversational variants hold lists of
# {"role", "content"} messages where the standard variants hold strings.
FORMATS = {
    "stepwise_supervision": {"prompt": TEXT, "completions": STEPS, "labels": STEP_LABELS},
    "unpaired_preference": {"prompt": TEXT, "completion": TEXT, "label": LABEL},
    # TPO's triples: a pair plus a gold `reference` answer (before the pairs: more specific).
    "triple_preference": {"prompt": TEXT, "chosen": TEXT, "rejected": TEXT, "reference": TEXT},
    "implicit_triple_preference": {"chosen": TEXT, "rejected": TEXT, "reference": TEXT},
    "preference": {"prompt": TEXT, "chosen": TEXT, "rejected": TEXT},
    "implicit_preference": {"chosen": TEXT, "rejected": TEXT},
    "prompt_completion": {"prompt": TEXT, "completion": TEXT},
    "language_modeling": {"text": STRING},
    "conversational_language_modeling": {"messages": MESSAGES},
    # SDFT: a prompt for the student plus text only its teacher sees (a demonstration).
    "privileged_context": {"prompt": TEXT, "privileged_context": CONTEXT},
    "prompt_only": {"prompt": TEXT},
}
EXAMPLES = {
    "stepwise_supervision": '{"prompt": "...", "completions": ["...", ...], "labels": [true, ...]}',
    "unpaired_preference": '{"prompt": "...", "completion": "...", "label": true}',
    "triple_preference": (
        '{"prompt": "...", "chosen": "...", "rejected": "...", "reference": "..."}'
    ),
    "implicit_triple_preference": '{"chosen": "...", "rejected": "...", "reference": "..."}',
    "preference": '{"prompt": "...", "chosen": "...", "rejected": "..."}',
    "implicit_preference": '{"chosen": "...", "rejected": "..."}',
    "prompt_completion": '{"prompt": "...", "completion": "..."}',
    "language_modeling": '{"text": "..."}',
    "conversational_language_modeling": '{"messages": [{"role": "user", "content": "..."}, ...]}',
    "privileged_context": '{"prompt": "...", "privileged_context": "..."}',
    "prompt_only": '{"prompt": "..."}',
}

# The formats each method trains on (annotated_trl.methods holds them, with their reasons).
METHOD_FORMATS = {m.key: m.formats for m in METHODS}

ROLES = {"system", "user", "assistant", "tool"}


class DatasetError(ValueError):
    """A user's dataset is unusable. The message is one line: file, problem, expected format."""


def _expected(method: str) -> str:
    return " or ".join(EXAMPLES[f] for f in METHOD_FORMATS[method])


def detect_format(row: dict, text_field: str = "text") -> str | None:
    """The TRL format a row is in, by its columns; None when no format matches."""
    columns = set(row) | ({"text"} if text_field in row else set())
    return next((name for name, spec in FORMATS.items() if set(spec) <= columns), None)


def _is_messages(value) -> bool:
    return isinstance(value, list) and all(isinstance(m, dict) for m in value)


def _describe(value) -> str:
    kind = {str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    kind |= {list: "a list", dict: "an object", type(None): "null"}
    return kind.get(type(value), type(value).__name__)


def _check_messages(value, column: str) -> str | None:
    if not _is_messages(value) or not value:
        return f'column "{column}" is {_describe(value)}; expected {MESSAGES}'
    for i, message in enumerate(value):
        content = message.get("content")
        if message.get("role") not in ROLES or not isinstance(content, (str, list)):
            return (
                f'column "{column}" message {i} is {json.dumps(message, default=str)[:80]}; '
                f'expected {{"role": one of {sorted(ROLES)}, "content": a string}}'
            )
        if isinstance(content, list):  # a vision-language row's content parts
            problem = image_data.check_parts(content, f'column "{column}" message {i}')
            if problem:
                return problem
    return None


def _check_value(value, kind: str, column: str, row: dict) -> str | None:
    """The problem with one column's value, or None."""
    found = f'column "{column}" is {_describe(value)}; expected {kind}'
    if kind == STRING:
        return None if isinstance(value, str) and value else found
    if kind == MESSAGES:
        return _check_messages(value, column)
    if kind == LABEL:
        return None if isinstance(value, bool) else found
    if kind == STEPS:
        ok = isinstance(value, list) and value and all(isinstance(s, str) and s for s in value)
        return None if ok else found
    if kind == STEP_LABELS:
        if not isinstance(value, list):
            return found
        for step, label in enumerate(value):
            if not isinstance(label, bool):
                return f'column "{column}" step {step} is {_describe(label)}; expected {kind}'
        steps = row.get("completions")
        if isinstance(steps, list) and len(value) != len(steps):
            return (
                f'column "{column}" has {len(value)} labels but "completions" has {len(steps)} '
                "steps; expected one label per step"
            )
        return None
    if kind == CONTEXT:
        if isinstance(value, str):
            return None if value.strip() else f'column "{column}" is an empty string'
        return _check_messages(value, column) if _is_messages(value) else found
    # TEXT: a string (a prompt may be empty), or messages.
    if isinstance(value, str):
        return None if value or column == "prompt" else f'column "{column}" is an empty string'
    return _check_messages(value, column) if _is_messages(value) else found


def _row_problems(row: dict, fmt: str, text_field: str) -> Iterator[str]:
    """Every problem with one row of a supported format, column by column."""
    spec = {(text_field if c == "text" else c): kind for c, kind in FORMATS[fmt].items()}
    for column, kind in spec.items():
        problem = _check_value(row[column], kind, column, row)
        if problem:
            yield problem
    # RewardTrainer reads an optional per-pair `margin` column.
    margin = row.get("margin")
    if (
        fmt in PAIRS
        and margin is not None
        and (isinstance(margin, bool) or not isinstance(margin, (int, float)))
    ):
        yield f'column "margin" is {_describe(margin)}; expected a number'
    if fmt == "implicit_triple_preference":
        problem = _implicit_triple_problem(row)
        if problem:
            yield problem
    text_columns = [c for c, kind in spec.items() if kind == TEXT]
    if len({isinstance(row[c], str) for c in text_columns}) > 1:
        kinds = " and ".join(_describe(row[c]) for c in text_columns)
        names = " and ".join(f'"{c}"' for c in text_columns)
        yield f"columns {names} are {kinds}; expected all strings or all lists of messages"


def _implicit_triple_problem(row: dict) -> str | None:
    """TPO splits the prompt off `chosen` and `rejected` (their common start) and off `reference`
    too, so `reference` must start with that same prompt."""
    columns = ("chosen", "rejected", "reference")
    values = [row[c] for c in columns]
    if not (all(isinstance(v, str) for v in values) or all(_is_messages(v) for v in values)):
        return None  # the type checks name it
    from trl.data_utils import extract_prompt  # here: importing it loads torch (~8 s cold)

    prompt = extract_prompt(row)["prompt"]
    if row["reference"][: len(prompt)] == prompt:
        return None
    return (
        'column "reference" does not start with the prompt that "chosen" and "rejected" share; '
        'expected the same prompt at the start of all three, or a "prompt" column'
    )


def _check_row(row: dict, fmt: str, text_field: str) -> str | None:
    """The first problem with one row of a supported format, or None."""
    return next(_row_problems(row, fmt, text_field), None)


def _is_conversational(row: dict, fmt: str) -> bool:
    return any(_is_messages(row[c]) for c, kind in FORMATS[fmt].items() if kind in (TEXT, MESSAGES))


def _wrong_format(row: dict, fmt: str | None, method: str) -> str:
    """Why a row's format is not one `method` takes, naming what is missing when that helps."""
    found = f"{fmt} data" if fmt else f"columns {sorted(row)}"
    closest = min(METHOD_FORMATS[method], key=lambda f: len(set(FORMATS[f]) - set(row)))
    missing = sorted(set(FORMATS[closest]) - set(row))
    hint = ""
    if missing and set(FORMATS[closest]) & set(row):
        hint = " (missing " + ", ".join(f'"{c}"' for c in missing) + ")"
    elif not missing and fmt:  # a more specific format (a TPO triple for a pair method)
        extra = [c for c in FORMATS[fmt] if c not in FORMATS[closest]]
        hint = " (remove " + ", ".join(f'"{c}"' for c in extra) + ")"
    return (
        f"has {found}, which {method} cannot train on{hint}; expected rows like {_expected(method)}"
    )


class _Unreadable(str):
    """A line (or a whole .json file) that is not a JSON value: the problem, in words."""


@dataclass
class Report:
    """What one pass over a dataset found: its format and size, or its problems."""

    format: str | None = None
    conversational: bool = False
    rows: dict[str, int] = field(default_factory=dict)  # split -> number of rows
    problems: list[str] = field(default_factory=list)  # the first `limit`, one line each
    more: int = 0  # problems found beyond those kept


def scan_rows(
    rows, source: str, method: str, tokenizer=None, text_field: str = "text", report=None
) -> Iterator[str]:
    """Yield every problem in `rows`, one line each, naming `source` and the row.

    `rows` yields (location, row) pairs, e.g. ("line 3", {...}). The first readable row fixes the
    format; a first row `method` cannot train on, or a missing chat template, is one problem for
    the whole source (every row would repeat it). `report`, if given, receives the format, the
    row count (under the key `source`) and whether the rows are conversational.
    """
    report = report if report is not None else Report()
    fmt, count = None, 0
    # Image paths in a local file are relative to its folder.
    image_root = Path(source).parent if Path(source).suffix in (".json", ".jsonl") else None
    image_token = getattr(tokenizer, "image_token", None)
    for location, row in rows:
        count += 1
        if isinstance(row, _Unreadable):
            yield f"{source}: {row}"
            continue
        if not isinstance(row, dict):
            yield f"{source}: {location} is {_describe(row)}; expected a JSON object"
            continue
        row_format = detect_format(row, text_field)
        if fmt is None:
            fmt = row_format
            if fmt not in METHOD_FORMATS[method]:
                yield f"{source}: {location} {_wrong_format(row, fmt, method)}"
                return
            report.format = report.format or fmt
            needs_processor = image_data.has_images(row) and tokenizer is not None
            if needs_processor and not image_data.is_processor(tokenizer):
                yield (
                    f"{source}: rows have images, but the model's processing class is a "
                    f"tokenizer ({type(tokenizer).__name__}); expected a vision-language "
                    "model, whose folder has a processor (AutoProcessor), or rows without "
                    '"images"'
                )
                return
            if _is_conversational(row, fmt):
                report.conversational = True
                if tokenizer is not None and not tokenizer.chat_template:
                    yield (
                        f"{source}: conversational data needs a chat template, and the tokenizer "
                        "has none; pass a model whose tokenizer has one, or use plain-text rows"
                    )
                    return
        elif row_format != fmt:
            yield (
                f"{source}: {location} has columns {sorted(row)} but earlier rows are {fmt} data; "
                "every row must have the same columns"
            )
            continue
        for problem in _row_problems(row, fmt, text_field):
            yield f"{source}: {location}: {problem}"
        if image_data.has_images(row):  # a vision-language row (annotated_trl.image_data)
            for problem in image_data.row_problems(row, image_root, image_token):
                yield f"{source}: {location}: {problem}"
    report.rows[source] = count
    if count == 0:
        yield f"{source}: no rows; expected rows like {_expected(method)}"


def check_rows(rows, source: str, method: str, tokenizer=None, text_field: str = "text") -> str:
    """Check every row; return the detected format, or raise DatasetError with the first problem."""
    report = Report()
    problem = next(scan_rows(rows, source, method, tokenizer, text_field, report), None)
    if problem:
        raise DatasetError(problem)
    return report.format


def _read_local(path: Path):
    """Yield (location, row) from a .jsonl or .json file; unreadable parts as _Unreadable."""
    data = path.read_bytes()
    if path.suffix == ".json":
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = data[: err.start].count(b"\n") + 1
            yield "", _Unreadable(f"line {line} is not valid UTF-8; expected UTF-8 text")
            return
        try:
            rows = json.loads(text) if text.strip() else []
        except json.JSONDecodeError as err:
            yield "", _Unreadable(f"not valid JSON ({err}); expected a list of objects")
            return
        if not isinstance(rows, list):
            yield "", _Unreadable(f"top level is {_describe(rows)}; expected a list of objects")
            return
        yield from ((f"row {i}", row) for i, row in enumerate(rows, 1))
        return
    # JSON Lines: each line on its own, so one bad line does not hide the others.
    for number, raw in enumerate(data.split(b"\n"), 1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield (
                f"line {number}",
                _Unreadable(f"line {number} is not valid UTF-8; expected UTF-8 text"),
            )
            continue
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            yield (
                f"line {number}",
                _Unreadable(
                    f"line {number} is not valid JSON ({err.msg}); expected one object per line"
                ),
            )
            continue
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


def _load_hub(name: str, config: str | None) -> datasets.DatasetDict:
    if name.endswith((".json", ".jsonl")) or name.startswith((".", "/")):
        raise DatasetError(
            f"{name}: no such file or folder; expected a .json/.jsonl file or folder"
        )
    try:
        return datasets.load_dataset(name, name=config)
    except Exception as err:  # the Hub's errors are many; the user needs the first line of one
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatasetError(f"{name}: could not load from the Hub ({first_line})") from None


def _sources(name: str, config: str | None):
    """(split, source, rows) for every split of `name`; raise DatasetError if it cannot be read."""
    path = Path(name)
    if path.exists():
        return [(split, str(f), _read_local(f)) for split, f in _local_split_files(path).items()]
    return [
        (split, f"{name}[{split}]", ((f"row {i}", row) for i, row in enumerate(rows, 1)))
        for split, rows in _load_hub(name, config).items()
    ]


def validate_dataset(
    name: str,
    method: str,
    tokenizer=None,
    config: str | None = None,
    text_field: str = "text",
    limit: int = 20,
) -> Report:
    """Check every row of every split of `name` for `method`; keep the first `limit` problems.

    Unlike `load_checked_dataset`, it does not stop at the first problem: `annotated-trl
    validate` prints them all (up to `limit`, then how many more). A dataset that cannot be
    opened at all raises DatasetError.
    """
    report = Report()
    for split, source, rows in _sources(name, config):
        for problem in scan_rows(rows, source, method, tokenizer, text_field, report):
            if len(report.problems) < limit:
                report.problems.append(problem)
            else:
                report.more += 1
        report.rows[split] = report.rows.pop(source, 0)
    return report


def load_checked_dataset(
    name: str, method: str, tokenizer=None, config: str | None = None, text_field: str = "text"
) -> datasets.DatasetDict:
    """Load `name` (Hub id, folder, or .json/.jsonl file) and check it fits `method`.

    Raises DatasetError with the first problem, before any model is loaded.
    """
    path = Path(name)
    if path.exists():
        split_files = _local_split_files(path)
        for file in split_files.values():
            check_rows(_read_local(file), str(file), method, tokenizer, text_field)
        files = {split: str(file) for split, file in split_files.items()}
        return image_data.load_local_images(
            datasets.load_dataset("json", data_files=files), split_files
        )
    loaded = _load_hub(name, config)
    for split, rows in loaded.items():
        located = ((f"row {i}", row) for i, row in enumerate(rows, 1))
        check_rows(located, f"{name}[{split}]", method, tokenizer, text_field)
    return loaded


# ## Evaluating on part of the test split


@dataclass
class ScriptArguments(trl.ScriptArguments):
    """`trl.ScriptArguments` (which data, which splits) plus `eval_max_samples`, shared by every
    example script: TRL's scripts have no way to evaluate on part of the test split."""

    eval_max_samples: int | None = field(
        default=None,
        metadata={
            "help": "Evaluate on this many rows of the test split, drawn with --seed (the same "
            "rows at every evaluation). Unset: the whole split."
        },
    )

    def __post_init__(self):
        if self.eval_max_samples is not None and self.eval_max_samples < 1:
            raise ValueError(
                f"--eval_max_samples {self.eval_max_samples}: expected a number of rows from 1 "
                "up, or leave it unset to evaluate on the whole test split"
            )


def eval_subset(dataset: datasets.Dataset, max_samples: int | None, seed: int) -> datasets.Dataset:
    """`max_samples` rows of `dataset` drawn at random with `seed`, or all of it (None, or no
    more rows than that). Every process draws the same rows, and every evaluation sees them."""
    if max_samples is None or max_samples >= len(dataset):
        return dataset
    return dataset.shuffle(seed=seed).select(range(max_samples))
