"""Put KaTeX and the iframe-worker shim (from node_modules/, installed by `npm ci`) into the site.

Nothing from npm is committed: the files are added to the build as static files that live in
node_modules/, so `mkdocs build` copies them and `mkdocs serve` serves them. The site therefore
loads no script, stylesheet or font from a third-party host.
"""

from pathlib import Path

from mkdocs.exceptions import PluginError
from mkdocs.structure.files import File

# site path -> path under node_modules/ (a folder is copied whole)
ASSETS = {
    "assets/katex/katex.min.js": "katex/dist/katex.min.js",
    "assets/katex/katex.min.css": "katex/dist/katex.min.css",
    "assets/katex/contrib/auto-render.min.js": "katex/dist/contrib/auto-render.min.js",
    "assets/katex/fonts": "katex/dist/fonts",
    "assets/javascripts/iframe-worker-shim.js": "iframe-worker/shim/index.js",
}


def _node_modules(config) -> Path:
    return Path(config.config_file_path).parent / "node_modules"


def on_config(config):
    # Fail early (before any page is rendered) with the fix in the message.
    missing = [src for src in ASSETS.values() if not (_node_modules(config) / src).exists()]
    if missing:
        raise PluginError(
            f"node_modules/{missing[0]} is missing: run `npm ci` in the repository root "
            "(it installs the KaTeX version pinned in package-lock.json)."
        )


def on_files(files, config):
    for dest, src in ASSETS.items():
        src = _node_modules(config) / src
        # A folder (KaTeX's fonts) becomes one site file per file inside it.
        paths = [src] if src.is_file() else sorted(p for p in src.rglob("*") if p.is_file())
        for path in paths:
            site_path = dest if path == src else f"{dest}/{path.relative_to(src).as_posix()}"
            files.append(File.generated(config, site_path, abs_src_path=str(path)))
    return files
