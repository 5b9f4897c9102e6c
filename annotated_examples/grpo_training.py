r"""Group Relative Policy Optimization (GRPO) with TRL's `GRPOTrainer`

Reinforcement learning from a verifiable reward, without a value model. For each prompt the
policy samples a *group* of completions, a reward function scores them, and each completion's
advantage is its reward compared with the others of its group. The policy is then pushed towards
the completions that beat their siblings, with PPO's clipped surrogate keeping each update small.

The script takes the same flags as `trl grpo` — `ScriptArguments` plus `--reward_funcs` and
`--reward_model_name_or_path`, `GRPOConfig`, `ModelConfig` and `--config recipe.yaml` — and
`--dataset_name` may also be a local folder or `.json`/`.jsonl` file. Reward functions are
loaded only from the dotted import paths you pass; nothing in the dataset is executed.

```bash { .no-run }
# Tiny CPU run on the offline fixture (about a minute, no network):
annotated-trl tiny tiny
python annotated_examples/grpo_training.py --config annotated_examples/recipes/grpo_tiny.yaml

# One GPU: Qwen2.5-0.5B-Instruct on DeepMath-103K, rewarded by trl.rewards.accuracy_reward
# (it needs math-verify), generating with vLLM inside the training process. TRL's extras pin
# what TRL 1.16 supports (its `vllm` extra: vLLM >= 0.22.0, <= 0.31.0):
pip install "trl[math-verify,vllm]==1.16.0"
python annotated_examples/grpo_training.py --config annotated_examples/recipes/grpo.yaml \
    --use_vllm --vllm_mode colocate

# Eight GPUs: one serves vLLM, seven train (server mode).
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct
CUDA_VISIBLE_DEVICES=1,2,3,4,5,6,7 accelerate launch --num_processes 7 \
    annotated_examples/grpo_training.py --config annotated_examples/recipes/grpo.yaml \
    --use_vllm --vllm_mode server

# LoRA: train small adapters instead of all weights (a larger learning rate is usual):
python annotated_examples/grpo_training.py --config annotated_examples/recipes/grpo.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear \
    --learning_rate 1e-5

# Your own reward functions, weighted, next to a reward model:
python annotated_examples/grpo_training.py --config annotated_examples/recipes/grpo_tiny.yaml \
    --reward_model_name_or_path tiny/reward \
    --reward_funcs annotated_trl.toy_task.arithmetic_reward --reward_weights 0.1 1.0
```
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoProcessor
from trl import (
    GRPOConfig,
    GRPOTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, default_reward_func, load_rewards

# ## 1. Arguments
#
# `GRPOConfig` says how to train (it extends `transformers.TrainingArguments`), `ModelConfig`
# which model, and the script arguments which data and which rewards, exactly as `trl grpo`:
#
# - `--reward_funcs a.b.f c.d.g`: dotted import paths of Python functions;
# - `--reward_model_name_or_path`: a sequence classifier with one output (`num_labels=1`), e.g. a
#   model trained by the [reward example](reward_training.py).
#
# With neither, the reward follows from the dataset: a `solution` column gets TRL's
# `accuracy_reward` (math answers, checked with math-verify), an `answer` column the toy task's
# `arithmetic_reward`. The defaults are a real run: Qwen2.5-0.5B-Instruct on DeepMath-103K, the
# example in `GRPOTrainer`'s own docstring.


@dataclass
class GRPOScriptArguments(ScriptArguments):
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )
    reward_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "A reward model (sequence classifier, num_labels=1): Hub id or folder."},
    )


parser = TrlParser((GRPOScriptArguments, GRPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="trl-lib/DeepMath-103K"
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# The prompts of a conversational dataset are rendered with the tokenizer's chat template (with
# the generation prompt added), so a template must exist before anything else is checked.

# `AutoProcessor` returns the tokenizer for a text model; for a vision-language model (a folder
# with a processor) it returns the processor, image processor and tokenizer in one, and the
# trainer then takes rows with an `images` column (see the guide "Vision-language models").

tokenizer = AutoProcessor.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Rewards
#
# A reward function takes the batch and returns one float per completion (or `None` to abstain):
#
# ```python
# def reward(prompts, completions, completion_ids, answer, **kwargs) -> list[float]: ...
# ```
#
# `completions` are strings, or lists of messages for conversational data. Every extra dataset
# column arrives as a keyword argument with one value per completion (here `answer`); so do
# `trainer_state` and two logging hooks, hence the `**kwargs`. Several rewards add up:
#
# $$r(x, y) = \sum_k w_k\, r_k(x, y),$$
#
# with `--reward_weights` $w_k$ (default all 1). Each $r_k$ is logged as
# `rewards/<name>/mean`.

# Named rewards are imported here, before any data or model is loaded, so that a typo costs one
# line and a second.

try:
    reward_funcs = load_rewards(
        script_args.reward_funcs,
        script_args.reward_model_name_or_path,
        training_args.reward_weights,
    )
except RewardError as error:
    sys.exit(f"error: {error}")

# ## 4. Data
#
# GRPO needs prompts only: it writes its own completions. A row is
# `{"prompt": "..."}` or `{"prompt": [{"role": "user", "content": "..."}]}`, plus any number
# of extra columns. The extra columns are not shown to the model; they travel with the
# prompt to the reward functions (above). Every row is checked before any model is loaded; a
# bad file costs one line naming the file and the row, and nothing is written. Conversational
# prompts need a chat template in the tokenizer.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="grpo",
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

# With no reward named, the dataset's columns pick the default (see section 1).
if not reward_funcs:
    try:
        default = default_reward_func(train_dataset.column_names)
        reward_funcs = load_rewards([default], None, training_args.reward_weights)
    except RewardError as error:
        sys.exit(f"error: {error}")

# ## 5. Model
#
# The trainer loads the model from its name with `model_init_kwargs`, so that it lands on the
# right device under `accelerate launch` and can be quantised for QLoRA. With the default
# `beta = 0` there is no KL term and *no reference model is loaded at all*: GRPO then holds one
# copy of the weights, plus vLLM's when it generates.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 6. Trainer
#
# One training step, for a batch of prompts $x$:
#
# 1. sample $G$ = `num_generations` completions $y_1, \dots, y_G$ per prompt;
# 2. score them, $r_i = r(x, y_i)$, and centre each reward on its group:
#    $A_i = (r_i - \operatorname{mean}_j r_j) / \operatorname{std}_j r_j$ (`scale_rewards`
#    chooses the std: the group's, the batch's, or none);
# 3. minimise the clipped surrogate, token by token, with
#    $\rho_{i,t} = \pi_\theta(y_{i,t} \mid x, y_{i,<t}) / \pi_{\theta_\text{old}}(\cdot)$:
#
# $$\begin{aligned}
#   \ell_{i,t} &= -\min\big(\rho_{i,t} A_i,\;
#   \operatorname{clip}(\rho_{i,t}, 1 - \epsilon, 1 + \epsilon_\text{high}) A_i\big) \\
#   &\quad + \beta\, \mathrm{KL}_{i,t},
#   \end{aligned}$$
#
# averaged as `loss_type` says (default `dapo`: over all completion tokens of the batch).
# `num_generations` must divide the generation batch, `per_device_train_batch_size` ×
# processes × `steps_per_generation` (which defaults to `gradient_accumulation_steps`): a
# group is never split between two generation rounds.

trainer = GRPOTrainer(
    model=model_args.model_name_or_path,
    reward_funcs=reward_funcs,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
    quantization_config=get_quantization_config(model_args),
)

# ## 7. Train
#
# Logged every `logging_steps`: `reward` and `reward_std` (of the summed reward over all
# completions), `rewards/<name>/mean`, `frac_reward_zero_std` (groups whose completions all
# scored the same: they teach nothing), `completions/mean_length` and `completions/clipped_ratio`
# (completions cut at `max_completion_length`), `clip_ratio/*` (tokens where the clip was
# active), `entropy`, and `kl` when `beta > 0`. The `loss` is often ≈ 0: on the first update of
# a batch $\rho = 1$ and the group-centred advantages sum to zero, yet the gradient is not zero.

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
