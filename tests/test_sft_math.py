"""The equations of reference_guides/sft.md, computed independently and compared with TRL.

Each test builds a real `SFTTrainer` (TRL 1.16.0) on the tiny offline policy, takes a batch the
trainer itself prepared and collated, and checks one equation of the reference guide against our
own torch computation from the full logits. TRL never builds those logits: its fused LM head
returns per-token log-probabilities directly, so agreement is a real check, not a tautology.
"""

import copy
import json
import math
import re

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

pytestmark = pytest.mark.math

# Losses here are a few nats. The fused, chunked head and our full-logits computation sum in a
# different order, in float32; they agree to about 1e-6 relative.
TOL = {"atol": 1e-5, "rtol": 1e-5}

ALL_LINEAR = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def read_rows(tiny, fmt: str, n: int) -> list[dict]:
    path = tiny.data / fmt / "train.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines()[:n]
    return [json.loads(line) for line in lines]


def make_trainer(
    tiny, tmp_path, rows, attn_implementation="sdpa", tokenizer=None, **overrides
) -> SFTTrainer:
    settings = {
        "output_dir": str(tmp_path),
        "use_cpu": True,
        "bf16": False,
        "report_to": "none",
        "max_length": 64,
        "per_device_train_batch_size": 4,
        "gradient_checkpointing": False,
        "seed": 0,
    }
    settings.update(overrides)
    model = AutoModelForCausalLM.from_pretrained(
        tiny.policy, attn_implementation=attn_implementation
    )
    trainer = SFTTrainer(
        model=model,
        args=SFTConfig(**settings),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer or AutoTokenizer.from_pretrained(tiny.policy),
    )
    # `compute_loss` files its metrics under "train" only when the model is in training mode.
    trainer.model.train()
    return trainer


def warm_up(trainer: SFTTrainer) -> None:
    """Train a few steps so that predictions are no longer uniform.

    At initialisation the tiny policy costs about ln |V| on every token, so the token-level and
    sequence-level means coincide and accuracy is near zero: the comparisons below would be weak.
    No equation checked here depends on the parameter values.
    """
    trainer.train()
    trainer.model.train()
    trainer._metrics["train"].clear()
    trainer._total_train_tokens = 0


def first_batch(trainer: SFTTrainer) -> dict:
    return dict(next(iter(trainer.get_train_dataloader())))


def reference_stats(model, batch: dict) -> dict:
    """Next-token statistics from the full logits: our own teacher-forcing computation.

    Without `fused_lm_head=True`, the forward TRL patched is the model's original one, so this
    returns ordinary `(B, T, V)` logits. Labels are not passed, so the model computes no loss.
    """
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "position_ids") if k in batch}
    logits = model(**inputs).logits.float()
    # Shift by one: the logits at position t predict the token at position t + 1.
    logits, targets = logits[:, :-1], batch["labels"][:, 1:]
    mask = targets != -100
    log_probs = logits.log_softmax(-1)
    token_log_probs = log_probs.gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return {
        "token_log_probs": token_log_probs * mask,
        "entropy": -(log_probs.exp() * log_probs).sum(-1) * mask,
        "is_top1": (logits.argmax(-1) == targets) & mask,
        "mask": mask,
    }


def token_mean_nll(stats: dict) -> torch.Tensor:
    return -stats["token_log_probs"].sum() / stats["mask"].sum()


def sequence_mean_nll(stats: dict) -> torch.Tensor:
    per_sequence = -stats["token_log_probs"].sum(-1) / stats["mask"].sum(-1)
    return per_sequence.mean()


# ---------------------------------------------------------------------------------------------
# Loss: the masked, token-level mean NLL
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def prompt_completion_trainer(tiny, tmp_path_factory):
    # Rows of different lengths, so that padding and the two averages really differ.
    rows = read_rows(tiny, "prompt_completion", 4)
    rows[1] = {**rows[1], "completion": rows[1]["completion"] + ". The answer is correct."}
    trainer = make_trainer(
        tiny,
        tmp_path_factory.mktemp("sft_pc"),
        rows,
        max_steps=20,
        learning_rate=1e-2,
        save_strategy="no",
        disable_tqdm=True,
    )
    warm_up(trainer)
    return trainer


def test_sft_loss_is_masked_token_mean_nll(prompt_completion_trainer):
    trainer = prompt_completion_trainer
    batch = first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        expected = token_mean_nll(reference_stats(trainer.model, batch))
    torch.testing.assert_close(loss.detach(), expected, **TOL)


def test_sft_fused_lm_head_outputs_match_full_logits(prompt_completion_trainer):
    trainer = prompt_completion_trainer
    batch = first_batch(trainer)
    with torch.no_grad():
        fused = trainer.model(**batch, fused_lm_head=True)
        ref = reference_stats(trainer.model, batch)
    batch_size, seq_len = batch["input_ids"].shape
    assert fused.log_probs.shape == (batch_size, seq_len - 1)  # one prediction per shifted label
    assert torch.equal(fused.label_mask, ref["mask"])
    torch.testing.assert_close(fused.log_probs, ref["token_log_probs"], **TOL)
    torch.testing.assert_close(fused.entropy, ref["entropy"], **TOL)
    assert torch.equal(fused.is_top1, ref["is_top1"])
    # No (B, T, V) tensor comes back: the fused head never builds the logits.
    assert fused.get("logits") is None


def test_sft_token_level_mean_differs_from_sequence_level(prompt_completion_trainer):
    trainer = prompt_completion_trainer
    batch = first_batch(trainer)
    loss = trainer.compute_loss(trainer.model, dict(batch))
    with torch.no_grad():
        stats = reference_stats(trainer.model, batch)
    lengths = stats["mask"].sum(-1)
    assert lengths.unique().numel() > 1, "the batch needs completions of different lengths"
    token_level, sequence_level = token_mean_nll(stats), sequence_mean_nll(stats)
    assert abs(token_level - sequence_level) > 1e-3
    torch.testing.assert_close(loss.detach(), token_level, **TOL)


def test_sft_worked_example_token_vs_sequence_mean():
    # The numbers of the worked example in reference_guides/sft.md: sequence A has 2 loss tokens
    # the model finds hard (NLL 3.0 each), sequence B has 8 it already knows (NLL 0.5 each).
    nll = torch.tensor([3.0] * 2 + [0.5] * 8, requires_grad=True)
    a, b = nll[:2], nll[2:]
    token_level = nll.sum() / nll.numel()
    sequence_level = (a.mean() + b.mean()) / 2
    assert token_level.item() == pytest.approx(1.0)
    assert sequence_level.item() == pytest.approx(1.75)
    # The weight of each token in the loss is its share of the gradient.
    (token_weights,) = torch.autograd.grad(token_level, nll)
    (sequence_weights,) = torch.autograd.grad(sequence_level, nll)
    assert token_weights.tolist() == pytest.approx([0.1] * 10)
    assert sequence_weights.tolist() == pytest.approx([0.25] * 2 + [0.0625] * 8)


def test_sft_nll_gradient_is_softmax_minus_one_hot():
    torch.manual_seed(0)
    logits = torch.randn(5, 11, requires_grad=True)
    targets = torch.randint(0, 11, (5,))
    nll = -logits.log_softmax(-1).gather(-1, targets[:, None]).sum()
    (grad,) = torch.autograd.grad(nll, logits)
    expected = logits.softmax(-1) - torch.nn.functional.one_hot(targets, 11)
    torch.testing.assert_close(grad, expected.detach())


def test_sft_cross_entropy_is_data_entropy_plus_forward_kl():
    torch.manual_seed(0)
    p_data = torch.rand(7).softmax(-1)
    log_q = torch.randn(7).log_softmax(-1)
    cross_entropy = -(p_data * log_q).sum()
    entropy = -(p_data * p_data.log()).sum()
    forward_kl = (p_data * (p_data.log() - log_q)).sum()
    torch.testing.assert_close(cross_entropy, entropy + forward_kl)


def test_sft_gradient_accumulation_divides_by_num_items_in_batch(prompt_completion_trainer):
    trainer = prompt_completion_trainer
    batch = first_batch(trainer)
    micro_batches = [{k: v[:2] for k, v in batch.items()}, {k: v[2:] for k, v in batch.items()}]
    # `Trainer` counts loss tokens over the window and passes the count to `compute_loss` only for
    # models whose forward takes **kwargs; then it does not divide the loss by the number of steps.
    assert trainer.model_accepts_loss_kwargs
    # The count `Trainer` hands to `compute_loss` for an accumulation window of two micro-batches.
    num_items = trainer._get_num_items_in_batch(micro_batches, trainer.args.device)
    assert num_items == sum((mb["labels"][:, 1:] != -100).sum() for mb in micro_batches)
    losses = [
        trainer.compute_loss(trainer.model, dict(mb), num_items_in_batch=num_items).detach()
        for mb in micro_batches
    ]
    with torch.no_grad():
        expected = token_mean_nll(reference_stats(trainer.model, batch))
        naive = torch.stack(
            [token_mean_nll(reference_stats(trainer.model, mb)) for mb in micro_batches]
        ).mean()
    # Summed over the window, the micro-batch losses are the token mean of the whole window ...
    torch.testing.assert_close(sum(losses), expected, **TOL)
    # ... which is not the mean of per-micro-batch means when their token counts differ.
    assert abs(naive - expected) > 1e-4


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def test_sft_entropy_accuracy_and_num_tokens_metrics(prompt_completion_trainer):
    trainer = prompt_completion_trainer
    trainer._metrics["train"].clear()
    trainer._total_train_tokens = 0
    batches = list(trainer.get_train_dataloader())
    assert len(batches) >= 1
    entropies, accuracies = [], []
    for batch in batches:
        trainer.compute_loss(trainer.model, dict(batch))
        with torch.no_grad():
            ref = reference_stats(trainer.model, batch)
        n = ref["mask"].sum()
        entropies.append((ref["entropy"].sum() / n).item())
        accuracies.append((ref["is_top1"].sum() / n).item())
        assert trainer._metrics["train"]["entropy"][-1] == pytest.approx(entropies[-1], rel=1e-5)
        assert trainer._metrics["train"]["mean_token_accuracy"][-1] == pytest.approx(accuracies[-1])
    # num_tokens counts every non-padding token seen so far, prompt included, not the loss tokens.
    seen = sum(int(b["attention_mask"].sum()) for b in batches)
    assert trainer._metrics["train"]["num_tokens"] == [seen]
    # At logging time each metric is the plain mean of its per-step values.
    trainer.log({"loss": 0.0})
    logged = trainer.state.log_history[-1]
    assert logged["entropy"] == pytest.approx(sum(entropies) / len(entropies), rel=1e-5)
    assert logged["num_tokens"] == seen


def test_sft_untrained_model_entropy_is_near_log_vocab(tiny, tmp_path):
    # The starting point quoted on the walkthrough: a freshly initialised model is close to
    # uniform, so entropy and loss both start near ln |V| (entropy can never exceed it).
    trainer = make_trainer(tiny, tmp_path, read_rows(tiny, "prompt_completion", 4))
    loss = trainer.compute_loss(trainer.model, first_batch(trainer)).item()
    entropy = trainer._metrics["train"]["entropy"][-1]
    log_vocab = math.log(trainer.model.config.vocab_size)
    assert 0.95 * log_vocab < entropy <= log_vocab
    assert loss == pytest.approx(log_vocab, rel=0.05)


# ---------------------------------------------------------------------------------------------
# DFT
# ---------------------------------------------------------------------------------------------


def test_sft_dft_loss_matches_formula_and_gradient(tiny, tmp_path):
    rows = read_rows(tiny, "prompt_completion", 4)
    trainer = make_trainer(tiny, tmp_path, rows, loss_type="dft")
    batch = first_batch(trainer)
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    loss = trainer.compute_loss(trainer.model, dict(batch))
    trl_grads = torch.autograd.grad(loss, params)

    ref = reference_stats(trainer.model, batch)
    n = ref["mask"].sum()
    log_p = ref["token_log_probs"]
    p = log_p.exp() * ref["mask"]
    # Value: each token's NLL weighted by its own (detached) probability.
    expected = -(p.detach() * log_p).sum() / n
    torch.testing.assert_close(loss.detach(), expected.detach(), **TOL)
    # Gradient: p * grad(-log p) = -grad(p), so DFT descends on -sum(p) / n.
    surrogate_grads = torch.autograd.grad(-p.sum() / n, params)
    for ours, theirs in zip(surrogate_grads, trl_grads, strict=True):
        torch.testing.assert_close(theirs, ours, atol=1e-6, rtol=1e-4)


# ---------------------------------------------------------------------------------------------
# Masks: which tokens carry a label
# ---------------------------------------------------------------------------------------------


def expected_labels(tokenizer, text: str, spans: list[tuple[int, int]]) -> tuple[list, list]:
    """Token ids of `text`, and labels that keep a token iff its characters lie in a span."""
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    labels = []
    for token_id, (start, end) in zip(
        encoding["input_ids"], encoding["offset_mapping"], strict=True
    ):
        inside = any(lo <= start and end <= hi for lo, hi in spans)
        labels.append(token_id if inside else -100)
    return encoding["input_ids"], labels


def test_sft_completion_only_loss_masks_the_prompt(tiny, tmp_path):
    rows = read_rows(tiny, "prompt_completion", 4)
    trainer = make_trainer(tiny, tmp_path, rows)
    tokenizer = trainer.processing_class
    assert trainer.completion_only_loss  # the default (None) resolves to True for this format
    for row, prepared in zip(rows, trainer.train_dataset, strict=True):
        # TRL appends EOS to the completion; the completion is every character after the prompt.
        text = row["prompt"] + row["completion"] + tokenizer.eos_token
        ids, labels = expected_labels(tokenizer, text, [(len(row["prompt"]), len(text))])
        assert prepared["input_ids"] == ids
        assert prepared["labels"] == labels
        assert labels[-1] == tokenizer.eos_token_id  # the model is trained to stop


def test_sft_pad_token_equal_to_eos_keeps_the_eos_label(tiny, tmp_path):
    # Labels are built before padding and padded with -100 on their own, so a pad token equal to
    # EOS does not hide the EOS label (it would if labels were derived from input_ids != pad).
    rows = read_rows(tiny, "prompt_completion", 4)
    rows[1] = {**rows[1], "completion": rows[1]["completion"] + ". The answer is correct."}
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    tokenizer.pad_token = tokenizer.eos_token
    trainer = make_trainer(tiny, tmp_path, rows, tokenizer=tokenizer)
    assert trainer.data_collator.pad_token_id == tokenizer.eos_token_id
    batch = first_batch(trainer)
    assert (batch["attention_mask"] == 0).any(), "the batch needs padding"
    for input_ids, labels, attention_mask in zip(
        batch["input_ids"], batch["labels"], batch["attention_mask"], strict=True
    ):
        last = int(attention_mask.sum()) - 1  # the last real token: the appended EOS
        assert input_ids[last] == tokenizer.eos_token_id
        assert labels[last] == tokenizer.eos_token_id
        assert (labels[last + 1 :] == -100).all()  # padding, also EOS ids, carries no label


def test_sft_conversational_completion_only_loss_masks_the_prompt(tiny, tmp_path):
    rows = read_rows(tiny, "conversational_prompt_completion", 4)
    trainer = make_trainer(tiny, tmp_path, rows)
    tokenizer = trainer.processing_class
    for row, prepared in zip(rows, trainer.train_dataset, strict=True):
        prompt = tokenizer.apply_chat_template(
            row["prompt"], tokenize=False, add_generation_prompt=True
        )
        text = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=False)
        assert text.startswith(prompt)
        ids, labels = expected_labels(tokenizer, text, [(len(prompt), len(text))])
        assert prepared["input_ids"] == ids
        assert prepared["labels"] == labels


def test_sft_assistant_only_loss_masks_everything_but_assistant_turns(tiny, tmp_path):
    rows = read_rows(tiny, "conversational_language_modeling", 3)
    # A two-turn conversation: the user turn between the assistant turns must be masked too.
    rows.append({"messages": rows[0]["messages"] + rows[1]["messages"]})
    trainer = make_trainer(tiny, tmp_path, rows, assistant_only_loss=True)
    tokenizer = trainer.processing_class
    assistant_turn = re.compile(r"<\|im_start\|>assistant\n(.*?<\|im_end\|>)", re.DOTALL)
    for row, prepared in zip(rows, trainer.train_dataset, strict=True):
        text = tokenizer.apply_chat_template(row["messages"], tokenize=False)
        # What {% generation %} wraps in this template: the reply and its <|im_end|>.
        spans = [m.span(1) for m in assistant_turn.finditer(text)]
        assert len(spans) == sum(m["role"] == "assistant" for m in row["messages"])
        ids, labels = expected_labels(tokenizer, text, spans)
        assert prepared["input_ids"] == ids
        assert prepared["labels"] == labels


def test_sft_truncation_keeps_start_and_drops_examples_without_loss_tokens(tiny, tmp_path):
    rows = read_rows(tiny, "prompt_completion", 4)
    long_prompt = " ".join(["The quick brown fox jumps over the lazy dog."] * 8)
    rows.append({"prompt": long_prompt, "completion": " 1 + 1 = 2"})
    trainer = make_trainer(tiny, tmp_path, rows, max_length=16)
    tokenizer = trainer.processing_class
    # The row whose prompt alone fills max_length has no completion token left: it is dropped.
    assert len(trainer.train_dataset) == len(rows) - 1
    for row, prepared in zip(rows, trainer.train_dataset, strict=False):
        full = tokenizer(row["prompt"] + row["completion"] + tokenizer.eos_token)["input_ids"]
        assert prepared["input_ids"] == full[:16]  # "keep_start": the end is cut


# ---------------------------------------------------------------------------------------------
# Packing and padding-free
# ---------------------------------------------------------------------------------------------


def split_packed_row(batch: dict) -> list[dict]:
    """Cut a padding-free row back into its sequences, where position_ids restart at 0."""
    position_ids = batch["position_ids"][0]
    starts = (position_ids == 0).nonzero().flatten().tolist() + [position_ids.numel()]
    return [
        {
            "input_ids": batch["input_ids"][:, s:e],
            "labels": batch["labels"][:, s:e],
            "attention_mask": torch.ones_like(batch["input_ids"][:, s:e]),
        }
        for s, e in zip(starts[:-1], starts[1:], strict=True)
    ]


@pytest.mark.parametrize("attn_implementation", ["sdpa", "eager"])
@pytest.mark.parametrize(
    "setting",
    [{"packing": True}, {"padding_free": True, "max_length": None}],
    ids=["sft_bfd_packing", "sft_padding_free"],
)
def test_sft_packed_row_equals_separate_sequences(tiny, tmp_path, setting, attn_implementation):
    rows = read_rows(tiny, "prompt_completion", 8)
    trainer = make_trainer(
        tiny,
        tmp_path,
        rows,
        attn_implementation=attn_implementation,
        per_device_train_batch_size=2,
        **setting,
    )
    batch = first_batch(trainer)
    assert batch["input_ids"].shape[0] == 1 and "attention_mask" not in batch
    sequences = split_packed_row(batch)
    assert len(sequences) > 1

    loss = trainer.compute_loss(trainer.model, dict(batch)).detach()
    packed_count = (batch["labels"][:, 1:] != -100).sum()
    with torch.no_grad():
        separate = [reference_stats(trainer.model, seq) for seq in sequences]
        # Negative control: the same row seen as one long sequence, as wrapped packing sees it.
        as_one = reference_stats(
            trainer.model,
            {**batch, "attention_mask": torch.ones_like(batch["input_ids"]), "position_ids": None},
        )
    separate_sum = sum(-s["token_log_probs"].sum() for s in separate)
    separate_count = sum(s["mask"].sum() for s in separate)

    # Same loss tokens: the collator masks each sequence's first label, which would otherwise be
    # predicted from the previous sequence's last token.
    assert packed_count == separate_count
    torch.testing.assert_close(loss * packed_count, separate_sum, atol=1e-4, rtol=1e-5)
    assert abs(-as_one["token_log_probs"].sum() - separate_sum) > 1e-2


# ---------------------------------------------------------------------------------------------
# LoRA
# ---------------------------------------------------------------------------------------------


def lora_params_by_hand(config, r: int) -> int:
    """r * (d_in + d_out) for every adapted matrix, from the config's sizes alone."""
    hidden, inter = config.hidden_size, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    q_out = config.num_attention_heads * head_dim
    kv_out = config.num_key_value_heads * head_dim
    shapes = {  # (d_in, d_out)
        "q_proj": (hidden, q_out),
        "k_proj": (hidden, kv_out),
        "v_proj": (hidden, kv_out),
        "o_proj": (q_out, hidden),
        "gate_proj": (hidden, inter),
        "up_proj": (hidden, inter),
        "down_proj": (inter, hidden),
    }
    per_layer = sum(r * (d_in + d_out) for d_in, d_out in shapes.values())
    return config.num_hidden_layers * per_layer


def test_sft_lora_fresh_adapter_is_identity_and_counts_r_times_din_plus_dout(tiny):
    base = AutoModelForCausalLM.from_pretrained(tiny.policy)
    lora = get_peft_model(
        copy.deepcopy(base), LoraConfig(r=4, lora_alpha=16, target_modules=ALL_LINEAR)
    )
    input_ids = torch.tensor([[1, 357, 201, 24, 265, 223, 18, 33, 2]]) % base.config.vocab_size
    with torch.no_grad():
        assert torch.equal(lora(input_ids=input_ids).logits, base(input_ids=input_ids).logits)
    assert all(torch.count_nonzero(p) == 0 for n, p in lora.named_parameters() if "lora_B" in n)
    trainable = sum(p.numel() for p in lora.parameters() if p.requires_grad)
    assert trainable == lora_params_by_hand(base.config, r=4)
    assert all("lora_" in n for n, p in lora.named_parameters() if p.requires_grad)
    # With B = 0, dL/dA = (alpha / r) * B^T (...) = 0: only B moves at the first step.
    lora(input_ids=input_ids, labels=input_ids).loss.backward()
    grads = {n: p.grad for n, p in lora.named_parameters() if p.requires_grad}
    assert all(torch.count_nonzero(g) == 0 for n, g in grads.items() if "lora_A" in n)
    assert all(torch.count_nonzero(g) > 0 for n, g in grads.items() if "lora_B" in n)


@pytest.mark.parametrize("use_rslora", [False, True], ids=["sft_lora", "sft_rslora"])
def test_sft_lora_forward_is_w0_plus_scaled_ba(tiny, use_rslora):
    r, alpha = 4, 16
    base = AutoModelForCausalLM.from_pretrained(tiny.policy)
    lora = get_peft_model(
        base, LoraConfig(r=r, lora_alpha=alpha, target_modules=["q_proj"], use_rslora=use_rslora)
    )
    layer = lora.base_model.model.model.layers[0].self_attn.q_proj
    torch.manual_seed(0)
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_()  # B starts at 0 (no effect): fill it
    scale = alpha / math.sqrt(r) if use_rslora else alpha / r
    assert layer.scaling["default"] == pytest.approx(scale)

    x = torch.randn(3, base.config.hidden_size)
    w0, b0 = layer.base_layer.weight, layer.base_layer.bias
    a, b = layer.lora_A["default"].weight, layer.lora_B["default"].weight  # (r, d_in), (d_out, r)
    with torch.no_grad():
        expected = x @ (w0 + scale * b @ a).T + b0
        torch.testing.assert_close(layer(x), expected, atol=1e-5, rtol=1e-5)


def test_sft_trainer_with_peft_config_trains_only_the_adapters(tiny, tmp_path):
    rows = read_rows(tiny, "prompt_completion", 4)
    trainer = SFTTrainer(
        model=str(tiny.policy),
        args=SFTConfig(
            output_dir=str(tmp_path),
            use_cpu=True,
            bf16=False,
            report_to="none",
            max_length=64,
            gradient_checkpointing=False,
        ),
        train_dataset=Dataset.from_list(rows),
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
        peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=ALL_LINEAR),
    )
    config = trainer.model.get_base_model().config
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    assert trainable == lora_params_by_hand(config, r=8)
