"""XPO learns: the policy moves towards what the reward ranks higher.

XPO is Online DPO with the reference model's sample as the second of each pair, plus an
exploration bonus. It learns the task of tests/test_online_dpo_learning.py with the same
set-up (`learn_digit_share` in tests/online_pair_support.py): the random tiny policy, the
digit-share reward, 16 plain-text prompts per step, 8 new tokens, beta 0.1, sigmoid loss,
alpha 1e-5 (the default), lr 1e-3 constant, 40 steps.

MEASURED
"""

import pytest
from online_pair_support import DIGIT_STEPS, learn_digit_share

from annotated_trl.trainers.xpo import XPOConfig, XPOTrainer

WINDOW = 10  # steps averaged at each end of the run


@pytest.mark.learning
def test_xpo_raises_the_reward(tiny, tmp_path, seed_offset, measured):
    before, after, history = learn_digit_share(
        XPOConfig, XPOTrainer, tiny, tmp_path, seed=seed_offset
    )
    rows = [row for row in history if "loss" in row]
    assert len(rows) == DIGIT_STEPS
    measured.at_least("held-out digit share, after / before", after / before, 1.4)
    scores = [row["objective/model_scores"] for row in rows]
    rise = (sum(scores[-WINDOW:]) - sum(scores[:WINDOW])) / WINDOW
    measured.at_least("policy's sampled score rise, first to last 10 steps", rise, 0.0)
