"""What the Nash-MD and XPO tests share: both scripts read prompts and rewards the same way and
save the same kind of model, so their smoke and bad-input tests share these checks.
"""

import math

import torch
from bad_input import jsonl, refusal
from conftest import REPO, run_script
from transformers import AutoTokenizer


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


def user_sees_one_line(key, tiny, tmp_path):
    """A real process: exit code 1, exactly one line on stderr, no traceback, no output dir."""
    _, recipe = paths(key)
    data, out = tmp_path / "pairs.jsonl", tmp_path / "out"
    data.write_text(jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]))
    result = run_script(
        f"{key}_training.py",
        *["--config", recipe, "--model_name_or_path", tiny.policy],
        *["--dataset_name", data, "--output_dir", out],
    )
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("error: ") and str(data) in lines[0]
    assert "preference data" in lines[0]
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


def graded_arithmetic_reward(completions, answer, **kwargs) -> list[float]:
    """1 for the right answer, 0.5 / (1 + |error|) for a wrong number, 0 for no number.

    `arithmetic_reward` alone scores most pairs 0-0: a tie, which XPO gives to the policy's own
    (wrong) sample, so it trains towards its mistakes (measured: greedy solve rate 0.46 -> 0.18
    in 30 steps); Nash-MD learns nothing from a tie. Partial credit orders most wrong answers.
    """
    from annotated_trl.toy_task import extract_answer

    rewards = []
    for completion, target in zip(completions, answer, strict=True):
        text = completion if isinstance(completion, str) else completion[-1]["content"]
        guess = extract_answer(text)
        if guess is None:
            rewards.append(0.0)
        else:
            rewards.append(1.0 if guess == target else 0.5 / (1 + abs(guess - target)))
    return rewards


def learn_arithmetic(config_class, trainer_class, tiny, policy, out, steps, **config):
    """Train from the SFT warm start on the toy task with `graded_arithmetic_reward`: 32 prompts
    per step, at most 10 new tokens, temperature 1.0, lr 3e-4, seed 42, one torch thread (the
    measurements were made so; more threads change float sums and so the samples).

    Returns the greedy solve rates (`arithmetic_reward`, train / test prompts) before and after,
    and the log history.
    """
    import datasets
    from warm_start import greedy_solved_fraction

    files = {
        split: str(tiny.data / "conversational_prompt_only" / f"{split}.jsonl")
        for split in ("train", "test")
    }
    prompts = datasets.load_dataset("json", data_files=files)
    tokenizer = AutoTokenizer.from_pretrained(policy)
    args = config_class(
        output_dir=str(out),
        use_cpu=True,
        bf16=False,
        learning_rate=3e-4,
        lr_scheduler_type="constant",
        per_device_train_batch_size=32,
        max_new_tokens=10,  # "3 + 4 = 7<|im_end|>" fits
        temperature=1.0,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        seed=42,
        **config,
    )
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer = trainer_class(
            model=str(policy),
            reward_funcs=graded_arithmetic_reward,
            args=args,
            train_dataset=prompts["train"],
            processing_class=tokenizer,
        )

        def solved():
            trainer.model.eval()
            return {
                split: greedy_solved_fraction(trainer.model, tokenizer, prompts[split])
                for split in ("train", "test")
            }

        before = solved()
        trainer.train()
        after = solved()
    finally:
        torch.set_num_threads(threads)
    return before, after, trainer.state.log_history
