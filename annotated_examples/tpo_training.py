r"""Triple Preference Optimization (TPO) with TRL's experimental `TPOTrainer`

TPO (Saeidi et al. 2025) trains on *triples*: for each prompt a gold `reference` answer, a
`chosen` and a `rejected` one. One loss does two jobs at once: an NLL term on the gold answer
(the supervised fine-tuning stage, folded in, weighted by `tpo_alpha`) and a preference term that
pushes the chosen answer's log-probability above the rejected one's. Like CPO, it loads no
reference model: the "reference" of TPO is an answer, not a frozen copy of the policy.

TRL 1.16 has no `trl tpo` command; TPO lives in `trl.experimental.tpo`. The script takes the
flags such a command would: `ScriptArguments`, `TPOConfig`, `ModelConfig` and
`--config recipe.yaml`. `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/tpo_training.py --config annotated_examples/recipes/tpo_tiny.yaml

# One GPU, full fine-tuning of Qwen2-0.5B-Instruct on TPO's UltraFeedback triples:
python annotated_examples/tpo_training.py --config annotated_examples/recipes/tpo.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/tpo_training.py \
    --config annotated_examples/recipes/tpo.yaml

# LoRA: train small adapters instead of all weights (ten times the learning rate is usual):
python annotated_examples/tpo_training.py --config annotated_examples/recipes/tpo.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 5e-6
```
"""

import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # TPO is experimental in TRL 1.16

from accelerate import PartialState
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config
from trl.experimental.tpo import TPOConfig, TPOTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# Three dataclasses: `ScriptArguments` says which data, `TPOConfig` how to train (it extends
# `transformers.TrainingArguments`), `ModelConfig` which model and whether to use LoRA. Every
# field is a command-line flag and a key in the `--config` YAML; the command line wins.
#
# The TPO-specific knobs: `loss_type` (`sigmoid`, `hinge`, `ipo`, `tpo-l`), `beta` (the inverse
# temperature of the preference term; default 0.01, ten times lower than DPO's because the
# scores are *summed* log-probabilities, not ratios to a reference), `tpo_alpha` (weight of the
# NLL term on the gold answer; default 1.0; 0 drops the gold answer from the batch) and
# `tpo_l_gamma` (TPO-L's target margin; default 0.5). Three defaults of `TPOConfig` differ from
# `TrainingArguments`: `bf16=True`, `gradient_checkpointing=True` and `learning_rate=5e-7`. The
# CPU recipe turns the first two off and raises the third.

parser = TrlParser((ScriptArguments, TPOConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct",
    dataset_name="tpo-alignment/triple-preference-ultrafeedback-40K",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# The trainer pads the three sequences of a row with the tokenizer's pad token, so one must
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
# TPO trains on preference *triples*: one prompt and three answers, ranked. In the paper each
# prompt's answers are scored (UltraFeedback's ratings): the best becomes the gold `reference`,
# the second best `chosen`, the worst `rejected`.
#
# | format | a row |
# |---|---|
# | triple preference | `{"prompt": ..., "chosen": ..., "rejected": ..., "reference": ...}` |
# | implicit triple | `{"chosen": ..., "rejected": ..., "reference": ...}` (prompt in all 3) |
#
# Each value is a string, or a list of chat messages. Without a `prompt` column, TRL splits off
# the longest common start of `chosen` and `rejected` as the prompt, and strips the same text
# from `reference`, which must therefore start with it.
#
# Every row is checked before any model is loaded: a malformed file costs a second, not a
# download, and gets one line that names the file, the line and the expected shape. A DPO pair
# without its `reference` is refused here, by name, not deep inside tokenisation.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="tpo",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")

# TPO's published triples are plain strings. An instruct model answers inside its chat
# template, so, as TRL's own TPO example does, plain rows with a `prompt` become one user turn
# and three assistant answers whenever the tokenizer has a chat template (the tiny one does).
# A base model without a template trains on the plain text.


def as_chat(row: dict) -> dict:
    answers = {
        k: [{"role": "assistant", "content": row[k]}] for k in ("chosen", "rejected", "reference")
    }
    return {"prompt": [{"role": "user", "content": row["prompt"]}], **answers}


first = dataset[script_args.dataset_train_split][0]
if tokenizer.chat_template and isinstance(first.get("prompt"), str):
    dataset = dataset.map(as_chat)

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
# One model, the policy $\pi_\theta$, and no frozen copy: DPO scores an answer by
# $\log \pi_\theta - \log \pi_{\text{ref}}$, TPO by $\log \pi_\theta$ alone. Without a reference
# nothing anchors the policy but the NLL term on the gold answer, which is why `tpo_alpha`
# matters more than DPO's `beta`.
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
# For each row the trainer runs prompt + chosen, prompt + rejected and prompt + reference through
# the model in one batch of $3B$ sequences and scores the first two by their log-probability
# $s(y)$: the sum over completion tokens for `sigmoid` and `hinge`, the *average* per token for
# `ipo` and `tpo-l`. With $h = s(y_w) - s(y_l)$, the per-row preference losses are
#
# | `loss_type` | preference loss |
# |---|---|
# | `sigmoid` (TPO) | $-\log\sigma(\beta h)$ |
# | `hinge` (SLiC) | $\max(0, 1 - \beta h)$ |
# | `ipo` | $(h - \frac{1}{2\beta})^2$ |
# | `tpo-l` | $-\log\sigma(\beta h - \gamma)$ |
#
# and the total is $\operatorname{mean}(\text{preference loss}) + \alpha\,
# \mathcal{L}_{\text{NLL}}(x, y_\text{gold})$, the NLL a token-level mean over the gold answers'
# completion tokens. With `--use_peft`, only LoRA adapters train.

trainer = TPOTrainer(
    model=model,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`, besides `loss` (preference plus $\alpha$ NLL; the NLL term has
# no metric of its own):
#
# - `rewards/chosen`, `rewards/rejected`: $\beta\,s(y_w)$ and $\beta\,s(y_l)$, always $\le 0$;
#   `rewards/margins` their difference; `rewards/accuracies` the fraction of rows where the
#   chosen answer scores higher;
# - `logps/*` (the scores $s$), `logits/*` (the mean raw logit, a health check), `entropy` and
#   `mean_token_accuracy` (on the chosen answers), `num_tokens`.

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
