"""Reward smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Three variants: full fine-tuning on explicit-prompt pairs (run as a subprocess), full
fine-tuning on implicit-prompt pairs starting from the sequence-classification fixture, and LoRA
(task type SEQ_CLS, the script's default), both in-process (tests/support/smoke.py). Each checks
that weights moved, metrics are finite and in range, and that the saved output reloads as a
sequence classifier that scores a pair.
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
from transformers import AutoModelForSequenceClassification, AutoTokenizer

RECIPE = "annotated_examples/recipes/reward_tiny.yaml"

# case -> (model fixture attribute, data format, extra flags). Flags override the tiny recipe.
CASES = {
    "reward-full-implicit-prompt": ("reward", "implicit_preference", []),
    "reward-lora-seq-cls": (
        "policy",
        "preference",
        ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
    ),
    "reward-full-explicit-prompt": ("policy", "preference", []),
}
CLI_CASE = "reward-full-explicit-prompt"
METRICS = ("accuracy", "margin", "min_reward", "mean_reward", "max_reward", "num_tokens")


def case_args(tiny, case, out):
    model, data_format, extra = CASES[case]
    return [
        "reward_training.py",
        *["--config", RECIPE, "--model_name_or_path", getattr(tiny, model)],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--max_steps", "20", "--logging_steps", "5", "--eval_steps", "10", *extra],
    ]


def _score(model, tokenizer, texts):
    batch = tokenizer(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model(**batch).logits.squeeze(-1)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_reward_script_trains_and_saves(request, tiny, case):
    model_name, _, extra = CASES[case]
    out = trained(request, case)

    train_rows, eval_rows = train_and_eval_rows(out)
    assert len(train_rows) == 4 and len(eval_rows) == 2  # logging_steps 5, eval_steps 10
    for row in train_rows:
        assert all(math.isfinite(row[key]) for key in ("loss", *METRICS))
        assert 0.0 <= row["accuracy"] <= 1.0
        assert row["min_reward"] <= row["mean_reward"] <= row["max_reward"]
    for row in eval_rows:
        assert math.isfinite(row["eval_loss"]) and 0.0 <= row["eval_accuracy"] <= 1.0

    tokenizer = AutoTokenizer.from_pretrained(out)
    if "--use_peft" in extra:
        from peft import AutoPeftModelForSequenceClassification

        # Only the adapter is saved, plus the full score head (SEQ_CLS puts it in modules_to_save).
        adapter = load_file(out / "adapter_model.safetensors")
        lora_b = [w for name, w in adapter.items() if "lora_B" in name]
        assert lora_b and all(w.abs().max() > 0 for w in lora_b)
        assert any(name.endswith("score.weight") for name in adapter)
        assert not (out / "model.safetensors").exists()
        model = AutoPeftModelForSequenceClassification.from_pretrained(out, num_labels=1)
    else:
        before = load_file(getattr(tiny, model_name) / "model.safetensors")
        after = load_file(out / "model.safetensors")
        # Starting from the causal LM, the saved model has the body and a new score head.
        assert "score.weight" in after
        shared = [k for k in after if k in before]
        assert shared and any(not torch.equal(before[k], after[k]) for k in shared)
        model = AutoModelForSequenceClassification.from_pretrained(out)
        assert model.config.num_labels == 1
        assert model.config.pad_token_id == tokenizer.pad_token_id

    model.eval()
    pair = ["What is 2 + 3? 2 + 3 = 5", "What is 2 + 3? 2 + 3 = 7"]
    scores = _score(model, tokenizer, [text + tokenizer.eos_token for text in pair])
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    # Scoring one at a time gives the same numbers: padding is handled at reload too.
    alone = torch.cat([_score(model, tokenizer, [text + tokenizer.eos_token]) for text in pair])
    torch.testing.assert_close(scores, alone, atol=1e-5, rtol=1e-5)
