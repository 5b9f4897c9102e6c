"""XPO learns the toy task: from the SFT warm start (tests/warm_start.py), 30 steps raise the
score of the policy's own samples and its greedy solve rate on the training prompts.

Set-up (tests/online_pair_support.py `learn_arithmetic`): 32 chat prompts per step, at most 10
new tokens, temperature 1.0, lr 3e-4 constant, beta 0.1, sigmoid loss, alpha 1e-5 (the default),
seed 42, one thread. The reward is `graded_arithmetic_reward` (1 right, partial credit for a near
number): with the 0/1 `arithmetic_reward` most pairs tie, XPO gives ties to the policy's own
sample, and the greedy solve rate fell 0.461 -> 0.184 in 30 steps (measured).

Measured (seed 42, 2 shared CPU cores, about 25 s of training plus the shared warm start):
greedy solve rate on the 256 training prompts 0.461 -> 0.516 (60 steps: 0.570); logged
`objective/model_scores` over steps 1-10 = 0.365, steps 21-30 = 0.452; `objective/ref_scores`
stays where it was (the reference is frozen). The 64 held-out prompts barely moved (0.422 ->
0.438; 60 steps: 0.375): the tiny model fits the 256 training problems rather than the rule.

The warm start itself depends on the thread count: with two threads (the suite's default) the
start was 0.473 and 30 steps of XPO gave 0.477 on the training prompts (0.375 -> 0.344 held
out), while the score still rose. So the reward the method optimises is the assertion; greedy
solving is only guarded against the collapse that the 0/1 reward caused.

Thresholds: mean score of the last 10 steps at least 0.04 above the first 10; training solve rate
not more than 0.03 below where it started.
"""

import pytest
from online_pair_support import learn_arithmetic
from warm_start import sft_warm_policy  # noqa: F401  (session fixture)

from annotated_trl.trainers.xpo import XPOConfig, XPOTrainer


@pytest.mark.learning
def test_xpo_raises_the_reward(tiny, sft_warm_policy, tmp_path):  # noqa: F811
    before, after, history = learn_arithmetic(
        XPOConfig, XPOTrainer, tiny, sft_warm_policy, tmp_path, steps=30, beta=0.1
    )
    scores = [row["objective/model_scores"] for row in history if "loss" in row]
    assert len(scores) == 30
    first, last = sum(scores[:10]) / 10, sum(scores[-10:]) / 10
    assert last >= first + 0.04, (first, last)
    assert after["train"] >= before["train"] - 0.03, (before, after)
