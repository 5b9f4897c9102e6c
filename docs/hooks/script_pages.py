"""Turn an annotated training script into a two-column Markdown page (docco/pycco style).

Not a hook by itself: content_sections.py calls `script_to_markdown` for every
annotated_examples/<key>_training.py. The script is cut by `annotated_trl.script_sections`
(its rules are there): each section's prose goes in the LEFT column, its code in the RIGHT.
"""

import html
import re

from annotated_trl.notebook import has_no_notebook
from annotated_trl.script_sections import split_script


def _fence(code: str) -> str:
    """A backtick fence longer than any backtick run inside `code`."""
    longest = max((len(m) for m in re.findall(r"`+", code)), default=0)
    return "`" * max(3, longest + 1)


def script_to_markdown(source: str, script_name: str) -> str:
    """Markdown for the page of the script `script_name` (a sibling file in the built site)."""
    docstring, sections = split_script(source)
    title, _, intro = docstring.partition("\n")
    title = title.strip().lstrip("#").strip() or script_name

    # The copy button carries the whole script in one attribute; Material's clipboard code
    # copies `data-clipboard-text`. Newlines are encoded so the raw HTML stays on one line,
    # out of reach of the Markdown block parsers.
    attr = html.escape(source, quote=True).replace("\n", "&#10;")
    notebook = script_name.removesuffix(".py") + ".ipynb"
    parts = [
        f"# {title}",
        intro.strip(),
        '<div class="docco-actions" markdown="1">',
        f"[Download `{script_name}`]({script_name}){{ .md-button download }}",
        # docs/hooks/notebooks.py publishes the notebook beside the script (a GPU-only one: none).
        *(
            []
            if has_no_notebook(script_name)
            else [f"[Download as a notebook]({notebook}){{ .md-button download }}"]
        ),
        f'<p><button class="md-button" data-clipboard-text="{attr}">'
        "Copy the whole script</button></p>",
        "</div>",
        '<div class="docco" markdown="1">',
    ]
    for s in sections:
        fence = _fence(s.code)
        code = f'{fence}python linenums="{s.first_line}"\n{s.code}\n{fence}' if s.code else ""
        parts += [
            '<div class="docco-section" markdown="1">',
            f'<div class="docco-doc" markdown="1">\n\n{s.doc}\n\n</div>',
            f'<div class="docco-code" markdown="1">\n\n{code}\n\n</div>',
            "</div>",
        ]
    parts.append("</div>")
    return "\n\n".join(p for p in parts if p) + "\n"
