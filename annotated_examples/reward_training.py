r"""Reward modelling with TRL's `RewardTrainer`

Train a scalar reward model $r_\phi(x, y)$ from human (or synthetic) preferences: for each prompt
$x$, a chosen completion $y_w$ and a rejected one $y_l$. The model is a language model with its
vocabulary head replaced by a linear "score" head that outputs one number per sequence, and it
learns to give the chosen completion the higher number. The trained model is what PPO-style RL
(RLOO, GRPO, Online DPO) calls to score the policy's samples.

The script takes the same flags as `trl reward` — `ScriptArguments`, `RewardConfig`,
`ModelConfig` and `--config recipe.yaml` — and `--dataset_name` may also be a local folder or
`.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/reward_training.py --config annotated_examples/recipes/reward_tiny.yaml

# One GPU, full fine-tuning of Qwen2.5-0.5B-Instruct on UltraFeedback (binarized):
python annotated_examples/reward_training.py --config annotated_examples/recipes/reward.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/reward_training.py \
    --config annotated_examples/recipes/reward.yaml

# LoRA: adapters on the body, the score head trained in full (task type SEQ_CLS, our default):
python annotated_examples/reward_training.py --config annotated_examples/recipes/reward.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 1e-4
```
"""

import sys

from transformers import AutoTokenizer
from trl import (
    ModelConfig,
    RewardConfig,
    RewardTrainer,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses, exactly those of `trl reward`: `ScriptArguments` says which data,
# `RewardConfig` how to train (it extends `transformers.TrainingArguments`), `ModelConfig` which
# model and whether to wrap it in LoRA. Every field is a command-line flag and a key in the
# `--config` YAML file; flags given on the command line win over the file.
#
# The defaults are a real run: Qwen2.5-0.5B-Instruct on UltraFeedback, binarized into
# chosen/rejected pairs. One default differs from `trl reward`: `lora_task_type`. `ModelConfig`
# defaults it to `"CAUSAL_LM"`, and with that task type peft cannot wrap a sequence-classification
# model (it looks for `prepare_inputs_for_generation` and fails with an `AttributeError`).
# `"SEQ_CLS"` is right for a reward model, and it also makes peft train the new `score` head in
# full (it adds `score` to `modules_to_save`); without that, the head would stay at its random
# initialisation.

parser = TrlParser((ScriptArguments, RewardConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
    dataset_name="trl-lib/ultrafeedback_binarized",
    lora_task_type="SEQ_CLS",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Loaded first because it decides how conversational pairs become text (its chat template) and
# which token is padding. The pad token matters more here than anywhere else: the reward is read
# at the last token that is *not* the pad token (section 5), so a tokenizer whose pad token is
# also its EOS token makes the model read the reward one token before the EOS.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Data
#
# A reward model trains on pairs, with the prompt stated apart or inside both completions:
#
# | format | a row |
# |---|---|
# | preference (explicit prompt) | `{"prompt": ..., "chosen": ..., "rejected": ...}` |
# | implicit preference | `{"chosen": ..., "rejected": ...}` (the prompt is the common start) |
#
# Each value is a string or a list of chat messages. With an explicit prompt, the trainer simply
# glues it in front of each completion: the reward model always sees whole sequences. An optional
# numeric `margin` column asks for $r(y_w) - r(y_l)$ to exceed that margin (section 5).
#
# Every row is checked before any model is loaded: one line names the file, the line and what
# was expected, and nothing is written to `--output_dir`. Prompt-only data (what GRPO trains on)
# is refused here: it has no preference to learn from.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="reward",
        tokenizer=None if training_args.chat_template_path else tokenizer,
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

# ## 4. Model
#
# We pass the model *name*; the trainer loads it with `AutoModelForSequenceClassification` and
# `num_labels=1`, whatever the checkpoint is. A causal LM checkpoint (like Qwen2.5-Instruct)
# keeps its transformer body, drops its vocabulary head, and gets a new `score` layer,
# $w^\top h$ with $w \in \mathbb{R}^{d}$ and no bias, initialised at random; TRL silences the
# "newly initialised" warning on purpose. Loading by name also gives the right placement under
# `accelerate launch` and applies quantisation for QLoRA (`--load_in_4bit`).

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 5. Trainer
#
# `RewardTrainer` appends EOS to plain-text completions, tokenises `prompt + chosen` and
# `prompt + rejected`, drops pairs longer than `max_length`, and stacks each batch as
# `[chosen_1 … chosen_B, rejected_1 … rejected_B]` so that one forward pass scores all $2B$
# sequences. The score head is applied at every position; transformers keeps the value at the
# rightmost token whose id is not the pad id. That number is the reward.
#
# The loss is the Bradley–Terry negative log-likelihood of the observed preference,
#
# $$\begin{aligned}
#   \mathcal{L}(\phi) &= -\frac{1}{B} \sum_{i=1}^{B} \log \sigma\big(r_\phi(x_i, y_{w,i})
#   - r_\phi(x_i, y_{l,i}) - \mu_i\big) \\
#   &\quad + \eta \, \frac{1}{B} \sum_{i=1}^{B}
#   \big(r_\phi(x_i, y_{w,i}) + r_\phi(x_i, y_{l,i})\big)^2,
#   \end{aligned}$$
#
# where $\mu_i$ is the row's `margin` (0 without the column) and $\eta$ is
# `--center_rewards_coefficient` (off by default; 0.01 is the value TRL recommends). The second
# term keeps rewards near zero: Bradley–Terry sees only differences, so without it the whole
# scale can drift.

trainer = RewardTrainer(
    model=model_args.model_name_or_path,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
    quantization_config=get_quantization_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`, for training and (with an `eval_` prefix) evaluation:
# `accuracy` (fraction of pairs with $r(y_w) > r(y_l)$: 0.5 is chance), `margin` (mean
# $r(y_w) - r(y_l)$, which should grow), `min_reward` / `mean_reward` / `max_reward` (over all
# $2B$ scores, which show drift: with centring, `mean_reward` stays near 0), `num_tokens`, and
# `loss` (starts near $\ln 2 \approx 0.693$, the loss of a model that cannot tell the two apart).
# `eval_accuracy` on held-out pairs is the number to watch.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# `save_model` writes the weights with their `score` head (or, with LoRA, the adapter plus the
# full `score` layer) and the tokenizer, whose pad token TRL has fixed; the model's config gets
# the same `pad_token_id`, so `AutoModelForSequenceClassification.from_pretrained(output_dir)`
# scores sequences exactly as in training. `save_state` writes `trainer_state.json` with the
# log history.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
