"""Every example script on the tiny fixture for a couple of steps: shared by the tests that run
every script the same way (tests/test_distributed.py, tests/test_reproducible.py); the data and
models each one needs come from the method table."""

from annotated_trl.methods import CPU_METHODS, METHODS

# Each script's fixture data, and what it needs beyond its tiny recipe and the tiny policy (the
# recipes name `tiny/...` paths relative to the repo; the test fixture lives elsewhere).
RUNS = {
    m.key: (
        m.fixture.data,
        [x for flag, model in m.fixture.models for x in (f"--{flag}", f"{{tiny}}/{model}")],
    )
    for m in CPU_METHODS
}
PORTS = tuple(m.key for m in METHODS if m.port)
STEPS = 2
LORA = ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"]


def script_args(method: str, tiny, out, processes: int = 1) -> list[str]:
    """`<method>_training.py` and its flags: the tiny recipe, STEPS optimiser steps on
    `processes` processes, no evaluation, a log every step, output to `out`."""
    data, extra = RUNS[method]
    # PPO counts prompts, not steps: 4 per process and micro-batch, 2 micro-batches per step.
    steps = ["--total_episodes", str(8 * processes * STEPS)] if method == "ppo" else []
    return [
        f"{method}_training.py",
        *["--config", f"annotated_examples/recipes/{method}_tiny.yaml"],
        *["--model_name_or_path", str(tiny.policy), "--dataset_name", str(tiny.data / data)],
        *[flag.format(tiny=tiny.root) for flag in extra],
        *(steps or ["--max_steps", str(STEPS)]),
        *["--eval_strategy", "no", "--logging_steps", "1", "--output_dir", str(out)],
    ]
