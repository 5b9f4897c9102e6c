"""The benchmarks' own code paths, checked on CPU (they are run by hand, not timed in CI).

`python -m benchmarks.gpu --allow-cpu --tiny` runs the GPU harness's whole pipeline (model building
from a config, a script run as a user runs it, the FLOP and step counters, the report) on a tiny
model for 2 steps; without a GPU and without that flag it must refuse in one line.
`benchmarks/suite.py` times a real pytest run of two small test files and files each test under
its markers. `benchmarks/ports.py` runs a parity scenario several times in one worker process per
side, which the scenarios' two-process exit (tests/parity_scenarios/per_process.py) must allow.
`benchmarks/docs_build.py --against REV` builds REV from a worktree whose `src/` it must import.
"""

import json
import os
import subprocess
import sys

import pytest
from support.processes import OFFLINE_ENV, REPO

from annotated_trl.methods import METHODS
from benchmarks import cross_cpu, docs_build, gpu, ports

GPU = [sys.executable, "-m", "benchmarks.gpu"]
NO_GPU = {**os.environ, **OFFLINE_ENV, "CUDA_VISIBLE_DEVICES": ""}


def test_benchmarks_gpu_refuses_without_a_gpu():
    done = subprocess.run(GPU, cwd=REPO, env=NO_GPU, capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--allow-cpu --tiny" in lines[0]
    assert not done.stdout


@pytest.fixture(scope="module")
def tiny_gpu_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu-report")
    done = subprocess.run(
        [*GPU, "--allow-cpu", "--tiny", "sft", "--out", str(out)],
        cwd=REPO,
        env=NO_GPU,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((out / "gpu-cpu.json").read_text()), (out / "gpu-cpu.md").read_text()


def test_benchmarks_gpu_tiny_report_has_every_field(tiny_gpu_report):
    results, table = tiny_gpu_report
    (run,) = results["runs"]
    assert run["script"] == "sft" and run["size"] == "tiny" and run["trainer"] == "SFTTrainer"
    assert run["steps"] == 2 and len(run["step_s"]) == 2
    assert run["seconds"] > 0 and 0 < run["median_step_s"] <= run["seconds"]
    assert run["train_tokens"] > 0
    assert run["tokens_per_s"] == pytest.approx(run["train_tokens"] / run["seconds"])
    # No GPU: no memory reading and no peak to compare with, so no MFU (not a made-up number).
    assert run["peak_gpu_memory_gib"] is None and run["mfu"] is None
    assert run["peak_rss_mib"] > 0
    assert results["machine"]["device"] == "cpu"
    assert "| sft | tiny |" in table


def test_benchmarks_gpu_counts_six_n_flops_per_trained_token(tiny, tiny_gpu_report):
    """SFT has no generation, reference or teacher: every forward trains the policy, so the
    counted FLOPs are exactly 6 x parameters x tokens (tied embeddings: the LM head is the
    embedding matrix, counted once)."""
    (run,) = tiny_gpu_report[0]["runs"]
    from transformers import AutoConfig, Qwen2ForCausalLM

    config = AutoConfig.from_pretrained(tiny.policy)  # the fixture tokenizer's vocabulary
    for name, value in gpu.SIZES["tiny"].items():
        setattr(config, name, value)
    parameters = sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())
    assert run["policy_parameters"] == parameters
    assert run["flops"] == 6 * parameters * run["train_tokens"]
    assert run["achieved_tflops"] == pytest.approx(run["flops"] / run["seconds"] / 1e12)


def test_benchmarks_suite_times_tests_by_marker(tmp_path):
    """benchmarks/suite.py runs pytest with its timing plugin and files each test by marker."""
    selection = ["tests/test_fixtures.py", "tests/test_kl_math.py"]  # quick: tensors, no training
    one_process = {**os.environ, "PYTEST_ADDOPTS": "-n 0"}  # two workers would import it all twice
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.suite", *selection, "--out", tmp_path],
        cwd=REPO,
        env=one_process,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    (measured,) = json.loads((tmp_path / "suite.json").read_text())["selections"].values()
    collected = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", *selection],
        cwd=REPO,
        env=one_process,
        capture_output=True,
        text=True,
    ).stdout
    math_tests = sum(1 for line in collected.splitlines() if "test_kl_math.py::" in line)
    unmarked_tests = sum(1 for line in collected.splitlines() if "test_fixtures.py::" in line)
    assert measured["by_marker"]["math"]["tests"] == math_tests > 0
    assert measured["by_marker"]["(no marker)"]["tests"] == unmarked_tests > 0
    assert set(measured["by_marker"]) == {"math", "(no marker)"}
    total = sum(entry["seconds"] for entry in measured["by_marker"].values())
    assert 0 < total <= measured["median_wall_s"]
    # The CPU time of pytest and its children: some, and no more than the cores allow.
    assert 0 < measured["cpu_s"][0] <= measured["wall_s"][0] * os.cpu_count()
    assert "| math |" in (tmp_path / "suite.md").read_text()


def test_benchmarks_ports_repeats_a_scenario_in_one_worker_per_side(tmp_path):
    """PRM, the quickest port: a warm-up and a timed run per side, each side in one process."""
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.ports", "prm", "--reps", "1", "--out", str(tmp_path)],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "ports.json").read_text())
    assert results["unfinished"] == []
    prm = results["ports"]["prm"]
    for side in ("ours", "original"):
        run = prm[side]
        assert run["trainer"] == "PRMTrainer" and run["steps"] > 0
        assert len(run["seconds"]) == 1 and run["seconds"][0] > 0
    # Same scenario, same model work per step on both sides; the time ratio is only reported.
    assert prm["ours"]["work"] == prm["original"]["work"] and prm["ours"]["work"]["forwards"] > 0
    assert prm["ratio"] > 0
    assert "| prm | PRMTrainer |" in (tmp_path / "ports.md").read_text()


def test_benchmarks_ports_finds_every_port_and_nothing_else():
    """Each scenario file is a port with its own parity test; helpers are not measured."""
    parity_tests = {
        p.name[len("test_") : -len("_parity.py")] for p in REPO.glob("tests/test_*_parity.py")
    }
    assert set(ports.discover()) == parity_tests == {m.key for m in METHODS if m.port}


def test_benchmarks_cross_cpu_keeps_each_tests_latest_record():
    """benchmarks/cross_cpu.py folds a `-k` rerun into a setting's record test by test, drops
    tests that no longer exist, reports the threshold a test asserts now, and counts the recorded
    values that fall short of it."""

    def run(at, *records):
        tests = [
            {"test": t, "measured": {"gain": {"value": v, "at_least": bound}}}
            for t, v, bound in records
        ]
        return {
            "measured_at": at,
            "summary": "",
            "wall_s": 1.0,
            "exit_code": 0,
            "args": [],
            "tests": tests,
        }

    ten, eleven = "2026-01-01 10:00 UTC", "2026-01-01 11:00 UTC"
    first = cross_cpu.merge({}, run(ten, ("t::a", 0.5, 0.1), ("t::gone", 1.0, 0.0)), {"t::a"})
    assert set(first["tests"]) == {"t::a"}
    other = cross_cpu.merge({}, run(ten, ("t::a", 0.05, 0.1)), {"t::a"})
    cross_cpu.merge(first, run(eleven, ("t::a", 0.3, 0.2)), {"t::a"})  # a rerun, new threshold
    assert len(first["invocations"]) == 2

    entry = cross_cpu.quantities({"x": first, "y": other})[("t::a", "gain")]
    assert entry["threshold"] == {"at_least": 0.2}
    assert entry["values"] == {"x": 0.3, "y": 0.05}
    mean, sd, _, short = cross_cpu.margin(entry)
    assert (mean, short) == (pytest.approx(0.175), 1)


def test_benchmarks_docs_build_against_builds_the_old_revisions_own_code():
    """`--against REV` measures REV's code: its worktree's `src/` must shadow the installed
    (editable) package, or both sides would time today's hooks."""
    with docs_build.checkout("HEAD") as folder:
        assert (folder / "mkdocs.yml").is_file()
        assert (folder / "node_modules").resolve() == (REPO / "node_modules").resolve()
        env = {**os.environ, "PYTHONPATH": str(folder / "src")}
        where = subprocess.run(
            [sys.executable, "-c", "import annotated_trl; print(annotated_trl.__file__)"],
            cwd=folder,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        assert where.startswith(str(folder / "src"))
    assert not folder.exists()
    worktrees = subprocess.run(
        ["git", "worktree", "list"], cwd=REPO, capture_output=True, text=True
    )
    assert str(folder) not in worktrees.stdout


def test_benchmarks_docs_build_reports_the_ratio_of_medians():
    def build(seconds):
        parts = dict.fromkeys(("mkdocstrings_s", "hooks_s", "other_plugins_s", "rest_s"), 0.0)
        return {**parts, "build_s": seconds, "process_s": seconds + 1, "hooks": {}}

    now, then = [build(9), build(11), build(10)], [build(20), build(16), build(18)]
    results = {
        "reps": 3,
        "builds": now,
        "median": docs_build.medians(now),
        "against": {"rev": "abc123", "builds": then, "median": docs_build.medians(then)},
    }
    table = docs_build.table(results)
    assert "its median build 18.00 s" in table and "now / then = **0.56**" in table
    assert "20.0 / 9.0, 16.0 / 11.0, 18.0 / 10.0 s" in table
