"""`[[trl-source: ...]]` lines: excerpts of the real source code of the installed TRL.

A directive is one line on its own (it may be indented, e.g. inside an admonition):

    [[trl-source: trl.trainer.sft_trainer.SFTTrainer.compute_loss]]
    [[trl-source: trl.trainer.sft_trainer.SFTTrainer._prepare_dataset > tokenize_fn]]
    [[trl-source: trl.trainer.sft_trainer.SFTTrainer._prepare_dataset lines "# Pack" .. "pack_"]]

1. a dotted path to a module-level object (class, function, method, property);
2. optionally "> name" (repeatable): a def or class nested inside it, found with `ast`;
3. optionally `lines "start" .. "end"`: from the first line containing "start" to the first
   following line containing "end", both included; `..<` leaves the "end" line out (handy
   when "end" is the comment that opens the next step).

It becomes a fenced Python block, dedented, titled "trl/trainer/sft_trainer.py · L1314–1401 ·
trl 1.16.0" and numbered with the real line numbers. A directive that does not resolve is a
warning (docs/hooks/trl_source.py hands `expand_directives` mkdocs' logger), so the strict build
fails and names the page and the directive. Our repository never stores TRL source: it is read
from the installed package's files at every build, without importing it (source_lookup). The
drift guard (tools/trl_manifest.py) hashes what `resolve` returns, and the tests check the pages
with the same functions.

A directive followed on the next line by notes is a *walk*: the excerpt is cut into steps, one
per note, each shown beside its note (note left, code right; stacked on a phone):

    [[trl-source: trl.trainer.grpo_trainer.GRPOTrainer._calculate_rewards]]
    [[note `keys = [key for key in`]]
    Markdown of the note, any number of lines ...
    [[note `if isinstance(reward_func, nn.Module)` `reward_func(**reward_inputs)`]]
    ...
    [[fold `if self.use_vllm`]] Why this step is not explained here.
    [[end]]

A note's first anchor starts its step at the first line, after the previous step's start, that
contains it; more anchors highlight further lines of the same step. A `fold` step is collapsed
behind its note. Anchors name lines by content, so a TRL upgrade that removes a line fails the
build; so does a step of more than MAX_STEP_LINES lines that is not folded.
"""

import ast
import functools
import html
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import distribution

from annotated_trl.source_lookup import SourceError, locate

DIRECTIVE_RE = re.compile(r"^(?P<indent>[ \t]*)\[\[trl-source:(?P<body>.+?)\]\][ \t]*$", re.M)
BODY_RE = re.compile(
    r"""^\s*(?P<symbol>[\w.]+)
        (?P<nested>(?:\s*>\s*\w+)*)
        (?:\s+lines\s+"(?P<start>[^"]+)"\s*\.\.(?P<exclusive><?)\s*"(?P<end>[^"]+)")?\s*$""",
    re.X,
)


@dataclass
class Excerpt:
    code: str  # dedented source
    path: str  # file path relative to site-packages, e.g. "trl/trainer/sft_trainer.py"
    start: int  # first line number in that file (1-based)
    end: int  # last line number, inclusive
    package_version: str  # e.g. "trl 1.16.0"

    @property
    def title(self) -> str:
        return f"{self.path} · L{self.start}–{self.end} · {self.package_version}"

    def markdown(self, indent: str = "") -> str:
        block = fenced(self.code, self.start, f'title="{self.title}"')
        return textwrap.indent(block, indent, lambda line: True)


def fenced(code: str, first_line: int, options: str = "") -> str:
    """A fenced Python block numbered from `first_line`; `options` e.g. 'hl_lines="1 3"'."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    fence = "`" * max(3, longest + 1)  # TRL docstrings contain ``` examples
    return f'{fence}python linenums="{first_line}" {options}'.rstrip() + f"\n{code}\n{fence}"


# --- Walks: an excerpt cut into steps, each beside its note -------------------------------------

MAX_STEP_LINES = 30
WALK_RE = re.compile(
    r"^\[\[trl-source:(?P<body>.+?)\]\][ \t]*\n"
    r"(?P<notes>\[\[(?:note|fold)\b.*?)^\[\[end\]\][ \t]*$",
    re.M | re.S,
)
MATH_RE = re.compile(r"\$\$.+?\$\$|\$[^$\n]+\$", re.S)
NOTE_RE = re.compile(r"^\[\[(?P<kind>note|fold)(?P<anchors>(?:[ \t]+`[^`\n]+`)+)[ \t]*\]\]", re.M)


@dataclass
class Note:
    kind: str  # "note", or "fold": the step's code is collapsed behind the note
    anchors: list[str]  # the first starts the step; the others are highlighted inside it
    text: str  # Markdown


@dataclass
class Step:
    note: Note | None  # None for the lines before the first note
    first_line: int  # in the source file
    code: str
    highlights: list[int]  # 1-based, within the step


def parse_notes(text: str) -> list[Note]:
    """The notes of a walk (the text between its directive and `[[end]]`)."""
    marks = list(NOTE_RE.finditer(text))
    if not marks or text[: marks[0].start()].strip():
        raise SourceError("a walk must start with a [[note `...`]] or [[fold `...`]] line")
    ends = [m.start() for m in marks[1:]] + [len(text)]
    notes = [
        Note(m["kind"], re.findall(r"`([^`]+)`", m["anchors"]), text[m.end() : end].strip())
        for m, end in zip(marks, ends, strict=True)
    ]
    for note in notes:
        # A note is Markdown inside HTML (md_in_html): "$y_{<t}$" opens a tag "<t" there, and the
        # rest of the page silently disappears.
        for math in MATH_RE.findall(note.text):
            if tag := re.search(r"<[A-Za-z!/?]", math):
                raise SourceError(f"{tag[0]!r} in the math of a note opens an HTML tag: write \\lt")
    return notes


def cut_into_steps(excerpt: Excerpt, notes: list[Note]) -> list[Step]:
    """Cut the excerpt at each note's first anchor; check every anchor and every step's length."""
    lines = excerpt.code.splitlines()
    starts, after = [], 0
    for note in notes:
        at = next((i for i in range(after, len(lines)) if note.anchors[0] in lines[i]), None)
        if at is None:
            where = f"after L{excerpt.start + after - 1}" if after else "anywhere"
            raise SourceError(f"anchor `{note.anchors[0]}` not found {where} in {excerpt.title}")
        starts.append(at)
        after = at + 1

    pieces = [(None, 0, starts[0])] if starts[0] > 0 else []
    pieces += zip(notes, starts, starts[1:] + [len(lines)], strict=True)
    steps = []
    for note, begin, stop in pieces:
        body = lines[begin:stop]
        while body and not body[-1].strip():
            body.pop()
        highlights = [1] if note else []
        for anchor in note.anchors[1:] if note else []:
            row = next((j for j, line in enumerate(body, 1) if anchor in line), None)
            if row is None:
                raise SourceError(
                    f"anchor `{anchor}` not found in the step at L{excerpt.start + begin}"
                )
            highlights.append(row)
        folded = note is not None and note.kind == "fold"
        if len(body) > MAX_STEP_LINES and not folded:
            raise SourceError(
                f"the step at L{excerpt.start + begin} has {len(body)} lines (at most "
                f"{MAX_STEP_LINES}): add a note inside it or fold it"
            )
        steps.append(Step(note, excerpt.start + begin, "\n".join(body), highlights))
    return steps


def walk_markdown(excerpt: Excerpt, steps: list[Step]) -> str:
    """Each step as a row: note on the left, its code on the right (docco-section, as on the
    script pages), the anchored lines highlighted."""
    parts = [
        '<div class="walk" markdown="1">',
        f'<p class="walk-source">{html.escape(excerpt.title)}</p>',
    ]
    for step in steps:
        note = step.note.text if step.note else ""
        hl = " ".join(map(str, step.highlights))
        code = fenced(step.code, step.first_line, f'hl_lines="{hl}"' if hl else "")
        if step.note and step.note.kind == "fold":
            last = step.first_line + step.code.count("\n")
            code = (
                f'<details class="walk-fold" markdown="1">\n<summary>L{step.first_line}–{last}'
                f" folded: show the code</summary>\n\n{code}\n\n</details>"
            )
        parts += [
            '<div class="docco-section walk-step" markdown="1">',
            f'<div class="docco-doc" markdown="1">\n\n{note}\n\n</div>',
            f'<div class="docco-code" markdown="1">\n\n{code}\n\n</div>',
            "</div>",
        ]
    parts.append("</div>")
    return "\n\n".join(parts)


def find_walks(markdown: str) -> list[tuple[str, list[Note]]]:
    """(directive, notes) of every walk in a page. The tests use this."""
    return [(m["body"].strip(), parse_notes(m["notes"])) for m in WALK_RE.finditer(markdown)]


def find_directives(markdown: str) -> list[str]:
    """The text of every directive in a page, e.g. "trl.foo.Bar > baz". The tests use this."""
    return [m.group("body").strip() for m in DIRECTIVE_RE.finditer(markdown)]


@functools.cache
def package_version(top_module: str) -> str:
    """The distribution that installs a top-level module, and its version: "trl 1.16.0"."""
    dist = distribution(top_module)
    return f"{dist.name} {dist.version}"


def resolve(directive: str) -> Excerpt:
    """Resolve the text inside `[[trl-source: ...]]` to an Excerpt, or raise SourceError."""
    m = BODY_RE.match(directive)
    if not m:
        raise SourceError(f"cannot parse {directive!r}")
    found = locate(m.group("symbol"))
    lines, start = found.lines()

    for name in re.findall(r"\w+", m.group("nested")):
        tree = ast.parse(textwrap.dedent("".join(lines)))
        defs = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
        # Look strictly inside the enclosing def/class (or module), nearest first: ast.walk is BFS.
        root = tree.body[0] if len(tree.body) == 1 and isinstance(tree.body[0], defs) else tree
        inner = [
            n for n in ast.walk(root) if n is not root and isinstance(n, defs) and n.name == name
        ]
        if not inner:
            raise SourceError(f"no def or class {name!r} inside {m.group('symbol')!r}")
        node = inner[0]
        first = min([node.lineno] + [d.lineno for d in node.decorator_list])
        lines = lines[first - 1 : node.end_lineno]
        start += first - 1

    if m.group("start"):
        begin = next((i for i, line in enumerate(lines) if m.group("start") in line), None)
        if begin is None:
            raise SourceError(f"marker {m.group('start')!r} not found")
        stop = next(
            (i for i in range(begin + 1, len(lines)) if m.group("end") in lines[i]),
            None,
        )
        if stop is None:
            raise SourceError(f"marker {m.group('end')!r} not found after {m.group('start')!r}")
        # `..` keeps the line with the end marker, `..<` stops just before it.
        lines = lines[begin : stop if m.group("exclusive") else stop + 1]
        start += begin

    return Excerpt(
        code=textwrap.dedent("".join(lines)).rstrip("\n"),
        path=found.path,
        start=start,
        end=start + len(lines) - 1,
        package_version=package_version(found.module.split(".")[0]),
    )


def expand_directives(markdown: str, page: str, warn: Callable[[str], object]) -> str:
    """`markdown` with every walk and every directive replaced by its excerpt. One that does not
    resolve is reported to `warn`, naming the `page` (its source path) and the directive, and
    shown in place as a failure box (what `mkdocs serve` shows)."""

    def replace_walk(m):
        try:
            excerpt = resolve(m["body"].strip())
            return walk_markdown(excerpt, cut_into_steps(excerpt, parse_notes(m["notes"])))
        except (SourceError, ImportError, SyntaxError) as e:
            directive = f"[[trl-source: {m['body'].strip()}]]"
            warn(f"{page}: the walk of {directive} does not resolve: {e}")
            return f'!!! failure "Unresolved TRL source"\n\n    `{directive}`: {e}'

    markdown = WALK_RE.sub(replace_walk, markdown)

    def replace(m):
        try:
            return resolve(m.group("body").strip()).markdown(m.group("indent"))
        except (SourceError, ImportError, SyntaxError) as e:
            directive = f"[[trl-source: {m.group('body').strip()}]]"
            warn(f"{page}: {directive} does not resolve: {e}")
            indent = m.group("indent")
            return f'{indent}!!! failure "Unresolved TRL source"\n\n{indent}    `{directive}`: {e}'

    return DIRECTIVE_RE.sub(replace, markdown)
