"""The drift guard: a hash of every TRL (and transformers) source the pages cite.

    python tools/trl_manifest.py            list what drifted; exit 1 if anything did
    python tools/trl_manifest.py --update   rewrite trl_manifest.json (after re-reading the pages)

A page cites library code in three ways: `[[trl-source: trl.x.Y.method ...]]` excerpts
(annotated_trl.source_excerpts), `[[trl-config: trl.XConfig ...]]` knob tables
(annotated_trl.config_tables) and `::: trl.XConfig` API blocks (rendered by mkdocstrings). The
pages explain that code line by line, so when an upgrade changes it, the explanation may be wrong
while the site still builds. `trl_manifest.json` stores, for each citation, a sha256 of exactly
the source the page shows (resolved by the same resolver the site uses) in the pinned TRL;
`tests/test_trl_drift.py` fails when the installed source differs, naming the pages to re-read.
Citations of our own package (`annotated_trl.*`) are not drift: they change with this repo.
"""

import argparse
import hashlib
import json
import re
import sys
from importlib.metadata import version
from pathlib import Path

from annotated_trl.config_tables import CONFIG_RE
from annotated_trl.source_excerpts import SourceError, find_directives, resolve

REPO = Path(__file__).resolve().parent.parent
MANIFEST = REPO / "trl_manifest.json"

# Where pages live: the three content folders and docs/ (the scripts' comments become pages too).
PAGE_GLOBS = ("docs/**/*.md", "annotated_trainers/*.md", "reference_guides/*.md")
SCRIPT_GLOB = "annotated_examples/*.py"
API_BLOCK_RE = re.compile(r"^[ \t]*:::[ \t]+(?P<symbol>[\w.]+)", re.M)
LIBRARIES = ("trl", "transformers")
UPDATE = "python tools/trl_manifest.py --update"


def citations(repo: Path = REPO) -> dict[str, list[str]]:
    """Every cited TRL/transformers symbol (as written) -> the pages citing it, sorted."""
    found: dict[str, set[str]] = {}
    files = [f for pattern in PAGE_GLOBS for f in repo.glob(pattern)] + list(repo.glob(SCRIPT_GLOB))
    for file in sorted(files):
        text = file.read_text(encoding="utf-8")
        cited = find_directives(text) + [m["symbol"] for m in API_BLOCK_RE.finditer(text)]
        cited += [m["cls"] for m in CONFIG_RE.finditer(text)]
        for citation in cited:
            if citation.split(".")[0] in LIBRARIES:
                found.setdefault(citation, set()).add(file.relative_to(repo).as_posix())
    return {citation: sorted(pages) for citation, pages in sorted(found.items())}


def fingerprint(citation: str) -> dict:
    """The sha256 of the source `citation` shows in the installed packages, and where it lives."""
    excerpt = resolve(citation)
    digest = hashlib.sha256(excerpt.code.encode("utf-8")).hexdigest()
    return {"sha256": digest, "source": excerpt.path, "version": excerpt.package_version}


def build(cited: dict[str, list[str]]) -> dict:
    symbols, unresolved = {}, []
    for citation, pages in cited.items():
        try:
            symbols[citation] = {**fingerprint(citation), "pages": pages}
        except (SourceError, ImportError, SyntaxError) as err:
            unresolved.append(f"{citation} ({', '.join(pages)}): {err}")
    if unresolved:
        raise SystemExit(
            "error: these citations do not resolve in the installed packages, so they cannot be "
            "recorded; fix the pages first (the strict docs build names them too):\n  "
            + "\n  ".join(unresolved)
        )
    return {
        "about": "sha256 of each cited library source; see tools/trl_manifest.py",
        "versions": {library: version(library) for library in LIBRARIES},
        "symbols": symbols,
    }


def drift(manifest: dict, cited: dict[str, list[str]]) -> list[str]:
    """One line per problem: a changed or vanished source, a new citation, a stale entry."""
    recorded = manifest["symbols"]
    problems = []
    for citation, pages in cited.items():
        where = ", ".join(pages)
        if citation not in recorded:
            problems.append(
                f"{citation}: cited by {where} but not in trl_manifest.json; check the page "
                f"explains the installed source, then run `{UPDATE}`"
            )
            continue
        was = recorded[citation]
        try:
            now = fingerprint(citation)
        except (SourceError, ImportError, SyntaxError) as err:
            problems.append(
                f"{citation}: no longer resolves in the installed packages ({err}); "
                f"re-read and fix {where}"
            )
            continue
        if now["sha256"] != was["sha256"]:
            problems.append(
                f"{citation}: source changed ({was['source']}, {was['version']} -> "
                f"{now['version']}); re-read {where}, then run `{UPDATE}`"
            )
    for citation in sorted(set(recorded) - set(cited)):
        problems.append(f"{citation}: in trl_manifest.json but cited nowhere; run `{UPDATE}`")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--update", action="store_true", help="rewrite trl_manifest.json")
    args = parser.parse_args(argv)
    cited = citations()
    if args.update:
        manifest = build(cited)
        MANIFEST.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        versions = ", ".join(f"{k} {v}" for k, v in manifest["versions"].items())
        print(f"wrote {MANIFEST.name}: {len(manifest['symbols'])} citations ({versions})")
        return 0
    if not MANIFEST.exists():
        print(f"error: no {MANIFEST.name}; run `{UPDATE}`", file=sys.stderr)
        return 1
    problems = drift(json.loads(MANIFEST.read_text()), cited)
    for problem in problems:
        print(f"drift: {problem}", file=sys.stderr)
    if not problems:
        print(f"OK: {len(cited)} citations match {MANIFEST.name}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
