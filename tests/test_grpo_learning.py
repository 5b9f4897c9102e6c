"""GRPO learns the toy task from its verifiable reward: the reward of the completions it samples
rises, and so does the share of its training problems it solves by greedy decoding.

The tiny random policy never solves a problem (every group's rewards are 0: no signal), so GRPO
starts from the shared SFT warm start (tests/warm_start.py: ~40% of problems solved). Settings:
the `arithmetic_reward` the script uses by default, 16 completions per prompt, 8 prompts (128
completions) per step, temperature 1.0, at most 10 completion tokens, lr 3e-4 constant, 200
steps, the GRPOConfig defaults otherwise (DAPO loss, group std scaling, beta 0).

Measured, the GRPOTrainer seed varied (42, the one used / 1 / 7), same warm start:
- mean sampled reward, steps 1-50 -> 151-200 (asserted: rise > 0.04):
  0.318 -> 0.411 / 0.323 -> 0.401 / 0.325 -> 0.392;
- greedy solve rate on the 256 training prompts (asserted: rise > 0.08):
  0.473 -> 0.625 / 0.473 -> 0.625 / 0.473 -> 0.590;
- greedy solve rate on the 64 held-out prompts: 0.375 -> 0.391 / 0.375 / 0.359 (flat: asserted
  only as "no collapse"; the rewarded prompts are where GRPO's signal acts).
Weaker settings barely moved (lr 3e-4, 60 steps of 64 completions: reward 0.26 -> 0.28), and
lr >= 1e-3 wrecked the warm start (lr 2e-3: reward 0.27 -> 0.07).
Wall time on the 2-core machine, nearly idle: this module and tests/test_rloo_learning.py
together 54 s in one session, including the tiny fixture and the SFT warm start (~13 s); the
GRPO run alone ~10-20 s. Loaded by other jobs it took up to 4.5 min (torch threads oversubscribe;
OMP_NUM_THREADS=1 helps a lot on a busy machine).
"""

import pytest
from trl import GRPOConfig, GRPOTrainer
from warm_start import sft_warm_policy, train_from_warm_start  # noqa: F401

STEPS = 200
WINDOW = 50  # steps averaged at each end of the run


@pytest.fixture(scope="module")
def grpo_run(tiny, sft_warm_policy, tmp_path_factory, seed_offset):  # noqa: F811
    return train_from_warm_start(
        GRPOTrainer, GRPOConfig, tiny, sft_warm_policy, tmp_path_factory, STEPS, 42 + seed_offset
    )


@pytest.mark.learning
def test_grpo_raises_sampled_reward(grpo_run, measured):
    _, _, rewards = grpo_run
    assert len(rewards) == STEPS
    first = sum(rewards[:WINDOW]) / WINDOW
    last = sum(rewards[-WINDOW:]) / WINDOW
    assert 0.15 < first < 0.5  # the warm start: groups mix right and wrong answers
    measured.at_least(
        "sampled reward rise, first to last 50 steps", last - first, 0.04
    )  #  # measured +0.094 / +0.078 / +0.067


@pytest.mark.learning
def test_grpo_solves_more_training_problems_greedily(grpo_run, measured):
    before, after, _ = grpo_run
    assert before["train"] > 0.3  # the warm start solves some problems
    measured.at_least(
        "greedy solve-rate gain, training prompts", after["train"] - before["train"], 0.08
    )  #  # measured +0.15 / +0.15 / +0.12
    # No collapse on held-out prompts.
    measured.at_least(
        "greedy solve-rate change, held-out prompts", after["test"] - before["test"], -0.1
    )
