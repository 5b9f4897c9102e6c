r"""Kahneman–Tversky Optimisation (KTO) with TRL's `KTOTrainer`

Align a language model from *unpaired* feedback: each row is one completion with a thumbs-up
(`"label": true`) or a thumbs-down (`"label": false`). KTO raises the implicit reward of
desirable completions above a reference point and pushes undesirable ones below it; the reference
point is an estimate of how far the policy has drifted from the reference model. No pairs, no
reward model, no sampling. Paired preference data work too: TRL splits every pair into one
desirable and one undesirable row.

The script takes the same flags as `trl kto` — `ScriptArguments`, `KTOConfig`, `ModelConfig` and
`--config recipe.yaml` — and `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/kto_training.py --config annotated_examples/recipes/kto_tiny.yaml

# The same run on paired preference data, which TRL unpairs:
python annotated_examples/kto_training.py --config annotated_examples/recipes/kto_tiny.yaml \
    --dataset_name tiny/data/preference

# One GPU, full fine-tuning of an SFT'd Qwen1.5-1.8B on kto-mix-14k:
python annotated_examples/kto_training.py --config annotated_examples/recipes/kto.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/kto_training.py \
    --config annotated_examples/recipes/kto.yaml

# LoRA: the reference model is the base with the adapter switched off, so no second copy:
python annotated_examples/kto_training.py --config annotated_examples/recipes/kto.yaml \
    --use_peft --lora_r 16 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 5e-6
```
"""

import sys

from transformers import AutoTokenizer
from trl import (
    KTOConfig,
    KTOTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses, exactly those of `trl kto`: `ScriptArguments` says which data, `KTOConfig`
# how to train (it extends `transformers.TrainingArguments`), `ModelConfig` which model and
# whether to wrap it in LoRA. Every field is a command-line flag and a key in the `--config`
# YAML file; flags given on the command line win over the file.
#
# The defaults are the run of TRL's own `trl/scripts/kto.py`: an SFT'd Qwen1.5-1.8B on
# `trl-lib/kto-mix-14k`. KTO, like DPO, starts from a model that already follows instructions:
# the reference model is that starting point, and every reward is measured against it.

parser = TrlParser((ScriptArguments, KTOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="trl-lib/qwen1.5-1.8b-sft", dataset_name="trl-lib/kto-mix-14k"
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Its chat template renders conversational rows; plain-text rows are tokenised as they are,
# with the EOS token appended to every completion. `KTOTrainer` pads on the right and uses the
# EOS token as padding when the tokenizer has no pad token.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Data
#
# KTO trains on one completion at a time, with a boolean label:
#
# | format | a row |
# |---|---|
# | unpaired preference | `{"prompt": ..., "completion": ..., "label": true}` |
# | preference | `{"prompt": ..., "chosen": ..., "rejected": ...}` |
# | implicit preference | `{"chosen": ..., "rejected": ...}` (the prompt inside both) |
#
# Strings or lists of chat messages. For the paired formats TRL first extracts the shared
# prompt (implicit preference only), then *unpairs*: each pair becomes a desirable row
# (`chosen`, `label=True`) and an undesirable one (`rejected`, `label=False`).
#
# The label must be a JSON boolean. TRL does not check it: a `1` trains silently as "true",
# and a `"yes"` fails with a `TypeError` that names neither file nor column. The checker
# refuses both with one line that names the file, the line and what was expected, before any
# model is loaded.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="kto",
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

# ## 4. Model
#
# We pass the model *name* and let the trainer load it with `model_init_kwargs`: it then places
# the model right under `accelerate launch` and applies quantisation for QLoRA. With no
# `ref_model`, the trainer loads the same checkpoint a second time, frozen, as $\pi_{\text{ref}}$
# (with `--use_peft`, it disables the adapter instead). `dtype` defaults to float32 in
# `ModelConfig`; use `--dtype bfloat16` on GPUs that support it.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 5. Trainer
#
# For a completion $y$ of prompt $x$ the implicit reward is the log-ratio
# $r_\theta(x, y) = \log \frac{\pi_\theta(y \mid x)}{\pi_{\text{ref}}(y \mid x)}$, a sum over
# completion tokens. KTO compares it with a reference point $z_0$, an estimate of
# $\mathrm{KL}(\pi_\theta \,\Vert\, \pi_{\text{ref}})$, and minimises
#
# $$\begin{aligned}
#   \mathcal{L} = {} & \mathbb{E}\big[\lambda_D\,(1 - \sigma(\beta(r_\theta - z_0)))\big]
#   \text{ on desirable rows}, \\
#   & \mathbb{E}\big[\lambda_U\,(1 - \sigma(\beta(z_0 - r_\theta)))\big]
#   \text{ on undesirable rows}.
#   \end{aligned}$$
#
# $z_0$ comes from *mismatched* pairs: within each batch, prompt $i$ is paired with the
# completion of row $i - 1$. Its estimate is computed without gradient and clamped at 0. That
# is why `per_device_train_batch_size` must be at least 2 and why KTO reads the data in order
# (`train_sampling_strategy="sequential"`, the default; the trainer refuses anything else).
#
# `beta` ($\beta$, 0.1) sets how far the policy may move; `desirable_weight` ($\lambda_D$) and
# `undesirable_weight` ($\lambda_U$) rebalance unequal counts. TRL warns when
# $\lambda_D n_D / (\lambda_U n_U)$ is outside $[1, 4/3]$. `loss_type="apo_zero_unpaired"`
# drops $z_0$ altogether.

trainer = KTOTrainer(
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
# Logged every `logging_steps`: `loss`; `kl`, the estimate of $z_0$; `rewards/chosen` and
# `rewards/rejected`, the mean $\beta\,r_\theta$ of desirable and undesirable completions, and
# `rewards/margins`, their difference, which should grow; `logps/chosen`, `logps/rejected`,
# `logits/chosen`, `logits/rejected`, `entropy` and `num_tokens`. With evaluation on, the same
# appear as `eval_rewards/chosen`, ... on held-out data. Both rewards start at exactly 0: the
# policy *is* the reference before the first step.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# `save_model` writes the weights (or, with LoRA, only the adapter) and the tokenizer;
# `save_state` writes `trainer_state.json` with the full log history. Under `accelerate
# launch` every process calls these; the trainer makes only the main process write.
# `end()` finishes the trackers and shuts the process group down cleanly.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
