"""STATUS.md is what tools/status.py prints now: coverage claims can't go stale silently."""

import subprocess
import sys

import pytest
from support.processes import REPO


@pytest.mark.docs
def test_status_md_is_fresh():
    printed = subprocess.run(
        [sys.executable, str(REPO / "tools" / "status.py")],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    committed = (REPO / "STATUS.md").read_text()
    assert committed.strip() == printed.strip(), "STATUS.md is stale: run `make status`"
