"""PPO parity: our `annotated_trl.trainers.ppo.PPOTrainer` logs exactly what trl 1.12.0's
`trl.experimental.ppo.PPOTrainer` logs, every metric at every step.

Each case runs tests/parity_scenarios/ppo.py twice, as fresh processes that differ only in the
import (see tests/support/parity.py): tiny policy, its copy as reference, `tiny/reward` as reward
and value model, 3 PPO updates of 8 prompts, 2 PPO epochs, seed 42. The cases cover both KL
estimators, reward whitening, truncation at EOS (a policy nudged to emit EOS often, so the
masks, the missing-EOS penalty and the score position all vary between rows) and responses with
no stop token (the score on the window's last token).

Tolerance: **exact equality** (rel 0, abs 0) on all 18 logged numbers x 3 steps per case. The
measured maximum difference, float32 on CPU, was 0.0 in every case: our code performs the same
floating-point operations in the same order as 1.12 (same sampling calls, the same RNG draws
for the data order, the sampling and the mini-batch permutations), so nothing rounds
differently. The one key not compared is `eps` (episodes per second), a wall-clock speed.
"""

import pytest
from support.parity import assert_same_logs, run_scenario

CASES = {
    "ppo-k1-eos": ["--kl_estimator", "k1", "--eager_eos"],
    "ppo-k3-whiten-eos": ["--kl_estimator", "k3", "--whiten_rewards", "--eager_eos"],
    "ppo-k1-no-stop-token": ["--kl_estimator", "k1", "--stop_token", "none"],
}
METRICS = 18  # numbers per step: the 16 PPO metrics other than eps, epoch and step


@pytest.mark.parity
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_ppo_matches_trl_1_12(case, tmp_path):
    original = run_scenario("ppo", "original", tmp_path, *CASES[case])
    ours = run_scenario("ppo", "ours", tmp_path, *CASES[case])
    assert len(original) == 3  # one log per PPO update
    compared = assert_same_logs(original, ours, rel=0.0, abs_=0.0, ignore=("eps",))
    assert compared == 3 * METRICS
    if "--eager_eos" in CASES[case]:
        # The case does what it is for: some responses stop at EOS, some do not.
        assert any(0 < row["val/num_eos_tokens"] < 8 for row in original)
    assert any(row["val/clipfrac_avg"] > 0 for row in original)  # the value clip acts
    assert any(row["policy/clipfrac_avg"] > 0 for row in original)  # so does the policy clip


@pytest.mark.parity
def test_ppo_config_has_trl_1_12_fields_and_defaults(tmp_path):
    """Every field of trl 1.12.0's PPOConfig exists in ours with the same default, so a 1.12
    config file or command line works unchanged (fields read from both installed classes)."""
    from support.parity import config_defaults, original_config_defaults

    from annotated_trl.trainers.ppo import PPOConfig

    original = original_config_defaults("ppo", "PPOConfig", tmp_path)
    ours = config_defaults(PPOConfig)
    assert len(original) > 100  # TrainingArguments' fields are in both
    assert set(original) <= set(ours), sorted(set(original) - set(ours))
    different = {k: (original[k], ours[k]) for k in original if original[k] != ours[k]}
    assert not different, different
