"""Fresh processes without fresh imports: scripts run in children forked from a warm interpreter.

A script started with `python script.py` spends 5-7 CPU-seconds importing torch, transformers,
datasets, accelerate, peft and TRL before its first line of work (benchmarks/results/suite.md),
and the suite starts scripts about a hundred times. A warm interpreter is one Python process that
imports those libraries once, computes nothing, and then forks one child per run. The child is a
new process like any other (its own pid, memory, exit status; SIGKILL ends it with no clean-up)
that runs the script as `__main__` (`runpy`, the code path of `python script.py`) with the run's
argv, working directory, environment, stdout and stderr. What it inherits differs from a bare
interpreter in two ways, and the child undoes both: the random generators are reseeded from the
OS, as a new process's are, so a script that draws before seeding is caught as it would be; and
`OMP_NUM_THREADS` is applied with `torch.set_num_threads`, since OpenMP read the variable when
the warm process loaded torch. Environment variables read at import time (`HF_HUB_OFFLINE`,
`PYTHONPATH`) are fixed when the warm interpreter starts: start one per such setting.

What a warm child cannot show is what a script does before its imports finish; the tests that
check what a user sees on the terminal (tests/test_*_badinput.py, tests/test_invocations.py) keep
a bare `python script.py` for that.

The interpreter is this file run as a script: it reads one JSON job per line on stdin and answers
on its stdout with one JSON line when it forks (`pid`) and one when the child ends (`returncode`,
negative for a signal, as subprocess reports it).
"""

import atexit
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

PRELOAD = ("torch", "transformers", "datasets", "accelerate", "peft", "trl")
# TRL's package is lazy: its trainers load on first use. These pull in the shared trainer code.
PRELOAD_TRL = ("SFTTrainer", "DPOTrainer", "GRPOTrainer")


# ---- the client, in the test process ---------------------------------------------------------


class Run:
    """One script run in a warm child: its pid, and its exit status once it has ended."""

    def __init__(self, warm: "WarmPython", pid: int, stdout: Path, stderr: Path):
        self.warm, self.pid, self.stdout, self.stderr = warm, pid, stdout, stderr

    def poll(self) -> int | None:
        return self.warm.returncodes.get(self.pid)

    def wait(self, timeout: float | None = None) -> int:
        """The exit status; kills the child and raises TimeoutExpired after `timeout` seconds."""
        with self.warm.ended:
            if not self.warm.ended.wait_for(lambda: self.poll() is not None, timeout):
                self.kill()
                raise subprocess.TimeoutExpired(self.pid, timeout)
        return self.poll()

    def kill(self, signal: int = 9) -> None:
        if self.poll() is None:
            os.kill(self.pid, signal)


class WarmPython:
    """A warm interpreter started with this environment updated by `env` (a None value removes
    a variable); `run` works like `subprocess.run(..., capture_output=True, text=True)` for
    `python <argv>`."""

    def __init__(self, env: dict[str, str | None] | None = None):
        self.scratch = Path(tempfile.mkdtemp(prefix="warm-python-"))
        self.returncodes: dict[int, int] = {}
        self.pids: dict[int, int] = {}  # job number -> pid
        self.ended = threading.Condition()
        self.jobs = 0
        self.send_lock = threading.Lock()
        self.server = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=(self.scratch / "server.log").open("w"),
            env={k: v for k, v in {**os.environ, **(env or {})}.items() if v is not None},
            text=True,
        )
        ready = self.server.stdout.readline()
        assert ready.strip() == '{"ready": true}', (self.scratch / "server.log").read_text()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.server.stdout:
            message = json.loads(line)
            with self.ended:
                if "job" in message:
                    self.pids[message["job"]] = message["pid"]
                else:
                    self.returncodes[message["pid"]] = message["returncode"]
                self.ended.notify_all()

    def start(self, argv, cwd, env=None, stdout=None, stderr=None) -> Run:
        """Start `python <argv>` in `cwd` with `env` (default: this process's), its output to
        the files `stdout` and `stderr` (default: new files; the same file for both is fine)."""
        with self.send_lock:
            self.jobs += 1
            job = self.jobs
        stdout = Path(stdout or self.scratch / f"{job}.out")
        stderr = Path(stderr or self.scratch / f"{job}.err")
        request = {"job": job, "argv": [str(a) for a in argv], "cwd": str(cwd)}
        request |= {"env": dict(env or os.environ), "stdout": str(stdout), "stderr": str(stderr)}
        with self.send_lock:
            self.server.stdin.write(json.dumps(request) + "\n")
            self.server.stdin.flush()
        with self.ended:
            self.ended.wait_for(lambda: job in self.pids or self.server.poll() is not None)
        assert job in self.pids, (self.scratch / "server.log").read_text()[-3000:]
        return Run(self, self.pids[job], stdout, stderr)

    def run(self, argv, cwd, env=None, timeout=None) -> subprocess.CompletedProcess:
        run = self.start(argv, cwd, env)
        returncode = run.wait(timeout)
        out, err = run.stdout.read_text(), run.stderr.read_text()
        run.stdout.unlink()
        run.stderr.unlink()
        return subprocess.CompletedProcess([sys.executable, *argv], returncode, out, err)

    def close(self) -> None:
        self.server.stdin.close()
        self.server.wait(timeout=60)


# What `accelerate launch --multi_gpu --num_processes N --num_machines 1 --mixed_precision no
# --dynamo_backend no` puts in each process's environment on CPU (with ACCELERATE_USE_CPU=true),
# besides the rank and the rendezvous address; tests/test_distributed.py checks it against a
# real launch.
LAUNCH_ENV = {
    "ACCELERATE_USE_CPU": "true",
    "ACCELERATE_MIXED_PRECISION": "no",
    "ACCELERATE_DYNAMO_BACKEND": "NO",
    "ACCELERATE_DYNAMO_MODE": "default",
    "ACCELERATE_DYNAMO_USE_DYNAMIC": "False",
    "ACCELERATE_DYNAMO_USE_FULLGRAPH": "False",
    "ACCELERATE_DYNAMO_USE_REGIONAL_COMPILATION": "False",
    "OMP_NUM_THREADS": "1",
    "PYTHONUNBUFFERED": "1",
}


def rank_env(rank: int, processes: int, port: int) -> dict[str, str]:
    """The variables torch's launcher gives process `rank` of `processes` on one machine."""
    ranks = {"RANK": rank, "LOCAL_RANK": rank, "ROLE_RANK": rank, "GROUP_RANK": 0}
    sizes = {"WORLD_SIZE": processes, "LOCAL_WORLD_SIZE": processes, "GROUP_WORLD_SIZE": 1}
    sizes["ROLE_WORLD_SIZE"] = processes
    where = {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port, "ROLE_NAME": "default"}
    return {key: str(value) for key, value in {**ranks, **sizes, **where}.items()}


def launch(warm: WarmPython, argv, cwd, env, processes: int = 2, timeout: float = 600):
    """`accelerate launch` of `python <argv>` as `processes` DDP processes on CPU, each a warm
    child with the environment a real launch gives it; when one fails, the others are ended
    (they would wait for it in their next collective), as the launcher does. A
    CompletedProcess: the first failure's exit code, every process's stderr."""
    import socket

    with socket.socket() as probe:  # a free port for the rendezvous
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    runs = [
        warm.start(argv, cwd, {**env, **LAUNCH_ENV, **rank_env(rank, processes, port)})
        for rank in range(processes)
    ]
    deadline = time.monotonic() + timeout
    with warm.ended:
        while not all(r.poll() is not None for r in runs):
            failed = any(r.poll() not in (None, 0) for r in runs)
            if failed or time.monotonic() > deadline:
                break
            warm.ended.wait(1.0)
    for run in runs:
        run.kill()
    codes = [run.wait(60) for run in runs]
    late = "" if time.monotonic() <= deadline else f"\n(timed out after {timeout} s)"
    stderr = "".join(f"[rank {r}] {run.stderr.read_text()}" for r, run in enumerate(runs))
    # The failure that ended the run, not a process ended because of it.
    code = next((c for c in codes if c not in (0, -9)), next((c for c in codes if c), 0))
    return subprocess.CompletedProcess(argv, code, runs[0].stdout.read_text(), stderr + late)


_shared: dict[tuple, WarmPython] = {}
_shared_lock = threading.Lock()


def shared(**env: str | None) -> WarmPython:
    """This process's warm interpreter for `env` (see WarmPython): started on first use, by
    whichever test needs it first, and closed when the process exits."""
    key = tuple(sorted(env.items(), key=lambda item: item[0]))
    with _shared_lock:
        if key not in _shared:
            _shared[key] = WarmPython(env)
            atexit.register(_shared[key].close)
        return _shared[key]


# ---- the warm interpreter --------------------------------------------------------------------


def _exit_code(stop: SystemExit) -> int:
    """What `python script.py` exits with when the script raises SystemExit(code)."""
    if stop.code is None:
        return 0
    if isinstance(stop.code, int):
        return stop.code
    print(stop.code, file=sys.stderr)
    return 1


def _child(job: dict) -> None:
    """Become the job's process: its environment, folder, files and argv; run; exit."""
    import random
    import runpy
    import traceback

    import numpy
    import torch

    os.environ.clear()
    os.environ.update(job["env"])
    os.chdir(job["cwd"])
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC
    os.dup2(os.open(job["stdout"], flags), 1)
    if job["stderr"] == job["stdout"]:
        os.dup2(1, 2)
    else:
        os.dup2(os.open(job["stderr"], flags), 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    torch.seed()  # the generators start from the OS, as in a new process
    random.seed()
    numpy.random.seed()
    if "OMP_NUM_THREADS" in job["env"]:
        torch.set_num_threads(int(job["env"]["OMP_NUM_THREADS"]))
    script = job["argv"][0]
    code = 0
    try:
        if script == "-c":  # `python -c CODE`: argv[0] is "-c", the current folder leads the path
            sys.argv, sys.path[0] = ["-c", *job["argv"][2:]], ""
            exec(compile(job["argv"][1], "<string>", "exec"), {"__name__": "__main__"})
        else:
            sys.argv = job["argv"]
            sys.path[0] = os.path.dirname(os.path.abspath(script))
            runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        code = _exit_code(stop)
    except BaseException:
        traceback.print_exc()
        code = 1
    atexit._run_exitfuncs()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def serve() -> None:
    """Import the libraries, then fork a child per job line and report pids and exits."""
    import importlib
    import select

    answers = os.dup(1)
    os.dup2(2, 1)  # whatever the libraries print goes to the log, not into the answers
    for name in PRELOAD:
        importlib.import_module(name)
    trl = sys.modules["trl"]
    for name in PRELOAD_TRL:
        getattr(trl, name, None)

    def answer(message: dict) -> None:
        os.write(answers, (json.dumps(message) + "\n").encode())

    answer({"ready": True})
    pending, children, open_input = b"", set(), True
    while open_input or children:
        readable, _, _ = select.select([0] if open_input else [], [], [], 0.02)
        if readable:
            chunk = os.read(0, 1 << 16)
            open_input = bool(chunk)
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                job = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    os.close(answers)
                    _child(job)
                children.add(pid)
                answer({"job": job["job"], "pid": pid})
        for pid in list(children):
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                children.discard(pid)
                answer({"pid": pid, "returncode": os.waitstatus_to_exitcode(status)})


if __name__ == "__main__":
    serve()
