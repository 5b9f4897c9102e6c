"""XPO parity: our `annotated_trl.trainers.xpo` logs what trl 1.12.0's `XPOTrainer` logs, with
both losses, and differs where we fixed 1.12.

Each run is tests/parity_scenarios/xpo.py in a fresh process, importing `trl.experimental.xpo`
from trl 1.12.0 or ours (the only difference), on the tiny fixture: the tiny policy, its frozen
copy as reference, the `tiny/reward` reward model, 16 plain-text prompt-only rows, seed 42,
float32 on CPU, batch 4, 8 new tokens, temperature 0.9, lr 1e-3, 4 steps, a log every step.

Tolerance: `math.isclose(rel_tol=1e-6, abs_tol=1e-7)`. Measured (seed 42), sigmoid and ipo:
every number of every step is bit-for-bit equal (max |diff| 0). A first version that summed
sequence log-ratios in another order differed by up to 3e-6 on `objective/kl` (a value near 0,
so 4e-4 relative): float32 rounding, which is why the KL and entropy are now reduced in 1.12's
order. A behavioural difference (ties given to the reference, the bonus on the policy's
sample, IPO's target 1/beta) moves these numbers by 1e-3 or more.
"""

import pytest
from support.parity import assert_same_logs, run_scenario

METRICS = (
    "loss/dpo", "loss/xpo", "objective/kl", "objective/entropy", "objective/model_scores",
    "objective/ref_scores", "objective/scores_margin", "rewards/chosen", "rewards/rejected",
    "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected",
    "val/model_contain_eos_token", "val/ref_contain_eos_token", "alpha", "beta",
)  # fmt: skip


@pytest.mark.parity
@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"], ids=["xpo-sigmoid", "xpo-ipo"])
def test_xpo_logs_what_trl_1_12_logs(tiny, tmp_path, loss_type):
    # Plain-text prompts contain no EOS, so 1.12's EOS check agrees with ours. alpha 1e-3 makes
    # the exploration term visible next to the DPO term (1.12's default 1e-5 hides it).
    args = ["--tiny", tiny.root, "--loss_type", loss_type, "--alpha", 1e-3]
    args += ["--missing_eos_penalty", 1.0]
    original = run_scenario("xpo", "original", tmp_path, *args)
    ours = run_scenario("xpo", "ours", tmp_path, *args)

    compared = assert_same_logs(original, ours, rel=1e-6, abs_=1e-7)
    steps = [row for row in ours if "loss" in row]
    assert len(steps) == 4 and all(set(METRICS) <= set(row) for row in steps)
    assert compared >= 4 * (len(METRICS) + 3)  # + loss, grad_norm, learning_rate
    # The exploration term is alpha * log pi(y_ref): negative, and part of the logged loss.
    assert all(row["loss/xpo"] < 0 for row in steps)
    assert steps[0]["objective/kl"] == 0.0 and steps[-1]["objective/kl"] != 0.0


@pytest.mark.parity
def test_xpo_eos_penalty_looks_at_the_completion_only(tiny, tmp_path):
    """The fix: with chat prompts (whose turns end in the EOS token `<|im_end|>`) trl 1.12 finds
    EOS in every row and never applies `missing_eos_penalty`; ours penalises each completion
    that has none. One step (4 prompts): both runs sample the same completions from the same
    weights, so ours must score exactly `penalty x (fraction without EOS)` lower."""
    penalty = 2.0
    args = ["--tiny", tiny.root, "--data", "conversational_prompt_only", "--rows", 4]
    penalised = [*args, "--missing_eos_penalty", penalty]
    original = run_scenario("xpo", "original", tmp_path / "penalty", *penalised)
    ours = run_scenario("xpo", "ours", tmp_path / "penalty", *penalised)
    (a,), (b,) = ([r for r in log if "loss" in r] for log in (original, ours))

    pairs = {
        "objective/model_scores": "val/model_contain_eos_token",
        "objective/ref_scores": "val/ref_contain_eos_token",
    }
    for score, eos in pairs.items():
        assert a[eos] == b[eos] < 1.0  # same samples, and some lack EOS
        # Ours subtracts the penalty from every completion without EOS (tests/test_xpo_math.py
        # checks that row by row), so this gap means 1.12 subtracted it from none.
        assert b[score] == pytest.approx(a[score] - penalty * (1 - b[eos]), abs=1e-5)
