"""RLOO learns the toy task from its verifiable reward: the reward of the completions it samples
rises, and so does the share of problems it solves by greedy decoding.

The tiny random policy never solves a problem (every group's rewards are 0: no signal), so RLOO
starts from the shared SFT warm start (tests/warm_start.py: ~40% of problems solved). Settings,
the same as tests/test_grpo_learning.py: the `arithmetic_reward` the script uses by default, 16
completions per prompt (each one's baseline is the mean reward of the other 15), 8 prompts (128
completions) per step, temperature 1.0, at most 10 completion tokens, lr 3e-4 constant, 200
steps, the RLOOConfig defaults otherwise (KL penalty beta 0.05 in the reward, so a reference
model is loaded; no advantage normalisation).

Measured, the RLOOTrainer seed varied (42, the one used / 1), same warm start:
- mean sampled reward (the task reward, without the KL term), steps 1-50 -> 151-200
  (asserted: rise > 0.04): 0.325 -> 0.402 / 0.330 -> 0.386;
- greedy solve rate on the 256 training prompts (asserted: rise > 0.08):
  0.473 -> 0.648 / 0.473 -> 0.633;
- greedy solve rate on the 64 held-out prompts: 0.375 -> 0.438 / 0.375 (asserted only as
  "no collapse").
Wall time on the 2-core machine, nearly idle: this module and tests/test_grpo_learning.py
together 54 s in one session, including the tiny fixture and the SFT warm start (~13 s); the
RLOO run alone (a reference model too) ~15-27 s. Alone with OMP_NUM_THREADS=1 on a loaded
machine, this module took 84 s including its own warm start.
"""

import pytest
from trl import RLOOConfig, RLOOTrainer
from warm_start import sft_warm_policy, train_from_warm_start  # noqa: F401

STEPS = 200
WINDOW = 50  # steps averaged at each end of the run


@pytest.fixture(scope="module")
def rloo_run(tiny, sft_warm_policy, tmp_path_factory, seed_offset):  # noqa: F811
    return train_from_warm_start(
        RLOOTrainer, RLOOConfig, tiny, sft_warm_policy, tmp_path_factory, STEPS, 42 + seed_offset
    )


@pytest.mark.learning
def test_rloo_raises_sampled_reward(rloo_run, measured):
    _, _, rewards = rloo_run
    assert len(rewards) == STEPS
    first = sum(rewards[:WINDOW]) / WINDOW
    last = sum(rewards[-WINDOW:]) / WINDOW
    assert 0.15 < first < 0.5  # the warm start: groups mix right and wrong answers
    measured.at_least(
        "sampled reward rise, first to last 50 steps", last - first, 0.04
    )  #  # measured +0.077 / +0.056


@pytest.mark.learning
def test_rloo_solves_more_training_problems_greedily(rloo_run, measured):
    before, after, _ = rloo_run
    assert before["train"] > 0.3  # the warm start solves some problems
    measured.at_least(
        "greedy solve-rate gain, training prompts", after["train"] - before["train"], 0.08
    )  #  # measured +0.18 / +0.16
    # No collapse on held-out prompts.
    measured.at_least(
        "greedy solve-rate change, held-out prompts", after["test"] - before["test"], -0.1
    )
