r"""Generalized Knowledge Distillation (GKD) with TRL's `GKDTrainer`

Teach a small *student* model to match a larger *teacher*, token by token: at every position of an
answer the student's next-token distribution is pulled towards the teacher's, under a divergence
chosen by `beta` (forward KL, reverse KL, or a generalised Jensen–Shannon divergence between them).
With probability `lmbda` a batch's answers are first replaced by answers the *student* samples
itself (on-policy), so that it learns from its own mistakes, as in Agarwal et al. (2024),
"On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes".

`GKDTrainer` lives in `trl.experimental` in TRL 1.16.0; `DistillationTrainer` is the maintained,
fully on-policy successor (see `distillation_training.py`). The script takes the flags of an
`SFT`-style TRL script — `ScriptArguments`, `GKDConfig`, `ModelConfig` and `--config recipe.yaml` —
and `--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture (a few minutes on two cores, no network):
annotated-trl tiny tiny
python annotated_examples/gkd_training.py --config annotated_examples/recipes/gkd_tiny.yaml

# One GPU: distil Qwen2-1.5B-Instruct into Qwen2-0.5B-Instruct:
python annotated_examples/gkd_training.py --config annotated_examples/recipes/gkd.yaml

# Eight GPUs on one machine (DDP; every process holds a student and a teacher):
accelerate launch --num_processes 8 annotated_examples/gkd_training.py \
    --config annotated_examples/recipes/gkd.yaml

# LoRA on the student (the teacher stays whole and frozen):
python annotated_examples/gkd_training.py --config annotated_examples/recipes/gkd.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 2e-4
```
"""

import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GKD is experimental: silence its notice

from transformers import AutoTokenizer  # noqa: E402
from trl import (  # noqa: E402
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)
from trl.experimental.gkd import GKDConfig, GKDTrainer  # noqa: E402

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset  # noqa: E402
from annotated_trl.invocation import parse_or_exit  # noqa: E402
from annotated_trl.teachers import TeacherError, check_teacher  # noqa: E402

# ## 1. Arguments
#
# `ScriptArguments` says which data, `GKDConfig` how to train (it extends `SFTConfig`, so every
# SFT flag exists too), `ModelConfig` which *student* and whether to wrap it in LoRA. The teacher
# is a field of `GKDConfig`: `--teacher_model_name_or_path`. Flags win over the `--config` file.
#
# The defaults are a real run: Qwen2-0.5B-Instruct learns from Qwen2-1.5B-Instruct on chat data.
# Both share Qwen2's tokenizer, which GKD requires: it compares whole next-token distributions,
# so position $v$ of the student's vocabulary must be the same token as the teacher's.

parser = TrlParser((ScriptArguments, GKDConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2-0.5B-Instruct",
    teacher_model_name_or_path="Qwen/Qwen2-1.5B-Instruct",
    dataset_name="trl-lib/chatbot_arena_completions",
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to (else the first checkpoint
# would fail, minutes or hours in).
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# One tokenizer serves both models. Its chat template renders each conversation; GKD's collator
# splits it into a *prompt* (every message but the last) and a *completion* (the last message).
# Only completion tokens enter the loss; the prompt alone is what the student continues when it
# generates on-policy. The collator needs a pad token, so we fall back to EOS when there is none.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token

# ## 3. Data
#
# GKD trains on conversations, one per row: `{"messages": [{"role": "user", ...},
# {"role": "assistant", ...}]}`. The final assistant message is the off-policy answer, used on
# the $1-\lambda$ share of steps that do not generate.
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
        method="gkd",
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
# The student is passed by *name*; `SFTTrainer` (GKD's parent) loads it with `model_init_kwargs`,
# placing it correctly under `accelerate launch` and quantising it for QLoRA. The teacher is
# passed by name too and loaded with `teacher_model_init_kwargs`. GKD indexes
# `teacher_model_init_kwargs["dtype"]` directly, so we always set it (here: the student's dtype).
# The teacher is never trained and never quantised: it *is* the target distribution.

quantization_config = get_quantization_config(model_args)
training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}
if quantization_config is not None:  # QLoRA: `--load_in_4bit --use_peft`
    training_args.model_init_kwargs["quantization_config"] = quantization_config
training_args.teacher_model_init_kwargs = {
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    "trust_remote_code": training_args.trust_remote_code,
    **(training_args.teacher_model_init_kwargs or {}),
}

# ## 5. Trainer
#
# Each step takes a batch of conversations and, with probability $\lambda$ (`lmbda`), replaces
# their answers by answers the student samples at `temperature` (up to `max_new_tokens`).
# Otherwise, with `seq_kd` on, the *teacher* samples them (sequence-level KD); otherwise the
# dataset's answers stay. Then student and teacher both read the same tokens, and the loss is the
# mean over answer tokens of the generalised Jensen–Shannon divergence
#
# $$\begin{aligned}
#   D_{\mathrm{JSD}(\beta)} &= \beta\,\mathrm{KL}\!\left(p_T \,\|\, m\right)
#   + (1-\beta)\,\mathrm{KL}\!\left(p_S \,\|\, m\right), \\
#   m &= \beta\,p_T + (1-\beta)\,p_S,
#   \end{aligned}$$
#
# where $p_T$ and $p_S$ are the teacher's and the student's next-token distributions. TRL
# replaces the two ends by the plain KLs: $\beta = 0$ gives forward
# $\mathrm{KL}(p_T \,\|\, p_S)$, $\beta = 1$ gives reverse $\mathrm{KL}(p_S \,\|\, p_T)$.
# `temperature` shapes sampling only: `compute_loss` uses temperature 1 for the divergence.

trainer = GKDTrainer(
    model=model_args.model_name_or_path,
    teacher_model=training_args.teacher_model_name_or_path,
    args=training_args,
    train_dataset=train_dataset,
    eval_dataset=eval_dataset,
    processing_class=tokenizer,
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# GKD logs no metric of its own: `loss` is the divergence above on the batch it trained on
# (dataset, student or teacher answers, which vary from step to step, so it is noisy), and
# `eval_loss` the same divergence on the held-out conversations' *dataset* answers (evaluation
# never generates), which is the steady number to watch. Plus `grad_norm` and `learning_rate`.

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
