"""Which files are the site's content pages, and the page each one becomes.

The three top-level content folders are sections of the site (docs/hooks/content_sections.py
puts them there); the tests check the built site against the same list.
"""

from pathlib import Path

# folder -> glob of its page sources
SECTIONS = {
    "annotated_trainers": "*.md",
    "reference_guides": "*.md",
    "annotated_examples": "*_training.py",
}
OVERVIEW = "methods/index.md"  # the generated index of the "Methods" section


def section_sources(root: Path) -> dict[str, list[Path]]:
    """Every content file under the repository `root`, by section folder."""
    return {
        folder: sorted(p for p in (root / folder).glob(pattern) if p.name != "index.md")
        for folder, pattern in SECTIONS.items()
    }


def page_uri(path: Path) -> str:
    """Site source path of a content file: the script page is a .md beside the script."""
    name = path.stem + ".md" if path.suffix == ".py" else path.name
    return f"{path.parent.name}/{name}"
