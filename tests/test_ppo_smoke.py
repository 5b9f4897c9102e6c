"""PPO smoke test: the example script, run as a user runs it (one subprocess, the tiny recipe on
conversational prompts, started ahead by tests/support/smoke.py), trains, logs finite metrics at
every update and saves a policy that reloads and generates.
"""

import math

import pytest
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    log_history,
    trained,
)

RECIPE = "annotated_examples/recipes/ppo_tiny.yaml"
UPDATES = 4  # 32 episodes of 8 responses

# One variant, run as a subprocess (tests/support/smoke.py). Flags override the tiny recipe.
CASES = {"ppo-conversational": "conversational_prompt_only"}
CLI_CASE = "ppo-conversational"


def case_args(tiny, case, out):
    return [
        "ppo_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--reward_model_path", tiny.reward, "--output_dir", out],
        *["--dataset_name", tiny.data / CASES[case], "--total_episodes", "32"],
    ]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_ppo_script_trains_and_saves(request, tiny, case):
    out = trained(request, case)

    history = log_history(out)
    assert [row["step"] for row in history] == list(range(1, UPDATES + 1))
    assert [row["episode"] for row in history] == [8 * s for s in range(1, UPDATES + 1)]
    for row in history:
        assert all(math.isfinite(v) for v in row.values() if isinstance(v, (int, float)))
        assert row["objective/entropy"] > 0
        assert 0 <= row["policy/clipfrac_avg"] <= 1 and 0 <= row["val/clipfrac_avg"] <= 1
        assert row["loss/value_avg"] > 0
        assert 0 <= row["val/num_eos_tokens"] <= 8 * 8  # 8 responses of at most 8 tokens
        # What PPO maximises: the score minus the KL penalty, summed over tokens.
        assert row["objective/rlhf_reward"] == pytest.approx(
            row["objective/scores"] + row["objective/non_score_reward"], abs=1e-5
        )
        assert row["objective/non_score_reward"] == pytest.approx(
            -0.05 * row["objective/kl"], abs=1e-6
        )
    # The policy starts as its reference: KL 0 up to rounding (sampling with a KV cache and the
    # reference's full forward pass round differently, ~1e-7).
    assert abs(history[0]["objective/kl"]) < 1e-4
    assert abs(history[-1]["objective/kl"]) > 1e-3  # and has moved by the last update
    assert history[0]["lr"] > history[-1]["lr"] > 0  # linear decay over the updates

    # The saved model is the policy (not the value model), with new weights.
    assert_saved_model_works(tiny, out, lora=False)


def tiny_ppo_trainer(tiny, out, **config):
    """Our PPOTrainer on the tiny fixture, 8 prompts (two updates of 4 prompts in 2
    micro-batches), in this process; `config` overrides PPOConfig fields."""
    import datasets
    from transformers import AutoModelForCausalLM as LM
    from transformers import AutoModelForSequenceClassification as Scorer
    from transformers import AutoTokenizer

    from annotated_trl.trainers.ppo import PPOConfig, PPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(tiny.policy, padding_side="left")
    rows = datasets.load_dataset(
        "json", data_files=str(tiny.data / "prompt_only" / "train.jsonl"), split="train"
    ).select(range(8))  # two updates: the second holds the dataloader's last batch
    rows = rows.map(lambda r: {"input_ids": tokenizer(r["prompt"])["input_ids"]})
    defaults = {
        "use_cpu": True,
        "bf16": False,
        "gradient_checkpointing": False,
        "report_to": "none",
        "save_strategy": "no",
        "num_sample_generations": 0,
        "per_device_train_batch_size": 2,
        "gradient_accumulation_steps": 2,  # 4 prompts per update, 2 micro-batches
        "num_ppo_epochs": 2,
        "total_episodes": 8,
        "response_length": 4,
    }
    args = PPOConfig(output_dir=str(out), **{**defaults, **config})
    return PPOTrainer(
        args=args,
        processing_class=tokenizer,
        model=LM.from_pretrained(tiny.policy),
        ref_model=None,
        reward_model=Scorer.from_pretrained(tiny.reward, num_labels=1),
        value_model=Scorer.from_pretrained(tiny.reward, num_labels=1),
        train_dataset=rows.remove_columns(["prompt", "answer"]),
    )


@pytest.mark.smoke
@pytest.mark.filterwarnings("ignore:Seems like `optimizer.step\\(\\)` has been overridden")
def test_ppo_steps_once_per_epoch_whatever_the_mini_batches(tiny, tmp_path):
    """Real optimiser steps per update, counted on the torch optimiser itself. As in trl 1.12,
    gradients accumulate over a whole PPO epoch: `num_mini_batches` 1 or 2 gives one step per
    epoch; in the update that holds the dataloader's last batch, accelerate steps on every
    micro-batch. (A true mini-batch implementation would give 4 steps in the first update.)"""
    steps = {}
    for num_mini_batches in (1, 2):
        trainer = tiny_ppo_trainer(
            tiny, tmp_path / str(num_mini_batches), num_mini_batches=num_mini_batches
        )
        inner = trainer.optimizer.optimizer  # the torch optimiser behind accelerate's wrapper
        calls, step = [], inner.step

        def counted(*a, _step=step, _calls=calls, _trainer=trainer, **k):
            _calls.append(_trainer.state.global_step)
            return _step(*a, **k)

        inner.step = counted
        trainer.train()
        steps[num_mini_batches] = [calls.count(update) for update in sorted(set(calls))]
    assert steps[1] == steps[2] == [2, 4], steps


@pytest.mark.smoke
def test_ppo_bf16_autocasts(tiny, tmp_path):
    """`bf16: true` reaches the Accelerator (trl 1.12 built it without, so a plain `python` run
    trained in float32): the prepared policy computes in bfloat16."""
    import torch

    from annotated_trl.trainers.ppo import forward

    trainer = tiny_ppo_trainer(tiny, tmp_path, bf16=True)
    assert trainer.accelerator.mixed_precision == "bf16"
    # The training forward goes through the prepared wrapper (accelerate casts its outputs back
    # to float32): look at what a layer inside the policy computes.
    seen = []
    layer = trainer.model.policy.get_output_embeddings()
    hook = layer.register_forward_hook(lambda module, args, out: seen.append(out.dtype))
    forward(trainer.model, torch.tensor([[1, 2, 3]]), trainer.processing_class.pad_token_id)
    hook.remove()
    assert seen == [torch.bfloat16]
