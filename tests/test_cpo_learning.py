"""CPO learns the toy task's preferences: on held-out pairs, the chosen (right) answer gains on
the rejected (wrong) one, while the NLL term (cpo_alpha 1) teaches the task itself.

One CPOTrainer run with the default loss (sigmoid, beta 0.1, cpo_alpha 1.0) and the settings shared
with ORPO in `tests/support/pair_learning.py`. Measured with benchmarks/cross_cpu.py
(benchmarks/results/cross_cpu.md) on an AMD EPYC: the five CPU settings (AVX2 and no-SIMD kernels, 1
and 2 threads, MKL_CBWR=COMPATIBLE) agree to 6 digits; the seed (data order; offsets 0 / 1 / 2)
moves the run:
- rewards/accuracies 0.4375 -> 0.625 / 0.562 / 0.609 (thresholds: 0.5, mean 0.599, sd 0.033,
  3.0 sd below; gain 0.06, mean 0.162, 3.1 sd);
- rewards/margins 0.0027 -> 0.0228 / 0.0246 / 0.0256 (threshold 0.01: 10 sd below);
- nll_loss 5.96 -> 1.45 / 1.45 / 1.46 (threshold 2.5).
(SimPO, beta 2.0 and cpo_alpha 0, same settings, one run: accuracies 0.406 -> 0.719, margins
-0.014 -> 0.396; not run here, to keep the CPU budget.)
"""

import pytest
from support import pair_learning as shared
from trl.experimental.cpo import CPOConfig, CPOTrainer


@pytest.fixture(scope="module")
def before_and_after(tiny, tmp_path_factory, seed_offset):
    output_dir = tmp_path_factory.mktemp("cpo-learning")
    loss = {"loss_type": "sigmoid", "beta": 0.1, "cpo_alpha": 1.0}
    return shared.before_and_after(tiny, output_dir, seed_offset, CPOConfig, CPOTrainer, **loss)


@pytest.mark.learning
def test_cpo_raises_heldout_reward_accuracy(before_and_after, measured):
    shared.raises_heldout_reward_accuracy(*before_and_after, measured)


@pytest.mark.learning
def test_cpo_raises_heldout_margin(before_and_after, measured):
    before, after = before_and_after
    assert before["eval_rewards/margins"] < 0.005  # the initial model is the same for every seed
    measured.at_least("held-out reward margin", after["eval_rewards/margins"], 0.01)
    gain = after["eval_rewards/margins"] - before["eval_rewards/margins"]
    measured.at_least("held-out reward margin gain", gain, 0.01)


@pytest.mark.learning
def test_cpo_nll_term_teaches_the_task(before_and_after, measured):
    shared.nll_term_teaches_the_task(*before_and_after, measured)
