"""Nash-MD learns the toy task: from the SFT warm start (tests/warm_start.py), 30 steps raise the
score of the policy's own samples and its greedy solve rate on the training prompts.

Set-up (tests/online_pair_support.py `learn_arithmetic`): 32 chat prompts per step, at most 10
new tokens, temperature 1.0, lr 3e-4 constant, beta 0.1, mixture_coef 0.5, seed 42, one thread.
The reward is `graded_arithmetic_reward` (1 right, partial credit for a near number) times 4
(`reward_weights`): Nash-MD turns score gaps into P = sigmoid(gap), and gaps of at most 1 would
keep P within 0.27-0.73.

Measured (seed 42, 2 shared CPU cores, about 30 s of training plus the shared warm start):
greedy solve rate on the 256 training prompts 0.461 -> 0.527 (60 steps: 0.551); logged mean
score of the policy's samples (x4) over steps 1-10 = 1.453, steps 21-30 = 1.728. The 64 held-out
prompts did not improve (0.422 -> 0.391; 60 steps: 0.359): 30-60 steps of 32 prompts revisit the
256 training problems several times, and the tiny model fits them rather than the rule.

Thresholds, below the measured gains: training solve rate at least +0.03, mean score of the last
10 steps at least 0.1 above the first 10.
"""

import pytest
from online_pair_support import learn_arithmetic
from warm_start import sft_warm_policy  # noqa: F401  (session fixture)

from annotated_trl.trainers.nash_md import NashMDConfig, NashMDTrainer


@pytest.mark.learning
def test_nash_md_raises_the_reward(tiny, sft_warm_policy, tmp_path):  # noqa: F811
    before, after, history = learn_arithmetic(
        NashMDConfig, NashMDTrainer, tiny, sft_warm_policy, tmp_path, steps=30,
        reward_weights=[4.0], beta=0.1, mixture_coef=0.5,
    )  # fmt: skip
    scores = [row["rewards/chosen"] for row in history if "rewards/chosen" in row]
    assert len(scores) == 30
    first, last = sum(scores[:10]) / 10, sum(scores[-10:]) / 10
    assert last >= first + 0.1, (first, last)
    assert after["train"] >= before["train"] + 0.03, (before, after)
    probabilities = [row["rewards/probabilities"] for row in history if "loss" in row]
    assert all(0.0 < p < 1.0 for p in probabilities)
