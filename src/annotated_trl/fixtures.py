"""Tiny offline models and toy data, built locally in seconds with no network.

Every test and the offline quick start train on these instead of a Hub model:

    out/
      policy/             Qwen2ForCausalLM, hidden 32, 2 layers (+ tokenizer, generation config)
      teacher/            the same architecture, wider (hidden 64): GKD / distillation teacher
      reward/             Qwen2ForSequenceClassification, num_labels=1: reward and value model
      token_classifier/   Qwen2ForTokenClassification, num_labels=2: process reward model
      tool_policy/        the policy's architecture with its own tokenizer and chat template, which
                          render tools and tool calls (annotated_trl.tool_task): GRPO with tools
      gold_teacher/       GPT2LMHeadModel (hidden 64) with a tokenizer of its own: other merges,
                          numbers split GPT-2's way (" 28" vs " ", "2", "8"): GOLD's
                          cross-tokenizer distillation
      data/<format>/{train,test}.jsonl   the toy task in every TRL dataset format
      data/stepwise_solutions/{train,test}.jsonl  right two-step solutions, prompt-completion:
                          what a PRM's base model learns to solve before it learns to judge
      data/tool_calling/{train,test}.jsonl  two-digit problems for a policy with a calculator
      data/tool_traces/train.jsonl          demonstrations, half of them calling the calculator

All models but tool_policy and gold_teacher share one byte-level BPE tokenizer, so a teacher's
logits line up with the student's.
Same seed, same bytes: building twice gives identical weights and data.
"""

import json
import random
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen2ForSequenceClassification,
    Qwen2ForTokenClassification,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

from annotated_trl.toy_task import Problem, sample_problems

PAD, EOS, IM_START = "<|endoftext|>", "<|im_end|>", "<|im_start|>"

# ChatML, as Qwen2-Instruct writes it. `{% generation %}` marks the assistant's tokens so that
# `return_assistant_tokens_mask=True` (SFT's `assistant_only_loss`) can find them. The prompt
# rendered with `add_generation_prompt=True` is a prefix of prompt + completion, which TRL needs to
# split a conversation into prompt and completion tokens.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{%- else %}{{- message['content'] + '<|im_end|>' }}{%- endif %}"
    "{{- '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

# A little general English besides the task, so that words outside the task still tokenize into
# more than single bytes.
_ENGLISH = (
    "The quick brown fox jumps over the lazy dog. You are a helpful assistant. "
    "Answer the question and show your working. Let us think step by step. "
    "The answer is correct. The answer is wrong. Good job, try again."
)

TRAIN_ROWS, TEST_ROWS = 256, 64
# A step label is one bit, and judging "4 * 7 = 30" takes the whole table of answers: a PRM
# learns it from thousands of labels, not from the 256 rows the other formats have
# (tests/test_prm_learning.py). The larger test split also makes held-out step accuracy a number
# to read (877 labelled steps: standard error 0.016, where 110 gave 0.045).
ROWS = {"stepwise_supervision": (4096, 512), "stepwise_solutions": (4096, 512)}
DATA_FORMATS = (
    "language_modeling",
    "conversational_language_modeling",
    "prompt_completion",
    "conversational_prompt_completion",
    "prompt_only",
    "conversational_prompt_only",
    "preference",
    "implicit_preference",
    "conversational_preference",
    "unpaired_preference",
    "stepwise_supervision",
    "triple_preference",
    "implicit_triple_preference",
    "conversational_triple_preference",
    "privileged_context",
    "conversational_privileged_context",
)


def build_tokenizer(corpus: list[str], vocab_size: int = 512) -> PreTrainedTokenizerFast:
    """Byte-level BPE with Qwen2's normaliser, pre-tokenizer and decoder.

    Using Qwen2's exact pipeline (NFC, its split regex, then byte-level without a regex of its
    own) means `AutoTokenizer` reproduces the same ids after a save/load round trip.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def _model_config(tokenizer: PreTrainedTokenizerFast, hidden: int, **extra) -> Qwen2Config:
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
        **extra,
    )


def _save(model, tokenizer, directory: Path) -> None:
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id
    )
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)


def _user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]


def _assistant(text: str) -> list[dict]:
    return [{"role": "assistant", "content": text}]


def _rows(fmt: str, problems: list[Problem], rng: random.Random) -> list[dict]:
    """The toy task written in one TRL dataset format."""
    rows = []
    for i, p in enumerate(problems):
        good, bad = " " + p.solution(), " " + p.solution(p.wrong_answer(rng))
        if fmt == "language_modeling":
            rows.append({"text": p.question + good})
        elif fmt == "conversational_language_modeling":
            rows.append({"messages": _user(p.question) + _assistant(good.strip())})
        elif fmt == "prompt_completion":
            rows.append({"prompt": p.question, "completion": good})
        elif fmt == "conversational_prompt_completion":
            rows.append({"prompt": _user(p.question), "completion": _assistant(good.strip())})
        elif fmt == "prompt_only":
            rows.append({"prompt": p.question, "answer": p.answer})
        elif fmt == "conversational_prompt_only":
            rows.append({"prompt": _user(p.question), "answer": p.answer})
        elif fmt == "preference":
            rows.append({"prompt": p.question, "chosen": good, "rejected": bad})
        elif fmt == "implicit_preference":
            rows.append({"chosen": p.question + good, "rejected": p.question + bad})
        elif fmt == "conversational_preference":
            rows.append(
                {
                    "prompt": _user(p.question),
                    "chosen": _assistant(good.strip()),
                    "rejected": _assistant(bad.strip()),
                }
            )
        elif fmt == "unpaired_preference":
            # Alternate desirable / undesirable so both classes are present in every slice.
            desirable = i % 2 == 0
            rows.append(
                {"prompt": p.question, "completion": good if desirable else bad, "label": desirable}
            )
        elif fmt == "stepwise_supervision":
            rows.append(_stepwise_row(p, rng))
        elif fmt == "stepwise_solutions":
            question, second = _two_steps(p, rng)
            completion = (
                f"{p.solution()}\n{second.solution()}\n"  # as the PRM's rows separate steps
            )
            rows.append({"prompt": question, "completion": completion})
        elif fmt.endswith("privileged_context"):
            # SDFT: the worked solution is shown to the teacher only, the way TRL's example
            # script words a demonstration.
            prompt = _user(p.question) if fmt.startswith("conversational") else p.question
            context = f"Example response: {p.solution()}"
            rows.append({"prompt": prompt, "privileged_context": context, "answer": p.answer})
        elif fmt.endswith("triple_preference"):
            rows.append(_triple_row(fmt, p, good, rng))
        else:
            raise ValueError(f"unknown toy data format {fmt!r}")
    return rows


def _triple_row(fmt: str, p: Problem, gold: str, rng: random.Random) -> dict:
    """TPO's triple, ranked as its paper ranks three answers: the gold `reference` (the worked
    solution, " 3 + 4 = 7"), then `chosen` (the right answer alone, " 7"), then `rejected` (a
    wrong answer alone, " 9"). Chosen and rejected differ only in the number."""
    chosen, rejected = f" {p.answer}", f" {p.wrong_answer(rng)}"
    if fmt == "implicit_triple_preference":
        # The implicit prompt is the longest common *character* prefix of chosen and rejected:
        # " 11" and " 13" would lend it their "1", which the reference does not share. Draw a
        # wrong answer that starts differently (for -4 ... -9, where every draw starts with "-",
        # the answer's sign flipped).
        for _ in range(20):
            if rejected[1] != chosen[1]:
                break
            rejected = f" {p.wrong_answer(rng)}"
        else:
            rejected = f" {-p.answer}"
        return {
            "chosen": p.question + chosen,
            "rejected": p.question + rejected,
            "reference": p.question + gold,
        }
    if fmt == "conversational_triple_preference":
        return {
            "prompt": _user(p.question),
            "chosen": _assistant(chosen.strip()),
            "rejected": _assistant(rejected.strip()),
            "reference": _assistant(gold.strip()),
        }
    return {"prompt": p.question, "chosen": chosen, "rejected": rejected, "reference": gold}


def _two_steps(p: Problem, rng: random.Random) -> tuple[str, Problem]:
    """Two-step arithmetic: "What is 3 + 4 + 2?" is `p` ("3 + 4 = 7"), then the step returned
    ("7 + 2 = 9")."""
    c = rng.randint(0, 9)
    return f"What is {p.a} {p.op} {p.b} + {c}?", Problem(p.answer, "+", c)


def _stepwise_row(p: Problem, rng: random.Random) -> dict:
    """Two steps, labelled. Half the rows make one mistake; that step is labelled False and the
    reasoning stops there, as in step-labelled datasets where annotators stop at the first error.
    """
    question, second = _two_steps(p, rng)
    mistake_at = rng.choice([None, 0, 1])
    if mistake_at == 0:
        return {
            "prompt": question,
            "completions": [p.solution(p.wrong_answer(rng))],
            "labels": [False],
        }
    last = second.solution(second.wrong_answer(rng)) if mistake_at == 1 else second.solution()
    return {
        "prompt": question,
        "completions": [p.solution(), last],
        "labels": [True, mistake_at != 1],
    }


def _write_jsonl(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def build_data(out_dir: Path, seed: int = 0) -> dict[str, Path]:
    """Write data/<format>/{train,test}.jsonl; train and test problems come from separate seeds."""
    data_dir = Path(out_dir) / "data"
    for split, split_seed in (("train", seed), ("test", seed + 1)):
        for fmt in (*DATA_FORMATS, "stepwise_solutions"):
            n = ROWS.get(fmt, (TRAIN_ROWS, TEST_ROWS))[split == "test"]
            # The first TRAIN_ROWS (TEST_ROWS) problems are every format's: a longer split only
            # adds problems after them.
            problems = sample_problems(n, split_seed)
            rows = _rows(fmt, problems, random.Random(f"{split_seed}-{fmt}"))
            _write_jsonl(data_dir / fmt / f"{split}.jsonl", rows)
    return {fmt: data_dir / fmt for fmt in DATA_FORMATS}


def _tokenizer_corpus(seed: int) -> list[str]:
    rng = random.Random(seed)
    problems = sample_problems(2000, seed)
    texts = [p.question + " " + p.solution(p.wrong_answer(rng)) for p in problems]
    texts += [p.question + " " + p.solution() for p in problems]
    return texts + [_ENGLISH] * 20 + ["user\nassistant\nsystem\n"] * 20


def build_all(out_dir: str | Path, seed: int = 0) -> Path:
    """Build every tiny model and the toy data under `out_dir`; returns `out_dir`."""
    out_dir = Path(out_dir)
    tokenizer = build_tokenizer(_tokenizer_corpus(seed))
    specs = {
        "policy": (Qwen2ForCausalLM, _model_config(tokenizer, hidden=32)),
        "teacher": (Qwen2ForCausalLM, _model_config(tokenizer, hidden=64)),
        "reward": (Qwen2ForSequenceClassification, _model_config(tokenizer, 32, num_labels=1)),
        "token_classifier": (
            Qwen2ForTokenClassification,
            _model_config(tokenizer, 32, num_labels=2),
        ),
    }
    for offset, (name, (model_class, config)) in enumerate(specs.items()):
        torch.manual_seed(seed + offset)  # each model its own stream, independent of build order
        _save(model_class(config), tokenizer, out_dir / name)
    build_data(out_dir, seed)
    build_tool_fixture(out_dir, seed)
    build_gold_teacher(out_dir, seed)
    return out_dir


def build_teacher_tokenizer(corpus: list[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer that cuts the same text elsewhere than `build_tokenizer`'s.

    GPT-2's split rule instead of Qwen2's: a number is one pre-token with the space before it
    (" 28"), where Qwen2 isolates every digit and the space (" ", "2", "8"); a smaller vocabulary
    learns other merges, so the ids differ too. The same special tokens, so the student's ChatML
    text (which GOLD hands the teacher as a string) still reads as ChatML.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=512,
    )


def build_gold_teacher(out_dir: str | Path, seed: int = 0) -> None:
    """gold_teacher/: a teacher of another family (GPT-2, hidden 64) with
    `build_teacher_tokenizer`'s vocabulary, for GOLD's distillation across tokenizers.

    GPT-2, not Qwen2: `AutoTokenizer` reads a Qwen2 config and rebuilds Qwen2's split rule over
    the saved one, which would make the two tokenizers cut alike again. Its own seed: the models
    above are left exactly as they were."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = build_teacher_tokenizer(_tokenizer_corpus(seed))
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=64,
        n_layer=2,
        n_head=4,
        n_positions=512,
        bos_token_id=tokenizer.eos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed + 20)
    _save(GPT2LMHeadModel(config), tokenizer, Path(out_dir) / "gold_teacher")


def build_tool_fixture(out_dir: str | Path, seed: int = 0) -> None:
    """The tool-calling policy and its data (annotated_trl.tool_task). A tokenizer of its own:
    trained on rendered tool conversations, with `<tool_call>` and `</tool_call>` as single
    tokens, the tool chat template and the response template that parses calls back; the models
    and data above are left exactly as they were."""
    from annotated_trl import tool_task

    out_dir = Path(out_dir)
    problems = tool_task.sample_tool_problems(2000, seed + 2)
    renderer = build_tokenizer(["0"], vocab_size=300)  # only its template is used
    renderer.chat_template = tool_task.TOOL_CHAT_TEMPLATE
    schemas = tool_task.tool_schemas()
    corpus = [
        renderer.apply_chat_template(tool_task.trace(p, i % 2 == 0), tools=schemas, tokenize=False)
        for i, p in enumerate(problems)
    ]
    tokenizer = build_tokenizer(corpus + _tokenizer_corpus(seed))
    tokenizer.add_tokens(list(tool_task.TOOL_CALL_TOKENS))
    tokenizer.chat_template = tool_task.TOOL_CHAT_TEMPLATE
    tokenizer.response_template = tool_task.TOOL_RESPONSE_TEMPLATE
    torch.manual_seed(seed + 10)
    _save(Qwen2ForCausalLM(_model_config(tokenizer, hidden=32)), tokenizer, out_dir / "tool_policy")
    data_dir = out_dir / "data"
    for split, n, split_seed in (("train", TRAIN_ROWS, seed), ("test", TEST_ROWS, seed + 1)):
        rows = tool_task.tool_rows(tool_task.sample_tool_problems(n, split_seed))
        _write_jsonl(data_dir / "tool_calling" / f"{split}.jsonl", rows)
    traces = tool_task.trace_rows(
        tool_task.sample_tool_problems(tool_task.TRACE_ROWS, seed + 3),
        random.Random(seed),
        tool_share=0.5,
    )
    _write_jsonl(data_dir / "tool_traces" / "train.jsonl", traces)
