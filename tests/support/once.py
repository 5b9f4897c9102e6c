"""Build something once per test session, whichever pytest-xdist worker asks first.

Each worker is its own process with its own session fixtures; a session fixture that builds a
folder (the site, the SFT warm start) would be built once per worker. `built_once` builds it in
the folder the workers share, under a file lock: the first worker builds, the others wait for it
and read the result. A failed build is remembered, so the others fail with its message instead of
building again.
"""

import os
import traceback
from collections.abc import Callable
from pathlib import Path

import pytest
from filelock import FileLock


def shared_temp(tmp_path_factory) -> Path:
    """The session's temporary folder, the same for every worker."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if "PYTEST_XDIST_WORKER" in os.environ else base


def built_once(tmp_path_factory, name: str, build: Callable[[Path], str | None]) -> Path:
    """`shared_temp/name`, made by `build(folder)` on first use. `build` returns an error message
    (or raises) when it fails."""
    shared = shared_temp(tmp_path_factory)
    out, failed = shared / name, shared / f"{name}-failed.txt"
    with FileLock(str(shared / f"{name}.lock")):
        if not out.exists() and not failed.exists():
            try:
                error = build(out)
            except Exception:
                error = traceback.format_exc()
            if error:
                failed.write_text(error[-6000:])
    if failed.exists():
        pytest.fail(f"building {name} failed:\n{failed.read_text()}")
    return out
