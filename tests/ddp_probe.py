"""Run an example script under `accelerate launch` unchanged, then write what this rank did.

    accelerate launch ... tests/ddp_probe.py OUT_DIR annotated_examples/sft_training.py --config ...

The script runs through `runpy` exactly as `python script.py ...` would. Two probes are added
from outside: the first micro-batch this rank trained on is fingerprinted (the ranks must see
different data), and after training the rank writes `OUT_DIR/rank<k>.json` with the world size
and a fingerprint of every parameter (the ranks must end with identical weights: their gradients
were averaged).
"""

import hashlib
import json
import runpy
import sys
from pathlib import Path

import torch
import transformers

out_dir, script, *script_args = sys.argv[1:]
first_batch: list[str] = []


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


original_training_step = transformers.Trainer.training_step


def recording_training_step(self, model, inputs, *args, **kwargs):
    if not first_batch:
        first_batch.append(fingerprint(inputs))
    return original_training_step(self, model, inputs, *args, **kwargs)


transformers.Trainer.training_step = recording_training_step

sys.argv = [script, *script_args]
trainer = runpy.run_path(script, run_name="__main__")["trainer"]

model = trainer.accelerator.unwrap_model(trainer.model)
weights = {name: p.detach().float().sum().item() for name, p in model.named_parameters()}
report = {
    "rank": trainer.accelerator.process_index,
    "world_size": trainer.accelerator.num_processes,
    "steps": trainer.state.global_step,
    "first_batch": first_batch[0] if first_batch else None,
    "weights": fingerprint({n: p.detach() for n, p in model.named_parameters()}),
    "weight_sums": weights,
}
Path(out_dir, f"rank{report['rank']}.json").write_text(json.dumps(report))
