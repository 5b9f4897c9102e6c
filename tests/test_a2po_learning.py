"""A*-PO learns the toy task from its verifiable reward: the reward of the completions it samples
rises.

The tiny random policy almost never solves a problem (V* and the reward are then 0, and so are the
regression's target and its gradient), so A*-PO starts from the shared SFT warm start
(tests/support/warm_start.py: ~40% of problems solved greedily). Settings: the script's default
`arithmetic_reward`; stage 1 with 8 reference samples per prompt, `filter_all_incorrect` on (it
drops the ~60 of 256 prompts the reference never solved); stage 2 with 32 prompts per step, one
completion each, temperature 1.0, at most 10 completion tokens, lr 1e-4 constant, 80 steps,
A2POConfig's beta1 0.5 and beta2 1e-3.

What is measured: the expected reward of the trainer's own sampling (its `generation_config`,
which also keeps transformers' default top-k of 50) on the prompts it trains on, from 8 samples
per prompt (~1,550 answers, a fixed sampling seed) before and after. The logged `reward` of
20-step windows moved too much from run to run to assert on.

Measured on the 2-core machine (loaded; seeds 42-45, before benchmarks/cross_cpu.py): the
sampled reward rose 0.325 -> 0.401, 0.340 -> 0.433, 0.336 -> 0.392, 0.341 -> 0.412 (rises 0.075 /
0.094 / 0.056 / 0.070). Then with benchmarks/cross_cpu.py (benchmarks/results/cross_cpu.md), seed
offset 0 under five CPU settings (AVX2 and no-SIMD kernels, 1 and 2 threads, MKL_CBWR=COMPATIBLE):
0.028 / 0.028 / 0.066 / 0.066 / 0.038, and offsets 1 and 2: 0.065 / 0.061. It rose in every run,
but by as little as 0.028 (mean 0.050, sd 0.018): the threshold is 0, 2.8 sd below the mean (it
was 0.025, 0.2 sd below the suite's own setting). (Without the top-k of 50, as
`annotated_trl.toy_task.solved_fraction` samples, the rises were 0.042 / 0.054 / 0.043 / 0.009:
the updates push the sampled wrong answers down, and part of that mass lands in the tail.)
Tried and rejected: lr 2e-4 and above collapsed the reward in 3 of 4 seeds (to 0.02-0.12); 120
steps at 1e-4 ended below the start for seed 42; beta2 0.2 or 0.5 (reachable targets) did not
raise it in 60 steps.
Wall time on the 2-core machine (load ~2): the A*-PO part ~13 s (stage 1 1.6 s, 80 steps 8.4 s,
two measurements ~1.6 s, model loading), after the shared SFT warm start.
"""

import copy
from collections import Counter

import datasets
import pytest
import torch
from support.warm_start import arithmetic_reward, sft_warm_policy  # noqa: F401
from transformers import AutoTokenizer
from trl.experimental.a2po import A2POConfig, A2POTrainer

STEPS = 80
THRESHOLD = 0.0  # see the module docstring
SAMPLES = 8  # per prompt, to measure the sampled reward


def sampled_reward(trainer, prompts) -> float:
    """Mean reward of SAMPLES completions per prompt, drawn as the trainer draws them."""
    tokenizer = trainer.processing_class
    texts = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        for p in prompts["prompt"]
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    config = copy.deepcopy(trainer.generation_config)
    config.num_return_sequences = SAMPLES
    trainer.model.eval()
    with torch.random.fork_rng(), torch.no_grad():  # the trainer's random stream stays put
        torch.manual_seed(123)
        generated = trainer.model.generate(**batch, generation_config=config)
    completions = tokenizer.batch_decode(
        generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    answers = [a for a in prompts["answer"] for _ in range(SAMPLES)]
    rewards = arithmetic_reward(completions, answer=answers)
    return sum(rewards) / len(rewards)


@pytest.fixture(scope="module")
def a2po_run(tiny, sft_warm_policy, tmp_path_factory, seed_offset):  # noqa: F811
    prompts = datasets.load_dataset(
        "json", data_files=str(tiny.data / "conversational_prompt_only" / "train.jsonl")
    )["train"]
    args = A2POConfig(
        output_dir=str(tmp_path_factory.mktemp("a2po-learning")),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        learning_rate=1e-4,
        lr_scheduler_type="constant",
        per_device_train_batch_size=32,
        num_value_samples=8,
        max_completion_length=10,  # "3 + 4 = 7<|im_end|>" fits
        temperature=1.0,
        max_steps=STEPS,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=42 + seed_offset,
    )
    trainer = A2POTrainer(
        model=str(sft_warm_policy),
        reward_funcs=arithmetic_reward,
        args=args,
        train_dataset=prompts,
        processing_class=AutoTokenizer.from_pretrained(sft_warm_policy, padding_side="left"),
    )
    trainer._estimate_optimal_values()  # stage 1 now, to measure on the prompts it keeps
    kept = trainer.train_dataset
    before = sampled_reward(trainer, kept)
    trainer.train()  # stage 1 is done: train() goes straight to stage 2
    after = sampled_reward(trainer, kept)
    return trainer, prompts, before, after


@pytest.mark.learning
def test_a2po_stage1_keeps_solved_prompts_with_a_soft_max_value(a2po_run):
    trainer, prompts, before, _ = a2po_run
    tokenizer = trainer.processing_class

    def rendered(rows):
        return [
            tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
            for p in rows["prompt"]
        ]

    values = trainer._optimal_values
    # One V* per distinct prompt: the toy data repeats some questions (256 rows, fewer texts).
    assert set(values) == set(rendered(prompts)) and len(values) < len(prompts)
    kept = rendered(trainer.train_dataset)
    assert 0.5 * len(prompts) < len(kept) < len(prompts)  # the warm start solves most, not all
    # Every prompt with V* = 0 (its 8 samples all failed) is dropped. A repeated question is
    # estimated once per row: V* keeps the last row's estimate, while the filter drops the
    # question if any of its rows failed 8 times, so a dropped one may have V* > 0.
    dropped = set(values) - set(kept)
    assert {p for p, v in values.items() if v == 0.0} <= dropped
    rows_per_prompt = Counter(rendered(prompts))
    assert all(rows_per_prompt[p] > 1 for p in dropped if values[p] > 0)
    # A soft maximum over 8 samples sits well above the mean reward of one sample.
    assert sum(values[p] for p in kept) / len(kept) > before + 0.05


@pytest.mark.learning
def test_a2po_raises_sampled_reward(a2po_run, measured):
    trainer, _, before, after = a2po_run
    assert 0.2 < before < 0.5  # the warm start on the prompts it keeps
    assert trainer.state.global_step == STEPS
    measured.at_least("sampled reward rise, before to after", after - before, THRESHOLD)
