"""Refuse a bad command line or recipe with one line, before any model or dataset loads.

Every example script parses its flags with `parse_or_exit(parser)` instead of
`parser.parse_args_and_config()`. It parses exactly as TRL does, but first checks, in
milliseconds and without loading anything:

- the `--config` file: it exists, is YAML, is a mapping, and every key is a flag of the script
  (a misspelt key names the closest real one);
- unknown or malformed flags, which argparse would answer with its usage text;
- the output folder (`annotated_trl.output.check_output_dir`): one we could not save to would
  otherwise fail at the first checkpoint, minutes or hours in;
- every model path the script takes (`--model_name_or_path`, the teacher, reward, value and
  embedding models): a folder with a `config.json`, or a Hub id (offline: one already in the
  local cache);
- mixed precision (`bf16`, TRL's default, or `fp16`) on a machine without a GPU;
- choices the trainer would only reject after loading everything (DPO's `loss_type`, ...) and
  GRPO/RLOO's `num_generations`, which must divide the generation batch.

`--resume_from_checkpoint true` becomes the newest complete `checkpoint-N` folder in the output
folder (`false`: none), as users expect from the name; transformers takes only a path from the
command line. With no checkpoint to resume from, or a path that is not a folder, it refuses.

Anything the configs themselves refuse (`__post_init__` raising ValueError or TypeError) becomes
one line too. Each problem is an `InvocationError`; `parse_or_exit` turns it into
`error: <message>` on stderr and exit status 1, like the scripts' dataset errors.
"""

import difflib
import os
import re
import sys
from pathlib import Path

import yaml

from annotated_trl.output import OutputDirError, check_output_dir

# The flags that name a model, and the flag holding the revision to look up in the Hub cache.
MODEL_FLAGS = {
    "model_name_or_path": "model_revision",
    "teacher_model_name_or_path": "teacher_model_revision",
    "reward_model_path": None,  # Online DPO, XPO, Nash-MD, PPO
    "reward_model_name_or_path": None,  # GRPO, RLOO
    "value_model_path": None,  # PPO
    "embedding_model": None,  # BCO's UDM
}
# What a model folder holds: a full model, or a LoRA adapter on top of one.
MODEL_FILES = ("config.json", "adapter_config.json")
EXPECTED_MODEL = "expected a model folder (with config.json) or a Hub id like Qwen/Qwen2-0.5B"

# Values that a config accepts as any string but its trainer only rejects once models and data
# are loaded (TRL 1.16; tests/test_invocations.py checks them against the trainers' source). The
# other configs declare their choices, and argparse refuses a wrong one. Keyed by config class
# name; a subclass inherits its parent's entry.
CHOICES = {
    "DPOConfig": {
        "loss_type": (
            *("sigmoid", "hinge", "ipo", "exo_pair", "nca_pair", "robust", "bco_pair"),
            *("sppo_hard", "aot", "aot_unpaired", "apo_zero", "apo_down", "discopop", "sft"),
            "sigmoid_norm",
        )
    },
    "GRPOConfig": {
        "loss_type": ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")
    },
}

TINY_RECIPES = "annotated_examples/recipes/<method>_tiny.yaml"


class InvocationError(ValueError):
    """The command line or the recipe is unusable. The message is one line."""


def parse_or_exit(parser, args: list[str] | None = None) -> tuple:
    """`parser.parse_args_and_config(args)`, or exit with one line naming the problem."""
    try:
        check_hardware(list(sys.argv[1:] if args is None else args))
        return parse_checked(parser, args)
    except InvocationError as error:
        sys.exit(f"error: {error}")


def check_hardware(args: list[str]) -> None:
    """A GPU-only method's script (its row's `gpu_only`) on a machine without CUDA: refuse first,
    before the flags (bf16's refusal would otherwise suggest `--use_cpu`). `--help` still works."""
    from annotated_trl.methods import BY_KEY

    key = Path(sys.argv[0]).name.removesuffix("_training.py")
    reason = BY_KEY[key].gpu_only if key in BY_KEY else ""
    if not reason or {"-h", "--help"} & set(args):
        return
    import torch

    if not torch.cuda.is_available():
        raise InvocationError(
            f"{key} needs CUDA GPUs and this machine has none: {reason}; "
            f"run it on GPUs as annotated_examples/recipes/{key}.yaml says"
        )


def parse_checked(parser, args: list[str] | None = None) -> tuple:
    """`parser.parse_args_and_config(args)` after the checks above; raise InvocationError."""
    args = list(sys.argv[1:] if args is None else args)
    flags, path, config = _split_config(args)
    known = _flags(parser)
    _check_names([str(key) for key in config], known, f"--config {path}: unknown key ", "")

    def refuse(message):  # argparse's own errors: one line, no usage text
        raise InvocationError(message.replace("\n", " "))

    parser.error = refuse  # this parser is the script's own, used once
    # The values every dataclass will be built from, before any of them is built (a config's
    # __post_init__ may raise first, with a message that names no flag).
    parser.set_defaults_with_config(**{k: v for k, v in config.items() if k != "env"})
    values, unknown = parser.parse_known_args(flags)
    names = [arg.split("=")[0][2:] for arg in unknown if arg.startswith("--")]
    _check_names(names, known, "unknown flag --", "--")
    if unknown:
        raise InvocationError(f"unexpected argument {unknown[0]!r}; every flag starts with --")
    for check in (_check_precision, _check_choices, _check_generations):
        check(parser, values)
    try:
        parsed = parser.parse_args_and_config(args)
    except InvocationError:
        raise
    except (ValueError, TypeError, OSError, yaml.YAMLError) as error:
        raise InvocationError(f"invalid settings: {_one_line(error)}") from None
    # The output folder as the config resolved it (transformers' default when not given).
    for output_dir in {str(a.output_dir) for a in parsed if getattr(a, "output_dir", None)}:
        try:
            check_output_dir(output_dir)
        except OutputDirError as error:
            raise InvocationError(str(error)) from None
    _check_models(parser, values)
    for config in parsed:
        if getattr(config, "resume_from_checkpoint", None) is not None:
            config.resume_from_checkpoint = resolve_resume(
                config.resume_from_checkpoint, config.output_dir
            )
    return parsed


def resolve_resume(value: str, output_dir: str) -> str | None:
    """The checkpoint `--resume_from_checkpoint value` means: a folder as given, `true` the newest
    complete checkpoint in `output_dir`, `false` none. Raise InvocationError when there is none."""
    flag = f"--resume_from_checkpoint {value}"
    if value.lower() == "false":
        return None
    if value.lower() != "true":
        if not Path(value).expanduser().is_dir():
            raise InvocationError(
                f"{flag}: no such folder; expected a checkpoint folder like "
                f"{Path(output_dir) / 'checkpoint-500'}, or true for the newest in --output_dir"
            )
        return value
    last = last_checkpoint(output_dir)
    if last is None:
        raise InvocationError(
            f"{flag}: {output_dir} holds no complete checkpoint-N folder to resume from; "
            "expected the --output_dir of an earlier run that saved one (save_steps), or drop the "
            "flag to start from scratch"
        )
    return last


def last_checkpoint(output_dir: str) -> str | None:
    """The newest `checkpoint-N` in `output_dir` that a save finished: transformers'
    `get_last_checkpoint`, skipping a folder without `trainer_state.json` (written last, so a run
    killed while saving leaves a newest folder that cannot be resumed from)."""
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    folder = Path(output_dir).expanduser()
    saved = {}  # step -> folder, for every complete checkpoint
    for path in folder.iterdir() if folder.is_dir() else ():
        match = re.fullmatch(rf"{PREFIX_CHECKPOINT_DIR}-(\d+)", path.name)
        if match and (path / "trainer_state.json").is_file():
            saved[int(match[1])] = path
    return str(saved[max(saved)]) if saved else None


def closest(name: str, names) -> str | None:
    """The valid name most like `name` (a typo's fix), or None when nothing is close."""
    matches = difflib.get_close_matches(name, sorted(names), n=1)
    return matches[0] if matches else None


def _tiny_recipe() -> str:
    """The running script's tiny CPU recipe, e.g. annotated_examples/recipes/dpo_tiny.yaml."""
    script = Path(sys.argv[0])
    recipe = script.parent / "recipes" / f"{script.name.removesuffix('_training.py')}_tiny.yaml"
    found = script.name.endswith("_training.py") and recipe.is_file()
    return str(recipe) if found else TINY_RECIPES


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _flags(parser) -> set[str]:
    return {action.dest for action in parser._actions if action.dest != "help"}


def _split_config(args: list[str]) -> tuple[list[str], str | None, dict]:
    """The flags without `--config FILE`, the file, and its settings ({} without one)."""
    if "--config" not in args:
        return args, None, {}
    at = args.index("--config")
    if at + 1 == len(args):
        raise InvocationError(f"--config needs a file: expected a recipe like {_tiny_recipe()}")
    path = args[at + 1]
    flags = args[:at] + args[at + 2 :]
    expected = f"expected a YAML recipe like {_tiny_recipe()}"
    if not Path(path).exists():
        raise InvocationError(f"--config {path}: no such file; {expected}")
    if Path(path).is_dir():
        raise InvocationError(f"--config {path}: is a folder, not a file; {expected}")
    try:
        config = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise InvocationError(f"--config {path}: not a text file (not UTF-8); {expected}") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        problem = getattr(error, "problem", None) or _one_line(error)
        raise InvocationError(
            f"--config {path}: not valid YAML ({where}{problem}); {expected}"
        ) from None
    if config is None:
        return flags, path, {}
    if not isinstance(config, dict):
        raise InvocationError(
            f"--config {path}: holds {type(config).__name__}, not `key: value` lines; {expected}"
        )
    return flags, path, config


def _check_names(names: list[str], known: set[str], what: str, dashes: str) -> None:
    """Refuse a recipe key or a flag that no dataclass of the parser has: `what` + the first
    unknown name, and the closest known name (`dashes` before each, for flags)."""
    unknown = [name for name in names if name not in known | {"env"}]
    if not unknown:
        return
    name = unknown[0]
    guess = closest(name, known)
    hint = f"did you mean {dashes}{guess}?" if guess else "the script's --help lists them all"
    more = f" (and {', '.join(dashes + n for n in unknown[1:])})" if unknown[1:] else ""
    raise InvocationError(f"{what}{name}{more}; {hint}")


def _check_precision(parser, values) -> None:
    """bf16 (on by default in TRL's configs) or fp16 need a GPU unless `use_cpu` is set."""
    fp16 = bool(getattr(values, "fp16", False))
    bf16 = getattr(values, "bf16", False)
    default = bf16 is None  # TRL: bf16 = not fp16 when unset
    bf16 = not fp16 if bf16 is None else bool(bf16)
    if not (bf16 or fp16) or getattr(values, "use_cpu", False):
        return
    import torch
    from transformers.utils import is_torch_bf16_gpu_available, is_torch_xla_available

    flag = "--bf16" if bf16 else "--fp16"
    on = f"{flag} is on (TRL's default)" if default else f"{flag} is on"
    fix = f"pass `{flag} false --use_cpu true`, or use the tiny recipe {_tiny_recipe()}"
    has_gpu = torch.accelerator.is_available() or is_torch_xla_available()
    if not has_gpu:
        raise InvocationError(f"{on} but this machine has no GPU; to train on the CPU, {fix}")
    if bf16 and not (is_torch_bf16_gpu_available() or is_torch_xla_available()):
        raise InvocationError(
            f"{on} but this GPU does not support bfloat16 (it needs an Ampere or newer GPU); "
            "pass `--bf16 false --fp16 true`"
        )


def _check_choices(parser, values) -> None:
    """Refuse a value the trainer would reject only after loading models and data."""
    configs = [(t.__name__, cls.__name__) for t in parser.dataclass_types for cls in t.__mro__]
    for name, parent in configs:
        for flag, allowed in CHOICES.get(parent, {}).items():
            given = getattr(values, flag, None)
            for value in [given] if isinstance(given, str) else given or []:
                if value not in allowed:
                    guess = closest(value, allowed)
                    hint = f"did you mean {guess!r}? " if guess else ""
                    raise InvocationError(
                        f"--{flag} {value}: {name.removesuffix('Config')} has no such {flag}; "
                        f"{hint}expected one of {', '.join(allowed)}"
                    )


def _check_generations(parser, values) -> None:
    """GRPO/RLOO: every prompt's `num_generations` completions come in one generation batch."""
    generations = getattr(values, "num_generations", None)
    if generations is None or not hasattr(values, "steps_per_generation"):
        return
    processes = int(os.environ.get("WORLD_SIZE", "1"))
    per_device = values.per_device_train_batch_size
    if values.generation_batch_size is not None:
        if values.steps_per_generation is not None:
            return  # the config refuses both at once, with its own message
        batch = values.generation_batch_size
        made = f"--generation_batch_size {batch}"
    else:
        steps = values.steps_per_generation or values.gradient_accumulation_steps
        batch = per_device * processes * steps
        made = (
            f"per_device_train_batch_size {per_device} × {processes} "
            f"process{'es' if processes > 1 else ''} × steps_per_generation {steps}"
        )
    from annotated_trl.methods import BY_KEY

    # The method table says how few make sense (SDFT distils each answer on its own: 1).
    key = Path(sys.argv[0]).name.removesuffix("_training.py")
    if generations < (BY_KEY[key].min_generations if key in BY_KEY else 2):
        raise InvocationError(
            f"--num_generations {generations}: the advantages compare completions of one "
            f"prompt, so at least 2 are needed; expected a divisor of the generation batch "
            f"({batch}) from 2 up"
        )
    if batch % generations:
        raise InvocationError(
            f"--num_generations {generations}: must divide the generation batch of {batch} "
            f"completions ({made}); expected one of {_divisors(batch)}, or another batch size"
        )
    if str(getattr(values.eval_strategy, "value", values.eval_strategy)) != "no":
        eval_generations = values.num_generations_eval or generations
        eval_batch = values.per_device_eval_batch_size * processes
        if eval_batch % eval_generations:
            flag = "--num_generations_eval" if values.num_generations_eval else "--num_generations"
            raise InvocationError(
                f"{flag} {eval_generations}: must divide the evaluation batch of {eval_batch} "
                f"completions (per_device_eval_batch_size {values.per_device_eval_batch_size} × "
                f"{processes} process{'es' if processes > 1 else ''}); expected one of "
                f"{_divisors(eval_batch)}, or set --num_generations_eval"
            )


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(2, n + 1) if n % d == 0) or "none (batch < 2)"


def _check_models(parser, values) -> None:
    for flag, revision_flag in MODEL_FLAGS.items():
        value = getattr(values, flag, None)
        if value:
            revision = getattr(values, revision_flag, None) if revision_flag else None
            check_model_path(f"--{flag}", str(value), revision)


def check_model_path(flag: str, value: str, revision: str | None = None) -> None:
    """Raise InvocationError unless `value` is a model folder or a usable Hub id."""
    from huggingface_hub import is_offline_mode, try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    path = Path(value).expanduser()
    if path.is_file():
        raise InvocationError(f"{flag} {value}: is a file, not a folder; {EXPECTED_MODEL}")
    if path.is_dir():
        if not any((path / name).is_file() for name in MODEL_FILES):
            raise InvocationError(
                f"{flag} {value}: the folder has no config.json, so it holds no saved model; "
                f"{EXPECTED_MODEL}"
            )
        return
    try:
        validate_repo_id(value)
        is_repo_id = not value.startswith((".", "~")) and not path.is_absolute()
    except HFValidationError:
        is_repo_id = False
    if not is_repo_id:
        raise InvocationError(f"{flag} {value}: no such folder; {EXPECTED_MODEL}")
    if not is_offline_mode():
        return  # a Hub id: downloaded when the model loads
    cached = (
        try_to_load_from_cache(value, name, revision=revision or None) for name in MODEL_FILES
    )
    if not any(isinstance(found, str) for found in cached):
        raise InvocationError(
            f"{flag} {value}: no such folder, and no Hub model of that name in the local cache "
            f"(HF_HUB_OFFLINE is set); expected a model folder (with config.json), or run "
            f"`hf download {value}` while online"
        )
