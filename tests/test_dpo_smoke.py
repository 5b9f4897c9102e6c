"""DPO smoke tests: the example script, run as a user runs it, trains and saves a usable model.

Three cases (full fine-tuning on standard and conversational pairs, and LoRA); the standard one
runs as a subprocess, the others in-process (tests/support/smoke.py). Plus an in-process check
of what LoRA means for the reference model: the trainer keeps no second model, and its reference
log-probs are those of the base model with the adapter disabled.
"""

import pytest
import torch
from datasets import load_dataset
from peft import LoraConfig
from support import pair_smoke
from support.script_runs import LORA
from support.smoke import (
    assert_saved_model_works,
    cli_runs,  # noqa: F401  (a fixture: the session's subprocess runs)
    trained,
)
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DPOConfig, DPOTrainer

STEPS = 20

# case -> (data format, extra flags). Flags override the tiny recipe.
CASES = {
    "dpo-conversational-preference": ("conversational_preference", []),
    "dpo-lora": ("preference", LORA),
    "dpo-preference": ("preference", []),
}
CLI_CASE = "dpo-preference"

METRICS = [
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
    "mean_token_accuracy",
]


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return pair_smoke.case_args("dpo", tiny, data_format, extra, out, STEPS)


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_dpo_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    train_rows, _ = pair_smoke.logged_rows(out, METRICS, STEPS)
    for row in train_rows:
        # The margin is the mean of chosen minus rejected rewards, by definition.
        margin = row["rewards/chosen"] - row["rewards/rejected"]
        assert row["rewards/margins"] == pytest.approx(margin, abs=1e-5)
        assert row["logps/chosen"] < 0 and row["logps/rejected"] < 0

    assert_saved_model_works(tiny, out, lora="--use_peft" in extra)


@pytest.mark.smoke
def test_dpo_lora_reference_is_the_adapter_disabled_base(tiny, tmp_path):
    """With a LoRA config and no `ref_model`, no second model exists: the reference forward is
    the policy network with its adapter switched off, i.e. the base checkpoint."""
    dataset = load_dataset("json", data_files=str(tiny.data / "preference" / "train.jsonl"))
    trainer = DPOTrainer(
        model=str(tiny.policy),
        args=DPOConfig(
            output_dir=str(tmp_path),
            use_cpu=True,
            bf16=False,
            activation_checkpointing=False,
            report_to="none",
            max_length=64,
            per_device_train_batch_size=4,
        ),
        train_dataset=dataset["train"].select(range(8)),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]),
    )
    assert trainer.ref_model is None
    assert "ref" not in trainer.model.peft_config  # a fresh adapter: no frozen "ref" copy either

    # Make the adapter do something, so that "adapter disabled" and "adapter on" differ.
    with torch.no_grad():
        for name, param in trainer.model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.5)
    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(trainer.model, batch)

    # Our own reference: the base checkpoint from disk, full logits, masked sum over completions.
    base = AutoModelForCausalLM.from_pretrained(tiny.policy)
    with torch.no_grad():
        logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        logps = logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
        policy_logits = trainer.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    mask = batch["completion_mask"][:, 1:]
    expected = (logps * mask).sum(-1)
    torch.testing.assert_close(
        torch.cat([ref_chosen, ref_rejected]), expected, atol=1e-4, rtol=1e-5
    )
    # Negative control: with the adapter on, the log-probs are different.
    policy_logps = policy_logits[:, :-1].log_softmax(-1).gather(-1, batch["input_ids"][:, 1:, None])
    assert (((policy_logps[..., 0] * mask).sum(-1) - expected).abs() > 1e-3).any()
