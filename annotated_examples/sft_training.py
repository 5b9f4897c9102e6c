r"""Supervised fine-tuning (SFT) with TRL's `SFTTrainer`

Teach a causal language model to imitate demonstrations: maximise the likelihood of each
completion token given everything before it. SFT is the first stage of almost every
post-training recipe, and the model it produces is the starting point (and usually the
reference model) for every preference and RL method on this site.

The script takes the same flags as `trl sft` — `ScriptArguments`, `SFTConfig`, `ModelConfig` and
`--config recipe.yaml` — and `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/sft_training.py --config annotated_examples/recipes/sft_tiny.yaml

# One GPU, full fine-tuning of Qwen2.5-0.5B on Capybara:
python annotated_examples/sft_training.py --config annotated_examples/recipes/sft.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/sft_training.py \
    --config annotated_examples/recipes/sft.yaml

# LoRA: train small adapters instead of all weights (ten times the learning rate is usual):
python annotated_examples/sft_training.py --config annotated_examples/recipes/sft.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 2e-4

# QLoRA: the same adapters on a frozen base stored in 4 bits (NF4), computing in bf16; peft keeps
# the adapters themselves in float32. bitsandbytes needs a CUDA GPU (not tested here):
pip install "trl[quantization]==1.16.0"
python annotated_examples/sft_training.py --config annotated_examples/recipes/sft.yaml \
    --load_in_4bit --bnb_4bit_quant_type nf4 --dtype bfloat16 \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 2e-4
```
"""

import sys

from transformers import AutoProcessor
from trl import (
    ModelConfig,
    SFTConfig,
    SFTTrainer,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses, exactly those of `trl sft`: `ScriptArguments` says which data,
# `SFTConfig` how to train (it extends `transformers.TrainingArguments`), `ModelConfig` which
# model and whether to wrap it in LoRA. Every field is a command-line flag and a key in the
# `--config` YAML file; flags given on the command line win over the file.
#
# The defaults are a real run: Qwen2.5-0.5B on Capybara, a multi-turn conversational dataset.
# The recipes in `annotated_examples/recipes/` set everything else.

parser = TrlParser((ScriptArguments, SFTConfig, ModelConfig))
parser.set_defaults(model_name_or_path="Qwen/Qwen2.5-0.5B", dataset_name="trl-lib/Capybara")
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Loaded first because it decides how conversational data becomes text: its chat template
# renders each list of messages, and `{% generation %}` markers in that template tell TRL which
# tokens the assistant wrote (needed by `assistant_only_loss=True`).

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
# SFT trains on any of three shapes of row, plain text or chat messages:
#
# | format | a row |
# |---|---|
# | language modelling | `{"text": "..."}` or `{"messages": [...]}` |
# | prompt–completion | `{"prompt": ..., "completion": ...}` |
#
# With prompt–completion rows the loss covers only the completion (`completion_only_loss`
# defaults to on for them); with text rows it covers every token.
#
# Every row is checked before any model is loaded, so a malformed file costs a second, not a
# download: one line names the file, the line and what was expected, and nothing is written to
# `--output_dir`. A chat template given by `--chat_template_path` is only applied later by the
# trainer, so the template check is skipped then.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="sft",
        tokenizer=None if training_args.chat_template_path else tokenizer,
        config=script_args.dataset_config,
        text_field=training_args.dataset_text_field,
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
# We pass the model *name* and let the trainer load it with `model_init_kwargs`: that way it
# picks the right device placement under `accelerate launch` (one full copy per process for
# DDP; sharded under FSDP / ZeRO-3) and applies quantisation for QLoRA (`--load_in_4bit`).
# `dtype` defaults to float32 in `ModelConfig`; use `--dtype bfloat16` on GPUs that support it.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 5. Trainer
#
# `SFTTrainer` prepares the dataset (chat template, tokenisation, masks, truncation or
# packing), collates batches, and minimises the token-level negative log-likelihood
#
# $$\mathcal{L}(\theta) = -\frac{1}{\sum_{i,t} m_{i,t}} \sum_{i}\sum_{t} m_{i,t}\,
#   \log \pi_\theta(y_{i,t} \mid x_i, y_{i,<t}),$$
#
# where the mask $m_{i,t}$ is 1 on the tokens that count (all of them, the completion, or the
# assistant's turns). With `--use_peft`, `get_peft_config` builds a `LoraConfig` from the
# `--lora_*` flags and only the adapters train: $W = W_0 + \frac{\alpha}{r} BA$.

trainer = SFTTrainer(
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
# Logged every `logging_steps`: `loss` (the NLL above), `mean_token_accuracy` (how often the
# most likely next token is the right one), `entropy` (of the next-token distribution, in nats),
# `num_tokens` (tokens seen so far) and `grad_norm`. `--resume_from_checkpoint true` continues
# from the newest complete `output_dir/checkpoint-N` (or from the folder given), with the
# optimiser and data order restored.

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
