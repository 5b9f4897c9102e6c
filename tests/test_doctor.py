"""`annotated-trl doctor`: every method's tiny recipe passes on the offline fixture, and each check
turns a known mistake into its finding (level, plain sentence, fix, troubleshooting entry).

Everything runs in-process on the session's tiny fixture; one case runs the command as a user
does (a subprocess), to check what they see and the exit status.
"""

import json
import os
import re
import shutil
import subprocess
import sys

import pytest
import yaml
from support.processes import OFFLINE_ENV, REPO
from transformers import AutoTokenizer

from annotated_trl import cli
from annotated_trl.doctor import (
    ERROR,
    OK,
    TOPICS,
    WARN,
    DoctorError,
    Subject,
    check_generation_batch,
    check_generation_markers,
    check_pad_token,
    exit_code,
    read_settings,
    run_doctor,
)
from annotated_trl.fixtures import CHAT_TEMPLATE, EOS, PAD
from annotated_trl.methods import BY_KEY, CPU_METHODS

pytestmark = pytest.mark.badinput

RECIPES = REPO / "annotated_examples" / "recipes"


def tiny_recipe(key: str, tiny, tmp_path, **changes) -> str:
    """The method's tiny recipe pointing into this session's fixture, with `changes` applied."""
    recipe = yaml.safe_load((RECIPES / f"{key}_tiny.yaml").read_text())
    for flag in ("model_name_or_path", "dataset_name"):
        recipe[flag] = recipe[flag].replace("tiny", str(tiny.root), 1)
    path = tmp_path / f"{key}.yaml"
    path.write_text(yaml.safe_dump(recipe | changes))
    return str(path)


def by_topic(findings, topic: str) -> list:
    return [f for f in findings if f.topic == topic]


@pytest.fixture
def qwen_base_like(tiny, tmp_path):
    """The tiny policy saved as a Qwen2.5 base model is: ChatML template (turns end with
    <|im_end|>), but eos = pad = <|endoftext|>, and generation stops at <|endoftext|> only."""
    model = tmp_path / "base-like"
    shutil.copytree(tiny.policy, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.eos_token = PAD
    tokenizer.save_pretrained(model)
    generation = json.loads((model / "generation_config.json").read_text())
    generation["eos_token_id"] = tokenizer.convert_tokens_to_ids(PAD)
    (model / "generation_config.json").write_text(json.dumps(generation))
    return model


# --- every method: the tiny recipe passes -----------------------------------------------------


@pytest.mark.parametrize("key", [m.key for m in CPU_METHODS])
def test_tiny_recipe_is_healthy(key, tiny, tmp_path):
    findings = run_doctor(key, tiny_recipe(key, tiny, tmp_path))
    assert exit_code(findings) == 0, [f for f in findings if f.level != OK]
    assert [f for f in findings if f.level == WARN] == []
    topics = {f.topic for f in findings}
    assert {"model", "dataset", "pad-token", "lengths", "memory"} <= topics
    assert all(f.page.startswith("troubleshooting.md#doctor-") for f in findings)


@pytest.mark.parametrize("key", [m.key for m in CPU_METHODS])
def test_truncating_most_rows_is_an_error(key, tiny, tmp_path):
    """A max_length far below the data's lengths cuts most rows, whatever the method. GRPO, RLOO,
    Distillation and PPO have none: they truncate what they generate, not the data, and the
    doctor reports how long prompt + generation gets."""
    has_limit = read_settings(BY_KEY[key], tiny_recipe(key, tiny, tmp_path)).get("max_length")
    findings = run_doctor(
        key, tiny_recipe(key, tiny, tmp_path, **({"max_length": 4} if has_limit else {}))
    )
    lengths = by_topic(findings, "lengths")
    if not has_limit:
        assert [f.level for f in lengths] == [OK] and "a sequence reaches" in lengths[0].message
        return
    cut = [f for f in lengths if f.message.startswith("max_length 4 cuts")]
    assert [f.level for f in cut] == [ERROR], lengths
    assert "raise max_length" in cut[0].fix
    assert exit_code(findings) == 2


# --- 1. GRPO/RLOO batch arithmetic ----------------------------------------------------------


@pytest.mark.parametrize("key", ["grpo", "rloo"])
def test_generations_that_do_not_divide_the_batch(key, tiny, tmp_path):
    findings = run_doctor(key, tiny_recipe(key, tiny, tmp_path, num_generations=7))
    [batch] = by_topic(findings, "generation-batch")
    assert batch.level == ERROR
    assert "does not divide the generation batch of 32 completions" in batch.message
    # The nearest valid values either way: 8 divides 32; 28 and 35 are multiples of 7.
    assert batch.fix == "num_generations 8 or 4, or per_device_train_batch_size 35 or 28"
    assert exit_code(findings) == 2


def _subject(key: str, **settings) -> Subject:
    defaults = {"gradient_accumulation_steps": 1, "eval_strategy": "no", "num_iterations": 1}
    defaults |= {"steps_per_generation": None, "generation_batch_size": None}
    return Subject(BY_KEY[key], defaults | settings)


def test_batch_arithmetic_counts_completions_and_processes():
    subject = _subject(
        "grpo", per_device_train_batch_size=8, gradient_accumulation_steps=4, num_generations=8
    )
    subject.num_processes = 2
    [finding] = check_generation_batch(subject)
    assert finding.level == OK
    assert "counts completions, not prompts" in finding.message
    assert "makes 64 completions" in finding.message and "= 8 prompts × 8" in finding.message
    assert "sees 8 new prompts' worth" in finding.message
    # The same settings on 3 processes: 96 completions, which 8 divides; on 1, 32, which 6 does not.
    subject.settings["num_generations"] = 6
    subject.num_processes = 1
    [finding] = check_generation_batch(subject)
    assert finding.level == ERROR and "batch of 32 completions" in finding.message


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"num_generations": 1}, "at least 2"),
        ({"generation_batch_size": 12}, "not a multiple of the global batch"),
        ({"generation_batch_size": 16, "steps_per_generation": 2}, "both set"),
        ({"eval_strategy": "steps", "per_device_eval_batch_size": 6}, "evaluation batch"),
    ],
)
def test_batch_settings_the_config_refuses(settings, words):
    base = {"per_device_train_batch_size": 8, "num_generations": 4}
    findings = check_generation_batch(_subject("rloo", **base | settings))
    [error] = [f for f in findings if f.level == ERROR]
    assert words in error.message and error.fix


def test_batch_check_is_only_for_group_methods():
    assert check_generation_batch(Subject(BY_KEY["dpo"], {"per_device_train_batch_size": 8})) == []


# --- 2. chat template -----------------------------------------------------------------------


def test_assistant_only_loss_without_generation_markers(tiny):
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    tokenizer.chat_template = re.sub(r"\{% (end)?generation %\}", "", CHAT_TEMPLATE)
    subject = Subject(BY_KEY["sft"], {"assistant_only_loss": True}, tokenizer=tokenizer)
    [finding] = check_generation_markers(subject)
    assert finding.level == ERROR and "no {% generation %} markers" in finding.message
    assert "assistant_only_loss: false" in finding.fix
    subject.settings["assistant_only_loss"] = False
    assert check_generation_markers(subject) == []


def test_sft_on_a_base_model_that_would_never_stop(qwen_base_like, tiny, tmp_path):
    """The SFT recipe on Qwen2.5 base without `eos_token: '<|im_end|>'`: the model learns to end
    its turns with <|im_end|> but generation only stops at <|endoftext|>."""
    findings = run_doctor("sft", tiny_recipe("sft", tiny, tmp_path), model=str(qwen_base_like))
    [stop] = by_topic(findings, "stop-token")
    assert stop.level == ERROR and "never stops" in stop.message
    assert stop.fix == f"add `eos_token: '{EOS}'` to the recipe"
    assert [f.level for f in by_topic(findings, "pad-token")] == [WARN]
    assert exit_code(findings) == 2
    # The fix it names, applied: both findings go away.
    fixed = tiny_recipe("sft", tiny, tmp_path, eos_token=EOS)
    findings = run_doctor("sft", fixed, model=str(qwen_base_like))
    assert [f.level for f in by_topic(findings, "stop-token")] == [OK]
    assert [f.level for f in by_topic(findings, "pad-token")] == [OK]


def test_prefix_preservation_on_real_rows(tiny, tmp_path):
    """Conversational prompt/answer rows: the tiny template renders the prompt as a prefix."""
    recipe = tiny_recipe(
        "dpo", tiny, tmp_path, dataset_name=str(tiny.data / "conversational_preference")
    )
    [prefix] = by_topic(run_doctor("dpo", recipe), "prefix")
    assert prefix.level == OK


# --- 3. pad token ---------------------------------------------------------------------------


@pytest.mark.parametrize("pad", [EOS, None])
def test_pad_token_that_is_the_eos(tiny, pad):
    tokenizer = AutoTokenizer.from_pretrained(tiny.policy)
    tokenizer.pad_token = pad
    [finding] = check_pad_token(Subject(BY_KEY["dpo"], {}, tokenizer=tokenizer))
    assert finding.level == WARN and "never learn to stop" in finding.message
    assert finding.page == "troubleshooting.md#doctor-pad-token"


# --- 4. reward functions --------------------------------------------------------------------

REWARDS = """
def no_kwargs(completions):
    return [0.0 for _ in completions]

def wrong_length(completions, **kwargs):
    return [1.0]

def crashes(completions, **kwargs):
    raise KeyError("solution")

def right(completions, answer, **kwargs):
    return [float(len(c) > 0) for c in completions]
"""


@pytest.mark.parametrize(
    ("name", "level", "words"),
    [
        ("no_kwargs", ERROR, "unexpected keyword argument"),
        ("wrong_length", ERROR, "list of 1 for 2 completions"),
        ("crashes", ERROR, "raised KeyError"),
        ("missing", ERROR, "has no 'missing'"),
        ("right", OK, "scored two rows"),
    ],
)
def test_reward_functions_dry_run(name, level, words, tiny, tmp_path, monkeypatch):
    (tmp_path / "doctor_rewards.py").write_text(REWARDS)
    monkeypatch.syspath_prepend(str(tmp_path))
    recipe = tiny_recipe("grpo", tiny, tmp_path, reward_funcs=[f"doctor_rewards.{name}"])
    [finding] = by_topic(run_doctor("grpo", recipe), "rewards")
    assert finding.level == level and words in finding.message, finding.message


# --- the command ----------------------------------------------------------------------------


def test_every_topic_has_a_troubleshooting_entry():
    page = (REPO / "docs" / "troubleshooting.md").read_text()
    for topic in TOPICS:
        assert f"{{ #doctor-{topic} }}" in page, topic


def test_command_prints_findings_and_exits_2(tiny, tmp_path, capsys):
    recipe = tiny_recipe("grpo", tiny, tmp_path, num_generations=7)
    argv = ["doctor", "--method", "grpo", "--config", recipe, "--num_processes", "2"]
    assert cli.main(argv) == 2
    out = capsys.readouterr().out
    assert "batch of 64 completions" in out
    assert "see: docs/troubleshooting.md#doctor-generation-batch" in out
    assert out.rstrip().endswith("1 error, 0 warnings: fix the errors before the GPU job")


def test_unreadable_recipe_is_one_line_as_a_user_sees_it(tmp_path):
    """The one subprocess: what a user sees, and nothing imported in vain before it."""
    with pytest.raises(DoctorError, match="no such file"):
        run_doctor("sft", str(tmp_path / "missing.yaml"))
    done = subprocess.run(
        [sys.executable, "-m", "annotated_trl.cli", "doctor", "--method", "sft"]
        + ["--config", str(tmp_path / "missing.yaml")],
        cwd=REPO,
        env={**os.environ, **OFFLINE_ENV},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("error: --config") and "no such file" in done.stderr
    assert done.stderr.count("\n") == 1, done.stderr
