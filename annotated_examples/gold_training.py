r"""On-policy distillation across tokenizers (GOLD) with TRL's `GOLDTrainer`

Teach a small *student* to match a *teacher* of another model family, whose tokenizer cuts the
same text into other tokens. GKD's recipe (`gkd_training.py`) compares the two next-token
distributions position by position, which needs one shared vocabulary. GOLD keeps GKD's schedule
(a share `lmbda` of the batches are answers the student samples itself) and, with `use_uld_loss`,
swaps the divergence for the Universal Logit Distillation loss of Boizard et al. (2024, "Towards
Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs", arXiv 2402.12030):
the teacher re-reads the answer *as text* with its own tokenizer, the two token sequences are
aligned on the bytes where both tokenizers cut, and the two distributions of each aligned span are
compared after sorting their probabilities, so that token ids never have to agree. The name and
the alignment come from Patiño et al. (2025), "Unlocking On-Policy Distillation for Any Model
Family" (Hugging Face, the paper `GOLDTrainer` cites).

`GOLDTrainer` lives in `trl.experimental.gold` in TRL 1.16.0 and subclasses `SFTTrainer`. The
script takes `ScriptArguments`, `GOLDConfig`, `ModelConfig` and `--config recipe.yaml`;
`--dataset_name` may also be a local folder or `.json`/`.jsonl` file.

```bash { .no-run }
# Tiny CPU run on the offline fixture: the teacher (tiny/gold_teacher) has its own tokenizer.
annotated-trl tiny tiny
python annotated_examples/gold_training.py --config annotated_examples/recipes/gold_tiny.yaml

# The same-tokenizer path (GKD's generalised JSD), with the fixture's same-vocabulary teacher:
python annotated_examples/gold_training.py --config annotated_examples/recipes/gold_tiny.yaml \
    --use_uld_loss false --teacher_model_name_or_path tiny/teacher

# One GPU: distil Llama-3.2-1B-Instruct into Qwen2.5-0.5B-Instruct (two tokenizers):
python annotated_examples/gold_training.py --config annotated_examples/recipes/gold.yaml

# Eight GPUs on one machine (DDP; every process holds a student and a teacher):
accelerate launch --num_processes 8 annotated_examples/gold_training.py \
    --config annotated_examples/recipes/gold.yaml

# LoRA on the student (the teacher stays whole and frozen):
python annotated_examples/gold_training.py --config annotated_examples/recipes/gold.yaml \
    --use_peft --lora_r 32 --lora_alpha 16 --lora_target_modules all-linear \
    --learning_rate 2e-4
```
"""

import os
import sys

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # GOLD is experimental: silence its notice

from transformers import AutoTokenizer  # noqa: E402
from trl import (  # noqa: E402
    ModelConfig,
    TrlParser,
    get_peft_config,
    get_quantization_config,
)
from trl.experimental.gold import GOLDConfig, GOLDTrainer  # noqa: E402

from annotated_trl.data import DatasetError, ScriptArguments, eval_subset, load_checked_dataset  # noqa: E402
from annotated_trl.invocation import parse_or_exit  # noqa: E402
from annotated_trl.teachers import TeacherError, check_teacher  # noqa: E402

# ## 1. Arguments
#
# `ScriptArguments` says which data, `GOLDConfig` how to train (it extends `SFTConfig`, so every
# SFT flag exists too), `ModelConfig` which *student*. The teacher is a field of `GOLDConfig`
# (`--teacher_model_name_or_path`), and so is the switch that makes GOLD more than GKD:
# `--use_uld_loss true`. Its teacher's tokenizer is read from the teacher's folder unless
# `--teacher_tokenizer_name_or_path` names another. Flags win over the `--config` file.
#
# The defaults are a real cross-family run: Qwen2.5-0.5B-Instruct learns from
# Llama-3.2-1B-Instruct, whose vocabulary (128k tokens) has nothing in common with Qwen's (151k)
# but the bytes they spell.

parser = TrlParser((ScriptArguments, GOLDConfig, ModelConfig))
parser.set_defaults(
    model_name_or_path="Qwen/Qwen2.5-0.5B-Instruct",
    teacher_model_name_or_path="meta-llama/Llama-3.2-1B-Instruct",
    dataset_name="trl-lib/chatbot_arena_completions",
    use_uld_loss=True,
)
# Parsed as `parser.parse_args_and_config()` parses, but a mistake stops the script here with
# one line, before anything loads: a misspelt flag or recipe key, a model folder that is not
# there, bf16 without a GPU, an output folder we could not save to.
script_args, training_args, model_args = parse_or_exit(parser)

# ## 2. Tokenizer
#
# The student's tokenizer renders every conversation with the *student's* chat template. GOLD's
# collator splits the rendered text into a prompt and a completion and keeps both strings: under
# ULD the teacher tokenizes those same strings with its own tokenizer, so it reads the student's
# chat markup as text. The collator needs a pad token; we fall back to EOS.

tokenizer = AutoTokenizer.from_pretrained(
    model_args.model_name_or_path,
    revision=model_args.model_revision,
    trust_remote_code=training_args.trust_remote_code,
)
if tokenizer.pad_token is None:
    tokenizer.pad_token = tokenizer.eos_token

# ## 3. Teacher and data checks
#
# Without ULD, GOLD compares the two distributions id by id (GKD's generalised JSD) and, before
# training, *resizes the teacher's embeddings* to the student's vocabulary without a word: a
# teacher of another family would be silently truncated or padded. So in that mode we ask for the
# student's tokenizer (`annotated_trl.teachers`). With ULD any teacher goes, provided both
# tokenizers are byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM): the alignment reads byte offsets,
# and TRL would stop at the first batch otherwise.
#
# Rows are conversations (`{"messages": [...]}`, the last message the assistant's answer) or
# prompt/completion pairs. Every row is checked before any model loads; nothing is written.

try:
    if not training_args.use_uld_loss:
        check_teacher(
            tokenizer,
            model_args.model_name_or_path,
            training_args.teacher_model_name_or_path,
            trust_remote_code=training_args.trust_remote_code,
        )
    elif training_args.use_extended_uld and "ByteLevel" not in repr(
        tokenizer.backend_tokenizer.pre_tokenizer
    ):
        sys.exit(
            "error: --use_extended_uld needs byte-level BPE tokenizers (the student's is not); "
            "pass --use_extended_uld false to align by position instead"
        )
    dataset = load_checked_dataset(
        script_args.dataset_name,
        method="gold",
        tokenizer=tokenizer,
        config=script_args.dataset_config,
    )
except (DatasetError, TeacherError) as error:
    sys.exit(f"error: {error}")

train_dataset = dataset[script_args.dataset_train_split]
# Evaluation is off-policy: the held-out dataset answers, read by both models, no sampling.
eval_dataset = None
if training_args.eval_strategy != "no":
    eval_dataset = eval_subset(
        dataset[script_args.dataset_test_split], script_args.eval_max_samples, training_args.seed
    )

# ## 4. Student and teacher
#
# Both are passed by name. The student is loaded by `SFTTrainer` with `model_init_kwargs`; the
# teacher with `teacher_model_init_kwargs`, whose `dtype` GOLD reads directly (so we always set
# it). The teacher is frozen and never wrapped in LoRA.

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
# Each optimiser step draws, per micro-batch, "on-policy" with probability $\lambda$ (`lmbda`):
# the student then samples the answers itself (`temperature`, `top_p`, up to
# `max_completion_length` tokens); otherwise the dataset's answers stay. Both models read the
# answer. With ULD, the student's answer tokens $s_1..s_n$ and the teacher's $t_1..t_m$ of the
# same text are grouped into spans that end where both tokenizers cut; each span $g$ gets one
# distribution per model ($p^S_g$, $p^T_g$: a position's softmax, times the probabilities of the
# span's later tokens when a span holds several). The loss of a sequence is
#
# $$\mathcal{L}_{\mathrm{ULD}} = \frac{1}{G}\sum_{g=1}^{G}
#   \sum_{k=1}^{\max(V_S, V_T)} \left| p^{S}_{g,(k)} - p^{T}_{g,(k)} \right|,$$
#
# with $p_{(k)}$ the $k$-th largest probability (zero past a vocabulary's end), averaged over
# the batch's sequences. Sorting is what frees ULD from the ids: it compares the *shapes* of the
# two distributions. Of all ways to pair the teacher's tokens one-to-one with the student's, the
# rank-to-rank pairing gives the smallest L1 distance, so ULD is that minimum (the reference page
# derives it). Without ULD the loss is GKD's generalised JSD at `beta`, with `temperature`
# dividing both models' logits.

trainer = GOLDTrainer(
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
# GOLD logs `loss` (the ULD or JSD of the batch), and `on_policy_loss` / `off_policy_loss`, the
# same loss averaged over the micro-batches of each kind since the last log (one is missing when
# no batch of that kind was drawn). `eval_loss` is the held-out off-policy divergence: the steady
# number to watch. With `uld_use_hybrid_loss`, `matched_loss` and `unmatched_loss` split it into
# the tokens both vocabularies spell alike and the rest.

trainer.train(resume_from_checkpoint=training_args.resume_from_checkpoint)

# ## 7. Save
#
# Only the student is saved (weights or LoRA adapter, and its tokenizer); `save_state` writes
# `trainer_state.json` with the log history. `end()` closes trackers and process groups.

trainer.save_model(training_args.output_dir)
trainer.save_state()
if training_args.push_to_hub:
    trainer.push_to_hub(dataset_name=script_args.dataset_name)
trainer.end()
