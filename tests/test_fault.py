"""Kill-and-resume, for every method whose run can resume: a run SIGKILLed after a checkpoint
and resumed with `--resume_from_checkpoint` logs the same metrics at every step and ends with the
same weights as an uninterrupted run, exactly (CPU, fixed seed). The harness is
tests/support/fault.py; the counters a resume restarts come from the method table. PPO cannot
resume (its script refuses, as trl 1.12's trainer cannot).

BCO keeps state of its own beside the weights: the running mean δ of its rewards
(`running.json`) and, with UDM on, the fitted density-ratio classifier (`clf.pkl`). It runs with
UDM, and its checkpoint is also checked for both files, the final δ for equality, and a
checkpoint without `running.json` for a clear refusal instead of a silent restart from δ = 0.
"""

import json
import os
import shutil

import pytest
from support.fault import assert_identical, command, kill_and_resume
from support.processes import OFFLINE_ENV
from support.warm import shared

from annotated_trl.methods import CPU_METHODS

# One run per trainer class: a second row on the same trainer (GRPO with tools on GRPOTrainer)
# resumes through the same checkpoint code, and its tiny run from the random tool policy never
# reaches the tool loop, so it would repeat the GRPO case at twice the cost.
FIRST_ROW_OF_EACH_TRAINER: dict[tuple[str, str], object] = {}
for row in CPU_METHODS:
    if row.restarts_on_resume is not None:
        FIRST_ROW_OF_EACH_TRAINER.setdefault((row.module, row.trainer), row)
RESUMABLE = list(FIRST_ROW_OF_EACH_TRAINER.values())
MAX_STEPS, SAVE_STEPS = 4, 2
# UDM: BCO's classifier is fitted on embeddings from this model.
EXTRA = {"bco": ["--embedding_model", "tiny/policy"]}


@pytest.mark.fault
@pytest.mark.parametrize("method", RESUMABLE, ids=lambda m: m.key)
def test_resume_after_sigkill_is_exact(method, tiny, tmp_path):
    extra = EXTRA.get(method.key, [])
    full, resumed = kill_and_resume(
        method.key, tiny.root, tmp_path, MAX_STEPS, SAVE_STEPS, extra=extra
    )
    assert_identical(
        method.key, full, resumed, resumed_at=SAVE_STEPS, restarted=method.restarts_on_resume
    )
    if method.key == "bco":
        assert_bco_state_travels(full, resumed, tmp_path, extra)


def assert_bco_state_travels(full, resumed, folder, extra):
    checkpoint = resumed.folder / f"checkpoint-{SAVE_STEPS}"
    delta = json.loads((checkpoint / "running.json").read_text())
    assert delta["mean"] != 0.0 and delta["count"] > 0
    assert (checkpoint / "clf.pkl").exists()
    final = f"checkpoint-{MAX_STEPS}/running.json"
    assert (resumed.folder / final).read_text() == (full.folder / final).read_text()

    no_delta = folder / "no-delta" / checkpoint.name
    shutil.copytree(checkpoint, no_delta)
    (no_delta / "running.json").unlink()
    flags = [*extra, "--resume_from_checkpoint", no_delta]
    argv = command("bco", no_delta.parent, MAX_STEPS, SAVE_STEPS, flags)
    refused = shared(**OFFLINE_ENV).run(argv, folder, {**os.environ, **OFFLINE_ENV}, 600)
    assert refused.returncode != 0 and "has no running.json" in refused.stderr
