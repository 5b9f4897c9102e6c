"""Make the three top-level content folders sections of the site, without copies or symlinks.

- annotated_trainers/*.md and reference_guides/*.md become pages at the same paths;
- annotated_examples/<key>_training.py becomes the page annotated_examples/<key>_training.md
  (rendered by script_pages.py) and is also published as-is, for download;
- each folder gets an index page, generated in memory, listing its pages;
- in mkdocs.yml's `nav:`, an entry whose value is a folder name with a trailing slash
  ("Reference guides: reference_guides/") expands to [index page, every page of the folder].

Files are read from the repository folders in place, and `mkdocs serve` watches them.
"""

import re
from pathlib import Path

from mkdocs.structure.files import File
from script_pages import script_to_markdown, split_script

# folder -> (glob of its page sources, one-line description for its index page)
SECTIONS = {
    "annotated_trainers": (
        "*.md",
        "Walkthroughs of each trainer's real code, pulled from the installed TRL at build time.",
    ),
    "reference_guides": (
        "*.md",
        "The math behind each method: notation, derivations, and the equations our tests check.",
    ),
    "annotated_examples": (
        "*_training.py",
        "Training scripts that run for real, shown with their comments beside the code.",
    ),
}


def _root(config) -> Path:
    return Path(config.config_file_path).parent


def section_sources(root: Path) -> dict[str, list[Path]]:
    """Every content file, by section folder. The tests use this too."""
    return {
        folder: sorted(p for p in (root / folder).glob(pattern) if p.name != "index.md")
        for folder, (pattern, _) in SECTIONS.items()
    }


def page_uri(path: Path) -> str:
    """Site source path of a content file: the script page is a .md beside the script."""
    name = path.stem + ".md" if path.suffix == ".py" else path.name
    return f"{path.parent.name}/{name}"


def page_title(path: Path) -> str:
    """The title the page will get: a Markdown file's first "# " heading, a script's docstring."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        first = split_script(text)[0].partition("\n")[0].lstrip("#").strip()
        return first or path.name
    m = re.search(r"^# (.+)$", text, flags=re.MULTILINE)
    return m.group(1).strip() if m else path.stem


def on_config(config):
    pages = section_sources(_root(config))

    def expand(entry):
        if isinstance(entry, dict):
            return {k: expand(v) for k, v in entry.items()}
        if isinstance(entry, list):
            return [expand(e) for e in entry]
        if isinstance(entry, str) and entry.rstrip("/") in SECTIONS and entry.endswith("/"):
            folder = entry.rstrip("/")
            return [f"{folder}/index.md"] + [page_uri(p) for p in pages[folder]]
        return entry

    config.nav = expand(config.nav)
    return config


def on_serve(server, config, builder):
    # Same as listing the folders under `watch:`, but tolerant of a folder that is absent.
    for folder in SECTIONS:
        if (_root(config) / folder).is_dir():
            server.watch(str(_root(config) / folder))
    return server


def on_files(files, config):
    root = _root(config)
    for folder, paths in section_sources(root).items():
        links = []
        for path in paths:
            uri = page_uri(path)
            if path.suffix == ".py":
                md = script_to_markdown(path.read_text(encoding="utf-8"), path.name)
                files.append(File.generated(config, uri, content=md))
                # The script itself, published beside its page for "Download".
                files.append(
                    File(
                        f"{folder}/{path.name}",
                        str(root),
                        config.site_dir,
                        config.use_directory_urls,
                    )
                )
            else:
                # A real file whose source directory is the repo root: no copy, edit links work.
                files.append(File(uri, str(root), config.site_dir, config.use_directory_urls))
            links.append(f"- [{page_title(path)}]({uri.split('/')[-1]})")
        title = folder.replace("_", " ").capitalize()
        _, blurb = SECTIONS[folder]
        body = "\n".join(links) or "No pages yet."
        index = f"# {title}\n\n{blurb}\n\n{body}\n"
        files.append(File.generated(config, f"{folder}/index.md", content=index))
    return files
