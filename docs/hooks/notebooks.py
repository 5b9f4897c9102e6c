"""Publish every annotated script as a notebook beside it: annotated_examples/<key>_training.ipynb,
made from the script at build time (annotated_trl.notebook), never stored in the repository.
The script's page links it ("Download as a notebook", script_pages.py)."""

from pathlib import Path

from mkdocs.structure.files import File

from annotated_trl.content_pages import section_sources
from annotated_trl.notebook import has_no_notebook, notebook_json


def on_files(files, config):
    root = Path(config.config_file_path).parent
    for script in section_sources(root)["annotated_examples"]:
        if has_no_notebook(script.name):
            continue
        uri = f"annotated_examples/{script.stem}.ipynb"
        files.append(File.generated(config, uri, content=notebook_json(script)))
    return files
