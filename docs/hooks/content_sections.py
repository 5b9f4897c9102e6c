"""Make the three top-level content folders sections of the site, without copies or symlinks.

- annotated_trainers/*.md and reference_guides/*.md become pages at the same paths;
- annotated_examples/<key>_training.py becomes the page annotated_examples/<key>_training.md
  (rendered by script_pages.py) and is also published as-is, for download;
- in mkdocs.yml's `nav:`, the entry "Methods: methods/" expands to a generated overview page and,
  family by family in the order of `annotated_trl.methods.METHODS`, each method's three pages
  (Walkthrough, Math, Script), then any content page that belongs to no method (the notation);
- every page of a method starts with a bar that links its three pages.

Files are read from the repository folders in place, and `mkdocs serve` watches them. Which
files are pages, and the page each becomes, is `annotated_trl.content_pages` (the tests use it).
"""

import re
from itertools import groupby
from pathlib import Path

from mkdocs.structure.files import File
from script_pages import script_to_markdown

from annotated_trl.content_pages import OVERVIEW, SECTIONS, page_uri, section_sources
from annotated_trl.methods import BY_KEY, FLOWS, METHODS
from annotated_trl.script_sections import split_script

# The three pages of a method, as the navigation and the method bar label them.
KINDS = {
    "annotated_trainers": "Walkthrough",
    "reference_guides": "Math",
    "annotated_examples": "Script",
}


def _root(config) -> Path:
    return Path(config.config_file_path).parent


def page_title(path: Path) -> str:
    """The title the page will get: a Markdown file's first "# " heading, a script's docstring."""
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".py":
        first = split_script(text)[0].partition("\n")[0].lstrip("#").strip()
        return first or path.name
    m = re.search(r"^# (.+)$", text, flags=re.MULTILINE)
    return m.group(1).strip() if m else path.stem


def method_key(uri: str) -> str | None:
    """The method a content page belongs to ("annotated_examples/dpo_training.md" -> "dpo")."""
    folder, _, name = uri.partition("/")
    key = name.removesuffix(".md").removesuffix("_training")
    return key if folder in KINDS and key in BY_KEY else None


def method_pages(root: Path) -> dict[str, dict[str, str]]:
    """key -> {label: page uri} for every method page that exists, in KINDS order."""
    pages: dict[str, dict[str, str]] = {}
    for folder, paths in section_sources(root).items():
        for path in paths:
            uri = page_uri(path)
            if key := method_key(uri):
                pages.setdefault(key, {})[KINDS[folder]] = uri
    return pages


def methods_nav(root: Path) -> list:
    """The "Methods" section: overview, families of methods, then pages of no method."""
    pages = method_pages(root)
    nav: list = [OVERVIEW]
    for family, rows in groupby(METHODS, key=lambda m: m.family):
        entries = [
            {m.name: [{k: v} for k, v in pages[m.key].items()]} for m in rows if m.key in pages
        ]
        if entries:
            nav.append({family: entries})
    for paths in section_sources(root).values():
        nav += [{page_title(p): page_uri(p)} for p in paths if not method_key(page_uri(p))]
    return nav


def flow_html(family: str) -> str:
    """One training step of a family as boxes and arrows; it wraps on a narrow screen."""
    stages = '<span class="flow-arrow" aria-hidden="true">→</span>'.join(
        f'<span class="flow-stage">{stage}</span>' for stage in FLOWS[family]
    )
    return f'<div class="flow" role="figure" aria-label="{family}: one step">{stages}</div>'


def overview_markdown(root: Path) -> str:
    """The Methods overview: every method's three pages in one table, family by family."""
    pages = method_pages(root)
    lines = [
        "# Methods",
        "",
        "Every method has three pages: a **walkthrough** of the trainer's real code, the **math** "
        "with its equations checked against that code, and an annotated **script** that trains "
        "for real. Methods marked *ours* were removed from TRL; we implement them, equal to trl "
        "1.12. The key names a method's files: `annotated_examples/<key>_training.py`, "
        "`annotated_examples/recipes/<key>.yaml`, `annotated-trl validate --method <key>`.",
    ]
    for family, rows in groupby(METHODS, key=lambda m: m.family):
        header = "| Method | Key | Trainer | " + " | ".join(KINDS.values()) + " |"
        lines += ["", f"## {family}", "", flow_html(family), "", header]
        lines.append("|---|---|---|" + "---|" * len(KINDS))
        for m in rows:
            links = [
                f"[{k}](../{u})" if (u := pages.get(m.key, {}).get(k)) else "—"
                for k in KINDS.values()
            ]
            trainer = f"`{m.trainer}`" + (" (ours)" if m.port else "")
            name = m.name.replace("*", r"\*")  # A*-PO: a literal star, not emphasis
            lines.append(f"| {name} | `{m.key}` | {trainer} | " + " | ".join(links) + " |")
    return "\n".join(lines) + "\n"


def on_config(config):
    root = _root(config)

    def expand(entry):
        if isinstance(entry, dict):
            return {k: expand(v) for k, v in entry.items()}
        if isinstance(entry, list):
            return [expand(e) for e in entry]
        if entry == "methods/":
            return methods_nav(root)
        return entry

    config.nav = expand(config.nav)
    return config


def on_page_markdown(markdown, page, config, files):
    """Put the method bar (Walkthrough · Math · Script) under the page's first heading."""
    key = method_key(page.file.src_uri)
    if key is None:
        return markdown
    here = page.file.src_uri
    label = KINDS[here.partition("/")[0]]
    # The header and the browser tab say which method and which page ("GRPO · Walkthrough"); the
    # navigation keeps the short labels.
    page.meta.setdefault("title", f"{BY_KEY[key].name} · {label}")
    links = []
    for label, uri in method_pages(_root(config))[key].items():
        target = "../" + uri
        links.append(
            f"[{label}]({target}){{ .method-bar-current }}"
            if uri == here
            else f"[{label}]({target})"
        )
    bar = (
        f'<nav class="method-bar" markdown="1" aria-label="{BY_KEY[key].name} pages">'
        f"**{BY_KEY[key].name.replace('*', chr(92) + '*')}** {' '.join(links)}</nav>"
    )
    markdown = markdown.replace("[[family-flow]]", flow_html(BY_KEY[key].family))
    heading = re.search(r"^# .*$", markdown, flags=re.M)
    at = heading.end() if heading else 0
    return markdown[:at] + "\n\n" + bar + "\n\n" + markdown[at:]


def on_serve(server, config, builder):
    # Same as listing the folders under `watch:`, but tolerant of a folder that is absent.
    for folder in SECTIONS:
        if (_root(config) / folder).is_dir():
            server.watch(str(_root(config) / folder))
    return server


def on_files(files, config):
    root = _root(config)
    for folder, paths in section_sources(root).items():
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
    files.append(File.generated(config, OVERVIEW, content=overview_markdown(root)))
    return files
