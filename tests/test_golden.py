"""Golden curves: each script's tiny recipe still logs the committed per-step metrics.

`tools/golden.py` runs a script's `recipes/<key>_tiny.yaml` for a few steps, logging every step,
in this process (`runpy`); the committed `tests/golden/<key>.json` holds what it logged when the
file was last written. A dependency upgrade that changes training (a default, a loss, masking,
sampling) fails here with one line per differing metric: step, metric, stored value, value now.
If the change is intended, regenerate with `python tools/golden.py --update <key>` and say why in
the commit. The tolerance (rtol 1e-4, atol 1e-6) and why it is safe are in tools/golden.py.

Every `annotated_examples/*_training.py` is a case, so a new script fails here until its golden
file exists; the failure says which command creates it.
"""

import json

import pytest
from support.processes import REPO

from annotated_trl.methods import CPU_METHODS, METHODS
from tools import golden

KEYS = golden.script_keys()


def test_golden_every_script_is_a_case():
    scripts = {p.name for p in (REPO / "annotated_examples").glob("*_training.py")}
    assert scripts == {f"{m.key}_training.py" for m in METHODS}
    assert {f"{key}_training.py" for key in KEYS} == {f"{m.key}_training.py" for m in CPU_METHODS}


def test_golden_diff_is_readable():
    stored = [{"step": 1, "loss": 0.5, "grad_norm": 1.0}, {"step": 2, "loss": 0.4}]
    now = [{"step": 1, "loss": 0.5 * (1 + 5e-5), "grad_norm": 1.1}, {"step": 2}]
    assert golden.diff(stored, now) == [
        "entry 0 step 1 grad_norm: stored 1.0, now 1.1",
        "entry 1 step 2 loss: stored 0.4, now '(missing)'",
    ]
    assert golden.diff(stored, stored[:1]) == ["log entries: stored 2, now 1"]


@pytest.mark.golden
@pytest.mark.parametrize("key", KEYS)
def test_golden_curve(key, tiny, record_property):
    path = golden.golden_path(key)
    if not path.exists():
        pytest.fail(
            f"{key}: no {path.relative_to(REPO)}; create it with `{golden.update_command(key)}`",
            pytrace=False,
        )
    stored = json.loads(path.read_text())["log_history"]
    now = golden.run(key, tiny.root)
    record_property("share of the tolerance used", golden.tolerance_used(stored, now))
    differences = golden.diff(stored, now)
    if differences:
        pytest.fail(
            f"{key}: training changed beyond rtol {golden.RTOL}, atol {golden.ATOL}:\n  "
            + "\n  ".join(differences)
            + f"\nIf intended, run `{golden.update_command(key)}` and say why in the commit.",
            pytrace=False,
        )
