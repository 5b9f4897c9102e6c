"""The method table and the repository agree, and adding a method is the counted checklist in
docs/contributing.md: every row has each of its files, every per-method file has a row, and the
checklist on the page lists exactly the places checked here.

A method TRL ships touches CHECKLIST's places; a port (a trainer TRL removed) also PORT_CHECKLIST's.
Places marked "a row in" are tables keyed by the method; the others are files named after it.
Everything else that lists methods (STATUS.md, the site's navigation and pages, the dataset
checker's formats, the memory estimator, the generic tests, the benchmarks) derives from the
table and needs no edit.
"""

import re

import pytest
from support.processes import REPO

from annotated_trl.lab.experiments import ALL as LAB
from annotated_trl.methods import METHODS

# (place, does `key` have it)
CHECKLIST = {
    "a row in `src/annotated_trl/methods.py`": lambda key: key in {m.key for m in METHODS},
    "`annotated_trainers/{key}.md`": None,
    "`reference_guides/{key}.md`": None,
    "`annotated_examples/{key}_training.py`": None,
    "`annotated_examples/recipes/{key}_tiny.yaml`": None,
    "`annotated_examples/recipes/{key}.yaml`": None,
    "`tests/test_{key}_smoke.py`": None,
    "`tests/test_{key}_math.py`": None,
    "`tests/test_{key}_learning.py`": None,
    "`tests/test_{key}_badinput.py`": None,
    "`tests/golden/{key}.json`": None,
    "a row in `src/annotated_trl/lab/experiments.py`": lambda key: key in LAB,
}
PORT_CHECKLIST = {
    "`src/annotated_trl/trainers/{key}.py`": None,
    "`tests/parity_scenarios/{key}.py`": None,
    "`tests/test_{key}_parity.py`": None,
    "a row in `tests/test_distributed.py`": lambda key: re.search(
        rf'^    "{key}": \(', (REPO / "tests" / "test_distributed.py").read_text(), re.M
    ),
}
# The places a GPU-only row (its `gpu_only` reason set) cannot have: each runs the script on the
# CPU fixture. Its script refuses on a CPU instead (tests/test_<key>_smoke.py asserts the line).
CPU_ONLY = {
    "`annotated_examples/recipes/{key}_tiny.yaml`",
    "`tests/test_{key}_learning.py`",
    "`tests/golden/{key}.json`",
    "a row in `src/annotated_trl/lab/experiments.py`",
}
# Files in those folders that belong to no single method.
SHARED = {
    "reference_guides/kl.md",
    "reference_guides/notation.md",
    "tests/test_kl_math.py",
    "src/annotated_trl/trainers/__init__.py",
    "src/annotated_trl/trainers/online_pair.py",  # Nash-MD's and XPO's shared loop
    "tests/parity_scenarios/online_pair.py",
    "tests/parity_scenarios/per_process.py",
}


def _has(place: str, check, key: str) -> bool:
    if check is not None:
        return bool(check(key))
    return (REPO / place.strip("`").format(key=key)).exists()


@pytest.mark.parametrize("method", METHODS, ids=lambda m: m.key)
def test_every_row_has_its_places(method):
    places = {**CHECKLIST, **(PORT_CHECKLIST if method.port else {})}
    missing = [place for place, check in places.items() if not _has(place, check, method.key)]
    if method.gpu_only:
        extra = [place for place in CPU_ONLY if _has(place, places[place], method.key)]
        assert not extra, f"{method.key} is GPU-only ({method.gpu_only}) yet has {extra}"
        missing = [place for place in missing if place not in CPU_ONLY]
    assert not missing, f"{method.key}: missing {missing}"


def test_every_per_method_file_has_a_row():
    ports = {m.key for m in METHODS if m.port}
    named = [p.strip("`") for p in [*CHECKLIST, *PORT_CHECKLIST] if "{key}" in p]
    expected = {
        pattern.format(key=m.key)
        for m in METHODS
        for pattern in named
        if m.key in ports or f"`{pattern}`" in CHECKLIST
    }
    present = {
        str(path.relative_to(REPO))
        for pattern in named
        for path in REPO.glob(pattern.replace("{key}", "*"))
    }
    strays = sorted(present - expected - SHARED)
    assert not strays, f"files for methods the table does not have: {strays}"


def test_contributing_checklist_is_the_one_checked_here():
    """The page's numbered list under "Adding a method" names these places, in this order."""
    text = (REPO / "docs" / "contributing.md").read_text()
    section = text.split("## Adding a method", 1)[1].split("\n## ", 1)[0]
    items = re.findall(r"^\s*\d+\. (.+?)(?::|$)", section, re.M)
    assert items == [*CHECKLIST, *PORT_CHECKLIST]
    assert len(CHECKLIST) <= 12 and len(CHECKLIST) + len(PORT_CHECKLIST) <= 16
