"""Rewrite the generated blocks of the site's pages from the functions that make them.

A block is marked in the Markdown as

    <!-- generated: annotated_trl.memory.models_table() -->
    ...output...
    <!-- end generated -->

and the site's tests check that each block equals its function's output. After a change to
what a function reads (a new method in the table, a new preset), run

    .venv/bin/python -m tools.generated_blocks   # from the repository root

and commit the pages it rewrote.
"""

import importlib
import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BLOCK = re.compile(
    r"(<!-- generated: ([\w.]+)\.(\w+)\(\) -->\n)(.*?)(\n<!-- end generated -->)", re.S
)


def regenerate(text: str) -> str:
    def output(match: re.Match) -> str:
        start, module, function, _, end = match.groups()
        return start + getattr(importlib.import_module(module), function)() + end

    return BLOCK.sub(output, text)


def main() -> None:
    for page in sorted(REPO.glob("docs/**/*.md")):
        text = page.read_text()
        new = regenerate(text)
        if new != text:
            page.write_text(new)
            print(f"rewrote {page.relative_to(REPO)}")


if __name__ == "__main__":
    main()
