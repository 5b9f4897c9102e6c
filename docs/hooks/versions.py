"""Read the documented library versions from the installed packages (never hard-coded).

docs/overrides/main.html shows them on every page: "Documents TRL x · transformers y".
"""

from importlib.metadata import version


def on_config(config):
    config.extra["documents"] = {"trl": version("trl"), "transformers": version("transformers")}
    return config
