"""Reward functions for the online methods (GRPO, RLOO, Online DPO), named on the command line.

A reward function is loaded only from an explicit dotted import path the user passes, e.g.
`--reward_funcs annotated_trl.toy_task.arithmetic_reward`; nothing in a dataset is ever imported or
executed. A reward *model* is a path or Hub id passed separately; TRL loads it as a sequence
classifier with one output. Every failure is one line, raised before any model is loaded.
"""

import importlib
import importlib.util
import os
import sys
from collections.abc import Callable

# The default reward for a dataset, chosen by the column that holds the reference answer. Both
# are verifiable rewards: 1.0 when the completion's final answer matches, else 0.0.
DEFAULTS = {
    # TRL's own: parses LaTeX (e.g. `\boxed{...}`) with math-verify and checks equivalence.
    "solution": "trl.rewards.accuracy_reward",
    # The toy task's: the completion's last integer equals the `answer` column.
    "answer": "annotated_trl.toy_task.arithmetic_reward",
}

# Reward functions that need an optional package, and the command that installs it.
NEEDS = {
    "trl.rewards.accuracy_reward": ("math_verify", "pip install math-verify"),
    "annotated_trl.rewards.text_accuracy_reward": ("math_verify", "pip install math-verify"),
}


class RewardError(ValueError):
    """A reward function cannot be loaded. The message is one line."""


def import_reward_func(path: str) -> Callable:
    """The callable at dotted import path `path` ("package.module.function")."""
    module_name, _, attribute = path.rpartition(".")
    if not module_name or not attribute:
        raise RewardError(
            f"reward function {path!r}: expected a dotted import path like {DEFAULTS['answer']!r}"
        )
    if path in NEEDS:
        package, install = NEEDS[path]
        if importlib.util.find_spec(package) is None:
            raise RewardError(f"reward function {path!r} needs {package}: {install}")
    # Like `trl grpo`, let a module in the current folder be named (e.g. my_rewards.reward).
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as err:
        raise RewardError(f"reward function {path!r}: no module named {err.name!r}") from None
    except Exception as err:  # the module itself failed while importing
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise RewardError(
            f"reward function {path!r}: importing {module_name!r} failed "
            f"({type(err).__name__}: {first})"
        ) from None
    func = getattr(module, attribute, None)
    if func is None:
        raise RewardError(f"reward function {path!r}: module {module_name!r} has no {attribute!r}")
    if not callable(func):
        raise RewardError(f"reward function {path!r} is {type(func).__name__}, not a function")
    return func


def default_reward_func(
    columns: list[str], model_flag: str | None = "--reward_model_name_or_path"
) -> str:
    """The dotted path of the default reward for a dataset with these columns.

    `model_flag` is the script's flag for a reward model, named in the error (None: the script
    takes reward functions only, as A*-PO's).
    """
    for column, path in DEFAULTS.items():
        if column in columns:
            return path
    raise RewardError(
        f"no reward: the dataset has columns {sorted(columns)} and none of "
        f"{sorted(DEFAULTS)}; pass --reward_funcs package.module.function"
        + (f" or {model_flag}" if model_flag else "")
    )


def text_accuracy_reward(completions: list, solution: list[str], **kwargs) -> list[float]:
    """TRL's `accuracy_reward` for a trainer that passes completions as text (A*-PO).

    `trl.rewards.accuracy_reward` reads each completion as a list of messages and abstains
    (None) on a solution math-verify cannot parse. A2POTrainer passes plain strings and needs a
    number for every completion, so each string becomes one assistant message and an abstention
    scores 0.0 (needs math-verify).
    """
    from trl.rewards import accuracy_reward

    messages = [
        [{"role": "assistant", "content": c}] if isinstance(c, str) else c for c in completions
    ]
    return [0.0 if r is None else r for r in accuracy_reward(messages, solution, **kwargs)]


def load_rewards(
    reward_funcs: list[str] | None,
    reward_model: str | None,
    reward_weights: list[float] | None = None,
) -> list:
    """What to pass as `reward_funcs=` to GRPOTrainer / RLOOTrainer; [] when nothing is named.

    The reward model (a string: TRL loads it) comes first, then each function in the order given.
    `reward_weights`, when given, must have one weight per reward.
    """
    rewards: list = [reward_model] if reward_model else []
    rewards += [import_reward_func(path) for path in reward_funcs or []]
    if rewards and reward_weights is not None and len(reward_weights) != len(rewards):
        raise RewardError(
            f"{len(reward_weights)} reward weights for {len(rewards)} rewards; "
            "expected one weight per reward (the reward model first)"
        )
    return rewards
