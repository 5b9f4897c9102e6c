"""An annotated training script as a Jupyter notebook, made from the script itself.

    annotated-trl notebook sft --out .      writes ./sft_training.ipynb

The docstring becomes the first Markdown cells; the tiny CPU run of its commands becomes the
first code cell (tagged "parameters": it sets `sys.argv` as the command line would), each
section's prose a Markdown cell and its code a code cell, unchanged; the header's other commands
(GPU runs) come last as `%%bash` cells tagged "skip-execution". Nothing is kept in the
repository: the site and the CLI build the notebook from the script each time, so the two
cannot drift.
"""

import json
import re
import shlex
from pathlib import Path

from annotated_trl.script_sections import split_script

# The header's ```bash block of commands (the site renders it as a shell block, not run).
COMMANDS = re.compile(r"^```bash[^\n]*\n(.*?)\n```[ \t]*$", re.DOTALL | re.MULTILINE)

HOW_TO_RUN = """\
## Run it here

Start Jupyter at the **root of the annotated-trl repository**, in its environment
(`pip install -e .` there): the recipe and the tiny fixture are paths relative to the root.
The next cell does what the tiny CPU run's commands do: it builds the tiny models and toy data
into `tiny/` if they are missing, and sets `sys.argv`, which the script reads as its command
line. Then run the cells in order; the model is saved in the recipe's `output_dir`. Change
`sys.argv` to try other flags: a mistake stops the cell with the script's one-line error
(`SystemExit: error: ...`) and the kernel keeps running.
"""

ON_GPUS = """\
## The other commands

Each cell below is one command of the script's header, run in a shell (`%%bash`) from the
repository root, with this environment's `python` first on the `PATH`. The ones without a
`_tiny.yaml` recipe train a real model on a real dataset: **run them on a GPU machine only**
(on a CPU the script stops at once: `bf16` needs a GPU).
"""


def _markdown(source: str) -> dict:
    return {"cell_type": "markdown", "metadata": {}, "source": source}


def _code(source: str, *tags: str) -> dict:
    metadata = {"tags": list(tags)} if tags else {}
    return {
        "cell_type": "code",
        "metadata": metadata,
        "execution_count": None,
        "outputs": [],
        "source": source,
    }


def _tiny_run(paragraph: str) -> str:
    """The "parameters" cell that does what the header's tiny run does:
    `annotated-trl tiny tiny`, then `python annotated_examples/<key>_training.py --config ...`."""
    lines = paragraph.replace("\\\n", " ").splitlines()  # one line per command
    comments = "".join(line + "\n" for line in lines if line.startswith("#"))
    commands = [shlex.split(line) for line in lines if not line.startswith("#")]
    fixture = next(words[2] for words in commands if words[:2] == ["annotated-trl", "tiny"])
    argv = next(words[1:] for words in commands if words[0] == "python")
    recipe = argv[argv.index("--config") + 1]
    return (
        f"{comments}"
        "import sys\n"
        "from pathlib import Path\n\n"
        "from annotated_trl.fixtures import build_all\n\n"
        # Before building anything: a notebook opened elsewhere would fill the wrong folder.
        f"if not Path({recipe!r}).is_file():\n"
        '    raise SystemExit("error: start Jupyter at the root of the annotated-trl repository")\n'
        f"if not Path({fixture!r}).is_dir():  # `annotated-trl tiny {fixture}`, once\n"
        f"    build_all({fixture!r})\n"
        f"sys.argv = {argv!r}"
    )


def has_no_notebook(script_name: str) -> bool:
    """A GPU-only method's script (its row's `gpu_only`): no tiny run to start a notebook with."""
    from annotated_trl.methods import BY_KEY

    method = BY_KEY.get(script_name.removesuffix(".py").removesuffix("_training"))
    return bool(method and method.gpu_only)


def script_to_notebook(path: str | Path) -> dict:
    """The notebook (nbformat 4 JSON) of the annotated script at `path`."""
    docstring, sections = split_script(Path(path).read_text(encoding="utf-8"))
    block = COMMANDS.search(docstring)
    tiny, *others = re.split(r"\n\s*\n", block.group(1).strip()) if block else [""]
    if "annotated-trl tiny" not in tiny or "_tiny.yaml" not in tiny:
        raise ValueError(f"{path}: its docstring's ```bash block does not start with the tiny run")
    title, _, intro = docstring[: block.start()].partition("\n")

    cells = [_markdown(f"# {title.strip()}\n\n{intro.strip()}")]
    if after := docstring[block.end() :].strip():
        cells.append(_markdown(after))
    cells += [_markdown(HOW_TO_RUN), _code(_tiny_run(tiny), "parameters")]
    for section in sections:
        if section.doc:
            cells.append(_markdown(section.doc))
        if section.code:
            cells.append(_code(section.code))
    cells.append(_markdown(ON_GPUS))
    for command in others:
        gpu = "" if "_tiny.yaml" in command else "# On a GPU machine only.\n"
        cells.append(_code(f"%%bash\n{gpu}{command}", "skip-execution"))

    # nbformat 4.5 wants an id per cell: their position, so the same script gives the same file.
    for n, cell in enumerate(cells):
        cell["id"] = f"cell-{n}"
    return {
        "cells": cells,
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
            "language_info": {"name": "python"},
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def notebook_json(script: str | Path) -> str:
    """The notebook as the file's text (the site publishes this too)."""
    return json.dumps(script_to_notebook(script), indent=1, ensure_ascii=False) + "\n"
