"""Every knob of `trl.GRPOConfig`, `trl.RLOOConfig` and `trl.DPOConfig` is explained on its
method's pages, or listed in NOT_COVERED below with a reason: a TRL upgrade that adds a knob
fails here instead of silently outgrowing the site.

The rule. In scope are the fields of `dataclasses.fields(Config)` that TRL adds, and the fields
inherited from `transformers.TrainingArguments` whose default the TRL config changes (compared by
value: `default`, or `default_factory()`, against TrainingArguments' own). Fields inherited with
their default unchanged (`output_dir`, `per_device_train_batch_size`, ...) are the Trainer's,
documented by transformers, and out of scope. A field in scope is *explained* when its name, on
`annotated_trainers/<key>.md` or `reference_guides/<key>.md`,

- is a row of a `[[trl-config: trl.<Config> ...]]` table of that same class (rendered with its
  default and help text, read from the installed class, by docs/hooks/config_tables.py), or
- is written as inline code in the prose (`name`, `name=...`, `args.name`, in the text or in a
  walkthrough note's text).

Fenced code blocks and directive lines (`[[trl-source ...]]`, `[[note ...]]`, `[[fold ...]]`) do
not count: a note's anchor quotes TRL's own line, it does not explain the knob. Every other field
in scope must be in NOT_COVERED with a one-line reason; an entry there that a page explains after
all, or that the config no longer has, fails too, so that the list stays true. The test reads the
Markdown sources, not the built site.
"""

import dataclasses
import re

import pytest
from support.docs import REPO
from transformers import TrainingArguments

pytestmark = pytest.mark.docs

CONFIGS = {"grpo": "GRPOConfig", "rloo": "RLOOConfig", "dpo": "DPOConfig"}

# Fields in scope that no page explains, on purpose; one reason each, checked against TRL 1.16.
NOT_COVERED = {
    "grpo": {
        "use_transformers_paged": "deprecated alias (TRL 1.2, removed in 2.0): __post_init__ warns "
        "and sets use_transformers_continuous_batching, which the page explains",
        "vllm_importance_sampling_cap": "deprecated alias (TRL 1.6, removed in 2.0): __post_init__ "
        "warns and copies it into vllm_importance_sampling_clip_max, which the page explains",
    },
    "rloo": {
        "use_transformers_paged": "deprecated alias (TRL 1.2, removed in 2.0): __post_init__ warns "
        "and sets use_transformers_continuous_batching, which the page explains",
    },
    "dpo": {
        "pad_token": "deprecated (removed in 2.0): __post_init__ warns; set tokenizer.pad_token "
        "and pass the tokenizer as processing_class instead",
    },
}

CONFIG_RE = re.compile(r"^\[\[trl-config:\s*(?P<cls>[\w.]+)(?P<names>(?:[ \t]+\w+)+)\s*\]\]", re.M)
FENCE_RE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.M | re.S)
DIRECTIVE_RE = re.compile(r"^[ \t]*\[\[.*$", re.M)
CODE_SPAN_RE = re.compile(r"`([^`\n]+)`")


def _default(field: dataclasses.Field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return dataclasses.MISSING


def in_scope(cls) -> list[str]:
    """The fields TRL adds, and the inherited ones whose default it changes, in class order."""
    base = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    return [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in base or repr(_default(f)) != repr(_default(base[f.name]))
    ]


def explained(text: str, cls_name: str) -> set[str]:
    """Names a page explains under the rule above: its config table rows for `cls_name`, and the
    identifiers in inline code of its prose."""
    names = set()
    for m in CONFIG_RE.finditer(text):
        if m["cls"].rsplit(".", 1)[-1] == cls_name:
            names.update(m["names"].split())
    prose = DIRECTIVE_RE.sub("", FENCE_RE.sub("", text))
    for span in CODE_SPAN_RE.findall(prose):
        names.update(re.findall(r"[A-Za-z_]\w*", span))
    return names


def pages(key: str) -> dict[str, str]:
    paths = (f"annotated_trainers/{key}.md", f"reference_guides/{key}.md")
    return {p: (REPO / p).read_text(encoding="utf-8") for p in paths if (REPO / p).exists()}


def test_the_rule_counts_tables_and_prose_not_code_or_anchors():
    text = "\n".join(
        [
            "[[trl-config: trl.GRPOConfig beta num_generations]]",
            "[[trl-config: trl.RLOOConfig epsilon]]",
            "Set `top_p=0.9` or `args.top_k`; temperature in plain words does not count.",
            "[[note `if self.min_p is not None:`]]",
            "The note's text counts: `repetition_penalty`.",
            "[[end]]",
            "```python",
            "GRPOConfig(cache_implementation='static')",
            "```",
        ]
    )
    assert explained(text, "GRPOConfig") == {
        "beta", "num_generations", "top_p", "args", "top_k", "repetition_penalty",
    }  # fmt: skip


@pytest.mark.parametrize("key", CONFIGS)
def test_every_config_knob_is_explained_or_listed_as_not_covered(key):
    import trl

    cls_name = CONFIGS[key]
    fields = in_scope(getattr(trl, cls_name))
    texts = pages(key)
    covered = set().union(*(explained(text, cls_name) for text in texts.values()))
    skipped = NOT_COVERED[key]

    missing = [n for n in fields if n not in covered and n not in skipped]
    stale = [n for n in skipped if n not in fields or n in covered]
    walkthrough = f"annotated_trainers/{key}.md"
    assert not missing, (
        f"trl.{cls_name} has {len(missing)} knob(s) no page explains. Add each to a "
        f"`[[trl-config: trl.{cls_name} ...]]` table in the 'Config knobs' section of "
        f"{walkthrough} (or explain it in {', '.join(texts)} as inline code), or list it in "
        f"NOT_COVERED[{key!r}] in tests/test_config_coverage.py with a reason:\n  "
        + "\n  ".join(missing)
    )
    assert not stale, (
        f"NOT_COVERED[{key!r}] lists knob(s) that trl.{cls_name} no longer has or that "
        f"{walkthrough} now explains; remove them:\n  " + "\n  ".join(stale)
    )
    assert all(reason.strip() for reason in skipped.values())
