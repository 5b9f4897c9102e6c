"""What the benchmarks share: a timer around `Trainer.train`, long-lived workers, results files.

Measurement model. Every side of a comparison runs in its own long-lived worker process (so each
has its own peak RSS and pays its imports once). The coordinator asks the workers for one run at
a time, alternating A, B, A, B, ..., so that slow and quiet moments of a shared machine fall on
both sides alike. The first run of each worker is a warm-up and is dropped (lazy imports,
allocator growth); the reported time is the median of the remaining repetitions, and the ratio
is median(A) / median(B).

What is timed is `trainer.train()` and nothing else: `TrainTimer` wraps `Trainer.train` and the
`train` of every Trainer subclass (a subclass that overrides it is timed whole), from outside,
without editing the code being measured.
"""

import functools
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from annotated_trl import OFFLINE_ENV  # noqa: F401  (re-exported to the benchmarks)

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "benchmarks" / "results"
PROTOCOL = "@@bench "  # prefix of the workers' reply lines; everything else on stdout is noise


class TrainTimer:
    """Records wall time and optimiser steps of every outermost `train()` call in this process.

    `Trainer.train` is wrapped, and so is the `train` of every subclass defined afterwards that
    has its own (some, like trl 1.12's PPOTrainer, never run `Trainer.__init__`, so wrapping
    instances would miss them). A `train` that calls `super().train()` is timed once, whole.
    `on_start(trainer)` runs just before the outermost call, `on_end(trainer, record)` after.
    """

    def __init__(self, on_start=None, on_end=None):
        from transformers import Trainer

        self.runs: list[dict] = []
        depth = 0
        timer = self

        def wrap(train):
            @functools.wraps(train)
            def timed_train(trainer, *args, **kwargs):
                nonlocal depth
                if depth == 0 and on_start:
                    on_start(trainer)
                depth += 1
                start = time.perf_counter()
                try:
                    return train(trainer, *args, **kwargs)
                finally:
                    depth -= 1
                    if depth == 0:
                        record = {
                            "seconds": time.perf_counter() - start,
                            "steps": trainer.state.global_step,
                            "trainer": type(trainer).__name__,
                        }
                        timer.runs.append(record)
                        if on_end:
                            on_end(trainer, record)

            return timed_train

        def wrap_subclass(cls, **kwargs):
            if "train" in cls.__dict__:
                cls.train = wrap(cls.__dict__["train"])

        Trainer.train = wrap(Trainer.train)
        Trainer.__init_subclass__ = classmethod(wrap_subclass)

    def last(self) -> dict:
        assert self.runs, "the code under test never called Trainer.train()"
        return self.runs[-1]


def count_model_work() -> dict:
    """Counts the Qwen2 forward passes (policy, reference, reward and value models alike) and the
    tokens they read: the work of a step, which, unlike its time, does not move with the load."""
    from transformers.models.qwen2.modeling_qwen2 import Qwen2Model

    counts = {"forwards": 0, "tokens": 0}
    forward = Qwen2Model.forward

    def counted_forward(model, input_ids=None, *args, **kwargs):
        shape = input_ids.shape if input_ids is not None else kwargs["inputs_embeds"].shape[:2]
        counts["forwards"] += 1
        counts["tokens"] += shape[0] * shape[1]
        return forward(model, input_ids, *args, **kwargs)

    Qwen2Model.forward = counted_forward
    return counts


def counted_timer() -> tuple[dict, TrainTimer]:
    """A TrainTimer and model-work counts that restart with each `train()`."""
    counts = count_model_work()
    return counts, TrainTimer(on_start=lambda trainer: counts.update(forwards=0, tokens=0))


def per_step(counts: dict, run: dict) -> dict:
    return {name: count / run["steps"] for name, count in counts.items()}


def work_cells(a: dict, b: dict) -> list[str]:
    """Table cells `a / b` for model forwards and tokens per step (runs from before the count
    existed have none)."""
    if not (a.get("work") and b.get("work")):
        return ["not counted", "not counted"]
    return [f"{a['work'][name]:.0f} / {b['work'][name]:.0f}" for name in ("forwards", "tokens")]


def peak_rss_mib() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def serve(run_once) -> None:
    """Worker loop: `run` -> one measured run, `quit` -> peak RSS, each as one protocol line.

    Before each run, everything alive (imports, earlier runs' leftovers) is frozen out of the
    garbage collector's reach: `Trainer.train` ends in a full `gc.collect()` (accelerate's
    `free_memory`), whose cost grows with the heap, not with the training, and which took ~60%
    of a 4-step `train()`. Frozen, it costs both sides of a comparison the same: only what the
    run itself made.
    """
    for line in sys.stdin:
        command = line.strip()
        if command == "run":
            gc.collect()
            gc.freeze()
            reply = run_once()
        elif command == "quit":
            reply = {"peak_rss_mib": peak_rss_mib()}
        else:
            reply = {"error": f"unknown command {command!r}"}
        sys.stdout.write(PROTOCOL + json.dumps(reply) + "\n")
        sys.stdout.flush()
        if command == "quit":
            return


class Worker:
    """A worker process, spoken to line by line; its stderr goes to a log file."""

    def __init__(self, name: str, command: list[str], log_dir: Path, env: dict | None = None):
        self.name = name
        self.log = log_dir / f"{name}.log"
        self.process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **OFFLINE_ENV, **(env or {})},
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log.open("w"),
            text=True,
        )

    def ask(self, command: str) -> dict:
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(PROTOCOL):
                reply = json.loads(line[len(PROTOCOL) :])
                if "error" in reply:
                    raise RuntimeError(f"{self.name}: {reply['error']} (log: {self.log})")
                return reply
        tail = self.log.read_text()[-2000:]
        raise RuntimeError(f"{self.name} exited before answering {command!r}:\n{tail}")

    def close(self) -> float:
        rss = self.ask("quit")["peak_rss_mib"]
        self.process.wait(timeout=60)
        return rss


def compare(a: Worker, b: Worker, reps: int) -> dict:
    """Alternate A and B runs (one warm-up each, dropped, then `reps` each); medians and ratio."""
    runs = {a.name: [], b.name: []}
    for index in range(reps + 1):
        for worker in (a, b) if index % 2 == 0 else (b, a):
            run = worker.ask("run")
            if index > 0:
                runs[worker.name].append(run)
    result = {}
    for worker in (a, b):
        seconds = [run["seconds"] for run in runs[worker.name]]
        steps = {run["steps"] for run in runs[worker.name]}
        assert len(steps) == 1, f"{worker.name}: step counts differ between runs: {steps}"
        result[worker.name] = {
            "trainer": runs[worker.name][0]["trainer"],
            "steps": steps.pop(),
            "seconds": seconds,
            "median_s": statistics.median(seconds),
            "work": runs[worker.name][-1].get("work"),  # what a worker counts besides time
            "peak_rss_mib": worker.close(),
        }
    result["ratio"] = result[a.name]["median_s"] / result[b.name]["median_s"]
    return result


def machine() -> dict:
    """What the numbers were measured on, including how busy the machine was."""
    import torch
    import transformers

    from annotated_trl.lab.runner import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "load_average_1min_at_start": os.getloadavg()[0],
    }


def write_results(name: str, results: dict, table: str, out: Path = RESULTS) -> Path:
    """<out>/<name>.json, stamped with the time and the load at the end, and <name>.md."""
    out.mkdir(parents=True, exist_ok=True)
    results["machine"]["load_average_1min_at_end"] = os.getloadavg()[0]
    results["measured_at"] = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    (out / f"{name}.json").write_text(json.dumps(results, indent=1) + "\n")
    return render(name, results, table, out)


def load(value: float | None) -> str:
    return "not recorded" if value is None else f"{value:.1f}"


def render(name: str, results: dict, table: str, out: Path = RESULTS) -> Path:
    """<out>/<name>.md: the machine and its load, the results' note, then `table`."""
    m = results["machine"]
    header = (
        f"Measured {results['measured_at']} on {m['cpu']} ({m['cores']} cores, "
        f"{m['memory_gib']} GiB), torch {m['torch']}, transformers {m['transformers']}; "
        f"load average {load(m['load_average_1min_at_start'])} at the start, "
        f"{load(m['load_average_1min_at_end'])} at the end.\n"
    )
    if results.get("note"):
        header += f"\n{results['note']}\n"
    path = out / f"{name}.md"
    path.write_text(header + "\n" + table)
    return path


def rerender(name: str, table, out: Path = RESULTS) -> Path:
    """Rewrite <name>.md from <name>.json with `table(results)`, measuring nothing."""
    results = json.loads((out / f"{name}.json").read_text())
    return render(name, results, table(results), out)


def spread(side: dict) -> str:
    """A side's median with the range of its repetitions, e.g. `12.3 (11.9–15.0)`."""
    return f"{side['median_s']:.2f} ({min(side['seconds']):.2f}–{max(side['seconds']):.2f})"
