"""PPO parity scenario: one short run of trl 1.12.0's PPOTrainer or of ours, same everything else.

    python tests/parity_scenarios/ppo.py --impl original|ours --out log.json \
        [--kl_estimator k1|k3] [--whiten_rewards] [--stop_token eos|none] [--eager_eos]

The only line that differs between the two runs is the import of `PPOConfig, PPOTrainer`: the
one-line change a user makes when migrating. The fixture (`annotated-trl tiny`) is built into a
temporary folder; the policy is `tiny/policy`, the reference a copy made by the trainer, and the
tiny sequence classifier `tiny/reward` serves as both reward model and value model (two separate
instances: the value model trains, the reward model does not). Three PPO updates of 8 prompts,
2 mini-batches of 2 micro-batches each, 2 PPO epochs: one real optimiser step per PPO epoch, as
in both trainers gradients accumulate over all 4 micro-batches (tests/test_ppo_smoke.py counts).
"""

import argparse
import tempfile
from pathlib import Path

parser = argparse.ArgumentParser()
parser.add_argument("--impl", choices=["original", "ours"], required=True)
parser.add_argument("--out", type=Path, required=True)
parser.add_argument("--kl_estimator", choices=["k1", "k3"], default="k1")
parser.add_argument("--whiten_rewards", action="store_true")
parser.add_argument("--stop_token", choices=["eos", "none"], default="eos")
parser.add_argument("--eager_eos", action="store_true", help="make the policy often emit EOS")
parser.add_argument("--seed", type=int, default=42)
cli = parser.parse_args()

if cli.impl == "original":
    from trl.experimental.ppo import PPOConfig, PPOTrainer
else:
    from annotated_trl.trainers.ppo import PPOConfig, PPOTrainer

import datasets  # noqa: E402
import torch  # noqa: E402
from per_process import exit_skipping_gloo_teardown, write_json  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    set_seed,
)

from annotated_trl.fixtures import build_all  # noqa: E402

root = build_all(Path(tempfile.mkdtemp(prefix="ppo-parity-")))
tokenizer = AutoTokenizer.from_pretrained(root / "policy", padding_side="left")


def tokenize(row):
    return {"input_ids": tokenizer(row["prompt"], add_special_tokens=False)["input_ids"]}


data_files = {s: str(root / "data" / "prompt_only" / f"{s}.jsonl") for s in ("train", "test")}
dataset = datasets.load_dataset("json", data_files=data_files)
dataset = dataset.map(tokenize)

args = PPOConfig(
    output_dir=str(cli.out.parent / f"run-{cli.impl}"),
    use_cpu=True,
    bf16=False,
    gradient_checkpointing=False,
    report_to="none",
    save_strategy="no",
    seed=cli.seed,
    learning_rate=1e-3,
    per_device_train_batch_size=2,
    gradient_accumulation_steps=4,  # 8 prompts per PPO update
    num_mini_batches=1 if cli.whiten_rewards else 2,  # whitening wants >= 8 per mini-batch
    num_ppo_epochs=2,
    total_episodes=24,  # 3 updates
    local_rollout_forward_batch_size=4,  # the rollout in two chunks
    response_length=8,
    stop_token=None if cli.stop_token == "none" else cli.stop_token,
    temperature=0.7,
    missing_eos_penalty=1.0,
    kl_estimator=cli.kl_estimator,
    kl_coef=0.05,
    cliprange=0.05,  # small clip ranges, so that both clips act within 3 updates
    cliprange_value=0.02,
    whiten_rewards=cli.whiten_rewards,
    num_sample_generations=0,
    per_device_eval_batch_size=4,
)

set_seed(cli.seed)
policy = AutoModelForCausalLM.from_pretrained(root / "policy")
if cli.eager_eos:
    # The random policy almost never samples EOS (1 in 384), so nothing would be truncated.
    # Point EOS's (tied) output embedding along the mean final hidden state: about a third of
    # the 8-token responses then stop early, which exercises truncation and every mask.
    with torch.no_grad():
        prompts = tokenizer(dataset["train"]["prompt"][:16], return_tensors="pt", padding=True)
        hidden = policy(**prompts, output_hidden_states=True).hidden_states[-1].mean((0, 1))
        policy.get_output_embeddings().weight[tokenizer.eos_token_id] = hidden / hidden.norm()
reward_model = AutoModelForSequenceClassification.from_pretrained(root / "reward", num_labels=1)
value_model = AutoModelForSequenceClassification.from_pretrained(root / "reward", num_labels=1)
set_seed(cli.seed)
dataset = dataset.remove_columns(["prompt", "answer"])
trainer = PPOTrainer(
    args=args,
    processing_class=tokenizer,
    model=policy,
    ref_model=None,
    reward_model=reward_model,
    value_model=value_model,
    train_dataset=dataset["train"],
    eval_dataset=dataset["test"],
)
trainer.train()
write_json(cli.out, trainer.state.log_history)
exit_skipping_gloo_teardown()
