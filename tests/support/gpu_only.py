"""What the smoke tests of the GPU-only rows (the method table's `gpu_only`) share: on a machine
without CUDA the script refuses in one line, before any flag is checked or anything loads, and
writes nothing; `--help` still works. A machine with a GPU would try to train: there these
checks do not apply, and the row's GPU check (benchmarks/gpu_<key>.sh) is the test."""

import pytest
import torch

from annotated_trl.methods import BY_KEY
from support.processes import run_script_warm


def require_no_gpu() -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the script would try to train")


def assert_refuses_in_one_line(key: str, tmp_path) -> None:
    recipe = f"annotated_examples/recipes/{key}.yaml"
    out = tmp_path / "out"
    result = run_script_warm(f"{key}_training.py", "--config", recipe, "--output_dir", str(out))
    assert result.returncode == 1, result.stderr[-2000:]
    (line,) = result.stderr.strip().splitlines()
    assert line == (
        f"error: {key} needs CUDA GPUs and this machine has none: "
        f"{BY_KEY[key].gpu_only}; run it on GPUs as {recipe} says"
    )
    assert "Traceback" not in result.stderr and not out.exists()


def assert_refusal_comes_first_and_help_works(key: str, misspelt: list[str], tmp_path) -> str:
    """A misspelt flag would be refused too, but the missing GPU is the first thing to fix.
    Returns what `--help` printed, for the caller to check the script's own flags."""
    script = f"{key}_training.py"
    refused = run_script_warm(script, *misspelt, "--output_dir", str(tmp_path))
    assert refused.returncode == 1 and "needs CUDA GPUs" in refused.stderr
    assert misspelt[0].lstrip("-") not in refused.stderr
    helped = run_script_warm(script, "--help")
    assert helped.returncode == 0, helped.stderr[-2000:]
    return helped.stdout
