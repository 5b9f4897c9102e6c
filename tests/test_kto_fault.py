"""KTO kill-and-resume: a run SIGKILLed after a checkpoint and resumed with
`--resume_from_checkpoint` logs the same metrics at every step and ends with the same weights as
an uninterrupted run, exactly (CPU, fixed seed). The harness is tests/fault.py."""

import pytest
from fault import TRL_COUNTER_NOT_CHECKPOINTED, assert_identical, kill_and_resume


@pytest.mark.fault
def test_kto_resume_after_sigkill_is_exact(tiny, tmp_path):
    full, resumed = kill_and_resume("kto", tiny.root, tmp_path, max_steps=4, save_steps=2)
    # num_tokens restarts from 0 after a resume in TRL 1.16 (see tests/fault.py).
    assert_identical("kto", full, resumed, resumed_at=2, restarted=TRL_COUNTER_NOT_CHECKPOINTED)
