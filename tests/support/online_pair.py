"""What the Nash-MD and XPO tests share: both scripts read prompts and rewards the same way and
save the same kind of model, so their smoke and bad-input tests share these checks. Their
learning tests and Online DPO's (the method both extend) share one task.
"""

import math

import torch
from transformers import AutoTokenizer

from support.bad_input import jsonl, refusal
from support.processes import REPO


def paths(key):
    return (
        REPO / "annotated_examples" / f"{key}_training.py",
        REPO / "annotated_examples" / "recipes" / f"{key}_tiny.yaml",
    )


# ---- smoke ----------------------------------------------------------------------------------


def assert_finite_logs(rows, keys) -> None:
    for row in rows:
        for key in keys:
            assert math.isfinite(row[key]), (row["step"], key, row[key])
        assert row["grad_norm"] > 0


# ---- bad input ------------------------------------------------------------------------------


def bad_data_cases(key: str) -> dict:
    """case -> (file bytes, words the error line must contain)."""
    return {
        f"{key}-preference-data": (
            jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]).encode(),
            ["line 1", "preference data", f"{key} cannot train on", '{"prompt": "..."}'],
        ),
        f"{key}-missing-prompt": (
            jsonl([{"question": "What is 1 + 1?", "answer": 2}]).encode(),
            ["line 1", f"{key} cannot train on", '{"prompt": "..."}'],
        ),
        f"{key}-wrong-prompt-type": (
            jsonl([{"prompt": "What is 1 + 1?"}, {"prompt": 7}]).encode(),
            ["line 2", 'column "prompt" is a number'],
        ),
        f"{key}-empty-file": (b"", ["no rows", "expected rows like"]),
        f"{key}-broken-json-line": (
            b'{"prompt": "fine"}\n{"prompt": "broken\n',
            ["line 2", "not valid JSON"],
        ),
        f"{key}-not-utf8": (
            '{"prompt": "Was ist 1 + 1? Größe"}\n'.encode("latin-1"),
            ["UTF-8"],
        ),
    }


def refuses_bad_data(key, tiny, tmp_path, monkeypatch, case):
    content, words = bad_data_cases(key)[case]
    script, recipe = paths(key)
    data = tmp_path / "data.jsonl"
    data.write_bytes(content)
    out = tmp_path / "out"
    args = ["--model_name_or_path", tiny.policy, "--reward_model_path", tiny.reward]
    message = refusal(
        monkeypatch, script, recipe, *args, "--dataset_name", data, "--output_dir", out
    )
    assert str(data) in message, message
    for word in words:
        assert word in message, (word, message)
    assert not out.exists()
    return message


def refuses_chat_without_template(key, tiny, tmp_path, monkeypatch, policy_without_template):
    """Conversational prompts and a tokenizer without a chat template: refused before training."""
    script, recipe = paths(key)
    out = tmp_path / "out"
    args = ["--model_name_or_path", policy_without_template, "--reward_model_path", tiny.reward]
    args += ["--dataset_name", tiny.data / "conversational_prompt_only", "--output_dir", out]
    message = refusal(monkeypatch, script, recipe, *args)
    assert "chat template" in message, message
    assert not out.exists()


# ---- math -----------------------------------------------------------------------------------


def build_trainer(tiny, tmp_path, config_class, trainer_class, **config):
    """A real trainer on the tiny fixture (policy, frozen copy, `tiny/reward`), not trained."""
    import datasets

    data = tiny.data / "conversational_prompt_only" / "train.jsonl"
    dataset = datasets.load_dataset("json", data_files=str(data))["train"].select(range(8))
    args = config_class(
        output_dir=str(tmp_path),
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=2,
        max_new_tokens=6,
        report_to="none",
        save_strategy="no",
        seed=0,
        **config,
    )
    return trainer_class(
        model=str(tiny.policy),
        reward_funcs=str(tiny.reward),
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(tiny.policy),
    )


def independent_reward(tiny, token_ids: list[int]) -> float:
    """The tiny reward model's score of one unpadded sequence: its logit at the last token."""
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny.reward, num_labels=1)
    ids = torch.tensor([token_ids])
    with torch.no_grad():
        hidden = model.model(input_ids=ids).last_hidden_state
        return model.score(hidden)[0, -1, 0].item()


def check_eos_penalty_on_completion_only(trainer, tiny, penalty=1.5):
    """r~(x, y) = r(x, y) - c * [y has no EOS], with EOS looked for in y only.

    The chat prompt itself ends turns with EOS (`<|im_end|>`): trl 1.12, which searched prompt
    and completion together, would never subtract the penalty here.
    """
    tokenizer = trainer.processing_class
    trainer.args.missing_eos_penalty = penalty
    prompt = [{"role": "user", "content": "What is 2 + 3?"}]
    prompts = trainer.prompt_batch({"prompt": [prompt, prompt]})
    assert (prompts["input_ids"] == tokenizer.eos_token_id).any(), "prompt must contain EOS"
    finished = tokenizer(" 2 + 3 = 5", add_special_tokens=False)["input_ids"]
    finished = finished + [tokenizer.eos_token_id]
    cut = tokenizer(" 2 + 3 = 5 and", add_special_tokens=False)["input_ids"]
    width = max(len(finished), len(cut))
    pad = tokenizer.pad_token_id
    completions = torch.tensor(
        [finished + [pad] * (width - len(finished)), cut + [pad] * (width - len(cut))]
    )
    scores = trainer.scores(prompts, completions)

    prompt_ids = prompts["input_ids"][0].tolist()  # both rows: same prompt, no padding
    expected = [
        independent_reward(tiny, prompt_ids + finished),
        independent_reward(tiny, prompt_ids + cut) - penalty,
    ]
    trainer.args.missing_eos_penalty = None
    return scores.tolist(), expected


# ---- learning -------------------------------------------------------------------------------
# Online DPO, XPO and Nash-MD learn one dense task from the random tiny policy. On the
# arithmetic task from the SFT warm start their effect was too small to survive another CPU:
# over 4 seeds of 30 steps, XPO's greedy solve-rate gain was +0.035, +0.066, +0.012, -0.020 and
# Nash-MD's +0.082, +0.035, +0.086, +0.117 (measured; see the learning tests' docstrings).


def digit_share(completions, **kwargs) -> list[float]:
    """Reward: the fraction of the completion's characters that are digits."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def held_out_digit_share(model, tokenizer, prompts, samples_per_prompt=16) -> float:
    """The mean digit share of `samples_per_prompt` samples per held-out prompt (8 new tokens,
    temperature 0.9, no top-k, as in training), drawn from a fixed generation seed."""
    with torch.random.fork_rng():  # do not disturb the trainer's random stream
        torch.manual_seed(123)
        batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left")
        with torch.no_grad():
            generated = model.generate(
                **batch,
                max_new_tokens=8,
                do_sample=True,
                temperature=0.9,
                top_k=0,
                num_return_sequences=samples_per_prompt,
                pad_token_id=tokenizer.pad_token_id,
            )
    completions = tokenizer.batch_decode(
        generated[:, batch["input_ids"].shape[1] :], skip_special_tokens=True
    )
    return sum(digit_share(completions)) / len(completions)


DIGIT_STEPS = 80


def learn_digit_share(config_class, trainer_class, tiny, out, seed, **config):
    """Train the random tiny policy to write digits: plain-text prompts (`prompt_only`), 16 per
    step, 8 new tokens, beta 0.1, lr 1e-3 constant, 40 steps, logged every step.

    Returns the held-out digit share before and after, and the log history.
    """
    from datasets import load_dataset

    data = tiny.data / "prompt_only"
    dataset = load_dataset(
        "json", data_files={split: str(data / f"{split}.jsonl") for split in ("train", "test")}
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    args = config_class(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        per_device_train_batch_size=16,
        max_new_tokens=8,
        max_length=64,
        beta=0.1,
        learning_rate=1e-3,
        lr_scheduler_type="constant",
        max_steps=DIGIT_STEPS,
        logging_steps=1,
        save_strategy="no",
        disable_tqdm=True,
        seed=seed,
        **config,
    )
    trainer = trainer_class(
        model=str(tiny.policy),
        reward_funcs=[digit_share],
        args=args,
        train_dataset=dataset["train"],
        processing_class=tokenizer,
    )
    prompts = list(dataset["test"]["prompt"])
    before = held_out_digit_share(trainer.model, tokenizer, prompts)
    trainer.train()
    after = held_out_digit_share(trainer.model, tokenizer, prompts)
    return before, after, trainer.state.log_history
