"""The memory estimator against hand-computed cases, real tensors, TRL's code and measured peaks.

The weights/gradients/optimizer parts are checked exactly against the tensors a real model, a real
AdamW step and a real PEFT adapter allocate on CPU; the head's constants against TRL's kernels;
and the whole estimate against the peak of real TRL training runs measured with PyTorch's memory
profiler (`benchmarks/memory_check.py`), within 15%.
"""

import importlib
import inspect
import json
import re
import subprocess
import sys

import pytest
import torch
from peft import LoraConfig, get_peft_model
from support.processes import REPO
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from annotated_trl import cli, memory
from annotated_trl.memory import (
    GIB,
    LOSS_HEADS,
    METHOD_MODELS,
    REFERENCE_MODELS,
    ModelShape,
    activation_bytes,
    estimate,
    head_bytes,
    precision_for,
)
from annotated_trl.methods import METHODS
from benchmarks import memory_check

pytestmark = pytest.mark.math

# hidden 4, MLP 8, 2 layers, 1 KV head of size 2, vocabulary 10, tied embeddings, q/k/v biases.
TOY = ModelShape(4, 8, 2, 2, 10, tie_word_embeddings=True)
# By hand: q 16 + k 8 + v 8 + o 16 = 48, biases 4 + 2 + 2 = 8, MLP 3 * 4 * 8 = 96, norms 8.
TOY_LAYER = 48 + 8 + 96 + 8
TOY_PARAMS = 10 * 4 + 2 * TOY_LAYER + 4  # embedding + layers + final norm (head tied)


def test_memory_toy_parameter_count_by_hand_and_by_transformers():
    assert TOY.layer_params == TOY_LAYER == 160
    assert TOY.params == TOY_PARAMS == 364
    model = Qwen2ForCausalLM(TOY.qwen2_config(2))
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
        config, model_class = shape.qwen2_config(heads), Qwen2ForCausalLM
    with torch.device("meta"):
        model = model_class(config)
    assert sum(p.numel() for p in model.parameters()) == shape.params


P = TOY.params


def test_memory_full_fine_tuning_bf16_is_8_bytes_per_parameter():
    e = estimate(TOY, "sft", precision="bfloat16")
    assert (e.weights, e.gradients, e.optimizer) == (2 * P, 2 * P, 4 * P)


@pytest.mark.parametrize("precision", ["float32", "bf16-autocast"])
def test_memory_full_fine_tuning_fp32_weights_is_16_bytes_per_parameter(precision):
    e = estimate(TOY, "sft", precision=precision)
    assert (e.weights, e.gradients, e.optimizer) == (4 * P, 4 * P, 8 * P)


def test_memory_default_precision_is_trls_float32_weights_with_bf16_autocast():
    from trl import SFTConfig

    from annotated_trl.trainers.ppo import PPOConfig  # noqa: F401  (a port's config, same base)

    args = SFTConfig(output_dir="unused", use_cpu=True)
    assert args.bf16 is True  # TRL's configs turn bf16 autocast on unless fp16 is asked for
    assert inspect.signature(estimate).parameters["precision"].default == "bf16-autocast"
    assert precision_for() == "bf16-autocast"
    assert precision_for("float32", bf16=False) == "float32"
    assert precision_for("bfloat16", bf16=True) == "bfloat16"
    with pytest.raises(ValueError, match="unknown dtype"):
        precision_for("int4")


def test_memory_bf16_weights_lose_small_adamw_updates():
    """The page's example, measured: a step of 2e-5 from 0.02 rounds back to 0.02 in bf16."""
    weight = torch.tensor(0.02, dtype=torch.bfloat16)
    assert weight - torch.tensor(2e-5, dtype=torch.bfloat16) == weight
    assert torch.tensor(0.02) - torch.tensor(2e-5) != torch.tensor(0.02)  # float32 keeps it


def test_memory_8bit_adam_and_sgd_state():
    assert estimate(TOY, "sft", optimizer="adamw_8bit").optimizer == 2 * P
    assert estimate(TOY, "sft", optimizer="sgd").optimizer == 0


def test_memory_lora_trains_only_float32_adapters():
    # rank 8 on q (4 -> 4) and v (4 -> 2): 8 * (8 + 6) = 112 per layer, 224 in all.
    lora = 224
    assert TOY.lora_params(8, ("q_proj", "v_proj")) == lora
    e = estimate(TOY, "sft", precision="bfloat16", lora_rank=8)
    assert (e.weights, e.gradients, e.optimizer) == (2 * P + 4 * lora, 4 * lora, 8 * lora)
    # With LoRA the DPO reference is the base model with adapters off: no second copy.
    assert estimate(TOY, "dpo", precision="bfloat16", lora_rank=8).extra_models == 0
    # Neither the head nor the embedding trains: no head-gradient accumulator, no second copy.
    assert (e.embedding_gradient, e.head) == (0, 1024 * 10 * 2)  # one bf16 tile, nothing else


def test_memory_zero_stages_shard_what_they_should():
    n = 8
    # TRL's default bf16 autocast under DeepSpeed: DeepSpeed casts the weights to bf16 itself.
    zero1 = estimate(TOY, "sft", zero_stage=1, num_gpus=n)
    zero2 = estimate(TOY, "sft", zero_stage=2, num_gpus=n)
    zero3 = estimate(TOY, "sft", precision="bfloat16", zero_stage=3, num_gpus=n)
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
    assert dpo.weights == dpo.extra_models == round(2 * P / 4)  # policy, reference: sharded


def test_memory_models_each_method_holds():
    scorer = TOY.body_params + TOY.hidden_size  # body + one-output head
    assert estimate(TOY, "dpo").extra_models == 4 * P
    assert estimate(TOY, "gkd").extra_models == 4 * P  # a teacher of the student's size
    wide = ModelShape(8, 16, 2, 4, 10, tie_word_embeddings=True)
    assert estimate(TOY, "gkd", teacher=wide).extra_models == 4 * wide.params
    assert estimate(TOY, "gkd", frozen_dtype="bfloat16").extra_models == 2 * P
    ppo = estimate(TOY, "ppo", precision="bfloat16")
    # reference + reward + trainable value; value has gradients and moments too.
    assert (ppo.weights, ppo.extra_models) == (2 * P, 2 * (P + scorer + scorer))
    assert ppo.gradients == 2 * (P + scorer)
    assert ppo.optimizer == 4 * (P + scorer)
    # A reward model given to a reward-function method is counted.
    assert estimate(TOY, "grpo", reward_model=TOY).extra_models == 4 * scorer
    # The reward model trained by `reward` is a score head on the body, not an LM.
    assert estimate(TOY, "reward").weights == 4 * scorer


def test_memory_activations_by_hand():
    # 2 sequences x 3 tokens = 6 tokens; bf16 (2 bytes); h 4, kv 2, i 8.
    per_layer = 6 * (8 * 4 + 2 * 2 + 4 * 8) * 2  # 816
    final_norm = 6 * 3 * 4 * 2  # 144
    no_checkpointing = 2 * per_layer + final_norm
    assert activation_bytes(TOY, 2, 3, 2, gradient_checkpointing=False) == no_checkpointing
    checkpointed = 2 * 6 * 4 * 2 + per_layer + final_norm  # layer inputs + one layer recomputed
    assert activation_bytes(TOY, 2, 3, 2, gradient_checkpointing=True) == checkpointed
    # DPO forwards chosen and rejected: twice the sequences of SFT for the same batch size.
    sft = estimate(TOY, "sft", seq_len=3, batch_size=1, gradient_checkpointing=False)
    dpo = estimate(TOY, "dpo", seq_len=3, batch_size=1, gradient_checkpointing=False)
    assert dpo.activations == 2 * sft.activations


def test_memory_head_by_hand():
    bf16 = memory.PRECISIONS["bf16-autocast"]
    tokens, vocab, h = 6, 10, 4
    # Fused head on GPU: one bf16 tile, and the head's gradient in float32 (the weights' dtype).
    assert head_bytes(TOY, "sft", tokens, bf16, True, "cuda") == tokens * vocab * 2 + vocab * h * 4
    # Pure bf16 weights: the float32 accumulator plus its bf16 cast.
    pure = memory.PRECISIONS["bfloat16"]
    assert head_bytes(TOY, "dpo", tokens, pure, True, "cuda") == 60 * 2 + 40 * (4 + 2)
    # The torch fallback (CPU) holds several float32 tiles.
    cpu = memory.FUSED_CPU_TILES * 60 * 4 + 40 * 4
    assert head_bytes(TOY, "grpo", tokens, bf16, True, "cpu") == cpu
    # Chunked divergence: a student and a teacher tile, in float32.
    assert head_bytes(TOY, "distillation", tokens, bf16, True, "cuda") == 2 * 60 * 4 + 40 * 4
    # Score heads build nothing vocabulary-sized; full-logits methods several float32 copies.
    assert head_bytes(TOY, "reward", tokens, bf16, True, "cuda") == 0
    assert head_bytes(TOY, "gkd", tokens, bf16, True, "cuda") == LOSS_HEADS["gkd"] * 240
    # ...or, with few tokens and a wide head, the logits and their gradient beside the head's
    # new gradient (V x h = 10 x 64 float32 values).
    wide = ModelShape(64, 8, 1, 2, 10, tie_word_embeddings=True)
    assert head_bytes(wide, "gkd", 1, bf16, True, "cuda") == 2 * 40 + 640 * 4


def test_memory_tiles_stop_at_4096_tokens_and_32768_entries():
    big = REFERENCE_MODELS["Qwen2.5-7B"]
    p = memory.PRECISIONS["bf16-autocast"]
    long = head_bytes(big, "sft", 100_000, p, False, "cuda")
    assert long == head_bytes(big, "sft", 4096, p, False, "cuda") == 4096 * 32768 * 2


def test_memory_peak_is_the_largest_moment_of_a_step():
    e = memory.MemoryEstimate(
        weights=100,
        extra_models=10,
        gradients=50,
        optimizer=200,
        activations=30,
        head=40,
        embedding_gradient=25,
        kv_cache=60,
    )
    assert e.total == 310 + max(30 + 40, 50 + 25, 60)
    tied = estimate(TOY, "sft", precision="bfloat16")
    assert tied.embedding_gradient == 2 * 10 * 4  # a second dense V x h gradient
    untied = ModelShape(4, 8, 2, 2, 10, tie_word_embeddings=False)
    assert estimate(untied, "sft").embedding_gradient == 0
    # Online methods: the KV cache of every sequence generated, at full length.
    grpo = estimate(TOY, "grpo", precision="bfloat16", seq_len=3, batch_size=2)
    assert grpo.kv_cache == 2 * 2 * 2 * 2 * 3 * 2  # k and v, 2 layers, kv 2, 2 x 3 tokens, bf16
    assert estimate(TOY, "sft").kv_cache == 0
    # Async GRPO samples on its vLLM server's GPUs: the trainer holds no KV cache.
    assert estimate(TOY, "async_grpo", precision="bfloat16", seq_len=3, batch_size=2).kv_cache == 0


def test_memory_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="unknown method"):
        estimate(TOY, "dpo2")
    with pytest.raises(ValueError, match="unknown precision"):
        estimate(TOY, precision="int4")
    with pytest.raises(ValueError, match="unknown device"):
        estimate(TOY, device="tpu")
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
    model = Qwen2ForCausalLM(TOY.qwen2_config(2)).to(torch.bfloat16)
    optimizer = one_adamw_step(model)
    e = estimate(TOY, "sft", precision="bfloat16")
    assert tensor_bytes(model.parameters()) == e.weights
    assert tensor_bytes(p.grad for p in model.parameters()) == e.gradients
    assert optimizer_state_bytes(optimizer) == e.optimizer


def test_memory_lora_matches_real_peft_adapter():
    torch.manual_seed(0)
    base = Qwen2ForCausalLM(TOY.qwen2_config(2)).to(torch.bfloat16)
    model = get_peft_model(base, LoraConfig(r=8, target_modules=["q_proj", "v_proj"]))
    optimizer = one_adamw_step(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert {p.dtype for p in trainable} == {torch.float32}  # PEFT upcasts the adapters
    e = estimate(TOY, "sft", precision="bfloat16", lora_rank=8)
    assert tensor_bytes(model.parameters()) == e.weights
    assert tensor_bytes(p.grad for p in trainable) == e.gradients
    assert optimizer_state_bytes(optimizer) == e.optimizer


# --- Against TRL's code: the kernels' tiles, and which loss each trainer uses ------------------


def test_memory_tile_sizes_are_trls():
    from trl.kernels import chunked_divergence, chunked_logprob
    from trl.trainer import utils

    assert memory.TOKEN_CHUNK_SIZE == chunked_logprob.TOKEN_CHUNK_SIZE
    assert memory.VOCAB_CHUNK_SIZE == utils._CHUNKED_LOGPROB_CHUNK_SIZE
    assert memory.TOKEN_CHUNK_SIZE == chunked_divergence.TOKEN_CHUNK_SIZE
    assert memory.VOCAB_CHUNK_SIZE == chunked_divergence.VOCAB_CHUNK_SIZE


def trainer_source(method) -> str:
    """The source of the module that defines the method's trainer (TRL, experimental, or ours),
    and of the modules of our own that its class builds on (XPO and Nash-MD: online_pair)."""
    trainer = getattr(importlib.import_module(method.module), method.trainer)
    modules = {sys.modules[trainer.__module__]} | {
        sys.modules[cls.__module__]
        for cls in trainer.__mro__
        if cls.__module__.startswith("annotated_trl.")
    }
    return "\n".join(inspect.getsource(m) for m in modules)


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.key)
def test_memory_loss_head_matches_the_trainers_code(method):
    assert set(LOSS_HEADS) == set(METHOD_MODELS)
    source = trainer_source(method)
    kind = LOSS_HEADS[method.key]
    fused = "add_fused_lm_head(" in source
    assert fused == (kind == "fused"), method.key
    assert ("_chunked_divergence_loss(" in source) == (kind == "divergence"), method.key
    if isinstance(kind, int):  # builds the logits: reads `.logits` of a causal LM's output
        assert re.search(r"\.logits\b", source), method.key


def test_memory_shape_from_config_json_matches_the_presets():
    qwen = {
        "model_type": "qwen2",
        "hidden_size": 896,
        "intermediate_size": 4864,
        "num_hidden_layers": 24,
        "num_attention_heads": 14,
        "num_key_value_heads": 2,
        "vocab_size": 151936,
        "tie_word_embeddings": True,
    }
    assert ModelShape.from_config(qwen) == REFERENCE_MODELS["Qwen2.5-0.5B"]
    llama = {
        "model_type": "llama",
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 128256,
        "attention_bias": False,
        "tie_word_embeddings": False,
    }
    assert ModelShape.from_config({"text_config": llama}) == REFERENCE_MODELS["Llama-3.1-70B"]


# --- `annotated-trl memory` ---------------------------------------------------------------------


def test_memory_cli_reads_a_config_json_folder(tmp_path, capsys):
    Qwen2Config(
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        vocab_size=1000,
        tie_word_embeddings=True,
    ).save_pretrained(tmp_path)
    argv = ["memory", str(tmp_path), "--method", "dpo", "--seq_len", "64", "--batch_size", "2"]
    assert cli.main(argv) == 0
    out = capsys.readouterr().out
    shape = memory.load_shape(str(tmp_path))
    expected = estimate(shape, "dpo", seq_len=64, batch_size=2)
    total = next(line for line in out.splitlines() if line.startswith("total"))
    assert f" {expected.gib():.2f} GiB" in total
    for part in ("weights", "extra models", "gradients", "optimizer", "activations", "head"):
        assert part in out
    assert "kv cache" in out and "total" in out


def test_memory_cli_refuses_an_unknown_model_in_one_line(tmp_path, capsys):
    assert cli.main(["memory", str(tmp_path / "nothing"), "--method", "sft"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "Qwen2.5-0.5B" in err[0]


def test_memory_cli_as_a_user_runs_it():
    done = subprocess.run(
        [sys.executable, "-m", "annotated_trl.cli", "memory", "Qwen2.5-1.5B", "--method", "grpo",
         "--precision", "bfloat16", "--lora_rank", "16", "--num_gpus", "2", "--zero_stage", "2"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    expected = estimate(
        REFERENCE_MODELS["Qwen2.5-1.5B"],
        "grpo",
        precision="bfloat16",
        lora_rank=16,
        num_gpus=2,
        zero_stage=2,
    )
    total = next(line for line in done.stdout.splitlines() if line.startswith("total"))
    assert f" {expected.gib():.2f} GiB" in total


# --- Against measurement: real TRL runs, peak tensor bytes from PyTorch's profiler -------------


@pytest.fixture(scope="module")
def committed():
    return json.loads((REPO / "benchmarks" / "results" / "memory_check.json").read_text())


@pytest.mark.parametrize("method", list(memory_check.FAMILIES))
def test_memory_estimate_within_15_percent_of_measured_peak(method, tmp_path, committed):
    check = memory_check.measure(method, tmp_path)
    estimated = check.estimate().total
    assert abs(estimated / check.peak_bytes - 1) <= 0.15, (check, estimated / GIB)
    # The committed record is what this run measures (the allocator is deterministic here).
    row = next(r for r in committed["runs"] if r["method"] == method)
    assert (row["sequences"], row["seq_len"]) == (check.sequences, check.seq_len)
    assert row["measured_bytes"] == pytest.approx(check.peak_bytes, rel=0.01)


def test_memory_page_measured_table_is_the_committed_results(committed):
    text = (REPO / "docs" / "memory.md").read_text(encoding="utf-8")
    start = r"<!-- generated: annotated_trl\.memory\.measured_table\(\) -->"
    block = re.search(start + r"\n(.*?)\n<!-- end generated -->", text, re.S)
    assert block and block.group(1) == memory.measured_table()
    assert len(committed["runs"]) == len(memory_check.FAMILIES)


def test_memory_page_prose_follows_the_estimates():
    text = " ".join((REPO / "docs" / "memory.md").read_text(encoding="utf-8").split())
    small, seven_b = REFERENCE_MODELS["Qwen2.5-1.5B"], REFERENCE_MODELS["Qwen2.5-7B"]
    sft = estimate(small, "sft")
    assert sft.total > 0.9 * 24 * GIB  # so "no method fully fine-tunes Qwen2.5-1.5B" holds
    assert f"SFT is estimated at {sft.gib():.1f} GiB" in text
    kto_bf16 = estimate(seven_b, "kto", lora_rank=16, precision="bfloat16")
    assert kto_bf16.total <= 0.9 * 24 * GIB
    assert f"KTO with LoRA on the 7B model needs {kto_bf16.gib():.1f} GiB and fits" in text
    big = REFERENCE_MODELS["Llama-3.1-70B"]
    assert f"a 70B base in bf16 is about {2 * big.params / GIB:.0f} GiB of weights" in text
