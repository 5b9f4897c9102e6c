r"""Contrastive Preference Optimization (CPO) and SimPO with TRL's experimental `CPOTrainer`

CPO (Xu et al. 2024) is DPO without the reference model: a preference loss on the policy's own
sequence log-probabilities, plus an NLL term on the chosen answer weighted by `cpo_alpha`. The
same trainer runs SimPO (Meng et al. 2024): length-normalised rewards, a target margin
`simpo_gamma`, and no NLL term (`--loss_type simpo --cpo_alpha 0`).

TRL 1.16 has no `trl cpo` command; CPO lives in `trl.experimental.cpo`. The script takes the
flags such a command would: `ScriptArguments`, `CPOConfig`, `ModelConfig` and
`--config recipe.yaml`. `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (about a minute, no network):
annotated-trl tiny tiny
python annotated_examples/cpo_training.py --config annotated_examples/recipes/cpo_tiny.yaml

# One GPU, full fine-tuning of Qwen2-0.5B-Instruct on UltraFeedback:
python annotated_examples/cpo_training.py --config annotated_examples/recipes/cpo.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/cpo_training.py \
    --config annotated_examples/recipes/cpo.yaml

# LoRA: train small adapters instead of all weights (ten times the learning rate is usual):
python annotated_examples/cpo_training.py --config annotated_examples/recipes/cpo.yaml \
    --use_peft --lora_r 16 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 8e-5
```
"""

import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # CPO is experimental in TRL 1.16

from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config
from trl.experimental.cpo import CPOConfig, CPOTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses: `ScriptArguments` says which data, `CPOConfig` how to train (it extends
# `transformers.TrainingArguments`), `ModelConfig` which model and whether to use LoRA. Every
# field is a command-line flag and a key in the `--config` YAML; the command line wins.
#
# The CPO-specific knobs: `loss_type` (`sigmoid`, `hinge`, `ipo`, `simpo`, `alphapo`), `beta`
# (the inverse temperature of the preference term; default 0.1), `cpo_alpha` (weight of the NLL
# term; default 1.0), `simpo_gamma` (SimPO's target margin; default 0.5) and `alpha` (AlphaPO's
# reward shape; default 0.0). Two defaults of `CPOConfig` differ from `TrainingArguments`:
# `bf16=True` and `gradient_checkpointing=True`. The CPU recipe turns both off.

parser = TrlParser((ScriptArguments, CPOConfig, ModelConfig))
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
# CPO trains on preference pairs: one prompt, a chosen and a rejected completion.
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
        method="cpo",
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
# $\pi_{\text{ref}}$ and run it on every batch. CPO replaces it by a uniform distribution, whose
# log-probability is the same for both answers and cancels in the difference; the NLL term on
# the chosen answer keeps the model close to the data instead.
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
# batch and scores each completion by its log-probability $s(y)$: the sum over completion
# tokens for `sigmoid` and `hinge`, the *average* per token for `ipo` and `simpo`. With
# $h = s(y_w) - s(y_l)$, the per-pair preference losses are
#
# | `loss_type` | preference loss |
# |---|---|
# | `sigmoid` (CPO) | $-\log\sigma(\beta h)$ |
# | `hinge` (SLiC) | $\max(0, 1 - \beta h)$ |
# | `ipo` | $(h - \frac{1}{2\beta})^2$ |
# | `simpo` | $-\log\sigma(\beta h - \gamma)$ |
#
# and the total is $\operatorname{mean}(\text{preference loss}) + \alpha_{\text{CPO}}
# \,\mathcal{L}_{\text{NLL}}(x, y_w)$, with the NLL on the chosen completion tokens only.
# `alphapo` is SimPO with `cpo_alpha=0`; with `alpha` $\ne 0$ the score becomes
# $(1 - p^{-\alpha})/\alpha$, $p = e^{s(y)}$. With `--use_peft`, only LoRA adapters train.

trainer = CPOTrainer(
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
# - `nll_loss`: the NLL term alone (0 when `cpo_alpha=0`);
# - `rewards/chosen`, `rewards/rejected`: $\beta\,s(y_w)$ and $\beta\,s(y_l)$, always
#   $\le 0$ for `alpha=0`; `rewards/margins` their difference; `rewards/accuracies` the
#   fraction of pairs where the chosen one scores higher;
# - `logps/*` (the scores $s$) and `logits/*` (the mean raw logit, a health check).

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
