"""Where a scenario writes what it observed, so that it also runs under `accelerate launch`.

Process 0 writes `path` itself; under `accelerate launch --num_processes N` process k > 0 writes
`<stem>.rank<k><suffix>` beside it. Each process's log then survives, even the numbers a trainer
logs from its own shard only (PPO's `val/num_eos_tokens`), instead of N processes racing to
write one file.
"""

import json
from pathlib import Path

from accelerate import PartialState


def write_json(path: Path, obj) -> None:
    rank = PartialState().process_index
    if rank:
        path = path.with_name(f"{path.stem}.rank{rank}{path.suffix}")
    path.write_text(json.dumps(obj, indent=1, default=str))
