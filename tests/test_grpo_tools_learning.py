"""GRPO with tools learns to use the calculator: from a warm start that calls it in about half of
its samples, the share of completions that call it, and that call it right, rises within 40
steps; the share of right final answers rose too in every measured run (asserted: it does not fall).

The task (annotated_trl.tool_task): "What is 7 * 8?" with tools add(a, b) and multiply(a, b)
from the `Calculator` environment, whose `get_reward` pays 1.0 when a call computed the answer;
`final_answer_reward` pays 1.0 for the right number in the model's last message. The warm start
(tests/support/tool_warm_start.py) has seen demonstrations, half of them calling the tool. A
guess earns at most the second reward, a right call both: the calls win their groups.

Settings: the tiny recipe (groups of 8, 4 prompts per step, at most 24 completion tokens,
temperature 1.0, DAPO loss, beta 0), lr 3e-4 constant, 40 steps: the lab's GRPO settings (the lab
warms up with the SFT script instead: its seed-0 run moved calls 0.56 -> 0.76).

Measured on the 2-core machine (loaded by other jobs), means of the first and last 10 logged
steps, three runs (warm start seed 0 with GRPO seeds 42 and 43; warm start seed 1 with GRPO
seed 43, as `--seed-offset 1` runs it):
- tools/call_frequency: 0.50 -> 0.83, 0.50 -> 0.78, 0.58 -> 0.81 (rises 0.32 / 0.28 / 0.23;
  mean 0.28, sd 0.045). Threshold 0.1: 4 sd below.
- rewards/Calculator/mean (right calls): 0.36 -> 0.64, 0.38 -> 0.58, 0.39 -> 0.57 (rises
  0.28 / 0.20 / 0.18; mean 0.22, sd 0.053). Threshold 0.05: 3.2 sd below.
- rewards/final_answer_reward/mean: 0.32 -> 0.53, 0.36 -> 0.48, 0.37 -> 0.48 (rises 0.21 / 0.12
  / 0.11; mean 0.15, sd 0.055). Asserted only not to fall (threshold 0.0, 2.7 sd below): the
  tiny policy does not always repeat the tool's result.
- tools/failure_frequency: 0 in one run, up to 0.05 and 0.125 in the others (a call to a tool
  with a misspelt argument): not asserted.
Under benchmarks/cross_cpu.py (benchmarks/results/cross_cpu.md), five CPU settings at seed offset 0
and offsets 1, 2 on one: calls per completion rose 0.32 / 0.32 / 0.43 / 0.43 / 0.34, then 0.23 /
0.26 (threshold 0.1); right calls 0.28 / 0.28 / 0.37 / 0.37 / 0.34, then 0.18 / 0.24 (threshold
0.05); right final answers 0.21 / 0.21 / 0.27 / 0.27 / 0.21, then 0.11 / 0.19 (threshold 0).
Wall time: warm start 65-79 s and GRPO 41-44 s at load 6 on the 2 cores; 41 s and 16 s at load 3.
"""

import datasets
import pytest
from support.tool_warm_start import tool_warm_policy  # noqa: F401
from transformers import AutoTokenizer
from trl import GRPOConfig, GRPOTrainer

from annotated_trl import tool_task

STEPS, WINDOW = 40, 10


def train_with_tools(tiny, policy, output_dir, seed: int, steps: int = STEPS) -> list[dict]:
    """GRPO with the calculator from `policy`; the logged rows of every step."""
    prompts = datasets.load_dataset(
        "json", data_files=str(tiny.data / "tool_calling" / "train.jsonl")
    )["train"]
    args = GRPOConfig(
        output_dir=str(output_dir),
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        per_device_train_batch_size=32,
        num_generations=8,
        max_completion_length=24,
        temperature=1.0,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=seed,
    )
    trainer = GRPOTrainer(
        model=str(policy),
        reward_funcs=tool_task.final_answer_reward,
        args=args,
        train_dataset=prompts,
        processing_class=AutoTokenizer.from_pretrained(policy),
        environment_factory=tool_task.Calculator,
    )
    trainer.train()
    return [row for row in trainer.state.log_history if "reward" in row]


@pytest.fixture(scope="module")
def logs(tiny, tool_warm_policy, tmp_path_factory, seed_offset):  # noqa: F811
    return train_with_tools(
        tiny, tool_warm_policy, tmp_path_factory.mktemp("tools"), 42 + seed_offset
    )


def _rise(logs, key):
    first = sum(row[key] for row in logs[:WINDOW]) / WINDOW
    last = sum(row[key] for row in logs[-WINDOW:]) / WINDOW
    return first, last


@pytest.mark.learning
def test_grpo_tools_learns_to_call_the_calculator(logs, measured):
    assert len(logs) == STEPS
    first, last = _rise(logs, "tools/call_frequency")
    assert 0.2 < first < 0.8  # the warm start: groups mix calls and guesses
    measured.at_least("tool calls per completion, rise over 40 steps", last - first, 0.1)
    first, last = _rise(logs, "rewards/Calculator/mean")
    measured.at_least("right tool calls (environment reward), rise", last - first, 0.05)


@pytest.mark.learning
def test_grpo_tools_answers_better(logs, measured):
    first, last = _rise(logs, "rewards/final_answer_reward/mean")
    measured.at_least("right final answers, change over 40 steps", last - first, 0.0)
    assert all(0.0 <= row["tools/failure_frequency"] <= 1.0 for row in logs)
