"""Same seed, same run: every example script, trained twice with LoRA adapters and the recipe's
seed, ends with the same adapter, bit for bit (CPU, float32).

LoRA is the case that can slip: the adapters are drawn at random when the model is wrapped, and
a trainer that wraps before `Trainer.__init__` seeds anything draws them from whatever state the
random generator is in. Our BCO and PRM ports did, as trl 1.12's did: two runs of their scripts
with the same seed ended with different adapters (measured in fresh processes). Both runs here
share one process, so the generator's state differs between them as it would between processes.
"""

import pytest
import torch
from safetensors.torch import load_file
from support.script_runs import LORA, RUNS, script_args
from support.smoke import run_in_process

from annotated_trl.methods import BY_KEY


@pytest.mark.parametrize("method", list(RUNS))
def test_reproducible_lora_run_repeats_with_the_same_seed(method, tiny, tmp_path, monkeypatch):
    # A trainer without LoRA (A*-PO's) trains all weights: the whole model must repeat.
    lora = BY_KEY[method].lora
    saved = "adapter_model.safetensors" if lora else "model.safetensors"
    adapters = []
    for run in ("first", "second"):
        script, *args = script_args(method, tiny, tmp_path / run)
        run_in_process(monkeypatch, script, *args, *(LORA if lora else []))
        adapters.append(load_file(tmp_path / run / saved))
    first, second = adapters
    assert first.keys() == second.keys()
    assert [name for name in first if not torch.equal(first[name], second[name])] == []
