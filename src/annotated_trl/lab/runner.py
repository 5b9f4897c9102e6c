"""Run the lab: every experiment at every seed, two at a time, and one results file.

Each run is the method's example script, executed by `runpy` in a child forked from this
process. The parent imports every trainer once (`import_trainers`), so a run costs its training
and not the 5-7 CPU-seconds a fresh interpreter spends importing them
(benchmarks/results/suite.md). Importing the packages is not enough: TRL and transformers load a
trainer's modules on first use (forked after the fixture's build, which loads the model code, a
3-step DPO run took 2.1 CPU-s without `import_trainers` and 0.9 with it: 80 CPU-s over a whole
lab). It then freezes its heap out of the garbage collector's reach (see `run_lab`). The fork
gives each run its own process all the same, so `os.wait4` reports that run's own peak memory
and CPU time, and a crash or `sys.exit` ends only that run. Each child uses one thread: two runs
side by side use the 2-core box better than one run on two threads (tiny matrices).
"""

import gc
import json
import os
import platform
import runpy
import shlex
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

from annotated_trl import OFFLINE_ENV
from annotated_trl.lab.experiments import (
    ALL,
    BROKEN,
    BROKEN_BY_KEY,
    ORDER,
    WARM_STARTS,
    Experiment,
)

REPO = Path(__file__).resolve().parents[3]
EXAMPLES = REPO / "annotated_examples"
POINTS = 100  # logged points per run, at most: enough for a curve, small enough to commit
QUICK_STEPS = 3


KEYS = list(ALL)  # the site's method order, then the broken runs
BUILT_ON = {key for e in ALL.values() for key in e.uses.values()}
# The warm starts that are only another run's starting point are trained once, at this seed, and
# every seed's run starts from that one (as the learning tests share theirs): the seeds measure a
# method's spread from one starting point, and the lab pays for each warm start once.
WARM_START_SEED = 0
ONCE = {e.key for e in WARM_STARTS}


@dataclass(frozen=True)
class Run:
    key: str  # an experiment's key
    seed: int

    @property
    def experiment(self) -> Experiment:
        return ALL[self.key]

    @property
    def needs(self) -> set["Run"]:
        uses = self.experiment.uses.values()
        return {Run(key, WARM_START_SEED if key in ONCE else self.seed) for key in uses}

    def folder(self, root: Path) -> Path:
        return root / "runs" / self.key / f"seed{self.seed}"


def plan(methods: list[str], seeds: list[int]) -> list["Run"]:
    """The runs `methods` need at every seed, and their broken runs at the first seed, with the
    runs they build on; in site order."""
    wanted = {Run(m, s) for m in methods for s in seeds}
    wanted |= {Run(b.key, seeds[0]) for b in BROKEN if b.base in methods}
    while missing := {need for run in wanted for need in run.needs} - wanted:
        wanted |= missing
    return sorted(wanted, key=lambda run: (run.seed, KEYS.index(run.key)))


def script_argv(run: Run, tiny: Path, root: Path, quick: bool = False) -> list[str]:
    """The command line, after `python`, that trains `run`: its script, its tiny recipe, the
    fixture's data, and the lab's flags. `quick`: QUICK_STEPS steps, to check the lab works."""
    exp = run.experiment
    steps = min(exp.steps, QUICK_STEPS) if quick else exp.steps
    episodes = (
        ["--total_episodes", str(steps * exp.prompts_per_step)] if exp.prompts_per_step else []
    )
    needs = {need.key: need for need in run.needs}
    models = {flag: str(needs[key].folder(root)) for flag, key in exp.uses.items()}
    return [
        str(EXAMPLES / f"{exp.script}_training.py"),
        *["--config", str(EXAMPLES / "recipes" / f"{exp.script}_tiny.yaml")],
        *["--model_name_or_path", str(tiny / "policy")],
        *["--dataset_name", str(tiny / "data" / exp.data)],
        *[flag.format(tiny=tiny) for flag in exp.flags],
        *[item for pair in models.items() for item in pair],
        *["--max_steps", str(steps), *episodes, "--logging_steps", str(max(1, steps // POINTS))],
        *(["--eval_steps", str(steps)] if quick else []),
        *["--seed", str(run.seed), "--output_dir", str(run.folder(root))],
        *["--save_strategy", "no", "--report_to", "none", "--disable_tqdm", "true"],
    ]


def _count_forwards() -> dict[str, int]:
    """Count the passes through a transformer body, and the tokens they process, from now on.

    The hook sits on the body (`Qwen2Model`), not on the model with its head: every forward of
    a policy, reference, reward or value model runs its body exactly once, including the reward
    and value scoring that calls the body and the head separately (PPO, XPO, Nash-MD). A
    generated token is one pass of one token per sequence (the KV cache holds the rest)."""
    from torch.nn.modules.module import register_module_forward_hook

    counts = {"passes": 0, "tokens": 0}

    def hook(module, args, kwargs, output):
        if type(module).__name__.endswith("Model") and hasattr(module, "layers"):
            ids = kwargs.get("input_ids", args[0] if args else None)
            shape = ids.shape if ids is not None else kwargs["inputs_embeds"].shape[:2]
            counts["passes"] += 1
            counts["tokens"] += shape[0] * shape[1]

    register_module_forward_hook(hook, with_kwargs=True)
    return counts


def _problem_sets(tiny: Path):
    """Every problem of the toy task (300), split into those the fixture trains on (its train
    split; every data format holds the same problems) and those no run ever sees."""
    import datasets

    from annotated_trl.toy_task import all_problems

    train = tiny / "data" / "conversational_prompt_only" / "train.jsonl"
    seen = {json.loads(line)["prompt"][-1]["content"] for line in train.read_text().splitlines()}
    sets = {"seen": [], "unseen": []}
    for problem in all_problems():
        row = {"prompt": [{"role": "user", "content": problem.question}], "answer": problem.answer}
        sets["seen" if problem.question in seen else "unseen"].append(row)
    return {name: datasets.Dataset.from_list(rows) for name, rows in sets.items()}


def _score(run: Run, tiny: Path, root: Path) -> dict:
    """A policy's greedy solve rate on the task's problems, seen in training and unseen, at the
    start and end of the run. (A reward model or PRM is scored by its trainer's held-out
    accuracy, in its log.)"""
    if run.experiment.model_kind != "policy":
        return {}
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from annotated_trl.toy_task import solved_fraction

    start = run.experiment.uses.get("--model_name_or_path")
    models = {"start": Run(start, run.seed).folder(root) if start else tiny / "policy"}
    models["end"] = run.folder(root)
    problem_sets = _problem_sets(tiny)
    scores = {}
    for when, path in models.items():
        model = AutoModelForCausalLM.from_pretrained(path).eval()
        tokenizer = AutoTokenizer.from_pretrained(path)
        solved = 0.0
        for name, problems in problem_sets.items():
            scores[f"{name}_{when}"] = solved_fraction(model, tokenizer, problems)
            solved += scores[f"{name}_{when}"] * len(problems)
        scores[f"all_{when}"] = solved / sum(map(len, problem_sets.values()))
    return scores


def _child(run: Run, tiny: Path, root: Path, quick: bool) -> int:
    """Train and score one run in this (forked) process; the exit status is the script's."""
    import torch

    torch.set_num_threads(1)
    folder = run.folder(root)
    folder.mkdir(parents=True, exist_ok=True)
    log = os.open(folder / "log.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    os.dup2(log, 1)
    os.dup2(log, 2)
    argv = script_argv(run, tiny, root, quick)
    print("python", shlex.join(argv), flush=True)
    forwards = _count_forwards()
    sys.argv = argv
    try:
        runpy.run_path(argv[0], run_name="__main__")
    except SystemExit as stop:  # the scripts exit with "error: ..." on a bad invocation
        if stop.code not in (None, 0):
            print(stop.code, flush=True)
            return 1
    except Exception:  # a crash: its traceback goes to the run's log, the lab goes on
        traceback.print_exc()
        return 1
    training_forwards = dict(forwards)
    scores = _score(run, tiny, root)
    (folder / "lab.json").write_text(json.dumps({"forwards": training_forwards, **scores}))
    return 0


def _summary(run: Run, root: Path, wall: float, usage, quick: bool) -> dict:
    """One run's record: settings, measurements and the logged history, rounded to 4 digits."""
    folder = run.folder(root)
    child = json.loads((folder / "lab.json").read_text())
    history = json.loads((folder / "trainer_state.json").read_text())["log_history"]
    steps = max(row.get("step", 0) for row in history)
    return {
        "experiment": run.key,
        "method": run.experiment.script,
        "seed": run.seed,
        # As run from the repository with `annotated-trl lab --out runs/lab`:
        "command": "python "
        + shlex.join(script_argv(run, Path("runs/lab/tiny"), Path("runs/lab"), quick)).replace(
            f"{REPO}/", ""
        ),
        "steps": steps,
        "wall_s": round(wall, 2),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is in KiB on Linux
        "per_step": {k: round(n / steps, 1) for k, n in child.pop("forwards").items()},
        "scores": {k: round(v, 4) for k, v in child.items()},
        "log": rounded_log(history),
    }


def rounded_log(history: list[dict]) -> list[dict]:
    """The trainer's log history, its numbers to 4 significant digits (a smaller file to commit,
    no less than a chart shows)."""
    return [
        {k: float(f"{v:.4g}") for k, v in row.items() if isinstance(v, (int, float))}
        for row in history
    ]


def run_lab(
    root: Path, methods: list[str], seeds: list[int], jobs: int = 2, quick: bool = False
) -> dict:
    """Train `methods` (and the runs they build on) at `seeds`; return and write
    `root/results.json`. Prints one line per finished run."""
    import torch
    import transformers

    from annotated_trl.fixtures import build_all
    from annotated_trl.methods import import_trainers

    import_trainers()  # once here, inherited by every run

    os.environ.update(OFFLINE_ENV)
    torch.set_num_threads(1)  # the fixture's few matrices; children inherit no thread pool
    transformers.utils.logging.disable_progress_bar()
    started, load = time.time(), os.getloadavg()[0]
    tiny = build_all(root / "tiny", seed=0)
    # Everything alive now (the libraries, the fixture's objects) lives as long as the lab: out of
    # the garbage collector's reach, so that no run's collections walk it again. Timed in every
    # run of a whole lab (gc.callbacks, one lab each way): 4,727 collections took 22.4 CPU-s
    # unfrozen, 3% of the lab's CPU time, and 1.0 CPU-s frozen.
    gc.collect()
    gc.freeze()
    pending, running, done, failed = plan(methods, seeds), {}, {}, []
    while pending or running:
        # Longest first, so that no long run is left alone at the end: the runs others build on,
        # then the rest from the end of the table (the RL methods and broken runs are longest).
        ready = sorted(
            (run for run in pending if run.needs <= done.keys()),
            key=lambda run: (run.key not in BUILT_ON, -KEYS.index(run.key), run.seed),
        )
        blocked = [run for run in pending if run.needs & set(failed)]
        for run in blocked:
            pending.remove(run)
            failed.append(run)
            print(f"skipped {run.key} seed {run.seed}: a run it builds on failed")
        while ready and len(running) < jobs:
            run = ready.pop(0)
            pending.remove(run)
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    code = _child(run, tiny, root, quick)
                finally:
                    os._exit(code)
            running[pid] = (run, time.time())
        if not running:
            continue
        pid, status, usage = os.wait4(-1, 0)
        run, began = running.pop(pid)
        wall = time.time() - began
        if os.waitstatus_to_exitcode(status) == 0:
            done[run] = _summary(run, root, wall, usage, quick)
            print(f"{run.key} seed {run.seed}: {wall:.0f} s", flush=True)
        elif run.key in BROKEN_BY_KEY:  # a deliberate mistake may stop the run: record how
            done[run] = {
                "experiment": run.key,
                "seed": run.seed,
                "error": last_line(run.folder(root)),
            }
            print(f"{run.key} seed {run.seed}: stopped, as expected: {done[run]['error']}")
        else:
            failed.append(run)
            print(f"FAILED {run.key} seed {run.seed}: see {run.folder(root) / 'log.txt'}")
    results = {
        "provenance": _provenance(time.time() - started, seeds, jobs, quick, load),
        "runs": [done[run] for run in sorted(done, key=lambda r: (KEYS.index(r.key), r.seed))],
        "failed": [f"{run.key} seed {run.seed}" for run in failed],
    }
    (root / "results.json").write_text(results_json(results))
    return results


def merge_results(base: dict, update: dict) -> dict:
    """`base` with the experiments `update` ran replaced by `update`'s runs: a method added, or
    re-run after a change, without training the whole lab again. A run the update only built on
    (the SFT policy) that computed what the base's did (same scores, same logged numbers but
    the timings) keeps the base's record, timed with the whole lab. The base run's provenance
    stays; the update's goes under "updates", with the experiments it replaced.
    """
    assert not update["failed"], f"the update has failed runs: {update['failed']}"
    assert not update["provenance"]["quick"], "a --quick run is a check, not a result"
    before = {(run["experiment"], run["seed"]): run for run in base["runs"]}
    new = [run for run in update["runs"] if not _same_computation(run, before)]
    rerun = {run["experiment"] for run in new}
    # Only what a whole lab at the base's seeds would train (a warm start now trained once leaves
    # its other seeds behind).
    planned = {(run.key, run.seed) for run in plan(ORDER, base["provenance"]["seeds"])}
    runs = [run for run in base["runs"] if run["experiment"] not in rerun] + new
    runs = [run for run in runs if (run["experiment"], run["seed"]) in planned]
    order = {key: i for i, key in enumerate(KEYS)}
    runs.sort(key=lambda run: (order.get(run["experiment"], len(order)), run["seed"]))
    note = {**update["provenance"], "experiments": sorted(rerun, key=lambda k: order.get(k, 0))}
    provenance = {**base["provenance"]}
    provenance["updates"] = [*base["provenance"].get("updates", []), note]
    return {"provenance": provenance, "runs": runs, "failed": base["failed"]}


def _same_computation(run: dict, before: dict) -> bool:
    old = before.get((run["experiment"], run["seed"]))

    def numbers(record: dict) -> list:
        return [
            {k: v for k, v in row.items() if "runtime" not in k and "per_second" not in k}
            for row in record["log"]
        ]

    return old is not None and old["scores"] == run["scores"] and numbers(old) == numbers(run)


def results_json(results: dict) -> str:
    """Compact JSON, one run per line: a new lab run shows in a diff run by run."""
    runs = ",\n".join(json.dumps(run, separators=(",", ":")) for run in results["runs"])
    head = {k: v for k, v in results.items() if k != "runs"}
    return json.dumps(head, indent=1)[:-2] + ',\n "runs": [\n' + runs + "\n]}\n"


def last_line(folder: Path) -> str:
    """The last line a run printed: a script's one-line error, or the end of a traceback."""
    lines = (folder / "log.txt").read_text().strip().splitlines()
    return lines[-1] if lines else "no output"


def cpu_name() -> str:
    """The CPU's model name (Linux), as provenance of a measurement."""
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )


def _provenance(wall: float, seeds: list[int], jobs: int, quick: bool, load: float) -> dict:
    import datasets
    import torch
    import transformers
    import trl

    return {
        "command": "annotated-trl " + shlex.join(sys.argv[1:]),
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{cpu_name()}, {os.cpu_count()} cores, {jobs} runs at a time, 1 thread each",
        "python": platform.python_version(),
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "trl": trl.__version__,
            "datasets": datasets.__version__,
        },
        "seeds": seeds,
        "quick": quick,
        "wall_s": round(wall, 1),
        # Other work on the machine slows the runs down: the 1-minute load average at the start.
        "load_at_start": round(load, 1),
    }
