"""GRPO learns the toy task from its verifiable reward: the reward of the completions it samples
rises, and greedy decoding does not lose the problems it solved.

The tiny random policy never solves a problem (every group's rewards are 0: no signal), so GRPO
starts from the shared SFT warm start (tests/support/warm_start.py: ~40% of problems solved).
Settings: the `arithmetic_reward` the script uses by default, 16 completions per prompt, 8 prompts
(128 completions) per step, temperature 1.0, at most 10 completion tokens, lr 3e-4 constant, 200
steps, the GRPOConfig defaults otherwise (DAPO loss, group std scaling, beta 0).

Measured with benchmarks/cross_cpu.py (benchmarks/results/cross_cpu.md) on an AMD EPYC, under
five CPU settings (AVX2 and no-SIMD kernels, 1 and 2 threads, MKL_CBWR=COMPATIBLE) at seed
offset 0, then seed offsets 1 and 2 (which move the SFT warm start too). Sampling turns a
last-bit difference into another token, so every setting runs its own course:
- mean sampled reward, steps 151-200 minus steps 1-50: 0.081 / 0.105 / 0.090 / 0.091 / 0.069,
  then 0.053 / 0.055. Threshold 0.015: mean 0.078, sd 0.020, 3.1 sd below.
- greedy solve rate on the 256 training prompts, after minus before: 0.129 / 0.059 / 0.055 /
  0.078 / 0.055, then 0.047 / 0.105. It rose in every run, but spread too much (mean 0.075, sd
  0.031) to assert a rise in one run at 3 sd; asserted: it does not fall by more than 0.03
  (3.4 sd below the mean).
- the same on the 64 held-out prompts: 0.031 / 0.000 / 0.047 / -0.047 / -0.078, then 0.094 / -0.016.
  Asserted only as no collapse (at least -0.2): the rewarded prompts are where GRPO's signal acts,
  and 64 prompts move in steps of 0.016.
Weaker settings barely moved (lr 3e-4, 60 steps of 64 completions: reward 0.26 -> 0.28), and
lr >= 1e-3 wrecked the warm start (lr 2e-3: reward 0.27 -> 0.07).
Wall time on the 2-core machine, nearly idle: this module and tests/test_rloo_learning.py
together 54 s in one session, including the tiny fixture and the SFT warm start (~13 s); the
GRPO run alone ~10-20 s. Loaded by other jobs it took up to 4.5 min (torch threads oversubscribe;
OMP_NUM_THREADS=1 helps a lot on a busy machine).
"""

import pytest
from support.warm_start import sft_warm_policy, train_from_warm_start  # noqa: F401
from trl import GRPOConfig, GRPOTrainer

STEPS = 200
WINDOW = 50  # steps averaged at each end of the run


@pytest.fixture(scope="module")
def grpo_run(tiny, sft_warm_policy, tmp_path_factory, seed_offset):  # noqa: F811
    return train_from_warm_start(
        GRPOTrainer,
        GRPOConfig,
        tiny,
        sft_warm_policy,
        tmp_path_factory,
        STEPS,
        42 + seed_offset,
    )


@pytest.mark.learning
def test_grpo_raises_sampled_reward(grpo_run, measured):
    _, _, rewards = grpo_run
    assert len(rewards) == STEPS
    first = sum(rewards[:WINDOW]) / WINDOW
    last = sum(rewards[-WINDOW:]) / WINDOW
    assert 0.15 < first < 0.5  # the warm start: groups mix right and wrong answers
    measured.at_least("sampled reward rise, first to last 50 steps", last - first, 0.015)


@pytest.mark.learning
def test_grpo_keeps_greedy_solving(grpo_run, measured):
    before, after, _ = grpo_run
    assert before["train"] > 0.3  # the warm start solves some problems
    train, held_out = (after[s] - before[s] for s in ("train", "test"))
    measured.at_least("greedy solve-rate change, training prompts", train, -0.03)
    measured.at_least("greedy solve-rate change, held-out prompts", held_out, -0.2)
