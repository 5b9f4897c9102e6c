r"""XPO with our `XPOTrainer` (TRL removed its own in 1.14.0)

Exploratory Preference Optimization (Xie et al., 2024): online DPO with a push to explore. Each
step the policy writes one completion and the frozen reference writes another; a reward picks
the better one as *chosen*; the loss is DPO's on that pair plus $\alpha \log \pi_\theta$ of the
reference's completion. Minimising that extra term lowers the probability of what the
reference would say, which moves the policy towards responses the data has not covered yet:
the paper's optimism, which makes exploration provably sample-efficient.

`annotated_trl.trainers.xpo` keeps trl 1.12.0's names, so a 1.12 script migrates by one import
line; tests/test_xpo_parity.py checks that both log the same numbers at every step (sigmoid and
IPO losses). One deliberate difference: `missing_eos_penalty` looks for EOS in the completion
only (trl 1.12 also searched the prompt, so with chat prompts the penalty never applied).

The script takes `ScriptArguments` plus `--reward_funcs`, `XPOConfig` (which holds
`--reward_model_path`, `--alpha`), `ModelConfig` and `--config recipe.yaml`; `--dataset_name`
may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (a minute or two on 2 CPU cores, no network):
annotated-trl tiny tiny
python annotated_examples/xpo_training.py --config annotated_examples/recipes/xpo_tiny.yaml

# One GPU: Qwen2-0.5B-Instruct on UltraFeedback prompts, scored by a 0.5B reward model:
python annotated_examples/xpo_training.py --config annotated_examples/recipes/xpo.yaml

# Eight GPUs, data parallel:
accelerate launch --num_processes 8 annotated_examples/xpo_training.py \
    --config annotated_examples/recipes/xpo.yaml

# LoRA: train adapters; the reference is the same network with its adapters switched off.
python annotated_examples/xpo_training.py --config annotated_examples/recipes/xpo.yaml \
    --use_peft --lora_r 32 --lora_alpha 64 --lora_target_modules all-linear \
    --learning_rate 5e-6

# IPO's squared loss instead of DPO's, and an exploration weight per epoch:
python annotated_examples/xpo_training.py --config annotated_examples/recipes/xpo.yaml \
    --loss_type ipo --alpha 1e-5 1e-6
```
"""

import sys
from dataclasses import dataclass, field

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.rewards import RewardError, default_reward_func, load_rewards
from annotated_trl.trainers.xpo import XPOConfig, XPOTrainer

# ## 1. Arguments
#
# `XPOConfig` is `OnlineDPOConfig` plus `alpha`, the weight of the exploration term. The
# reward comes from `--reward_model_path` (a sequence classifier with one output that shares
# the policy's tokenizer: it reads the policy's token ids) and/or `--reward_funcs a.b.f`
# (dotted import paths). With neither, a dataset with an `answer`
# column gets the toy task's `arithmetic_reward`. The defaults are a real run.


@dataclass
class XPOScriptArguments(ScriptArguments):
    reward_funcs: list[str] | None = field(
        default=None,
        metadata={"help": "Reward functions, as dotted import paths (package.module.function)."},
    )


parser = TrlParser((XPOScriptArguments, XPOConfig, ModelConfig))
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
# The reward only *ranks* the two completions of a prompt: $r = \sum_k w_k r_k$
# (`--reward_weights`, the reward model first) minus `missing_eos_penalty` for a completion cut
# off without EOS; the policy's completion is chosen when $r(x, y) \ge r(x, \tilde y)$. Named
# rewards are imported now: a typo costs one line.

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
        method="xpo",
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
# 1. the policy samples $y \sim \pi_\theta(\cdot \mid x)$, the reference $\tilde y \sim
#    \pi_\text{ref}(\cdot \mid x)$;
# 2. chosen $y_w$ = the policy's when $r(x, y) \ge r(x, \tilde y)$, else the reference's;
#    rejected $y_l$ = the other;
# 3. minimise, with $h = \log\frac{\pi_\theta(y_w)}{\pi_\text{ref}(y_w)} -
#    \log\frac{\pi_\theta(y_l)}{\pi_\text{ref}(y_l)}$,
#
# $$\ell = -\log \sigma(\beta h) + \alpha \log \pi_\theta(\tilde y \mid x)$$
#
# (`loss_type: ipo` uses $(h - \frac{1}{2\beta})^2$ for the first term). The second term is
# the exploration bonus: it is always applied to the reference's completion, chosen or not.

trainer = XPOTrainer(
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
# Logged every `logging_steps`, under trl 1.12's names: `loss/dpo` and `loss/xpo` (the two
# terms; `loss/xpo` $= \alpha \log \pi_\theta(\tilde y)$ is negative), `objective/model_scores`,
# `objective/ref_scores` and `objective/scores_margin` (policy minus reference: rises as the
# policy overtakes the reference), DPO's implicit rewards `rewards/chosen`, `rewards/rejected`,
# `rewards/margins`, `rewards/accuracies`, `logps/chosen` and `logps/rejected` (policy plus
# reference log-probs, as 1.12 logged them), `objective/kl`, `objective/entropy`,
# `val/model_contain_eos_token`, `val/ref_contain_eos_token`, `alpha`, `beta`.

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
