"""`annotated-trl doctor`: read a method's recipe, its dataset and its model before a GPU job, and
explain in plain words what would go wrong.

    annotated-trl doctor --method grpo --config annotated_examples/recipes/grpo_tiny.yaml

The dataset and the model default to the ones the recipe names (`--dataset`, `--model` replace
them). Nothing is downloaded: a Hub model or dataset is read from the local cache, and a check
that needs one that is not there says so and is skipped.

Each check is one small function that takes the `Subject` (what is being checked) and returns
`Finding`s: a level (ok, warn, error), one plain sentence, the fix, and the troubleshooting entry
that explains it. A check that does not apply to the method returns nothing. The command exits 0
when no finding is an error, 2 otherwise.
"""

import asyncio
import dataclasses
import importlib
import inspect
import numbers
import textwrap
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from annotated_trl.methods import BY_KEY, REWARD, Method

OK, WARN, ERROR = "ok", "warn", "error"
SAMPLE_ROWS = 2000  # rows tokenised to measure lengths: enough for a fraction to within ~1%
# Above this fraction of rows cut by a length limit, the limit is a mistake, not a trade-off.
MOST = 0.5
# What a dry-run completion says when the dataset has no answer of its own to borrow.
PLACEHOLDER_ANSWER = "The answer is 42."


def page(topic: str) -> str:
    """The troubleshooting entry for one kind of finding (docs/troubleshooting.md)."""
    return f"troubleshooting.md#doctor-{topic}"


# Every kind of finding, with the anchor of its troubleshooting entry (tests check they exist).
TOPICS = (
    "model",
    "dataset",
    "generation-batch",
    "generation-markers",
    "prefix",
    "stop-token",
    "pad-token",
    "rewards",
    "lengths",
    "memory",
)


class DoctorError(ValueError):
    """The doctor cannot start (unknown method, unreadable recipe). The message is one line."""


@dataclass(frozen=True)
class Finding:
    level: str  # OK, WARN or ERROR
    topic: str  # one of TOPICS
    message: str  # what was found, in one plain sentence
    fix: str = ""  # what to change; empty for OK
    page: str = ""  # the site page and anchor that covers it
    amount: float | None = None  # the quantity the finding reports, where it has one (bytes)

    def __post_init__(self):
        object.__setattr__(self, "page", self.page or page(self.topic))


@dataclass
class Subject:
    """Everything the checks read: the method, the recipe's settings over its configs' defaults,
    and, when they could be loaded offline, the tokenizer and a sample of the training rows."""

    method: Method
    settings: dict
    num_processes: int = 1
    model: str | None = None
    dataset: str | None = None
    tokenizer: object = None
    rows: list[dict] = field(default_factory=list)
    conversational: bool = False
    # Per sampled row: (prompt tokens, tokens of its longest sequence, whether it has an answer).
    lengths: list[tuple[int, int, bool]] = field(default_factory=list)


# --- reading the recipe ---------------------------------------------------------------------


def config_class(method: Method) -> type:
    """The method's config class, where the method table says it lives."""
    return getattr(importlib.import_module(method.module), method.config)


def _defaults(cls: type) -> dict:
    """A dataclass's field defaults, without building it (its __post_init__ would check the
    machine it runs on: bf16 needs a GPU, which a pre-flight on a laptop does not have)."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            values[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
    return values


def read_settings(method: Method, config: str) -> dict:
    """The recipe's values over the defaults of ScriptArguments, the method's config and
    ModelConfig: what the script would train with."""
    from annotated_trl.invocation import InvocationError, _split_config

    try:
        # The scripts' own reader: the same one-line errors for a missing or malformed recipe.
        _, _, recipe = _split_config(["--config", config])
    except InvocationError as error:
        raise DoctorError(str(error)) from None
    from trl import ModelConfig, ScriptArguments  # after the recipe: a bad one answers at once

    settings = {}
    for cls in (ScriptArguments, config_class(method), ModelConfig):
        settings |= _defaults(cls)
    return settings | recipe


# --- loading what can be loaded offline -----------------------------------------------------


@contextmanager
def offline():
    """Hub and datasets libraries in offline mode: the doctor reads caches, never the network.
    (They read HF_HUB_OFFLINE once, at import: the flags themselves are switched.)"""
    import datasets
    import huggingface_hub.constants

    saved = huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE
    huggingface_hub.constants.HF_HUB_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        huggingface_hub.constants.HF_HUB_OFFLINE, datasets.config.HF_HUB_OFFLINE = saved


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _is_local(name: str) -> bool:
    """A path on this machine rather than a Hub id (which is read from the cache, or skipped)."""
    return Path(name).expanduser().exists() or name.startswith((".", "/", "~"))


def load_tokenizer(subject: Subject) -> list[Finding]:
    """Check the model path and load its tokenizer into `subject` (local folder or Hub cache)."""
    from transformers import AutoTokenizer

    from annotated_trl.invocation import InvocationError, check_model_path

    model = subject.model
    if not model:
        return [
            Finding(ERROR, "model", "the recipe names no model_name_or_path", "pass --model PATH")
        ]
    if _is_local(model):
        try:
            check_model_path("--model", model)
        except InvocationError as error:
            return [Finding(ERROR, "model", str(error), "point --model at a saved model folder")]
    try:
        subject.tokenizer = AutoTokenizer.from_pretrained(model, local_files_only=True)
    except Exception as error:  # not cached, not a tokenizer, broken files: all one line
        return [
            Finding(
                WARN,
                "model",
                f"{model}: no tokenizer here or in the local cache ({_first_line(error)}); the "
                "checks that need it were skipped",
                f"run `hf download {model}` once while online, or pass --model a local copy",
            )
        ]
    return [Finding(OK, "model", f"{model}: tokenizer loaded ({type(subject.tokenizer).__name__})")]


def load_dataset_sample(subject: Subject) -> list[Finding]:
    """Validate the dataset (`annotated_trl.data.validate_dataset`) and keep a sample of its
    training split in `subject` for the checks that read rows."""
    from annotated_trl.data import DatasetError, load_checked_dataset, validate_dataset

    name, key = subject.dataset, subject.method.key
    if not name:
        return [
            Finding(ERROR, "dataset", "the recipe names no dataset_name", "pass --dataset PATH")
        ]
    config = subject.settings.get("dataset_config")
    try:
        report = validate_dataset(name, key, subject.tokenizer, config)
    except DatasetError as error:
        if _is_local(name):
            return [Finding(ERROR, "dataset", str(error), "see the expected format in the entry")]
        return [
            Finding(
                WARN,
                "dataset",
                f"{error}; the checks that read rows were skipped (the doctor never downloads)",
                f"run `hf download --repo-type dataset {name}` once while online, or pass "
                "--dataset a local copy",
            )
        ]
    if report.problems:
        more = f" (and {len(report.problems) - 1 + report.more} more problems)"
        return [
            Finding(
                ERROR,
                "dataset",
                report.problems[0] + (more if len(report.problems) > 1 else ""),
                f"list them all with `annotated-trl validate --method {key} {name}`",
            )
        ]
    subject.conversational = report.conversational
    split = subject.settings.get("dataset_train_split") or "train"
    loaded = load_checked_dataset(name, key, subject.tokenizer, config)
    if split in loaded:
        rows = loaded[split].shuffle(seed=0)
        subject.rows = rows.select(range(min(SAMPLE_ROWS, len(rows)))).to_list()
    kind = "conversational" if report.conversational else "plain text"
    splits = ", ".join(f"{s}: {n}" for s, n in report.rows.items())
    return [Finding(OK, "dataset", f"{report.format} ({kind}), {splits} rows; fits {key}")]


# --- 1. GRPO/RLOO: the generation batch -----------------------------------------------------


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 'es' if word.endswith('s') else 's'}"


def _nearest(value: int, valid: Callable[[int], bool], low: int, high: int) -> list[int]:
    """The closest valid integers in [low, high] below and above `value`, nearest first."""
    below = next((v for v in range(value - 1, low - 1, -1) if valid(v)), None)
    above = next((v for v in range(value + 1, high + 1) if valid(v)), None)
    return sorted({v for v in (below, above) if v is not None}, key=lambda v: abs(v - value))


def _generation_batch(s: dict, processes: int) -> tuple[int, int, str]:
    """(generation batch, steps_per_generation, how it was made), by GRPOConfig.__post_init__'s
    rule (RLOOConfig's is the same). Raises ValueError for the settings it refuses."""
    per_device = s["per_device_train_batch_size"]
    made = f"per_device_train_batch_size {per_device} × {_plural(processes, 'process')}"
    if s.get("generation_batch_size") is not None:
        if s.get("steps_per_generation") is not None:
            raise ValueError("generation_batch_size and steps_per_generation are both set")
        batch, global_batch = s["generation_batch_size"], per_device * processes
        if batch % global_batch:
            raise ValueError(
                f"generation_batch_size {batch} is not a multiple of the global batch "
                f"({made} = {global_batch})"
            )
        return batch, batch // global_batch, f"generation_batch_size {batch}"
    steps = s.get("steps_per_generation") or s["gradient_accumulation_steps"]
    return per_device * processes * steps, steps, f"{made} × steps_per_generation {steps}"


def check_generation_batch(subject: Subject) -> list[Finding]:
    """What `per_device_train_batch_size` counts in GRPO/RLOO, and what must divide what."""
    s, processes = subject.settings, subject.num_processes
    if "num_generations" not in s or "steps_per_generation" not in s:
        return []
    g = s["num_generations"]
    try:
        batch, steps, made = _generation_batch(s, processes)
    except ValueError as error:
        fix = "set one of generation_batch_size or steps_per_generation, a multiple of the batch"
        return [Finding(ERROR, "generation-batch", f"{error}; the config refuses it", fix)]
    if g < subject.method.min_generations:
        return [
            Finding(
                ERROR,
                "generation-batch",
                f"num_generations {g}: each completion's advantage compares it with the other "
                "completions of its prompt, so a group needs at least 2",
                f"num_generations: one of {_divisors(batch)}",
            )
        ]
    if batch % g:
        return [_batch_does_not_divide(s, processes, steps, batch, made)]
    findings = [_batch_explained(s, processes, steps, batch, made)]
    return findings + _check_eval_batch(s, processes)


def _divisors(n: int) -> str:
    return ", ".join(str(d) for d in range(2, n + 1) if n % d == 0) or "none (the batch is 1)"


def _batch_does_not_divide(s, processes, steps, batch, made) -> Finding:
    g, per_device = s["num_generations"], s["per_device_train_batch_size"]
    generations = _nearest(g, lambda v: batch % v == 0, low=2, high=batch)
    fixes = [f"num_generations {' or '.join(map(str, generations))}"] if generations else []
    if s.get("generation_batch_size") is None:
        # per_device_train_batch_size = a multiple of g always works, so one exists below that.
        fits = lambda p: (p * processes * steps) % g == 0  # noqa: E731
        sizes = _nearest(per_device, fits, low=1, high=per_device + g)
        fixes.append(f"per_device_train_batch_size {' or '.join(map(str, sizes))}")
    return Finding(
        ERROR,
        "generation-batch",
        f"num_generations {g} does not divide the generation batch of {batch} completions "
        f"({made}): every prompt's {g} completions must be generated in one batch, so GRPOConfig "
        "refuses this",
        ", or ".join(fixes),
    )


def _batch_explained(s, processes, steps, batch, made) -> Finding:
    g, per_device = s["num_generations"], s["per_device_train_batch_size"]
    accumulation, iterations = s["gradient_accumulation_steps"], s.get("num_iterations") or 1
    # Each generation batch feeds steps_per_generation micro-steps, num_iterations times over.
    prompts_per_step = per_device * processes * accumulation / (g * iterations)
    shown = f"{prompts_per_step:g}"
    return Finding(
        OK,
        "generation-batch",
        f"per_device_train_batch_size {per_device} counts completions, not prompts; a generation "
        f"round makes {batch} completions ({made}) = {batch // g} prompts × {g} completions, and "
        f"feeds {_plural(steps, 'micro-step')}"
        + (f", {iterations} times over" if iterations > 1 else "")
        + f"; an optimiser step ({_plural(accumulation, 'micro-step')} × "
        f"{_plural(processes, 'process')}) sees {shown} new prompts' worth",
    )


def _check_eval_batch(s: dict, processes: int) -> list[Finding]:
    strategy = str(getattr(s.get("eval_strategy"), "value", s.get("eval_strategy")))
    if strategy == "no":
        return []
    g = s.get("num_generations_eval") or s["num_generations"]
    batch = s["per_device_eval_batch_size"] * processes
    if batch % g == 0:
        return []
    return [
        Finding(
            ERROR,
            "generation-batch",
            f"{g} generations per evaluation prompt do not divide the evaluation batch of "
            f"{batch} completions (per_device_eval_batch_size × {_plural(processes, 'process')})",
            f"num_generations_eval: one of {_divisors(batch)}",
        )
    ]


# --- 2. chat template -----------------------------------------------------------------------


def check_generation_markers(subject: Subject) -> list[Finding]:
    """assistant_only_loss needs `{% generation %}` markers; TRL can swap in its own training
    template for the families it knows (`get_training_chat_template`)."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    tokenizer = subject.tokenizer
    if not subject.settings.get("assistant_only_loss") or tokenizer is None:
        return []
    if not tokenizer.chat_template:
        return []  # the dataset check already refuses conversational rows without a template
    if has_generation_markers(tokenizer.chat_template):
        return [Finding(OK, "generation-markers", "the chat template marks assistant turns")]
    try:
        get_training_chat_template(tokenizer)
    except ValueError:
        return [
            Finding(
                ERROR,
                "generation-markers",
                "assistant_only_loss is on but the chat template has no {% generation %} "
                "markers, and TRL has no training template for it: SFTTrainer will refuse to "
                "start",
                "wrap the assistant content in {% generation %}…{% endgeneration %} in the "
                "template, or set assistant_only_loss: false",
            )
        ]
    return [
        Finding(
            WARN,
            "generation-markers",
            "the chat template has no {% generation %} markers; TRL recognises it and trains "
            "with its own patched copy",
            "nothing to do; to train with your own template, add the markers",
        )
    ]


def _chat_ids(tokenizer, messages: list, **kwargs) -> list[int]:
    return tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False, **kwargs)


ANSWERS = ("completion", "chosen", "rejected")


def check_prefix(subject: Subject) -> list[Finding]:
    """The prompt rendered alone must be a token prefix of prompt + answer: the trainers split
    them by position (`trl.data_utils.common_prefix_length`). For templates that render tools,
    TRL's own check (`is_chat_template_prefix_preserving`) covers multi-turn tool training."""
    from trl.chat_template_utils import is_chat_template_prefix_preserving, supports_tool_calling
    from trl.data_utils import common_prefix_length

    tokenizer = subject.tokenizer
    if tokenizer is None or not subject.conversational or not tokenizer.chat_template:
        return []
    broken = 0
    paired = [r for r in subject.rows[:50] if isinstance(r.get("prompt"), list)]
    paired = [(r, c) for r in paired for c in ANSWERS if isinstance(r.get(c), list)]
    for row, column in paired:
        prompt = _chat_ids(tokenizer, row["prompt"], add_generation_prompt=True)
        whole = _chat_ids(tokenizer, row["prompt"] + row[column])
        broken += common_prefix_length(prompt, whole) < len(prompt)
    findings = []
    if broken:
        findings.append(
            Finding(
                WARN,
                "prefix",
                f"in {broken} of {len(paired)} sampled prompt/answer pairs the prompt renders "
                "differently once the answer follows it, so the split between prompt and answer "
                "tokens lands in the wrong place (TRL warns and keeps the common prefix)",
                "use a chat template whose generation prompt is exactly how an answer starts",
            )
        )
    if (
        subject.method.holds.generates
        and supports_tool_calling(tokenizer)
        and not is_chat_template_prefix_preserving(tokenizer)
    ):
        findings.append(
            Finding(
                WARN,
                "prefix",
                "the chat template renders earlier turns differently once a tool reply follows; "
                "multi-turn tool training needs them unchanged (TRL swaps in its training "
                "template when it knows the family)",
                "train without tools, or use a prefix-preserving template",
            )
        )
    if paired and not findings:
        findings.append(Finding(OK, "prefix", "prompts render as a prefix of prompt + answer"))
    return findings


def _end_of_turn(tokenizer) -> str | None:
    """The special token the chat template writes right after an assistant's content: what a
    model trained on this template learns to emit when it has finished."""
    sentinel = "DOCTORSENTINEL"
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": sentinel}]
    text = tokenizer.apply_chat_template(messages, tokenize=False)
    after = text.split(sentinel, 1)[-1] if sentinel in text else ""
    special = set(tokenizer.get_added_vocab().values()) | set(tokenizer.all_special_ids)
    for token_id in tokenizer(after, add_special_tokens=False)["input_ids"]:
        if token_id in special:
            return tokenizer.convert_ids_to_tokens(token_id)
    return None


def _stop_ids(subject: Subject) -> tuple[set[int], str]:
    """The ids generation stops at after training, and the eos token's name: the recipe's
    `eos_token` (which SFTTrainer writes into the tokenizer and generation config), else the
    tokenizer's eos plus the model's generation_config eos ids."""
    from transformers import GenerationConfig

    tokenizer, chosen = subject.tokenizer, subject.settings.get("eos_token")
    if chosen:
        return {tokenizer.convert_tokens_to_ids(chosen)}, chosen
    ids = {tokenizer.eos_token_id} - {None}
    try:
        generation = GenerationConfig.from_pretrained(subject.model, local_files_only=True)
        extra = generation.eos_token_id
        ids |= set(extra if isinstance(extra, list) else [extra]) - {None}
    except (OSError, ValueError):
        pass  # no (readable) generation_config.json: the tokenizer's eos is what generate() uses
    return ids, str(tokenizer.eos_token)


def check_stop_token(subject: Subject) -> list[Finding]:
    """A model trained on conversations learns to end its turn with the template's end-of-turn
    token; it only stops at inference if that token is its eos. With assistant_only_loss, the
    token must also be inside the loss mask (`is_chat_template_stop_token_trained`)."""
    tokenizer = subject.tokenizer
    if subject.method.family == REWARD or tokenizer is None or not subject.conversational:
        return []  # a reward model scores text, it never generates
    end = _end_of_turn(tokenizer)
    stops, eos = _stop_ids(subject)
    findings = []
    if end is None:
        findings.append(
            Finding(
                WARN,
                "stop-token",
                "the chat template writes no special token after an assistant's answer, so "
                "nothing marks where an answer ends",
                "use a chat template that closes every assistant turn with its eos token",
            )
        )
    elif tokenizer.convert_tokens_to_ids(end) not in stops:
        has_field = "eos_token" in subject.settings
        fix = (
            f"add `eos_token: '{end}'` to the recipe"
            if has_field
            else f"save the model with tokenizer.eos_token = '{end}' and generation_config "
            f"eos_token_id = its id"
        )
        findings.append(
            Finding(
                ERROR,
                "stop-token",
                f"the chat template ends each assistant turn with {end}, but the model stops "
                f"generating at {eos}: it learns to write {end} and then keeps going, so the "
                "trained model never stops",
                fix,
            )
        )
    else:
        findings.append(Finding(OK, "stop-token", f"assistant turns end with {end}, the eos"))
    return findings + _check_stop_token_masked(subject)


def _check_stop_token_masked(subject: Subject) -> list[Finding]:
    from trl.chat_template_utils import (
        get_training_chat_template,
        has_generation_markers,
        is_chat_template_stop_token_trained,
    )

    tokenizer = subject.tokenizer
    if not subject.settings.get("assistant_only_loss"):
        return []
    try:  # the template SFTTrainer will use: the tokenizer's, or TRL's patched copy
        template = None
        if not has_generation_markers(tokenizer.chat_template):
            template = get_training_chat_template(tokenizer)
    except ValueError:
        return []  # check_generation_markers reports it
    if is_chat_template_stop_token_trained(tokenizer, chat_template=template):
        return []
    return [
        Finding(
            WARN,
            "stop-token",
            "with assistant_only_loss the end-of-turn token falls outside the {% generation %} "
            "span, so it is never in the loss: the model is not taught to stop",
            "move the end-of-turn token inside {% generation %}…{% endgeneration %}, or set "
            "assistant_only_loss: false",
        )
    ]


# --- 3. pad token ---------------------------------------------------------------------------


def check_pad_token(subject: Subject) -> list[Finding]:
    """pad = eos: whatever recognises padding by its id takes the real eos for padding too."""
    tokenizer, s = subject.tokenizer, subject.settings
    if tokenizer is None:
        return []
    eos = s.get("eos_token") or tokenizer.eos_token
    pad = s.get("pad_token") or tokenizer.pad_token
    if pad is not None and pad != eos:
        return [Finding(OK, "pad-token", f"pad token {pad} differs from eos {eos}")]
    found = (
        f"the tokenizer has no pad token, so TRL pads with the eos {eos}"
        if pad is None
        else f"the pad token is the eos token ({eos})"
    )
    fix = "set a pad token distinct from eos"
    fix += " (`pad_token:` in the recipe)" if "pad_token" in s else " and save it with the model"
    return [
        Finding(
            WARN,
            "pad-token",
            f"{found}: code that finds padding by its id then masks or cuts the real end of "
            "each sequence too, so a model trained that way may never learn to stop",
            fix,
        )
    ]


# --- 4. reward functions --------------------------------------------------------------------


def _dry_run_inputs(subject: Subject, rows: list[dict]) -> dict:
    """The keyword arguments GRPOTrainer passes a reward function, for these rows."""
    from transformers import TrainerState

    prompts, completions = [row["prompt"] for row in rows], []
    for row in rows:
        text = next((row[c] for c in ANSWERS if isinstance(row.get(c), str)), PLACEHOLDER_ANSWER)
        conversational = isinstance(row["prompt"], list)
        completions.append([{"role": "assistant", "content": text}] if conversational else text)
    tokenizer = subject.tokenizer
    texts = [c[0]["content"] if isinstance(c, list) else c for c in completions]
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] if tokenizer else [] for t in texts]
    columns = {
        key: [row[key] for row in rows] for key in rows[0] if key not in ("prompt", "completion")
    }
    return {
        "prompts": prompts,
        "completions": completions,
        "completion_ids": ids,
        **columns,
        "trainer_state": TrainerState(),
        "log_extra": lambda *args, **kwargs: None,
        "log_metric": lambda *args, **kwargs: None,
    }


def _dry_run(path: str, func: Callable, inputs: dict) -> Finding:
    try:
        inspect.signature(func).bind(**inputs)
    except TypeError as error:
        return Finding(
            ERROR,
            "rewards",
            f"reward function {path} cannot take the trainer's call ({error}): it passes "
            "prompts, completions, completion_ids and every dataset column as keywords",
            "give it the signature (completions, **kwargs) and read the columns it needs",
        )
    except ValueError:
        pass  # a builtin without a signature: let the call itself tell
    try:
        rewards = func(**inputs)
        rewards = asyncio.run(rewards) if inspect.isawaitable(rewards) else rewards
    except Exception as error:  # the user's code failed: show its first line, not a traceback
        return Finding(
            ERROR,
            "rewards",
            f"reward function {path} raised {type(error).__name__} on two dataset rows: "
            f"{_first_line(error)}",
            "run it on two rows of your dataset and fix it",
        )
    expected = len(inputs["completions"])
    numeric = all(r is None or isinstance(r, numbers.Real) for r in rewards or [])
    if not isinstance(rewards, list | tuple) or len(rewards) != expected or not numeric:
        got = f"{type(rewards).__name__} of {len(rewards)}" if hasattr(rewards, "__len__") else ""
        return Finding(
            ERROR,
            "rewards",
            f"reward function {path} returned {got or repr(rewards)[:60]} for {expected} "
            "completions; it must return a list of one float (or None) per completion",
            "return [score for each completion]",
        )
    return Finding(OK, "rewards", f"reward function {path} scored two rows: {list(rewards)}")


def check_rewards(subject: Subject) -> list[Finding]:
    """Import every reward function the recipe names and dry-run it on two dataset rows."""
    from annotated_trl.rewards import RewardError, import_reward_func

    paths = subject.settings.get("reward_funcs") or []
    findings = []
    for path in [paths] if isinstance(paths, str) else paths:
        try:
            func = import_reward_func(path)
        except RewardError as error:
            findings.append(
                Finding(ERROR, "rewards", str(error), "fix the dotted path or install the module")
            )
            continue
        rows = [row for row in subject.rows[:2] if "prompt" in row]
        if not rows:
            findings.append(
                Finding(WARN, "rewards", f"{path} imports; no dataset rows to dry-run it on")
            )
            continue
        findings.append(_dry_run(path, func, _dry_run_inputs(subject, rows)))
    return findings


# --- 5. lengths -----------------------------------------------------------------------------


def _token_count(tokenizer, value, **kwargs) -> int:
    if isinstance(value, list):
        return len(_chat_ids(tokenizer, value, **kwargs))
    return len(tokenizer(value, add_special_tokens=False)["input_ids"])


def _row_lengths(tokenizer, row: dict, text_field: str) -> tuple[int, int, bool]:
    """(prompt tokens, tokens of the row's longest full sequence, whether it has an answer)."""
    if "messages" in row:
        return 0, _token_count(tokenizer, row["messages"]), True
    if isinstance(row.get(text_field), str) and "prompt" not in row:
        return 0, _token_count(tokenizer, row[text_field]), True
    answers = [row[c] for c in ANSWERS if row.get(c) is not None]
    if isinstance(row.get("completions"), list):  # stepwise: the steps, one per line
        answers = ["\n".join(row["completions"])]
    prompt = row.get("prompt")
    if prompt is None:  # implicit preference: the prompt is inside each answer
        return 0, max(_token_count(tokenizer, a) for a in answers), True
    if isinstance(prompt, list):
        prompt_tokens = _token_count(tokenizer, prompt, add_generation_prompt=True)
        totals = [_token_count(tokenizer, prompt + a) for a in answers]
    else:
        prompt_tokens = _token_count(tokenizer, prompt)
        totals = [prompt_tokens + _token_count(tokenizer, a) for a in answers]
    return prompt_tokens, max(totals, default=prompt_tokens), bool(answers)


def measure_lengths(subject: Subject) -> None:
    """Token lengths of the sampled rows, for the length and memory checks."""
    tokenizer = subject.tokenizer
    if tokenizer is None or not subject.rows:
        return
    if subject.conversational and not tokenizer.chat_template:
        return
    text_field = subject.settings.get("dataset_text_field") or "text"
    subject.lengths = [_row_lengths(tokenizer, row, text_field) for row in subject.rows]


def _generation_budget(s: dict) -> int:
    """Tokens an online method generates per prompt (PPO's port calls it response_length)."""
    names = ("max_new_tokens", "max_completion_length", "response_length")
    return next((s[name] for name in names if s.get(name)), 0)


def _needed(subject: Subject) -> list[int]:
    """Tokens each sampled row needs in one sequence: the row, plus for an online method the
    completion it will generate after the prompt."""
    budget = _generation_budget(subject.settings) if subject.method.holds.generates else 0
    return [total + (0 if answered else budget) for _, total, answered in subject.lengths]


def _truncation(limit_name: str, limit: int, sizes: list[int]) -> Finding:
    cut = sum(size > limit for size in sizes)
    share, longest = cut / len(sizes), max(sizes)
    if not cut:
        return Finding(OK, "lengths", f"{limit_name} {limit}: no sampled row is longer")
    level = ERROR if share > MOST else WARN
    return Finding(
        level,
        "lengths",
        f"{limit_name} {limit} cuts {cut} of {len(sizes)} sampled rows ({share:.0%}; the longest "
        f"needs {longest} tokens): what is cut is not trained on",
        f"raise {limit_name} towards {sorted(sizes)[int(0.95 * (len(sizes) - 1))]} (95% of rows "
        "fit) if memory allows, or drop the longest rows",
    )


def check_lengths(subject: Subject) -> list[Finding]:
    """What fraction of the data max_length / max_completion_length would cut."""
    s, lengths = subject.settings, subject.lengths
    if not lengths:
        return []
    findings = []
    packed_whole = s.get("packing") and s.get("packing_strategy") in ("bfd_split", "wrapped")
    if s.get("max_length") and not packed_whole:  # split packing moves overflow, loses nothing
        findings.append(_truncation("max_length", s["max_length"], _needed(subject)))
    if s.get("max_completion_length") and not subject.method.holds.generates:
        answers = [total - prompt for prompt, total, answered in lengths if answered]
        limit = s["max_completion_length"]
        findings += [_truncation("max_completion_length", limit, answers)] if answers else []
    if subject.method.holds.generates and not s.get("max_length"):
        longest = max(prompt for prompt, _, _ in lengths)
        budget = _generation_budget(s)
        findings.append(
            Finding(
                OK,
                "lengths",
                f"prompts are up to {longest} tokens; with {budget} generated tokens a sequence "
                f"reaches {longest + budget}",
            )
        )
    return findings


# --- 6. memory ------------------------------------------------------------------------------


def _model_shape(model: str):
    """The model's sizes from its config.json (a local folder or the Hub cache), else those of
    the memory page's preset it is a variant of (Qwen2.5-0.5B-Instruct: Qwen2.5-0.5B's); None
    when neither is known."""
    from huggingface_hub import try_to_load_from_cache

    from annotated_trl.memory import REFERENCE_MODELS, load_shape

    cached = None if _is_local(model) else try_to_load_from_cache(model, "config.json")
    try:
        return load_shape(cached if isinstance(cached, str) else model)
    except (ValueError, KeyError, OSError):
        name = Path(model).name
        return next((s for key, s in REFERENCE_MODELS.items() if name.startswith(key)), None)


def _sequence_length(subject: Subject) -> int:
    s = subject.settings
    longest = max(_needed(subject), default=0)
    if s.get("max_length"):
        return min(s["max_length"], longest) if longest else s["max_length"]
    return longest or _generation_budget(s) or 1024


def _checkpointing(s: dict) -> bool:
    """TrainingArguments' rule: `activation_checkpointing` when set, else its deprecated alias
    `gradient_checkpointing` (which TRL's configs default to True)."""
    for name in ("activation_checkpointing", "gradient_checkpointing"):
        if s.get(name) is not None:
            return bool(s[name])
    return False


def _precision(s: dict) -> str:
    """`annotated_trl.memory`'s precision for the recipe's `dtype` and mixed-precision flags
    (TRL: bf16 unless fp16 or bf16 is set; fp16 autocast keeps activations in 16 bits too)."""
    from annotated_trl.memory import DTYPE_BYTES, precision_for

    dtype = s.get("dtype") if s.get("dtype") in DTYPE_BYTES else "float32"
    bf16 = not s.get("fp16") if s.get("bf16") is None else bool(s["bf16"])
    return precision_for(dtype, bf16=bf16 or bool(s.get("fp16")))


def _size(nbytes: float) -> str:
    from annotated_trl.memory import GIB

    return f"{nbytes / GIB:.1f} GiB" if nbytes >= GIB / 10 else f"{nbytes / 2**20:.1f} MiB"


def check_memory(subject: Subject) -> list[Finding]:
    """One line: `annotated_trl.memory.estimate` for this recipe, and the precision it assumes."""
    from annotated_trl.memory import estimate

    s = subject.settings
    shape = _model_shape(subject.model or "")
    if shape is None:
        return [
            Finding(
                WARN,
                "memory",
                f"no estimate: {subject.model}'s config.json is neither here nor in the cache",
                "run the doctor where the model is, or pass --model a local copy",
            )
        ]
    precision, checkpointing = _precision(s), _checkpointing(s)
    seq_len, batch = _sequence_length(subject), s["per_device_train_batch_size"]
    result = estimate(
        shape,
        subject.method.key,
        precision=precision,
        lora_rank=s.get("lora_r") if s.get("use_peft") else None,
        gradient_checkpointing=checkpointing,
        num_gpus=subject.num_processes,
        seq_len=seq_len,
        batch_size=batch,
    )
    parts = ", ".join(
        f"{f.name.replace('_', ' ')} {_size(getattr(result, f.name))}"
        for f in dataclasses.fields(result)
        if getattr(result, f.name)
    )
    return [
        Finding(
            OK,
            "memory",
            f"about {_size(result.total)} per GPU at the peak ({parts}), assuming precision "
            f"{precision}, AdamW, {batch} sequences × {seq_len} tokens per micro-step, "
            f"activation checkpointing {'on' if checkpointing else 'off'}; arithmetic, not a "
            "measurement: CUDA's context and fragmentation come on top",
            amount=result.total,
        )
    ]


# --- running them all -----------------------------------------------------------------------

CHECKS = (
    check_generation_batch,
    check_generation_markers,
    check_prefix,
    check_stop_token,
    check_pad_token,
    check_rewards,
    check_lengths,
    check_memory,
)


def run_doctor(
    method: str,
    config: str,
    dataset: str | None = None,
    model: str | None = None,
    num_processes: int = 1,
) -> list[Finding]:
    """Every finding for `method` trained with the recipe `config`. Raises DoctorError when the
    method is unknown or the recipe cannot be read."""
    if method not in BY_KEY:
        raise DoctorError(f"unknown method {method!r}; expected one of {', '.join(BY_KEY)}")
    if num_processes < 1:
        raise DoctorError(f"--num_processes {num_processes}: expected 1 or more")
    settings = read_settings(BY_KEY[method], config)
    subject = Subject(
        BY_KEY[method],
        settings,
        num_processes,
        model=model or settings.get("model_name_or_path"),
        dataset=dataset or settings.get("dataset_name"),
    )
    with offline():
        findings = load_tokenizer(subject) + load_dataset_sample(subject)
        measure_lengths(subject)
        for check in CHECKS:
            findings += check(subject)
    return findings


def exit_code(findings: list[Finding]) -> int:
    return 2 if any(f.level == ERROR for f in findings) else 0


def render(findings: list[Finding], width: int = 100) -> str:
    """The findings as the command prints them, then a one-line summary."""
    lines = []
    for f in findings:
        head = f"{f.level:<5} {f.topic:<18} "
        indent = " " * len(head)
        lines += textwrap.wrap(f.message, width, initial_indent=head, subsequent_indent=indent)
        if f.fix:
            lines += textwrap.wrap(
                f"fix: {f.fix}", width, initial_indent=indent, subsequent_indent=indent + "     "
            )
        lines.append(f"{indent}see: docs/{f.page}")
    errors = sum(f.level == ERROR for f in findings)
    warnings = sum(f.level == WARN for f in findings)
    verdict = "fix the errors before the GPU job" if errors else "ready to run"
    lines.append(f"{_plural(errors, 'error')}, {_plural(warnings, 'warning')}: {verdict}")
    return "\n".join(lines)
