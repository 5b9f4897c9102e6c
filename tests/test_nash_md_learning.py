"""Nash-MD learns: the policy moves towards what the reward ranks higher.

Nash-MD plays the policy's samples against samples of a mixture of policy and reference. It
learns the task of tests/test_online_dpo_learning.py with the same set-up (`learn_digit_share`
in tests/online_pair_support.py): the random tiny policy, the digit-share reward, 16
plain-text prompts per step, 8 new tokens, beta 0.1, mixture_coef 0.5, lr 1e-3 constant, 40
steps. The reward is weighted by 10 (`reward_weights`): Nash-MD turns score gaps into
P = sigmoid(gap), and digit shares differ by about 0.1, which would keep P near 0.5.

MEASURED
"""

import pytest
from online_pair_support import DIGIT_STEPS, learn_digit_share

from annotated_trl.trainers.nash_md import NashMDConfig, NashMDTrainer

WINDOW = 10  # steps averaged at each end of the run


@pytest.mark.learning
def test_nash_md_raises_the_reward(tiny, tmp_path, seed_offset, measured):
    before, after, history = learn_digit_share(
        NashMDConfig, NashMDTrainer, tiny, tmp_path, seed=seed_offset,
        mixture_coef=0.5, reward_weights=[10.0],
    )  # fmt: skip
    rows = [row for row in history if "loss" in row]
    assert len(rows) == DIGIT_STEPS
    measured.at_least("held-out digit share, after / before", after / before, 1.4)
    scores = [row["rewards/chosen"] for row in rows]
    rise = (sum(scores[-WINDOW:]) - sum(scores[:WINDOW])) / WINDOW
    measured.at_least("policy's sampled score rise, first to last 10 steps", rise, 0.0)
    assert all(0.0 < row["rewards/probabilities"] < 1.0 for row in rows)
