"""The memory estimator against hand-computed cases, real parameter counts and a real optimizer.

No GPU here: the weights/gradients/optimizer parts are checked exactly against the tensors a real
model, a real AdamW step and a real PEFT adapter allocate on CPU; the activation part is checked
against the formula worked by hand (it is an estimate, not a measurement).
"""

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from annotated_trl.memory import (
    REFERENCE_MODELS,
    ModelShape,
    activation_bytes,
    estimate,
)

pytestmark = pytest.mark.math

# hidden 4, MLP 8, 2 layers, 1 KV head of size 2, vocabulary 10, tied embeddings, q/k/v biases.
TOY = ModelShape(4, 8, 2, 2, 10, tie_word_embeddings=True)
# By hand: q 16 + k 8 + v 8 + o 16 = 48, biases 4 + 2 + 2 = 8, MLP 3 * 4 * 8 = 96, norms 8.
TOY_LAYER = 48 + 8 + 96 + 8
TOY_PARAMS = 10 * 4 + 2 * TOY_LAYER + 4  # embedding + layers + final norm (head tied)


def qwen2_config(shape: ModelShape, heads: int) -> Qwen2Config:
    return Qwen2Config(
        hidden_size=shape.hidden_size,
        intermediate_size=shape.intermediate_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=heads,
        num_key_value_heads=shape.key_value_size // (shape.hidden_size // heads),
        vocab_size=shape.vocab_size,
        tie_word_embeddings=shape.tie_word_embeddings,
    )


def test_memory_toy_parameter_count_by_hand_and_by_transformers():
    assert TOY.layer_params == TOY_LAYER == 160
    assert TOY.params == TOY_PARAMS == 364
    model = Qwen2ForCausalLM(qwen2_config(TOY, heads=2))
    assert sum(p.numel() for p in model.parameters()) == TOY.params


@pytest.mark.parametrize("name", list(REFERENCE_MODELS))
def test_memory_reference_model_sizes_match_transformers(name):
    """Built on the meta device (no memory, no download): the real class's parameter count."""
    shape = REFERENCE_MODELS[name]
    heads = {"Qwen2.5-0.5B": 14, "Qwen2.5-1.5B": 12, "Qwen2.5-7B": 28, "Llama-3.1-70B": 64}[name]
    if name.startswith("Llama"):
        config = LlamaConfig(
            hidden_size=shape.hidden_size,
            intermediate_size=shape.intermediate_size,
            num_hidden_layers=shape.num_hidden_layers,
            num_attention_heads=heads,
            num_key_value_heads=8,
            vocab_size=shape.vocab_size,
            tie_word_embeddings=False,
        )
        model_class = LlamaForCausalLM
    else:
        config, model_class = qwen2_config(shape, heads), Qwen2ForCausalLM
    with torch.device("meta"):
        model = model_class(config)
    assert sum(p.numel() for p in model.parameters()) == shape.params


P = TOY.params


def test_memory_full_fine_tuning_bf16_is_8_bytes_per_parameter():
    e = estimate(TOY, "sft", dtype="bfloat16")
    assert (e.weights, e.gradients, e.optimizer) == (2 * P, 2 * P, 4 * P)


def test_memory_full_fine_tuning_fp32_is_16_bytes_per_parameter():
    e = estimate(TOY, "sft", dtype="float32")
    assert (e.weights, e.gradients, e.optimizer) == (4 * P, 4 * P, 8 * P)


def test_memory_8bit_adam_and_sgd_state():
    assert estimate(TOY, "sft", optimizer="adamw_8bit").optimizer == 2 * P
    assert estimate(TOY, "sft", optimizer="sgd").optimizer == 0


def test_memory_lora_trains_only_float32_adapters():
    # rank 8 on q (4 -> 4) and v (4 -> 2): 8 * (8 + 6) = 112 per layer, 224 in all.
    lora = 224
    assert TOY.lora_params(8, ("q_proj", "v_proj")) == lora
    e = estimate(TOY, "sft", lora_rank=8)
    assert (e.weights, e.gradients, e.optimizer) == (2 * P + 4 * lora, 4 * lora, 8 * lora)
    # With LoRA the DPO reference is the base model with adapters off: no second copy.
    assert estimate(TOY, "dpo", lora_rank=8).weights == e.weights


def test_memory_zero_stages_shard_what_they_should():
    n = 8
    zero1 = estimate(TOY, "sft", zero_stage=1, num_gpus=n)
    zero2 = estimate(TOY, "sft", zero_stage=2, num_gpus=n)
    zero3 = estimate(TOY, "sft", zero_stage=3, num_gpus=n)
    # 16-bit weights under DeepSpeed: float32 master copy + two float32 moments = 12 bytes.
    assert (zero1.weights, zero1.gradients, zero1.optimizer) == (2 * P, 2 * P, round(12 * P / n))
    assert (zero2.weights, zero2.gradients, zero2.optimizer) == (
        2 * P,
        round(2 * P / n),
        round(12 * P / n),
    )
    assert (zero3.weights, zero3.gradients, zero3.optimizer) == (
        round(2 * P / n),
        round(2 * P / n),
        round(12 * P / n),
    )
    # Without ZeRO, more GPUs change nothing per GPU.
    assert estimate(TOY, "sft", num_gpus=n) == estimate(TOY, "sft")


def test_memory_zero3_shards_frozen_models_too():
    dpo = estimate(TOY, "dpo", zero_stage=3, num_gpus=4)
    assert dpo.weights == round(2 * (2 * P) / 4)  # policy + reference, sharded


def test_memory_models_each_method_holds():
    scorer = TOY.body_params + TOY.hidden_size  # body + one-output head
    assert estimate(TOY, "dpo").weights == 2 * (2 * P)
    assert estimate(TOY, "gkd").weights == 2 * (2 * P)  # student + teacher of the same size
    wide = ModelShape(8, 16, 2, 4, 10, tie_word_embeddings=True)
    assert estimate(TOY, "gkd", teacher=wide).weights == 2 * P + 2 * wide.params
    ppo = estimate(TOY, "ppo")
    # policy + reference + reward + trainable value; value has gradients and moments too.
    assert ppo.weights == 2 * (P + P + scorer + scorer)
    assert ppo.gradients == 2 * (P + scorer)
    assert ppo.optimizer == 4 * (P + scorer)
    # A reward model given to a reward-function method is counted.
    assert estimate(TOY, "grpo", reward_model=TOY).weights == 2 * (P + scorer)


def test_memory_activations_by_hand():
    # 2 sequences x 3 tokens = 6 tokens; bf16 (2 bytes).
    per_layer = 6 * (6 * 4 + 2 * 2 + 4 * 8) * 2  # 720
    logits = 6 * 10 * (2 + 4)  # 360
    assert activation_bytes(TOY, 2, 3, 2, gradient_checkpointing=False) == 2 * per_layer + logits
    checkpointed = 2 * 6 * 4 * 2 + per_layer + logits  # layer inputs + one layer recomputed
    assert activation_bytes(TOY, 2, 3, 2, gradient_checkpointing=True) == checkpointed
    # DPO forwards chosen and rejected: twice the sequences of SFT for the same batch size.
    sft = estimate(TOY, "sft", seq_len=3, batch_size=1, gradient_checkpointing=False)
    dpo = estimate(TOY, "dpo", seq_len=3, batch_size=1, gradient_checkpointing=False)
    assert dpo.activations == 2 * sft.activations == 2 * per_layer + logits


def test_memory_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown method"):
        estimate(TOY, "dpo2")
    with pytest.raises(ValueError, match="unknown dtype"):
        estimate(TOY, dtype="int4")
    with pytest.raises(ValueError, match="zero_stage"):
        estimate(TOY, zero_stage=4)


# --- Against real tensors: a bf16 model, a real AdamW step, a real PEFT adapter ----------------


def tensor_bytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def one_adamw_step(model) -> torch.optim.Optimizer:
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-3)
    ids = torch.tensor([[1, 2, 3, 4]])
    model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    return optimizer


def optimizer_state_bytes(optimizer) -> int:
    # `step` is a 0-dim float32 scalar per parameter: bookkeeping, not part of the estimate.
    return tensor_bytes(
        t
        for state in optimizer.state.values()
        for name, t in state.items()
        if torch.is_tensor(t) and name != "step"
    )


def test_memory_full_fine_tuning_matches_real_tensors():
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(qwen2_config(TOY, heads=2)).to(torch.bfloat16)
    optimizer = one_adamw_step(model)
    e = estimate(TOY, "sft", dtype="bfloat16")
    assert tensor_bytes(model.parameters()) == e.weights
    assert tensor_bytes(p.grad for p in model.parameters()) == e.gradients
    assert optimizer_state_bytes(optimizer) == e.optimizer


def test_memory_lora_matches_real_peft_adapter():
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(qwen2_config(TOY, heads=2)).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    optimizer = one_adamw_step(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}  # PEFT upcasts the adapters
    e = estimate(TOY, "sft", dtype="bfloat16", lora_rank=8)
    assert tensor_bytes(model.parameters()) == e.weights
    assert tensor_bytes(p.grad for p in trainable) == e.gradients
    assert optimizer_state_bytes(optimizer) == e.optimizer
