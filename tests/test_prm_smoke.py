"""PRM smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Two variants of the tiny recipe (cut to 20 steps): full fine-tuning of the token-classification
fixture as a subprocess, and LoRA with task type TOKEN_CLS (the script's default) in-process
(tests/support/smoke.py). Each checks that weights moved, every logged number is finite and in
range, and that the saved output reloads as a token classifier that scores every step of a
solution.
"""

import math

import pytest
import torch
from safetensors.torch import load_file
from support.smoke import (
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    train_and_eval_rows,
    trained,
)
from transformers import AutoModelForTokenClassification, AutoTokenizer

from annotated_trl.trainers.prm import PRMTrainer, step_probabilities

RECIPE = "annotated_examples/recipes/prm_tiny.yaml"
CASES = {
    "prm-full": [],
    "prm-lora-token-cls": [
        *["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
    ],
}
CLI_CASE = "prm-full"
PROMPT, STEPS = "What is 2 + 3 + 4?", ["2 + 3 = 5", "5 + 4 = 9"]


def case_args(tiny, case, out):
    return [
        "prm_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.token_classifier],
        *["--dataset_name", tiny.data / "stepwise_supervision", "--output_dir", out],
        *["--max_steps", "20", "--logging_steps", "5", "--eval_steps", "10", *CASES[case]],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_prm_script_trains_and_saves(request, tiny, case, capsys):
    extra = CASES[case]
    out = trained(request, case)
    if case == CLI_CASE:
        printed = request.getfixturevalue("cli_runs").result(request.module)[0].stdout
    else:
        printed = capsys.readouterr().out
    assert "product" in printed and "min" in printed  # the script scored a solution

    train_rows, eval_rows = train_and_eval_rows(out)
    assert len(train_rows) == 4 and len(eval_rows) == 2  # logging_steps 5, eval_steps 10
    for row in train_rows:
        assert all(math.isfinite(row[key]) for key in ("loss", "grad_norm", "learning_rate"))
    for row in eval_rows:
        assert math.isfinite(row["eval_loss"]) and 0.0 <= row["eval_accuracy"] <= 1.0

    tokenizer = AutoTokenizer.from_pretrained(out)
    before = load_file(tiny.token_classifier / "model.safetensors")
    if "--use_peft" in extra:
        from peft import AutoPeftModelForTokenClassification

        # The adapter, plus the full classification head (TOKEN_CLS puts it in modules_to_save).
        adapter = load_file(out / "adapter_model.safetensors")
        lora_b = [w for name, w in adapter.items() if "lora_B" in name]
        assert lora_b and all(w.abs().max() > 0 for w in lora_b)
        head = next(w for name, w in adapter.items() if name.endswith("score.weight"))
        assert not torch.equal(head, before["score.weight"])
        assert not (out / "model.safetensors").exists()
        model = AutoPeftModelForTokenClassification.from_pretrained(out, num_labels=2)
    else:
        after = load_file(out / "model.safetensors")
        assert sorted(after) == sorted(before)
        assert sum(not torch.equal(before[k], after[k]) for k in after) > len(after) // 2
        model = AutoModelForTokenClassification.from_pretrained(out)
        assert model.config.num_labels == 2
        assert model.config.pad_token_id == tokenizer.pad_token_id

    model.eval()
    p = step_probabilities(model, tokenizer, PROMPT, STEPS)
    assert p.shape == (2,) and torch.all((p > 0) & (p < 1))
    # The same numbers from a padded batch of two solutions: padding is handled at reload.
    rows = [
        PRMTrainer.tokenize_row(
            {"prompt": PROMPT, "completions": steps, "labels": [True] * len(steps)},
            *(tokenizer, "\n", None, None, False, True),
        )
        for steps in (STEPS, STEPS[:1])
    ]
    batch = tokenizer.pad([{"input_ids": r["input_ids"]} for r in rows], return_tensors="pt")
    assert batch["attention_mask"][1].sum() < batch["attention_mask"][0].sum()  # really padded
    with torch.no_grad():
        logits = model(**batch).logits
    positions = [t for t, label in enumerate(rows[0]["labels"]) if label != -100]
    batched = torch.softmax(logits[0, positions], dim=-1)[:, 1]
    torch.testing.assert_close(batched, p, atol=1e-5, rtol=1e-5)
