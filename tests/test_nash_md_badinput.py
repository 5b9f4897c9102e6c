"""Nash-MD bad input: malformed prompt data or an unusable reward is refused with one line naming
the file and the problem, before anything is written (cases shared with XPO in
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

KEY = "nash_md"
DATA = list(bad_data_cases(KEY))
# The recipe names a reward model and a function, so only the cases about a reward's name apply.
REWARD = [f"{KEY}-{name}" for name in ("unknown-reward-module", "unknown-reward-function")]
REWARD += [f"{KEY}-reward-not-a-dotted-path"]


@pytest.mark.badinput
@pytest.mark.parametrize("case", DATA, ids=DATA)
def test_nash_md_refuses_bad_data(tiny, tmp_path, monkeypatch, case):
    refuses_bad_data(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_nash_md_refuses_chat_without_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    refuses_chat_without_template(KEY, tiny, tmp_path, monkeypatch, policy_without_chat_template)


@pytest.mark.badinput
@pytest.mark.parametrize("case", REWARD, ids=REWARD)
def test_nash_md_refuses_bad_reward(tiny, tmp_path, monkeypatch, case):
    reward_bad_input.refuses_bad_input(KEY, tiny, tmp_path, monkeypatch, case)


@pytest.mark.badinput
def test_nash_md_refuses_a_repetition_penalty_it_would_half_apply(tiny, tmp_path):
    from annotated_trl.toy_task import arithmetic_reward
    from annotated_trl.trainers.nash_md import NashMDConfig, NashMDTrainer

    args = NashMDConfig(output_dir=str(tmp_path), use_cpu=True, repetition_penalty=2.0)
    with pytest.raises(ValueError, match=r"repetition_penalty=2.0: .* the policy's half only"):
        NashMDTrainer(model=str(tiny.policy), reward_funcs=arithmetic_reward, args=args)
    assert not any(tmp_path.iterdir())
