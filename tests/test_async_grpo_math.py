"""Async GRPO's equations (reference_guides/async_grpo.md), each computed here independently and
compared with TRL 1.16's own code on CPU. The trainer cannot run here (vLLM server, CUDA
FlashAttention-3), so its pieces are called directly:

- the advantage: `_AsyncRolloutLoop._score_group` (the rollout worker's scoring);
- the staleness filter: `RolloutQueueDataset.__iter__`;
- the packing: `TreeRow` and `DataCollatorForRollout`;
- the loss, its normalisation and its metrics: `AsyncGRPOTrainer.compute_loss`, called on a stand-in
  model that computes each position's log-probability from the tokens the tree says it attends to;
- the weight sync's order: `AsyncGRPOTrainer._sync_weight_merged`;
- the config: `AsyncGRPOConfig`'s defaults and its forced accelerator settings.

Inputs are chosen so that a wrong formula fails: ragged lengths, a shared prompt, a forked
conversation, rewards that abstain, ratios on both sides of the clip, two accumulation steps.
"""

import asyncio
import math
import queue
import types
from collections import defaultdict

import numpy as np
import pytest
import torch

pytestmark = pytest.mark.math

from trl.experimental.async_grpo import AsyncGRPOConfig, AsyncGRPOTrainer  # noqa: E402
from trl.experimental.async_grpo.async_grpo_trainer import (  # noqa: E402
    DataCollatorForRollout,
    RolloutQueueDataset,
)
from trl.experimental.async_grpo.async_rollout_worker import (  # noqa: E402
    RolloutGroup,
    RolloutSample,
    TrainingSequence,
    _AsyncRolloutLoop,
)
from trl.experimental.async_grpo.packing import TreeRow  # noqa: E402


@pytest.fixture(autouse=True, scope="module")
def accelerate_state():
    """TRL's code logs through accelerate's logger, which needs the process state set up."""
    from accelerate import PartialState

    PartialState(cpu=True)


# ---- advantages (guide: "Advantage") ---------------------------------------------------------


def correct(completions, answer, **kwargs):
    """1 if the completion contains the answer; None (abstain) when the row has no answer."""
    return [None if a is None else float(a in c) for c, a in zip(completions, answer, strict=True)]


def short(completions, answer, **kwargs):
    """A second reward: 0.5 for an answer under 6 characters, None where the row has no answer."""
    return [
        None if a is None else 0.5 * (len(c) < 6) for c, a in zip(completions, answer, strict=True)
    ]


def score(completions, answers, sequences_per_completion):
    loop = object.__new__(_AsyncRolloutLoop)  # the scoring needs only these attributes
    loop.reward_funcs = [correct, short]
    loop.reward_func_names = ["correct", "short"]
    loop._env_reward_types = []
    loop._provides_rollout_reward = False
    sequences = [
        [TrainingSequence([1, 2, 3 + k], [0, 1, 1], [0.0, -0.5, -0.25], f"r{i}") for k in range(n)]
        for i, n in enumerate(sequences_per_completion)
    ]
    group = RolloutGroup(
        prompts=[[{"role": "user", "content": "2+2"}]] * len(completions),
        reward_kwargs={"answer": answers},
        completions=completions,
        completions_ids=[[0]] * len(completions),
        completions_sequences=sequences,
        tool_call_counts=[0] * len(completions),
        tool_failure_counts=[0] * len(completions),
        model_version=7,
        group_id=3,
        env_rewards=[None] * len(completions),
        rollout_rewards=[None] * len(completions),
    )
    return asyncio.run(loop._score_group(group))


def test_advantage_is_the_group_zscore_with_population_std():
    completions = ["4", "it is 4 yes", "5", "four", "44"]
    samples = score(completions, ["4"] * 5, [1] * 5)
    rewards = np.array([1 + 0.5, 1.0, 0 + 0.5, 0 + 0.5, 1 + 0.5])  # correct + short, summed
    expected = (rewards - rewards.mean()) / (rewards.std(ddof=0) + 1e-8)
    assert [s.advantage for s in samples] == pytest.approx(expected.tolist(), abs=1e-6)
    # Not the sample std (ddof=1) that torch.std would use by default.
    assert expected[0] != pytest.approx((rewards[0] - rewards.mean()) / rewards.std(ddof=1))
    assert [s.metrics["reward"] for s in samples] == pytest.approx(rewards.tolist())


def test_a_completion_every_reward_abstains_on_gets_zero_and_leaves_the_statistics():
    answers = ["4", "4", None, "4"]
    samples = score(["4", "no", "4", "4 and 5 and 6"], answers, [1] * 4)
    scored = np.array([1.5, 0.5, 1.0])  # rows 0, 1, 3
    expected = (scored - scored.mean()) / (scored.std() + 1e-8)
    got = [s.advantage for s in samples]
    assert got[2] == 0.0 and math.isnan(samples[2].metrics["reward"])
    assert [got[0], got[1], got[3]] == pytest.approx(expected.tolist(), abs=1e-6)
    # Counting the abstention as reward 0 would shift every other advantage.
    as_zero = np.array([1.5, 0.5, 0.0, 1.0])
    assert got[0] != pytest.approx(((as_zero - as_zero.mean()) / as_zero.std())[0], abs=1e-3)


def test_a_forked_conversation_stamps_one_advantage_and_the_sampling_version_on_every_row():
    samples = score(["4", "no", "4!"], ["4"] * 3, [1, 3, 2])  # 6 training rows from 3 answers
    assert len(samples) == 6
    by_rollout = defaultdict(set)
    for s in samples:
        by_rollout[s.completion].add(s.advantage)
    assert all(len(advantages) == 1 for advantages in by_rollout.values())
    assert {s.model_version for s in samples} == {7} and {s.group_id for s in samples} == {3}
    # Per answer, not divided among its rows: the three rows of "no" carry it whole.
    assert [s.advantage for s in samples[1:4]] == [samples[1].advantage] * 3


# ---- staleness (guide: "Staleness") -----------------------------------------------------------


def rollout_sample(version: int, group_id: int = 0) -> RolloutSample:
    return RolloutSample(
        prompt=[],
        completion=[],
        input_ids=np.array([1, 2, 3]),
        completion_mask=np.array([0, 1, 1]),
        old_log_probs=np.array([0.0, -1.0, -2.0], dtype=np.float32),
        advantage=1.0,
        model_version=version,
        group_id=group_id,
        metrics={"reward": 1.0},
    )


def test_samples_older_than_max_staleness_are_dropped_and_the_rest_logged():
    versions = [10, 6, 7, 9, 5, 8]  # trainer at version 10, max_staleness 3: 6 and 5 are too old
    buffer = queue.Queue()
    for v in versions:
        buffer.put(rollout_sample(v))
    metrics = defaultdict(list)
    dataset = RolloutQueueDataset(
        buffer, lambda: 10, lambda stale_after_s: None, 300.0, metrics, max_staleness=3
    )
    stream = iter(dataset)
    kept = [next(stream) for _ in range(4)]
    staleness = [10 - v for v in versions if 10 - v <= 3]
    assert [int(np.asarray(k["old_log_probs"]).size) for k in kept] == [3] * 4
    assert metrics["sample/staleness_mean"] == [float(s) for s in staleness]
    assert metrics["sample/dropped_stale_total"] == [1.0, 1.0]
    # A sample exactly max_staleness old is kept (strictly greater is dropped).
    assert 3.0 in metrics["sample/staleness_mean"]


def test_staleness_zero_keeps_only_samples_of_the_current_weights():
    buffer = queue.Queue()
    for v in (4, 3, 4):
        buffer.put(rollout_sample(v))
    metrics = defaultdict(list)
    stream = iter(RolloutQueueDataset(buffer, lambda: 4, lambda s: None, 300.0, metrics, 0))
    next(stream), next(stream)
    assert metrics["sample/staleness_max"] == [0.0, 0.0]
    assert metrics["sample/dropped_stale_total"] == [1.0]


# ---- packing (guide: "Packing") ---------------------------------------------------------------


def sample(ids, n_prompt, group_id, advantage, seed):
    generator = torch.Generator().manual_seed(seed)
    logps = -torch.rand(len(ids), generator=generator) * 2
    mask = [0] * n_prompt + [1] * (len(ids) - n_prompt)
    return {
        "input_ids": torch.tensor(ids),
        "completion_mask": torch.tensor(mask),
        "old_log_probs": torch.where(torch.tensor(mask).bool(), logps, 0.0),
        "advantage": advantage,
        "group_id": group_id,
        "metrics": {"reward": advantage},
    }


PROMPT_A, PROMPT_B = [5, 6, 7, 8], [9, 6, 7]
SAMPLES = [  # two groups; completions of 4, 2, 5 and 3 tokens; one repeats another's start
    sample([*PROMPT_A, 11, 12, 13, 14], 4, 0, 1.2, 0),
    sample([*PROMPT_A, 11, 15], 4, 0, -0.7, 1),
    sample([*PROMPT_A, 16, 12, 13, 17, 18], 4, 0, -0.5, 2),
    sample([*PROMPT_B, 21, 22, 23], 3, 1, 0.9, 3),
]


def trie_nodes(samples) -> int:
    """Unique (token, next token) prefixes: TreeRow's node count, computed from its definition."""
    prefixes = set()
    for s in samples:
        ids = s["input_ids"].tolist()
        keys = list(zip(ids, [*ids[1:], None], strict=True))
        prefixes.update(tuple(keys[: i + 1]) for i in range(len(keys)))
    return len(prefixes)


def test_a_row_forwards_each_shared_prefix_once():
    row = TreeRow()
    for s in SAMPLES:
        row.add(s)
    packed = row.pack()
    raw = sum(len(s["input_ids"]) for s in SAMPLES)
    assert len(packed["input_ids"]) == len(row.tokens) == trie_nodes(SAMPLES) < raw
    # Every trained token is a loss term, shared or not: packing saves forward work, not terms.
    assert len(packed["token_index"]) == sum(int(s["completion_mask"][1:].sum()) for s in SAMPLES)
    # The budget counts unique tokens: a sample sharing the row's prompt costs only its new ones.
    n = len(row.tokens)
    new = sample([*PROMPT_A, 11, 12, 13, 19], 4, 0, 0.0, 4)
    assert row.fits(new, n + 2) and not row.fits(new, n + 1)


def path_tokens(inputs, position: int) -> tuple[int, ...]:
    """The tokens position `position` of row 0 attends to, read from the tree's K/V paths."""
    q = inputs["tree_cu_seqlens_q"][0]
    k = inputs["tree_cu_seqlens_k"][0]
    ids = inputs["input_ids"][0]
    segment = next(s for s in range(len(q) - 1) if q[s] <= position < q[s + 1])
    path = inputs["tree_kv_index"][0][k[segment] : k[segment + 1]].tolist()
    return tuple(ids[p].item() for p in path[: path.index(position) + 1])


def logp_table(context: tuple[int, ...], token: int) -> float:
    """A fixed 'policy': the log-probability of `token` after `context` (any fixed value)."""
    return -0.2 - ((hash((context, token)) % 1000) / 1000.0)


class PathModel(torch.nn.Module):
    """Stands in for the tree-attention forward: each position's log-probability of its label is
    the table's value for the exact prefix the tree lets it see, times a trainable scale."""

    def __init__(self, inputs):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.tensor(1.0))
        self.inputs = inputs

    def forward(self, input_ids, position_ids, shift_labels, fused_lm_head, **tree):
        labels = shift_labels.flatten().tolist()
        values = [
            logp_table(path_tokens(self.inputs, p), label) if label != -100 else 0.0
            for p, label in enumerate(labels)
        ]
        log_probs = self.scale * torch.tensor(values).unsqueeze(0)
        return types.SimpleNamespace(log_probs=log_probs, entropy=torch.ones_like(log_probs))


class OneProcess:
    """accelerate's collectives on `processes` ranks that all hold the same numbers."""

    def __init__(self, processes=1):
        self.num_processes = processes

    def reduce(self, tensor, reduction="sum"):
        return tensor

    def gather(self, tensor):
        return tensor.reshape(-1)


def trainer_stub(processes=1, accumulation=1, epsilon=0.2, epsilon_high=0.28):
    stub = types.SimpleNamespace(
        epsilon_low=epsilon,
        epsilon_high=epsilon_high,
        aux_loss_enabled=False,
        accelerator=OneProcess(processes),
        current_gradient_accumulation_steps=accumulation,
        _metrics={"train": defaultdict(list)},
    )
    for name in ("forward_tokens", "trained_tokens", "seq_len_weighted", "samples", "forward_s"):
        setattr(stub, f"_step_{name}", 0.0)
    return stub


def collate(samples):
    return DataCollatorForRollout(pad_token_id=0)([[_row(samples)]])


def _row(samples):
    row = TreeRow()
    for s in samples:
        row.add(s)
    return row


def reference_terms(samples):
    """Per trained token, computed from each sample alone: (log π_θ, log π_gen, advantage)."""
    terms = []
    for s in samples:
        ids = s["input_ids"].tolist()
        for t in range(1, len(ids)):
            if s["completion_mask"][t]:
                logp = logp_table(tuple(ids[:t]), ids[t])
                terms.append((logp, float(s["old_log_probs"][t]), float(s["advantage"])))
    return torch.tensor(terms, dtype=torch.float64).T


def reference_loss(samples, epsilon=0.2, epsilon_high=0.28, processes=1, accumulation=1):
    logp, old, advantage = reference_terms(samples)
    ratio = torch.exp(logp - old)
    clipped = ratio.clamp(1 - epsilon, 1 + epsilon_high)
    per_token = -torch.minimum(ratio * advantage, clipped * advantage)
    tokens_per_rank = max(len(per_token) / processes, 1.0)  # the whole step's tokens, per rank
    return per_token.sum() / tokens_per_rank / accumulation, ratio, advantage


@pytest.mark.parametrize(("processes", "accumulation"), [(1, 1), (1, 2), (2, 1)])
def test_loss_on_the_packed_tree_is_the_clipped_surrogate_of_each_sample(processes, accumulation):
    inputs = collate(SAMPLES)
    model = PathModel(inputs)
    stub = trainer_stub(processes, accumulation)
    loss = AsyncGRPOTrainer.compute_loss(stub, model, inputs)
    expected, ratio, advantage = reference_loss(
        SAMPLES, processes=processes, accumulation=accumulation
    )
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # The ratios straddle the clip on both sides, with advantages of both signs.
    assert ((ratio > 1.28) & (advantage > 0)).any() and ((ratio < 0.8) & (advantage < 0)).any()
    # Gradient through the log-probs only (the server's log-probs are constants).
    loss.backward()
    assert model.scale.grad is not None and model.scale.grad.abs() > 0


def test_loss_metrics_ratio_kl_and_clip_shares():
    inputs = collate(SAMPLES)
    stub = trainer_stub()
    AsyncGRPOTrainer.compute_loss(stub, PathModel(inputs), inputs)
    logp, old, advantage = reference_terms(SAMPLES)
    ratio = torch.exp(logp - old)
    metrics = stub._metrics["train"]
    assert metrics["ratio"] == pytest.approx([ratio.mean().item()], rel=1e-5)
    # k3 estimator of KL(π_gen ‖ π_θ): (ρ - 1) - log ρ, always >= 0
    kl = ((ratio - 1) - (logp - old)).mean().item()
    assert kl > 0 and metrics["kl"] == pytest.approx([kl], rel=1e-5)
    low = ((ratio < 0.8) & (advantage < 0)).double().mean().item()
    high = ((ratio > 1.28) & (advantage > 0)).double().mean().item()
    assert metrics["clip_ratio/low_mean"] == pytest.approx([low])
    assert metrics["clip_ratio/high_mean"] == pytest.approx([high])
    assert low > 0 and high > 0


def test_epsilon_high_none_means_a_symmetric_clip():
    """The trainer reads `epsilon_high or epsilon`: with TRL's default config the clip is
    [0.8, 1.2], and the loss then differs from the DAPO-style [0.8, 1.28] one above."""
    args = AsyncGRPOConfig("/tmp/unused", use_cpu=True, bf16=False)
    assert args.epsilon == 0.2 and args.epsilon_high is None
    high = args.epsilon_high if args.epsilon_high is not None else args.epsilon
    inputs = collate(SAMPLES)
    loss = AsyncGRPOTrainer.compute_loss(trainer_stub(1, 1, 0.2, high), PathModel(inputs), inputs)
    symmetric, _, _ = reference_loss(SAMPLES, epsilon_high=0.2)
    asymmetric, _, _ = reference_loss(SAMPLES, epsilon_high=0.28)
    assert loss.item() == pytest.approx(symmetric.item(), rel=1e-5)
    assert symmetric.item() != pytest.approx(asymmetric.item(), rel=1e-3)


def test_fresh_samples_give_ratio_one_and_a_loss_of_minus_the_mean_advantage_per_token():
    """With π_gen = π_θ (no staleness, no rounding gap) every ratio is 1 and nothing clips."""
    fresh = []
    for s in SAMPLES:
        ids = s["input_ids"].tolist()
        old = torch.tensor(
            [
                logp_table(tuple(ids[:t]), ids[t]) if t and s["completion_mask"][t] else 0.0
                for t in range(len(ids))
            ]
        )
        fresh.append({**s, "old_log_probs": old})
    inputs = collate(fresh)
    stub = trainer_stub()
    loss = AsyncGRPOTrainer.compute_loss(stub, PathModel(inputs), inputs)
    _, _, advantage = reference_terms(fresh)
    assert loss.item() == pytest.approx(-advantage.mean().item(), rel=1e-5)
    assert stub._metrics["train"]["ratio"] == pytest.approx([1.0])
    assert stub._metrics["train"]["clip_ratio/region_mean"] == [0.0]


# ---- weight sync (guide: "Weight sync") --------------------------------------------------------


def test_weight_sync_pauses_sends_every_trained_weight_resumes_then_bumps_the_version():
    events = []

    class Transfer:
        def pause(self):
            events.append("pause")

        def send_weights(self, iterator):
            events.append(("send", [name for name, _ in iterator]))

        def resume(self):
            events.append("resume")

    class Worker:
        def update_model_version(self, version):
            events.append(("version", version))

    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].bias.requires_grad_(False)  # frozen: never sent (the server's copy cannot differ)
    accelerator = types.SimpleNamespace(
        unwrap_model=lambda m: m,
        is_main_process=True,
        wait_for_everyone=lambda: events.append("barrier"),
        device=torch.device("cpu"),
    )
    stub = types.SimpleNamespace(
        model=model,
        accelerator=accelerator,
        weight_transfer=Transfer(),
        rollout_worker=Worker(),
        model_version=4,
    )
    stub._streaming_iter = lambda: AsyncGRPOTrainer._streaming_iter(stub)
    AsyncGRPOTrainer._sync_weight_merged(stub, 0.0)
    assert events == [
        "pause",
        "barrier",
        ("send", ["0.weight", "1.weight", "1.bias"]),
        "barrier",
        "resume",
        ("version", 5),
    ]
    assert stub.model_version == 5


# ---- config (guide: "Defaults") ----------------------------------------------------------------


def test_config_defaults_and_the_settings_it_forces():
    args = AsyncGRPOConfig("/tmp/unused", use_cpu=True, bf16=False, accelerator_config={})
    assert args.dtype == "float32"
    assert (args.max_staleness, args.weight_sync_steps, args.num_generations) == (4, 1, 8)
    assert (args.learning_rate, args.lr_scheduler_type) == (1e-6, "constant")
    assert args.max_inflight_tasks == -1 and args.token_budget is None
    assert args.ignore_data_skip is True and args.gradient_checkpointing is True
    # The main process pulls the rollout queue and sends each rank its row: forced on, whatever
    # the user passed.
    assert args.accelerator_config.split_batches and args.accelerator_config.dispatch_batches
