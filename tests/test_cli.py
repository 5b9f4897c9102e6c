"""`annotated-trl`: two commands run as a user runs them (a subprocess each: the entry point, the
exit code, what reaches the terminal), the rest through the same `main()` in-process, without a
start-up of several seconds per call; its validator over every method x case of bad data."""

import subprocess
import sys
from types import SimpleNamespace

import pytest
from support.processes import OFFLINE_ENV
from test_data import PLAIN_ROWS, TABLE, _lines

from annotated_trl.cli import main


def _cli(*args):
    """A fresh `python -m annotated_trl.cli` process, as the console script runs it."""
    command = [sys.executable, "-m", "annotated_trl.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=OFFLINE_ENV | {"PATH": ""})


@pytest.fixture
def cli(capsys):
    """`main(args)` in this process: its exit code and what it printed."""

    def call(*args):
        code = main([str(a) for a in args])
        printed = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=printed.out, stderr=printed.err)

    return call


def test_cli_tiny_builds_fixture(tmp_path):
    result = _cli("tiny", tmp_path / "t")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t" / "policy" / "model.safetensors").exists()
    assert (tmp_path / "t" / "data" / "preference" / "test.jsonl").exists()


def test_cli_validate_sft_ok_and_refusal(cli, tiny):
    ok = cli("validate", "--method", "sft", tiny.data / "prompt_completion")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (
        "OK: prompt_completion (plain text), 320 rows (test: 64, train: 256); fits sft\n"
    )

    bad = cli("validate", "--method", "sft", tiny.data / "preference")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "preference data" in bad.stderr
    # One line per file (test.jsonl, train.jsonl): the wrong format is one problem, not 256.
    assert [line.split(": ")[1].rsplit("/", 1)[1] for line in bad.stderr.splitlines()] == [
        "test.jsonl",
        "train.jsonl",
    ]
    assert "Traceback" not in bad.stderr


def test_cli_validate_checks_the_chat_template(cli, tiny, policy_without_chat_template):
    data = tiny.data / "conversational_preference"
    ok = cli("validate", "--method", "dpo", data, "--tokenizer", tiny.policy)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK: preference (conversational), 320 rows")
    assert ok.stdout.rstrip().endswith("chat template checked")

    bad = cli("validate", "--method", "dpo", data, "--tokenizer", policy_without_chat_template)
    assert bad.returncode == 2
    # One line per file (test.jsonl, train.jsonl): every row would repeat it.
    lines = bad.stderr.splitlines()
    assert len(lines) == 2 and all("needs a chat template" in line for line in lines)


@pytest.mark.badinput
def test_cli_validate_many_problems_one_line_each(tmp_path):
    """What a user sees: one line per problem, the rest counted, exit code 2, no traceback."""
    good = PLAIN_ROWS["unpaired_preference"]
    data = tmp_path / "labels.jsonl"
    data.write_bytes(_lines(*[{**good, "label": 1}] * 25) + b'{"prompt": \n')
    result = _cli("validate", "--method", "kto", data)
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert len(lines) == 21 and "Traceback" not in result.stderr
    assert lines[0] == f'error: {data}: line 1: column "label" is a number; expected true or false'
    assert lines[19].startswith(f"error: {data}: line 20: ")
    assert lines[20] == "error: ... and 6 more problems (show them with --max_problems)"
    assert result.stdout == ""


@pytest.mark.badinput
def test_cli_offline_hub_name_and_missing_tokenizer_are_one_line(cli, tmp_path, tiny):
    hub = cli("validate", "--method", "sft", "trl-lib/Capybara")
    assert hub.returncode == 2
    assert hub.stderr.startswith("error: trl-lib/Capybara: could not load from the Hub (")
    assert len(hub.stderr.splitlines()) == 1

    data = tiny.data / "preference" / "test.jsonl"
    no_tokenizer = cli("validate", "--method", "dpo", data, "--tokenizer", tmp_path / "none")
    assert no_tokenizer.returncode == 2
    assert no_tokenizer.stderr.startswith(f"error: --tokenizer {tmp_path / 'none'}: could not load")
    assert len(no_tokenizer.stderr.splitlines()) == 1


@pytest.mark.badinput
@pytest.mark.parametrize("case_id", list(TABLE), ids=list(TABLE))
def test_cli_validate_names_the_problem(case_id, tmp_path, capsys, policy_without_chat_template):
    method, content, words, needs_tokenizer = TABLE[case_id]
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    args = ["validate", "--method", method, str(data)]
    args += ["--tokenizer", str(policy_without_chat_template)] if needs_tokenizer else []
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == ""
    first = err.splitlines()[0]
    assert first.startswith(f"error: {data}: ")
    for word in words:
        assert word in first, first


def test_cli_and_the_dataset_checker_start_without_torch():
    """A refused invocation or a dataset check answers in about a second: the CLI and the
    checker import torch (and transformers, TRL's eager modules) only when a command needs a
    model. One eager `from trl.data_utils import ...` at the top of data.py cost 8 s a call."""
    code = "import sys, annotated_trl.cli, annotated_trl.data; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip() == "False", done.stderr[-2000:]
