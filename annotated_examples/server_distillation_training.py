r"""On-policy distillation from a vLLM-served teacher with `ServerDistillationTrainer` (GPU only)

Distillation (`distillation_training.py`) with the teacher moved out of the training process. The
student samples a completion for each prompt, exactly as `DistillationTrainer` does; then,
instead of running a teacher forward pass on its own GPU, the trainer sends prompt + completion
as token ids to a vLLM server that hosts the teacher and asks for the teacher's log-probability
of each completion token and its top-`loss_top_k` candidates. The server never sends a whole
next-token distribution, only those few numbers per token, so the divergence is computed on
that small support plus one *tail bucket* holding the rest of the probability mass.

Why a server: the teacher can be far larger than the student (a 7B teacher for a 0.5B student
here), sit on its own GPUs with vLLM's fast kernels, and be shared by several training jobs.
The price is the sparse support: with `beta > 0` only the sampled token and the teacher's top
token are compared.

This script does not run on a CPU, and refuses in one line if you try: the teacher must be a
vLLM server, which runs on CUDA GPUs. What runs on a CPU (the sparse divergences, the tail
bucket, the server answer's alignment, the config checks) is tested in
`tests/test_server_distillation_math.py`, against a stand-in server that scores with a local
model. Its asynchronous sibling, `AsyncDistillationTrainer` (several teachers, MOPD), is
explained in the walkthrough; this script runs the synchronous trainer.

The script takes the flags of `ServerDistillationConfig` and `ModelConfig`, the script
arguments, and `--config recipe.yaml`; `--dataset_name` may also be a local folder or a
`.json`/`.jsonl` file. TRL has no `trl server_distillation` command: the trainer is
experimental (`trl.experimental.server_distillation`).

```bash { .no-run }
# Two GPUs: GPU 0 serves the teacher, GPU 1 trains the student (TRL's `vllm` extra pins what
# TRL 1.16 supports: vLLM >= 0.22.0, <= 0.31.0). `trl vllm-serve` starts vLLM with
# `--logprobs-mode processed_logprobs --max-logprobs -1`, which exact teacher scores need.
pip install "trl[vllm]==1.16.0"
CUDA_VISIBLE_DEVICES=0 trl vllm-serve --model Qwen/Qwen2.5-7B-Instruct --port 8000 &
CUDA_VISIBLE_DEVICES=1 python annotated_examples/server_distillation_training.py \
    --config annotated_examples/recipes/server_distillation.yaml

# Forward KL on the teacher's top 8 tokens instead of reverse KL on the sampled token:
CUDA_VISIBLE_DEVICES=1 python annotated_examples/server_distillation_training.py \
    --config annotated_examples/recipes/server_distillation.yaml --beta 0.0 --loss_top_k 8
```
"""

import sys

from transformers import AutoTokenizer
from trl import ModelConfig, TrlParser, get_peft_config, get_quantization_config
from trl.experimental.server_distillation import (
    ServerDistillationConfig,
    ServerDistillationTrainer,
)

from annotated_trl.data import DatasetError, ScriptArguments, load_checked_dataset
from annotated_trl.invocation import parse_or_exit
from annotated_trl.teachers import TeacherError, check_teacher

# ## 1. Arguments
#
# `ServerDistillationConfig` is `DistillationConfig` plus four fields: the teacher server's
# address (`teacher_model_server_url`, required), how many teacher candidates per token
# (`loss_top_k`, default 1), the tail bucket (`loss_add_tail`, default on) and which token
# reverse KL compares (`reverse_kl_top_1_mode`, only `"sampled"` works with a server). It also
# moves the *student's* optional vLLM server to port 8001 (`vllm_server_port`), so that the
# teacher can keep vLLM's usual 8000.
#
# The config refuses, at parse time, the combinations a server cannot serve: `beta > 0` with
# `loss_top_k != 1`, and `beta == 0` with `loss_top_k == 0` (the whole vocabulary).

parser = TrlParser((ScriptArguments, ServerDistillationConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
    dataset_name="trl-lib/ultrafeedback-prompt",
)
# On a machine without CUDA this stops here with one line (the method table's `gpu_only` reason),
# before the flags are even checked. Otherwise it parses as `parse_args_and_config()` does, and a
# mistake stops the script with one line before anything loads.
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# The server receives token ids, not text, and the ids it sends back index the student's
# vocabulary directly: teacher and student must share one tokenizer. Prompts are left-padded, as
# `DistillationTrainer` requires.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
    padding_side="left",
    truncation_side="left",
)

# ## 3. Data
#
# As for Distillation: one `"prompt"` column (text or messages); a `"completion"` column is
# accepted and never read, since the student writes its own. Every row is checked before any
# model loads. If you name the teacher's checkpoint with `--teacher_model_name_or_path` (the
# trainer itself ignores that field), its tokenizer is compared with the student's first: TRL
# never checks, and a teacher with another vocabulary would train on the wrong token ids.

try:
    if training_args.teacher_model_name_or_path:
        check_teacher(
            tokenizer,
            model_args.model_name_or_path,
            training_args.teacher_model_name_or_path,
            trust_remote_code=training_args.trust_remote_code,
        )
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="server_distillation",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except (DatasetError, TeacherError) as error:
    sys.exit(f"error: {error}")
train_dataset = dataset[script_args.dataset_train_split]

# ## 4. Student
#
# Passed by name; the trainer loads it with `model_init_kwargs`. There is no teacher to load:
# the trainer calls `DistillationTrainer.__init__` with `teacher_model=None` and opens a client
# to the server instead (it waits up to 60 s for the server to answer).

training_args.model_init_kwargs = {
    "revision": model_args.model_revision,
    "dtype": model_args.dtype,
    "attn_implementation": model_args.attn_implementation,
    **(training_args.model_init_kwargs or {}),
}

# ## 5. Trainer
#
# Each step: the student samples completions (transformers `generate`, or its own vLLM with
# `--use_vllm`); the trainer trims the padding and posts every prompt + completion to the
# teacher's `/v1/completions` with `max_tokens=1` and `prompt_logprobs=loss_top_k`, which makes
# vLLM score the given tokens instead of writing new ones. Per completion token $t$ it gets back
# the teacher's log-probability of the sampled token $y_t$ and of its top-$k$ tokens.
#
# With $\beta = 0$ the support $S_t$ is the teacher's top $k$; with $\beta = 1$ the sampled token
# alone; in between, the teacher's top token and the sampled token. On $S_t$ plus a tail bucket
# $\bot$ holding the rest ($1 - \sum_{v\in S_t} p(v)$, for each model), the loss is the mean over
# completion tokens of the generalised JSD
#
# $$\begin{aligned}
#   D_\beta(p_T \,\|\, p_S) &= \beta\,\mathrm{KL}(p_T \| m) + (1-\beta)\,\mathrm{KL}(p_S \| m), \\
#   m &= \beta\,p_T + (1-\beta)\,p_S,
#   \end{aligned}$$
#
# whose ends are forward $\mathrm{KL}(p_T\|p_S)$ ($\beta=0$) and reverse $\mathrm{KL}(p_S\|p_T)$
# ($\beta=1$, the default). Both sides use `temperature`, the teacher's applied by the server.

trainer = ServerDistillationTrainer(
    model=model_args.model_name_or_path,
    args=training_args,
    train_dataset=train_dataset,
    processing_class=tokenizer,
    quantization_config=get_quantization_config(model_args),
    peft_config=get_peft_config(model_args),
)

# ## 6. Train
#
# Logged every `logging_steps`: `loss` (the sparse divergence above), `completions/mean_length`,
# `/min_length`, `/max_length`, `completions/clipped_ratio` and the same over terminated
# completions, `num_tokens`, `step_time`, `grad_norm`. Not `entropy`, which Distillation logs:
# it is computed in the `compute_loss` this trainer replaces. No evaluation set is passed.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# Only the student is saved (weights or LoRA adapter, and the tokenizer); `save_state` writes
# `trainer_state.json` with the log history.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
