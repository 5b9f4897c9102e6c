"""Every fenced code block on the site is either run by this test or explicitly marked not-runnable.

Where: every Markdown file in docs/, annotated_trainers/, reference_guides/, README.md, and the
Markdown of each annotated example (its docstring and column-0 comments).

The rule, per block:
- carries the class `.no-run` on its fence -> not run. Superfences' attribute syntax:
      ```bash { .no-run }
  (it renders like any other block; the class only lands on the wrapping <div>);
- else a data block, language text, yaml, json, jsonl or jinja -> not run (data is not code);
- else language python -> run as `python -c` in a fresh process (forked from a warm interpreter,
  tests/support/warm.py), from the repository root, offline, under a timeout; it must exit 0;
- anything else (bash, console, no language, ...) -> fails: mark it `.no-run` or make it Python.
"""

import os
import re
from pathlib import Path

import pytest
from support.docs import REPO, content_files, docs_pages, html_path, page_uri
from support.processes import OFFLINE_ENV
from support.warm import shared

from annotated_trl.script_sections import split_script

pytestmark = pytest.mark.docs

DATA_LANGUAGES = {"text", "yaml", "json", "jsonl", "jinja"}
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})[ \t]*(?P<info>[^`]*?)[ \t]*$")


def fenced_blocks(markdown: str) -> list[tuple[int, str, set[str], str]]:
    """(line number of the opening fence, language, classes, code) of each fenced block."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        m = FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence, info = m["indent"], m["fence"], m["info"]
        attrs = re.search(r"\{(.*)\}", info)
        classes = set(re.findall(r"\.([\w-]+)", attrs.group(1))) if attrs else set()
        language = info.split("{")[0].split()[0] if info.split("{")[0].strip() else ""
        if not language and classes:  # ``` { .python .no-run }: the first class is the language
            language = re.findall(r"\.([\w-]+)", attrs.group(1))[0]
        body, start = [], i + 1
        i += 1
        while i < len(lines):
            close = re.match(rf"^[ \t]*{fence[0]}{{{len(fence)},}}[ \t]*$", lines[i])
            if close:
                break
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i])
            i += 1
        blocks.append((start, language.lower(), classes, "\n".join(body)))
        i += 1
    return blocks


def markdown_sources() -> dict[str, str]:
    """Site Markdown by display path; a script contributes its docstring and comments."""
    files = docs_pages() + [p for p in content_files() if p.suffix == ".md"]
    if (REPO / "README.md").exists():
        files.append(REPO / "README.md")
    sources = {p.relative_to(REPO).as_posix(): p.read_text(encoding="utf-8") for p in files}
    for script in (p for p in content_files() if p.suffix == ".py"):
        docstring, sections = split_script(script.read_text(encoding="utf-8"))
        prose = [docstring] + [s.doc for s in sections]
        sources[script.relative_to(REPO).as_posix()] = "\n\n".join(prose)
    return sources


BLOCKS = [
    pytest.param(language, classes, code, id=f"{path}:{line}-{language or 'nolang'}")
    for path, text in markdown_sources().items()
    for line, language, classes, code in fenced_blocks(text)
]


@pytest.mark.parametrize("language, classes, code", BLOCKS)
def test_code_block_runs_or_is_marked(language, classes, code):
    if "no-run" in classes or language in DATA_LANGUAGES:
        return
    assert language == "python", (
        f"a ```{language or '(no language)'} block must run as Python or carry {{ .no-run }}"
    )
    env = {**os.environ, **OFFLINE_ENV}
    result = shared(**OFFLINE_ENV).run(["-c", code], REPO, env, timeout=300)
    assert result.returncode == 0, f"block failed:\n{code}\n--- stderr ---\n{result.stderr[-3000:]}"


def test_fence_parser():
    md = "Text\n\n```bash { .no-run }\necho hi\n```\n\n    ~~~~python\n    print(1)\n    ~~~~\n"
    assert fenced_blocks(md) == [
        (3, "bash", {"no-run"}, "echo hi"),
        (7, "python", set(), "print(1)"),
    ]


def page_sources() -> dict[str, Path]:
    """Markdown page source by mkdocs URI."""
    pages = {p.relative_to(REPO / "docs").as_posix(): p for p in docs_pages()}
    return pages | {page_uri(p): p for p in content_files() if p.suffix == ".md"}


@pytest.mark.parametrize("uri", sorted(page_sources()))
def test_no_run_marker_renders_as_a_normal_block(built_site, uri):
    """Superfences reads the marker as a class on the block: none is lost or shown as text."""
    marked = sum("no-run" in b[2] for b in fenced_blocks(page_sources()[uri].read_text()))
    page = (built_site / html_path(uri)).read_text(encoding="utf-8")
    assert len(re.findall(r'class="no-run[ "]', page)) == marked
