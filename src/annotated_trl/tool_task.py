"""The tool-use task: two-digit arithmetic with a calculator the policy may call.

"What is 37 * 48?" is beyond the tiny policy (it cannot multiply two-digit numbers), but the
`Calculator` environment can: a completion that calls `multiply(a=37, b=48)` gets `1776` back and
only has to repeat it. So the reward separates completions that use the tool well from those that
guess, and GRPO with tools (`GRPOTrainer(environment_factory=Calculator)`) can learn to call it.

Everything a tool-calling run needs that the plain toy task lacks lives here: the environment,
the chat template that renders tools and tool calls, the response template that parses a
completion back into a tool call, and the demonstrations (tool-call traces) that warm the policy
up. annotated_trl.fixtures builds the `tool_policy` model and the `tool_calling` data from them.
"""

import random
from dataclasses import dataclass

from annotated_trl.toy_task import extract_answer

TOOL_OPERATORS = {"+": ("add", lambda a, b: a + b), "*": ("multiply", lambda a, b: a * b)}
TRACE_ROWS = 1024
LOW, HIGH = 2, 9  # demonstrations in the fixture's data/tool_traces


@dataclass(frozen=True)
class ToolProblem:
    a: int
    op: str
    b: int

    @property
    def answer(self) -> int:
        return TOOL_OPERATORS[self.op][1](self.a, self.b)

    @property
    def question(self) -> str:
        return f"What is {self.a} {self.op} {self.b}?"

    @property
    def tool(self) -> str:
        return TOOL_OPERATORS[self.op][0]


def sample_tool_problems(n: int, seed: int, low: int = LOW, high: int = HIGH) -> list[ToolProblem]:
    """Operands from `low` to `high`, `+` or `*`. The fixture's are single digits: the tiny
    policy learns to copy them into a call in a few hundred steps (it does not learn to copy two
    digits in a thousand), and it cannot reliably multiply them in its head."""
    rng = random.Random(seed)
    ops = list(TOOL_OPERATORS)
    return [
        ToolProblem(rng.randint(low, high), rng.choice(ops), rng.randint(low, high))
        for _ in range(n)
    ]


def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


def multiply(a: int, b: int) -> int:
    """Multiply two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a * b


class Calculator:
    """The environment: one instance per rollout (GRPOTrainer builds them with
    `environment_factory=Calculator` and reuses them, calling `reset` before each rollout).

    Its public methods other than `reset` and `get_reward` are the tools: GRPOTrainer reads their
    names, type hints and docstrings (the `Args:` section) into the JSON schema shown to the model.
    """

    def reset(self, answer: int | None = None, **row) -> None:
        """Start a rollout. GRPOTrainer passes every column of the dataset row as a keyword; the
        `answer` column is kept to score the rollout. Returning None leaves the prompt as it is (a
        string would be appended to the last user message)."""
        self.answer = answer
        self.results: list[int] = []

    def add(self, a: int, b: int) -> int:
        """Add two integers.

        Args:
            a: The first number.
            b: The second number.
        """
        return self._record(a + b)

    def multiply(self, a: int, b: int) -> int:
        """Multiply two integers.

        Args:
            a: The first number.
            b: The second number.
        """
        return self._record(a * b)

    def _record(self, result: int) -> int:
        # A name starting with "_" is not a tool.
        self.results.append(result)
        return result

    def get_reward(self) -> float:
        """The environment's own reward (logged as `rewards/Calculator/mean`): 1.0 when one of
        the rollout's tool calls computed the answer, i.e. the model called the right tool with
        the right numbers. It cannot see the final answer, only what happened to its tools."""
        return float(self.answer in self.results)


def final_answer_reward(completions: list, answer: list[int], **kwargs) -> list[float]:
    """1.0 when the last integer of the completion's final message is the answer, else 0.0.

    A multi-turn completion is a list of messages (assistant, tool, assistant, ...); only the
    model's last message counts, so echoing a tool result is rewarded once the model says it."""
    rewards = []
    for completion, expected in zip(completions, answer, strict=True):
        last = completion[-1] if completion else {}
        text = last.get("content") or "" if last.get("role") == "assistant" else ""
        rewards.append(float(extract_answer(text) == expected))
    return rewards


# ChatML as the tiny fixture writes it, plus what tool calling needs, in the layout of the
# Hermes / Qwen2.5 format: the tools listed in a system message, a call written as
# `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` inside the assistant's turn, and each
# result in a turn of its own (`<|im_start|>tool`). The tool list is one short line (Qwen2.5 writes
# the full JSON schemas, hundreds of tokens). Rendering a conversation with a tool result appended
# leaves the earlier tokens unchanged (prefix-preserving), which GRPOTrainer needs to splice tool
# results into a completion.
TOOL_CHAT_TEMPLATE = (
    "{%- if tools %}"
    "{{- '<|im_start|>system\\nTools:' }}"
    "{%- for tool in tools %}"
    "{%- set f = tool.function if tool.function is defined else tool %}"
    "{{- ' ' + f.name + '(' + (f.parameters.properties | list | join(', ')) + ')' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}"
    "{{- message['content'] or '' }}"
    "{%- for call in message.get('tool_calls') or [] %}"
    "{%- set f = call.function if call.function is defined else call %}"
    "{%- set args = f.arguments if f.arguments is string else (f.arguments | tojson) %}"
    "{{- '<tool_call>{\"name\": \"' + f.name + '\", \"arguments\": ' + args + '}</tool_call>' }}"
    "{%- endfor %}"
    "{{- '<|im_end|>' }}"
    "{% endgeneration %}"
    "{%- else %}{{- message['content'] | string + '<|im_end|>' }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# How transformers parses a completion back into a message (`tokenizer.parse_response`, which
# GRPOTrainer calls on every completion): text up to the first `<tool_call>` is `content`, each
# `<tool_call>...</tool_call>` holds JSON that becomes one entry of `tool_calls`. Saved in the
# tokenizer's config, so `AutoTokenizer.from_pretrained` brings it back. TRL sets an equivalent one
# by itself for the chat templates it knows (Qwen2.5, Qwen3, Llama 3.1, ...).
TOOL_RESPONSE_TEMPLATE = {
    "defaults": {"role": "assistant"},
    "start_anchor": "<|im_start|>assistant\n",
    "fields": {
        "tool_calls": {
            "open": "<tool_call>",
            "close_pattern": r"</tool_call>\s*",
            "repeats": True,
            "content": "json",
            "transform": {"type": "function", "function": "{content}"},
        },
        "content": {"close_pattern": r"<\|im_end\|>\s*", "content": "text"},
    },
}

# The fixed pieces of a call, each one token of the fixture's tokenizer: a call is then six tokens
# (opener naming the tool, digit, separator, digit, closer, end of turn), few enough for the
# 30k-parameter policy to learn in a few hundred steps. (Qwen2.5's tokenizer has `<tool_call>` as
# one token and spells the JSON in about twenty.)
TOOL_CALL_TOKENS = (
    *(
        f'<tool_call>{{"name": "{name}", "arguments": {{"a": '
        for name, _ in TOOL_OPERATORS.values()
    ),
    ', "b": ',
    "}}</tool_call>",
    "<tool_call>",
    "</tool_call>",
)


def tool_schemas() -> list[dict]:
    """The JSON schemas of the Calculator's tools, as GRPOTrainer renders them."""
    from transformers.utils import get_json_schema

    return [get_json_schema(Calculator.add), get_json_schema(Calculator.multiply)]


def tool_call(name: str, a: int, b: int) -> dict:
    return {"type": "function", "function": {"name": name, "arguments": {"a": a, "b": b}}}


def trace(p: ToolProblem, uses_tool: bool) -> list[dict]:
    """A demonstration: the question, then either a call to the tool, its result and the answer,
    or the answer written directly (right, but a tiny model cannot reproduce it)."""
    user = {"role": "user", "content": p.question}
    if not uses_tool:
        return [user, {"role": "assistant", "content": str(p.answer)}]
    return [
        user,
        {"role": "assistant", "content": "", "tool_calls": [tool_call(p.tool, p.a, p.b)]},
        {"role": "tool", "name": p.tool, "content": str(p.answer)},
        {"role": "assistant", "content": str(p.answer)},
    ]


def tool_rows(problems: list[ToolProblem]) -> list[dict]:
    """Prompts for GRPO: conversational prompt-only rows with the `answer` column."""
    return [
        {"prompt": [{"role": "user", "content": p.question}], "answer": p.answer} for p in problems
    ]


# What TOOL_CHAT_TEMPLATE writes for the Calculator's tools, as a system message of its own: the
# demonstrations carry it in their messages instead of a `tools` column of JSON schemas (a few
# hundred bytes a row), and render to the very tokens a prompt rendered with `tools=` starts with
# (tests/test_grpo_tools_smoke.py checks it).
TOOLS_SYSTEM_MESSAGE = {"role": "system", "content": "Tools: add(a, b) multiply(a, b)"}


def trace_rows(problems: list[ToolProblem], rng: random.Random, tool_share: float) -> list[dict]:
    """SFT rows (conversational language modelling): `tool_share` of them use the calculator,
    the rest answer directly."""
    return [
        {"messages": [TOOLS_SYSTEM_MESSAGE, *trace(p, rng.random() < tool_share)]} for p in problems
    ]


def main(argv: list[str] | None = None) -> None:
    """`python -m annotated_trl.tool_task DIR`: write DIR/{train,test}.jsonl, calculator problems
    for a real model (the GPU recipe), offline."""
    import argparse
    import json
    from pathlib import Path

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--rows", type=int, default=20000, help="training prompts")
    parser.add_argument("--test_rows", type=int, default=500)
    parser.add_argument("--low", type=int, default=LOW)
    parser.add_argument("--high", type=int, default=HIGH)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.directory.mkdir(parents=True, exist_ok=True)
    for split, n, seed in (
        ("train", args.rows, args.seed),
        ("test", args.test_rows, args.seed + 1),
    ):
        rows = tool_rows(sample_tool_problems(n, seed, args.low, args.high))
        text = "".join(json.dumps(row) + "\n" for row in rows)
        (args.directory / f"{split}.jsonl").write_text(text, encoding="utf-8")
        print(f"{args.directory / f'{split}.jsonl'}: {n} prompts")


if __name__ == "__main__":
    main()
