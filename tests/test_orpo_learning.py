"""ORPO learns the toy task's preferences: on held-out pairs, the chosen (right) answer gains on
the rejected (wrong) one, while the NLL term teaches the task itself.

One ORPOTrainer run (beta 0.1) with the settings shared with CPO in
`tests/support/pair_learning.py`. Measured with benchmarks/cross_cpu.py
(benchmarks/results/cross_cpu.md) on an AMD EPYC: the five CPU settings (AVX2 and no-SIMD kernels,
1 and 2 threads, MKL_CBWR=COMPATIBLE) agree to 5 digits; the
seed (data order; offsets 0 / 1 / 2; the initial model is the same) moves the run:
- rewards/accuracies 0.406 -> 0.656 / 0.609 / 0.609 (thresholds: 0.5, mean 0.625, sd 0.027,
  4.6 sd below; gain 0.06, 5.9 sd);
- rewards/margins -0.0007 -> 0.00204 / 0.00213 / 0.00197 (threshold 0.001: 13 sd below);
- log_odds_chosen -0.0069 -> 0.0258 / 0.0269 / 0.0250 (threshold 0.01: 16 sd below);
- nll_loss 5.98 -> 1.45 / 1.46 / 1.46 (threshold 2.5).
"""

import pytest
from support import pair_learning as shared
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
