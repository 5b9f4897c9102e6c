"""Kill-and-resume, the harness of the fault tests (tests/test_fault.py).

`kill_and_resume(key, tiny, folder, ...)` runs the real script three times, each in a fresh
process (forked from a warm interpreter, tests/support/warm.py), on the tiny recipe with a
checkpoint every `save_steps` steps:

1. uninterrupted, to `max_steps`;
2. the same run, SIGKILLed (no clean-up, no signal handler runs) as soon as the checkpoint at
   step `save_steps` is complete (`trainer_state.json` is the last file the trainer writes);
3. started again with `--resume_from_checkpoint <that checkpoint>` into the same folder.

It returns both runs' per-step logs (timings removed) and final weights, for the caller to
compare exactly: on CPU the resumed run must be the same computation, not a similar one.
"""

import json
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

from safetensors.torch import load_file

from support.processes import OFFLINE_ENV, REPO
from support.warm import shared

TIMING = ("runtime", "per_second", "step_time")


@dataclass
class Run:
    folder: Path  # the run's output folder
    log: list[dict]  # trainer_state.json's log_history without wall-clock metrics
    weights: dict  # name -> tensor, from the final model.safetensors


def _read(output_dir: Path) -> Run:
    history = json.loads((output_dir / "trainer_state.json").read_text())["log_history"]
    log = [{k: v for k, v in e.items() if not any(t in k for t in TIMING)} for e in history]
    return Run(output_dir, log, load_file(output_dir / "model.safetensors"))


def command(key: str, output_dir: Path, max_steps: int, save_steps: int, extra=()) -> list[str]:
    """`key`'s script on its tiny recipe: a checkpoint every `save_steps`, a log every step."""
    recipe = REPO / "annotated_examples" / "recipes" / f"{key}_tiny.yaml"
    return [
        str(REPO / "annotated_examples" / f"{key}_training.py"),
        *["--config", str(recipe), "--output_dir", str(output_dir)],
        *["--max_steps", str(max_steps), "--logging_steps", "1", "--report_to", "none"],
        *["--save_strategy", "steps", "--save_steps", str(save_steps), "--eval_strategy", "no"],
        *map(str, extra),
    ]


def _complete(checkpoint: Path) -> bool:
    try:
        json.loads((checkpoint / "trainer_state.json").read_text())
    except (OSError, ValueError):
        return False
    return True


def kill_and_resume(
    key: str, tiny: Path, folder: Path, max_steps: int, save_steps: int, extra=(), timeout=600
) -> tuple[Run, Run]:
    """(uninterrupted run, killed-then-resumed run) of `key`'s tiny recipe; see the module doc.

    `folder` is a scratch folder; the recipe's `tiny/...` paths resolve through a link to `tiny`.
    `extra` are more command-line flags for all three runs.
    """
    assert 2 * save_steps <= max_steps, "leave steps after the checkpoint for the kill to cut"
    (folder / "tiny").symlink_to(Path(tiny).resolve(), target_is_directory=True)
    warm = shared(**OFFLINE_ENV)
    env = {**os.environ, **OFFLINE_ENV}

    full = folder / "full"
    done = warm.run(command(key, full, max_steps, save_steps, extra), folder, env, timeout)
    assert done.returncode == 0, done.stderr[-3000:]

    killed = folder / "killed"
    checkpoint = killed / f"checkpoint-{save_steps}"
    log = folder / "killed.log"
    process = warm.start(command(key, killed, max_steps, save_steps, extra), folder, env, log, log)
    deadline = time.monotonic() + timeout
    while not _complete(checkpoint) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    process.kill(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL, (
        f"{key}: the run ended (exit {process.poll()}) before it could be killed; "
        "raise max_steps or lower save_steps"
    )
    assert _complete(checkpoint), log.read_text()[-3000:]
    assert not (killed / "model.safetensors").exists(), "killed after the final save"

    resume = [*extra, "--resume_from_checkpoint", checkpoint]
    resumed = warm.run(command(key, killed, max_steps, save_steps, resume), folder, env, timeout)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    return _read(full), _read(killed)


def assert_identical(
    key: str, full: Run, resumed: Run, resumed_at: int, restarted: tuple[str, ...] = ()
) -> None:
    """Every logged metric at every step, and every final weight, exactly equal.

    Two exceptions, each checked for what it is rather than skipped: the `restarted` counters
    must have restarted from zero at the checkpoint (`resumed_at`) exactly, so this fails once
    TRL checkpoints them; and the end-of-run `train_loss`, which transformers averages over the
    steps *this process* ran, must be exactly that average.
    """
    import torch

    steps = [e.get("step") for e in full.log]
    assert [e.get("step") for e in resumed.log] == steps, (steps, resumed.log)
    at_checkpoint = {}
    for expected, got in zip(full.log, resumed.log, strict=True):
        step = expected.get("step")
        if step == resumed_at:
            at_checkpoint |= {m: expected[m] for m in restarted if m in expected}
        for metric in restarted:
            if step > resumed_at and metric in expected and metric in at_checkpoint:
                counted = expected[metric] - at_checkpoint[metric]
                assert got[metric] == counted, (key, step, metric, expected[metric], got[metric])
                got = {**got, metric: expected[metric]}
        if "train_loss" in expected:
            losses = [e["loss"] for e in full.log if "loss" in e]
            after = [e["loss"] for e in full.log if "loss" in e and e["step"] > resumed_at]
            # OnlineDPOTrainer (and Nash-MD and XPO, built on it) logs each loss rounded to 4
            # decimals; a mean of such values is within half a unit of the 4th of the exact one.
            rounded = all(loss == round(loss, 4) for loss in losses)
            tolerance = 5e-5 if rounded else 1e-6
            assert abs(expected["train_loss"] - sum(losses) / len(losses)) <= tolerance
            assert abs(got["train_loss"] - sum(after) / len(after)) <= tolerance
            got = {**got, "train_loss": expected["train_loss"]}
        differing = {k: (expected.get(k), got.get(k)) for k in expected | got}
        differing = {k: v for k, v in differing.items() if v[0] != v[1]}
        assert not differing, f"{key} step {step}: (uninterrupted, resumed) {differing}"
    assert full.weights.keys() == resumed.weights.keys()
    changed = [n for n, w in full.weights.items() if not torch.equal(w, resumed.weights[n])]
    assert not changed, f"{key}: final weights differ after resume: {changed[:5]}"
