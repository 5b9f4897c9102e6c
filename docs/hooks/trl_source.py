"""Replace `[[trl-source: ...]]` lines with the real source code of the installed TRL.

The directive, its walks and their rules are in `annotated_trl.source_excerpts` (the drift guard
and the tests use them too). This hook applies them to every page; a directive that does not
resolve is a warning, so `mkdocs build --strict` fails and names the page and the directive,
while `mkdocs serve` shows the problem in place.
"""

from mkdocs.plugins import get_plugin_logger

from annotated_trl.source_excerpts import expand_directives

log = get_plugin_logger("trl_source")


def on_page_markdown(markdown, page, config, files):
    return expand_directives(markdown, page.file.src_uri, log.warning)
