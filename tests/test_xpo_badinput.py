"""XPO bad input: malformed prompt data or an unusable reward is refused with one line naming
the file and the problem, before anything is written (cases shared with Nash-MD in
tests/support/online_pair.py; reward-name cases shared with GRPO in
tests/support/reward_bad_input.py).
"""

import pytest
from support import reward_bad_input
from support.online_pair import (
    bad_data_cases,
    refuses_bad_data,
    refuses_chat_without_template,
)

KEY = "xpo"
DATA = list(bad_data_cases(KEY))
# The recipe names a reward model and a function, so only the cases about a reward's name apply.
REWARD = [f"{KEY}-{name}" for name in ("unknown-reward-module", "unknown-reward-function")]
REWARD += [f"{KEY}-reward-not-a-dotted-path"]


@pytest.mark.badinput
@pytest.mark.parametrize("case", DATA, ids=DATA)
def test_xpo_refuses_bad_data(tiny, tmp_path, monkeypatch, case):
    refuses_bad_data(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_xpo_refuses_chat_without_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    refuses_chat_without_template(KEY, tiny, tmp_path, monkeypatch, policy_without_chat_template)


@pytest.mark.badinput
@pytest.mark.parametrize("case", REWARD, ids=REWARD)
def test_xpo_refuses_bad_reward(tiny, tmp_path, monkeypatch, case):
    reward_bad_input.refuses_bad_input(KEY, tiny, tmp_path, monkeypatch, case)
