"""The shipped accelerate configs, and a real two-process DDP launch of SFT, DPO and GRPO on CPU.

DeepSpeed is not installed here, so the ZeRO configs are checked by accelerate's own loader and
for the settings the site's distributed page describes, not launched. The DDP runs use the launch
line the site gives (`--multi_gpu --num_processes 2` with `ACCELERATE_USE_CPU=true`; `--cpu` would
silently start one process) and tests/ddp_probe.py, which runs the example script unchanged.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
from accelerate.utils import DistributedType
from conftest import OFFLINE_ENV, REPO
from transformers import AutoModelForCausalLM

pytestmark = pytest.mark.distributed

CONFIGS = sorted((REPO / "accelerate_configs").glob("*.yaml"))
EXPECTED = {
    "single_gpu": (DistributedType.NO, 1, 1),
    "multi_gpu": (DistributedType.MULTI_GPU, 8, 1),
    "deepspeed_zero2": (DistributedType.DEEPSPEED, 8, 1),
    "deepspeed_zero3": (DistributedType.DEEPSPEED, 8, 1),
    "fsdp2": (DistributedType.FSDP, 8, 1),
    "multi_node": (DistributedType.MULTI_GPU, 16, 2),
}


def test_distributed_every_config_is_described():
    assert {p.stem for p in CONFIGS} == set(EXPECTED)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_distributed_config_parses_with_accelerate(path):
    config = load_config_from_file(str(path))  # unknown keys raise here
    assert isinstance(config, ClusterConfig)
    kind, processes, machines = EXPECTED[path.stem]
    assert (config.distributed_type, config.num_processes, config.num_machines) == (
        kind,
        processes,
        machines,
    )
    assert not config.use_cpu
    if path.stem.startswith("deepspeed_zero"):
        stage = int(path.stem[-1])
        assert config.deepspeed_config["zero_stage"] == stage
        assert config.deepspeed_config["zero3_init_flag"] is (stage == 3)
    if path.stem == "fsdp2":
        assert config.fsdp_config["fsdp_version"] == 2
        assert config.fsdp_config["fsdp_reshard_after_forward"] is True
    if path.stem == "multi_node":
        assert config.main_process_ip and config.main_process_port


# --- A real two-process DDP run on CPU ----------------------------------------------------------

LAUNCH = [
    "--multi_gpu",
    "--num_processes",
    "2",
    "--num_machines",
    "1",
    "--mixed_precision",
    "no",
    "--dynamo_backend",
    "no",
]
RUNS = {
    "sft": ["--dataset_name", "{data}/conversational_language_modeling", "--max_steps", "3"],
    "dpo": ["--dataset_name", "{data}/preference", "--max_steps", "3"],
    "grpo": ["--dataset_name", "{data}/conversational_prompt_only", "--max_steps", "2"],
}


def launch(method: str, tiny, out: Path) -> subprocess.CompletedProcess:
    extra = [a.format(data=tiny.data) for a in RUNS[method]]
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        *LAUNCH,
        str(REPO / "tests" / "ddp_probe.py"),
        str(out),
        f"annotated_examples/{method}_training.py",
        "--config",
        f"annotated_examples/recipes/{method}_tiny.yaml",
        "--model_name_or_path",
        str(tiny.policy),
        *extra,
        "--eval_strategy",
        "no",
        "--logging_steps",
        "1",
        "--output_dir",
        str(out / "run"),
    ]
    env = {**os.environ, **OFFLINE_ENV, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("method", list(RUNS))
def test_distributed_ddp_two_cpu_processes_train_in_sync(method, tiny, tmp_path):
    result = launch(method, tiny, tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    reports = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    steps = int(RUNS[method][-1])
    for rank, report in enumerate(reports):
        assert report["rank"] == rank
        assert report["world_size"] == 2
        assert report["steps"] == steps
    # Each rank trained on its own slice of the data...
    assert reports[0]["first_batch"] != reports[1]["first_batch"]
    # ...and yet both ended with the same weights: the gradients were averaged across ranks.
    assert reports[0]["weights"] == reports[1]["weights"]
    # The weights did move away from the starting model.
    start = AutoModelForCausalLM.from_pretrained(tiny.policy, dtype=torch.float32)
    start_sums = {n: p.detach().float().sum().item() for n, p in start.named_parameters()}
    moved = [n for n, s in start_sums.items() if reports[0]["weight_sums"].get(n) != s]
    assert len(moved) > len(start_sums) // 2, f"only {len(moved)} of {len(start_sums)} moved"


COUNT_PROCESSES = """
import os, sys
from accelerate import PartialState
state = PartialState()
open(os.path.join(sys.argv[1], f"pid{os.getpid()}"), "w").write(str(state.num_processes))
"""


def test_distributed_cpu_flag_silently_starts_one_process(tmp_path):
    """The pitfall on the distributed page: `--cpu --num_processes 2` runs a single process."""
    probe = tmp_path / "count.py"
    probe.write_text(COUNT_PROCESSES)
    out = tmp_path / "out"
    out.mkdir()
    command = [sys.executable, "-m", "accelerate.commands.launch", "--cpu", "--num_processes", "2"]
    result = subprocess.run(
        [*command, str(probe), str(out)],
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    started = sorted(out.iterdir())
    assert len(started) == 1 and started[0].read_text() == "1"
