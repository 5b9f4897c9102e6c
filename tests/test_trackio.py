"""`--report_to trackio`, as every recipe's comment offers it: local dashboards with no account
and no network. One method's tiny run logs to a trackio store in tmp_path (`TRACKIO_DIR`), and
the loss and the method's own metric are read back from it at every logging step."""

import json
import math
import os
import sqlite3
import subprocess
import sys

from support.processes import OFFLINE_ENV, REPO

from annotated_trl.methods import BY_KEY

STEPS = 4


def test_reward_run_logs_loss_and_accuracy_at_every_step_to_trackio(tiny, tmp_path):
    store = tmp_path / "trackio"
    argv = [
        *[sys.executable, REPO / "annotated_examples" / "reward_training.py"],
        *["--config", "annotated_examples/recipes/reward_tiny.yaml"],
        *["--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / BY_KEY["reward"].fixture.data],
        *["--max_steps", STEPS, "--logging_steps", 1, "--eval_strategy", "no"],
        *["--output_dir", tmp_path / "out", "--report_to", "trackio", "--project", "tiny"],
    ]
    # A fresh process, as a user runs it, not a warm fork (tests/support/warm.py): trackio reads
    # TRACKIO_DIR when it is imported, and the warm interpreter has imported it (GRPO's does).
    env = {**os.environ, **OFFLINE_ENV, "TRACKIO_DIR": str(store)}
    result = subprocess.run(
        [str(a) for a in argv], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]

    # Trackio's local store: one SQLite file per project, a row of JSON metrics per log call
    # (the "Storage Schema" page of its documentation; `trackio show` reads the same file).
    with sqlite3.connect(store / "tiny.db") as db:
        logs = [json.loads(m) for (m,) in db.execute("SELECT metrics FROM metrics ORDER BY id")]
    # The last call carries the run's summary (epoch only: trackio drops train_runtime & co).
    steps = [log for log in logs if "train/loss" in log]
    assert [log["train/global_step"] for log in steps] == list(range(1, STEPS + 1))
    for log in steps:
        assert math.isfinite(log["train/loss"]) and 0 <= log["train/accuracy"] <= 1
