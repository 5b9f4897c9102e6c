r"""Direct Preference Optimization (DPO) with TRL's `DPOTrainer`

Teach a language model to prefer one completion over another. Each training row is a prompt
with two answers, a *chosen* one and a *rejected* one; DPO raises the probability of the first
relative to the second, measured against a frozen *reference* model (the starting point), with
no reward model and no sampling. It is usually the second stage of post-training, after SFT.

The script takes the same flags as `trl dpo` — `ScriptArguments`, `DPOConfig`, `ModelConfig` and
`--config recipe.yaml` — and `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (about a minute, no network):
annotated-trl tiny tiny
python annotated_examples/dpo_training.py --config annotated_examples/recipes/dpo_tiny.yaml

# One GPU, full fine-tuning of Qwen2-0.5B-Instruct on UltraFeedback (binarized):
python annotated_examples/dpo_training.py --config annotated_examples/recipes/dpo.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/dpo_training.py \
    --config annotated_examples/recipes/dpo.yaml

# LoRA: train adapters only; the reference is the same network with the adapter switched off,
# so no second copy of the model is loaded (TRL's own LoRA example uses 10x the learning rate):
python annotated_examples/dpo_training.py --config annotated_examples/recipes/dpo.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 5e-6
```
"""

import sys

from transformers import AutoProcessor
from trl import (
    DPOConfig,
    DPOTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses, exactly those of `trl dpo`: `ScriptArguments` says which data, `DPOConfig`
# how to train (it extends `transformers.TrainingArguments` with `beta`, `loss_type`, the
# reference-model options, ...), `ModelConfig` which model and whether to wrap it in LoRA.
# Every field is a command-line flag and a key in the `--config` YAML file; flags given on the
# command line win over the file.
#
# The defaults are a real run: Qwen2-0.5B-Instruct, an instruction-tuned model, on
# UltraFeedback pairs. DPO starts from a model that already follows instructions; it refines
# preferences, it does not teach the format.

parser = TrlParser((ScriptArguments, DPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct",
    dataset_name="trl-lib/ultrafeedback_binarized",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Loaded first because it decides how conversational pairs become text: its chat template
# renders the prompt messages (with the assistant header, as at generation time) and each
# answer after them. DPO also needs a padding token; when the tokenizer has none, the trainer
# falls back to the EOS token.

# `AutoProcessor` returns the tokenizer for a text model; for a vision-language model (a folder
# with a processor) it returns the processor, image processor and tokenizer in one, and the
# trainer then takes rows with an `images` column (see the guide "Vision-language models").

tokenizer = AutoProcessor.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Data
#
# DPO trains on preference pairs, plain strings or chat messages:
#
# | format | a row |
# |---|---|
# | preference (explicit prompt) | `{"prompt": ..., "chosen": ..., "rejected": ...}` |
# | implicit prompt | `{"chosen": ..., "rejected": ...}`, the shared beginning is the prompt |
#
# Both answers of a pair must answer the same prompt. The loss only ever sees the *difference*
# between them, so a pair that differs in one token teaches exactly that token.
#
# Every row is checked before any model is loaded: a malformed file (a missing `rejected`, a
# number where text should be, a broken JSON line, prompt-only data) stops the script with one
# line naming the file, the line and what was expected, and nothing is written to
# `--output_dir`.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="dpo",
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

# ## 4. Model and reference model
#
# We pass the model *name* and let the trainer load it with `model_init_kwargs`, so that it
# picks the right placement under `accelerate launch` and applies quantisation for QLoRA
# (`--load_in_4bit`). `dtype` defaults to float32 in `ModelConfig`; use `--dtype bfloat16` on
# GPUs that support it.
#
# DPO needs a second network, the reference $\pi_{\text{ref}}$. We pass no `ref_model`, so the
# trainer picks one of three strategies:
#
# - full fine-tuning: it loads a second, frozen copy of the same checkpoint;
# - `--use_peft`: no copy; the reference is the policy with its LoRA adapter disabled, which is
#   exactly the starting model because LoRA's $B$ starts at zero;
# - `--precompute_ref_log_probs true`: one pass of the reference over the whole dataset before
#   training stores $\log \pi_{\text{ref}}(y_w \mid x)$ and $\log \pi_{\text{ref}}(y_l \mid x)$
#   as two columns, and no reference is kept in memory during training.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 5. Trainer
#
# `DPOTrainer` tokenises each pair once (prompt, chosen and rejected ids), stacks the chosen
# and rejected sequences of a batch into one forward pass, sums the completion tokens'
# log-probabilities into $\log \pi_\theta(y \mid x)$, does the same with the reference under
# `no_grad`, and minimises (default `loss_type="sigmoid"`)
#
# $$\begin{aligned}
#   \mathcal{L}(\theta) = -\,\mathbb{E}\Big[\log \sigma\Big(&\beta \log
#   \frac{\pi_\theta(y_w \mid x)}{\pi_{\text{ref}}(y_w \mid x)} \\
#   &- \beta \log \frac{\pi_\theta(y_l \mid x)}{\pi_{\text{ref}}(y_l \mid x)}\Big)\Big],
#   \end{aligned}$$
#
# where $y_w$ is the chosen answer and $y_l$ the rejected one. $\beta$ (`--beta`, 0.1 by
# default) sets how far the policy may drift from the reference: small $\beta$, far. Other
# objectives are one flag away: `--loss_type ipo`, `--loss_type sigmoid bco_pair sft
# --loss_weights 0.8 0.2 1.0` (MPO), ... (see the reference guide for all fifteen).

trainer = DPOTrainer(
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
# Logged every `logging_steps`, on top of `loss` and `grad_norm`: the implicit rewards
# $\hat r = \beta \log \frac{\pi_\theta}{\pi_{\text{ref}}}$ of both answers
# (`rewards/chosen`, `rewards/rejected`), their difference (`rewards/margins`, should grow), the
# fraction of pairs where the chosen answer wins (`rewards/accuracies`, should rise from about
# 0.5 towards 1), the summed log-probabilities (`logps/chosen`, `logps/rejected`) and the mean
# logits (`logits/chosen`, `logits/rejected`). At step 0 policy and reference are the same
# network, so every reward is 0 and the loss is $\ln 2 \approx 0.693$.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# `save_model` writes the weights (or, with LoRA, only the adapter) and the tokenizer;
# `save_state` writes `trainer_state.json` with the full log history. Under `accelerate
# launch` every process calls these; the trainer makes only the main process write. `end()`
# finishes the trackers and shuts the process group down cleanly.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
