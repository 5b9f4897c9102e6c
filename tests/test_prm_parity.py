"""PRM parity: our PRMTrainer against trl 1.12.0's, same fixture, data, seed and config.

`tests/parity_scenarios/prm.py` runs once with each implementation (a fresh process each; the
original imports trl 1.12.0 from `.oracle/trl-1.12`). Three things are compared:

1. the tokenised datasets, token for token: `input_ids` and `labels` of the train and eval sets
   under six set-ups (defaults, `train_on_last_step_only`, each truncation alone, a multi-token
   separator, a tokenizer with a BOS token). This is the strongest check: everything PRM-specific
   happens here, and the rest is `transformers.Trainer`, shared by both;
2. the config: every `PRMConfig()` field after `__post_init__`, and each PRM field's default;
3. every logged number at every step (train loss, grad norm, learning rate, epoch; eval loss and
   step accuracy every 4 steps; the end-of-training summary), with and without
   `train_on_last_step_only`.

Tolerance: exact (rel 0, abs 0). Both runs feed identical token ids in identical batches through
the same model code, optimiser and seed on the same CPU build of torch, and the loss is computed
by the model itself in both, so the arithmetic is the same operation for operation. Measured
maximum difference: 0.0 on every compared number (both cases, seed 42).
"""

import json

import pytest
from support.parity import assert_same_logs, run_scenario

CASES = {"prm-all-steps": [], "prm-last-step-only": ["--last_step_only"]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both implementations, both cases: case -> (original dir, ours dir, logs, logs)."""
    results = {}
    for case, flags in CASES.items():
        out = tmp_path_factory.mktemp(case)
        original = run_scenario("prm", "original", out, *flags)
        ours = run_scenario("prm", "ours", out, *flags)
        results[case] = (out, original, ours)
    return results


@pytest.mark.parity
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_prm_logs_match_trl_1_12_at_every_step(runs, case):
    out, original, ours = runs[case]
    compared = assert_same_logs(original, ours, rel=0.0, abs_=0.0)
    train_steps = [row["step"] for row in original if "loss" in row]
    eval_rows = [row for row in original if "eval_loss" in row]
    assert train_steps == list(range(1, 13)), train_steps
    assert [row["step"] for row in eval_rows] == [4, 8, 12]
    assert all("eval_accuracy" in row for row in eval_rows)
    # loss, grad_norm, learning_rate, epoch per step; eval_loss, eval_accuracy, epoch per eval.
    assert compared >= 12 * 4 + 3 * 3


@pytest.mark.parity
def test_prm_tokenised_datasets_match_trl_1_12(runs):
    out = runs["prm-all-steps"][0]
    original = json.loads((out / "original.tokens.json").read_text())
    ours = json.loads((out / "ours.tokens.json").read_text())
    assert sorted(original) == sorted(ours)
    setups = {key.split("/")[0] for key in original}
    assert setups == {
        "defaults",
        "last_step_only",
        "short_completion",
        "short_total",
        "separator",
        "bos",
    }
    for key in original:
        rows = [i for i, (a, b) in enumerate(zip(original[key], ours[key], strict=True)) if a != b]
        assert not rows, f"{key}: rows {rows[:5]} differ, e.g. {original[key][rows[0]]} vs ours"
        assert len(original[key]) in (256, 64)
    # The set-ups really differ from each other, so each one tests something.
    defaults = original["defaults/train/labels"]
    assert original["last_step_only/train/labels"] != defaults
    assert original["last_step_only/eval/labels"] == original["defaults/eval/labels"]
    # Each truncation cuts rows to a prefix of the untruncated ones, and the two cut differently.
    full = original["defaults/train/input_ids"]
    for setup in ("short_completion", "short_total"):
        cut = original[f"{setup}/train/input_ids"]
        assert all(ids == row[: len(ids)] for ids, row in zip(cut, full, strict=True))
        assert sum(len(ids) < len(row) for ids, row in zip(cut, full, strict=True)) > 0
    assert original["short_completion/train/input_ids"] != original["short_total/train/input_ids"]
    assert max(map(len, original["short_total/train/input_ids"])) == 16
    assert original["separator/train/input_ids"] != original["defaults/train/input_ids"]
    assert original["bos/train/input_ids"] != original["defaults/train/input_ids"]


@pytest.mark.parity
def test_prm_config_defaults_match_trl_1_12(runs):
    out = runs["prm-all-steps"][0]
    original = json.loads((out / "original.config.json").read_text())
    ours = json.loads((out / "ours.config.json").read_text())
    assert ours["declared"] == original["declared"]
    assert sorted(ours["after_post_init"]) == sorted(original["after_post_init"])
    differing = {
        key: (value, ours["after_post_init"][key])
        for key, value in original["after_post_init"].items()
        if ours["after_post_init"][key] != value
    }
    assert not differing, differing
