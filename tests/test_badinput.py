"""Bad input as a user sees it, for every script of the method table: `python script.py` given
data in a format its method cannot train on exits with 1, prints exactly one line on stderr (the
file and what is wrong with it), no traceback, and writes no output folder.

The first script of the table runs in a bare interpreter, as on a user's terminal: whatever torch,
transformers, datasets, accelerate, peft or TRL print while they are first imported would show
there. The others are forked from a warm interpreter that has imported those already
(tests/support/warm.py): what they print on import is the same for every script, so the bare run
covers it, and anything a script imports beyond them (its own modules, `trl.experimental`) is
still imported, and would still print, in its own process. A bare start costs 5-7 CPU-seconds of
imports; fifteen of them were a minute of the suite's two cores. The per-method files
(tests/test_<key>_badinput.py) check each kind of mistake and its message in-process.
"""

from concurrent.futures import ThreadPoolExecutor

import pytest
from support.processes import REPO, run_script, run_script_warm

from annotated_trl.methods import CPU_METHODS as METHODS

BARE = METHODS[0].key  # the one script started as a user starts it
pytestmark = pytest.mark.badinput


def wrong_format(method) -> str:
    """A fixture data folder in a format the method does not train on."""
    return next(f for f in ("stepwise_supervision", "preference") if f not in method.formats)


def run(method, tiny, out):
    """The script, given the wrong data: bare for BARE, forked from the warm interpreter else."""
    script, *args = command(method, tiny, out)
    return (run_script if method.key == BARE else run_script_warm)(script, *args)


def command(method, tiny, out) -> list:
    models = [x for flag, m in method.fixture.models for x in (f"--{flag}", tiny.root / m)]
    return [
        f"{method.key}_training.py",
        *["--config", REPO / "annotated_examples" / "recipes" / f"{method.key}_tiny.yaml"],
        *["--model_name_or_path", tiny.root / method.fixture.policy, *models],
        *["--dataset_name", tiny.data / wrong_format(method), "--output_dir", out],
    ]


@pytest.fixture(scope="module")
def runs(tiny, tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-input")
    pool = ThreadPoolExecutor(max_workers=2)
    started = {m.key: pool.submit(run, m, tiny, root / m.key / "out") for m in METHODS}
    yield {key: (future, root / key / "out") for key, future in started.items()}
    pool.shutdown(cancel_futures=True)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.key)
def test_bad_input_as_a_user_sees_it(method, tiny, runs):
    future, out = runs[method.key]
    result = future.result()
    assert result.returncode == 1, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    data = tiny.data / wrong_format(method)
    assert lines[0].startswith(f"error: {data}")
    assert f"{wrong_format(method)} data, which {method.key} cannot train on" in lines[0]
    assert not out.exists()
