r"""Proximal Policy Optimization (PPO) for RLHF, with our own `PPOTrainer` on TRL 1.16

The classic RLHF recipe (Ziegler et al., 2019; Ouyang et al., 2022): the policy writes a
response to each prompt, a reward model scores it, and PPO pushes the policy towards
higher-scoring responses while a per-token KL penalty keeps it near a frozen reference copy. A
*value model* learns to predict the return at every token, so each token gets its own
advantage (GAE) instead of sharing one score.

TRL removed `PPOTrainer` in 1.13.0. This script uses ours, `annotated_trl.trainers.ppo`, which
keeps trl 1.12.0's class, config and field names and logs the same numbers
(tests/test_ppo_parity.py). With trl <= 1.12 installed, replace the import line
`from annotated_trl.trainers.ppo import PPOConfig, PPOTrainer` with
`from trl.experimental.ppo import PPOConfig, PPOTrainer` and the script runs unchanged.

The flags: `ScriptArguments` (data), `PPOConfig` (training; it holds `--reward_model_path`),
`ModelConfig` (the policy) and `--config recipe.yaml`; `--dataset_name` may also be a local
folder or `.json`/`.jsonl` file of prompts.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/ppo_training.py --config annotated_examples/recipes/ppo_tiny.yaml

# One GPU: Qwen2-0.5B-Instruct on UltraFeedback prompts, scored by a 0.5B reward model:
python annotated_examples/ppo_training.py --config annotated_examples/recipes/ppo.yaml

# Eight GPUs (each samples and trains on its own share of every batch):
accelerate launch --num_processes 8 annotated_examples/ppo_training.py \
    --config annotated_examples/recipes/ppo.yaml

# LoRA: train adapters; the reference is the same network with its adapters switched off.
python annotated_examples/ppo_training.py --config annotated_examples/recipes/ppo.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear \
    --learning_rate 3e-5
```
"""

import sys
from dataclasses import dataclass, field

from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    set_seed,
)
from trl import ModelConfig, TrlParser, get_peft_config

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.trainers.ppo import PPOConfig, PPOTrainer

# ## 1. Arguments
#
# Four models take part, three of them loaded here:
#
# - the **policy** $\pi_\theta$, `--model_name_or_path`: trained;
# - the **reference** $\pi_\text{ref}$: a frozen copy of the policy, made by the trainer;
# - the **reward model** $r_\phi$, `--reward_model_path`: a sequence classifier with one output
#   (`num_labels=1`), e.g. one trained by the [reward example](reward_training.py); frozen;
# - the **value model** $V_\psi$, `--value_model_path` (default: the reward model's weights, a
#   good start since it already reads responses; Huang et al. 2024): trained with the policy.


@dataclass
class PPOScriptArguments(ScriptArguments):
    value_model_path: str | None = field(
        default=None,
        metadata={"help": "Initial value model (num_labels=1); default: --reward_model_path."},
    )
    # Other TRL configs carry this flag; trl 1.12's PPOConfig does not, so the script does.
    trust_remote_code: bool = field(
        default=False, metadata={"help": "Run model code from the Hub (custom architectures)."}
    )


parser = TrlParser((PPOScriptArguments, PPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct",
    dataset_name="trl-lib/ultrafeedback-prompt",
    reward_model_path="trl-lib/Qwen2-0.5B-Reward",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# PPO's loop is its own, and, like trl 1.12's, it has no code to restore a checkpoint's optimiser,
# value model and place in the prompt stream. Refuse, rather than quietly start again at step 0.
if training_args.resume_from_checkpoint:
    sys.exit(
        f"error: --resume_from_checkpoint {training_args.resume_from_checkpoint}: PPO cannot "
        "resume a run (trl 1.12's PPOTrainer could not either); its checkpoints hold the policy "
        "for evaluation. Start a new run without the flag"
    )

# ## 2. Tokenizer
#
# Prompts are padded on the **left**, so that every response starts at the same column
# (`context_length`) and one slice cuts all responses out of the batch. Padding marks where a
# response ends, so the pad token must differ from EOS: an EOS read as padding would make every
# finished response look empty.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=script_args.trust_remote_code,
    padding_side="left",
)
if tokenizer.pad_token_id is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
    sys.exit(
        f"error: {model_args.model_name_or_path}: the tokenizer's pad token must exist and differ "
        "from its EOS token (PPO reads padding as the end of a response); set another pad token"
    )

# ## 3. Data
#
# PPO needs prompts only: it writes its own responses. A row is `{"prompt": "..."}` or
# `{"prompt": [{"role": "user", "content": "..."}]}`; other columns are ignored. Every row is
# checked before any model is loaded, and a bad file costs one line naming the file and the
# row. Conversational prompts need a chat template.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="ppo",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")

# trl 1.12's PPOTrainer takes *token ids*, not text: we render and tokenize every prompt here.
# A conversational prompt goes through the chat template with the generation prompt (the
# assistant turn's opening), which already holds any special tokens the model expects.


def tokenize(row):
    if isinstance(row["prompt"], str):
        return {"input_ids": tokenizer(row["prompt"])["input_ids"]}
    text = tokenizer.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)
    return {"input_ids": tokenizer(text, add_special_tokens=False)["input_ids"]}


dataset = dataset.map(
    tokenize,
    remove_columns=dataset[script_args.dataset_train_split].column_names,
    num_proc=training_args.dataset_num_proc,
)
train_dataset = dataset[script_args.dataset_train_split]
# The evaluation split only feeds the sample completions printed during training
# (`num_sample_generations`); PPO computes no evaluation loss.
eval_dataset = dataset.get(script_args.dataset_test_split)
if eval_dataset is not None:  # `--eval_max_samples N`: N rows, drawn with `--seed`
    eval_dataset = eval_subset(eval_dataset, script_args.eval_max_samples, training_args.seed)

# ## 4. Models
#
# The reward and value models are sequence classifiers; the trainer applies their scoring head
# at every position (`token_scores`), which gives the value model one estimate per token.

model_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    "trust_remote_code": script_args.trust_remote_code,
}
policy = AutoModelForCausalLM.from_pretrained(model_args.model_name_or_path, **model_kwargs)
score_kwargs = {"num_labels": 1, "trust_remote_code": script_args.trust_remote_code}
reward_model = AutoModelForSequenceClassification.from_pretrained(
    training_args.reward_model_path, **score_kwargs
)
value_model = AutoModelForSequenceClassification.from_pretrained(
    script_args.value_model_path or training_args.reward_model_path, **score_kwargs
)

# ## 5. Trainer
#
# One update: sample `batch_size` responses at `temperature`; reward
# $r_t = -\beta\,\mathrm{KL}_t$ on every token plus the reward model's score at the end (minus
# `missing_eos_penalty` when the response never stopped); GAE advantages; then
# `num_ppo_epochs` passes of mini-batch steps on
#
# $$\mathcal{L} = \mathcal{L}^\text{CLIP}(\theta) + c_V\, \mathcal{L}^V(\psi),$$
#
# the clipped surrogate plus `vf_coef` times the clipped value loss (reference guide:
# [PPO](../reference_guides/ppo.md)). `ref_model=None`: the trainer copies the policy, or with
# LoRA uses the policy with its adapters disabled.
#
# PPO (ours and trl 1.12's) seeds torch itself but shuffles mini-batches with NumPy's global
# generator, which nothing else seeds: without `set_seed`, two runs of this script differ.

set_seed(training_args.seed)
trainer = PPOTrainer(
    args=training_args,
    processing_class=tokenizer,
    model=policy,
    ref_model=None,
    reward_model=reward_model,
    value_model=value_model,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged at every update: `objective/scores` (mean reward-model score, after the EOS penalty:
# it should rise), `objective/kl` (summed per-token KL to the reference: it grows from 0 and
# should stay modest), `objective/rlhf_reward` (score minus β·KL: what PPO maximises),
# `objective/entropy`, `policy/approxkl_avg` and `policy/clipfrac_avg` (how far each update
# moved the policy: small, a few percent clipped), `loss/policy_avg`, `loss/value_avg`,
# `val/clipfrac_avg`, `val/ratio` and `val/num_eos_tokens` (responses that stopped).

trainer.train()

# ## 7. Save
#
# `save_model` writes the policy (not the value model) and the tokenizer; it loads back with
# `AutoModelForCausalLM.from_pretrained`. `save_state` writes `trainer_state.json` with the log.
# `end()` closes the trackers and the process group.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
