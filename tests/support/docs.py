"""Shared by the docs and browser tests: the site built once per session, and what it contains.

The content is discovered from the repository at collection time, so the tests follow whatever
pages exist (a fresh checkout may have no annotated_trainers/ yet).
"""

import importlib
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest

from annotated_trl.content_pages import OVERVIEW, page_uri, section_sources
from support.once import built_once
from support.processes import REPO


def import_object(dotted: str):
    """Import the longest module prefix of `dotted`, then walk the remaining attributes (a
    class's own attribute as written, so a property is found, not called). The site reads
    TRL's source without importing it (annotated_trl.source_lookup); the tests check what it
    reads against the imported objects."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for name in parts[i:]:
            own = vars(obj) if isinstance(obj, type) else {}
            obj = own[name] if name in own else getattr(obj, name)
        return obj
    raise ImportError(f"no importable module in {dotted!r}")


def imported_source(dotted: str) -> tuple[Path, int, int]:
    """(file, first line, last line) of the object `dotted` names, as Python itself finds it."""
    obj = import_object(dotted)
    obj = obj.fget if isinstance(obj, property) else obj
    obj = inspect.unwrap(getattr(obj, "__func__", obj))  # a classmethod, a decorated function
    lines, start = inspect.getsourcelines(obj)
    start = max(start, 1)  # a module counts from 0
    return Path(inspect.getsourcefile(obj)).resolve(), start, start + len(lines) - 1


# docs/ holds pages plus build machinery that is not content.
NOT_PAGES = ("hooks/", "overrides/")


def docs_pages() -> list[Path]:
    """Hand-written pages in docs/."""
    pages = sorted((REPO / "docs").rglob("*.md"))
    return [p for p in pages if not p.relative_to(REPO / "docs").as_posix().startswith(NOT_PAGES)]


def content_files() -> list[Path]:
    """annotated_trainers/*.md, reference_guides/*.md and annotated_examples/*_training.py."""
    return [p for paths in section_sources(REPO).values() for p in paths]


def site_pages() -> list[str]:
    """Every page the site should have, as mkdocs source URIs ("reference_guides/sft.md")."""
    uris = [p.relative_to(REPO / "docs").as_posix() for p in docs_pages()]
    uris.append(OVERVIEW)
    return uris + [page_uri(p) for p in content_files()]


def html_path(uri: str) -> str:
    # The offline plugin turns off directory URLs: "a/b.md" is built as "a/b.html".
    return uri[: -len(".md")] + ".html"


# The tests serve the site under a sub-path, as GitHub Pages serves a project site.
SUB_PATH = "annotated-trl"


@pytest.fixture(scope="session")
def built_site(tmp_path_factory) -> Path:
    """`mkdocs build --strict` into <tmp>/site/annotated-trl/, once per test session (whichever
    worker asks first: support/once.py), built for being served under /annotated-trl/
    (SITE_URL, as .github/workflows/docs.yml sets it)."""

    def build(folder: Path) -> str | None:
        result = subprocess.run(
            [sys.executable, "-m", "mkdocs", "build", "--strict"]
            + ["--site-dir", str(folder / SUB_PATH)],
            cwd=REPO,
            env={
                **os.environ,
                "NO_MKDOCS_2_WARNING": "1",
                "SITE_URL": f"http://127.0.0.1/{SUB_PATH}/",
            },
            capture_output=True,
            text=True,
            timeout=600,
        )
        if result.returncode != 0:
            return f"mkdocs build --strict failed:\n{result.stdout}{result.stderr}"
        return None

    return built_once(tmp_path_factory, "site", build) / SUB_PATH
