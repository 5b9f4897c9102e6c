r"""SDPO (Self-Distillation Policy Optimization) with TRL's experimental `SDPOTrainer`

Reinforcement learning from a verifiable reward, where the learning signal is not an advantage
but the model's own predictions *after it has seen a correct answer*. Each step samples a group
of $G$ completions per prompt and scores them, as GRPO does. Then, for every completion whose
group holds a successful sibling (reward at least `success_reward_threshold`), the trainer
writes a **teacher prompt**: the original question, that sibling's answer as "Correct solution",
and a request to solve the question again. The same completion is scored twice, token by token:

- the student, $\pi_\theta(\cdot \mid x, y_{\lt t})$, on the original prompt, with gradient;
- the teacher, $\pi_{\bar\theta}(\cdot \mid c, y_{\lt t})$, on the teacher prompt $c$, without
  gradient; by default $\bar\theta$ is an exponential moving average (EMA) of the student's weights.

The loss pulls the student towards the teacher on those tokens. Where the teacher, having read a
right answer, would have written a token differently, the student learns to write it
differently without that hint. Paper: Hübotter et al., *Reinforcement Learning via
Self-Distillation* (arXiv:2601.20802).

The script takes the flags of `SDPOConfig`, `ModelConfig`, `ScriptArguments` plus
`--reward_funcs`, and `--config recipe.yaml`; `--dataset_name` may also be a local folder or
`.json`/`.jsonl` file. TRL has no `trl sdpo` command: the trainer is experimental
(`trl.experimental.sdpo`). Reward functions are loaded only from the dotted import paths you
pass; nothing in the dataset is executed.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/sdpo_training.py --config annotated_examples/recipes/sdpo_tiny.yaml

# One GPU: Qwen2.5-0.5B-Instruct on DeepMath-103K, rewarded by math-verify:
pip install "trl[math-verify]==1.16.0"
python annotated_examples/sdpo_training.py --config annotated_examples/recipes/sdpo.yaml

# Several GPUs: groups are mined for successes across all processes.
accelerate launch --num_processes 8 annotated_examples/sdpo_training.py \
    --config annotated_examples/recipes/sdpo.yaml

# LoRA: the EMA teacher becomes a second adapter ("teacher") on the same base weights.
python annotated_examples/sdpo_training.py --config annotated_examples/recipes/sdpo.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear
```
"""

import sys
from dataclasses import dataclass, field
from pathlib import Path

from safetensors.torch import load_model, save_model
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config
from trl.experimental.sdpo import SDPOConfig, SDPOTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, default_reward_func, load_rewards

# ## 1. Arguments
#
# `SDPOConfig` says how to train (it extends `transformers.TrainingArguments`), `ModelConfig`
# which model, the script arguments which data and which rewards:
#
# - `--reward_funcs a.b.f c.d.g`: dotted import paths of Python functions, summed with
#   `--reward_weights`. SDPO needs a reward: it decides which rollouts count as successes.
#
# With no reward named, the dataset's columns decide: a `solution` column gets TRL's
# `accuracy_reward` (math-verify), an `answer` column the toy task's `arithmetic_reward`. Both
# are 0 or 1, so the default `success_reward_threshold` of 1.0 means "right".


@dataclass
class SDPOScriptArguments(ScriptArguments):
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )


parser = TrlParser((SDPOScriptArguments, SDPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="trl-lib/DeepMath-103K"
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to.
script_args, training_args, model_args = parse_or_exit(parser)

# The teacher server scores with vLLM; without it the flag would fail deep inside the trainer.
if training_args.use_teacher_server and not training_args.use_vllm:
    sys.exit("error: --use_teacher_server needs --use_vllm true --vllm_mode server")

# ## 2. Tokenizer
#
# SDPOTrainer pads prompts on the left itself before `generate`, and pads the teacher prompts on
# the left too, so any padding side works. The chat template renders both the prompt and the
# teacher prompt (a conversation whose last user turn is rewritten).

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
    padding_side="left",
)

# ## 3. Rewards
#
# A reward function takes the batch and returns one float per completion (or `None` to
# abstain, which counts as 0 in the sum):
#
# ```python
# def reward(prompts, completions, answer, **kwargs) -> list[float]: ...
# ```
#
# For conversational prompts `completions` are lists of messages, as in GRPO; every extra
# dataset column arrives as a keyword argument (here `answer`). The weighted sum
# $r = \sum_k w_k r_k$ is compared with `success_reward_threshold`: a completion at or above it
# can be a sibling's "correct solution".

try:
    reward_funcs = load_rewards(script_args.reward_funcs, None, training_args.reward_weights)
except RewardError as error:
    sys.exit(f"error: {error}")

# ## 4. Data
#
# Prompts only: SDPO writes its own completions. A row is `{"prompt": "..."}` or
# `{"prompt": [{"role": "user", "content": "..."}]}`, plus extra columns for the rewards. A
# conversational prompt must end with a user turn: that turn is what the teacher prompt
# rewrites. An optional `privileged_context` column (text feedback on a failure, for example a
# compiler error) is used only with `--include_environment_feedback true`.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="sdpo",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")

train_dataset = dataset[script_args.dataset_train_split]
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

# The teacher prompt rewrites the last user turn: TRL refuses any other last turn, but only when
# it first builds a teacher prompt, after the first success. Check every row now instead.
for number, prompt in enumerate(train_dataset["prompt"], start=1):
    if isinstance(prompt, list) and prompt and prompt[-1].get("role") != "user":
        sys.exit(
            f"error: {script_args.dataset_train_split} row {number}: the prompt ends with a "
            f"{prompt[-1].get('role')!r} turn; SDPO rewrites the last user turn into the "
            "teacher prompt, so every conversational prompt must end with a user turn"
        )

if not reward_funcs:
    try:
        default = default_reward_func(train_dataset.column_names, model_flag=None)
        reward_funcs = load_rewards([default], None, training_args.reward_weights)
    except RewardError as error:
        sys.exit(f"error: {error}")

# ## 5. Model
#
# The trainer loads the model from its name with `model_init_kwargs`, so that it lands on the
# right device under `accelerate launch`. With the default `teacher_model_kind="ema"` it loads
# the same name a second time as the teacher: a frozen copy that follows the student by
#
# $$\bar\theta \leftarrow (1 - \eta)\,\bar\theta + \eta\,\theta$$
#
# after every `teacher_sync_steps` optimiser steps, $\eta$ = `teacher_update_rate` (0.05). With
# LoRA the teacher is a second adapter on the same base instead; `"base"` keeps the initial
# weights, `"live"` uses the student itself (no copy).

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 6. Trainer
#
# One step, for a batch of $B$ prompts with $G$ = `num_generations` completions each:
#
# 1. sample the $G$ completions, score them, $r_i$;
# 2. for completion $i$, look for a sibling $j \ne i$ of its group with $r_j \ge$ threshold; the
#    first one found becomes the demonstration in $i$'s teacher prompt
#    `"{prompt}\nCorrect solution:\n\n{y_j}\n\n\n\nCorrectly solve the original question.\n"`
#    ($m_i = 1$); with none, $m_i = 0$ and $i$ adds nothing to the loss;
# 3. the loss $\ell_{i,t}$ below on each completion token, averaged over the tokens of each
#    completion with $m_i = 1$, then over the batch.
#
# With the default `distillation_mode="sampled_token"`,
#
# $$\begin{aligned}
#   \ell_{i,t} &= \operatorname{sg}\!\big[\log \pi_\theta(y_{i,t})
#     - \log \pi_{\bar\theta}(y_{i,t} \mid c_i)\big]\, \log \pi_\theta(y_{i,t}),
#   \end{aligned}$$
#
# whose gradient is that of the reverse KL $\mathrm{KL}(\pi_\theta \,\|\, \pi_{\bar\theta})$
# estimated on the sampled token (sg: no gradient).

trainer = SDPOTrainer(
    model=model_args.model_name_or_path,
    reward_funcs=reward_funcs,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# TRL saves the student only. A resumed run would load the EMA teacher from `model_name_or_path`
# again and restart its average from the initial weights: another run than the one that was
# interrupted. So the script also writes the teacher into each checkpoint folder, before
# `trainer_state.json` (the file that marks a checkpoint complete), and reads it back on resume;
# the kill-and-resume test checks that both runs log the same numbers. With LoRA the teacher is
# an adapter whose average lives in a TRL callback: it is not restored.

TEACHER_FILE = "ema_teacher.safetensors"
saves_teacher = (
    training_args.teacher_model_kind == "ema" and trainer.teacher_model is not trainer.model
)


def save_rng_state_and_teacher(output_dir, save_rng_state=trainer._save_rng_state):
    save_rng_state(output_dir)  # the Trainer's last file of a checkpoint before its state
    if trainer.args.should_save:
        teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
        save_model(teacher, str(Path(output_dir) / TEACHER_FILE))


# parse_or_exit has already turned `--resume_from_checkpoint true` into the newest checkpoint.
resume = training_args.resume_from_checkpoint
if saves_teacher:
    trainer._save_rng_state = save_rng_state_and_teacher
    if resume and (Path(resume) / TEACHER_FILE).exists():
        teacher = trainer.accelerator.unwrap_model(trainer.teacher_model)
        load_model(teacher, Path(resume) / TEACHER_FILE)

# ## 7. Train
#
# Logged every `logging_steps` (names start with `self_distillation/`): `reward_mean` (it should
# rise), `success_group_fraction` (groups with at least one success: the share of prompts that
# teach anything), `reprompt_sample_fraction` (completions with a teacher prompt), and
# `distillation_loss`. In the default mode the latter is the mean of $\ell_{i,t}$ above, not a
# KL: it is negative whenever the student is surer of its token than the teacher. When no group
# has a success, the loss is 0 and the trainer warns; on a hard task, start from a model that
# sometimes succeeds.

trainer.train(resume_from_checkpoint=resume)

# ## 8. Save
#
# `save_model` writes the student's weights and the tokenizer (not the teacher); `save_state`
# writes `trainer_state.json` with the full log history. `end()` closes trackers and the process
# group.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
