"""BCO fault tolerance: a run killed with SIGKILL resumes exactly, δ included.

Three real processes of the example script on the tiny recipe, UDM on (so the fitted classifier
must travel in the checkpoint too), 16 steps, a checkpoint every 4 steps, a log every step:

1. an uninterrupted run;
2. the same run, killed with SIGKILL (no chance to clean up) as soon as its first checkpoint is
   complete, that is once `checkpoint-4/trainer_state.json`, the last file `Trainer` writes,
   exists; `running.json` (δ) and `clf.pkl` (the UDM classifier) are written before it;
3. `--resume_from_checkpoint` from the last complete checkpoint of run 2, same output folder.

On CPU in float32 the resumed run must equal the uninterrupted one bit for bit: every per-step
metric (loss, grad_norm, learning_rate, delta, rewards/*, logps/*, logits/*), δ and its count in
the final checkpoint, and every weight of the saved model. A resumed run that restarted δ at 0,
or refitted the classifier, would log a different `delta` and `loss` from the first resumed step.

A fourth process checks the other side: a checkpoint whose `running.json` was deleted is refused
with an error that names the file, instead of resuming silently with δ = 0.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import OFFLINE_ENV, REPO
from safetensors.torch import load_file

SCRIPT = REPO / "annotated_examples" / "bco_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "bco_tiny.yaml"
TIMING = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}


def command(tiny, out, *extra):
    return [
        sys.executable,
        str(SCRIPT),
        *["--config", RECIPE, "--model_name_or_path", tiny.policy, "--output_dir", out],
        *["--dataset_name", tiny.data / "unpaired_preference", "--embedding_model", tiny.policy],
        *["--max_steps", 16, "--logging_steps", 1, "--eval_strategy", "no"],
        *["--save_strategy", "steps", "--save_steps", 4],
        *extra,
    ]


def run(args, timeout=600):
    env = {**os.environ, **OFFLINE_ENV}
    args = [str(a) for a in args]
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def train_rows(out):
    history = json.loads((out / "trainer_state.json").read_text())["log_history"]
    return [{k: v for k, v in row.items() if k not in TIMING} for row in history if "loss" in row]


def complete_checkpoints(out):
    done = [p for p in out.glob("checkpoint-*") if (p / "trainer_state.json").exists()]
    return sorted(done, key=lambda p: int(p.name.split("-")[1]))


@pytest.mark.fault
def test_bco_resumes_exactly_after_sigkill(tiny, tmp_path):
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    result = run(command(tiny, straight))
    assert result.returncode == 0, result.stderr[-3000:]

    env = {**os.environ, **OFFLINE_ENV}
    process = subprocess.Popen(
        [str(a) for a in command(tiny, killed)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 600
    while not complete_checkpoints(killed):
        assert process.poll() is None, "the run ended before writing a checkpoint"
        assert time.monotonic() < deadline, "no checkpoint within 10 minutes"
        time.sleep(0.05)
    assert process.poll() is None, "the run finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    assert process.wait(timeout=60) == -signal.SIGKILL
    assert not (killed / "model.safetensors").exists()  # it really died mid-run

    checkpoint = complete_checkpoints(killed)[-1]
    assert int(checkpoint.name.split("-")[1]) < 16
    saved_delta = json.loads((checkpoint / "running.json").read_text())
    assert saved_delta["mean"] != 0.0 and saved_delta["count"] > 0
    assert (checkpoint / "clf.pkl").exists()

    # A copy without δ must be refused, not resumed from δ = 0.
    no_delta = tmp_path / "no-delta" / checkpoint.name
    shutil.copytree(checkpoint, no_delta)
    (no_delta / "running.json").unlink()
    refused = run(command(tiny, tmp_path / "no-delta", "--resume_from_checkpoint", no_delta))
    assert refused.returncode != 0 and "has no running.json" in refused.stderr

    resumed = run(command(tiny, killed, "--resume_from_checkpoint", checkpoint))
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    expected, got = train_rows(straight), train_rows(killed)
    assert [row["step"] for row in expected] == list(range(1, 17))
    assert got == expected  # every metric of every step, exactly, delta included

    final = "checkpoint-16/running.json"
    assert json.loads((killed / final).read_text()) == json.loads((straight / final).read_text())

    before, after = (
        load_file(straight / "model.safetensors"),
        load_file(killed / "model.safetensors"),
    )
    assert before.keys() == after.keys()
    assert all(torch.equal(before[name], after[name]) for name in before)
    original = load_file(tiny.policy / "model.safetensors")
    assert any(not torch.equal(original[name], after[name]) for name in original)
