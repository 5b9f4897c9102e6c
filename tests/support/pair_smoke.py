"""What the smoke tests of the offline preference trainers (DPO, CPO, ORPO, TPO) share: each
script trains on its tiny recipe for a few steps, logging every 5 and evaluating every 10, and
logs the same family of pair metrics (rewards, log-probs and logits of chosen and rejected).
Each module keeps its own cases, metric list and the checks that belong to its loss."""

import math

from support.smoke import train_and_eval_rows

LOGGING_STEPS, EVAL_STEPS = 5, 10


def case_args(key: str, tiny, data_format: str, extra: list, out, steps: int) -> list:
    return [
        f"{key}_training.py",
        *["--config", f"annotated_examples/recipes/{key}_tiny.yaml"],
        *["--model_name_or_path", tiny.policy, "--output_dir", out],
        *["--dataset_name", tiny.data / data_format],
        *["--max_steps", steps, "--logging_steps", LOGGING_STEPS, "--eval_steps", EVAL_STEPS],
        *extra,
    ]


def logged_rows(out, metrics: list[str], steps: int) -> tuple[list[dict], list[dict]]:
    """The run's training and evaluation rows, one per LOGGING_STEPS and EVAL_STEPS steps,
    each with a finite loss and every metric in `metrics` (evaluation: those it logs)."""
    train_rows, eval_rows = train_and_eval_rows(out)
    assert (len(train_rows), len(eval_rows)) == (steps // LOGGING_STEPS, steps // EVAL_STEPS)
    for row in train_rows:
        for name in ["loss", *metrics]:
            assert math.isfinite(row[name]), (name, row)
        assert 0.0 <= row["rewards/accuracies"] <= 1.0
    for row in eval_rows:
        for name in ["loss", *metrics]:
            # A running count of training tokens has no evaluation twin.
            if name != "num_tokens":
                assert math.isfinite(row[f"eval_{name}"]), (name, row)
    return train_rows, eval_rows
