"""KTO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two cases: thumbs-up/down rows (the format KTO is made for, run as a subprocess), and paired
preference rows, which `KTOTrainer` unpairs itself (run in-process, tests/support/smoke.py).
Every pair becomes one desirable and one undesirable row, so 256 pairs give 512 rows (the epoch
counter shows it), and, because the split is one batched `map`, all 256 desirable rows come
first: read in order, steps 1-16 see only desirable rows and steps 17-20 only undesirable ones.
The logs show exactly that.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/kto_tiny.yaml"
BATCH = 16

# case -> (data format, rows the trainer sees per epoch, steps)
CASES = {
    "kto-paired-preference": ("preference", 512, 20),
    "kto-unpaired": ("unpaired_preference", 256, 12),
}
CLI_CASE = "kto-unpaired"

METRICS = [
    "loss",
    "kl",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
]


def case_args(tiny, case, out):
    data_format, _, steps = CASES[case]
    return [
        "kto_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--max_steps", steps, "--logging_steps", 4, "--eval_steps", 12],
        *["--per_device_train_batch_size", BATCH],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_kto_script_trains_and_saves(request, tiny, case):
    _, rows_per_epoch, steps = CASES[case]
    out = trained(request, case)

    history = log_history(out)
    train_rows = [row for row in history if "loss" in row]
    eval_rows = [row for row in history if "eval_loss" in row]
    assert len(train_rows) == steps // 4
    assert [row["step"] for row in eval_rows] == sorted({12, steps})  # and at the end
    for row in train_rows:
        assert all(math.isfinite(value) for value in row.values() if isinstance(value, float))
        assert row["kl"] >= 0.0  # the reference point is clamped at 0
        # The loss of one row lies in [0, max weight] = [0, 1] with the default weights.
        assert 0.0 <= row["loss"] <= 1.0
    assert history[-1]["epoch"] == pytest.approx(steps * BATCH / rows_per_epoch)

    if case == "kto-unpaired":  # alternating labels: every batch has both
        for row in train_rows:
            assert all(name in row for name in METRICS), row
        assert all(f"eval_{name}" in eval_rows[0] for name in METRICS if name != "loss")
    else:  # automatically unpaired: 256 desirable rows, then 256 undesirable ones
        *first, last = train_rows
        assert all("rewards/chosen" in row and "rewards/rejected" not in row for row in first)
        assert "rewards/rejected" in last and "rewards/chosen" not in last
        assert not any("rewards/margins" in row for row in history)

    assert_saved_model_works(tiny, out, lora=False)
