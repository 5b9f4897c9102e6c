"""Cut an annotated training script into its docstring and its sections of prose and code.

The site's script pages (docs/hooks/script_pages.py) put each section's prose beside its code;
the notebooks (annotated_trl.notebook) make each a Markdown cell and a code cell.

Rules:
- the module docstring is the intro (Markdown); its first line is the title;
- a run of consecutive full-line comments that start at column 0 with "# " or a bare "#" is
  Markdown prose; the code after it, up to the next such run, is that section's code;
- indented comments, trailing comments, the shebang ("#!") and "# /// script" metadata blocks
  stay in the code. A "#" inside a string is not a comment (we ask `tokenize`, not a regex).
"""

import ast
import io
import re
import tokenize
from dataclasses import dataclass

METADATA_START = re.compile(r"^# /// [a-zA-Z0-9-]+\s*$")  # PEP 723: "# /// script"
METADATA_END = "# ///"


@dataclass
class Section:
    doc: str  # Markdown prose ("" when the code has no comment above it)
    code: str  # the Python it explains
    first_line: int  # 1-based line number of `code`'s first line in the script


def _prose_lines(source: str) -> set[int]:
    """Line numbers (1-based) that are column-0 "# ..." comments, outside metadata blocks."""
    rows = set()
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        at_col0 = tok.type == tokenize.COMMENT and tok.start[1] == 0
        if at_col0 and (tok.string == "#" or tok.string.startswith("# ")):
            rows.add(tok.start[0])
    # A "# /// script ... # ///" block is data for tools like `uv run`: keep it as code.
    in_metadata = False
    for n, line in enumerate(source.splitlines(), start=1):
        if not in_metadata and METADATA_START.match(line):
            in_metadata = True
        if in_metadata:
            rows.discard(n)
            if line.rstrip() == METADATA_END:
                in_metadata = False
    return rows


def split_script(source: str) -> tuple[str, list[Section]]:
    """Return (module docstring, sections) for a script's source text."""
    tree = ast.parse(source)
    docstring, doc_rows = "", set()
    first = tree.body[0] if tree.body else None
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        docstring = ast.get_docstring(tree) or ""
        doc_rows = set(range(first.lineno, first.end_lineno + 1))
    prose = _prose_lines(source)

    # Each raw section: (comment lines, [(line number, code line), ...]).
    raw: list[tuple[list[str], list[tuple[int, str]]]] = [([], [])]
    for n, line in enumerate(source.splitlines(), start=1):
        comments, code = raw[-1]
        has_code = any(text.strip() for _, text in code)
        if n in doc_rows:
            # The docstring moved to the intro; break here so each code block stays contiguous.
            if has_code or comments:
                raw.append(([], []))
        elif n in prose:
            if has_code:
                raw.append(([line[2:]], []))
            else:
                # Blank lines between two comment runs are a paragraph break, not code.
                if code and comments:
                    comments.append("")
                code.clear()
                comments.append(line[2:])
        else:
            code.append((n, line))

    sections = []
    for comments, code in raw:
        while code and not code[0][1].strip():  # trim blank lines around the code
            code.pop(0)
        while code and not code[-1][1].strip():
            code.pop()
        doc = "\n".join(comments).strip("\n")
        if doc or code:
            first_line = code[0][0] if code else 0
            sections.append(Section(doc, "\n".join(text for _, text in code), first_line))
    return docstring, sections
