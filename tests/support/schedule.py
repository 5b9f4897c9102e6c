"""The order in which the two pytest-xdist workers take test files: longest first.

With `--dist loadfile` each worker takes the next whole file when it finishes one, in collection
order. xdist's default order (most tests first) put the one-test learning files, the slowest per
test, last, so the run ended with one worker training alone. Taking the longest first (the classic
longest-processing-time rule) leaves only short files for the end. The seconds per file come from
the last whole-suite measurement (`benchmarks/suite.py`, stored in benchmarks/results/suite.json);
a file measured never before goes first, since nothing says it is short.
"""

import json
from pathlib import Path

MEASURED = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "suite.json"


def seconds_per_file() -> dict[str, float]:
    """test file (relative to the repository) -> seconds its tests took in the last full run."""
    if not MEASURED.exists():
        return {}
    whole_suite = json.loads(MEASURED.read_text())["selections"].get("all", {})
    return whole_suite.get("seconds_per_file", {})


def longest_files_first(items: list, rootpath: Path) -> None:
    """Reorder `items` in place so that files come longest first; a file's tests keep their
    order (module fixtures are set up once)."""
    seconds = seconds_per_file()

    def file_of(item) -> str:
        return Path(item.path).relative_to(rootpath).as_posix()

    position = {}
    for index, item in enumerate(items):
        position.setdefault(file_of(item), index)
    items.sort(
        key=lambda item: (-seconds.get(file_of(item), float("inf")), position[file_of(item)])
    )
