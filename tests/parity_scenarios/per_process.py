"""Where a scenario writes what it observed, so that it also runs under `accelerate launch`.

Process 0 writes `path` itself; under `accelerate launch --num_processes N` process k > 0 writes
`<stem>.rank<k><suffix>` beside it. Each process's log then survives, even the numbers a trainer
logs from its own shard only (PPO's `val/num_eos_tokens`), instead of N processes racing to
write one file.

A scenario (and tests/ddp_probe.py) ends with `exit_skipping_gloo_teardown()` after its log is
written. Under two processes, letting the interpreter tear down the gloo process group is racy in
torch 2.13: a gloo worker thread that still has to free a finished collective needs the GIL, while
the main thread holds the GIL and waits for that worker's lock in the process group's destructor.
Seen here as a process that aborted at exit ("terminate called without an active exception", in CI,
trl 1.12's XPO) and as one that hung for ten minutes after writing its log (trl 1.12's Nash-MD,
with `trainer.end()` added). Both happened after the numbers were written, so the scenario skips
that teardown once every process is done.
"""

import json
import os
import sys
from pathlib import Path

import torch
from accelerate import PartialState


def write_json(path: Path, obj) -> None:
    rank = PartialState().process_index
    if rank:
        path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
    path.write_text(json.dumps(obj, indent=1, default=str))


def exit_skipping_gloo_teardown() -> None:
    """Under several processes: wait for all of them, then leave without the interpreter's
    teardown (see above). A single process has no process group and returns, so a scenario can
    still be run many times in one process (benchmarks/ports.py does). After `trainer.end()`
    the group is gone, and with it the need to wait: every collective is behind us."""
    state = PartialState()
    if state.num_processes == 1:
        return
    if torch.distributed.is_initialized():
        state.wait_for_everyone()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
