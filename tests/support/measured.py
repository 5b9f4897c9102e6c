"""Thresholds on measured numbers, recorded so their margins can be checked across CPUs.

A learning test's verdict rests on a number that training produced (a gain in solve rate, a
held-out margin). Such a number moves with the CPU that computed it: another BLAS kernel sums in
another order, one float differs in the last bit, one sampled token differs, and from there the
run takes another path. So every such assertion goes through `measured` (a fixture), which
records the value and its threshold with pytest's `record_property` before it asserts.
`benchmarks/cross_cpu.py` collects those records from runs under several kernel settings, thread
counts and seeds, and reports each threshold's margin in units of the spread it measured.

    def test_dpo_margin(run, measured):
        measured.at_least("held-out reward margin", run["margin"], 0.05)

Exact facts (a reward that is 0 by construction, a count of log rows) stay plain asserts: no CPU
can change them.
"""

import pytest


class Measured:
    def __init__(self, record_property):
        self._record = record_property

    def at_least(self, name: str, value: float, threshold: float) -> None:
        self._record(name, {"value": float(value), "at_least": threshold})
        assert value >= threshold, f"{name} = {value:.4g}, needs at least {threshold}"

    def at_most(self, name: str, value: float, threshold: float) -> None:
        self._record(name, {"value": float(value), "at_most": threshold})
        assert value <= threshold, f"{name} = {value:.4g}, needs at most {threshold}"


@pytest.fixture
def measured(record_property) -> Measured:
    return Measured(record_property)
