"""The GPU recipes (annotated_examples/recipes/<key>.yaml) and the launch options they rely on,
checked on CPU for what would cost a GPU day silently: updates lost to bf16 weights, runs with no
end, checkpoints with no bound, evaluation over a whole large split, deprecated settings, a
command from a script's header that does not parse, a resume that cannot find its checkpoint."""

import ast
import dataclasses
import importlib
import importlib.metadata
import re
import runpy
import shlex
import sys
import warnings
from types import SimpleNamespace

import datasets
import pytest
import torch
import yaml
from support.processes import REPO
from support.script_runs import RUNS
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
    TrainingArguments,
)
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config

import annotated_trl.invocation
from annotated_trl.data import ScriptArguments, eval_subset
from annotated_trl.invocation import InvocationError, parse_checked
from annotated_trl.methods import CPU_METHODS, METHODS

KEYS = [m.key for m in METHODS]
SCRIPTS = REPO / "annotated_examples"
RECIPES = SCRIPTS / "recipes"


def recipe(key: str) -> dict:
    return yaml.safe_load((RECIPES / f"{key}.yaml").read_text())


def share_moved_by_one_adamw_step(model, learning_rate: float) -> float:
    """The share of the weights one AdamW step changes at all. Adam's first step moves every
    weight by about the learning rate, whatever its gradient; a weight stored in bf16 keeps 8
    bits of mantissa, so steps far below its own size round back to the same value."""
    before = [p.detach().clone() for p in model.parameters()]
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        for p in model.parameters():
            p.grad = torch.randn_like(p)
    optimizer.step()
    moved = sum(
        (b != p.detach()).sum().item() for b, p in zip(before, model.parameters(), strict=True)
    )
    return moved / sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("key", KEYS)
def test_recipe_precision_moves_every_weight_at_its_learning_rate(key, tiny):
    settings = recipe(key)
    dtype = settings.get("dtype", "float32")  # ModelConfig's default
    model = AutoModelForCausalLM.from_pretrained(tiny.policy, dtype=getattr(torch, dtype))
    assert share_moved_by_one_adamw_step(model, settings["learning_rate"]) == 1.0


def test_bf16_weights_would_drop_most_updates_at_these_learning_rates(tiny):
    """Why the recipes keep float32 weights: measured on the tiny policy at DPO's 5e-7."""
    model = AutoModelForCausalLM.from_pretrained(tiny.policy, dtype=torch.bfloat16)
    assert share_moved_by_one_adamw_step(model, 5e-7) < 0.05


@pytest.mark.parametrize("key", KEYS)
def test_recipe_run_and_disk_are_bounded(key):
    """A run ends after one epoch or a step budget (TrainingArguments' default is 3 epochs: on
    DeepMath-103K, GRPO's 77,000 steps), and keeps a bounded number of checkpoints."""
    settings = recipe(key)
    assert settings.get("max_steps", -1) > 0 or settings.get("num_train_epochs", 3.0) <= 1
    if settings.get("save_strategy", "steps") != "no":
        assert settings.get("save_total_limit"), "a checkpoint every save_steps, none deleted"


# --- what each GPU recipe says of itself ------------------------------------------------------


def header_entries(text: str) -> dict[str, str]:
    """The `# Label: text` entries that open a recipe (a label's text goes on over indented
    `#   ` lines), up to the first other line."""
    entries, label = {}, None
    for line in text.splitlines():
        if line.startswith("#   ") and label:
            entries[label] += " " + line[4:]
        elif match := re.match(r"# (\w+): (.*)", line):
            label = match[1]
            entries[label] = match[2]
        else:
            break
    return entries


@pytest.mark.parametrize("key", KEYS)
def test_recipe_states_its_length_gpu_and_time(key):
    """Three entries at the top: how long, on which GPU, and an estimated time (how it is
    estimated: docs/distributed.md#how-long-a-recipe-runs)."""
    entries = header_entries((RECIPES / f"{key}.yaml").read_text())
    assert list(entries)[:3] == ["Length", "GPU", "Time"], entries
    assert re.search(r"\d", entries["Length"]) and re.search(r"\dx ", entries["GPU"])
    time = entries["Time"]
    assert re.search(r"\d", time) and "estimated" in time and "how-long-a-recipe-runs" in time


@pytest.mark.parametrize("key", KEYS)
def test_recipe_evaluates_on_a_subset(key):
    """A recipe that evaluates names how many test rows each evaluation scores, or has a test
    split small enough (SFT: Capybara's) to score whole."""
    settings = recipe(key)
    if settings.get("eval_strategy", "no") != "no" and key != "sft":
        assert settings.get("eval_max_samples", 0) > 0


# --- deprecated settings ----------------------------------------------------------------------


class Parsed(Exception):
    """The script got past parsing; carries (parser, parsed dataclasses, warnings)."""


def parse_like_the_script(monkeypatch, script: str, args: list[str]):
    """Run `script` in-process (as `python script args` from the repo root) up to its parse,
    which runs every check of `parse_or_exit` but the model paths (Hub ids are not cached here,
    `tiny/` is not built here) and bf16's need for a GPU (`--use_cpu true` is added)."""
    monkeypatch.chdir(REPO)
    monkeypatch.setattr(annotated_trl.invocation, "_check_models", lambda parser, values: None)

    def tripwire(parser, argv=None):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            parsed = parse_checked(parser, [*sys.argv[1:], "--use_cpu", "true"])
        raise Parsed(parser, parsed, caught)

    monkeypatch.setattr(annotated_trl.invocation, "parse_or_exit", tripwire)
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *args])
    with pytest.raises(Parsed) as done:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    return done.value.args


RECIPE_FILES = sorted(path.stem for path in RECIPES.glob("*.yaml"))


@pytest.mark.parametrize("name", RECIPE_FILES)
def test_recipe_uses_no_deprecated_setting(name, monkeypatch):
    """No key the config classes mark deprecated (transformers 5.23: gradient_checkpointing, now
    activation_checkpointing), and parsing the recipe raises no deprecation warning, including
    those a config's own default triggers (TRL's configs default gradient_checkpointing to True)."""
    script = f"{name.removesuffix('_tiny')}_training.py"
    path = RECIPES / f"{name}.yaml"
    parser, _, caught = parse_like_the_script(monkeypatch, script, ["--config", str(path)])
    # By their help text, in the script's parser and in TrainingArguments itself (the ports'
    # configs redeclare gradient_checkpointing with help of their own).
    helps = [(a.dest, a.help) for a in parser._actions]
    helps += [(f.name, f.metadata.get("help")) for f in dataclasses.fields(TrainingArguments)]
    deprecated = {name for name, text in helps if str(text or "").lower().startswith("deprecated")}
    assert "gradient_checkpointing" in deprecated
    assert not deprecated & set(yaml.safe_load(path.read_text())), deprecated
    messages = [
        str(w.message)
        for w in caught
        if issubclass(w.category, (FutureWarning, DeprecationWarning))
    ]
    assert not [m for m in messages if "deprecated" in m.lower()], messages


# --- every command in the scripts' headers and on the distributed page parses -------------------


def _commands(text: str) -> list[list[str]]:
    """The example-script invocations in the ```bash blocks of `text`, as argument lists."""
    found = []
    for block in re.findall(r"```bash[^\n]*\n(.*?)```", text, re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if "_training.py" not in line or line.startswith("#") or "$" in line:
                continue
            found.append(shlex.split(line))
    return found


def _invocations():
    cases = []
    sources = {
        p.name: ast.get_docstring(ast.parse(p.read_text())) for p in SCRIPTS.glob("*_training.py")
    }
    sources["docs/distributed.md"] = (REPO / "docs" / "distributed.md").read_text()
    for source, text in sorted(sources.items()):
        for i, words in enumerate(_commands(text)):
            at = next(j for j, w in enumerate(words) if w.endswith("_training.py"))
            processes = (
                words[words.index("--num_processes") + 1]
                if "--num_processes" in words[:at]
                else "1"
            )
            cases.append(
                pytest.param(
                    words[at].split("/")[-1], words[at + 1 :], processes, id=f"{source}-{i}"
                )
            )
    return cases


INVOCATIONS = _invocations()

# Which fixture model stands for a script's policy when a LoRA command is checked.
LORA_MODELS = {
    "prm": (AutoModelForTokenClassification, "token_classifier"),
    "reward": (AutoModelForSequenceClassification, "reward"),
}


def test_the_headers_hold_the_commands_we_expect():
    """Every script's header has its commands (one GPU, 8 GPUs, LoRA), SFT's a QLoRA one."""
    scripts = {case.values[0] for case in INVOCATIONS}
    assert scripts == {f"{key}_training.py" for key in KEYS}
    assert len(INVOCATIONS) >= 62
    assert any(
        "--load_in_4bit" in case.values[1]
        for case in INVOCATIONS
        if case.values[0] == "sft_training.py"
    )


@pytest.mark.parametrize(("script", "args", "processes"), INVOCATIONS)
def test_documented_command_parses(script, args, processes, monkeypatch, tiny):
    """Each command parses as the script parses it; a LoRA command's adapters also wrap the
    matching tiny model (peft refuses, for instance, `all-linear` on PRM's token classifier: it
    would put adapters on the head that task type TOKEN_CLS trains in full)."""
    # The process count as `accelerate launch` would export it, seen by the GRPO/RLOO batch
    # check only (WORLD_SIZE in this process's environment would start torch.distributed).
    environ = {"WORLD_SIZE": processes}
    monkeypatch.setattr(annotated_trl.invocation, "os", SimpleNamespace(environ=environ))
    _, parsed, _ = parse_like_the_script(monkeypatch, script, args)
    # (Async GRPO's script takes no ModelConfig: its trainer loads the model from a name.)
    model_args = next((a for a in parsed if isinstance(a, ModelConfig)), None)
    if model_args is not None and model_args.use_peft:
        from peft import get_peft_model

        model_class, folder = LORA_MODELS.get(
            script.removesuffix("_training.py"), (AutoModelForCausalLM, "policy")
        )
        model = get_peft_model(
            model_class.from_pretrained(tiny.root / folder), get_peft_config(model_args)
        )
        assert any("lora_A" in name for name, _ in model.named_parameters())


def test_vllm_is_installed_through_trls_extra():
    """Every `pip install` of vLLM goes through TRL's `vllm` extra at the pinned TRL, and the
    versions we state are the extra's (from the installed trl's metadata)."""
    pin = next(
        r for r in importlib.metadata.requires("trl") if r.startswith("vllm") and "extra" in r
    )
    low, high = re.search(r">=([\d.]+)", pin)[1], re.search(r"<=([\d.]+)", pin)[1]
    files = [*SCRIPTS.glob("*.py"), *RECIPES.glob("*.yaml"), *(REPO / "docs").glob("*.md")]
    for path in files:
        for line in path.read_text().splitlines():
            if "pip install" in line and "vllm" in line:
                assert re.search(r'"trl\[[\w,-]*vllm[\w,-]*\]==1\.16\.0"', line), (
                    f"{path.name}: {line}"
                )
        if re.search(r"trl\[[\w,-]*vllm", path.read_text()):
            assert low in path.read_text() and high in path.read_text(), path.name


# --- --eval_max_samples -----------------------------------------------------------------------


class Built(Exception):
    """The script built its trainer; carries the keyword arguments it passed."""


def _trainer_import(script: str) -> tuple[str, str]:
    """(module, class name) of the trainer the script imports."""
    trainer = next(m.trainer for m in METHODS if f"{m.key}_training.py" == script)
    for node in ast.walk(ast.parse((SCRIPTS / script).read_text())):
        if isinstance(node, ast.ImportFrom) and any(a.name == trainer for a in node.names):
            return node.module, trainer
    raise AssertionError(f"{script} imports no {trainer}")


@pytest.mark.parametrize("key", [m.key for m in CPU_METHODS])
def test_eval_max_samples_limits_the_eval_split(key, tiny, tmp_path, monkeypatch):
    """The script hands its trainer 3 rows of the test split, not all of them."""
    script = f"{key}_training.py"
    module, name = _trainer_import(script)

    def built(*args, **kwargs):
        raise Built(kwargs)

    monkeypatch.setattr(importlib.import_module(module), name, built)
    data, extra = RUNS[key]
    args = [
        *["--config", RECIPES / f"{key}_tiny.yaml", "--dataset_name", tiny.data / data],
        *["--model_name_or_path", tiny.policy, *[flag.format(tiny=tiny.root) for flag in extra]],
        *["--output_dir", tmp_path, "--eval_strategy", "steps", "--eval_steps", "1"],
        *["--eval_max_samples", "3"],
    ]
    monkeypatch.setattr(sys, "argv", [str(SCRIPTS / script), *map(str, args)])
    with pytest.raises(Built) as done:
        runpy.run_path(str(SCRIPTS / script), run_name="__main__")
    test_rows = datasets.load_dataset("json", data_files=str(tiny.data / data / "test.jsonl"))[
        "train"
    ]
    assert len(done.value.args[0]["eval_dataset"]) == 3 < len(test_rows)


def test_eval_subset_draws_with_the_seed():
    rows = datasets.Dataset.from_dict({"i": list(range(100))})
    picked = eval_subset(rows, 5, seed=0)["i"]
    assert picked == eval_subset(rows, 5, seed=0)["i"] != eval_subset(rows, 5, seed=1)["i"]
    assert picked != list(range(5)) and len(set(picked)) == 5
    assert eval_subset(rows, None, seed=0) is rows and eval_subset(rows, 500, seed=0) is rows


def _sft_parser():
    return TrlParser((ScriptArguments, SFTConfig, ModelConfig))


def _cpu(tiny, out) -> list[str]:
    return [
        *["--model_name_or_path", str(tiny.policy), "--output_dir", str(out)],
        *["--use_cpu", "true", "--bf16", "false", "--activation_checkpointing", "false"],
    ]


def test_eval_max_samples_refuses_zero(tiny, tmp_path):
    with pytest.raises(InvocationError, match="--eval_max_samples 0: expected a number"):
        parse_checked(_sft_parser(), [*_cpu(tiny, tmp_path), "--eval_max_samples", "0"])


# --- --resume_from_checkpoint true ----------------------------------------------------------


def _checkpoint(out, step: int, complete: bool = True):
    folder = out / f"checkpoint-{step}"
    folder.mkdir(parents=True)
    if complete:
        (folder / "trainer_state.json").write_text("{}")
    return folder


def _resume(tiny, out, value: str):
    parsed = parse_checked(_sft_parser(), [*_cpu(tiny, out), "--resume_from_checkpoint", value])
    return parsed[1].resume_from_checkpoint


def test_resume_true_takes_the_newest_complete_checkpoint(tiny, tmp_path):
    """Newest by step number (10 > 9), skipping a save cut short (no trainer_state.json)."""
    out = tmp_path / "run"
    _checkpoint(out, 9)
    newest = _checkpoint(out, 10)
    _checkpoint(out, 12, complete=False)
    (out / "checkpoint-final").mkdir()
    assert _resume(tiny, out, "true") == str(newest)
    assert _resume(tiny, out, "True") == str(newest)


def test_resume_false_and_a_path(tiny, tmp_path):
    out = tmp_path / "run"
    folder = _checkpoint(out, 5)
    assert _resume(tiny, out, "false") is None
    assert _resume(tiny, out, str(folder)) == str(folder)


@pytest.mark.parametrize("what", ["no-folder", "empty", "incomplete-only"])
def test_resume_true_without_a_checkpoint_is_refused(what, tiny, tmp_path):
    out = tmp_path / "run"
    if what != "no-folder":
        out.mkdir()
    if what == "incomplete-only":
        _checkpoint(out, 3, complete=False)
    with pytest.raises(InvocationError) as refused:
        _resume(tiny, out, "true")
    message = str(refused.value)
    assert message.startswith(f"--resume_from_checkpoint true: {out} holds no complete checkpoint")
    assert "\n" not in message


def test_resume_path_that_is_not_a_folder_is_refused(tiny, tmp_path):
    with pytest.raises(InvocationError, match="no such folder; expected a checkpoint folder"):
        _resume(tiny, tmp_path / "run", str(tmp_path / "run" / "checkpoint-7"))
