"""The GPU recipes (annotated_examples/recipes/<key>.yaml), checked on CPU for what would cost a
GPU day silently: updates lost to bf16 weights, runs with no end, checkpoints with no bound."""

import pytest
import torch
import yaml
from conftest import REPO
from transformers import AutoModelForCausalLM

from annotated_trl.methods import METHODS

KEYS = [m.key for m in METHODS]


def recipe(key: str) -> dict:
    return yaml.safe_load((REPO / "annotated_examples" / "recipes" / f"{key}.yaml").read_text())


def share_moved_by_one_adamw_step(model, learning_rate: float) -> float:
    """The share of the weights one AdamW step changes at all. Adam's first step moves every
    weight by about the learning rate, whatever its gradient; a weight stored in bf16 keeps 8
    bits of mantissa, so steps far below its own size round back to the same value."""
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
    optimizer.step()
    moved = sum(
        (b != p.detach()).sum().item() for b, p in zip(before, model.parameters(), strict=True)
    )
    return moved / sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("key", KEYS)
def test_recipe_precision_moves_every_weight_at_its_learning_rate(key, tiny):
    settings = recipe(key)
    dtype = settings.get("dtype", "float32")  # ModelConfig's default
    model = AutoModelForCausalLM.from_pretrained(tiny.policy, dtype=getattr(torch, dtype))
    assert share_moved_by_one_adamw_step(model, settings["learning_rate"]) == 1.0


def test_bf16_weights_would_drop_most_updates_at_these_learning_rates(tiny):
    """Why the recipes keep float32 weights: measured on the tiny policy at DPO's 5e-7."""
    model = AutoModelForCausalLM.from_pretrained(tiny.policy, dtype=torch.bfloat16)
    assert share_moved_by_one_adamw_step(model, 5e-7) < 0.05


@pytest.mark.parametrize("key", KEYS)
def test_recipe_run_and_disk_are_bounded(key):
    """A run ends after one epoch or a step budget (TrainingArguments' default is 3 epochs: on
    DeepMath-103K, GRPO's 77,000 steps), and keeps a bounded number of checkpoints."""
    settings = recipe(key)
    assert settings.get("max_steps", -1) > 0 or settings.get("num_train_epochs", 3.0) <= 1
    if settings.get("save_strategy", "steps") != "no":
        assert settings.get("save_total_limit"), "a checkpoint every save_steps, none deleted"
