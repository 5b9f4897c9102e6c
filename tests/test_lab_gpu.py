"""The lab's GPU mode (annotated_trl.lab.gpu): each method's GPU recipe under `accelerate launch`.

No GPU here, so the GPU runs themselves wait for one; everything around them runs for real: a
recipe launched by `accelerate launch` on the CPU and recorded as the GPU lab records it, the
preflight that stops a lab before anything loads, the commands, and the refusals."""

import json
import subprocess
import sys

import pytest
import yaml
from support.processes import OFFLINE_ENV, REPO

from annotated_trl.lab.gpu import (
    ACCELERATE_CONFIG,
    RECIPES,
    launch_argv,
    preflight,
    run_gpu_lab,
    summary_table,
)
from annotated_trl.methods import BY_KEY


@pytest.mark.smoke
def test_a_recipe_runs_under_accelerate_launch_and_is_recorded(tiny, tmp_path):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    recipe = yaml.safe_load((RECIPES / "dpo_tiny.yaml").read_text())
    data = tiny.data / BY_KEY["dpo"].fixture.data
    recipe.update(model_name_or_path=str(tiny.policy), dataset_name=str(data), eval_strategy="no")
    (recipes / "dpo.yaml").write_text(yaml.safe_dump(recipe))
    on_cpu = {**yaml.safe_load(ACCELERATE_CONFIG.read_text()), "use_cpu": True}
    (tmp_path / "cpu.yaml").write_text(yaml.safe_dump(on_cpu))

    # The preflight, offline: the recipe's model and data are folders, so nothing is missing, and
    # the doctor estimates the memory of the model it finds there.
    errors, estimates = preflight(["dpo"], tmp_path / "cpu.yaml", True, recipes)
    assert errors == [] and estimates["dpo"] > 0

    out = tmp_path / "lab"
    results = run_gpu_lab(out, ["dpo"], [0], 2, tmp_path / "cpu.yaml", True, estimates, recipes)

    assert results["failed"] == []
    [run] = results["runs"]
    assert run["steps"] == 2 and [row["step"] for row in run["log"] if "loss" in row] == [1, 2]
    assert run["command"].startswith(f"accelerate launch --config_file {tmp_path / 'cpu.yaml'} ")
    assert "--max_steps 2 --logging_steps 1 --seed 0" in run["command"]
    assert run["peak_gpu_mib"] is None  # no nvidia-smi on this machine
    assert results["provenance"]["machine"].startswith("no GPU")
    assert json.loads((out / "results.json").read_text()) == results
    # What the lab page shows of it: one row, the estimate beside no measured peak, and where
    # the CPU lab's curves for DPO went.
    _, _, line = summary_table(results).splitlines()
    cells = [cell.strip() for cell in line.strip("|").split("|")]
    estimate = f"{run['estimated_gpu_mib']:,.0f}"
    assert cells[:3] == ["DPO", "1", "2"] and cells[4:6] == ["—", estimate]
    losses = [row["loss"] for row in run["log"] if "loss" in row]
    assert f"`loss` {losses[0]:.3g} → {losses[-1]:.3g}" in cells[6]


def test_preflight_names_what_the_cache_lacks_before_anything_loads(tmp_path):
    recipe = yaml.safe_load((RECIPES / "ppo.yaml").read_text())
    recipe.update(
        dataset_name="annotated-trl-test/no-data", reward_model_path="annotated-trl-test/no-rm"
    )
    (tmp_path / "ppo.yaml").write_text(yaml.safe_dump(recipe))
    online, _ = preflight(["ppo"], ACCELERATE_CONFIG, False, tmp_path)
    offline, estimates = preflight(["ppo"], ACCELERATE_CONFIG, True, tmp_path)

    assert online == []  # the scripts would download them; the doctor only warns
    hub_out = "is not in the local cache and --offline keeps the Hub out; fix: `hf download"
    assert offline == [
        f"ppo: dataset annotated-trl-test/no-data {hub_out} --repo-type dataset "
        "annotated-trl-test/no-data` while online",
        f"ppo: model {recipe['model_name_or_path']} {hub_out} {recipe['model_name_or_path']}` "
        "while online",
        f"ppo: model annotated-trl-test/no-rm {hub_out} annotated-trl-test/no-rm` while online",
    ]
    assert estimates == {"ppo": None}  # no config.json to size the model from


def test_commands_take_the_recipe_and_the_budget(tmp_path):
    grpo = launch_argv("grpo", 1, 50, tmp_path, ACCELERATE_CONFIG)
    assert grpo[1:5] == [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(ACCELERATE_CONFIG),
    ]
    assert grpo[grpo.index("--config") + 1] == str(RECIPES / "grpo.yaml")
    assert grpo[grpo.index("--max_steps") + 1] == "50"
    assert grpo[grpo.index("--output_dir") + 1] == str(tmp_path / "runs" / "grpo" / "seed1")
    # PPO counts episodes: per_device_train_batch_size 16 x gradient_accumulation_steps 4 x
    # num_mini_batches 1 per process and step, times the config's processes (1, then 8).
    for config, processes in (("single_gpu", 1), ("multi_gpu", 8)):
        ppo = launch_argv("ppo", 0, 50, tmp_path, REPO / "accelerate_configs" / f"{config}.yaml")
        assert ppo[ppo.index("--total_episodes") + 1] == str(50 * 16 * 4 * processes)
        assert "--max_steps" not in ppo


@pytest.mark.parametrize(
    "args, error",
    [
        ([], "lab-gpu trains on CUDA GPUs and torch sees none; here, `annotated-trl lab` runs"),
        (["--steps", "0"], "--steps 0: expected 1 or more"),
        (["--accelerate_config", "nowhere.yaml"], "--accelerate_config nowhere.yaml: no such"),
    ],
)
def test_bad_invocations_stop_in_one_line_before_anything_runs(args, error, tmp_path):
    out = tmp_path / "lab-gpu"
    command = [sys.executable, "-m", "annotated_trl.cli", "lab-gpu", "--out", str(out), *args]
    result = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=OFFLINE_ENV)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {error}")
    assert not out.exists()
