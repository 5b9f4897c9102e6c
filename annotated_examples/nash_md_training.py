r"""Nash-MD with our `NashMDTrainer` (TRL removed its own in 1.14.0)

Nash learning from human feedback (Munos et al., 2023): instead of maximising a reward, look
for the policy that no other policy beats more often than not, the Nash equilibrium of a
preference game. Each step the policy writes one completion, a *mixture* of the policy and the
frozen reference writes another, a reward decides how likely the first is to be preferred,
and the policy takes one mirror-descent step: towards completions that win, and towards the
reference by a KL penalty.

`annotated_trl.trainers.nash_md` keeps trl 1.12.0's names, so a 1.12 script migrates by one
import line; tests/test_nash_md_parity.py checks that both log the same numbers at every step.
One deliberate difference: `missing_eos_penalty` looks for EOS in the completion only (trl 1.12
also searched the prompt, so with chat prompts the penalty never applied).

The script takes `ScriptArguments` plus `--reward_funcs`, `NashMDConfig` (which holds
`--reward_model_path`, `--mixture_coef`), `ModelConfig` and `--config recipe.yaml`;
`--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (a minute or two on 2 CPU cores, no network):
annotated-trl tiny tiny
python annotated_examples/nash_md_training.py --config annotated_examples/recipes/nash_md_tiny.yaml

# One GPU: Qwen2-0.5B-Instruct on UltraFeedback prompts, scored by a 0.5B reward model:
python annotated_examples/nash_md_training.py --config annotated_examples/recipes/nash_md.yaml

# Eight GPUs, data parallel:
accelerate launch --num_processes 8 annotated_examples/nash_md_training.py \
    --config annotated_examples/recipes/nash_md.yaml

# LoRA: train adapters; the reference is the same network with its adapters switched off.
python annotated_examples/nash_md_training.py --config annotated_examples/recipes/nash_md.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear \
    --learning_rate 5e-6

# A mixture that moves towards the policy epoch by epoch (one value per epoch):
python annotated_examples/nash_md_training.py --config annotated_examples/recipes/nash_md.yaml \
    --mixture_coef 0.5 0.25 0.1
```
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, default_reward_func, load_rewards
from annotated_trl.trainers.nash_md import NashMDConfig, NashMDTrainer

# ## 1. Arguments
#
# `NashMDConfig` is `OnlineDPOConfig` plus `mixture_coef` $\beta_m$, the reference's share of
# the opponent's sampler. The reward comes from `--reward_model_path` (a sequence classifier
# with one output that shares the policy's tokenizer: it reads the policy's token ids) and/or
# `--reward_funcs a.b.f` (dotted import paths). With neither, a dataset with an `answer`
# column gets the toy task's `arithmetic_reward`. The defaults are a real run.


@dataclass
class NashMDScriptArguments(ScriptArguments):
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )


parser = TrlParser((NashMDScriptArguments, NashMDConfig, ModelConfig))
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
# added), so a template must exist before the data is checked.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Rewards
#
# Nash-MD needs a *preference probability* $P(y \succ y' \mid x)$, the chance that $y$ is
# preferred to $y'$. From scores it is Bradley-Terry's,
#
# $$P(y \succ y' \mid x) = \sigma\big(r(x, y) - r(x, y')\big),$$
#
# with $r = \sum_k w_k r_k$ (`--reward_weights`, the reward model first) minus
# `missing_eos_penalty` for a completion cut off without EOS. Unlike Online DPO, the *scale*
# of $r$ matters here: a difference of 0.01 gives $P \approx 0.5$ (no signal), a difference of
# 5 gives $P \approx 1$. Named rewards are imported now: a typo costs one line.

try:
    reward_funcs = load_rewards(
        script_args.reward_funcs, training_args.reward_model_path, training_args.reward_weights
    )
except RewardError as error:
    sys.exit(f"error: {error}")

# ## 4. Data
#
# Prompts only: `{"prompt": "..."}` or `{"prompt": [{"role": "user", "content": "..."}]}`, plus
# any extra columns (passed to reward functions). Preference pairs are refused: their
# `chosen`/`rejected` would be silently ignored. Every row is checked before a model loads.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="nash_md",
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
# The trainer loads the policy by name with `model_init_kwargs`, then makes a frozen copy, the
# reference $\pi_\text{ref}$ (with LoRA: the same network, adapters off).

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    "quantization_config": get_quantization_config(model_args),
    **(training_args.model_init_kwargs or {}),
}

# ## 6. Trainer
#
# One step, for a batch of prompts $x$:
#
# 1. the policy samples $y \sim \pi_\theta(\cdot \mid x)$; the opponent samples $y'$ from the
#    geometric mixture, token by token,
#    $\pi_\text{mix}(\cdot) \propto \pi_\theta(\cdot)^{1-\beta_m}\,\pi_\text{ref}(\cdot)^{\beta_m}$;
# 2. $P = \sigma(r(x, y) - r(x, y'))$;
# 3. loss on the policy's sample only, with $\operatorname{sg}$ stop-gradient:
#
# $$\begin{aligned}
#   \ell &= \beta \sum_t \operatorname{sg}\Big(\log\frac{\pi_\theta(y_t)}{\pi_\text{ref}(y_t)}\Big)
#   \log \pi_\theta(y_t) \\
#   &\quad - \big(P - \tfrac12\big) \log \pi_\theta(y \mid x)
#   \end{aligned}$$
#
# whose gradient is a REINFORCE estimate of $\nabla\big[\beta\,\mathrm{KL}(\pi_\theta \Vert
# \pi_\text{ref}) - P(\pi_\theta \succ \pi_\text{mix})\big]$: win against the mixture, stay
# near the reference.

trainer = NashMDTrainer(
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
# Logged every `logging_steps`, under trl 1.12's names: `rewards/probabilities` (mean $P$; above
# 0.5 when the policy beats the mixture), `rewards/chosen` and `rewards/rejected` (mean score of
# the policy's and the mixture's completions), `loss/score` ($(P-\frac12)\log\pi_\theta(y)$),
# `loss/kl` (sequence log-ratio to the reference, 0 at the start), `logps/chosen` and
# `logps/rejected` ($\log \pi_\theta(y)$ and $\log \pi_\text{ref}(y)$ of the *policy's* sample),
# `rewards/margins` (their difference), `rewards/accuracies` (fraction where it is positive),
# `objective/entropy`, `val/model_contain_eos_token`, `val/ref_contain_eos_token`, `beta`,
# `mixture_coef`.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 8. Save
#
# `save_model` writes the weights (or the LoRA adapter) and the tokenizer; `save_state` the
# log history in `trainer_state.json`.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
