"""The equations of reference_guides/gold.md, computed independently and compared with TRL.

TRL 1.16.0's `ULDLoss` (trl.experimental.gold) is checked against our own torch computation of
each piece: the sorted-probability L1 distance and its normalisation (per aligned span, then per
sequence), the claim that sorting gives the smallest L1 over every one-to-one pairing of tokens,
the byte alignment of two tokenizations (here the fixture's two real tokenizers, which cut the
toy answers differently), the "observed" and "bayesian" merges of a span's probabilities, and the
generalised JSD of the same-tokenizer path. Inputs are ragged (answers of different lengths, left
padding on the student's side, right padding on the teacher's) so that a mean over the wrong axis
or an off-by-one slice fails. Two real `GOLDTrainer`s on the tiny fixture (one per branch of
`compute_loss`) check what the trainer feeds the loss.
"""

import bisect
import itertools
import json
import os
from types import SimpleNamespace

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
from trl.experimental.gold import GOLDConfig, GOLDTrainer  # noqa: E402
from trl.experimental.gold.gold_trainer import (  # noqa: E402
    ULDLoss,
    build_teacher_inputs_from_texts,
)
from trl.experimental.utils import encode_with_byte_offsets  # noqa: E402

pytestmark = pytest.mark.math

TOL = {"atol": 1e-6, "rtol": 1e-5}


def uld_config(**overrides) -> SimpleNamespace:
    """The fields ULDLoss reads, at GOLDConfig's defaults (read from the class)."""
    fields = GOLDConfig.__dataclass_fields__
    names = [n for n in fields if n.startswith("uld_")] + ["use_extended_uld", "beta"]
    values = {n: fields[n].default for n in names}
    values.update(overrides)
    return SimpleNamespace(**values)


# ---------------------------------------------------------------------------------------------
# Our reference, written from the definitions
# ---------------------------------------------------------------------------------------------


def sorted_l1(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """sum_k |p_(k) - q_(k)| per row, p_(k) the k-th largest; the shorter vocabulary is
    extended by zeros (tokens it cannot produce)."""
    width = max(p.size(-1), q.size(-1))
    p_sorted = torch.zeros(p.size(0), width)
    q_sorted = torch.zeros(q.size(0), width)
    p_sorted[:, : p.size(-1)] = p.sort(-1, descending=True).values
    q_sorted[:, : q.size(-1)] = q.sort(-1, descending=True).values
    return (p_sorted - q_sorted).abs().sum(-1)


def answer_span(labels_row: torch.Tensor, skip_eos: bool) -> tuple[int, int]:
    """First answer position and how many answer tokens count (the last one, EOS, skipped)."""
    positions = (labels_row != -100).nonzero().flatten().tolist()
    return positions[0], len(positions) - int(skip_eos)


def groups_by_bytes(s_ends: list[int], t_ends: list[int]) -> list[tuple[list[int], list[int]]]:
    """Spans that end where both tokenizations end a token: a token belongs to the span of the
    first shared boundary at or after its end; what follows the last shared boundary is one more
    span. Spans with no token on one side are dropped, as TRL drops them."""
    shared = sorted(set(s_ends) & set(t_ends))
    spans: dict[int, tuple[list[int], list[int]]] = {}
    for side, ends in ((0, s_ends), (1, t_ends)):
        for position, end in enumerate(ends):
            spans.setdefault(bisect.bisect_left(shared, end), ([], []))[side].append(position)
    return [spans[k] for k in sorted(spans) if spans[k][0] and spans[k][1]]


def merge(probs: torch.Tensor, span: list[int], ids: list[int], strategy: str) -> torch.Tensor:
    """One distribution for a span of several tokens: a full distribution at one end of the
    span (first position for "observed", last for "bayesian") times the probabilities the
    other positions give to the tokens that are actually there."""
    base, others = (span[0], span[1:]) if strategy == "observed" else (span[-1], span[:-1])
    scale = torch.ones(())
    for j in others:
        scale = scale * probs[j, ids[j]].clamp_min(1e-8)
    return probs[base] * scale


def reference_uld(s_logits, t_logits, s_labels, t_labels, s_ids, t_ids, s_offs=None, t_offs=None,
                  strategy="observed", skip_eos=True):  # fmt: skip
    """Mean over sequences of (1/G) sum over aligned spans of the sorted L1 distance."""
    per_sequence = []
    for i in range(s_logits.size(0)):
        s_start, s_n = answer_span(s_labels[i], skip_eos)
        t_start, t_n = answer_span(t_labels[i], skip_eos)
        shift = 1 if strategy == "bayesian" else 0
        p_s = s_logits[i, s_start - shift : s_start - shift + s_n].softmax(-1)
        p_t = t_logits[i, t_start - shift : t_start - shift + t_n].softmax(-1)
        s_tok = s_ids[i, s_start : s_start + s_n].tolist()
        t_tok = t_ids[i, t_start : t_start + t_n].tolist()
        if s_offs is None:  # positional: the first min(n_S, n_T) positions, one to one
            n = min(s_n, t_n)
            p_s, p_t = p_s[:n], p_t[:n]
        else:
            s_ends = s_offs[i, s_start : s_start + s_n, 1].tolist()
            t_ends = t_offs[i, t_start : t_start + t_n, 1].tolist()
            spans = groups_by_bytes(s_ends, t_ends)
            p_s = torch.stack([merge(p_s, s, s_tok, strategy) for s, _ in spans])
            p_t = torch.stack([merge(p_t, t, t_tok, strategy) for _, t in spans])
        per_sequence.append(sorted_l1(p_s, p_t).sum() / p_s.size(0))
    return torch.stack(per_sequence).mean()


def reference_jsd(s_logits, t_logits, labels, beta, temperature):
    """GKD's generalised JSD per position, mean over positions whose label is not -100."""
    log_s = (s_logits / temperature).log_softmax(-1)
    log_t = (t_logits / temperature).log_softmax(-1)
    p_s, p_t = log_s.exp(), log_t.exp()
    if beta == 0:
        per = (p_t * (log_t - log_s)).sum(-1)
    elif beta == 1:
        per = (p_s * (log_s - log_t)).sum(-1)
    else:
        log_m = (beta * p_t + (1 - beta) * p_s).log()
        per = beta * (p_t * (log_t - log_m)).sum(-1) + (1 - beta) * (p_s * (log_s - log_m)).sum(-1)
    mask = labels != -100
    return per[mask].sum() / mask.sum()


# ---------------------------------------------------------------------------------------------
# Sorted L1: the distance, its optimality, its normalisation
# ---------------------------------------------------------------------------------------------


def test_sorting_gives_the_smallest_l1_over_all_token_pairings():
    """The derivation's claim: pairing tokens by rank minimises sum |p_i - q_pi(i)| over every
    bijection pi, so ULD needs no token correspondence. Brute force over 6! pairings."""
    generator = torch.Generator().manual_seed(1)
    p = torch.randn(4, 6, generator=generator).mul(2).softmax(-1)
    q = torch.randn(4, 6, generator=generator).mul(2).softmax(-1)
    best = (
        torch.stack(
            [(p - q[:, list(perm)]).abs().sum(-1) for perm in itertools.permutations(range(6))]
        )
        .min(0)
        .values
    )
    torch.testing.assert_close(sorted_l1(p, q), best, **TOL)
    # Identity pairing (what a shared vocabulary would compare) is never smaller.
    assert torch.all((p - q).abs().sum(-1) >= best - 1e-7)


def test_positional_uld_on_ragged_answers():
    """use_extended_uld=False: the first min(n_S, n_T) answer positions paired one to one, each
    sequence's sum divided by its own count, then the mean over sequences. Student left-padded,
    teacher right-padded, vocabularies 9 and 6, answers of 4/2 (student) and 3/5 (teacher)."""
    generator = torch.Generator().manual_seed(2)
    s_logits = torch.randn(2, 8, 9, generator=generator) * 2
    t_logits = torch.randn(2, 9, 6, generator=generator) * 2
    s_ids = torch.randint(0, 9, (2, 8), generator=generator)
    t_ids = torch.randint(0, 6, (2, 9), generator=generator)
    s_labels = torch.full((2, 8), -100)
    s_labels[0, 4:8] = s_ids[0, 4:8]  # 4 answer tokens (3 after skipping EOS)
    s_labels[1, 6:8] = s_ids[1, 6:8]  # left padding and a short answer: 1 after EOS
    t_labels = torch.full((2, 9), -100)
    t_labels[0, 2:5] = t_ids[0, 2:5]  # right padding after position 4
    t_labels[1, 3:8] = t_ids[1, 3:8]
    for strategy in ("observed", "bayesian"):
        loss = ULDLoss(uld_config(use_extended_uld=False, uld_token_merge_strategy=strategy))
        got = loss(s_logits, t_logits, s_labels, t_labels, s_ids, t_ids)
        want = reference_uld(
            s_logits, t_logits, s_labels, t_labels, s_ids, t_ids, strategy=strategy
        )
        torch.testing.assert_close(got, want, **TOL)
    # A mean over all aligned positions of the batch (not per sequence first) differs here.
    pooled = torch.cat(
        [
            sorted_l1(s_logits[0, 4:6].softmax(-1), t_logits[0, 2:4].softmax(-1)),
            sorted_l1(s_logits[1, 6:7].softmax(-1), t_logits[1, 3:4].softmax(-1)),
        ]
    ).mean()
    assert not torch.isclose(got, pooled, rtol=1e-3)


def test_weights_temperatures_and_cross_entropy_term():
    """loss = w_CE * CE(student, labels) + w_D * ULD, each model's logits divided by its own
    temperature before the softmax."""
    generator = torch.Generator().manual_seed(3)
    s_logits = torch.randn(2, 6, 7, generator=generator) * 2
    t_logits = torch.randn(2, 6, 5, generator=generator) * 2
    s_ids = torch.randint(0, 7, (2, 6), generator=generator)
    t_ids = torch.randint(0, 5, (2, 6), generator=generator)
    s_labels, t_labels = s_ids.clone(), t_ids.clone()
    s_labels[:, :2], t_labels[:, :3] = -100, -100
    config = uld_config(
        use_extended_uld=False,
        uld_crossentropy_weight=0.3,
        uld_distillation_weight=2.0,
        uld_student_temperature=0.5,
        uld_teacher_temperature=2.0,
    )
    got = ULDLoss(config)(s_logits, t_logits, s_labels, t_labels, s_ids, t_ids)
    uld = reference_uld(s_logits / 0.5, t_logits / 2.0, s_labels, t_labels, s_ids, t_ids)
    log_p = s_logits[:, :-1].log_softmax(-1)
    mask = s_labels[:, 1:] != -100
    nll = -log_p.gather(-1, s_ids[:, 1:, None]).squeeze(-1)[mask].mean()
    torch.testing.assert_close(got, 0.3 * nll + 2.0 * uld, **TOL)


# ---------------------------------------------------------------------------------------------
# Byte alignment and merging, on the fixture's two real tokenizers
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizers(tiny):
    return AutoTokenizer.from_pretrained(tiny.policy), AutoTokenizer.from_pretrained(
        tiny.gold_teacher
    )


@pytest.fixture(scope="module")
def answers(tiny):
    path = tiny.data / "conversational_language_modeling" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return [row["messages"][-1]["content"] for row in rows]


def test_teacher_cuts_the_toy_answers_elsewhere(tokenizers, answers):
    """The fixture is a real cross-tokenizer pair: other ids, and other token boundaries on
    every toy answer (each has a multi-digit number or a spaced digit)."""
    student, teacher = tokenizers
    assert student.get_vocab() != teacher.get_vocab()
    differ = 0
    for text in answers:
        s_ids = student(text, add_special_tokens=False)["input_ids"]
        t_ids = teacher(text, add_special_tokens=False)["input_ids"]
        assert student.decode(s_ids) == teacher.decode(t_ids) == text
        (_, s_offs), (_, t_offs) = (
            encode_with_byte_offsets(tok.backend_tokenizer, [text])[0] for tok in tokenizers
        )
        differ += {e for _, e in s_offs} != {e for _, e in t_offs}
    assert differ / len(answers) > 0.9


def test_byte_alignment_matches_our_grouping(tokenizers, answers):
    """TRL's walk over the two offset lists gives the spans we get from the shared boundaries,
    and some spans hold several student tokens (the alignment is not one to one here)."""
    student, teacher = tokenizers
    several = 0
    for text in answers[:64]:
        (_, s_offs), (_, t_offs) = (
            encode_with_byte_offsets(tok.backend_tokenizer, [text])[0] for tok in (student, teacher)
        )
        s_groups, t_groups = ULDLoss._align_by_byte_offsets(s_offs, t_offs)
        ours = groups_by_bytes([e for _, e in s_offs], [e for _, e in t_offs])
        assert list(zip(s_groups, t_groups, strict=True)) == [(s, t) for s, t in ours]
        # Each span covers the same bytes on both sides.
        for s, t in ours:
            assert (s_offs[s[0]][0], s_offs[s[-1]][1]) == (t_offs[t[0]][0], t_offs[t[-1]][1])
        several += any(len(s) > 1 for s, _ in ours)
    assert several > 32


@pytest.mark.parametrize("strategy", ["observed", "bayesian"])
def test_merging_a_span(strategy):
    generator = torch.Generator().manual_seed(4)
    probs = (torch.randn(5, 8, generator=generator) * 2).softmax(-1)
    ids = [3, 1, 4, 1, 5]
    groups = [[0], [1, 2, 3], [4]]
    loss = ULDLoss(uld_config(uld_token_merge_strategy=strategy))
    got = loss._merge_probabilities_with_alignment_groups(probs, groups, ids)
    want = torch.stack([merge(probs, g, ids, strategy) for g in groups])
    torch.testing.assert_close(got, want, **TOL)
    # The two strategies differ on the span of three.
    other = "bayesian" if strategy == "observed" else "observed"
    assert not torch.allclose(got[1], merge(probs, groups[1], ids, other))


@pytest.mark.parametrize("strategy", ["observed", "bayesian"])
def test_extended_uld_on_real_tokenizations(tokenizers, answers, strategy):
    """The whole loss on a batch of three toy answers tokenized by each tokenizer (teacher inputs
    from TRL's own text-to-tensor helper), random logits of each vocabulary's width."""
    student, teacher = tokenizers
    texts = answers[:3]
    prompts = ["What is it?", "Q", "A longer prompt, of a few more tokens"]
    s_ids, s_labels, _, s_offs = build_teacher_inputs_from_texts(student, prompts, texts)
    t_ids, t_labels, _, t_offs = build_teacher_inputs_from_texts(teacher, prompts, texts)
    assert s_ids.shape[1] != t_ids.shape[1] or not torch.equal(s_labels != -100, t_labels != -100)
    generator = torch.Generator().manual_seed(5)
    s_logits = torch.randn(3, s_ids.shape[1], len(student), generator=generator) * 3
    t_logits = torch.randn(3, t_ids.shape[1], len(teacher), generator=generator) * 3
    loss = ULDLoss(uld_config(uld_token_merge_strategy=strategy))
    got = loss(s_logits, t_logits, s_labels, t_labels, s_ids, t_ids, s_offs, t_offs)
    want = reference_uld(
        s_logits, t_logits, s_labels, t_labels, s_ids, t_ids, s_offs, t_offs, strategy
    )
    torch.testing.assert_close(got, want, **TOL)
    # Pairing positions one to one instead (the original ULD) gives another number here.
    positional = reference_uld(
        s_logits, t_logits, s_labels, t_labels, s_ids, t_ids, None, None, strategy
    )
    assert not torch.isclose(got, positional, rtol=1e-3)


# ---------------------------------------------------------------------------------------------
# The same-tokenizer path: generalised JSD with the sampling temperature
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_generalized_jsd(beta):
    generator = torch.Generator().manual_seed(6)
    s_logits = torch.randn(3, 5, 11, generator=generator) * 2
    t_logits = torch.randn(3, 5, 11, generator=generator) * 2
    labels = torch.randint(0, 11, (3, 5), generator=generator)
    labels[0, :2], labels[2, 3:] = -100, -100
    got = GOLDTrainer.generalized_jsd_loss(s_logits, t_logits, labels, beta=beta, temperature=0.7)
    torch.testing.assert_close(got, reference_jsd(s_logits, t_logits, labels, beta, 0.7), **TOL)
    # With num_items_in_batch the sum is divided by that count instead (gradient accumulation).
    got_sum = GOLDTrainer.generalized_jsd_loss(
        s_logits, t_logits, labels, beta=beta, temperature=0.7, num_items_in_batch=40
    )
    count = (labels != -100).sum()
    torch.testing.assert_close(got_sum, got * count / 40, **TOL)


# ---------------------------------------------------------------------------------------------
# What the trainer feeds the loss: one GOLDTrainer per branch of compute_loss
# ---------------------------------------------------------------------------------------------


def _trainer(tiny, tmp_path, teacher, use_uld_loss):
    path = tiny.data / "conversational_language_modeling" / "train.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()[:16]]
    args = GOLDConfig(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        report_to="none",
        per_device_train_batch_size=4,
        max_length=64,
        max_completion_length=8,
        use_uld_loss=use_uld_loss,
        temperature=0.9,
        lmbda=0.0,
        disable_tqdm=True,
    )
    return GOLDTrainer(
        model=AutoModelForCausalLM.from_pretrained(tiny.policy),
        teacher_model=AutoModelForCausalLM.from_pretrained(teacher),
        args=args,
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )


def _batch(trainer):
    batch = next(iter(trainer.get_train_dataloader()))
    return {
        k: v.to(trainer.accelerator.device) if torch.is_tensor(v) else v for k, v in batch.items()
    }


def test_trainer_uld_path_feeds_the_teacher_its_own_tokens(tiny, tmp_path, tokenizers):
    """Off-policy batch, two tokenizers: the teacher reads the same prompt and answer text
    re-tokenized; the loss equals ours on both models' logits. Then an on-policy batch: the
    student's samples, whose byte offsets TRL rebuilds from the sampled tokens."""
    trainer = _trainer(tiny, tmp_path, tiny.gold_teacher, use_uld_loss=True)
    student_tok, teacher_tok = tokenizers
    for on_policy in (False, True):
        trainer.lmbda = float(on_policy)
        trainer._step, trainer._buffered_inputs = 0, None
        torch.manual_seed(0)
        inputs = trainer._prepare_inputs(_batch(trainer))
        with torch.no_grad():
            got = trainer.compute_loss(trainer.model, inputs)
            t_ids, t_labels, t_mask, t_offs = build_teacher_inputs_from_texts(
                teacher_tok, inputs["original_prompt_text"], inputs["original_completion_text"]
            )
            # The texts the teacher reads are exactly the student's answer tokens, decoded.
            for row, labels, text in zip(
                inputs["input_ids"],
                inputs["labels"],
                inputs["original_completion_text"],
                strict=True,
            ):
                assert student_tok.decode(row[labels != -100]) == text
            s_logits = trainer.model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]
            ).logits
            t_logits = trainer.teacher_model(input_ids=t_ids, attention_mask=t_mask).logits
        want = reference_uld(
            s_logits, t_logits, inputs["labels"], t_labels, inputs["input_ids"], t_ids,
            inputs["byte_offsets"], t_offs,
        )  # fmt: skip
        torch.testing.assert_close(got, want, **TOL)


def test_trainer_same_tokenizer_path_is_shifted_jsd_at_the_sampling_temperature(tiny, tmp_path):
    """use_uld_loss=False: both models read the student's tokens; logits at t predict t+1; both
    divided by `temperature` (0.9 here); beta 0.5; mean over answer tokens."""
    trainer = _trainer(tiny, tmp_path, tiny.teacher, use_uld_loss=False)
    inputs = trainer._prepare_inputs(_batch(trainer))
    with torch.no_grad():
        got = trainer.compute_loss(trainer.model, inputs)
        model_inputs = {k: inputs[k] for k in ("input_ids", "attention_mask")}
        s_logits = trainer.model(**model_inputs).logits[:, :-1]
        t_logits = trainer.teacher_model(**model_inputs).logits[:, :-1]
    want = reference_jsd(s_logits, t_logits, inputs["labels"][:, 1:], 0.5, 0.9)
    torch.testing.assert_close(got, want, **TOL)
    assert not torch.isclose(
        got, reference_jsd(s_logits, t_logits, inputs["labels"][:, 1:], 0.5, 1.0)
    )


# ---------------------------------------------------------------------------------------------
# The hybrid variant: JSD on tokens both vocabularies spell alike, sorted L1 on the rest
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("weights", [(None, None), (0.6, 0.4)])
def test_hybrid_loss_on_the_fixture_vocabularies(tokenizers, weights):
    """Matched = the same token string in both vocabularies. Their probabilities (not
    renormalised) go through the generalised JSD at `beta`, mean over spans; the other tokens'
    through (1), divided by the span count. Adaptive weights: the matched share of the teacher's
    vocabulary, and the rest."""
    student, teacher = tokenizers
    config = uld_config(
        uld_use_hybrid_loss=True,
        uld_hybrid_matched_weight=weights[0],
        uld_hybrid_unmatched_weight=weights[1],
        beta=0.5,
    )
    loss = ULDLoss(config, student_tokenizer=student, teacher_tokenizer=teacher)
    generator = torch.Generator().manual_seed(7)
    p_s = (torch.randn(4, len(student), generator=generator) * 3).softmax(-1)
    p_t = (torch.randn(4, len(teacher), generator=generator) * 3).softmax(-1)
    got = loss._compute_hybrid_uld_loss(p_s, p_t)

    s_vocab, t_vocab = student.get_vocab(), teacher.get_vocab()
    shared = sorted(set(s_vocab) & set(t_vocab))
    assert 0 < len(shared) < len(t_vocab)  # some tokens match, some do not
    s_m = torch.tensor([s_vocab[tok] for tok in shared])
    t_m = torch.tensor([t_vocab[tok] for tok in shared])
    log_s, log_t = p_s[:, s_m].clamp_min(1e-8).log(), p_t[:, t_m].clamp_min(1e-8).log()
    log_m = (0.5 * log_s.exp() + 0.5 * log_t.exp()).log()
    jsd = 0.5 * (log_t.exp() * (log_t - log_m)).sum(-1) + 0.5 * (log_s.exp() * (log_s - log_m)).sum(
        -1
    )
    matched = jsd.mean()
    s_rest = torch.ones(len(student), dtype=torch.bool)
    t_rest = torch.ones(len(teacher), dtype=torch.bool)
    s_rest[s_m], t_rest[t_m] = False, False
    unmatched = sorted_l1(p_s[:, s_rest], p_t[:, t_rest]).sum() / 4
    w_m, w_u = weights if weights[0] is not None else (len(shared) / len(teacher),) * 2
    if weights[0] is None:
        w_u = 1 - w_m
    torch.testing.assert_close(got, w_m * matched + w_u * unmatched, **TOL)
    torch.testing.assert_close(loss.last_matched_loss, matched, **TOL)
    torch.testing.assert_close(loss.last_unmatched_loss, unmatched, **TOL)


def test_bayesian_merge_is_the_chain_rule():
    """With "bayesian", a span's merged distribution, read at the span's last token, is the
    product of the probabilities of all its tokens: the probability of the span's text, provided
    row k of `probs` is the distribution of token k, which is what the "bayesian" slice (one
    position earlier) feeds it. The "observed" slice feeds row k the distribution of token k + 1
    (test_positional_uld_on_ragged_answers and the reference loss reproduce both slices)."""
    generator = torch.Generator().manual_seed(8)
    probs = (torch.randn(4, 9, generator=generator) * 2).softmax(-1)
    ids = [2, 7, 7, 1]
    loss = ULDLoss(uld_config(uld_token_merge_strategy="bayesian"))
    merged = loss._merge_probabilities_with_alignment_groups(probs, [[0, 1, 2, 3]], ids)
    joint = probs[0, 2] * probs[1, 7] * probs[2, 7] * probs[3, 1]
    torch.testing.assert_close(merged[0, 1], joint, **TOL)
