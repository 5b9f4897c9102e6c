"""Walkthrough notes sit beside the lines they explain (annotated_trl.source_excerpts, "walks").

Every excerpt of TRL's source on a walkthrough page is cut into steps of at most MAX_STEP_LINES
lines, each beside its note; a note names its line by content, so a TRL upgrade that removes the
line fails here and in the strict build.
"""

import dataclasses
import re

import pytest
from support.docs import REPO, html_path, import_object

from annotated_trl.config_tables import cell, config_table
from annotated_trl.source_excerpts import (
    MAX_STEP_LINES,
    SourceError,
    cut_into_steps,
    expand_directives,
    find_directives,
    find_walks,
    parse_notes,
    resolve,
)

pytestmark = pytest.mark.docs

WALKTHROUGHS = sorted((REPO / "annotated_trainers").glob("*.md"))
SYMBOL = "trl.data_utils.is_conversational"  # a short, stable function


def walk(*notes: str) -> str:
    return f"[[trl-source: {SYMBOL}]]\n" + "\n".join(notes) + "\n[[end]]\n"


def test_notes_cut_the_excerpt_at_their_anchors():
    excerpt = resolve(SYMBOL)
    notes = parse_notes(
        "[[note `def is_conversational(`]]\nThe signature.\n\n"
        "[[note `supported_keys = [` `return True`]] Several\nlines, *Markdown*.\n"
    )
    assert [n.text for n in notes] == ["The signature.", "Several\nlines, *Markdown*."]
    first, second = cut_into_steps(excerpt, notes)
    lines = excerpt.code.splitlines()
    cut = next(i for i, line in enumerate(lines) if "supported_keys = [" in line)
    # The steps tile the excerpt (trailing blank lines trimmed), with the file's line numbers.
    assert first.code == "\n".join(lines[:cut]).rstrip("\n")
    assert second.code == "\n".join(lines[cut:])
    assert (first.first_line, second.first_line) == (excerpt.start, excerpt.start + cut)
    # The first anchor is highlighted, then every further anchor of the note, inside its step.
    rows = second.code.splitlines()
    assert second.highlights[0] == 1 and "return True" in rows[second.highlights[1] - 1]


def test_lines_before_the_first_note_are_a_step_without_note():
    excerpt = resolve(SYMBOL)
    (lead, step) = cut_into_steps(excerpt, parse_notes("[[note `supported_keys = [`]] Ends here."))
    assert lead.note is None and lead.highlights == [] and lead.first_line == excerpt.start
    assert step.first_line > lead.first_line


@pytest.mark.parametrize(
    "notes, problem",
    [
        ("[[note `no such line anywhere`]] x", "not found anywhere"),
        # Anchors are searched in order: a note cannot point back above the previous one.
        ("[[note `return False`]] a\n[[note `def is_conversational(`]] b", "not found after"),
        ("[[note `def is_conversational(` `no such line`]] x", "not found in the step"),
        ("Text before the first note\n[[note `return False`]] x", "must start with"),
        # Notes are Markdown inside HTML: "<t" would open a tag and swallow the rest of the page.
        ("[[note `supported_keys`]] the prefix $y_{<t}$", "opens an HTML tag"),
    ],
)
def test_a_broken_walk_is_an_error(notes, problem):
    with pytest.raises(SourceError, match=problem):
        cut_into_steps(resolve(SYMBOL), parse_notes(notes))


def test_a_long_step_must_be_cut_or_folded():
    long = "trl.trainer.grpo_trainer.GRPOTrainer._calculate_rewards"
    excerpt = resolve(long)
    assert excerpt.end - excerpt.start + 1 > MAX_STEP_LINES
    with pytest.raises(SourceError, match=f"at most {MAX_STEP_LINES}"):
        cut_into_steps(excerpt, parse_notes("[[note `def _calculate_rewards(`]] All of it."))
    (folded,) = cut_into_steps(excerpt, parse_notes("[[fold `@profiling_decorator`]] Later."))
    assert folded.note.kind == "fold"


def test_an_unresolvable_walk_warns_with_page_and_directive():
    """The warning (the hook passes mkdocs' logger) is what fails `mkdocs build --strict`."""
    warnings = []
    out = expand_directives(
        walk("[[note `gone from TRL`]] x"), "annotated_trainers/x.md", warnings.append
    )
    (message,) = warnings
    assert "annotated_trainers/x.md" in message and "gone from TRL" in message
    assert "!!! failure" in out


@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: p.name)
def test_every_excerpt_is_a_walk_that_resolves(path):
    """No walkthrough shows a bare excerpt with its notes somewhere below it."""
    text = path.read_text(encoding="utf-8")
    walks = find_walks(text)
    assert len(walks) == len(find_directives(text)), "an excerpt without notes beside it"
    problems = []
    for directive, notes in walks:
        try:
            cut_into_steps(resolve(directive), notes)
        except SourceError as e:
            problems.append(f"[[trl-source: {directive}]]: {e}")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: p.name)
def test_built_walkthrough_shows_each_note_beside_its_code(built_site, path):
    page = (built_site / html_path(f"annotated_trainers/{path.name}")).read_text()
    walks = find_walks(path.read_text(encoding="utf-8"))
    steps = sum(len(cut_into_steps(resolve(d), notes)) for d, notes in walks)
    assert page.count('class="docco-section walk-step"') == steps
    assert page.count('class="docco-doc"') == page.count('class="docco-code"')


# --- Config knob tables (annotated_trl.config_tables) -----------------------------------------

CONFIG_DIRECTIVE = re.compile(r"^\[\[trl-config:\s*([\w.]+)((?:\s+\w+)+)\s*\]\]", re.M)


@pytest.mark.parametrize("path", WALKTHROUGHS, ids=lambda p: p.name)
def test_knob_tables_show_the_installed_defaults(path):
    for dotted, names in CONFIG_DIRECTIVE.findall(path.read_text(encoding="utf-8")):
        names = names.split()
        rows = config_table(dotted, names).splitlines()[2:]
        fields = {f.name: f for f in dataclasses.fields(import_object(dotted))}
        assert len(rows) == len(names)
        for name, row in zip(names, rows, strict=True):
            knob, default, help_text = (c.strip() for c in re.split(r"(?<!\\)\|", row)[1:4])
            field = fields[name]
            expected = field.default if field.default_factory is dataclasses.MISSING else None
            if field.default_factory is not dataclasses.MISSING:
                expected = field.default_factory()
            assert knob == f"`{name}`"
            assert default == f"`{repr(expected)}`".replace("|", "\\|")
            assert help_text == (cell(field.metadata["help"]) if "help" in field.metadata else "—")


def test_a_knob_the_config_lacks_is_an_error():
    with pytest.raises(SourceError, match="no_such_knob"):
        config_table("trl.GRPOConfig", ["beta", "no_such_knob"])


def test_a_default_set_by_code_is_an_error_not_a_guess():
    """The tables read defaults from the source without importing it: `optim`'s default is a
    name TrainingArguments' module computes, so reading it would be guessing."""
    with pytest.raises(SourceError, match="default of TrainingArguments.optim is not a literal"):
        config_table("trl.GRPOConfig", ["optim"])
    # Its `choices` are computed too, but the help beside them is a literal.
    assert "Logging level" in config_table("trl.GRPOConfig", ["log_level"])
