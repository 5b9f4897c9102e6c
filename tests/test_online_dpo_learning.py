"""Online DPO learns: the policy moves towards what the reward ranks higher.

The random tiny policy never solves the arithmetic task, so the arithmetic reward would tie 0-0
on every pair. The test uses a dense reward the policy can improve on at once: the share of
digit characters in a completion (`digit_share`). Online DPO sees only which of its two samples
has more digits. Set-up, shared with XPO and Nash-MD (`learn_digit_share` in
tests/online_pair_support.py): plain-text prompts, 16 per step, 8 new tokens, beta 0.1, sigmoid
loss, lr 1e-3 constant, 40 steps. Held-out score: the mean digit share of 16 samples per test
prompt (1,024 completions) from a fixed generation seed, before and after training.

MEASURED
"""

import pytest
from online_pair_support import DIGIT_STEPS, learn_digit_share
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

WINDOW = 10  # steps averaged at each end of the run


@pytest.mark.learning
def test_online_dpo_raises_the_reward_it_ranks_by(tiny, tmp_path, seed_offset, measured):
    before, after, history = learn_digit_share(
        OnlineDPOConfig, OnlineDPOTrainer, tiny, tmp_path, seed=seed_offset
    )
    rows = [row for row in history if "objective/scores" in row]
    assert len(rows) == DIGIT_STEPS
    measured.at_least("held-out digit share, after / before", after / before, 1.4)
    scores = [row["objective/scores"] for row in rows]
    rise = (sum(scores[-WINDOW:]) - sum(scores[:WINDOW])) / WINDOW
    measured.at_least("sampled score rise, first to last 10 steps", rise, 0.0)
    accuracy = sum(row["rewards/accuracies"] for row in rows[-WINDOW:]) / WINDOW
    measured.at_least("rewards/accuracies, last 10 steps", accuracy, 0.55)
    assert rows[-1]["objective/kl"] > 0  # the policy has left the reference
