"""Async GRPO's script on a machine without CUDA: it refuses in one line, before any flag is
checked or anything loads, and writes nothing. (It cannot train here: the method table's
`gpu_only` says why. What runs on a CPU is tested in tests/test_async_grpo_math.py; the GPU run
is benchmarks/gpu_async_grpo.sh.)"""

import pytest
import torch
from support.processes import run_script_warm

from annotated_trl.methods import BY_KEY

pytestmark = pytest.mark.smoke
SCRIPT = "async_grpo_training.py"
RECIPE = "annotated_examples/recipes/async_grpo.yaml"


@pytest.fixture(autouse=True)
def no_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would try to train")


def test_script_refuses_on_cpu_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    result = run_script_warm(SCRIPT, "--config", RECIPE, "--output_dir", str(out))
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"error: async_grpo needs CUDA GPUs and this machine has none: "
        f"{BY_KEY['async_grpo'].gpu_only}; run it on GPUs as {RECIPE} says"
    )
    assert "Traceback" not in result.stderr and not out.exists()


def test_the_refusal_comes_before_the_flags_and_help_still_works(tmp_path):
    # A misspelt flag would be refused too, but the missing GPU is the first thing to fix.
    refused = run_script_warm(SCRIPT, "--max_stalenes", "2", "--output_dir", str(tmp_path))
    assert refused.returncode == 1 and "needs CUDA GPUs" in refused.stderr
    assert "max_stalenes" not in refused.stderr
    helped = run_script_warm(SCRIPT, "--help")
    assert helped.returncode == 0 and "--max_staleness" in helped.stdout
