"""BCO smoke test: the example script, run as a user runs it, trains and saves a usable model.

One run as a subprocess (started ahead, tests/support/smoke.py), with the tiny recipe and UDM on
(the tiny policy's own hidden states embed the prompts), so the whole path runs: dataset check,
our trainer, the density-ratio classifier, δ, evaluation, save. The labels alternate in the file,
so every batch of 16 has both kinds.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    train_and_eval_rows,
    trained,
)

RECIPE = "annotated_examples/recipes/bco_tiny.yaml"
METRICS = [
    "loss",
    "delta",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
]

CASES = {"bco-udm": "unpaired_preference"}
CLI_CASE = "bco-udm"


def case_args(tiny, case, out):
    return [
        "bco_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / CASES[case], "--output_dir", out],
        *["--max_steps", 12, "--logging_steps", 4, "--eval_steps", 12],
        *["--embedding_model", tiny.policy],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_bco_script_trains_and_saves(request, tiny, case):
    out = trained(request, case)

    train_rows, eval_rows = train_and_eval_rows(out)
    assert [row["step"] for row in train_rows] == [4, 8, 12]
    assert [row["step"] for row in eval_rows] == [12]
    for row in train_rows:
        assert all(name in row for name in METRICS), row
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, float)), row
        assert row["loss"] > 0.0
    assert all(f"eval_{name}" in eval_rows[0] for name in METRICS if name != "loss")
    # δ is the running mean of the rewards: it has moved away from its start, 0, and evaluation
    # reports the δ reached at that step.
    assert train_rows[-1]["delta"] != 0.0
    assert math.isfinite(eval_rows[0]["eval_delta"])

    assert_saved_model_works(tiny, out, lora=False)


@pytest.mark.smoke
def test_bco_precomputed_reference_trains_like_a_live_one(tiny, tmp_path):
    """`precompute_ref_log_probs=True` (no reference model in memory) logs the same numbers,
    bit for bit, as a live reference copy: both are the policy before its first step."""
    import datasets

    from annotated_trl.trainers.bco import BCOConfig, BCOTrainer

    data = datasets.load_dataset(
        "json", data_files=str(tiny.data / "unpaired_preference" / "train.jsonl")
    )["train"]
    histories = []
    for precompute in (False, True):
        args = BCOConfig(
            output_dir=str(tmp_path / f"precompute-{precompute}"),
            use_cpu=True,
            bf16=False,
            gradient_checkpointing=False,
            learning_rate=1e-3,
            per_device_train_batch_size=16,
            max_steps=6,
            logging_steps=2,
            max_length=64,
            save_strategy="no",
            report_to="none",
            disable_tqdm=True,
            precompute_ref_log_probs=precompute,
        )
        trainer = BCOTrainer(model=str(tiny.policy), args=args, train_dataset=data)
        assert (trainer.ref_model is None) == precompute
        trainer.train()
        timing = ("runtime", "per_second")
        histories.append(
            [
                {k: v for k, v in r.items() if not k.endswith(timing)}
                for r in trainer.state.log_history
            ]
        )
    assert histories[0] == histories[1]
    assert histories[0][-2]["rewards/chosen"] != 0.0  # the policy did move away from the reference
