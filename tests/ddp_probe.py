"""Run an example script under `accelerate launch` unchanged, then write what this rank did.

    accelerate launch ... tests/ddp_probe.py OUT_DIR annotated_examples/sft_training.py --config ...

The script runs through `runpy` exactly as `python script.py ...` would. Three probes watch it
from outside, the same for every trainer (TRL's, and our ports with their own training loops):
- the first batch this rank's prepared data loader yields is fingerprinted (the ranks must see
  different data);
- the parameters the optimiser holds are copied just before its first step and compared with
  their values at the end (training must move them);
- after training, every parameter of the model is fingerprinted (the ranks must end with
  identical weights: their gradients were averaged).
The rank writes all of it to `OUT_DIR/rank<k>.json`.
"""

import hashlib
import json
import runpy
import sys
from pathlib import Path

import torch
from accelerate.data_loader import DataLoaderShard
from parity_scenarios.per_process import exit_skipping_gloo_teardown
from torch.optim.optimizer import register_optimizer_step_pre_hook

out_dir, script, *script_args = sys.argv[1:]
first_batch: list[str] = []
before_first_step: list[torch.Tensor] = []


def fingerprint(obj) -> str:
    def plain(x):
        if torch.is_tensor(x):
            return x.tolist()
        if isinstance(x, dict):
            return {k: plain(v) for k, v in sorted(x.items())}
        if isinstance(x, (list, tuple)):
            return [plain(v) for v in x]
        return x if isinstance(x, (str, int, float, bool, type(None))) else repr(x)

    return hashlib.sha256(json.dumps(plain(obj), default=repr).encode()).hexdigest()


def optimised(optimizer) -> list[torch.Tensor]:
    return [p.detach() for group in optimizer.param_groups for p in group["params"]]


original_iter = DataLoaderShard.__iter__


def recording_iter(self):
    for batch in original_iter(self):
        if not first_batch:
            first_batch.append(fingerprint(batch))
        yield batch


def snapshot_before_first_step(optimizer, args, kwargs):
    if not before_first_step:
        before_first_step.extend(p.clone() for p in optimised(optimizer))


DataLoaderShard.__iter__ = recording_iter
register_optimizer_step_pre_hook(snapshot_before_first_step)

sys.argv = [script, *script_args]
trainer = runpy.run_path(script, run_name="__main__")["trainer"]

model = trainer.accelerator.unwrap_model(trainer.model)
after = optimised(trainer.optimizer)
report = {
    "rank": trainer.accelerator.process_index,
    "world_size": trainer.accelerator.num_processes,
    "steps": trainer.state.global_step,
    "first_batch": first_batch[0] if first_batch else None,
    "weights": fingerprint({n: p.detach() for n, p in model.named_parameters()}),
    "optimised": len(after),
    "moved": sum(not torch.equal(a, b) for a, b in zip(before_first_step, after, strict=True)),
}
Path(out_dir, f"rank{report['rank']}.json").write_text(json.dumps(report))
exit_skipping_gloo_teardown()  # the script has finished; see per_process.py
