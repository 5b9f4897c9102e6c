"""Where the tests run things: the repository, the offline environment, the site's two-process
launch line, and a script started as a user starts it (bare, or forked warm)."""

import os
import subprocess
import sys
from pathlib import Path

from annotated_trl import OFFLINE_ENV

REPO = Path(__file__).resolve().parents[2]

# Two DDP processes on CPU, as the site's distributed page launches them: `--multi_gpu` with
# ACCELERATE_USE_CPU=true (`--cpu` would silently start one process), one torch thread each.
TWO_CPU_PROCESSES = [
    *[sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"],
    *["--num_processes", "2", "--num_machines", "1"],
    *["--mixed_precision", "no", "--dynamo_backend", "no"],
]
CPU_LAUNCH_ENV = {"ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}


def run_script(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run an example script as a user does: a fresh Python process, from the repo root."""
    return subprocess.run(
        [sys.executable, str(REPO / "annotated_examples" / script), *map(str, args)],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_script_warm(script: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """`run_script`, forked from the warm interpreter (tests/support/warm.py): the same run
    without 5-7 CPU-seconds of imports. What the libraries print while they are first imported
    is the same for every script; one bare run per suite covers it (tests/test_badinput.py)."""
    from support.warm import shared

    argv = [REPO / "annotated_examples" / script, *args]
    return shared(**OFFLINE_ENV).run(argv, REPO, {**os.environ, **OFFLINE_ENV}, timeout)
