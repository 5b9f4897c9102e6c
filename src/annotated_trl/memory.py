"""Estimate the memory one training process needs, before renting the GPU.

The estimate models what TRL 1.16 allocates, part by part, each per GPU:

- **weights**: the policy's, in the precision it is loaded in (TRL loads float32 by default);
- **extra models**: the frozen reference, reward model or teacher, and the trained value model;
- **gradients**: one per trainable parameter, in the parameter's dtype;
- **optimizer state**: AdamW's two moments per trainable parameter, in the parameter's dtype;
- **activations**: what each layer keeps for the backward pass;
- **head**: the loss's vocabulary-sized tensors. SFT, DPO, KTO, GRPO and RLOO score tokens
  through TRL's fused LM head (tiles of at most 4,096 tokens x 32,768 vocabulary entries, never
  the full logits), Distillation through a chunked divergence (a student and a teacher tile);
  reward models and PRMs have a one- or two-output head, nothing vocabulary-sized; GKD and the
  trainers that build full logits (BCO, ORPO, CPO, Online DPO, XPO, Nash-MD, PPO) hold several
  (tokens x vocabulary) tensors at once. The head weight's gradient is built here too;
- **embedding gradient**: with tied embeddings, the embedding's backward builds a second dense
  vocabulary x hidden gradient and adds it to the head's;
- **KV cache**: generation's keys and values, for the methods that sample completions.

The peak is the resident part (weights, extra models, optimizer state) plus the largest of
three moments of a step: the start of the backward pass (every activation saved, the head's
tensors), its end (every gradient, the embedding's second gradient) and generation (the KV
cache; the previous step's gradients are freed by then). CUDA's context and the allocator's
fragmentation come on top. `benchmarks/memory_check.py` measures real TRL runs on CPU against it.

    python -m annotated_trl.memory     # prints the tables shown on the site's memory page
"""

import json
from dataclasses import dataclass, fields
from pathlib import Path

from annotated_trl.methods import METHODS

GIB = 2**30

# Bytes per element of each weight dtype (`--dtype`).
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class Precision:
    """Bytes per weight (also per gradient and AdamW moment: torch keeps them in the parameter's
    dtype) and per activation value."""

    weights: int
    activations: int


PRECISIONS = {
    # TRL's default: float32 weights (`dtype` defaults to "float32"), bf16 autocast (`bf16=True`).
    "bf16-autocast": Precision(weights=4, activations=2),
    # Float32 throughout (`bf16=False`), as on CPU.
    "float32": Precision(weights=4, activations=4),
    # `--dtype bfloat16`: weights, gradients and AdamW moments all in bf16.
    "bfloat16": Precision(weights=2, activations=2),
}


def precision_for(dtype: str = "float32", bf16: bool = True) -> str:
    """The `PRECISIONS` key for TRL's `--dtype` and `--bf16` settings."""
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    if DTYPE_BYTES[dtype] == 2:
        return "bfloat16"
    return "bf16-autocast" if bf16 else "float32"


# Optimizer state per trainable parameter, in bytes, as a function of the parameter's own size.
# torch's AdamW keeps its two moments in the parameter's dtype (`zeros_like(param)`);
# bitsandbytes' 8-bit AdamW keeps two one-byte moments (its small block-wise scales are ignored).
OPTIMIZER_STATE_BYTES = {
    "adamw_torch": lambda param_bytes: 2 * param_bytes,
    "adamw_8bit": lambda param_bytes: 2,
    "sgd": lambda param_bytes: 0,
}

# PEFT keeps LoRA adapters in float32 even on a 16-bit base model (`autocast_adapter_dtype`).
LORA_BYTES = 4
# DeepSpeed trains 16-bit weights against a float32 master copy and float32 Adam moments.
ZERO_MASTER_BYTES = 4
FLOAT32 = 4

# trl/kernels/chunked_logprob.py and chunked_divergence.py: the projection runs on tiles of at
# most TOKEN_CHUNK_SIZE tokens x VOCAB_CHUNK_SIZE vocabulary entries (trl/trainer/utils.py passes
# 32,768 as the fused head's `chunk_size`).
TOKEN_CHUNK_SIZE = 4096
VOCAB_CHUNK_SIZE = 32768
# Without Triton (CPU), the kernels' torch fallbacks hold several float32 tile-sized temporaries,
# counted from their `_backward_tile`: the fused head's keeps the buffer, y, z, log p, p and the
# gradient, plus the target mask and the two factors of its update (8 tiles and a one-byte mask:
# 9); the divergence's generalised-JSD branch keeps both buffers, y, z_s, z_t, log p_s, log p_t,
# p_s and log m, plus its update's three factors (13).
FUSED_CPU_TILES = 9
DIVERGENCE_CPU_TILES = 13


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only transformer (Llama/Qwen2 style: SwiGLU MLP, grouped KV heads).

    The names match the model's `config.json`; `key_value_size` is
    `num_key_value_heads * head_dim`.
    """

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    key_value_size: int
    vocab_size: int
    tie_word_embeddings: bool
    attention_bias: bool = True  # Qwen2 has q/k/v biases; Llama has none

    @classmethod
    def from_config(cls, config: dict) -> "ModelShape":
        """The sizes in a `config.json` (a multimodal model's `text_config` if it has one)."""
        config = config.get("text_config", config)
        heads = config["num_attention_heads"]
        head_dim = config.get("head_dim") or config["hidden_size"] // heads
        return cls(
            hidden_size=config["hidden_size"],
            intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"],
            key_value_size=config.get("num_key_value_heads", heads) * head_dim,
            vocab_size=config["vocab_size"],
            tie_word_embeddings=bool(config.get("tie_word_embeddings", False)),
            # Qwen2's config has no such flag: its q/k/v projections always have biases.
            attention_bias=config.get("attention_bias", config.get("model_type") == "qwen2"),
        )

    def qwen2_config(self, heads: int, **extra):
        """A transformers Qwen2Config of this shape with `heads` attention heads (random weights
        of real architecture, for checking the counts against a built model)."""
        from transformers import Qwen2Config

        return Qwen2Config(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=heads,
            num_key_value_heads=self.key_value_size // (self.hidden_size // heads),
            vocab_size=self.vocab_size,
            tie_word_embeddings=self.tie_word_embeddings,
            **extra,
        )

    @property
    def layer_params(self) -> int:
        h, i, kv = self.hidden_size, self.intermediate_size, self.key_value_size
        attention = h * h + 2 * h * kv + h * h  # q, k, v, o projections
        if self.attention_bias:
            attention += h + 2 * kv
        return attention + 3 * h * i + 2 * h  # gate, up, down; two RMSNorm weights

    @property
    def body_params(self) -> int:
        """Embedding, layers and final norm: everything but the output head."""
        return (
            self.vocab_size * self.hidden_size
            + self.num_hidden_layers * self.layer_params
            + self.hidden_size
        )

    @property
    def params(self) -> int:
        """Parameters of the causal LM (the policy, reference or teacher)."""
        head = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self.body_params + head

    @property
    def scorer_params(self) -> int:
        """Parameters of the same body with a one-output score head (reward or value model)."""
        return self.body_params + self.hidden_size

    def lora_params(self, rank: int, targets: tuple[str, ...]) -> int:
        """Adapter parameters: rank * (fan_in + fan_out) for every targeted projection."""
        h, i, kv = self.hidden_size, self.intermediate_size, self.key_value_size
        fans = {
            "q_proj": (h, h),
            "k_proj": (h, kv),
            "v_proj": (h, kv),
            "o_proj": (h, h),
            "gate_proj": (h, i),
            "up_proj": (h, i),
            "down_proj": (i, h),
        }
        per_layer = sum(rank * sum(fans[name]) for name in targets)
        return self.num_hidden_layers * per_layer


# What each method holds besides the policy (annotated_trl.methods, with the defaults it assumes).
METHOD_MODELS = {m.key: m.holds for m in METHODS}

# How each method turns hidden states into its loss, read from its trainer (TRL 1.16; our ports):
# "fused": `add_fused_lm_head`, per-token log-probabilities on tiles, no logits;
# "divergence": Distillation's `_chunked_divergence_loss`, student and teacher tiles, no logits;
# "score": a one-output (reward) or two-output (PRM) head, nothing vocabulary-sized;
# an int: that many (tokens x vocabulary) tensors alive at once, at the loss's peak.
LOSS_HEADS: dict[str, str | int] = {
    "sft": "fused",
    "distillation": "divergence",
    # GKD's generalized_jsd_loss (default beta 0.5), when it adds its two KL terms: student and
    # teacher logits (2), their temperature-scaled copies (2) and log-softmaxes (2), the stacked
    # pair (2) and their mixture (1), exp(teacher) and the teacher's KL term (2), exp(student),
    # the student's difference and KL term (3), the two weighted terms and their sum (3): 17
    # (benchmarks/memory_check.py measures 17.0 at that `aten::add`).
    "gkd": 17,
    # GOLD at its defaults (use_uld_loss False) runs its own copy of the same generalized_jsd_loss
    # on the full logits: GKD's count (read from the code, not measured). ULD sorts probabilities
    # per sequence instead, in a Python loop over the batch.
    "gold": 17,
    # SDFT's default top-k loss (read from the code, not measured): the student's and the
    # teacher's temperature-scaled logits (2), the exp inside each log-sum-exp (1 at a time), and
    # in backward the student logits' gradient and the log-sum-exp's softmax (2).
    "sdft": 5,
    # Server distillation (read from the code, not measured): the student's full logits, their
    # temperature-scaled copy and log_softmax, and in backward the log_softmax's gradient; the
    # teacher's top-k from the server is vocabulary-free.
    "server_distillation": 4,
    "reward": "score",
    "prm": "score",
    "dpo": "fused",
    "kto": "fused",
    # Read from the code, not measured. ORPO, CPO, BCO: full logits, `selective_log_softmax` row
    # by row, and in backward the logits' gradient from the gather plus the stacked per-row
    # log-sum-exp gradients.
    "orpo": 4,
    "cpo": 4,
    # TPO: as CPO, over 3 sequences per row (the gold answers' NLL adds a copy of their rows).
    "tpo": 4,
    "bco": 4,
    # Online DPO: the logits, their full `log_softmax`, and a gradient for each.
    "online_dpo": 4,
    # The ports' online pair (XPO, Nash-MD) and PPO: logits + selective_log_softmax, as above.
    "xpo": 4,
    "nash_md": 4,
    "grpo": "fused",
    "grpo_tools": "fused",  # GRPOTrainer: the same loss head; tool turns only lengthen sequences
    "rloo": "fused",
    # A*-PO's `_get_sequence_logps`: the logits and selective_log_softmax, as the ports'.
    "a2po": 4,
    # SDPO (read from the code, not measured): the student's and the teacher's completion logits,
    # scaled by the temperature, and selective_log_softmax on each (the default sampled_token
    # loss); full_logits and topk_logits add log-softmaxes of both.
    "sdpo": 4,
    # Async GRPO: `add_fused_lm_head`, tiles of the labelled positions only (read from the code;
    # not measured: the trainer needs a GPU and a vLLM server).
    "async_grpo": "fused",
    "ppo": 4,
}


def relative_compute(method: str) -> float:
    """Training compute per row relative to SFT, generation excluded: a rule of thumb.

    A forward and backward pass through a trained model counts 3 (the backward costs about two
    forwards), a forward through a frozen one 1, per sequence, all models taken as the policy's
    size. Generation, usually the larger cost of an online method, is not counted.
    """
    m = METHOD_MODELS[method]
    trained = 1 + m.value
    frozen = m.reference + m.reward + m.teacher
    return m.sequences_per_row * (3 * trained + frozen) / 3


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per GPU, by part."""

    weights: int  # the policy's (with LoRA: the frozen base plus the adapters)
    extra_models: int  # reference, reward model, teacher, value model
    gradients: int
    optimizer: int
    activations: int
    head: int  # the loss's vocabulary-sized tensors and the head weight's gradient being built
    embedding_gradient: int  # tied embeddings: the second dense gradient added into the head's
    kv_cache: int  # generation's keys and values (online methods)

    @property
    def total(self) -> int:
        """The peak: the resident parts plus the largest of three moments of a training step."""
        backward_start = self.activations + self.head  # all activations still saved
        backward_end = self.gradients + self.embedding_gradient  # all gradients built
        generation = self.kv_cache  # before the loss, once the last step's gradients are freed
        resident = self.weights + self.extra_models + self.optimizer
        return resident + max(backward_start, backward_end, generation)

    def gib(self) -> float:
        return self.total / GIB

    def breakdown(self) -> str:
        """One line per part and the total, in GiB."""
        rows = [(f.name.replace("_", " "), getattr(self, f.name)) for f in fields(self)]
        width = max(len(name) for name, _ in rows)
        lines = [f"{name:<{width}}  {nbytes / GIB:8.2f} GiB" for name, nbytes in rows]
        peak = (
            "weights + extra models + optimizer + the largest of (activations + head), "
            "(gradients + embedding gradient) and (KV cache)"
        )
        return "\n".join([*lines, f"{'total':<{width}}  {self.gib():8.2f} GiB  = {peak}"])


def _shard(nbytes: float, sharded: bool, num_gpus: int) -> float:
    return nbytes / num_gpus if sharded else nbytes


def activation_bytes(
    shape: ModelShape,
    sequences: int,
    seq_len: int,
    element_bytes: int,
    gradient_checkpointing: bool,
) -> int:
    """What one forward pass with gradients keeps for the backward pass, the head excluded.

    Per token and layer a Qwen2/Llama block saves about `8h + 2kv + 4i` values: each RMSNorm
    its input, normalised input and output (3h, twice), attention q and output (2h) and k and v
    (2kv), and the MLP's gate, up, silu(gate) and their product (4i). With gradient
    checkpointing only each layer's input (`h` values) is kept, plus one layer's activations
    while it is recomputed. The final norm keeps 3h more per token.
    """
    h, i, kv = shape.hidden_size, shape.intermediate_size, shape.key_value_size
    tokens = sequences * seq_len
    per_layer = tokens * (8 * h + 2 * kv + 4 * i) * element_bytes
    if gradient_checkpointing:
        layers = shape.num_hidden_layers * tokens * h * element_bytes + per_layer
    else:
        layers = shape.num_hidden_layers * per_layer
    return layers + tokens * 3 * h * element_bytes


def tile_bytes(tokens: int, vocab: int, element_bytes: int) -> int:
    """One projection tile of the chunked kernels: at most 4,096 tokens x 32,768 entries."""
    return min(tokens, TOKEN_CHUNK_SIZE) * min(vocab, VOCAB_CHUNK_SIZE) * element_bytes


def head_bytes(
    shape: ModelShape,
    method: str,
    tokens: int,
    precision: Precision,
    trains_head: bool,
    device: str,
) -> int:
    """The loss's vocabulary-sized tensors when the backward pass reaches the head.

    Fused head (GPU): one tile in the compute dtype, and the head weight's gradient accumulated
    in float32 (`grad_weight`, V x h), then cast to the weights' dtype beside it. Chunked
    divergence: a float32 student and a teacher tile, the same gradient. Without Triton (CPU)
    the torch fallbacks hold several float32 tiles at once. Full logits: the larger of the
    loss's `LOSS_HEADS[method]` float32 (tokens x V) tensors, alive together in its forward, and
    the moment the backward reaches `lm_head`: logits and their gradient beside the new V x h
    weight gradient.
    """
    kind = LOSS_HEADS[method]
    vocab, h = shape.vocab_size, shape.hidden_size
    if kind == "score":
        return 0
    if isinstance(kind, int):
        logits = tokens * vocab * FLOAT32
        return max(kind * logits, 2 * logits + trains_head * vocab * h * precision.weights)
    if device == "cpu":
        tiles = FUSED_CPU_TILES if kind == "fused" else DIVERGENCE_CPU_TILES
        working = tiles * tile_bytes(tokens, vocab, FLOAT32)
    elif kind == "fused":
        working = tile_bytes(tokens, vocab, precision.activations)
    else:
        working = 2 * tile_bytes(tokens, vocab, FLOAT32)
    cast = precision.weights if precision.weights < FLOAT32 else 0
    return working + trains_head * vocab * h * (FLOAT32 + cast)


def embedding_gradient_bytes(shape: ModelShape, method: str, trains_head: bool, weight_bytes):
    """Tied embeddings: the embedding's backward builds a dense V x h gradient of its own, which
    autograd adds to the head's. The fused kernels' gradient is added to in place; a plain
    `nn.Linear` head's is a transposed view, so the sum is a third V x h tensor (measured).
    Untied, it is simply that weight's gradient; a score head's model has no LM head to tie."""
    kind = LOSS_HEADS[method]
    if not (trains_head and shape.tie_word_embeddings) or kind == "score":
        return 0
    copies = 2 if isinstance(kind, int) else 1
    return copies * shape.vocab_size * shape.hidden_size * weight_bytes


def kv_cache_bytes(shape: ModelShape, sequences: int, seq_len: int, element_bytes: int) -> int:
    """Keys and values of every layer for every sequence being generated, at full length."""
    return 2 * shape.num_hidden_layers * shape.key_value_size * sequences * seq_len * element_bytes


def estimate(
    shape: ModelShape,
    method: str = "sft",
    *,
    precision: str = "bf16-autocast",
    frozen_dtype: str | None = None,
    optimizer: str = "adamw_torch",
    lora_rank: int | None = None,
    lora_targets: tuple[str, ...] = ("q_proj", "v_proj"),
    gradient_checkpointing: bool = True,
    zero_stage: int = 0,
    num_gpus: int = 1,
    seq_len: int = 1024,
    batch_size: int = 1,
    teacher: ModelShape | None = None,
    reward_model: ModelShape | None = None,
    device: str = "cuda",
) -> MemoryEstimate:
    """Estimate one GPU's training memory for `method` on a model of `shape`.

    Args:
        shape: The policy's sizes. Reference, reward and value models are taken to share the
            policy's body (a reward or value model has a one-output head instead of the LM head).
        method: A key of `METHOD_MODELS` ("sft", "dpo", "ppo", ...): which models are held.
        precision: A key of `PRECISIONS`. "bf16-autocast" is TRL's default (float32 weights,
            `bf16=True`): 16 bytes per trained parameter with AdamW. "float32" is `bf16=False`.
            "bfloat16" is `--dtype bfloat16`: 8 bytes per parameter, but AdamW updates smaller
            than bf16's resolution are lost (see the memory page). `precision_for` maps TRL's
            `--dtype`/`--bf16` to a key.
        frozen_dtype: The dtype of the frozen models (reference, reward, teacher), if loaded
            differently from the policy; by default TRL loads them like the policy.
        optimizer: "adamw_torch" (two moments in the parameter's dtype), "adamw_8bit" or "sgd".
        lora_rank: With LoRA, the adapter rank: only the adapters (float32, as PEFT keeps them)
            get gradients and optimizer state, and the reference is the base model with the
            adapters switched off, so it costs nothing. The value model stays fully trained.
        lora_targets: The projections LoRA adapts. The default is PEFT's for Qwen2 and Llama,
            which TRL uses when `--lora_target_modules` is not given.
        gradient_checkpointing: Keep only each layer's input and recompute the rest (TRL's
            configs default to True).
        zero_stage: DeepSpeed ZeRO stage over `num_gpus` GPUs. 1 shards the optimizer state,
            2 also the gradients, 3 also the weights of every model. With 16-bit weights,
            DeepSpeed keeps a float32 master copy and float32 moments (12 bytes per trainable
            parameter, sharded from stage 1). FSDP's FULL_SHARD is comparable to stage 3.
        num_gpus: Data-parallel processes sharing the shards. Without ZeRO every GPU holds all.
        seq_len: Tokens per sequence (prompt + completion).
        batch_size: Rows (or prompts, or completions for GRPO/RLOO) per GPU per micro-batch;
            online methods generate for as many sequences at once.
        teacher: The teacher's sizes, for GKD and Distillation (default: the policy's).
        reward_model: The reward model's sizes (default: the policy's). Given for a method that
            can use reward functions instead (GRPO, RLOO, Online DPO), it is counted too.
        device: "cuda" (TRL's Triton kernels: one tile, only the scored tokens) or "cpu" (their
            torch fallback, which `benchmarks/memory_check.py` measures).

    Returns:
        Bytes per GPU, by part; `.total` is the peak.
    """
    if method not in METHOD_MODELS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHOD_MODELS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {sorted(PRECISIONS)}")
    if frozen_dtype is not None and frozen_dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {frozen_dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    if optimizer not in OPTIMIZER_STATE_BYTES:
        expected = sorted(OPTIMIZER_STATE_BYTES)
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {expected}")
    if zero_stage not in (0, 1, 2, 3) or num_gpus < 1:
        raise ValueError("zero_stage must be 0-3 and num_gpus at least 1")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"unknown device {device!r}; expected 'cuda' or 'cpu'")
    models = METHOD_MODELS[method]
    p = PRECISIONS[precision]
    if zero_stage and precision == "bf16-autocast":
        # DeepSpeed's bf16 mode casts every model to bf16 and keeps the float32 copy itself.
        p = PRECISIONS["bfloat16"]
    frozen_bytes = DTYPE_BYTES[frozen_dtype] if frozen_dtype else p.weights
    reward_shape = reward_model or shape

    # A reward model or PRM is a score head on the body (one or two outputs), not an LM head.
    outputs = {"reward": 1, "prm": 2}.get(method)
    policy_params = shape.body_params + outputs * shape.hidden_size if outputs else shape.params
    # The policy's parameters: (count, bytes per element) trained, and a frozen base with LoRA.
    if lora_rank:
        policy_frozen = policy_params * p.weights
        trainable = [(shape.lora_params(lora_rank, lora_targets), LORA_BYTES)]
    else:
        policy_frozen = 0
        trainable = [(policy_params, p.weights)]
    extra_frozen = 0
    if models.reference and not lora_rank:
        extra_frozen += shape.params
    if models.reward or reward_model is not None:
        extra_frozen += reward_shape.scorer_params
    if models.teacher:
        extra_frozen += (teacher or shape).params
    value = [(reward_shape.scorer_params, p.weights)] if models.value else []

    # DeepSpeed's master weights and float32 moments replace the optimizer's own state.
    master = zero_stage > 0 and p.weights < FLOAT32

    def state_bytes(param_bytes: int) -> int:
        if master and param_bytes < FLOAT32:
            return ZERO_MASTER_BYTES + OPTIMIZER_STATE_BYTES[optimizer](FLOAT32)
        return OPTIMIZER_STATE_BYTES[optimizer](param_bytes)

    trained = trainable + value
    weights = policy_frozen + sum(n * b for n, b in trainable)
    extra = extra_frozen * frozen_bytes + sum(n * b for n, b in value)
    gradients = sum(n * b for n, b in trained)
    optimizer_state = sum(n * state_bytes(b) for n, b in trained)

    sequences = batch_size * models.sequences_per_row
    tokens = sequences * seq_len
    activations = activation_bytes(shape, sequences, seq_len, p.activations, gradient_checkpointing)
    if models.value:  # the value model's forward keeps activations too (a one-output head)
        activations += activation_bytes(
            reward_shape, sequences, seq_len, p.activations, gradient_checkpointing
        )
    trains_head = not lora_rank
    head = head_bytes(shape, method, tokens, p, trains_head, device)
    embedding_gradient = embedding_gradient_bytes(shape, method, trains_head, p.weights)
    generates_here = models.generates and not models.samples_on_server
    kv_cache = kv_cache_bytes(shape, sequences, seq_len, p.activations) if generates_here else 0

    return MemoryEstimate(
        weights=round(_shard(weights, zero_stage >= 3, num_gpus)),
        extra_models=round(_shard(extra, zero_stage >= 3, num_gpus)),
        gradients=round(_shard(gradients, zero_stage >= 2, num_gpus)),
        optimizer=round(_shard(optimizer_state, zero_stage >= 1, num_gpus)),
        activations=activations,
        head=head,
        embedding_gradient=round(_shard(embedding_gradient, zero_stage >= 2, num_gpus)),
        kv_cache=kv_cache,
    )


# --- The tables on the site's memory page ----------------------------------------------------

# Sizes from each model's config.json on the Hugging Face Hub.
REFERENCE_MODELS = {
    "Qwen2.5-0.5B": ModelShape(896, 4864, 24, 2 * 64, 151936, tie_word_embeddings=True),
    "Qwen2.5-1.5B": ModelShape(1536, 8960, 28, 2 * 128, 151936, tie_word_embeddings=True),
    "Qwen2.5-7B": ModelShape(3584, 18944, 28, 4 * 128, 152064, tie_word_embeddings=False),
    "Llama-3.1-70B": ModelShape(
        8192, 28672, 80, 8 * 128, 128256, tie_word_embeddings=False, attention_bias=False
    ),
}
TABLE_METHODS = ("sft", "dpo", "grpo", "ppo")
# (label, keyword arguments of `estimate`) for each row of the table.
# With LoRA the base is frozen, so a bf16 base loses no update (the adapters stay float32).
LORA_BF16 = {"lora_rank": 16, "precision": "bfloat16"}
SETUPS = (
    ("full, TRL's default, 1 GPU", {}),
    ("full, bf16 weights, 1 GPU", {"precision": "bfloat16"}),
    ("LoRA r=16, bf16 base, 1 GPU", LORA_BF16),
    ("full, ZeRO-3 on 8 GPUs", {"zero_stage": 3, "num_gpus": 8}),
)


def markdown_table(seq_len: int = 1024, batch_size: int = 1) -> str:
    """GiB per GPU for each reference model, setup and method (AdamW, gradient checkpointing on,
    TRL's default precision unless the setup says otherwise)."""
    header = "| Model | Parameters | Setup | " + " | ".join(m.upper() for m in TABLE_METHODS)
    lines = [header + " |", "|---|---|---|" + "---:|" * len(TABLE_METHODS)]
    for name, shape in REFERENCE_MODELS.items():
        for label, kwargs in SETUPS:
            cells = [
                f"{estimate(shape, m, seq_len=seq_len, batch_size=batch_size, **kwargs).gib():.1f}"
                for m in TABLE_METHODS
            ]
            lines.append(f"| {name} | {shape.params / 1e9:.2f} B | {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def largest_fitting(method: str, budget: float, **kwargs) -> str:
    """The largest reference model whose estimate fits `budget` bytes, with its GiB, or "none"."""
    fitting = [
        (name, estimate(shape, method, **kwargs).gib())
        for name, shape in REFERENCE_MODELS.items()
        if estimate(shape, method, **kwargs).total <= budget
    ]
    return f"{fitting[-1][0]} ({fitting[-1][1]:.1f} GiB)" if fitting else "none"


FIT_SETUPS = (
    ("Full, TRL's default", {}),
    ("Full, bf16 weights", {"precision": "bfloat16"}),
    ("LoRA r=16, bf16 base", LORA_BF16),
)


def fits_table(gpu_gib: float = 24, usable: float = 0.9) -> str:
    """The largest reference model each method fits on one GPU, for each of `FIT_SETUPS`.

    Only `usable` of the GPU counts: the CUDA context, allocator fragmentation and temporary
    buffers are not in the estimate.
    """
    budget = gpu_gib * usable * GIB
    lines = ["| Method | " + " | ".join(label for label, _ in FIT_SETUPS) + " |"]
    lines.append("|---|" + "---|" * len(FIT_SETUPS))
    for method in METHOD_MODELS:
        cells = [largest_fitting(method, budget, **kwargs) for _, kwargs in FIT_SETUPS]
        lines.append(f"| `{method}` | {' | '.join(cells)} |")
    return "\n".join(lines)


def models_table() -> str:
    """Which models each method holds (`METHOD_MODELS`) and how its loss meets the vocabulary."""
    mark = {True: "✓", False: "—"}
    heads = {
        "fused": "fused head: tiles",
        "divergence": "chunked: 2 tiles",
        "score": "score head: none",
    }
    lines = [
        "| Method | Reference | Reward model | Value model | Teacher | Sequences per row "
        "| Vocabulary-sized tensors |",
        "|---|:-:|:-:|:-:|:-:|:-:|---|",
    ]
    for key, m in METHOD_MODELS.items():
        cells = [mark[m.reference], mark[m.reward], mark[m.value], mark[m.teacher]]
        kind = LOSS_HEADS[key]
        head = heads[kind] if isinstance(kind, str) else f"full logits: {kind} × (tokens × V)"
        lines.append(f"| `{key}` | {' | '.join(cells)} | {m.sequences_per_row} | {head} |")
    return "\n".join(lines)


# --- Measured on CPU: benchmarks/memory_check.py ------------------------------------------------

MEASURED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "memory_check.json"


def cpu_check_estimate(shape: ModelShape, method: str, sequences: int, seq_len: int):
    """The estimate for one of `benchmarks/memory_check.py`'s runs: float32 throughout, no
    gradient checkpointing, the kernels' CPU fallbacks, `sequences` rows of `seq_len` tokens in
    the forward that carries gradients."""
    return estimate(
        shape,
        method,
        precision="float32",
        gradient_checkpointing=False,
        seq_len=seq_len,
        batch_size=sequences // METHOD_MODELS[method].sequences_per_row,
        device="cpu",
    )


def measured_table(path: Path = MEASURED) -> str:
    """Measured peak vs this module's estimate for each run recorded by memory_check.py."""
    results = json.loads(path.read_text(encoding="utf-8"))
    shape = ModelShape(**results["shape"])
    lines = [
        "| Method | Trainer | Batch (sequences × tokens) | Measured | Estimated | Error |",
        "|---|---|---|---:|---:|---:|",
    ]
    for run in results["runs"]:
        measured = run["measured_bytes"]
        estimated = cpu_check_estimate(shape, run["method"], run["sequences"], run["seq_len"])
        lines.append(
            f"| `{run['method']}` | {run['trainer']} | {run['sequences']} × {run['seq_len']} "
            f"| {measured / GIB:.3f} GiB | {estimated.gib():.3f} GiB "
            f"| {estimated.total / measured - 1:+.2%} |"
        )
    return "\n".join(lines)


# --- `annotated-trl memory` ------------------------------------------------------------------


def load_shape(model: str) -> ModelShape:
    """A `REFERENCE_MODELS` name, a config.json path, or a local model folder holding one."""
    if model in REFERENCE_MODELS:
        return REFERENCE_MODELS[model]
    path = Path(model)
    config = path / "config.json" if path.is_dir() else path
    if not config.is_file():
        names = ", ".join(REFERENCE_MODELS)
        raise ValueError(f"{model}: no config.json there, and not one of the presets ({names})")
    try:
        return ModelShape.from_config(json.loads(config.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, KeyError) as error:
        problem = f"{type(error).__name__}: {error}"
        raise ValueError(f"{config}: not a decoder config.json ({problem})") from error


def report(model: str, method: str, **kwargs) -> str:
    """What `annotated-trl memory` prints: the model's size, the set-up, the breakdown."""
    shape = load_shape(model)
    result = estimate(shape, method, **kwargs)
    settings = ", ".join(f"{name}={value}" for name, value in kwargs.items())
    return "\n".join(
        [
            f"{model}: {shape.params / 1e9:.2f} B parameters; {method}; {settings}",
            result.breakdown(),
            "An estimate per GPU; CUDA's context and fragmentation come on top.",
        ]
    )


if __name__ == "__main__":
    print(models_table())
    print()
    print(measured_table())
    print()
    print(markdown_table())
    print()
    print(fits_table())
