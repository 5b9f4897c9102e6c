r"""On-policy knowledge distillation with TRL's `DistillationTrainer`

Teach a small *student* model to match a larger *teacher* on the student's own answers. For every
prompt the student samples a completion; then, at every token of it, the student's next-token
distribution is pulled towards the teacher's under a divergence chosen by `beta` (forward KL,
reverse KL, or a generalised Jensen–Shannon divergence between them). This is the fully on-policy
case of Agarwal et al. (2024), "On-Policy Distillation of Language Models: Learning from
Self-Generated Mistakes", and TRL 1.16.0's maintained successor of the experimental `GKDTrainer`
(see `gkd_training.py`), with vLLM generation and a loss that never builds the full logits.

The script takes the same flags as `trl distillation` — `ScriptArguments`, `DistillationConfig`,
`ModelConfig` and `--config recipe.yaml` — and `--dataset_name` may also be a local folder or
`.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (a few minutes on two cores, no network):
annotated-trl tiny tiny
python annotated_examples/distillation_training.py \
    --config annotated_examples/recipes/distillation_tiny.yaml

# One GPU: distil Qwen2.5-1.5B-Instruct into Qwen2.5-0.5B-Instruct:
python annotated_examples/distillation_training.py \
    --config annotated_examples/recipes/distillation.yaml

# One GPU, generation with vLLM in the same process; TRL's `vllm` extra installs a vLLM that
# TRL 1.16 supports (>= 0.22.0, <= 0.31.0):
pip install "trl[vllm]==1.16.0"
python annotated_examples/distillation_training.py \
    --config annotated_examples/recipes/distillation.yaml \
    --use_vllm --vllm_mode colocate --vllm_gpu_memory_utilization 0.3

# Eight GPUs on one machine (DDP; every process holds a student and a teacher):
accelerate launch --num_processes 8 annotated_examples/distillation_training.py \
    --config annotated_examples/recipes/distillation.yaml

# vLLM as a server on GPU 0, training on GPUs 1-7:
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-0.5B-Instruct
CUDA_VISIBLE_DEVICES=1,2,3,4,5,6,7 accelerate launch --num_processes 7 \
    annotated_examples/distillation_training.py \
    --config annotated_examples/recipes/distillation.yaml --use_vllm --vllm_mode server

# LoRA on the student (the teacher stays whole and frozen):
python annotated_examples/distillation_training.py \
    --config annotated_examples/recipes/distillation.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 2e-4
```
"""

import sys

from transformers import AutoTokenizer
from trl import (
    DistillationConfig,
    DistillationTrainer,
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.teachers import TeacherError, check_teacher

# ## 1. Arguments
#
# The three dataclasses of `trl distillation`: `ScriptArguments` (which data),
# `DistillationConfig` (how to train; it extends `transformers.TrainingArguments`) and
# `ModelConfig` (which *student*, LoRA or not). The teacher is a field of `DistillationConfig`:
# `--teacher_model_name_or_path`. Flags win over the `--config` file.
#
# The defaults are a real run, the one in the docstring of TRL's `trl/scripts/distillation.py`:
# Qwen2.5-0.5B-Instruct learns from Qwen2.5-1.5B-Instruct on UltraFeedback prompts. Both share
# one tokenizer, which is required: the loss compares whole next-token distributions, so position
# $v$ of the student's vocabulary must be the same token as the teacher's.

parser = TrlParser((ScriptArguments, DistillationConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
    teacher_model_name_or_path="Qwen/Qwen2.5-1.5B-Instruct",
    dataset_name="trl-lib/ultrafeedback-prompt",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# Prompts are left-padded so that every sampled completion starts at the same column (the
# trainer requires `padding_side="left"`). Conversational prompts are rendered with the chat
# template and a generation prompt (`<|im_start|>assistant` for ChatML).

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
    padding_side="left",
    truncation_side="left",
)

# ## 3. Data
#
# The trainer reads one column, `"prompt"`: a string or a list of messages. It generates every
# completion itself, so a `"completion"` column is accepted but never read, and other columns
# (such as the toy task's `"answer"`) are carried along and ignored.
#
# Every row is checked before any model is loaded: a malformed file costs a second, not a
# download, and the error names the file and the line. Nothing is written to `--output_dir`.
# The teacher is checked first, from its tokenizer and config only: it must share the
# student's vocabulary (`annotated_trl.teachers`), which TRL itself never verifies.

try:
    check_teacher(
        tokenizer,
        model_args.model_name_or_path,
        training_args.teacher_model_name_or_path,
        trust_remote_code=training_args.trust_remote_code,
    )
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="distillation",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except (DatasetError, TeacherError) as error:
    sys.exit(f"error: {error}")

train_dataset = dataset[script_args.dataset_train_split]
# Evaluation passes over the whole test split at every `eval_steps` unless `--eval_max_samples N`
# picks N of its rows (drawn with `--seed`, the same rows every time).
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

# ## 4. Student and teacher
#
# Both are passed by name; the trainer loads the student with `model_init_kwargs` (plus the
# `quantization_config` argument for QLoRA) and the teacher with `teacher_model_init_kwargs`.
# The teacher is left unquantised on purpose: it *is* the target distribution, and quantising it
# would change what the student learns. It is never trained and runs under `torch.no_grad()`.

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}
training_args.teacher_model_init_kwargs = {
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.teacher_model_init_kwargs or {}),
}

# ## 5. Trainer
#
# Each optimisation step takes `per_device_train_batch_size × gradient_accumulation_steps`
# prompts, samples one completion per prompt from the current student (transformers `generate`,
# or vLLM with `--use_vllm`) at `temperature`, `top_p`, `top_k`, up to `max_completion_length`
# tokens, and reuses them over the accumulation window. Student and teacher then read prompt +
# completion, and the loss is the mean over completion tokens of
#
# $$\begin{aligned}
#   D_{\mathrm{JSD}(\beta)} &= \beta\,\mathrm{KL}\!\left(p_T^\tau \,\|\, m\right)
#   + (1-\beta)\,\mathrm{KL}\!\left(p_S^\tau \,\|\, m\right), \\
#   m &= \beta\,p_T^\tau + (1-\beta)\,p_S^\tau,
#   \end{aligned}$$
#
# with both distributions softened by the same temperature $\tau$ (`temperature`, also used for
# sampling). The ends are the plain KLs: $\beta = 0$ is forward $\mathrm{KL}(p_T \,\|\, p_S)$
# (mass-covering) and $\beta = 1$, the default, reverse $\mathrm{KL}(p_S \,\|\, p_T)$
# (mode-seeking). The logits are computed a chunk of vocabulary at a time, never all at once.

trainer = DistillationTrainer(
    model=model_args.model_name_or_path,
    teacher_model=training_args.teacher_model_name_or_path,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    quantization_config=get_quantization_config(model_args),
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`: `loss` (the divergence above, on the student's fresh samples),
# `entropy` (of the student's next-token distribution on those tokens, nats),
# `completions/mean_length`, `/min_length`, `/max_length`, `completions/clipped_ratio` (the share
# that hit `max_completion_length` without EOS) and the same lengths over terminated completions,
# `num_tokens`, `step_time`, `grad_norm`. Evaluation samples completions too, so `eval_loss` is
# the divergence on the student's *own* answers to held-out prompts.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# Only the student is saved (weights, or the LoRA adapter, and the tokenizer); `save_state`
# writes `trainer_state.json` with the log history. `end()` closes trackers and process groups.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
