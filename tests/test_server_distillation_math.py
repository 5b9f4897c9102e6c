"""The equations of reference_guides/server_distillation.md, computed independently and compared
with TRL's code, for both trainers of the page: `ServerDistillationTrainer` and
`AsyncDistillationTrainer` (TRL 1.16.0, both experimental).

Neither can train here (the teacher is a vLLM server), but their mathematics runs on tensors:
the divergence restricted to a few tokens (`_jsd_divergence` with a support mask), the tail
bucket, the narrowing of the support to the teacher's top token and the sampled one, the async
trainer's chunked loss with its per-teacher (MOPD) sums, the parsing of vLLM's answer, and the
config checks. One real `ServerDistillationTrainer` on the tiny fixture, whose server client is
replaced by a stand-in that scores with the fixture's teacher and formats its answer with TRL's
own `VLLMClient._format_sequence_logprobs`, checks `compute_loss` end to end on a ragged batch.
"""

import math

import numpy as np
import pytest
import torch
from trl.experimental.async_distillation import AsyncDistillationConfig
from trl.experimental.async_distillation.async_distillation_trainer import (
    DataCollatorForRollout,
    _chunked_jsd_loss,
    _narrow_top1_actual_support,
)
from trl.experimental.async_distillation.async_rollout_worker import (
    _AsyncRolloutLoop,
    _parse_teacher_logprobs_at_position,
)
from trl.experimental.server_distillation import ServerDistillationConfig
from trl.experimental.server_distillation.server_distillation_trainer import (
    _add_tail_bucket,
    _jsd_divergence,
    build_teacher_request_inputs,
)
from trl.generation.vllm_client import VLLMClient

pytestmark = pytest.mark.math
TOL = {"atol": 1e-5, "rtol": 1e-5}
URL = "http://teacher.invalid:8000"


# ---- our own formulas ---------------------------------------------------------------------


def sparse_distributions(student_logp, teacher_logp, support, valid, tail):
    """Both models' probabilities on the support (+ the tail bucket), from full log-probs (V,)."""
    p_s = student_logp.exp()[support] * valid
    p_t = teacher_logp.exp()[support] * valid
    if tail:
        # The rest of each model's mass, as one more outcome (at least 1e-7, as TRL clamps it).
        rest_s = (1 - p_s.sum()).clamp_min(-math.expm1(-1e-7))
        rest_t = (1 - p_t.sum()).clamp_min(-math.expm1(-1e-7))
        return torch.cat([p_s, rest_s[None]]), torch.cat([p_t, rest_t[None]])
    return p_s / p_s.sum(), p_t / p_t.sum()


def generalised_jsd(p_s, p_t, beta):
    """beta KL(p_T || m) + (1 - beta) KL(p_S || m), m = beta p_T + (1 - beta) p_S; 0 log 0 = 0."""

    def kl(p, q):
        keep = p > 0
        return (p[keep] * (p[keep].log() - q[keep].log())).sum()

    if beta == 0:
        return kl(p_t, p_s)
    if beta == 1:
        return kl(p_s, p_t)
    m = beta * p_t + (1 - beta) * p_s
    return beta * kl(p_t, m) + (1 - beta) * kl(p_s, m)


def random_logp(n, vocab, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, vocab, generator=g) * 2).log_softmax(-1)


# ---- the sparse divergence and the tail bucket --------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
@pytest.mark.parametrize("tail", [True, False], ids=["tail", "renormalised"])
def test_divergence_restricted_to_a_support_matches_ours(beta, tail):
    # 6 positions, vocabulary 11, supports of 4 candidate slots, some slots empty (padding).
    student, teacher = random_logp(6, 11, 0), random_logp(6, 11, 1)
    support = torch.stack(
        [torch.randperm(11, generator=torch.Generator().manual_seed(i))[:4] for i in range(6)]
    )
    valid = torch.ones(6, 4, dtype=torch.bool)
    valid[1, 2:] = False
    valid[4, 1:] = False  # a single candidate: without the tail the divergence is exactly 0
    neg_inf = torch.tensor(float("-inf"))
    s = torch.where(valid, student.gather(-1, support), neg_inf)
    t = torch.where(valid, teacher.gather(-1, support), neg_inf)
    if tail:
        s, mask = _add_tail_bucket(s, valid)
        t, _ = _add_tail_bucket(t, valid)
    else:
        s, t, mask = s - s.logsumexp(-1, keepdim=True), t - t.logsumexp(-1, keepdim=True), valid
    ours = _jsd_divergence(s, t, beta, support_mask=mask).sum(-1)
    for i in range(6):
        p_s, p_t = sparse_distributions(student[i], teacher[i], support[i], valid[i], tail)
        torch.testing.assert_close(ours[i], generalised_jsd(p_s, p_t, beta), **TOL)
    if not tail:
        assert ours[4] == 0  # why the tail bucket exists: top-1 alone carries no signal
    else:
        assert ours[4] > 1e-4
        # Merging the tokens outside the support into one outcome can only lose information:
        # with the tail, the sparse divergence never exceeds the one on the whole vocabulary.
        full = torch.stack(
            [
                generalised_jsd(s_.exp(), t_.exp(), beta)
                for s_, t_ in zip(student, teacher, strict=True)
            ]
        )
        assert (ours <= full + 1e-6).all() and (ours < full).any()


@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_masked_branch_on_the_whole_vocabulary_equals_the_dense_branch(beta):
    student, teacher = random_logp(5, 9, 2), random_logp(5, 9, 3)
    dense = _jsd_divergence(student, teacher, beta).sum(-1)
    masked = _jsd_divergence(
        student, teacher, beta, torch.ones_like(student, dtype=torch.bool)
    ).sum(-1)
    torch.testing.assert_close(masked, dense, **TOL)
    expected = torch.stack(
        [generalised_jsd(s.exp(), t.exp(), beta) for s, t in zip(student, teacher, strict=True)]
    )
    torch.testing.assert_close(dense, expected, **TOL)


def test_tail_bucket_completes_the_distribution():
    logp = torch.log(torch.tensor([[0.5, 0.2, 0.0], [0.9, 0.1, 0.0], [0.3, 0.0, 0.0]]))
    valid = logp > float("-inf")
    with_tail, mask = _add_tail_bucket(logp, valid)
    assert with_tail.shape == (3, 4) and mask[:, -1].all() and (mask[:, :3] == valid).all()
    torch.testing.assert_close(
        with_tail[:, -1].exp(), torch.tensor([0.3, 1e-7, 0.7]), atol=1e-7, rtol=1e-4
    )
    # All the mass already on the support: the tail is clamped to 1e-7, never log(0).
    assert torch.isfinite(with_tail[1, -1]) and with_tail[1, -1] < -16
    torch.testing.assert_close(with_tail[[0, 2]].exp().sum(-1), torch.ones(2), **TOL)


# ---- the configs --------------------------------------------------------------------------


def server_config(**kwargs):
    return ServerDistillationConfig(output_dir="unused", use_cpu=True, bf16=False, **kwargs)


def test_server_config_defaults():
    c = server_config(teacher_model_server_url=URL)
    assert (c.beta, c.loss_top_k, c.loss_add_tail, c.reverse_kl_top_1_mode) == (
        1.0,
        1,
        True,
        "sampled",
    )
    assert (c.temperature, c.max_completion_length, c.learning_rate) == (1.0, 512, 1e-6)
    assert c.vllm_server_port == 8001  # the student's optional vLLM server; the teacher keeps 8000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "teacher_model_server_url must be set"),
        ({"teacher_model_server_url": "  "}, "teacher_model_server_url must be set"),
        (
            {"teacher_model_server_url": URL, "beta": 0.5, "loss_top_k": 4},
            "loss_top_k must be 1 with beta>0",
        ),
        (
            {"teacher_model_server_url": URL, "beta": 0.0, "loss_top_k": 0},
            "loss_top_k must be positive",
        ),
        ({"teacher_model_server_url": URL, "reverse_kl_top_1_mode": "argmax"}, "not supported"),
        ({"teacher_model_server_url": URL, "reverse_kl_top_1_mode": "top"}, "must be one of"),
    ],
    ids=["no-url", "blank-url", "jsd-top4", "forward-full-vocab", "argmax", "unknown-mode"],
)
def test_server_config_refuses_what_a_server_cannot_serve(kwargs, message):
    with pytest.raises(ValueError, match=message):
        server_config(**kwargs)


def test_server_config_accepts_forward_kl_on_top_k():
    assert server_config(teacher_model_server_url=URL, beta=0.0, loss_top_k=20).loss_top_k == 20


def async_config(**kwargs):
    return AsyncDistillationConfig(output_dir="unused", use_cpu=True, bf16=False, **kwargs)


def test_async_config_defaults_and_checks():
    c = async_config()
    assert c.teacher_server_urls == {"default": "http://localhost:8001"}
    assert (c.beta, c.teacher_top_k, c.add_tail_bucket, c.teacher_temperature) == (
        0.0,
        8,
        True,
        1.0,
    )
    assert (c.max_staleness, c.weight_sync_steps, c.dtype, c.learning_rate) == (
        4,
        1,
        "float32",
        1e-6,
    )
    assert (c.max_completion_length, c.token_budget, c.max_inflight_tasks) == (2048, None, -1)
    assert c.accelerator_config.split_batches and c.accelerator_config.dispatch_batches
    with pytest.raises(ValueError, match=r"beta must be in \[0.0, 1.0\]"):
        async_config(beta=1.5)
    with pytest.raises(ValueError, match="at least one entry"):
        async_config(teacher_server_urls={})


# ---- what goes to the server and how its answer is read -----------------------------------


def test_request_inputs_trim_padding_and_count_prompt_and_completion():
    pad = 0
    # Left-padded prompts (3 and 2 tokens), right-padded completions (2 and 3 tokens).
    input_ids = torch.tensor([[5, 6, 7, 8, 9, pad], [pad, 3, 4, 10, 11, 12]])
    attention = (input_ids != pad).long()
    prompt_mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    sequences, prompts, completions = build_teacher_request_inputs(
        input_ids, attention, prompt_mask
    )
    assert sequences == [[5, 6, 7, 8, 9], [3, 4, 10, 11, 12]]
    assert (prompts, completions) == ([3, 2], [2, 3])
    labels = torch.where(
        torch.tensor([[0, 0, 0, 1, 1, 0], [0, 0, 0, 1, 1, 1]]).bool(), input_ids, -100
    )
    assert build_teacher_request_inputs(input_ids, attention, labels=labels) == (
        sequences,
        prompts,
        completions,
    )


def test_vllm_answer_is_sorted_by_rank_padded_and_keeps_the_sampled_token():
    # vLLM's prompt_logprobs: None for the first token, then {id: {logprob, rank}} per position,
    # the sampled token included even when it is outside the top k (rank 5 here).
    choice = {
        "prompt_logprobs": [
            None,
            {"7": {"logprob": -0.1, "rank": 1}},
            {
                "3": {"logprob": -2.0, "rank": 2},
                "4": {"logprob": -0.3, "rank": 1},
                "9": {"logprob": -4.0, "rank": 5},
            },
            {"2": {"logprob": float("nan"), "rank": 1}},
        ]
    }
    out = VLLMClient._format_sequence_logprobs(
        choice, [1, 7, 9, 2], prompt_length=2, top_logprobs=2
    )
    assert out["logprob_token_ids"] == [[4, 3], [2, 0]]
    assert out["logprobs"] == [[-0.3, -2.0], [-math.inf, -math.inf]]  # NaN -> -inf, padded
    assert out["actual_logprobs"] == [[-4.0], [-math.inf]] and out["actual_token_ids"] == [[9], [2]]
    # The async worker keeps every candidate vLLM sent (never truncating the sampled one away).
    ids, lps = _parse_teacher_logprobs_at_position(choice["prompt_logprobs"][2])
    assert (ids, lps) == ([4, 3, 9], [-0.3, -2.0, -4.0])
    assert _parse_teacher_logprobs_at_position(None) == ([], [])


# ---- the async trainer: narrowed support, chunked loss, several teachers (MOPD) -----------


def test_narrowing_to_top1_and_sampled_token():
    ids = torch.tensor([[4, 3, 9], [7, 1, -1]])
    logps = torch.tensor([[-0.3, -2.0, -4.0], [-0.1, -2.5, float("-inf")]])
    valid = ids != -1
    sampled = torch.tensor([9, 7])
    narrow_ids, narrow_logps, mask = _narrow_top1_actual_support(
        ids, logps, sampled, valid, beta=0.5
    )
    assert narrow_ids.tolist() == [[4, 9], [7, 7]]
    torch.testing.assert_close(narrow_logps, torch.tensor([[-0.3, -4.0], [-0.1, -0.1]]))
    assert mask.tolist() == [[True, True], [True, False]]  # top-1 == sampled: counted once
    narrow_ids, narrow_logps, mask = _narrow_top1_actual_support(
        ids, logps, sampled, valid, beta=1.0
    )
    assert narrow_ids.tolist() == [[9], [7]]
    torch.testing.assert_close(narrow_logps, torch.tensor([[-4.0], [-0.1]]))
    assert mask.all()


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_chunked_loss_and_per_teacher_sums_match_ours(beta):
    g = torch.Generator().manual_seed(4)
    n, hidden, vocab, k = 7, 6, 13, 3
    h = torch.randn(n, hidden, generator=g)
    w = torch.randn(vocab, hidden, generator=g)
    teacher = random_logp(n, vocab, 5)
    target = teacher.topk(k, dim=-1).indices
    target_logp = teacher.gather(-1, target)
    valid = torch.ones(n, k, dtype=torch.bool)
    valid[2, 1:] = False
    teacher_idx = torch.tensor([0, 1, 1, 0, 1, 0, 0])
    temperature = 0.7
    loss, jsd_sum, entropy_sum, teacher_entropy_sum, stats = _chunked_jsd_loss(
        h,
        w,
        None,
        1.0,
        None,
        target,
        target_logp,
        valid,
        beta,
        temperature,
        True,
        teacher_idx,
        2,
        chunk_size=3,
    )
    student = (h @ w.T / temperature).log_softmax(-1)
    per_token, teacher_entropy = [], []
    for i in range(n):
        p_s, p_t = sparse_distributions(student[i], teacher[i], target[i], valid[i], tail=True)
        per_token.append(generalised_jsd(p_s, p_t, beta))
        teacher_entropy.append(-(p_t[p_t > 0] * p_t[p_t > 0].log()).sum())  # 0 log 0 = 0
    per_token, teacher_entropy = torch.stack(per_token), torch.stack(teacher_entropy)
    torch.testing.assert_close(loss, per_token.sum(), **TOL)
    torch.testing.assert_close(jsd_sum, per_token.sum(), **TOL)
    torch.testing.assert_close(entropy_sum, -(student.exp() * student).sum(), **TOL)
    torch.testing.assert_close(teacher_entropy_sum, teacher_entropy.sum(), **TOL)
    for t in (0, 1):
        rows = teacher_idx == t
        expected = torch.stack(
            [rows.sum().float(), per_token[rows].sum(), teacher_entropy[rows].sum()]
        )
        torch.testing.assert_close(stats[3 * t : 3 * t + 3], expected, **TOL)


def rollout_sample(prompt_id, prompt_len, completion_len, teacher_id, k=2):
    """A sample as the rollout worker queues it: teacher candidates on completion positions only."""
    n = prompt_len + completion_len
    ids = np.full((n, k + 1), -1, dtype=np.int64)
    logps = np.full((n, k + 1), -np.inf, dtype=np.float32)
    ids[prompt_len:, :k] = np.arange(k) + 3
    logps[prompt_len:, :k] = -1.0
    return {
        "prompt_id": prompt_id,
        "input_ids": np.arange(n, dtype=np.int64) + 10,
        "completion_mask": np.array([0] * prompt_len + [1] * completion_len, dtype=np.int64),
        "teacher_topk_ids": ids,
        "teacher_topk_logprobs": logps,
        "teacher_id": teacher_id,
        "metrics": {},
    }


def test_collator_packs_each_rank_and_tags_every_token_with_its_teacher():
    collator = DataCollatorForRollout(
        pad_token_id=0, num_processes=2, teacher_id_to_idx={"math": 0, "code": 1}
    )
    rank0 = [rollout_sample(0, 2, 3, "math"), rollout_sample(1, 1, 2, "code")]  # 5 + 3 tokens
    rank1 = [rollout_sample(2, 3, 1, "code")]  # 4 tokens, padded to 8
    batch = collator.torch_call([[rank0, rank1]])
    assert batch["input_ids"].shape == (2, 8) and batch["teacher_topk_ids"].shape == (2, 8, 3)
    assert batch["position_ids"].tolist() == [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 0, 0, 0, 0]]
    assert batch["teacher_id_idx"].tolist() == [[0] * 5 + [1] * 3, [1] * 4 + [-1] * 4]
    assert batch["completion_mask"].tolist() == [[0, 0, 1, 1, 1, 0, 1, 1], [0, 0, 0, 1, 0, 0, 0, 0]]
    assert (batch["teacher_topk_ids"][1, 4:] == -1).all()  # rank padding: no candidate
    assert torch.isneginf(batch["teacher_topk_logprobs"][1, 4:]).all()
    # The loss divides by the micro-batch's trained tokens (6), the same number on every rank.
    assert batch["global_n_tokens"].tolist() == [6.0, 6.0]
    assert collator.prompts_trained == {0, 1, 2}


def test_mopd_routes_each_row_to_its_teacher_and_refuses_unknown_ids():
    loop = object.__new__(_AsyncRolloutLoop)
    loop.teacher_server_urls = {"default": URL}
    # One teacher scores every row, whatever its id.
    assert loop._resolve_teacher_server_url({"teacher_id": "code"}) == ("default", URL)
    loop.teacher_server_urls = {"math": "http://a:8002", "code": "http://b:8003"}
    assert loop._resolve_teacher_server_url({"teacher_id": "code"}) == ("code", "http://b:8003")
    with pytest.raises(ValueError, match="teacher_id='poetry'"):
        loop._resolve_teacher_server_url({"teacher_id": "poetry"})
    with pytest.raises(ValueError, match="teacher_id=None"):
        loop._resolve_teacher_server_url({"prompt": "no id"})


# ---- one real ServerDistillationTrainer, its server replaced by the fixture's teacher -------


class FixtureTeacherServer:
    """Answers `get_sequence_logprobs` as a vLLM server would, scoring with a local model, and
    formats the answer with TRL's own `VLLMClient._format_sequence_logprobs`."""

    model_path = None

    def __init__(self, base_url=None, connection_timeout=0.0):
        from transformers import AutoModelForCausalLM

        self.base_url = base_url
        self.model = AutoModelForCausalLM.from_pretrained(self.model_path).eval()
        self.requests = []

    @torch.no_grad()
    def get_sequence_logprobs(self, sequences, prompt_lengths, top_logprobs, temperature):
        self.requests.append((sequences, prompt_lengths, top_logprobs, temperature))
        answers = []
        for sequence, prompt_length in zip(sequences, prompt_lengths, strict=True):
            logits = self.model(torch.tensor([sequence])).logits[0, :-1]
            logp = (logits / temperature).log_softmax(-1)
            positions = [None]
            for p, row in enumerate(logp, start=1):
                ranked = row.argsort(descending=True).tolist()
                keep = set(ranked[:top_logprobs]) | {sequence[p]}
                positions.append(
                    {str(v): {"logprob": row[v].item(), "rank": ranked.index(v) + 1} for v in keep}
                )
            choice = {"prompt_logprobs": positions}
            answers.append(
                VLLMClient._format_sequence_logprobs(choice, sequence, prompt_length, top_logprobs)
            )
        return {key: [a[key] for a in answers] for key in answers[0]}


@pytest.fixture(scope="module")
def trainer(tiny, tmp_path_factory):
    import trl.generation.vllm_client as vllm_client
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl.experimental.server_distillation import ServerDistillationTrainer

    FixtureTeacherServer.model_path = tiny.teacher
    mp = pytest.MonkeyPatch()
    mp.setattr(vllm_client, "VLLMClient", FixtureTeacherServer)
    args = ServerDistillationConfig(
        output_dir=str(tmp_path_factory.mktemp("server_distillation_math")),
        teacher_model_server_url=URL,
        use_cpu=True,
        bf16=False,
        activation_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=2,
        max_completion_length=6,
        max_steps=1,
        logging_steps=1,
        temperature=1.5,
    )
    built = ServerDistillationTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        args=args,
        train_dataset=Dataset.from_list(
            [{"prompt": "What is 1 + 1?"}, {"prompt": "What is 12 + 30?"}]
        ),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy, padding_side="left"),
    )
    yield built
    mp.undo()


def ragged_batch(tok):
    """Two prompts, left-padded, and two completions of 5 and 2 tokens, right-padded."""
    prompts = [tok("What is 1 + 1?")["input_ids"], tok("What is 12 + 30 exactly?")["input_ids"]]
    completions = [tok(" 1 + 1 = 2")["input_ids"], tok(" 42")["input_ids"]]
    width_p, width_c = max(map(len, prompts)), max(map(len, completions))
    pad = tok.pad_token_id
    return (
        {
            "prompt_ids": torch.tensor([[pad] * (width_p - len(p)) + p for p in prompts]),
            "prompt_mask": torch.tensor([[0] * (width_p - len(p)) + [1] * len(p) for p in prompts]),
            "completion_ids": torch.tensor([c + [pad] * (width_c - len(c)) for c in completions]),
            "completion_mask": torch.tensor(
                [[1] * len(c) + [0] * (width_c - len(c)) for c in completions]
            ),
        },
        prompts,
        completions,
    )


def expected_loss(trainer, prompts, completions, beta, top_k, tail):
    """Mean over completion tokens of our sparse divergence (models read each unpadded sequence)."""
    tau = trainer.temperature
    teacher = trainer.teacher_client.model
    values = []
    with torch.no_grad():
        for prompt, completion in zip(prompts, completions, strict=True):
            ids = torch.tensor([prompt + completion])
            s_all = (trainer.model(ids).logits[0, :-1] / tau).log_softmax(-1)
            t_all = (teacher(ids).logits[0, :-1] / tau).log_softmax(-1)
            for j, token in enumerate(completion):
                s, t = s_all[len(prompt) - 1 + j], t_all[len(prompt) - 1 + j]
                if beta == 0:
                    support = t.topk(top_k).indices
                elif beta == 1:
                    support = torch.tensor([token])
                else:  # the teacher's top token and the sampled one, once if they coincide
                    support = torch.tensor(sorted({t.argmax().item(), token}))
                valid = torch.ones(len(support), dtype=torch.bool)
                p_s, p_t = sparse_distributions(s, t, support, valid, tail)
                values.append(generalised_jsd(p_s, p_t, beta))
    return torch.stack(values).mean()


@pytest.mark.parametrize(
    ("beta", "top_k", "tail"),
    [(0.0, 3, True), (0.0, 3, False), (1.0, 1, True), (0.5, 1, True), (0.5, 1, False)],
    ids=[
        "forward-top3-tail",
        "forward-top3-renormalised",
        "reverse-sampled-tail",
        "jsd-top1-tail",
        "jsd-top1",
    ],
)
def test_compute_loss_matches_ours_on_a_ragged_batch(trainer, beta, top_k, tail):
    inputs, prompts, completions = ragged_batch(trainer.processing_class)
    trainer.beta, trainer.loss_top_k, trainer.loss_add_tail = beta, top_k, tail
    trainer.model.eval()  # no dropout, and no division by the accumulation steps
    loss = trainer.compute_loss(trainer.model, inputs)
    torch.testing.assert_close(
        loss, expected_loss(trainer, prompts, completions, beta, top_k, tail), **TOL
    )
    sequences, prompt_lengths, asked_k, temperature = trainer.teacher_client.requests[-1]
    # The server gets each sequence without its padding.
    assert sequences == [p + c for p, c in zip(prompts, completions, strict=True)]
    assert prompt_lengths == [len(p) for p in prompts] and (asked_k, temperature) == (top_k, 1.5)


def test_training_divides_by_the_accumulation_steps(trainer):
    inputs, _, _ = ragged_batch(trainer.processing_class)
    trainer.beta, trainer.loss_top_k, trainer.loss_add_tail = 1.0, 1, True
    trainer.model.eval()
    evaluated = trainer.compute_loss(trainer.model, inputs)
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 4
    try:
        trained = trainer.compute_loss(trainer.model, inputs)
    finally:
        trainer.model.eval()
        trainer.current_gradient_accumulation_steps = 1
    torch.testing.assert_close(trained, evaluated / 4, atol=1e-3, rtol=1e-3)  # dropout-free fixture


def test_one_training_step_logs_distillation_metrics_but_no_entropy(trainer):
    trainer.beta, trainer.loss_top_k, trainer.loss_add_tail = 1.0, 1, True
    trainer.train()
    (logged,) = [row for row in trainer.state.log_history if "loss" in row]
    assert math.isfinite(logged["loss"]) and logged["loss"] > 0
    assert {"completions/mean_length", "completions/clipped_ratio", "num_tokens"} <= logged.keys()
    assert "entropy" not in logged  # DistillationTrainer logs it in the compute_loss replaced here


@pytest.mark.parametrize(("beta", "top_k"), [(1.0, 1), (0.0, 1)], ids=["reverse", "forward-top1"])
def test_without_the_tail_a_one_token_support_trains_nothing(trainer, beta, top_k):
    # The config accepts it; the loss is exactly 0 (and so is its gradient) on every token.
    server_config(teacher_model_server_url=URL, beta=beta, loss_top_k=top_k, loss_add_tail=False)
    inputs, _, _ = ragged_batch(trainer.processing_class)
    trainer.beta, trainer.loss_top_k, trainer.loss_add_tail = beta, top_k, False
    trainer.model.eval()
    assert trainer.compute_loss(trainer.model, inputs).item() == 0.0
