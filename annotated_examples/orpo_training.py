r"""Odds Ratio Preference Optimization (ORPO) with TRL's experimental `ORPOTrainer`

ORPO (Hong et al. 2024) does supervised fine-tuning and preference alignment in one stage and
with one model: it raises the likelihood of the chosen answer (an NLL term) and, in the same
loss, pushes the *odds* of the chosen answer above the odds of the rejected one. There is no
reference model, so no second copy of the weights and no second forward pass.

TRL 1.16 has no `trl orpo` command; ORPO lives in `trl.experimental.orpo`. The script takes the
flags such a command would: `ScriptArguments`, `ORPOConfig`, `ModelConfig` and
`--config recipe.yaml`. `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (about a minute, no network):
annotated-trl tiny tiny
python annotated_examples/orpo_training.py --config annotated_examples/recipes/orpo_tiny.yaml

# One GPU, full fine-tuning of Qwen2-0.5B-Instruct on UltraFeedback:
python annotated_examples/orpo_training.py --config annotated_examples/recipes/orpo.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/orpo_training.py \
    --config annotated_examples/recipes/orpo.yaml

# LoRA: train small adapters instead of all weights (ten times the learning rate is usual):
python annotated_examples/orpo_training.py --config annotated_examples/recipes/orpo.yaml \
    --use_peft --lora_r 16 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 8e-5
```
"""

import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # ORPO is experimental in TRL 1.16

from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config
from trl.experimental.orpo import ORPOConfig, ORPOTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses: `ScriptArguments` says which data, `ORPOConfig` how to train (it extends
# `transformers.TrainingArguments`), `ModelConfig` which model and whether to use LoRA. Every
# field is a command-line flag and a key in the `--config` YAML; the command line wins.
#
# The ORPO-specific knob is `beta`, the paper's $\lambda$: the weight of the odds-ratio term
# against the NLL term (default 0.1, the paper's value). Note two defaults of `ORPOConfig` that
# differ from `TrainingArguments`: `bf16=True` and `gradient_checkpointing=True`. The CPU recipe
# turns both off.

parser = TrlParser((ScriptArguments, ORPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct", dataset_name="trl-lib/ultrafeedback_binarized"
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# The trainer pads chosen and rejected sequences with the tokenizer's pad token, so one must
# exist; many base models ship without it, and EOS is the usual stand-in. Conversational rows
# are rendered with the tokenizer's chat template.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token

# ## 3. Data
#
# ORPO trains on preference pairs: one prompt, a chosen and a rejected completion.
#
# | format | a row |
# |---|---|
# | preference | `{"prompt": ..., "chosen": ..., "rejected": ...}` |
# | implicit preference | `{"chosen": ..., "rejected": ...}` (shared prompt inside both) |
#
# Each value is a string, or a list of chat messages. For implicit preference, TRL splits off
# the longest common prefix of the two as the prompt (`maybe_extract_prompt`).
#
# Every row is checked before any model is loaded: a malformed file costs a second, not a
# download, and gets one line that names the file, the line and the expected shape. Nothing is
# written to `--output_dir`.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="orpo",
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
# One model, the policy $\pi_\theta$. DPO would load a second, frozen copy as
# $\pi_{\text{ref}}$ and run it on every batch; ORPO needs neither, which is where its memory
# and compute savings over DPO come from.
#
# We load the model here rather than through `model_init_kwargs`, because the trainer then
# defaults to `device_map="auto"`, which spreads one copy over all visible GPUs and is wrong
# for `accelerate launch` data parallelism. For QLoRA (`--load_in_4bit`), each process puts its
# copy on its own GPU (`local_process_index`).

quantization_config = get_quantization_config(model_args)
model = AutoModelForCausalLM.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
    dtype=model_args.dtype,
    attn_implementation=model_args.attn_implementation,
    quantization_config=quantization_config,
    device_map={"": PartialState().local_process_index} if quantization_config else None,
)

# ## 5. Trainer
#
# For each pair the trainer runs chosen and rejected through the model in one concatenated
# batch, and takes the *average* log-probability per completion token,
# $\bar\ell(y) = \frac{1}{|y|}\sum_t \log \pi_\theta(y_t \mid x, y_{<t})$. With
# $p = e^{\bar\ell}$, the odds are $\operatorname{odds}(y) = p / (1 - p)$ and the loss is
#
# $$\mathcal{L} = \mathcal{L}_{\text{NLL}}(x, y_w)
#   - \lambda \log \sigma\Big(\log \frac{\operatorname{odds}(y_w)}{\operatorname{odds}(y_l)}\Big),$$
#
# with $\log \operatorname{odds}(y) = \bar\ell - \log(1 - e^{\bar\ell})$ computed stably.
# Careful: in TRL 1.16 the NLL term covers the prompt tokens of the chosen sequence too, not
# only the completion (see the walkthrough). With `--use_peft`, only LoRA adapters train.

trainer = ORPOTrainer(
    model=model,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`, besides `loss`:
#
# - `nll_loss`: the NLL term alone;
# - `rewards/chosen`, `rewards/rejected`: $\lambda\,\bar\ell(y_w)$ and $\lambda\,\bar\ell(y_l)$,
#   always $\le 0$; `rewards/margins` their difference; `rewards/accuracies` the fraction of
#   pairs where the chosen one is more likely per token;
# - `log_odds_chosen`: the mean log odds ratio,
#   $\log \frac{\operatorname{odds}(y_w)}{\operatorname{odds}(y_l)}$, positive once chosen wins;
# - `log_odds_ratio`: despite its name, the mean of $\log\sigma(\cdot)$ of that log odds ratio,
#   in $(-\infty, 0]$, rising towards 0;
# - `logps/*` (the average log-probs) and `logits/*` (the mean raw logit, a health check).

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# `save_model` writes the weights (or only the adapter, with LoRA) and the tokenizer;
# `save_state` writes `trainer_state.json` with the log history. Under `accelerate launch`
# only the main process writes. `end()` closes the trackers and the process group.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
