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


def all_problems() -> list[Problem]:
    """The whole task: every operand pair with every operator, 300 problems."""
    return [Problem(a, op, b) for a in range(10) for op in OPERATORS for b in range(10)]


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


def solved_fraction(model, tokenizer, prompts, samples_per_prompt=0) -> float:
    """The fraction of answers to a conversational prompt-only dataset that the task's rule
    (`arithmetic_reward`) judges right: one greedy answer per prompt (`samples_per_prompt=0`),
    or that many sampled at temperature 1.0 from a fixed seed, which estimates the policy's
    expected reward (16 per prompt: 4,096 answers to the 256 training prompts, a standard
    error of about 0.008)."""
    import torch

    tokenizer.padding_side = "left"  # generation continues from the right edge
    texts = [
        tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
        for p in prompts["prompt"]
    ]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    if samples_per_prompt:
        decoding = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0}
        decoding["num_return_sequences"] = samples_per_prompt
    else:
        decoding = {"do_sample": False}
    # fork_rng: sampling here must not move the trainer's random stream.
    with torch.random.fork_rng(), torch.no_grad():
        torch.manual_seed(123)
        generated = model.generate(**batch, max_new_tokens=12, **decoding)
    completions = tokenizer.batch_decode(
        generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    answers = [a for a in prompts["answer"] for _ in range(max(samples_per_prompt, 1))]
    rewards = arithmetic_reward(completions, answer=answers)
    return sum(rewards) / len(rewards)
