"""Replace `[[trl-config: trl.GRPOConfig num_generations beta ...]]` with a table of those fields
of the installed config class: the knob, its default and its help text, read from the class's
source at build time (never copied into a page). The tables are made by
`annotated_trl.config_tables` (the drift guard and the tests use it too); a name the class does
not have is a warning here, so the strict build fails.
"""

from mkdocs.plugins import get_plugin_logger

from annotated_trl.config_tables import expand_config_tables

log = get_plugin_logger("config_tables")


def on_page_markdown(markdown, page, config, files):
    return expand_config_tables(markdown, page.file.src_uri, log.warning)
