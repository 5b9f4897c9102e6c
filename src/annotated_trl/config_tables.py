"""`[[trl-config: trl.GRPOConfig num_generations beta ...]]` lines: tables of those fields of
the installed config class, the knob, its default and its help text, read from the class's
source at build time (never copied into a page; annotated_trl.source_lookup reads it without
importing TRL). A name the class does not have is an error; the hook
(docs/hooks/config_tables.py) makes it a warning, so the strict build fails.
"""

import re
from collections.abc import Callable

from annotated_trl.hf_docstrings import clean  # HF cross-references and links, as the API shows
from annotated_trl.source_lookup import SourceError, dataclass_fields

CONFIG_RE = re.compile(
    r"^\[\[trl-config:\s*(?P<cls>[\w.]+)(?P<names>(?:\s+\w+)+)\s*\]\][ \t]*$", re.M
)


def cell(text: str) -> str:
    """Help text as one table cell: paragraphs and list items on their own lines."""
    lines = [line.strip() for line in clean(text).strip().splitlines()]
    out: list[str] = []
    for line in lines:
        if not line or line.startswith(("- ", "* ")):
            out.append("<br>" if not line else f"<br>{line}")
        else:
            out.append(line)
    return re.sub(r"(<br>\s*)+", "<br>", " ".join(out)).replace("|", "\\|")


def config_table(dotted: str, names: list[str]) -> str:
    fields = dataclass_fields(dotted, names)
    unknown = [n for n in names if n not in fields]
    if unknown:
        raise SourceError(f"{dotted} has no field {', '.join(map(repr, unknown))}")
    rows = ["| Knob | Default | What it does |", "|---|---|---|"]
    for name in names:
        field = fields[name]
        default = field.default.replace("|", "\\|")
        rows.append(f"| `{name}` | `{default}` | {cell(field.help or '—')} |")
    return "\n".join(rows)


def expand_config_tables(markdown: str, page: str, warn: Callable[[str], object]) -> str:
    """`markdown` with every directive replaced by its table. One that does not resolve is
    reported to `warn`, naming the `page` (its source path), and shown in place as a failure box."""

    def replace(m):
        try:
            return config_table(m["cls"], m["names"].split())
        except (SourceError, ImportError, TypeError) as e:
            warn(f"{page}: [[trl-config: {m['cls']} ...]]: {e}")
            return f'!!! failure "Unresolved config table"\n\n    `{m["cls"]}`: {e}'

    return CONFIG_RE.sub(replace, markdown)
