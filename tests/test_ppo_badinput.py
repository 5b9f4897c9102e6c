"""PPO bad input: prompt-only data that PPO cannot use, a pad token equal to EOS, or a request to
resume is refused with one line naming the file (or flag) and the problem, before any model is
loaded and before anything is written to --output_dir.

Each case runs the real script in-process (`runpy`, the same code path as `python script.py`,
see tests/support/bad_input.py).
What a user sees from a bare `python` process is checked for every script by
tests/test_badinput.py.
"""

import pytest
from support.bad_input import jsonl, refusal
from support.processes import REPO

SCRIPT = REPO / "annotated_examples" / "ppo_training.py"
RECIPE = REPO / "annotated_examples" / "recipes" / "ppo_tiny.yaml"

# name -> (file content, words the error line must contain)
CASES = {
    "ppo-preference-data": (
        jsonl([{"prompt": "What is 1 + 1?", "chosen": " 2", "rejected": " 3"}]),
        ["line 1", "preference data", "ppo cannot train on", '{"prompt": "..."}'],
    ),
    "ppo-missing-prompt": (
        jsonl([{"question": "What is 1 + 1?", "answer": 2}]),
        ["line 1", "ppo cannot train on", '{"prompt": "..."}'],
    ),
    "ppo-empty-file": ("", ["no rows", "expected rows like"]),
    "ppo-broken-json-line": (
        '{"prompt": "fine"}\n{"prompt": "broken\n',
        ["line 2", "not valid JSON"],
    ),
    "ppo-non-utf8": (
        b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n',
        ["line 2", "not valid UTF-8"],
    ),
    "ppo-wrong-prompt-type": (
        jsonl([{"prompt": "What is 1 + 1?"}, {"prompt": 7}]),
        ["line 2", 'column "prompt" is a number'],
    ),
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)


@pytest.mark.badinput
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_ppo_refuses_bad_data(tiny, tmp_path, monkeypatch, case):
    content, words = CASES[case]
    data, out = tmp_path / "data.jsonl", tmp_path / "out"
    _write(data, content)
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        *["--model_name_or_path", tiny.policy, "--reward_model_path", tiny.reward],
        *["--dataset_name", data, "--output_dir", out],
    )
    assert str(data) in message
    for word in words:
        assert word in message, message
    assert not out.exists()


@pytest.mark.badinput
def test_ppo_refuses_conversational_prompts_without_chat_template(
    tiny, tmp_path, monkeypatch, policy_without_chat_template
):
    out = tmp_path / "out"
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        *["--model_name_or_path", policy_without_chat_template, "--output_dir", out],
        *["--reward_model_path", tiny.reward],
        *["--dataset_name", tiny.data / "conversational_prompt_only"],
    )
    assert "conversational data needs a chat template" in message
    assert not out.exists()


@pytest.mark.badinput
def test_ppo_refuses_a_pad_token_equal_to_eos(tiny, tmp_path, monkeypatch):
    """PPO reads padding as the end of a response: a pad token that is EOS would hide every EOS."""
    import shutil

    from transformers import AutoTokenizer

    model_dir, out = tmp_path / "pad-is-eos", tmp_path / "out"
    shutil.copytree(tiny.policy, model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.save_pretrained(model_dir)
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        *["--model_name_or_path", model_dir, "--reward_model_path", tiny.reward],
        *["--dataset_name", tiny.data / "prompt_only", "--output_dir", out],
    )
    assert "pad token must exist and differ from its EOS token" in message
    assert not out.exists()


@pytest.mark.badinput
def test_ppo_refuses_to_resume_rather_than_restart_silently(tiny, tmp_path, monkeypatch):
    """PPO cannot resume; without the check it trained again from step 0 (measured under
    `accelerate launch`: the resumed run logged steps 1 and 2, episodes 16 and 32)."""
    checkpoint, out = tmp_path / "run" / "checkpoint-1", tmp_path / "out"
    checkpoint.mkdir(parents=True)
    message = refusal(
        monkeypatch,
        SCRIPT,
        RECIPE,
        *["--model_name_or_path", tiny.policy, "--reward_model_path", tiny.reward],
        *["--dataset_name", tiny.data / "prompt_only", "--output_dir", out],
        *["--resume_from_checkpoint", checkpoint],
    )
    assert f"--resume_from_checkpoint {checkpoint}: PPO cannot resume a run" in message
    assert not out.exists()
