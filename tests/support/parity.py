"""Parity with trl 1.12.0: one scenario, run once with the original trainer and once with ours.

Our ports keep trl 1.12's class and config names, so a scenario script differs between the two
runs by one import, exactly the one-line change a user makes when migrating:

    python tests/parity_scenarios/ppo.py --impl original --out a.json  # trl.experimental.ppo
    python tests/parity_scenarios/ppo.py --impl ours --out b.json  # annotated_trl.trainers.ppo

Each run is a fresh process, forked from a warm interpreter of its side (tests/support/warm.py).
For "original" the pure-Python trl 1.12.0 wheel installed by `make setup` in .oracle/trl-1.12
goes first on PYTHONPATH, so `import trl` finds it instead of the pinned 1.16; everything else
(torch, transformers, the fixture) is shared. A scenario writes
its `trainer.state.log_history` as JSON; `assert_same_logs` compares every logged number.

With `processes=2` both runs are two DDP processes on CPU instead, started as `accelerate launch`
starts them (tests/support/warm.py `launch`), and every process writes its own log (`rank_log`):
the distributed code paths (gathers, per-process seeds and shards) are compared too.
"""

import json
import math
import os
from pathlib import Path

from support.processes import OFFLINE_ENV, REPO
from support.warm import launch, shared

ORACLE = REPO / ".oracle" / "trl-1.12"
SCENARIOS = REPO / "tests" / "parity_scenarios"

# Wall-clock measurements differ between any two runs; they are not behaviour.
TIMING_KEYS = {"train_runtime", "train_samples_per_second", "train_steps_per_second"}
TIMING_KEYS |= {"eval_runtime", "eval_samples_per_second", "eval_steps_per_second"}


def oracle_trl() -> Path:
    """The trl 1.12.0 install; a missing one is a set-up error, never a reason to skip."""
    init = ORACLE / "trl" / "__init__.py"
    assert init.exists(), f"{ORACLE} is missing trl 1.12.0: run `make setup`"
    return ORACLE


def run_scenario(
    key: str, impl: str, out_dir: Path, *args, processes: int = 1, timeout: int = 600
) -> list[dict]:
    """Run tests/parity_scenarios/<key>.py with `impl` ("original" or "ours"); its log_history
    (process 0's, with `processes=2`)."""
    assert impl in ("original", "ours") and processes in (1, 2)
    env = {**os.environ, **OFFLINE_ENV}
    env.pop("PYTHONPATH", None)
    if impl == "original":
        env["PYTHONPATH"] = str(oracle_trl())
    out_dir.mkdir(parents=True, exist_ok=True)
    log_file = out_dir / f"{impl}.json"
    argv = [SCENARIOS / f"{key}.py", "--impl", impl, "--out", log_file, *args]
    warm = shared(**OFFLINE_ENV, PYTHONPATH=env.get("PYTHONPATH"))
    if processes == 2:
        result = launch(warm, argv, out_dir, env, processes, timeout)
    else:
        result = warm.run(argv, out_dir, env, timeout)
    assert result.returncode == 0, f"{key} ({impl}) failed:\n{result.stderr[-4000:]}"
    return json.loads(log_file.read_text())


def rank_log(out_dir: Path, impl: str, rank: int) -> list[dict]:
    """The log_history process `rank` wrote in a `processes=2` run (per_process.write_json)."""
    return json.loads(
        (out_dir / (f"{impl}.json" if rank == 0 else f"{impl}.rank{rank}.json")).read_text()
    )


def assert_same_logs(
    original: list[dict], ours: list[dict], rel: float, abs_: float, ignore=()
) -> int:
    """Every logged number equal within `rel`/`abs_` (math.isclose); returns how many compared.

    Same steps, same keys, same values. Fails with one line per difference, e.g.
    `step 3 loss: original 0.6931 ours 0.6902 (|diff| 2.9e-03)`.
    """
    skip = TIMING_KEYS | set(ignore)
    assert [r.get("step") for r in original] == [r.get("step") for r in ours], (
        f"logged at different steps: original {[r.get('step') for r in original]}, "
        f"ours {[r.get('step') for r in ours]}"
    )
    problems, compared = [], 0
    for a, b in zip(original, ours, strict=True):
        step = a.get("step")
        keys_a, keys_b = set(a) - skip, set(b) - skip
        if keys_a != keys_b:
            problems.append(
                f"step {step}: only original logs {sorted(keys_a - keys_b)}, "
                f"only ours logs {sorted(keys_b - keys_a)}"
            )
        for key in sorted(keys_a & keys_b):
            x, y = a[key], b[key]
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                compared += 1
                both_nan = math.isnan(x) and math.isnan(y)
                if not both_nan and not math.isclose(x, y, rel_tol=rel, abs_tol=abs_):
                    problems.append(
                        f"step {step} {key}: original {x:.6g} ours {y:.6g} "
                        f"(|diff| {abs(x - y):.1e})"
                    )
            elif x != y:
                problems.append(f"step {step} {key}: original {x!r} ours {y!r}")
    assert not problems, f"{len(problems)} differences:\n" + "\n".join(problems[:40])
    assert compared > 0, "no numbers were compared"
    return compared


def config_defaults(config_class) -> dict[str, str]:
    """Field name -> repr of its default (a default factory's value), for a dataclass config."""
    import dataclasses

    return {
        f.name: repr(f.default_factory() if f.default is dataclasses.MISSING else f.default)
        for f in dataclasses.fields(config_class)
    }


def original_config_defaults(key: str, config_name: str, tmp_path: Path) -> dict[str, str]:
    """`config_defaults` of trl 1.12.0's `trl.experimental.<key>.<config_name>`, computed in a
    child of the warm interpreter that the original side's scenarios run in."""
    import inspect

    code = (
        f"import json\nfrom trl.experimental.{key} import {config_name}\n"
        f"{inspect.getsource(config_defaults)}"
        f"print(json.dumps(config_defaults({config_name})))\n"
    )
    env = {**os.environ, **OFFLINE_ENV, "PYTHONPATH": str(oracle_trl())}
    warm = shared(**OFFLINE_ENV, PYTHONPATH=env["PYTHONPATH"])
    result = warm.run(["-c", code], tmp_path, env, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])
