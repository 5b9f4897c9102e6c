r"""Online DPO with TRL's `OnlineDPOTrainer` (experimental)

Direct Preference Optimization on pairs the policy writes itself. For each prompt the current
policy samples two completions, a reward (functions and/or a reward model) scores both, the
higher-scoring one becomes *chosen* and the other *rejected*, and the DPO loss is applied to
that fresh pair at once. Offline DPO learns from a fixed set of pairs written by some other
model; online DPO's pairs always come from the model being trained (Guo et al., 2024).

The script takes `ScriptArguments` plus `--reward_funcs`, `OnlineDPOConfig` (which holds
`--reward_model_path`), `ModelConfig` and `--config recipe.yaml`; `--dataset_name` may also be
a local folder or `.json`/`.jsonl` file. TRL 1.16 ships no `trl online-dpo` command: these are
the flags such a command would take. Reward functions are loaded only from the dotted import
paths you pass; nothing in the dataset is executed.

```bash { .no-run }
# Tiny CPU run on the offline fixture (about a minute, no network):
annotated-trl tiny tiny
python annotated_examples/online_dpo_training.py \
    --config annotated_examples/recipes/online_dpo_tiny.yaml

# One GPU: Qwen2-0.5B-Instruct on UltraFeedback prompts, scored by a 0.5B reward model:
python annotated_examples/online_dpo_training.py --config annotated_examples/recipes/online_dpo.yaml

# ... generating with vLLM inside the training process (shares the GPU); TRL's `vllm` extra
# installs a vLLM that TRL 1.16 supports (>= 0.22.0, <= 0.31.0):
pip install "trl[vllm]==1.16.0"
python annotated_examples/online_dpo_training.py \
    --config annotated_examples/recipes/online_dpo.yaml --use_vllm --vllm_mode colocate

# Eight GPUs: one serves vLLM, seven train (server mode).
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2-0.5B-Instruct
CUDA_VISIBLE_DEVICES=1,2,3,4,5,6,7 accelerate launch --num_processes 7 \
    annotated_examples/online_dpo_training.py --config annotated_examples/recipes/online_dpo.yaml \
    --use_vllm --vllm_mode server

# LoRA: train adapters; the reference is the same network with its adapters switched off.
# (Ten times the full fine-tuning learning rate is usual for LoRA.)
python annotated_examples/online_dpo_training.py \
    --config annotated_examples/recipes/online_dpo.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear \
    --learning_rate 5e-6

# Your own reward functions next to a reward model, weighted (the reward model first);
# my_rewards.py in the current folder defines brevity(completions, **kwargs):
python annotated_examples/online_dpo_training.py \
    --config annotated_examples/recipes/online_dpo_tiny.yaml --reward_model_path tiny/reward \
    --reward_funcs annotated_trl.toy_task.arithmetic_reward my_rewards.brevity \
    --reward_weights 1.0 2.0 0.5
```
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config
from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, default_reward_func, load_rewards

# ## 1. Arguments
#
# `OnlineDPOConfig` says how to train (it extends `transformers.TrainingArguments`),
# `ModelConfig` which model, and the script arguments which data. The reward comes from two
# places:
#
# - `--reward_funcs a.b.f c.d.g`: dotted import paths of Python functions (a script argument);
# - `--reward_model_path`: a sequence classifier with one output (`num_labels=1`), e.g. one
#   trained by the [reward example](reward_training.py). This field belongs to
#   `OnlineDPOConfig`, but the trainer never reads it: the script passes it on.
#
# With neither, a dataset with an `answer` column gets the toy task's `arithmetic_reward`
# (a `solution` column gets TRL's `accuracy_reward`). The defaults are a real run:
# Qwen2-0.5B-Instruct on the UltraFeedback prompts, the example of TRL's Online DPO
# documentation; its recipe adds the reward model.


@dataclass
class OnlineDPOScriptArguments(ScriptArguments):
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )


parser = TrlParser((OnlineDPOScriptArguments, OnlineDPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct", dataset_name="trl-lib/ultrafeedback-prompt"
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Conversational prompts are rendered with the tokenizer's chat template (generation prompt
# added), so a template must exist before the data is checked. The policy and the reward
# model should share that template, or the reward model scores text laid out unlike its
# training data.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Rewards
#
# A reward function takes the batch and returns one float per completion (`None` abstains):
#
# ```python
# def reward(prompts, completions, completion_ids, answer, **kwargs) -> list[float]: ...
# ```
#
# Every extra dataset column arrives as a keyword argument, one value per completion; so does
# `trainer_state`. Several rewards add up, $r(x, y) = \sum_k w_k\, r_k(x, y)$, with
# `--reward_weights` $w_k$ (default all 1; the reward model first). Online DPO only *compares*
# the two scores of a prompt: their scale does not enter the loss, only which one is larger.
# Named rewards are imported now, before any data or model is loaded: a typo costs one line.

try:
    reward_funcs = load_rewards(
        script_args.reward_funcs, training_args.reward_model_path, training_args.reward_weights
    )
except RewardError as error:
    sys.exit(f"error: {error}")

# ## 4. Data
#
# Online DPO needs prompts only: it writes its own pairs. A row is `{"prompt": "..."}` or
# `{"prompt": [{"role": "user", "content": "..."}]}`, plus any extra columns (passed to the
# reward functions, never shown to the model). A preference dataset is refused: its
# `chosen`/`rejected` columns would be silently ignored, which is offline DPO's job
# ([DPO example](dpo_training.py)). Every row is checked before any model is loaded.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="online_dpo",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")

train_dataset = dataset[script_args.dataset_train_split]
# Evaluation passes over the whole test split at every `eval_steps` unless `--eval_max_samples N`
# picks N of its rows (drawn with `--seed`, the same rows every time).
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

if not reward_funcs:
    try:
        default = default_reward_func(train_dataset.column_names, "--reward_model_path")
        reward_funcs = load_rewards([default], None, training_args.reward_weights)
    except RewardError as error:
        sys.exit(f"error: {error}")

# ## 5. Model
#
# The trainer loads the policy from its name with `model_init_kwargs`. Without LoRA it then
# makes a frozen copy, the reference $\pi_\text{ref}$; with LoRA there is no copy: the reference
# is the same network with its adapters disabled. `OnlineDPOTrainer` takes no
# `quantization_config` argument: for QLoRA (`--load_in_4bit`) it travels in `model_init_kwargs`.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    "quantization_config": get_quantization_config(model_args),
    **(training_args.model_init_kwargs or {}),
}

# ## 6. Trainer
#
# One training step, for a batch of $B$ prompts $x$:
#
# 1. sample two completions per prompt from the current policy, $y^{(1)}, y^{(2)} \sim
#    \pi_\theta(\cdot \mid x)$ (`temperature`, `max_new_tokens`; HF `generate`, or vLLM);
# 2. score both, $r^{(i)} = r(x, y^{(i)})$, minus `missing_eos_penalty` for a completion
#    that hit `max_new_tokens` without an end-of-sequence token;
# 3. chosen $y_w$ = the higher score, rejected $y_l$ = the other (a tie keeps the first);
# 4. minimise the DPO loss on that pair, with $\sigma$ the logistic function:
#
# $$\ell = -\log \sigma\Big(\beta \Big[\log\frac{\pi_\theta(y_w \mid x)}{\pi_\text{ref}(y_w \mid x)}
#   - \log\frac{\pi_\theta(y_l \mid x)}{\pi_\text{ref}(y_l \mid x)}\Big]\Big)$$
#
# (`loss_type: ipo` swaps in a squared loss). Nothing is reused: each pair serves one
# gradient step and is thrown away.

trainer = OnlineDPOTrainer(
    model=model_args.model_name_or_path,
    reward_funcs=reward_funcs,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# ## 7. Train
#
# Logged every `logging_steps`: the external reward, `objective/scores` (mean over both
# completions) and `objective/scores_margin` (chosen minus rejected, $\ge 0$ without ties);
# DPO's implicit reward $\beta \log(\pi_\theta / \pi_\text{ref})$ summed over tokens, as
# `rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`;
# `logps/chosen` and `logps/rejected`; `objective/kl` (sequence log-ratio to the reference,
# 0 at the start), `objective/entropy`, `objective/non_score_reward` $= -\beta\,$KL,
# `objective/rlhf_reward` = score + non-score reward; `val/contain_eos_token` and `beta`.
# The loss starts at $\ln 2 \approx 0.693$ (policy = reference) and is not monotone: each
# step judges new pairs.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 8. Save
#
# `save_model` writes the weights (or the LoRA adapter) and the tokenizer; `save_state` writes
# `trainer_state.json` with the full log history. `end()` closes trackers and the process group.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
