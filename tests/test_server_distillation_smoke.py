"""Server distillation's script on a machine without CUDA: it refuses in one line, before any
flag is checked or anything loads, and writes nothing (tests/support/gpu_only.py). It cannot
train here: the method table's `gpu_only` says why. What runs on a CPU is tested in
tests/test_server_distillation_math.py, against a stand-in teacher server; the GPU run is
benchmarks/gpu_server_distillation.sh."""

import pytest
from support.gpu_only import (
    assert_refusal_comes_first_and_help_works,
    assert_refuses_in_one_line,
    require_no_gpu,
)

pytestmark = pytest.mark.smoke
KEY = "server_distillation"


@pytest.fixture(autouse=True)
def no_gpu():
    require_no_gpu()


def test_script_refuses_on_cpu_in_one_line_and_writes_nothing(tmp_path):
    assert_refuses_in_one_line(KEY, tmp_path)


def test_the_refusal_comes_before_the_flags_and_help_still_works(tmp_path):
    helped = assert_refusal_comes_first_and_help_works(KEY, ["--loss_topk", "8"], tmp_path)
    assert "--teacher_model_server_url" in helped and "--loss_top_k" in helped
