"""Distillation learns: the student's divergence to the teacher falls, on-policy and off.

Student (tiny/policy) and teacher (tiny/teacher, wider) are both random, so the only honest
measure is the divergence itself, the reverse KL (beta 1, the default) between their next-token
distributions: `eval_loss` on the student's own samples for held-out prompts (what the trainer
optimises), and our own teacher-forced reverse KL on the held-out *dataset* completions, which
the student never saw and the trainer never reads.

Measured with benchmarks/cross_cpu.py (benchmarks/results/cross_cpu.md) on an AMD EPYC, 40 steps,
batch 8, lr 1e-3: at seed offset 0 the five CPU settings (AVX2 and no-SIMD kernels, 1 and 2 threads,
MKL_CBWR=COMPATIBLE) agree to 6 digits:
  eval_loss  0.0192 -> 0.0094 (x0.490)
  reverse KL 0.0196 -> 0.0103 (x0.528, our own computation, dataset completions)
Seed offsets 1 and 2: x0.497 / x0.481 and x0.489 / x0.515 (sd 0.008 and 0.020).
Slower than GKD's fall at the same budget (lr 1e-3 is the same; here every step is on-policy and
the loss is the reverse KL). The thresholds ask for less than x0.75: a student that did not
move (x1.0) fails.
"""

import json

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import DistillationConfig, DistillationTrainer

pytestmark = pytest.mark.learning


def _rows(tiny, fmt, split):
    path = tiny.data / fmt / f"{split}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _reverse_kl_on_completions(student, teacher, tokenizer, rows) -> float:
    """Our own token-level KL(student || teacher) at the positions predicting each completion."""
    total, count = 0.0, 0
    student.eval()
    with torch.no_grad():
        for row in rows:
            prompt = tokenizer(row["prompt"])["input_ids"]
            ids = torch.tensor([prompt + tokenizer(row["completion"])["input_ids"]])
            predicting = slice(len(prompt) - 1, ids.shape[1] - 1)
            log_s = student(input_ids=ids).logits[0, predicting].log_softmax(-1)
            log_t = teacher(input_ids=ids).logits[0, predicting].log_softmax(-1)
            total += (log_s.exp() * (log_s - log_t)).sum().item()
            count += log_s.shape[0]
    return total / count


@pytest.fixture(scope="module")
def distillation_learning(tiny, tmp_path_factory, seed_offset):
    torch.manual_seed(42 + seed_offset)
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy, padding_side="left")
    teacher = AutoModelForCausalLM.from_pretrained(tiny.teacher)
    args = DistillationConfig(
        output_dir=str(tmp_path_factory.mktemp("distillation_learning")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        per_device_train_batch_size=8,
        per_device_eval_batch_size=32,
        max_steps=40,
        max_completion_length=8,
        beta=1.0,
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        seed=42 + seed_offset,
    )
    trainer = DistillationTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        teacher_model=teacher,
        args=args,
        train_dataset=Dataset.from_list(_rows(tiny, "prompt_only", "train")),
        eval_dataset=Dataset.from_list(_rows(tiny, "prompt_only", "test")),
        processing_class=tokenizer,
    )
    held_out = _rows(tiny, "prompt_completion", "test")

    def measure():
        kl = _reverse_kl_on_completions(trainer.model, teacher, tokenizer, held_out)
        return {"eval": trainer.evaluate()["eval_loss"], "kl": kl}

    before = measure()
    trainer.train()
    after = measure()
    print(f"\ndistillation learning: before {before} after {after}")
    return before, after


def test_distillation_eval_divergence_falls(distillation_learning, measured):
    before, after = distillation_learning
    measured.at_most("held-out divergence, after / before", after["eval"] / before["eval"], 0.75)


def test_distillation_reverse_kl_on_unseen_completions_falls(distillation_learning, measured):
    before, after = distillation_learning
    measured.at_most("our reverse KL, after / before", after["kl"] / before["kl"], 0.75)
