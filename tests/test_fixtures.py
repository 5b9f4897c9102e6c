"""The offline fixture is what every other test trusts: check it is what it claims to be."""

import hashlib
import json

import pytest
from transformers import (
    AutoConfig,
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    AutoTokenizer,
)

from annotated_trl.data import METHOD_FORMATS, check_rows, detect_format
from annotated_trl.fixtures import DATA_FORMATS, ROWS, TEST_ROWS, TRAIN_ROWS, build_all
from annotated_trl.toy_task import Problem, arithmetic_reward, extract_answer


def _digest(root):
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}


def test_fixture_is_deterministic(tiny, tmp_path):
    assert _digest(build_all(tmp_path / "again")) == _digest(tiny.root)


def test_fixture_changes_with_seed(tiny, tmp_path):
    other = _digest(build_all(tmp_path / "seed1", seed=1))
    assert other["policy/model.safetensors"] != _digest(tiny.root)["policy/model.safetensors"]


def test_tokenizer_round_trip_and_special_tokens(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    text = "What is 7 * 8? 7 * 8 = 56<|im_end|> The quick brown fox, ünïcödé!"
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.pad_token_id != tokenizer.eos_token_id
    assert tokenizer.eos_token == "<|im_end|>"
    # Digits are single tokens (Qwen2's pre-tokenizer splits numbers digit by digit).
    assert tokenizer.convert_ids_to_tokens(tokenizer("56")["input_ids"]) == ["5", "6"]


def test_chat_template_marks_assistant_tokens(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    messages = [
        {"role": "user", "content": "What is 2 + 2?"},
        {"role": "assistant", "content": "2 + 2 = 4"},
    ]
    out = tokenizer.apply_chat_template(
        messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    assistant = [i for i, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(assistant) == "2 + 2 = 4<|im_end|>"
    prompt_ids = tokenizer.apply_chat_template(
        messages[:1], tokenize=True, add_generation_prompt=True, return_dict=True
    )["input_ids"]
    assert out["input_ids"][: len(prompt_ids)] == prompt_ids  # prompt is a prefix


@pytest.mark.parametrize(
    "name, loader, hidden, labels",
    [
        ("policy", AutoModelForCausalLM, 32, None),
        ("teacher", AutoModelForCausalLM, 64, None),
        ("reward", AutoModelForSequenceClassification, 32, 1),
        ("token_classifier", AutoModelForTokenClassification, 32, 2),
    ],
)
def test_models_share_one_vocabulary(tiny, name, loader, hidden, labels):
    config = AutoConfig.from_pretrained(tiny.root / name)
    model = loader.from_pretrained(tiny.root / name)
    tokenizer = AutoTokenizer.from_pretrained(tiny.root / name)
    assert config.model_type == "qwen2" and config.hidden_size == hidden
    assert config.num_hidden_layers == 2 and config.num_key_value_heads == 2
    assert config.vocab_size == len(tokenizer) == 384
    assert config.pad_token_id == tokenizer.pad_token_id
    if labels is not None:
        assert config.num_labels == labels
    else:
        assert model.generation_config.eos_token_id == tokenizer.eos_token_id


@pytest.mark.parametrize("fmt", [*DATA_FORMATS, "stepwise_solutions"])
def test_toy_data_is_in_its_format(tiny, fmt):
    # Columns decide the format; only "messages" has a name of its own for chat data. The PRM's
    # warm-start data are prompt-completion.
    expected = {
        "conversational_language_modeling": fmt,
        "stepwise_solutions": "prompt_completion",
    }.get(fmt, fmt.removeprefix("conversational_"))
    for split, size in zip(("train", "test"), ROWS.get(fmt, (TRAIN_ROWS, TEST_ROWS)), strict=True):
        rows = [json.loads(line) for line in (tiny.data / fmt / f"{split}.jsonl").open()]
        assert len(rows) == size
        assert {detect_format(row) for row in rows} == {expected}


def test_toy_train_and_test_problems_differ(tiny):
    def prompts(split):
        return {json.loads(line)["prompt"] for line in (tiny.data / "prompt_only" / split).open()}

    # Separate seeds; with 300 possible problems some overlap is unavoidable, not most.
    overlap = prompts("train.jsonl") & prompts("test.jsonl")
    assert len(overlap) < len(prompts("test.jsonl"))


@pytest.mark.parametrize("fmt", METHOD_FORMATS["sft"])
def test_sft_formats_pass_the_checker(tiny, fmt):
    variants = [fmt] + ([f"conversational_{fmt}"] if fmt == "prompt_completion" else [])
    for variant in variants:
        lines = (tiny.data / variant / "train.jsonl").open()
        rows = ((f"line {i}", json.loads(line)) for i, line in enumerate(lines, 1))
        assert check_rows(rows, variant, "sft") == fmt


def test_reward_judges_the_rule():
    problem = Problem(7, "*", 8)
    assert problem.answer == 56 and extract_answer(problem.solution()) == 56
    completions = [
        " 7 * 8 = 56",
        " 7 * 8 = 54",
        "no idea",
        [{"role": "assistant", "content": "56"}],
    ]
    assert arithmetic_reward(completions, answer=[56] * 4) == [1.0, 0.0, 0.0, 1.0]
