"""CPO bad input: every malformed dataset is refused with one line, before anything is written.
The cases are shared with ORPO: see `tests/support/pair_bad_input.py`."""

import pytest
from support import pair_bad_input as shared

KEY = "cpo"
CASES = list(shared.cases(KEY))


@pytest.mark.badinput
@pytest.mark.parametrize("case", CASES, ids=[f"{KEY}-{c}" for c in CASES])
def test_cpo_refuses_bad_dataset(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_dataset(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_cpo_refuses_missing_file(tiny, tmp_path, monkeypatch):
    shared.refuses_missing_file(KEY, tiny, tmp_path, monkeypatch)
