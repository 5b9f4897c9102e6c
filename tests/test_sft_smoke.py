"""SFT smoke tests: the example script, run as a user runs it, trains and saves a usable model.

One variant per data shape SFT accepts, plus LoRA: the recipe's own shape (conversational) runs
as a subprocess, the others in-process (tests/smoke_support.py). The two-process `accelerate
launch` run is a `distributed` test: it starts two more Python processes, which is the smoke
budget's largest single cost.
"""

import json
import math
import os
import socket
import subprocess
import sys

import pytest
import torch
from conftest import OFFLINE_ENV, REPO
from safetensors.torch import load_file
from smoke_support import cli_runs, trained  # noqa: F401  (cli_runs: the session's subprocesses)
from transformers import AutoModelForCausalLM, AutoTokenizer

RECIPE = "annotated_examples/recipes/sft_tiny.yaml"

# One variant per data shape SFT accepts, plus LoRA. Flags override the tiny recipe.
CASES = {
    "sft-text": ("language_modeling", ["--assistant_only_loss", "false"]),
    "sft-prompt-completion": ("prompt_completion", ["--assistant_only_loss", "false"]),
    "sft-conversational-prompt-completion": ("conversational_prompt_completion", []),
    "sft-lora": (
        "conversational_language_modeling",
        ["--use_peft", "--lora_r", "4", "--lora_alpha", "8", "--lora_dropout", "0"],
    ),
    "sft-conversational": ("conversational_language_modeling", []),
}
CLI_CASE = "sft-conversational"


def case_args(tiny, case, out):
    data_format, extra = CASES[case]
    return [
        "sft_training.py",
        *["--config", RECIPE, "--model_name_or_path", tiny.policy],
        *["--dataset_name", tiny.data / data_format, "--output_dir", out],
        *["--max_steps", "20", "--logging_steps", "5", "--eval_steps", "10", *extra],
    ]


def _free_port() -> int:
    # A fixed rendezvous port (accelerate's default 29500) collides with any other run on it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _log_history(out):
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


@pytest.mark.smoke
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_sft_script_trains_and_saves(request, tiny, case):
    extra = CASES[case][1]
    out = trained(request, case)

    history = _log_history(out)
    train_losses = [row["loss"] for row in history if "loss" in row]
    eval_losses = [row["eval_loss"] for row in history if "eval_loss" in row]
    assert len(train_losses) == 4 and len(eval_losses) == 2  # logging_steps 5, eval_steps 10
    assert all(math.isfinite(x) for x in train_losses + eval_losses)
    accuracies = [row["mean_token_accuracy"] for row in history if "mean_token_accuracy" in row]
    assert all(0.0 <= a <= 1.0 for a in accuracies)

    tokenizer = AutoTokenizer.from_pretrained(out)
    if "--use_peft" in extra:
        from peft import AutoPeftModelForCausalLM

        # Only the adapter is saved; LoRA's B starts at zero, so non-zero B means it trained.
        adapter = load_file(out / "adapter_model.safetensors")
        lora_b = [w for name, w in adapter.items() if "lora_B" in name]
        assert lora_b and all(w.abs().max() > 0 for w in lora_b)
        assert not (out / "model.safetensors").exists()
        model = AutoPeftModelForCausalLM.from_pretrained(out)
    else:
        before = load_file(tiny.policy / "model.safetensors")
        after = load_file(out / "model.safetensors")
        assert before.keys() == after.keys()
        assert any(not torch.equal(before[k], after[k]) for k in before)
        model = AutoModelForCausalLM.from_pretrained(out)

    prompt = tokenizer("What is 2 + 3?", return_tensors="pt")
    generated = model.generate(**prompt, max_new_tokens=4, do_sample=False)
    assert generated.shape[1] > prompt["input_ids"].shape[1]


@pytest.mark.distributed
def test_sft_script_under_accelerate_launch_ddp(tiny, tmp_path):
    """Two real processes (DDP over gloo on CPU), launched the way the script's header says.

    `accelerate launch --cpu --num_processes 2` silently starts ONE process; `--multi_gpu` with
    `use_cpu` (from the recipe) gives two. The epoch counter proves it: 10 steps x 16 rows per
    process x 2 processes over 256 rows is 1.25 epochs; one process would reach 0.625.
    """
    out = tmp_path / "out"
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu"]
    launch += ["--num_processes", "2", "--num_machines", "1", "--mixed_precision", "no"]
    launch += ["--dynamo_backend", "no", "--main_process_port", str(_free_port())]
    launch += [str(REPO / "annotated_examples" / "sft_training.py")]
    args = ["--config", RECIPE, "--model_name_or_path", tiny.policy, "--output_dir", out]
    args += ["--dataset_name", tiny.data / "conversational_language_modeling"]
    args += ["--max_steps", "10", "--eval_strategy", "no"]
    result = subprocess.run(
        [*launch, *map(str, args)],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    final = _log_history(out)[-1]
    assert final["step"] == 10 and final["epoch"] == pytest.approx(1.25)
    assert math.isfinite(final["train_loss"])
    assert AutoModelForCausalLM.from_pretrained(out) is not None
