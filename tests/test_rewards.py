"""The reward functions of `trl.rewards` (docs/rewards.md), checked against our own code.

Each equation on the page is computed here by a few lines of our own and compared with TRL's
function on inputs where a wrong formula would give a different number: lengths on both sides
of every boundary, n-grams repeated a different number of times, right and wrong answers at
several lengths. The last test builds one real `GRPOTrainer` on the tiny policy and checks what
the trainer passes to a reward function, what it does with `None`, and that an `async def`
reward function is awaited.
"""

import math

import pytest
import torch
from datasets import Dataset
from trl import GRPOConfig, GRPOTrainer
from trl.rewards import (
    accuracy_reward,
    get_cosine_scaled_reward,
    get_repetition_penalty_reward,
    get_soft_overlong_punishment,
    reasoning_accuracy_reward,
    think_format_reward,
)

pytestmark = pytest.mark.math


def msg(text: str) -> list[dict[str, str]]:
    """One conversational completion, as GRPOTrainer hands it to a reward function."""
    return [{"role": "assistant", "content": text}]


# ---------------------------------------------------------------------------------------------
# Length and repetition: functions of the token ids only
# ---------------------------------------------------------------------------------------------


def dapo_length_reward(length: int, l_max: int, l_cache: int) -> float:
    if length <= l_max - l_cache:
        return 0.0
    if length <= l_max:
        return (l_max - l_cache - length) / l_cache
    return -1.0


def test_soft_overlong_punishment_matches_dapo():
    l_max, l_cache = 10, 4  # the ramp runs over lengths 7..10
    lengths = [0, 5, 6, 7, 8, 9, 10, 11, 30]
    reward = get_soft_overlong_punishment(max_completion_len=l_max, soft_punish_cache=l_cache)
    got = reward(completion_ids=[[7] * n for n in lengths])
    expected = [dapo_length_reward(n, l_max, l_cache) for n in lengths]
    assert got == pytest.approx(expected)
    # The ramp is continuous at both ends: 0 at L_max - L_cache, -1 at L_max.
    assert got[lengths.index(6)] == 0.0 and got[lengths.index(10)] == -1.0
    assert got[lengths.index(8)] == pytest.approx(-0.5)


def repetition_reward(ids: list[int], n: int, p: float) -> float:
    windows = [tuple(ids[i : i + n]) for i in range(len(ids) - n + 1)]
    if not windows:
        return 0.0
    return (1 - len(set(windows)) / len(windows)) * p


REPEATS = [
    [1, 2, 3, 4, 5, 6],  # nothing repeats
    [1, 2, 3, 1, 2, 3],  # (1,2,3) twice
    [1, 2, 1, 2, 1, 2, 1, 2],  # a 2-cycle: two distinct trigrams out of six
    [5] * 9,  # one trigram seven times
    [9, 9],  # shorter than n
    [4, 4, 4, 8, 4, 4, 4],  # (4,4,4) twice, the others once
]


@pytest.mark.parametrize("n", [2, 3])
def test_repetition_penalty_counts_repeated_ngrams(n):
    reward = get_repetition_penalty_reward(ngram_size=n, max_penalty=-0.5)
    got = reward(completion_ids=REPEATS)
    expected = [repetition_reward(ids, n, -0.5) for ids in REPEATS]
    assert got == pytest.approx(expected)
    assert len(set(got)) >= 4  # the cases really differ
    with pytest.raises(ValueError):
        get_repetition_penalty_reward(max_penalty=0.5)


# ---------------------------------------------------------------------------------------------
# Format
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "reward"),
    [
        ("<think>\nadd them\n</think>\n42", 1.0),
        ("<think>add them</think>", 1.0),  # an empty answer still passes
        ("add them</think> 42", 0.0),  # no opening tag
        ("<think>add them 42", 0.0),  # no closing tag
        ("I think: <think>add</think> 42", 0.0),  # must start with the tag
        ("<think>a <think>b</think></think> 42", 0.0),  # nested
        ("<think>a</think> <think>b</think> 42", 0.0),  # a second block
    ],
)
def test_think_format_reward(text, reward):
    assert think_format_reward([msg(text)]) == [reward]


# ---------------------------------------------------------------------------------------------
# Correctness (math-verify)
# ---------------------------------------------------------------------------------------------


def test_accuracy_reward_equivalent_latex():
    completions = [
        msg(r"The answer is \boxed{0.5}"),
        msg(r"The answer is \boxed{\frac{2}{4}}"),
        msg(r"\boxed{1/2}"),
        msg(r"The answer is \boxed{\frac{1}{3}}"),
        msg(r"So it is $\frac{1}{2}$."),  # no anchor: not extracted
        msg("one half"),
    ]
    assert accuracy_reward(completions, [r"\frac{1}{2}"] * 6) == [1.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    # The gold side may be written either way too.
    assert accuracy_reward(completions[:2], ["$0.5$"] * 2) == [1.0, 1.0]
    # A gold answer math-verify cannot parse: the example is skipped, not scored 0.
    assert accuracy_reward(completions[:2], ["one half", ""]) == [None, None]


def test_accuracy_reward_logs_parsed_columns():
    logged = {}
    accuracy_reward(
        [msg(r"\boxed{2}")], ["2"], log_extra=lambda key, values: logged.update({key: values})
    )
    assert set(logged) == {"solution", "gold_parsed", "answer_parsed"}


def test_reasoning_accuracy_reward_reads_after_think():
    gold = [r"\frac{1}{2}"] * 4
    completions = [
        msg(
            r"<think>maybe \boxed{1/3}</think> so \boxed{\frac{1}{2}}"
        ),  # only the final part counts
        msg(r"<think>it is \boxed{0.5}"),  # unfinished reasoning: 0, even with the right box
        msg(r"<think>x</think> \boxed{2}"),
        msg(r"<think>x</think> The answer is \boxed{0.5}"),
    ]
    assert reasoning_accuracy_reward(completions, gold) == [1.0, 0.0, 0.0, 1.0]
    # Unfinished reasoning is judged before the gold: 0.0, not None.
    assert reasoning_accuracy_reward(
        [msg("<think>x"), msg("<think>x</think> 2")], ["one half"] * 2
    ) == [0.0, None]
    custom = reasoning_accuracy_reward(
        [msg(r"steps ### \boxed{0.5}")], gold[:1], reasoning_delimiters=["###"]
    )
    assert custom == [1.0]


def cosine_reward(correct: bool, length: int, l_max: int) -> float:
    v_min, v_max = (0.5, 1.0) if correct else (-0.5, -1.0)  # TRL's defaults; swapped when wrong
    x = min(length / l_max, 1.0)
    return v_min + 0.5 * (v_max - v_min) * (1 + math.cos(math.pi * x))


def test_cosine_scaled_reward_right_and_wrong():
    l_max, lengths = 20, [0, 4, 10, 15, 20, 35]
    right, wrong = msg(r"\boxed{\frac{1}{2}}"), msg(r"\boxed{3}")
    completions = [right] * len(lengths) + [wrong] * len(lengths)
    ids = [[1] * n for n in lengths] * 2
    reward = get_cosine_scaled_reward(max_len=l_max)
    got = reward(completions, [r"\frac{1}{2}"] * len(completions), ids)
    expected = [cosine_reward(True, n, l_max) for n in lengths] + [
        cosine_reward(False, n, l_max) for n in lengths
    ]
    assert got == pytest.approx(expected)
    assert got[0] == 1.0 and got[len(lengths)] == -1.0  # shortest: best right, worst wrong
    assert got[4] == got[5] == 0.5  # past max_len the schedule is clamped, not periodic
    assert reward([right], ["one half"], [[1] * 5]) == [None]


# ---------------------------------------------------------------------------------------------
# Writing your own: what GRPOTrainer passes, and what it does with None and async functions
# ---------------------------------------------------------------------------------------------

G = 4


class Abstaining:
    """Scores by position, abstains on rows whose `solution` is "skip", records its kwargs."""

    __name__ = "abstaining"

    def __init__(self):
        self.seen = {}

    def __call__(self, prompts, completions, completion_ids, solution, **kwargs):
        self.seen = {
            "prompts": prompts,
            "completions": completions,
            "completion_ids": completion_ids,
        }
        self.seen |= {"solution": solution, **kwargs}
        kwargs["log_metric"]("abstaining/skipped", float(solution.count("skip")))
        kwargs["log_extra"]("my_column", [s.upper() for s in solution])
        return [None if s == "skip" else float(k % 2) for k, s in enumerate(solution)]


async def async_length(completion_ids, solution, **kwargs):
    return [
        None if s == "skip" else len(ids) / 10
        for ids, s in zip(completion_ids, solution, strict=True)
    ]


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    dataset = Dataset.from_list(
        [
            {"prompt": [{"role": "user", "content": "What is 1/2?"}], "solution": "0.5"},
            {"prompt": [{"role": "user", "content": "Say hi."}], "solution": "skip"},
        ]
    )
    args = GRPOConfig(
        output_dir=str(tmp_path_factory.mktemp("grpo-rewards")),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        num_generations=G,
        per_device_train_batch_size=G,
        gradient_accumulation_steps=2,  # one generation round = both prompts x G
        max_completion_length=6,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=str(tiny.policy),
        reward_funcs=[Abstaining(), async_length],
        args=args,
        train_dataset=dataset,
    )
    trainer.model.train()  # metrics are filed under "train" only in training mode
    return trainer


def test_custom_reward_kwargs_none_and_async(trainer):
    rows = trainer.train_dataset.to_list()
    output = trainer._generate_and_score_completions([dict(rows[0])] * G + [dict(rows[1])] * G)
    seen = trainer.reward_funcs[0].seen

    # What a reward function receives: one entry per completion, extra columns included.
    assert seen["solution"] == ["0.5"] * G + ["skip"] * G
    assert len(seen["prompts"]) == len(seen["completions"]) == len(seen["completion_ids"]) == 2 * G
    assert seen["completions"][0][0]["role"] == "assistant"  # conversational data: message lists
    assert {"trainer_state", "log_extra", "log_metric"} <= set(seen)
    assert "prompt" not in seen  # the column is passed as `prompts`

    # Our own sum and group normalisation, with None left out of the mean and std.
    lengths = output["completion_mask"].sum(dim=1).float()
    first = torch.tensor([float(k % 2) for k in range(G)]) + lengths[:G] / 10
    expected = (first - first.mean()) / (first.std() + 1e-4)
    torch.testing.assert_close(output["advantages"][:G], expected, atol=1e-5, rtol=1e-5)
    # Every function abstained on the second prompt: no signal, advantage exactly 0.
    assert output["advantages"][G:].eq(0).all()

    metrics = trainer._metrics["train"]
    assert metrics["rewards/abstaining/mean"][-1] == pytest.approx(
        0.5
    )  # mean over the 4 scored rows
    assert metrics["rewards/async_length/mean"][-1] == pytest.approx(
        (lengths[:G] / 10).mean().item()
    )
    assert metrics["abstaining/skipped"][-1] == G
    assert list(trainer._logs["extra"]["my_column"]) == ["0.5"] * G + ["SKIP"] * G
