"""What every script's smoke tests share: one run per script in a process of its own, variants
in-process.

A smoke module lists its variants in `CASES`, builds each one's command line in
`case_args(tiny, case, out) -> [script, *flags]`, and names in `CLI_CASE` the one variant that runs
in a process of its own, as a user runs it: a child forked from a warm interpreter
(tests/support/warm.py), which runs the script as `__main__` without paying again for the ≈5 s
of imports a bare `python script.py` pays (that start is what the bad-input tests' subprocess
case sees, for every script). Every other variant runs the same script in the test process
(`runpy`, the same code path). `trained(request, case)` returns a variant's output folder either
way.

The separate runs start ahead of time: the first smoke test of the session starts background
threads that launch, in test order, the run of every smoke module with a selected test.
`PREFETCH_WORKERS` of them run at a time, beside the test process, which trains the variants
meanwhile. Under pytest-xdist each worker starts a module's run only when one of its tests asks
for it.

Every run, in a subprocess or in-process, gets one torch thread. Three busy processes share the
two cores of the CI machine, and torch's default of one thread per core then oversubscribes them:
measured on `pytest -m smoke`, 2 threads each took 124 s and 247 CPU-seconds, 1 thread 74 s and
145 (before the garbage-collector change in conftest.py). The tiny models gain nothing from a
second thread.
"""

import json
import os
import runpy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from support.processes import OFFLINE_ENV, REPO
from support.warm import shared

SCRIPTS = REPO / "annotated_examples"
# Seconds a subprocess run may take: ~10 s on a quiet 2-core machine, ten minutes and more at a
# load average of 20 (measured: a 12-step KTO run took 5.5 min before evaluation).
TIMEOUT = 1200
# Subprocess runs at a time. Two keep both cores of the CI machine busy while the test process
# waits for a result, and oversubscribe them (three busy processes) only while it trains.
PREFETCH_WORKERS = 2


def run_in_process(monkeypatch, script: str, *args) -> None:
    """Run `annotated_examples/<script> *args` in this process, from the repo root, as `__main__`,
    with one torch thread (see above).

    A script that exits with an error message fails the test with that message."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *map(str, args)])
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    except SystemExit as exit_info:
        if exit_info.code not in (None, 0):
            pytest.fail(f"{script} exited with {exit_info.code!r}")
    finally:
        torch.set_num_threads(threads)


class CliRuns:
    """One subprocess run per smoke module, each started once (ahead, or on demand) and awaited."""

    def __init__(self, tiny, root: Path):
        self.tiny, self.root = tiny, root
        self.lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.results: dict[str, tuple[subprocess.CompletedProcess, Path]] = {}
        self.running: set = set()  # warm.Run
        self.closed = False

    def _claim(self, module) -> bool:
        """True if the caller must run `module`'s subprocess (nobody has started it yet)."""
        with self.lock:
            if module.__name__ in self.started or self.closed:
                return False
            self.started[module.__name__] = threading.Event()
            return True

    def _run(self, module) -> None:
        out = self.root / module.__name__ / "out"
        script, *args = module.case_args(self.tiny, module.CLI_CASE, out)
        env = {**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1"}  # one thread (see above)
        run = shared(**OFFLINE_ENV).start([SCRIPTS / script, *args], REPO, env)
        self.running.add(run)
        try:
            returncode, late = run.wait(TIMEOUT), ""
        except subprocess.TimeoutExpired:
            returncode, late = -9, f"\n(timed out after {TIMEOUT} s)"
        self.running.discard(run)
        output = run.stdout.read_text(), run.stderr.read_text() + late
        result = subprocess.CompletedProcess([script, *args], returncode, *output)
        self.results[module.__name__] = (result, out)
        self.started[module.__name__].set()

    def prefetch(self, modules) -> None:
        queue = iter(modules)
        queue_lock = threading.Lock()

        def worker():
            while True:
                with queue_lock:
                    module = next(queue, None)
                if module is None:
                    return
                if self._claim(module):
                    self._run(module)

        for _ in range(PREFETCH_WORKERS):
            threading.Thread(target=worker, daemon=True).start()

    def close(self) -> None:
        """Stop prefetching and end the subprocesses still running (after an early exit, `-x`)."""
        with self.lock:
            self.closed = True
        for run in list(self.running):
            run.kill()

    def result(self, module) -> tuple[subprocess.CompletedProcess, Path]:
        """The finished run of `module`'s CLI case and its output folder; fails if it failed."""
        if self._claim(module):
            self._run(module)
        self.started[module.__name__].wait()
        result, out = self.results[module.__name__]
        assert result.returncode == 0, result.stderr[-3000:]
        return result, out


_cli_runs: CliRuns | None = None


def _selected_smoke_modules(session) -> list:
    """Modules, in test order, with a subprocess run and at least one selected test."""
    modules = []
    for item in session.items:
        module = getattr(item, "module", None)
        if hasattr(module, "CLI_CASE") and module not in modules:
            modules.append(module)
    return modules


@pytest.fixture(scope="session", autouse=True)
def cli_runs(request, tiny, tmp_path_factory) -> CliRuns:
    """The session's subprocess runs (one object, however many modules import this fixture)."""
    global _cli_runs
    if _cli_runs is None:
        _cli_runs = CliRuns(tiny, tmp_path_factory.mktemp("cli-runs"))
        request.session.config.add_cleanup(_cli_runs.close)
        if "PYTEST_XDIST_WORKER" not in os.environ:
            _cli_runs.prefetch(_selected_smoke_modules(request.session))
    return _cli_runs


def trained(request, case: str) -> Path:
    """The output folder of `case`: the module's subprocess run, or an in-process run made now."""
    module = request.module
    if case == module.CLI_CASE:
        return request.getfixturevalue("cli_runs").result(module)[1]
    out = request.getfixturevalue("tmp_path") / "out"
    script, *args = module.case_args(request.getfixturevalue("tiny"), case, out)
    run_in_process(request.getfixturevalue("monkeypatch"), script, *args)
    return out


def log_history(out: Path) -> list[dict]:
    """Every row the run logged (`trainer_state.json`, saved with the model)."""
    return json.loads((out / "trainer_state.json").read_text())["log_history"]


def train_and_eval_rows(out: Path) -> tuple[list[dict], list[dict]]:
    """The run's logged training rows (those with a loss) and evaluation rows."""
    history = log_history(out)
    return [row for row in history if "loss" in row], [row for row in history if "eval_loss" in row]


def assert_saved_model_works(tiny, out: Path, lora: bool) -> None:
    """The policy's weights (or LoRA adapter) changed; the saved folder reloads and generates."""
    tokenizer = AutoTokenizer.from_pretrained(out)
    if lora:
        from peft import AutoPeftModelForCausalLM

        adapter = load_file(out / "adapter_model.safetensors")
        lora_b = [w for name, w in adapter.items() if "lora_B" in name]
        assert lora_b and any(w.abs().max() > 0 for w in lora_b)  # B starts at zero
        assert not (out / "model.safetensors").exists()  # only the adapter is saved
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
