"""Estimate the GPU memory one training process needs, before renting the GPU.

The estimate adds four parts, each per GPU:

- **weights**: the policy, plus every other model the method keeps in memory (a frozen reference,
  a frozen reward model, a trainable value model, a frozen teacher);
- **gradients**: one per trainable parameter;
- **optimizer state**: AdamW keeps two moments per trainable parameter;
- **activations**: what the forward pass keeps for the backward pass, plus the logits.

It is arithmetic, not a measurement: CUDA's context, the allocator's fragmentation, temporary
buffers and generation's KV cache come on top. The site's memory page says what is checked by
tests and what is not.

    python -m annotated_trl.memory     # prints the tables shown on the site's memory page
"""

from dataclasses import dataclass

from annotated_trl.methods import METHODS

GIB = 2**30

# Bytes per element of each weight dtype.
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

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
            + (self.hidden_size)
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

    weights: int
    gradients: int
    optimizer: int
    activations: int

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations

    def gib(self) -> float:
        return self.total / GIB


def _shard(nbytes: float, sharded: bool, num_gpus: int) -> float:
    return nbytes / num_gpus if sharded else nbytes


def activation_bytes(
    shape: ModelShape,
    sequences: int,
    seq_len: int,
    element_bytes: int,
    gradient_checkpointing: bool,
) -> int:
    """What one forward pass with gradients keeps for the backward pass.

    Per token and layer, a SwiGLU block with memory-efficient attention (SDPA/flash: no
    seq_len x seq_len matrix is kept) saves about `6h + 2kv + 4i` values: the two norm inputs
    and outputs, q and k and v, the attention output, and gate, up, silu(gate) and their product.
    With gradient checkpointing only each layer's input (`h` values) is kept, and one layer's
    activations exist at a time while it is recomputed. The logits come on top: `vocab` values
    in the compute dtype plus a float32 copy for the loss.
    """
    h, i, kv = shape.hidden_size, shape.intermediate_size, shape.key_value_size
    tokens = sequences * seq_len
    per_layer = tokens * (6 * h + 2 * kv + 4 * i) * element_bytes
    if gradient_checkpointing:
        layers = shape.num_hidden_layers * tokens * h * element_bytes + per_layer
    else:
        layers = shape.num_hidden_layers * per_layer
    logits = tokens * shape.vocab_size * (element_bytes + 4)
    return layers + logits


def estimate(
    shape: ModelShape,
    method: str = "sft",
    *,
    dtype: str = "bfloat16",
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
) -> MemoryEstimate:
    """Estimate one GPU's training memory for `method` on a model of `shape`.

    Args:
        shape: The policy's sizes. Reference, reward and value models are taken to share the
            policy's body (a reward or value model has a one-output head instead of the LM head).
        method: A key of `METHOD_MODELS` ("sft", "dpo", "ppo", ...): which models are held.
        dtype: The weights' dtype, as loaded (`--dtype bfloat16`). Activations are kept in it.
        optimizer: "adamw_torch" (two moments in the parameter's dtype), "adamw_8bit" or "sgd".
        lora_rank: With LoRA, the adapter rank: only the adapters (float32, as PEFT keeps them)
            get gradients and optimizer state, and the reference is the base model with the
            adapters switched off, so it costs nothing. The value model stays fully trained.
        lora_targets: The projections LoRA adapts. The default is PEFT's for Qwen2 and Llama,
            which TRL uses when `--lora_target_modules` is not given.
        gradient_checkpointing: Keep only each layer's input and recompute the rest.
        zero_stage: DeepSpeed ZeRO stage over `num_gpus` GPUs. 1 shards the optimizer state,
            2 also the gradients, 3 also the weights of every model. With 16-bit weights,
            DeepSpeed keeps a float32 master copy and float32 moments (12 bytes per trainable
            parameter, sharded from stage 1). FSDP's FULL_SHARD is comparable to stage 3.
        num_gpus: Data-parallel processes sharing the shards. Without ZeRO every GPU holds all.
        seq_len: Tokens per sequence (prompt + completion).
        batch_size: Rows (or prompts, or completions for GRPO/RLOO) per GPU per micro-batch.
        teacher: The teacher's sizes, for GKD and Distillation (default: the policy's).
        reward_model: The reward model's sizes (default: the policy's). Given for a method that
            can use reward functions instead (GRPO, RLOO, Online DPO), it is counted too.

    Returns:
        Bytes per GPU for weights, gradients, optimizer state and activations.
    """
    if method not in METHOD_MODELS:
        raise ValueError(f"unknown method {method!r}; expected one of {sorted(METHOD_MODELS)}")
    if dtype not in DTYPE_BYTES:
        raise ValueError(f"unknown dtype {dtype!r}; expected one of {sorted(DTYPE_BYTES)}")
    if optimizer not in OPTIMIZER_STATE_BYTES:
        expected = sorted(OPTIMIZER_STATE_BYTES)
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {expected}")
    if zero_stage not in (0, 1, 2, 3) or num_gpus < 1:
        raise ValueError("zero_stage must be 0-3 and num_gpus at least 1")
    models = METHOD_MODELS[method]
    weight_bytes = DTYPE_BYTES[dtype]
    reward_shape = reward_model or shape

    # Trainable parameters: (count, bytes per element); frozen ones: count only.
    trainable: list[tuple[int, int]] = []
    frozen = 0
    if lora_rank:
        frozen += shape.params
        trainable.append((shape.lora_params(lora_rank, lora_targets), LORA_BYTES))
    else:
        trainable.append((shape.params, weight_bytes))
        if models.reference:
            frozen += shape.params
    if models.value:
        trainable.append((reward_shape.scorer_params, weight_bytes))
    if models.reward or reward_model is not None:
        frozen += reward_shape.scorer_params
    if models.teacher:
        frozen += (teacher or shape).params

    # DeepSpeed's master weights and float32 moments replace the optimizer's own state.
    master = zero_stage > 0 and weight_bytes < 4

    def state_bytes(param_bytes: int) -> int:
        if master and param_bytes < 4:
            return ZERO_MASTER_BYTES + OPTIMIZER_STATE_BYTES[optimizer](4)
        return OPTIMIZER_STATE_BYTES[optimizer](param_bytes)

    weights = frozen * weight_bytes + sum(n * b for n, b in trainable)
    gradients = sum(n * b for n, b in trainable)
    optimizer_state = sum(n * state_bytes(b) for n, b in trainable)

    sequences = batch_size * models.sequences_per_row
    activations = activation_bytes(shape, sequences, seq_len, weight_bytes, gradient_checkpointing)
    if models.value:  # the value model's forward keeps activations too (no logits: one output)
        value_logits = sequences * seq_len * reward_shape.vocab_size * (weight_bytes + 4)
        activations += (
            activation_bytes(reward_shape, sequences, seq_len, weight_bytes, gradient_checkpointing)
            - value_logits
        )

    return MemoryEstimate(
        weights=round(_shard(weights, zero_stage >= 3, num_gpus)),
        gradients=round(_shard(gradients, zero_stage >= 2, num_gpus)),
        optimizer=round(_shard(optimizer_state, zero_stage >= 1, num_gpus)),
        activations=activations,
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
SETUPS = (
    ("full, 1 GPU", {}),
    ("LoRA r=16, 1 GPU", {"lora_rank": 16}),
    ("full, ZeRO-3 on 8 GPUs", {"zero_stage": 3, "num_gpus": 8}),
)


def markdown_table(seq_len: int = 1024, batch_size: int = 1) -> str:
    """GiB per GPU for each reference model, setup and method (bf16, AdamW, checkpointing)."""
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


def fits_table(gpu_gib: float = 24, usable: float = 0.9) -> str:
    """The largest reference model each method fits on one GPU, full and with LoRA r=16.

    Only `usable` of the GPU counts: the CUDA context, allocator fragmentation and temporary
    buffers are not in the estimate.
    """
    budget = gpu_gib * usable * GIB
    lines = ["| Method | Full fine-tuning | LoRA r=16 |", "|---|---|---|"]
    for method in METHOD_MODELS:
        cells = []
        for kwargs in ({}, {"lora_rank": 16}):
            fitting = [
                (name, estimate(shape, method, **kwargs).gib())
                for name, shape in REFERENCE_MODELS.items()
                if estimate(shape, method, **kwargs).total <= budget
            ]
            cells.append(f"{fitting[-1][0]} ({fitting[-1][1]:.1f} GiB)" if fitting else "none")
        lines.append(f"| `{method}` | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def models_table() -> str:
    """Which models each method holds, from `METHOD_MODELS`."""
    mark = {True: "✓", False: "—"}
    lines = [
        "| Method | Reference | Reward model | Value model | Teacher | Sequences per row |",
        "|---|:-:|:-:|:-:|:-:|:-:|",
    ]
    for key, m in METHOD_MODELS.items():
        cells = [mark[m.reference], mark[m.reward], mark[m.value], mark[m.teacher]]
        lines.append(f"| `{key}` | {' | '.join(cells)} | {m.sequences_per_row} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(models_table())
    print()
    print(markdown_table())
    print()
    print(fits_table())
