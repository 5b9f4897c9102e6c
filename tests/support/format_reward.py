"""A format reward for smoke tests of reward-function-only trainers (A*-PO): 1.0 when the
completion contains an integer at all, right or wrong.

The tiny random policy almost never writes the right answer, so the toy task's
`arithmetic_reward` is 0 nearly everywhere; with every reward and every V* at 0, A*-PO's
regression target and its gradient are exactly 0 and the weights never move. Random
completions of the fixture's tokenizer (trained on arithmetic) often contain a digit, so this
reward separates them. Named on the command line as `tests.support.format_reward.has_number`
(the scripts import dotted paths from the working directory, the repository root).
"""

from annotated_trl.toy_task import extract_answer


def has_number(completions: list, **kwargs) -> list[float]:
    return [
        float(extract_answer(c if isinstance(c, str) else c[-1]["content"]) is not None)
        for c in completions
    ]
