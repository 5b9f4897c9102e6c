r"""A*-PO (Optimal Advantage Regression) with TRL's experimental `A2POTrainer`

Reinforcement learning from a verifiable reward in two stages. **Stage 1**, once, before the
first step: the frozen reference policy answers every training prompt $N$ times, and the
rewards give an estimate of the best value reachable near the reference,
$V^\star(x) = \beta_1 \log \frac{1}{N}\sum_j e^{r(x, y_j)/\beta_1}$. **Stage 2**, every step: the
policy answers each prompt *once*, and a least-squares loss pulls its implicit reward
$\beta_2 \log \frac{\pi_\theta(y \mid x)}{\pi_\text{ref}(y \mid x)}$ towards the optimal advantage
$r(x, y) - V^\star(x)$. No group of samples per prompt, no value model, no clipping: one
generation per prompt per step, which is where the method saves time against GRPO.

The script takes the flags of `A2POConfig`, `ModelConfig`, `ScriptArguments` plus
`--reward_funcs` and `--train_max_samples`, and `--config recipe.yaml`; `--dataset_name` may
also be a local folder or `.json`/`.jsonl` file. TRL has no `trl a2po` command: the trainer is
experimental (`trl.experimental.a2po`). Reward functions are loaded only from the dotted import
paths you pass; nothing in the dataset is executed.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/a2po_training.py --config annotated_examples/recipes/a2po_tiny.yaml

# One GPU: Qwen2.5-0.5B-Instruct on 4,000 DeepMath-103K prompts, rewarded by math-verify:
pip install "trl[math-verify]==1.16.0"
python annotated_examples/a2po_training.py --config annotated_examples/recipes/a2po.yaml

# Several GPUs: each estimates V* for its share of the prompts, then trains on its own batches.
accelerate launch --num_processes 8 annotated_examples/a2po_training.py \
    --config annotated_examples/recipes/a2po.yaml
```

A2POTrainer generates with `model.generate` only (no vLLM) and takes no `peft_config`: this
script refuses `--use_peft` and 4/8-bit loading, which would otherwise be silently ignored.
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser
from trl.experimental.a2po import A2POConfig, A2POTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, default_reward_func, load_rewards

# ## 1. Arguments
#
# `A2POConfig` says how to train (it extends `transformers.TrainingArguments`), `ModelConfig`
# which model, the script arguments which data and which rewards:
#
# - `--reward_funcs a.b.f c.d.g`: dotted import paths of Python functions. A2POTrainer calls
#   each one itself; it takes no reward model.
# - `--train_max_samples N`: train on N prompts of the train split, drawn with `--seed`.
#   Stage 1 samples `num_value_samples` answers for *every* training prompt before the first
#   step, so its cost grows with the dataset, not with `max_steps`.
#
# With no reward named, the dataset's columns decide: a `solution` column gets math-verify's
# accuracy (`annotated_trl.rewards.text_accuracy_reward`), an `answer` column the toy task's
# `arithmetic_reward`. Both are 0 or 1, as A*-PO assumes.


@dataclass
class A2POScriptArguments(ScriptArguments):
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )
    train_max_samples: int | None = field(
        default=None,
        metadata={
            "help": "Train on this many prompts of the train split, drawn with --seed. "
            "Unset: all of them (stage 1 samples every one num_value_samples times)."
        },
    )


parser = TrlParser((A2POScriptArguments, A2POConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct", dataset_name="trl-lib/DeepMath-103K"
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to.
script_args, training_args, model_args = parse_or_exit(parser)

# The trainer has no `peft_config` and no quantisation: refuse rather than train all weights
# while the user believes only adapters train.
if model_args.use_peft or model_args.load_in_4bit or model_args.load_in_8bit:
    sys.exit(
        "error: A2POTrainer (TRL 1.16) trains all weights: it takes no LoRA or 4/8-bit "
        "quantisation; drop --use_peft / --load_in_4bit / --load_in_8bit"
    )
# TRL's accuracy_reward reads conversational completions; A2POTrainer passes text.
if "trl.rewards.accuracy_reward" in (script_args.reward_funcs or []):
    sys.exit(
        "error: trl.rewards.accuracy_reward expects completions as messages, and A2POTrainer "
        "passes text: use annotated_trl.rewards.text_accuracy_reward"
    )
if script_args.train_max_samples is not None and script_args.train_max_samples < 1:
    sys.exit(f"error: --train_max_samples {script_args.train_max_samples}: expected 1 or more")

# ## 2. Tokenizer
#
# A2POTrainer pads a batch of prompts and generates after it, so the padding must be on the
# left. It sets `padding_side="left"` only on a tokenizer it loads itself; one passed in, as
# here, is used as it is (the tiny fixture's pads on the right, like many chat models'), so
# the script asks for the left. Conversational prompts are rendered with the chat template.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
    padding_side="left",
)

# ## 3. Rewards
#
# A reward function takes the batch and returns one float per completion:
#
# ```python
# def reward(prompts, completions, answer, **kwargs) -> list[float]: ...
# ```
#
# Unlike GRPO's, `completions` are always strings (decoded text), even for conversational
# prompts, and there is no `None` for "abstain": every completion needs a number. Every extra
# dataset column arrives as a keyword argument (here `answer`). Several functions add up,
#
# $$r(x, y) = \sum_k w_k\, r_k(x, y),$$
#
# with `--reward_weights` $w_k$ (default all 1). A*-PO assumes the sum is 0 or 1: a prompt whose
# $N$ reference answers all score 0 is dropped (`filter_all_incorrect`), a test that only means
# "never solved" for such rewards.

try:
    reward_funcs = load_rewards(script_args.reward_funcs, None, training_args.reward_weights)
except RewardError as error:
    sys.exit(f"error: {error}")

# ## 4. Data
#
# Prompts only: A*-PO writes its own completions. A row is `{"prompt": "..."}` or
# `{"prompt": [{"role": "user", "content": "..."}]}`, plus extra columns that travel to the
# reward functions. Every row is checked before any model loads.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="a2po",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")

# `eval_subset` draws the same rows on every process, from `--seed`.
train_dataset = eval_subset(
    dataset[script_args.dataset_train_split], script_args.train_max_samples, training_args.seed
)
# Stage 1 estimates V* for the evaluation prompts too (stage 2 needs it to score them), so a
# large test split costs N samples per row before the first step; `--eval_max_samples N` keeps N.
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

if not reward_funcs:
    try:
        default = default_reward_func(train_dataset.column_names, model_flag=None)
    except RewardError as error:
        sys.exit(f"error: {error}")
    if default == "trl.rewards.accuracy_reward":  # the text-completion version of it
        default = "annotated_trl.rewards.text_accuracy_reward"
    try:
        reward_funcs = load_rewards([default], None, training_args.reward_weights)
    except RewardError as error:
        sys.exit(f"error: {error}")

# ## 5. Model
#
# The trainer loads the model from its name with `model_init_kwargs`, so that it lands on the
# right device under `accelerate launch`. It always keeps a frozen copy as the reference
# $\pi_\text{ref}$: stage 1 samples from it, and stage 2's implicit reward is measured against
# it. Two copies of the weights, but only the policy has gradients and optimiser state.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 6. Trainer
#
# **Stage 1** runs inside `train()`, before the first step, over the train (and eval) prompts in
# batches of `per_device_train_batch_size`: $N$ = `num_value_samples` answers per prompt from
# $\pi_\text{ref}$, at `temperature`, scored, and
#
# $$V^\star(x) = \beta_1 \log \frac{1}{N} \sum_{j=1}^{N} e^{r(x, y_j) / \beta_1},$$
#
# kept per prompt text; $\beta_1$ = `beta1` (default 0.5). Between the mean reward
# ($\beta_1 \to \infty$) and the best one ($\beta_1 \to 0$): a prompt solved once in 8 tries is
# worth more than 1/8. **Stage 2**, one step for a batch of $B$ prompts:
#
# 1. sample one completion $y_i$ per prompt from the current policy and score it, $r_i$;
# 2. compute $\log \pi_\text{ref}(y_i \mid x_i)$, a sum over the completion's tokens;
# 3. minimise, $\beta_2$ = `beta2` (default 0.001):
#
# $$\begin{aligned}
#   \mathcal{L} &= \frac{1}{B} \sum_{i=1}^{B} \big(\beta_2 \Delta_i - (r_i - V^\star(x_i))\big)^2,
#   \\
#   \Delta_i &= \log \frac{\pi_\theta(y_i \mid x_i)}{\pi_\text{ref}(y_i \mid x_i)}.
#   \end{aligned}$$

trainer = A2POTrainer(
    model=model_args.model_name_or_path,
    reward_funcs=reward_funcs,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
)

# ## 7. Train
#
# Logged every `logging_steps`: `reward` (mean reward of the sampled completions: it should
# rise), `v_star` (mean $V^\star$ of the batch's prompts: fixed by stage 1, it moves only with
# the prompts drawn), `advantage` (mean $r - V^\star$: negative at the start, it rises with the
# reward), `implicit_reward` (mean $\beta_2 \log \pi_\theta / \pi_\text{ref}$: 0 at the start,
# it follows the advantage) and the `loss`. On a resume, stage 1 runs again before the checkpoint
# is loaded: same seed, same reference, so the same $V^\star$.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 8. Save
#
# `save_model` writes the weights and the tokenizer; `save_state` writes `trainer_state.json`
# with the full log history. `end()` closes trackers and the process group.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
