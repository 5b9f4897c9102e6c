"""What every method's bad-input tests share.

A case writes a malformed dataset, runs the real example script on it in-process (`runpy`, the
same code path as `python script.py`) and reads the one line the script exits with. What a user sees
from a bare `python` process is checked for every script by tests/test_badinput.py.
"""

import json
import runpy
import sys

import pytest


def jsonl(rows) -> str:
    return "".join(json.dumps(row) + "\n" for row in rows)


def write_case(tmp_path, name: str, content: str | bytes):
    """Write a malformed dataset file into `tmp_path`; return its path. Text is written as
    UTF-8; bytes as they are (e.g. a file that is not UTF-8)."""
    path = tmp_path / name
    path.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
    return path


def refusal(monkeypatch, script, recipe, *args) -> str:
    """Run `script --config recipe *args` in-process; return the one line it exits with."""
    monkeypatch.setattr(sys, "argv", [str(script), "--config", str(recipe), *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    message = exit_info.value.code
    assert isinstance(message, str), f"expected an error message, got exit code {message!r}"
    assert message.startswith("error: ") and "\n" not in message, message
    return message
