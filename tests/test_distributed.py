"""The shipped accelerate configs; every example script launched as two DDP processes on CPU; how
PRM's and GKD's losses scale with the number of processes (read from those same launches); and
the ports against trl 1.12 under two processes.

DeepSpeed is not installed here, so the ZeRO configs are checked by accelerate's own loader and
for the settings the site's distributed page describes, not launched. The site's launch line is
`accelerate launch --multi_gpu --num_processes 2` with `ACCELERATE_USE_CPU=true` (`--cpu` would
silently start one process: tested below). The runs here start the same two processes without
the launcher's own start-up and the 5-7 CPU-seconds of imports each bare process pays: forked
from a warm interpreter (tests/support/warm.py), each with the environment a real launch gives
it (checked variable by variable against a real launch of the site's line below), then real DDP
over gloo. tests/ddp_probe.py runs the example script unchanged inside each process.
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
from support import warm
from support.parity import assert_same_logs, rank_log, run_scenario
from support.processes import CPU_LAUNCH_ENV, OFFLINE_ENV, REPO, TWO_CPU_PROCESSES
from support.script_runs import LORA, PORTS, RUNS, STEPS, script_args
from support.warm import shared

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

# Our five ports also run with LoRA adapters: their reference is then the policy with its
# adapters switched off, and process 0 saves only the adapter.
CASES = [(method, []) for method in RUNS] + [(method, LORA) for method in PORTS]


def launch(method: str, tiny, out: Path, *flags) -> subprocess.CompletedProcess:
    script, *args = script_args(method, tiny, out / "run", processes=2)
    probe = [REPO / "tests" / "ddp_probe.py", out, f"annotated_examples/{script}"]
    env = {**os.environ, **OFFLINE_ENV}
    return warm.launch(shared(**OFFLINE_ENV), [*probe, *args, *flags], REPO, env)


@pytest.fixture(scope="module")
def ddp_run(tiny, tmp_path_factory):
    """`ddp_run(method, flags)` launches once per module and returns (result, out folder): the
    loss-scale tests below read the reports of the launches the sync test already made."""
    runs = {}

    def run(method: str, flags=()) -> tuple[subprocess.CompletedProcess, Path]:
        key = (method, tuple(flags))
        if key not in runs:
            out = tmp_path_factory.mktemp(f"ddp-{method}")
            runs[key] = (launch(method, tiny, out, *flags), out)
        return runs[key]

    return run


def reports_of(ddp_run, method: str, flags=()) -> list[dict]:
    result, out = ddp_run(method, flags)
    assert result.returncode == 0, result.stderr[-4000:]
    return [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]


@pytest.mark.parametrize(
    ("method", "flags"), CASES, ids=[m + ("-lora" if flags else "") for m, flags in CASES]
)
def test_distributed_ddp_two_cpu_processes_train_in_sync(method, flags, ddp_run):
    reports = reports_of(ddp_run, method, flags)
    out = ddp_run(method, flags)[1]
    saved = "adapter_config.json" if flags else "config.json"
    assert (out / "run" / saved).exists()  # process 0 saved the model (or the adapter)
    assert (out / "run" / "model.safetensors").exists() != bool(flags)
    for rank, report in enumerate(reports):
        assert report["rank"] == rank
        assert report["world_size"] == 2
        assert report["steps"] == STEPS
        # Two steps moved every tensor the optimiser holds (measured for all 16 scripts: 26 for
        # the policy, 27 with a score head, 28 with a token head, 53 for PPO's policy + value;
        # with LoRA, every adapter matrix, A and B).
        assert report["moved"] == report["optimised"] > 0, report
    # Each rank trained on its own slice of the data...
    assert reports[0]["first_batch"] is not None
    assert reports[0]["first_batch"] != reports[1]["first_batch"]
    # ...and yet both ended with the same weights: the gradients were averaged across ranks.
    assert reports[0]["weights"] == reports[1]["weights"]


# --- How the loss scales with the number of processes P (the PRM and GKD pages) -----------------

# The probe measured, on the first optimiser step (one micro-batch, G = 1), each rank's token
# sum S_p and count n_p recomputed from the inputs, the loss `training_step` back-propagated,
# the gradient of S_p for the final norm's weight, and the gradient DDP left there (the average
# over ranks). Both trainers' ranks see 16 rows each, so the P = 2 factors below cannot hide in
# a tolerance: they are 2x and 0.5x.


def measured_loss_scale(reports: list[dict]) -> tuple[list[dict], torch.Tensor, float, int]:
    scales = [report["loss_scale"] for report in reports]
    assert all(scale is not None for scale in scales)
    assert all(scale["accumulation"] == 1 for scale in scales)
    processes = reports[0]["world_size"]
    assert processes == len(scales) == 2
    # DDP averaged the gradient: both ranks hold the same one.
    assert scales[0]["ddp_grad"] == scales[1]["ddp_grad"]
    ddp_grad = torch.tensor(scales[0]["ddp_grad"], dtype=torch.float64)
    # The first logged loss is the mean over ranks of what each back-propagated.
    logged = reports[0]["logged_losses"][0]
    assert logged == pytest.approx(sum(s["loss"] for s in scales) / processes, rel=1e-6)
    return scales, ddp_grad, logged, processes


def test_distributed_prm_loss_and_gradient_are_P_times_the_mean(ddp_run):
    """PRM (our port): the token classifier ignores `num_items_in_batch`, so each rank's loss is
    its own micro-batch mean; `Trainer.compute_loss` still multiplies it by P, and DDP's
    average keeps that factor: loss, logged loss and gradient are P x the mean."""
    scales, ddp_grad, logged, processes = measured_loss_scale(reports_of(ddp_run, "prm"))
    means = [s["token_sum"] / s["tokens"] for s in scales]
    for scale, mean in zip(scales, means, strict=True):
        assert scale["loss"] == pytest.approx(processes * mean, rel=1e-5)
    assert logged == pytest.approx(processes * sum(means) / processes, rel=1e-5)
    grad_of_means = (
        sum(torch.tensor(s["grad_of_sum"], dtype=torch.float64) / s["tokens"] for s in scales)
        / processes
    )
    torch.testing.assert_close(ddp_grad, processes * grad_of_means, rtol=1e-4, atol=1e-9)
    # Not the plain mean: the factor is really there.
    assert not torch.allclose(ddp_grad, grad_of_means, rtol=0.1)


def test_distributed_gkd_loss_and_gradient_are_the_mean_over_P(ddp_run):
    """GKD: `num_items_in_batch` is the token count summed over processes, and GKD's own
    `compute_loss` (which replaces SFT's) never multiplies by P. Each rank's loss is S_p / N;
    DDP averages, so loss, logged loss and gradient are the global token mean divided by P."""
    scales, ddp_grad, logged, processes = measured_loss_scale(reports_of(ddp_run, "gkd"))
    total = sum(s["tokens"] for s in scales)
    # Off-policy on this seed's first step: the count is over the dataset labels of all ranks.
    assert all(s["num_items_in_batch"] == total for s in scales)
    for scale in scales:
        assert scale["loss"] == pytest.approx(scale["token_sum"] / total, rel=1e-5)
    token_mean = sum(s["token_sum"] for s in scales) / total
    assert logged == pytest.approx(token_mean / processes, rel=1e-5)
    grad_of_mean = sum(torch.tensor(s["grad_of_sum"], dtype=torch.float64) for s in scales) / total
    torch.testing.assert_close(ddp_grad, grad_of_mean / processes, rtol=1e-4, atol=1e-9)
    assert not torch.allclose(ddp_grad, grad_of_mean, rtol=0.1)


DUMP_ENVIRONMENT = """
import json, os, sys
with open(os.path.join(sys.argv[1], os.environ["RANK"] + ".json"), "w") as out:
    json.dump(dict(os.environ), out)
"""


def test_distributed_warm_launch_gives_each_process_what_accelerate_launch_gives(tmp_path):
    """The runs above start their two processes from the warm interpreter (tests/support/warm.py)
    instead of through `accelerate launch`, with the variables the launcher would set: the same
    as a real launch of the site's command line, here, variable by variable."""
    script = tmp_path / "environment.py"
    script.write_text(DUMP_ENVIRONMENT)
    real, ours = tmp_path / "real", tmp_path / "warm"
    real.mkdir(), ours.mkdir()
    env = {**os.environ, **OFFLINE_ENV}
    launched = subprocess.run(
        [*TWO_CPU_PROCESSES, str(script), str(real)],
        env={**env, **CPU_LAUNCH_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert launched.returncode == 0, launched.stderr[-2000:]
    forked = warm.launch(shared(**OFFLINE_ENV), [script, ours], tmp_path, env)
    assert forked.returncode == 0, forked.stderr[-2000:]
    for rank in ("0", "1"):
        a = json.loads((real / f"{rank}.json").read_text())
        b = json.loads((ours / f"{rank}.json").read_text())
        launcher = {k for k in a if k.startswith("ACCELERATE_")} | set(warm.LAUNCH_ENV)
        launcher |= set(warm.rank_env(0, 2, 0)) - {"MASTER_PORT"}
        assert {k: a.get(k) for k in launcher} == {k: b.get(k) for k in launcher}
        assert b["MASTER_PORT"].isdigit()


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


# --- Our ports under two processes log what trl 1.12 logs under two processes ------------------

# One parity scenario per port (tests/parity_scenarios), chosen to reach the code that runs
# differently across processes: scores gathered from every process, and sampling from each
# process's own prompts (PPO, Nash-MD, XPO); whitening of each process's rewards and advantages,
# with truncation at EOS (PPO); the UDM classifier, which 1.12 fits on prompt embeddings gathered
# from every process and ours on embeddings each process computes for the whole sample, and δ's
# running mean fed with every process's rewards (BCO); PRM's tokenisation on each process, under
# Trainer's DDP loop. Tolerances as in each port's single-process parity test.
BCO_UDM = ["--udm", "--min_density_ratio", 0.9, "--max_density_ratio", 1.1]
ONLINE = ["--tiny", "{tiny}", "--missing_eos_penalty", 1.0]
PORT_RUNS = {  # port: (scenario flags, rel, abs, keys not compared)
    "ppo": (["--whiten_rewards", "--eager_eos"], 0.0, 0.0, {"eps"}),  # eps: episodes per second
    "bco": (BCO_UDM, 1e-6, 1e-7, {"total_flos"}),  # see test_bco_parity.py for total_flos
    "prm": ([], 0.0, 0.0, set()),
    "nash_md": ([*ONLINE, "--mixture_coef", 0.3], 1e-6, 1e-7, set()),
    "xpo": ([*ONLINE, "--alpha", 1e-3], 1e-6, 1e-7, set()),
}
# trl 1.12's BCO stores its metrics on process 0 only; ours on every process (the same gathered
# values). Process 0's log, the one users see, has them on both sides and is compared in full.
ONLY_OURS_ON_OTHER_RANKS = {
    "bco": {"rewards/chosen", "rewards/rejected", "rewards/margins", "delta"}
    | {"logps/chosen", "logps/rejected", "logits/chosen", "logits/rejected"}
}


@pytest.mark.parity
@pytest.mark.parametrize("port", list(PORT_RUNS))
def test_distributed_port_logs_what_trl_1_12_logs_on_two_processes(port, tiny, tmp_path):
    flags, rel, abs_, ignore = PORT_RUNS[port]
    args = [str(tiny.root) if flag == "{tiny}" else flag for flag in flags]
    run_scenario(port, "original", tmp_path, *args, processes=2)
    run_scenario(port, "ours", tmp_path, *args, processes=2)
    for rank in (0, 1):
        skip = set(ignore)
        if rank:
            skip |= ONLY_OURS_ON_OTHER_RANKS.get(port, set())
            skip |= {f"eval_{key}" for key in skip}
        original, ours = rank_log(tmp_path, "original", rank), rank_log(tmp_path, "ours", rank)
        assert assert_same_logs(original, ours, rel=rel, abs_=abs_, ignore=skip) > 0


# --- GRPO's group statistics and loss normaliser under two processes (the GRPO page) ------------

# Groups of 4 with 2 completions per process: every group is split across the two ranks. A reward
# model (continuous scores) beside the recipe's 0/1 reward, so that no group ties; the probe
# raises the EOS logit, so that completion lengths differ (the token means then differ too).
GRPO_SPLIT_GROUPS = ["--num_generations", "4", "--per_device_train_batch_size", "2"]
GRPO_SPLIT_GROUPS += ["--probe_eos_boost", "4"]


def test_distributed_grpo_groups_span_processes_and_the_token_mean_is_global(ddp_run, tiny):
    """One launch, read for four facts of reference_guides/grpo.md ("Several processes"):
    the rewards are gathered before the group statistics, so a group split over processes gets
    the advantages of one process; each rank keeps its own slice, rank 0 first; `num_items_in_batch`
    counts the tokens of every process; and with loss_type="dapo" each rank's first loss is
    -sum_local A_i |y_i| / (N K / (P S)) (on-policy, beta = 0), so DDP's average over ranks is
    the token mean over the whole step, not the mean of the per-rank token means."""
    flags = [*GRPO_SPLIT_GROUPS, "--reward_model_name_or_path", str(tiny.root / "reward")]
    reports = reports_of(ddp_run, "grpo", flags)
    rounds = [report["grpo_round"] for report in reports]
    first = rounds[0]
    assert (first["loss_type"], first["scale_rewards"], first["beta"]) == ("dapo", "group", 0.0)
    g, processes = first["num_generations"], len(rounds)
    # One prompt, 4 completions, 2 on each rank.
    assert rounds[0]["prompts"] == rounds[1]["prompts"] and len(set(rounds[0]["prompts"])) == 1
    assert len(rounds[0]["advantages"]) == len(rounds[1]["advantages"]) == g // processes

    # 1. Gathered: every rank holds the rewards of all 4 completions, the same numbers.
    assert rounds[0]["rewards_per_func"] == rounds[1]["rewards_per_func"]
    per_func = torch.tensor(first["rewards_per_func"], dtype=torch.float64)
    rewards = (per_func * torch.tensor(first["reward_weights"], dtype=torch.float64)).sum(1)
    groups = rewards.view(-1, g)
    expected = (groups - groups.mean(1, keepdim=True)) / (groups.std(1, keepdim=True) + 1e-4)
    expected = expected.view(-1)
    # 2. Sliced: rank 0 keeps the first half, rank 1 the second.
    advantages = torch.tensor(
        rounds[0]["advantages"] + rounds[1]["advantages"], dtype=torch.float64
    )
    torch.testing.assert_close(advantages, expected, rtol=1e-5, atol=1e-6)
    halves = rewards.view(processes, -1)  # what per-process statistics would have given
    local = (halves - halves.mean(1, keepdim=True)) / (halves.std(1, keepdim=True) + 1e-4)
    assert not torch.allclose(local.view(-1), expected, atol=1e-2)

    # 3. The token count of the round spans both ranks.
    lengths = [torch.tensor(r["lengths"], dtype=torch.float64) for r in rounds]
    total = sum(n.sum().item() for n in lengths)
    assert all(r["num_items_in_batch"] == total for r in rounds)

    # 4. The first micro-batch is the whole local round (S = K = 1), on-policy: rho = 1, and the
    # per-token loss is -A_i. Normaliser N / P * K / S per rank.
    sums = []
    for r in rounds:
        assert r["accumulation"] == 1 and r["steps_per_generation"] == 1
        assert not r["old_logps_kept"]
        assert sorted(r["micro_advantages"]) == sorted(r["advantages"])
        a = torch.tensor(r["micro_advantages"], dtype=torch.float64)
        n = torch.tensor(r["micro_lengths"], dtype=torch.float64)
        sums.append(-(a * n).sum().item())
        assert r["loss"] == pytest.approx(sums[-1] / (total / processes), rel=1e-4, abs=1e-7)
    ddp_mean = sum(r["loss"] for r in rounds) / processes
    assert ddp_mean == pytest.approx(sum(sums) / total, rel=1e-4, abs=1e-7)
    # Ragged lengths, so the other normalisers would give other numbers: the rank's own token
    # count, or the global count without the 1/P.
    assert lengths[0].sum() != lengths[1].sum()
    for r, s, n in zip(rounds, sums, lengths, strict=True):
        assert abs(r["loss"] - s / n.sum().item()) > 1e-4 * max(1.0, abs(r["loss"]))
        assert abs(r["loss"] - s / total) > 1e-4 * max(1.0, abs(r["loss"]))
    per_rank_means = sum(s / n.sum().item() for s, n in zip(sums, lengths, strict=True)) / 2
    assert abs(per_rank_means - ddp_mean) > 1e-4
