r"""Binary Classifier Optimization (BCO) with our `BCOTrainer` (TRL removed its own in 1.14.0)

Align a language model from thumbs-up/down feedback by training it as a binary classifier: the
implicit reward of a completion, minus a running mean $\delta$ of all rewards, is the logit of
"this completion is desirable". Desirable rows push their reward above $\delta$, undesirable rows
below it. Optionally (UDM), undesirable rows are reweighted by how typical their *prompt* is of
desirable rows, for when good and bad answers were collected on different prompts.

`trl.experimental.bco` was removed in TRL 1.14.0; `annotated_trl.trainers.bco` is our own
implementation, checked step by step against trl 1.12.0's (`tests/test_bco_parity.py`). It keeps
1.12's names, so this script is TRL's `bco.py` with one import changed. The flags are those of
`ScriptArguments`, `BCOConfig` and `ModelConfig`, plus `--embedding_model` for UDM; `--config
recipe.yaml` reads them from a file, and `--dataset_name` may be a local folder or `.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute, no network):
annotated-trl tiny tiny
python annotated_examples/bco_training.py --config annotated_examples/recipes/bco_tiny.yaml

# The same with UDM weights, the tiny policy's own hidden states as prompt embeddings:
python annotated_examples/bco_training.py --config annotated_examples/recipes/bco_tiny.yaml \
    --embedding_model tiny/policy

# One GPU: Qwen2.5-0.5B-Instruct on ultrafeedback-gpt-3.5-turbo-helpfulness:
pip install -e .            # our package, which holds BCOTrainer (add [udm] for UDM)
python annotated_examples/bco_training.py --config annotated_examples/recipes/bco.yaml

# Eight GPUs on one machine (DDP; the global batch is 8x larger):
accelerate launch --num_processes 8 annotated_examples/bco_training.py \
    --config annotated_examples/recipes/bco.yaml

# LoRA: the reference model is the base with the adapter switched off, so no second copy:
python annotated_examples/bco_training.py --config annotated_examples/recipes/bco.yaml \
    --use_peft --lora_r 16 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 5e-6
```
"""

import sys
from dataclasses import dataclass, field

import torch
from transformers import AutoModel, AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.trainers.bco import BCOConfig, BCOTrainer

# ## 1. Arguments
#
# `ScriptArguments` says which data, `BCOConfig` how to train (it extends
# `transformers.TrainingArguments` with trl 1.12's BCO fields), `ModelConfig` which model and
# whether to wrap it in LoRA. One more group of ours switches UDM on. Every field is a
# command-line flag and a key in the `--config` YAML file; the command line wins.
#
# The defaults are the run of TRL's own BCO example script: Qwen2.5-0.5B-Instruct on
# `trl-lib/ultrafeedback-gpt-3.5-turbo-helpfulness`.


@dataclass
class UDMArguments:
    embedding_model: str | None = field(
        default=None,
        metadata={"help": "Model whose mean-pooled hidden states embed prompts for UDM."},
    )


parser = TrlParser((ScriptArguments, BCOConfig, ModelConfig, UDMArguments))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
    dataset_name="trl-lib/ultrafeedback-gpt-3.5-turbo-helpfulness",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args, udm_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Its chat template renders conversational rows. Plain-text rows are tokenised as they are and
# the EOS token is appended to every completion. Batches are padded on the right.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)

# ## 3. Data
#
# BCO reads the same rows as KTO, one completion with a boolean label:
#
# | format | a row |
# |---|---|
# | unpaired preference | `{"prompt": ..., "completion": ..., "label": true}` |
# | preference | `{"prompt": ..., "chosen": ..., "rejected": ...}` |
# | implicit preference | `{"chosen": ..., "rejected": ...}` (the prompt inside both) |
#
# Paired rows are *unpaired* by the trainer: each pair becomes a desirable row (`chosen`) and an
# undesirable one (`rejected`). The rows are read in order, as trl 1.12 did (`BCOConfig` sets
# `train_sampling_strategy="sequential"`); shuffle the file, or pass
# `--train_sampling_strategy random`, if your labels come sorted.
#
# The label must be a JSON boolean: the checker refuses `"yes"`, `1` or `null` with one line that
# names the file and the line, before any model is loaded.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="bco",
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
# We pass the model *name*; the trainer loads it with `model_init_kwargs` and freezes a copy as
# the reference $\pi_{\text{ref}}$ (with `--use_peft` it disables the adapter instead).
# `ModelConfig.dtype` defaults to float32; use `--dtype bfloat16` on GPUs that support it.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 5. UDM (optional): prompt embeddings for the density ratio
#
# When desirable and undesirable rows come from different prompt distributions, the paper
# reweights each undesirable row by the density ratio $p_D(x) / p_U(x)$ of its prompt. The
# trainer estimates it with a logistic-regression classifier on prompt embeddings, fitted once
# at start-up on `prompt_sample_size` prompts of each label: with balanced classes the
# classifier's odds $\frac{P(D \mid x)}{1 - P(D \mid x)}$ estimate the ratio, clipped to
# `[min_density_ratio, max_density_ratio]`. Here an embedding is the mean of the embedding
# model's last hidden states over the prompt's tokens, L2-normalised.

udm = {}
if udm_args.embedding_model:
    embedding_model = AutoModel.from_pretrained(udm_args.embedding_model).eval()
    embedding_model.to(training_args.device)

    def embed_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = embedding_model(input_ids=input_ids, attention_mask=attention_mask)[0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(mean.float(), dim=-1)

    udm = {
        "embedding_func": embed_prompts,
        "embedding_tokenizer": AutoTokenizer.from_pretrained(udm_args.embedding_model),
    }

# ## 6. Trainer
#
# For a completion $y$ of prompt $x$ the implicit reward is
# $r_\theta(x, y) = \beta \log \frac{\pi_\theta(y \mid x)}{\pi_{\text{ref}}(y \mid x)}$, a sum
# over completion tokens. BCO trains the logistic classifier $\sigma(r_\theta(x, y) - \delta)$
# to say 1 on desirable rows and 0 on undesirable ones:
#
# $$\begin{aligned}
#   \mathcal{L} = {} & {-\log \sigma(r_\theta(x, y) - \delta)} \text{ (desirable)}, \\
#   & {-w(x)\,\log \sigma(\delta - r_\theta(x, y))} \text{ (undesirable)},
#   \end{aligned}$$
#
# averaged over the rows of a batch; $w(x) = 1$ without UDM. $\delta$ is the running mean of
# every reward seen so far, updated with each batch *before* its loss, and saved in every
# checkpoint (`running.json`) so that `--resume_from_checkpoint` continues the same loss.
#
# `beta` ($\beta$, 0.1) sets how far the policy may move from the reference.

trainer = BCOTrainer(
    model=model_args.model_name_or_path,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
    **udm,
)

# ## 7. Train
#
# Logged every `logging_steps`: `loss`; `delta`, the running mean $\delta$; `rewards/chosen` and
# `rewards/rejected`, the mean reward of desirable and undesirable rows since the last log, and
# `rewards/margins`, their difference, which should grow; `logps/chosen` and `logps/rejected`,
# the mean $\log \pi_\theta(y \mid x)$; `logits/chosen` and `logits/rejected`, the sum of every
# logit of a row (all positions, whole vocabulary) averaged over rows, kept from trl 1.12 (watch
# its trend only). With evaluation on, the same appear as `eval_...` on held-out data; evaluation
# does not move $\delta$. Both rewards start at exactly 0: the policy *is* the reference.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 8. Save
#
# `save_model` writes the weights (or, with LoRA, only the adapter) and the tokenizer;
# `save_state` writes `trainer_state.json` with the full log history. Under `accelerate
# launch` every process calls these; only the main process writes. `end()` closes the
# trackers and the process group.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
