"""ORPO learns the toy task's preferences: on held-out pairs, the chosen (right) answer gains on
the rejected (wrong) one, while the NLL term teaches the task itself.

One ORPOTrainer run (beta 0.1) with the settings shared with CPO in `tests/pair_learning.py`.
Measured on the shared 2-core machine (seeds 0 and 1 shuffle the data differently; the initial
model is the same): rewards/accuracies 0.406 -> 0.656 / 0.609, rewards/margins -0.0007 ->
0.0020 / 0.0021, log_odds_chosen -0.0069 -> 0.0258 / 0.0269, nll_loss 5.98 -> 1.45 / 1.46.
The asserted thresholds leave room for thread-count noise.
"""

import pair_learning as shared
import pytest
from trl.experimental.orpo import ORPOConfig, ORPOTrainer


@pytest.fixture(scope="module")
def before_and_after(tiny, tmp_path_factory, seed_offset):
    output_dir = tmp_path_factory.mktemp("orpo-learning")
    return shared.before_and_after(tiny, output_dir, seed_offset, ORPOConfig, ORPOTrainer, beta=0.1)


@pytest.mark.learning
def test_orpo_raises_heldout_reward_accuracy(before_and_after, measured):
    shared.raises_heldout_reward_accuracy(*before_and_after, measured)


@pytest.mark.learning
def test_orpo_raises_heldout_margin_and_log_odds(before_and_after, measured):
    before, after = before_and_after
    assert before["eval_rewards/margins"] < 0.0005  # the initial model is the same for every seed
    measured.at_least("held-out reward margin", after["eval_rewards/margins"], 0.001)
    assert before["eval_log_odds_chosen"] < 0.0
    measured.at_least("held-out log odds of chosen", after["eval_log_odds_chosen"], 0.01)
    # log sigma(log OR) starts at -ln 2 and rises with the log odds ratio.
    gain = after["eval_log_odds_ratio"] - before["eval_log_odds_ratio"]
    measured.at_least("held-out log sigma(log OR) gain", gain, 0.0)


@pytest.mark.learning
def test_orpo_nll_term_teaches_the_task(before_and_after, measured):
    shared.nll_term_teaches_the_task(*before_and_after, measured)
