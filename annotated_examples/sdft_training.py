r"""Self-Distillation Fine-Tuning (SDFT) with TRL's experimental `SDFTTrainer`

Learn from demonstrations *on-policy*. For every prompt the model (the *student*) samples its own
answer from the prompt alone. The same network, shown the prompt **and** a demonstration
(`privileged_context`: text only the teacher sees), then scores those tokens; the student is
pulled towards that demonstration-conditioned distribution at every token of its own answer. No
reward function and no second model to download: the teacher is the model itself with a hint,
frozen at its starting weights by default. Shenfeld, Damani, Hübotter and Agrawal (2026),
"Self-Distillation Enables Continual Learning" (arXiv:2601.19897): trained this way, the model
learns the new task while forgetting less of what it knew than plain SFT on the same
demonstrations.

The script takes the same flags as TRL's `examples/scripts/sdft.py` — `ScriptArguments`,
`SDFTConfig`, `ModelConfig` and `--config recipe.yaml` — and `--dataset_name` may also be a
local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (under a minute on two cores, no network):
annotated-trl tiny tiny
python annotated_examples/sdft_training.py \
    --config annotated_examples/recipes/sdft_tiny.yaml

# One GPU: Qwen2.5-0.5B-Instruct on TL;DR demonstrations (the summaries become the teacher's
# hint):
python annotated_examples/sdft_training.py --config annotated_examples/recipes/sdft.yaml

# Eight GPUs on one machine (DDP; every process holds the student and its frozen teacher copy):
accelerate launch --num_processes 8 annotated_examples/sdft_training.py \
    --config annotated_examples/recipes/sdft.yaml

# LoRA: the teacher costs no memory (the adapter is switched off for its forward pass):
python annotated_examples/sdft_training.py --config annotated_examples/recipes/sdft.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 2e-4
```
"""

import sys

from datasets import DatasetDict
from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config
from trl.experimental.sdft import SDFTConfig, SDFTTrainer

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit

# ## 1. Arguments
#
# `ScriptArguments` (which data), `SDFTConfig` (how to train; it extends
# `transformers.TrainingArguments`) and `ModelConfig` (which model, LoRA or not). There is no
# teacher flag: the teacher is the student's own starting point (`teacher_model_kind="base"`),
# or the live student (`"live"`), or a moving average of it (`"ema"`).
#
# The defaults are the GPU recipe's model and data: Qwen2.5-0.5B-Instruct (the paper's model
# family; it trains Qwen2.5-7B-Instruct) learns from the TL;DR summaries of `trl-lib/tldr`.

parser = TrlParser((ScriptArguments, SDFTConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
    dataset_name="trl-lib/tldr",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads (a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Prompts are left-padded so that every sampled answer starts at the same column. Conversational
# prompts are rendered with the chat template and a generation prompt; the teacher's prompt is
# rendered the same way, after the demonstration is put into its last user turn.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
    padding_side="left",
    truncation_side="left",
)

# ## 3. Data
#
# The trainer reads two columns: `prompt` (a string or messages; the student sees only this) and
# `privileged_context` (what only the teacher sees: a demonstration, a hint). The teacher's
# prompt is `teacher_prompt_template` filled with both — by default the prompt, a blank line,
# then the context. Other columns are dropped.
#
# A dataset of plain demonstrations (`prompt` + `completion`) is accepted too: the completion
# becomes the context, worded as TRL's own SDFT example script words it. Every row is checked
# before any model is loaded: the error names the file and the line.

try:
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="sdft",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except DatasetError as error:
    sys.exit(f"error: {error}")


def demonstration_as_context(row: dict) -> dict:
    """`prompt` + `completion` -> `prompt` + `privileged_context` ("Example response: ...")."""
    completion = row["completion"]
    if isinstance(completion, list):  # assistant messages: their text
        completion = "\n".join(message["content"] for message in completion)
    return {"privileged_context": f"Example response: {completion.strip()}"}


def with_context(split):
    if "privileged_context" in split.column_names:
        return split
    return split.map(demonstration_as_context, remove_columns=["completion"])


dataset = DatasetDict({name: with_context(split) for name, split in dataset.items()})
train_dataset = dataset[script_args.dataset_train_split]
# Evaluation samples and scores every row at every `eval_steps` unless `--eval_max_samples N`
# picks N of its rows (drawn with `--seed`, the same rows every time).
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

# ## 4. Model and teacher
#
# The model is passed by name and loaded with `model_init_kwargs` (plus `quantization_config`
# for QLoRA). With the default `teacher_model_kind="base"` and no LoRA the trainer loads the
# same checkpoint a second time, frozen, as the teacher; with LoRA it keeps one copy and turns
# the adapter off for the teacher's forward pass.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}
quantization_config = get_quantization_config(model_args)
if quantization_config is not None:
    training_args.model_init_kwargs["quantization_config"] = quantization_config

# ## 5. Trainer
#
# Each step scores `per_device_train_batch_size` answers: that many over `num_generations`
# prompts, `num_generations` answers each, sampled at `temperature` up to
# `max_completion_length` tokens. Student and teacher then read
# the same answer tokens $y$ after their own prompts, $x$ and $x \oplus c$, and at every answer
# token $t$ the loss is a divergence between the two next-token distributions,
#
# $$D_\alpha\big(\pi_\theta(\cdot \mid x, y_{<t}),\ \pi_{\bar\theta}(\cdot \mid x,c,y_{<t})\big),$$
#
# $\alpha$ = `distillation_alpha`: 0 is forward KL (teacher ‖ student), 1 reverse KL (the
# paper's), between them a generalised Jensen–Shannon divergence (default 0.5). By default
# (`distillation_mode="topk_logits"`) both are restricted to the student's top
# `distillation_topk` tokens and renormalised. The teacher runs under `torch.no_grad()`: only
# the student's side carries gradient. Each row's loss is the mean over its answer tokens, then
# the rows are averaged.

trainer = SDFTTrainer(
    model=model_args.model_name_or_path,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`: `loss` and `sdft/distillation_loss` (the divergence above;
# `self_distillation/distillation_loss` is the same number under the name SDPO shares), the
# answers' lengths (`completions/mean_length`, `/min_length`, `/max_length`, the same over the
# answers that ended with EOS) and `completions/clipped_ratio` (the share cut at
# `max_completion_length`). Evaluation samples answers too: `eval_loss` is the divergence on the
# student's own answers to held-out prompts.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# Only the student is saved (weights, or the LoRA adapter, and the tokenizer); `save_state`
# writes `trainer_state.json` with the log history.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
