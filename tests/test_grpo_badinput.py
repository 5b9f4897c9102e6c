"""GRPO bad input: a malformed dataset or an unusable reward is refused with one line, before
anything is written. The cases are shared with RLOO: see `tests/support/reward_bad_input.py`."""

import pytest
from support import reward_bad_input as shared

KEY = "grpo"


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(shared.cases(KEY)))
def test_grpo_refuses_bad_input(tiny, tmp_path, monkeypatch, case):
    shared.refuses_bad_input(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_grpo_without_reward_column_needs_a_reward(tiny, tmp_path, monkeypatch):
    shared.needs_a_reward(KEY, tiny, tmp_path, monkeypatch)
