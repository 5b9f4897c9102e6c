"""The notebooks (annotated_trl.notebook): made from each script with nothing added to its code,
written by `annotated-trl notebook`, published beside each script on the site, and run top to
bottom in a real Jupyter kernel, offline, for two methods."""

import ast
import json
import os

import nbformat
import pytest
from nbclient import NotebookClient
from support.processes import OFFLINE_ENV, REPO

from annotated_trl.cli import main
from annotated_trl.methods import CPU_METHODS
from annotated_trl.notebook import script_to_notebook
from annotated_trl.script_sections import split_script

KEYS = [m.key for m in CPU_METHODS]  # a GPU-only script has no notebook (no tiny run)
# Two of the cheapest tiny runs: one model, no reference, no generation (their two steps take
# well under a second; the kernel's imports of torch, transformers and TRL are the cost).
EXECUTED = ("reward", "prm")


def _script(key):
    return REPO / "annotated_examples" / f"{key}_training.py"


def _tags(cell) -> list[str]:
    return cell["metadata"].get("tags", [])


@pytest.mark.parametrize("key", KEYS)
def test_notebook_is_the_script(key):
    """Valid nbformat 4; its untagged code cells are the script's code, section by section; the
    "parameters" cell runs the tiny recipe; the header's other commands are shell cells that an
    executor skips."""
    notebook = nbformat.from_dict(script_to_notebook(_script(key)))
    nbformat.validate(notebook)
    code = [c.source for c in notebook.cells if c.cell_type == "code" and not _tags(c)]
    assert code == [s.code for s in split_script(_script(key).read_text())[1] if s.code]

    (parameters,) = [c for c in notebook.cells if _tags(c) == ["parameters"]]
    (argv,) = [n.value for n in ast.parse(parameters.source).body if isinstance(n, ast.Assign)]
    assert ast.literal_eval(argv) == [
        f"annotated_examples/{key}_training.py",
        *["--config", f"annotated_examples/recipes/{key}_tiny.yaml"],
    ]
    shell = [c for c in notebook.cells if "skip-execution" in _tags(c)]
    assert shell and all(c.source.startswith("%%bash\n") for c in shell)


def test_cli_writes_a_notebook(tmp_path, capsys):
    assert main(["notebook", "dpo", "--out", str(tmp_path / "nb")]) == 0
    written = tmp_path / "nb" / "dpo_training.ipynb"
    assert json.loads(written.read_text()) == script_to_notebook(_script("dpo"))
    assert capsys.readouterr().out.startswith(f"wrote {written}")


def test_cli_refuses_an_unknown_method_in_one_line(tmp_path, capsys):
    assert main(["notebook", "dpoo", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: unknown method 'dpoo'; one of: sft,") and err.count("\n") == 1
    assert not any(tmp_path.iterdir())


@pytest.mark.docs
@pytest.mark.parametrize("key", KEYS)
def test_site_publishes_the_notebook_beside_the_script(built_site, key):
    folder = built_site / "annotated_examples"
    published = json.loads((folder / f"{key}_training.ipynb").read_text())
    assert published == script_to_notebook(_script(key))
    page = (folder / f"{key}_training.html").read_text()
    assert f'href="{key}_training.ipynb"' in page and "Download as a notebook" in page


@pytest.fixture(scope="module")
def executed(tiny, tmp_path_factory) -> tuple:
    """Both notebooks run top to bottom in one real kernel, in a folder laid out as the
    repository root they expect (the recipes, tiny/ already built), two steps each instead of
    the recipe's; then a misspelt flag. One kernel for both: a second would import torch,
    transformers and TRL again, ~6 CPU-s (each script alone is also run fresh by its smoke test).
    Returns the folder and the executed cells."""
    folder = tmp_path_factory.mktemp("notebooks")
    (folder / "annotated_examples").symlink_to(REPO / "annotated_examples")
    (folder / "tiny").symlink_to(tiny.root)
    cells = []
    for key in EXECUTED:
        notebook = script_to_notebook(_script(key))["cells"]
        at = next(n for n, c in enumerate(notebook) if "parameters" in _tags(c))
        # As papermill injects parameters: a cell after the "parameters" one.
        short = 'sys.argv += ["--max_steps", "2", "--eval_strategy", "no", "--logging_steps", "1"]'
        cells += [*notebook[: at + 1], nbformat.v4.new_code_cell(short), *notebook[at + 1 :]]
    # A reader's typo, re-running the cell that parses the flags: one line, the kernel alive.
    parse = next(c["source"] for c in cells if "parse_or_exit(" in c["source"])
    typo = nbformat.v4.new_code_cell('sys.argv += ["--lerning_rate", "1"]\n' + parse)
    typo.metadata.tags = ["raises-exception"]  # nbclient: this cell's error is expected
    cells += [typo, nbformat.v4.new_code_cell("print('still here')")]

    for n, cell in enumerate(cells):  # ids unique again across the two notebooks
        cell["id"] = f"run-{n}"
    notebook = nbformat.v4.new_notebook(cells=[nbformat.from_dict(c) for c in cells])
    client = NotebookClient(notebook, timeout=300, resources={"metadata": {"path": str(folder)}})
    # The kernel's environment: offline, one torch thread as every run in the suite.
    client.execute(env={**os.environ, **OFFLINE_ENV, "OMP_NUM_THREADS": "1"})
    return folder, notebook.cells


@pytest.mark.parametrize("key", EXECUTED)
def test_notebook_trains_the_tiny_run_in_a_kernel(executed, key):
    folder, _ = executed
    saved = folder / "runs" / f"{key}-tiny"
    assert (saved / "model.safetensors").is_file()
    assert json.loads((saved / "trainer_state.json").read_text())["global_step"] == 2


def test_a_bad_invocation_in_a_kernel_is_one_line_and_the_kernel_lives(executed):
    *_, typo, alive = executed[1]
    (error,) = [o for o in typo.outputs if o.output_type == "error"]
    assert (error.ename, error.evalue) == (
        "SystemExit",
        "error: unknown flag --lerning_rate; did you mean --learning_rate?",
    )
    assert alive.outputs[0].text == "still here\n"
