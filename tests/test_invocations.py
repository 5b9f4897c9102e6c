"""Bad invocations: every script refuses a mistake in its command line or recipe with one line,
before any model or dataset loads (`annotated_trl.invocation.parse_or_exit`).

Every script × every class of mistake runs in-process (`runpy`, the same code path as
`python script.py`), with `parse_or_exit` wrapped in a tripwire: a mistake that got through it
fails the test at once instead of loading models and training. Four cases, across four
scripts, run as true subprocesses to check what a user sees.
"""

import ast
import inspect
import re
import runpy
import sys

import huggingface_hub
import pytest
import torch
from support.processes import REPO, run_script_warm

import annotated_trl.invocation
from annotated_trl.invocation import CHOICES, MODEL_FLAGS, check_model_path, closest, parse_or_exit
from annotated_trl.methods import BY_KEY, CPU_METHODS

KEYS = [m.key for m in CPU_METHODS]
SCRIPTS = REPO / "annotated_examples"
RECIPES = SCRIPTS / "recipes"

# The model flags each script takes besides --model_name_or_path (and the fixture model that
# fits), from the method table.
EXTRA_MODELS = {
    m.key: {
        flag: model
        for flag, model in (*m.fixture.models, *m.fixture.optional_models)
        if flag != "model_name_or_path"
    }
    for m in CPU_METHODS
}
MODEL_CASES = [(key, "model_name_or_path") for key in KEYS]
MODEL_CASES += [(key, flag) for key, flags in EXTRA_MODELS.items() for flag in flags]


class Parsed(Exception):
    """The script got past parsing: nothing refused the invocation."""


def _tripwire(parser, args=None):
    """parse_or_exit, then stop: the script was not refused."""
    raise Parsed(parse_or_exit(parser, args))


def good_args(key, tiny, out) -> list:
    """The tiny recipe with every model path pointing into the fixture: a good invocation."""
    policy = tiny.root / BY_KEY[key].fixture.policy
    models = [f"--{flag}={tiny.root / name}" for flag, name in EXTRA_MODELS[key].items()]
    return [
        *["--config", RECIPES / f"{key}_tiny.yaml", "--model_name_or_path", policy],
        *["--dataset_name", tiny.data / BY_KEY[key].fixture.data, *models, "--output_dir", out],
    ]


def refusal(monkeypatch, key, args) -> str:
    """Run `<key>_training.py args` in-process; return the one line it exits with."""
    script = SCRIPTS / f"{key}_training.py"
    monkeypatch.setattr(annotated_trl.invocation, "parse_or_exit", _tripwire)
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(script), run_name="__main__")
    message = exit_info.value.code
    assert isinstance(message, str), f"expected an error message, got exit code {message!r}"
    assert message.startswith("error: ") and "\n" not in message, message
    return message


@pytest.fixture
def offline(monkeypatch):
    """HF_HUB_OFFLINE=1 as the libraries see it (they read it once, at import)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _with_flag(args: list, flag: str, value) -> list:
    """`args` with `--flag value` replacing any earlier value of the flag."""
    kept = [a for a in args if not str(a).startswith(f"--{flag}=")]
    if f"--{flag}" in kept:
        at = kept.index(f"--{flag}")
        kept = kept[:at] + kept[at + 2 :]
    return [*kept, f"--{flag}", value]


# --- a good invocation is not refused -------------------------------------------------------


@pytest.mark.badinput
@pytest.mark.parametrize("key", KEYS)
def test_tiny_recipe_parses(key, tiny, tmp_path, monkeypatch, offline):
    script = SCRIPTS / f"{key}_training.py"
    monkeypatch.setattr(annotated_trl.invocation, "parse_or_exit", _tripwire)
    monkeypatch.setattr(sys, "argv", [str(script), *map(str, good_args(key, tiny, tmp_path))])
    with pytest.raises(Parsed):
        runpy.run_path(str(script), run_name="__main__")


# --- model paths ----------------------------------------------------------------------------


def _not_a_model(tmp_path):
    folder = tmp_path / "notes"
    folder.mkdir()
    (folder / "README.md").write_text("not a model\n")
    return folder


def _a_file(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"\0")
    return path


MODEL_MISTAKES = {
    "missing-folder": (lambda tmp_path: tmp_path / "no-such-model", "no such folder"),
    "a-file": (_a_file, "is a file"),
    "not-a-model": (_not_a_model, "no config.json"),
    "uncached-hub-id": (lambda tmp_path: "nobody-here/no-such-model", "local cache"),
}


@pytest.mark.badinput
@pytest.mark.parametrize("mistake", MODEL_MISTAKES)
@pytest.mark.parametrize(("key", "flag"), MODEL_CASES, ids=[f"{k}-{f}" for k, f in MODEL_CASES])
def test_refuses_bad_model_path(key, flag, mistake, tiny, tmp_path, monkeypatch, offline):
    make, words = MODEL_MISTAKES[mistake]
    value = make(tmp_path)
    out = tmp_path / "out"
    message = refusal(monkeypatch, key, _with_flag(good_args(key, tiny, out), flag, value))
    assert f"--{flag} {value}:" in message and words in message, message
    assert not out.exists()


def test_hub_ids_are_left_alone_online(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    check_model_path("--model_name_or_path", "nobody-here/no-such-model")


def test_cached_hub_id_is_accepted_offline(tmp_path, monkeypatch, offline):
    """A Hub id in the local cache (the layout `hf download` writes) passes offline."""
    commit = "0" * 40
    repo = tmp_path / "models--someone--tiny"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / "config.json").write_text("{}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    check_model_path("--model_name_or_path", "someone/tiny", "main")
    with pytest.raises(ValueError, match="local cache"):
        check_model_path("--model_name_or_path", "someone/other")


def test_every_model_flag_is_checked():
    """The test's table and the module's agree: no model flag of a script goes unchecked."""
    tested = {"model_name_or_path"} | {f for flags in EXTRA_MODELS.values() for f in flags}
    assert tested == set(MODEL_FLAGS)


# --- the recipe file and the flags ----------------------------------------------------------


def _typo_recipe(key, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text((RECIPES / f"{key}_tiny.yaml").read_text() + "learning_rat: 1.0e-3\n")
    return recipe


def _broken_yaml(key, tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model_name_or_path: tiny/policy\nloss_type: [sigmoid\n")
    return recipe


CONFIG_MISTAKES = {
    "missing-file": (lambda key, tmp_path: tmp_path / "no-such.yaml", ["no such file"]),
    "not-yaml": (_broken_yaml, ["not valid YAML", "line 3"]),
    "unknown-key": (_typo_recipe, ["unknown key learning_rat", "did you mean learning_rate?"]),
}


@pytest.mark.badinput
@pytest.mark.parametrize("mistake", CONFIG_MISTAKES)
@pytest.mark.parametrize("key", KEYS)
def test_refuses_bad_config(key, mistake, tiny, tmp_path, monkeypatch):
    make, words = CONFIG_MISTAKES[mistake]
    recipe = make(key, tmp_path)
    out = tmp_path / "out"
    args = ["--config", recipe, *good_args(key, tiny, out)[2:]]
    message = refusal(monkeypatch, key, args)
    assert f"--config {recipe}: " in message, message
    assert all(word in message for word in words), message
    assert not out.exists()


@pytest.mark.badinput
@pytest.mark.parametrize("key", KEYS)
def test_refuses_unknown_flag(key, tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    message = refusal(monkeypatch, key, [*good_args(key, tiny, out), "--lerning_rate", "1e-3"])
    assert message == "error: unknown flag --lerning_rate; did you mean --learning_rate?"
    assert not out.exists()


@pytest.mark.badinput
@pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has an accelerator")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
@pytest.mark.parametrize("key", KEYS)
def test_refuses_mixed_precision_without_gpu(key, precision, tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [*good_args(key, tiny, out), f"--{precision}", "true", "--use_cpu", "false"]
    if precision == "fp16":
        args += ["--bf16", "false"]
    message = refusal(monkeypatch, key, args)
    assert message.startswith(f"error: --{precision} is on but this machine has no GPU"), message
    assert f"`--{precision} false --use_cpu true`" in message and "_tiny.yaml" in message
    assert not out.exists()


@pytest.mark.badinput
@pytest.mark.skipif(torch.accelerator.is_available(), reason="this machine has an accelerator")
def test_refuses_bf16_by_default_without_gpu(tiny, tmp_path, monkeypatch):
    """A recipe that does not mention bf16 gets TRL's default, bf16 on: the line says so."""
    recipe = tmp_path / "recipe.yaml"
    text = (RECIPES / "dpo_tiny.yaml").read_text()
    recipe.write_text(re.sub(r"^(bf16|use_cpu):.*$", "", text, flags=re.M))
    out = tmp_path / "out"
    args = ["--config", recipe, *good_args("dpo", tiny, out)[2:]]
    message = refusal(monkeypatch, "dpo", args)
    assert message.startswith("error: --bf16 is on (TRL's default) but this machine has no GPU")


@pytest.mark.badinput
@pytest.mark.parametrize("key", KEYS)
def test_config_errors_are_one_line(key, tiny, tmp_path, monkeypatch):
    """What a config's own __post_init__ refuses (here TrainingArguments') is one line too."""
    out = tmp_path / "out"
    args = [*good_args(key, tiny, out), "--lr_scheduler_type", "reduce_lr_on_plateau"]
    message = refusal(monkeypatch, key, [*args, "--eval_strategy", "no"])
    assert message.startswith("error: invalid settings: "), message
    assert "reduce_lr_on_plateau requires an eval strategy" in message
    assert not out.exists()


# --- choices the trainer would only reject after loading ------------------------------------

CHOICE_CASES = {
    "dpo": ("loss_type", "sigmoidd", "did you mean 'sigmoid'?"),
    "grpo": ("loss_type", "dr-grpo", "did you mean 'dr_grpo'?"),
    "rloo": ("num_generations", "5", "generation batch of 32 completions"),
}
CHOICE_CASES["grpo-generations"] = ("num_generations", "3", "expected one of 2, 4, 8, 16, 32")
CHOICE_CASES["grpo-one-generation"] = ("num_generations", "1", "at least 2")


@pytest.mark.badinput
@pytest.mark.parametrize("case", CHOICE_CASES)
def test_refuses_invalid_choice(case, tiny, tmp_path, monkeypatch):
    key = case.split("-")[0]
    flag, value, words = CHOICE_CASES[case]
    out = tmp_path / "out"
    message = refusal(monkeypatch, key, [*good_args(key, tiny, out), f"--{flag}", value])
    assert message.startswith(f"error: --{flag} {value}: "), message
    assert words in message, message
    assert not out.exists()


@pytest.mark.badinput
def test_refuses_num_generations_for_eval(tiny, tmp_path, monkeypatch):
    out = tmp_path / "out"
    args = [*good_args("grpo", tiny, out), "--eval_strategy", "steps"]
    args += ["--per_device_eval_batch_size", "6", "--num_generations_eval", "4"]
    message = refusal(monkeypatch, "grpo", args)
    assert message.startswith("error: --num_generations_eval 4: must divide the evaluation batch")


@pytest.mark.badinput
@pytest.mark.parametrize("key", ["sft", "kto", "cpo", "online_dpo"])
def test_declared_choices_are_one_line(key, tiny, tmp_path, monkeypatch):
    """Configs that declare their choices are refused by argparse: one line, no usage text."""
    out = tmp_path / "out"
    message = refusal(monkeypatch, key, [*good_args(key, tiny, out), "--loss_type", "nope"])
    assert message.startswith("error: argument --loss_type/--loss-type: invalid choice: 'nope'")
    assert not out.exists()


def test_choices_are_the_trainers():
    """Each allowed value is one the trainer handles (TRL 1.16); DPO's error lists them all."""
    import trl.trainer.dpo_trainer
    import trl.trainer.grpo_trainer

    source = re.sub(r'"\s*\n\s*"', "", inspect.getsource(trl.trainer.dpo_trainer))
    listed = re.search(r"Should be one of (\[.*?\])\"", source).group(1)
    assert set(ast.literal_eval(listed)) == set(CHOICES["DPOConfig"]["loss_type"])
    source = inspect.getsource(trl.trainer.grpo_trainer)
    for value in CHOICES["GRPOConfig"]["loss_type"]:
        assert f'"{value}"' in source, value


# --- the closest-name suggestion ------------------------------------------------------------


def test_closest_name():
    names = ["learning_rate", "lr_scheduler_type", "loss_type", "beta", "max_length"]
    assert closest("learning_rat", names) == "learning_rate"
    assert closest("los_type", names) == "loss_type"
    assert closest("max_len", names) == "max_length"
    assert closest("zzzzzz", names) is None


# --- what a user sees: real processes (forked warm: support.processes.run_script_warm) --------

USER_CASES = {
    # DPO accepted an unknown loss, loaded models and data and died at step 1.
    "dpo-loss-type": ("dpo", ["--loss_type", "sigmoidd"], "--loss_type sigmoidd"),
    # GRPOConfig raised a ValueError, with a traceback, while parsing.
    "grpo-num-generations": ("grpo", ["--num_generations", "5"], "--num_generations 5"),
    # transformers: "Repo id must be in the form 'repo_name' or 'namespace/repo_name'".
    "gkd-teacher-folder": ("gkd", ["--teacher_model_name_or_path", "{tmp}/t/e/acher"], "--teacher"),
    # The tests run offline (HF_HUB_OFFLINE=1), where an uncached Hub id cannot load.
    "ppo-value-hub-id": ("ppo", ["--value_model_path", "nobody-here/value"], "--value_model_path"),
}


@pytest.mark.badinput
@pytest.mark.parametrize("case", USER_CASES)
def test_user_sees_one_line(case, tiny, tmp_path):
    key, extra, flag = USER_CASES[case]
    out = tmp_path / "out"
    extra = [arg.format(tmp=tmp_path) for arg in extra]
    result = run_script_warm(f"{key}_training.py", *good_args(key, tiny, out), *extra)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {flag}"), result.stderr[-3000:]
    assert not out.exists()
