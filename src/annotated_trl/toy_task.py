"""The toy task every offline run trains on: single-digit arithmetic.

A rule can judge every answer, so the same task gives SFT demonstrations, preference pairs
(right vs wrong answer), thumbs-up/down labels, step-labelled reasoning and a verifiable reward
for the online methods — and tests can show that a method really learns.
"""

import random
import re
from dataclasses import dataclass

OPERATORS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b}


@dataclass(frozen=True)
class Problem:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return OPERATORS[self.op](self.a, self.b)

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    def solution(self, answer: int | None = None) -> str:
        """The completion we train towards; pass `answer` to write a (wrong) variant."""
        value = self.answer if answer is None else answer
        return f"{self.a} {self.op} {self.b} = {value}"

    def wrong_answer(self, rng: random.Random) -> int:
        # Off by a small amount: a plausible mistake, never the right answer.
        return self.answer + rng.choice([-3, -2, -1, 1, 2, 3])


def sample_problems(n: int, seed: int) -> list[Problem]:
    rng = random.Random(seed)
    return [
        Problem(rng.randint(0, 9), rng.choice(list(OPERATORS)), rng.randint(0, 9)) for _ in range(n)
    ]


_LAST_INTEGER = re.compile(r"-?\d+")


def extract_answer(text: str) -> int | None:
    """The last integer in a completion, or None when there is none."""
    numbers = _LAST_INTEGER.findall(text)
    return int(numbers[-1]) if numbers else None


def _text(completion) -> str:
    # Conversational completions are lists of messages; the answer is in the last one.
    if isinstance(completion, list):
        return completion[-1]["content"] if completion else ""
    return completion


def arithmetic_reward(completions: list, answer: list[int], **kwargs) -> list[float]:
    """Verifiable reward: 1.0 when the completion's last integer is the right answer, else 0.0.

    The signature is TRL's reward-function protocol: `completions` is the batch of generated
    completions and every extra dataset column (here `answer`) arrives as a keyword argument.
    """
    return [float(extract_answer(_text(c)) == a) for c, a in zip(completions, answer, strict=True)]
