r"""Process reward modelling with our `PRMTrainer` (TRL removed its own in 1.14.0)

Train a process reward model (PRM): a model that reads a problem and a step-by-step solution
and says, after *every* step, how likely that step is to be correct. An outcome reward model
(`reward_training.py`) gives one number per answer; a PRM gives one per step, so it can point
at the first mistake, rank partial solutions during search, and reward reasoning, not luck.

The model is a language model with a two-way token-classification head. Each row is a prompt, a
list of steps and a true/false label per step; the trainer appends a separator to every step
and trains the head, by cross-entropy, on the last token of each separator only.

TRL 1.16 has no PRM trainer: `trl.experimental.prm` was removed in 1.14.0. This script uses
ours, `annotated_trl.trainers.prm`, which logs exactly what trl 1.12.0's did
(`tests/test_prm_parity.py`); coming from trl, change only the import. Flags are those of the
old `examples/scripts/prm.py`: `ScriptArguments`, `PRMConfig`, `ModelConfig` and
`--config recipe.yaml`; `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/prm_training.py --config annotated_examples/recipes/prm_tiny.yaml

# One GPU, full fine-tuning of Qwen2-0.5B-Instruct on Math-Shepherd:
python annotated_examples/prm_training.py --config annotated_examples/recipes/prm.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/prm_training.py \
    --config annotated_examples/recipes/prm.yaml

# LoRA (task type TOKEN_CLS, our default, so the new head trains in full) on every linear
# layer of the body, named: `all-linear` would also wrap that head, which peft then refuses:
python annotated_examples/prm_training.py --config annotated_examples/recipes/prm.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --learning_rate 1e-4 \
    --lora_target_modules q_proj k_proj v_proj o_proj gate_proj up_proj down_proj
```
"""

import sys

from accelerate import PartialState
from transformers import AutoModelForTokenClassification, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.trainers.prm import PRMConfig, PRMTrainer, step_probabilities

# ## 1. Arguments
#
# Three dataclasses: `ScriptArguments` says which data, `PRMConfig` how to train (it extends
# `transformers.TrainingArguments`; its PRM fields and defaults are trl 1.12.0's), `ModelConfig`
# which model and whether to wrap it in LoRA. Every field is a command-line flag and a key in
# the `--config` YAML file; flags on the command line win over the file.
#
# The defaults are a real run: Qwen2-0.5B-Instruct (the model of TRL's old PRM example) on
# `trl-lib/math_shepherd`, Math-Shepherd's automatically labelled GSM8K/MATH solutions in
# stepwise form. `lora_task_type` defaults to `"TOKEN_CLS"` here (`ModelConfig` says
# `"CAUSAL_LM"`): with it, peft also trains the new classification head in full; with
# `"CAUSAL_LM"` the head would stay at its random initialisation.

parser = TrlParser((ScriptArguments, PRMConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct",
    dataset_name="trl-lib/math_shepherd",
    lora_task_type="TOKEN_CLS",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# The prompt, each step and the separator are tokenised *separately*, without special tokens
# (a BOS token, if the tokenizer has one, is put in front of the prompt). Batches are padded
# with the pad token, so one must exist; EOS is the usual stand-in. Padding is never a target:
# the collator pads labels with -100.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token

# ## 3. Data
#
# Stepwise supervision, one row per solution:
#
# | column | holds |
# |---|---|
# | `prompt` | the problem, a string |
# | `completions` | the steps, a non-empty list of strings |
# | `labels` | one `true` (correct) / `false` (wrong) per step |
#
# Every row is checked before any model is loaded: a label list of the wrong length, a label
# that is not a boolean, a missing column or another method's data gets one line naming the
# file and the row, and nothing is written to `--output_dir`. Rows with *no* steps are refused
# too; TRL's own script dropped them silently (they occur in `trl-lib/prm800k`, which is why the
# default here is Math-Shepherd). Prompts must be plain text: the trainer tokenises them as
# they are, as trl 1.12's did, so chat-formatted prompts are refused rather than mangled.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="prm",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")
for split, rows in dataset.items():
    if not isinstance(rows[0]["prompt"], str):
        sys.exit(
            f'error: {script_args.dataset_name}[{split}]: column "prompt" holds chat messages, '
            "but PRM trains on plain-text prompts; expected rows like "
            '{"prompt": "...", "completions": ["...", ...], "labels": [true, ...]}'
        )

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
# `AutoModelForTokenClassification` with two labels: the transformer body of the checkpoint and
# a new linear head $W \in \mathbb{R}^{2 \times d}$ (with bias) applied at every position.
# Starting from a causal LM, the vocabulary head is dropped and the new one is random
# (transformers warns about it, rightly). The pad token id goes into the model config so the
# saved model pads the same way. For QLoRA (`--load_in_4bit`), each process puts its copy on
# its own GPU.

quantization_config = get_quantization_config(model_args)
model = AutoModelForTokenClassification.from_pretrained(
    model_args.model_name_or_path,
    num_labels=2,
    revision=model_args.model_revision,
    dtype=model_args.dtype,
    attn_implementation=model_args.attn_implementation,
    quantization_config=quantization_config,
    device_map={"": PartialState().local_process_index} if quantization_config else None,
)
model.config.pad_token_id = tokenizer.pad_token_id

# ## 5. Trainer
#
# `PRMTrainer` tokenises every row once. For steps $s_1, \dots, s_K$ with labels
# $c_k \in \{0, 1\}$ and separator $\sigma$ (`--step_separator`, default a newline):
#
# ```text { .no-run }
# input_ids  [bos] prompt   s_1 σ          s_2 σ         …  s_K σ
# labels     -100 … -100    -100 … -100 c_1 -100 … c_2   …  -100 … c_K
# ```
#
# The label sits on the last token of each step-plus-separator, which has seen the whole
# solution up to and including that step. With `T` the set of those positions, the loss is
# plain cross-entropy over them,
#
# $$\mathcal{L}(\theta) = -\frac{1}{|T|} \sum_{t \in T} \log p_\theta(c_t \mid x, y_{\le t}),$$
#
# every step of every solution in the batch weighted alike. `--train_on_last_step_only` keeps
# only $c_K$ as a target (outcome supervision in a PRM's clothes); evaluation data keep every
# label either way. `--max_completion_length` cuts the steps, then `--max_length` cuts prompt
# plus steps, both from the end: a step cut off loses its label.

trainer = PRMTrainer(
    model=model,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`: `loss` (the cross-entropy above; $\ln 2 \approx 0.693$ is a
# coin flip, and the majority-class rate sets how low a lazy model gets), `grad_norm`,
# `learning_rate`. At each evaluation: `eval_loss` and `eval_accuracy`, the share of held-out
# steps whose predicted label ($\arg\max$ of the two logits) is right. Compare it with the
# share of the most common label in the eval set: a PRM that always says "correct" already
# scores that.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# `save_model` writes the weights with the classification head (or, with LoRA, the adapter and
# the full head) and the tokenizer; `save_state` writes `trainer_state.json` with the log
# history. Reload with `AutoModelForTokenClassification.from_pretrained(output_dir)`.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)

# ## 8. Score a solution
#
# Using the PRM: the probability that each step is correct, read at the same positions as in
# training. How to combine them is the user's choice and not the trainer's: Lightman et al.
# score a solution by the *product* $\prod_k p_k$ (the chance that every step is right),
# Math-Shepherd by the *minimum* $\min_k p_k$ (the weakest step).

if trainer.is_world_process_zero() and eval_dataset is not None:
    row = eval_dataset[0]
    trained = trainer.model.eval()
    p = step_probabilities(
        trained, tokenizer, row["prompt"], row["completions"], training_args.step_separator
    )
    print(
        f"{row['prompt']!r}: step p(correct) {[round(v, 3) for v in p.tolist()]}, "
        f"product {p.prod():.3f}, min {p.min():.3f}, labels {row['labels']}"
    )
trainer.end()
