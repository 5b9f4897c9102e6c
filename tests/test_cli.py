"""`annotated-trl`, run as a user runs it."""

import subprocess
import sys

from conftest import OFFLINE_ENV


def _cli(*args):
    command = [sys.executable, "-m", "annotated_trl.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, env=OFFLINE_ENV | {"PATH": ""})


def test_cli_tiny_builds_fixture(tmp_path):
    result = _cli("tiny", tmp_path / "t")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "t" / "policy" / "model.safetensors").exists()
    assert (tmp_path / "t" / "data" / "preference" / "test.jsonl").exists()


def test_cli_validate_sft_ok_and_refusal(tiny):
    ok = _cli("validate", "--method", "sft", tiny.data / "prompt_completion")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("OK:") and "train: 256 rows" in ok.stdout

    bad = _cli("validate", "--method", "sft", tiny.data / "preference")
    assert bad.returncode == 2
    assert bad.stderr.startswith("error: ") and "preference data" in bad.stderr
    assert "Traceback" not in bad.stderr
