"""What every script's smoke tests share: one true subprocess run per script, variants in-process.

A smoke module lists its variants in `CASES`, builds each one's command line in
`case_args(tiny, case, out) -> [script, *flags]`, and names in `CLI_CASE` the one variant that runs
as a user runs it: a fresh Python process. Every other variant runs the same script in the test
process (`runpy`, the same code path as `python script.py`), which skips the ≈5 s of imports a
new process pays. `trained(request, case)` returns a variant's output folder either way.

The subprocess runs start ahead of time: the first smoke test of the session starts a background
thread that launches, one at a time and in test order, the subprocess run of every smoke module
with a selected test. While one script's variants train in-process on one core, the next
scripts' subprocesses run on the other. Under pytest-xdist each worker starts a module's
subprocess only when one of its tests asks for it.
"""

import os
import runpy
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import OFFLINE_ENV, REPO

SCRIPTS = REPO / "annotated_examples"
# Seconds a subprocess run may take: ~10 s on a quiet 2-core machine, ten minutes and more at a
# load average of 20 (measured: a 12-step KTO run took 5.5 min before evaluation).
TIMEOUT = 1200


def run_in_process(monkeypatch, script: str, *args) -> None:
    """Run `annotated_examples/<script> *args` in this process, from the repo root, as `__main__`.

    A script that exits with an error message fails the test with that message."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *map(str, args)])
    try:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    except SystemExit as exit_info:
        if exit_info.code not in (None, 0):
            pytest.fail(f"{script} exited with {exit_info.code!r}")


class CliRuns:
    """One subprocess run per smoke module, each started once (ahead, or on demand) and awaited."""

    def __init__(self, tiny, root: Path):
        self.tiny, self.root = tiny, root
        self.lock = threading.Lock()
        self.started: dict[str, threading.Event] = {}
        self.results: dict[str, tuple[subprocess.CompletedProcess, Path]] = {}
        self.running: subprocess.Popen | None = None
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
        command = [sys.executable, str(SCRIPTS / script), *map(str, args)]
        env = {**os.environ, **OFFLINE_ENV}
        with subprocess.Popen(
            command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        ) as process:
            self.running = process
            try:
                stdout, stderr = process.communicate(timeout=TIMEOUT)
            except subprocess.TimeoutExpired:
                process.kill()
                stdout, stderr = process.communicate()
                stderr += f"\n(timed out after {TIMEOUT} s)"
        self.results[module.__name__] = (
            subprocess.CompletedProcess(command, process.returncode, stdout, stderr),
            out,
        )
        self.started[module.__name__].set()

    def prefetch(self, modules) -> None:
        def worker():
            for module in modules:
                if self._claim(module):
                    self._run(module)

        threading.Thread(target=worker, daemon=True).start()

    def close(self) -> None:
        """Stop prefetching and end a subprocess still running (after an early exit, `-x`)."""
        with self.lock:
            self.closed = True
        if self.running is not None and self.running.poll() is None:
            self.running.kill()

    def output(self, module) -> Path:
        if self._claim(module):
            self._run(module)
        self.started[module.__name__].wait()
        result, out = self.results[module.__name__]
        assert result.returncode == 0, result.stderr[-3000:]
        return out


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
        return request.getfixturevalue("cli_runs").output(module)
    out = request.getfixturevalue("tmp_path") / "out"
    script, *args = module.case_args(request.getfixturevalue("tiny"), case, out)
    run_in_process(request.getfixturevalue("monkeypatch"), script, *args)
    return out
