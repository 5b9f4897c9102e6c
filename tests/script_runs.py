"""Every example script on the tiny fixture for a couple of steps: shared by the tests that run
all sixteen the same way (tests/test_distributed.py, tests/test_reproducible.py)."""

# Each script's data, and what it needs beyond its tiny recipe and the tiny policy (the recipes
# name `tiny/...` paths relative to the repo; the test fixture lives elsewhere).
REWARD = ["--reward_model_path", "{tiny}/reward"]
TEACHER = ["--teacher_model_name_or_path", "{tiny}/teacher"]
RUNS = {
    "sft": ("conversational_language_modeling", []),
    "dpo": ("preference", []),
    "reward": ("preference", []),
    "kto": ("unpaired_preference", []),
    "orpo": ("preference", []),
    "cpo": ("preference", []),
    "grpo": ("conversational_prompt_only", []),
    "rloo": ("conversational_prompt_only", []),
    "online_dpo": ("conversational_prompt_only", REWARD),
    "gkd": ("conversational_language_modeling", TEACHER),
    "distillation": ("prompt_only", TEACHER),
    "ppo": ("conversational_prompt_only", REWARD),
    "bco": ("unpaired_preference", []),
    "nash_md": ("conversational_prompt_only", REWARD),
    "xpo": ("conversational_prompt_only", REWARD),
    "prm": ("stepwise_supervision", ["--model_name_or_path", "{tiny}/token_classifier"]),
}
PORTS = ("ppo", "bco", "nash_md", "xpo", "prm")
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
