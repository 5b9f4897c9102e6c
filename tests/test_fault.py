"""Kill-and-resume, for every method whose run can resume: a run SIGKILLed after a checkpoint
and resumed with `--resume_from_checkpoint` logs the same metrics at every step and ends with the
same weights as an uninterrupted run, exactly (CPU, fixed seed). The harness is tests/fault.py;
the counters a resume restarts come from the method table.

BCO has its own test (tests/test_bco_fault.py): its running mean δ and UDM classifier must
travel in the checkpoint too, which needs a longer run. PPO cannot resume (its script refuses)."""

import pytest
from fault import assert_identical, kill_and_resume

from annotated_trl.methods import METHODS

OWN_TEST = {"bco"}
RESUMABLE = [m for m in METHODS if m.restarts_on_resume is not None and m.key not in OWN_TEST]


@pytest.mark.fault
@pytest.mark.parametrize("method", RESUMABLE, ids=lambda m: m.key)
def test_resume_after_sigkill_is_exact(method, tiny, tmp_path):
    full, resumed = kill_and_resume(method.key, tiny.root, tmp_path, max_steps=4, save_steps=2)
    assert_identical(method.key, full, resumed, resumed_at=2, restarted=method.restarts_on_resume)
