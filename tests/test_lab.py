"""The lab: its quick mode runs for real (two methods, the run they build on and their broken
runs), and every figure the site shows is what the committed generator makes of the committed
results."""

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest
from support.processes import OFFLINE_ENV, REPO

from annotated_trl.lab.experiments import ALL, BROKEN, BY_METHOD
from annotated_trl.lab.figures import by_method, series, write_all
from annotated_trl.lab.runner import merge_results
from annotated_trl.methods import CPU_METHODS

LAB = REPO / "docs" / "lab"


def _cli(*args, cwd=REPO):
    command = [sys.executable, "-m", "annotated_trl.cli", *map(str, args)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd, env=OFFLINE_ENV)


@pytest.fixture(scope="module")
def quick_lab(tmp_path_factory):
    out = tmp_path_factory.mktemp("lab")
    result = _cli("lab", "--quick", "--methods", "dpo", "grpo", "--seeds", "0", "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return out, json.loads((out / "results.json").read_text())


@pytest.mark.smoke
def test_quick_lab_runs_the_methods_what_they_build_on_and_their_broken_runs(quick_lab):
    _, results = quick_lab
    grpo_broken = {b.key for b in BROKEN if b.base == "grpo"}
    assert {run["experiment"] for run in results["runs"]} == {"sft", "dpo", "grpo", *grpo_broken}
    assert results["failed"] == []
    runs = {run["experiment"]: run for run in results["runs"]}
    # The batch that does not divide stops the script before anything loads, with one line.
    error = runs["grpo-batch-does-not-divide"]["error"]
    assert error.startswith("error: --num_generations 7: must divide the generation batch of 128")
    for key in ("sft", "dpo", "grpo"):
        run = runs[key]
        assert run["steps"] == 3 and [row["step"] for row in run["log"] if "loss" in row]
        assert set(run["scores"]) == {
            f"{s}_{w}" for s in ("seen", "unseen", "all") for w in ("start", "end")
        }
        assert all(0 <= score <= 1 for score in run["scores"].values())
        assert run["peak_rss_mib"] > 100 and run["cpu_s"] > 0
        assert run["command"].startswith(f"python annotated_examples/{key}_training.py --config")
    # DPO passes each batch (chosen and rejected concatenated) through the policy and the
    # reference: two passes a step; SFT one. GRPO generates: a pass per new token, and more.
    assert runs["dpo"]["per_step"]["passes"] == 2 and runs["sft"]["per_step"]["passes"] == 1
    assert runs["grpo"]["per_step"]["passes"] > 3
    # The SFT run is where DPO and GRPO start: their start score is its end score.
    assert runs["dpo"]["scores"]["all_start"] == runs["sft"]["scores"]["all_end"]
    import trl

    assert results["provenance"]["versions"]["trl"] == trl.__version__
    assert results["provenance"]["quick"] is True


@pytest.mark.smoke
def test_quick_lab_figures_are_svg(quick_lab, tmp_path):
    out, _ = quick_lab
    result = _cli("lab-figures", out / "results.json", "--out", tmp_path)
    assert result.returncode == 0, result.stderr
    expected = {
        f"{m}-{c.key.replace('/', '-')}.svg"
        for m in ("sft", "dpo", "grpo")
        for c in BY_METHOD[m].curves
    }
    expected |= {f"{b.key}.svg" for b in BROKEN if b.base == "grpo" and "divide" not in b.key}
    assert {p.name for p in tmp_path.iterdir()} == expected | {"comparison.svg"}
    for path in tmp_path.iterdir():
        root = ET.fromstring(path.read_text())
        assert root.tag.endswith("svg") and root.findall(".//{*}polyline") + root.findall(
            ".//{*}circle"
        )


def test_lab_merge_replaces_the_experiments_an_update_ran(quick_lab, tmp_path):
    """An update's experiments replace the base's; a run it only built on that computed the same
    numbers keeps the base's record (and timing); every other run stays as it was, and so does
    the base's provenance, with the update's beside it. A --quick update is refused in one line.
    """
    base = json.loads((LAB / "results.json").read_text())

    def retimed(run: dict, changed: bool) -> dict:
        log = [dict(row) for row in run["log"]]
        log[0]["loss" if changed else "train_runtime"] = 123.0
        return {**run, "wall_s": -1.0, "log": log}

    update = {
        "provenance": {**base["provenance"], "command": "annotated-trl lab --methods dpo"},
        "runs": [
            retimed(run, changed=run["experiment"] == "dpo")
            for run in base["runs"]
            if run["experiment"] in ("sft", "dpo")
        ],
        "failed": [],
    }
    merged = merge_results(base, update)
    assert [(r["experiment"], r["seed"]) for r in merged["runs"]] == [
        (r["experiment"], r["seed"]) for r in base["runs"]
    ]
    for old, new in zip(base["runs"], merged["runs"], strict=True):
        assert new == (retimed(old, True) if old["experiment"] == "dpo" else old)
    provenance = {k: v for k, v in merged["provenance"].items() if k != "updates"}
    assert provenance == {k: v for k, v in base["provenance"].items() if k != "updates"}
    assert merged["provenance"]["updates"][-1]["experiments"] == ["dpo"]
    assert merged["provenance"]["updates"][-1]["command"] == "annotated-trl lab --methods dpo"

    out, _ = quick_lab
    into = tmp_path / "results.json"
    into.write_text((LAB / "results.json").read_text())
    refused = _cli("lab-merge", out / "results.json", "--into", into)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: {out / 'results.json'} is a --quick check; run the lab again without it"
    ]
    assert into.read_text() == (LAB / "results.json").read_text()


def test_lab_bad_invocations_are_one_line(tmp_path):
    unknown = _cli("lab", "--methods", "sft", "dpoo")
    assert unknown.returncode == 2 and "invalid choice: 'dpoo'" in unknown.stderr
    missing = _cli("lab-figures", tmp_path / "none.json")
    assert missing.returncode == 2
    assert missing.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'none.json'}: no such file; run `annotated-trl lab` first"
    ]
    (tmp_path / "file").write_text("")
    blocked = _cli("lab", "--out", tmp_path / "file" / "lab")
    assert blocked.returncode == 2 and blocked.stderr.startswith("error: --out ")
    assert "Traceback" not in unknown.stderr + missing.stderr + blocked.stderr


@pytest.mark.docs
def test_committed_results_are_a_full_lab_run():
    results = json.loads((LAB / "results.json").read_text())
    assert results["provenance"]["quick"] is False and results["failed"] == []
    seeds = results["provenance"]["seeds"]
    assert len(seeds) >= 3
    runs = {(run["experiment"], run["seed"]) for run in results["runs"]}
    assert runs >= {(m.key, s) for m in CPU_METHODS for s in seeds}
    assert runs >= {(b.key, seeds[0]) for b in BROKEN}
    assert {key for key, _ in runs} <= set(ALL)


@pytest.mark.docs
def test_committed_figures_are_what_the_generator_makes_of_the_results(tmp_path):
    written = write_all(LAB / "results.json", tmp_path)
    committed = LAB / "figures"
    assert sorted(p.name for p in written) == sorted(p.name for p in committed.iterdir())
    for path in written:
        assert path.read_text() == (committed / path.name).read_text(), path.name


BANDED = [(key, c) for key, e in BY_METHOD.items() for c in e.curves if c.healthy]


@pytest.mark.docs
@pytest.mark.parametrize(("method", "curve"), BANDED, ids=[f"{k}-{c.key}" for k, c in BANDED])
def test_committed_runs_end_in_their_healthy_band(method, curve):
    """What a page's shaded band claims, every committed seed shows: the mean of its last quarter
    of logged points (one batch's number is noisy) lies in the band. The PRM's held-out accuracy
    above the majority share is one of these."""
    results = json.loads((LAB / "results.json").read_text())
    low, high = curve.healthy
    for run in by_method(results)[method]:
        [points] = series([run], curve.key)
        tail = [value for _, value in points[-max(1, len(points) // 4) :]]
        assert tail, f"{method} seed {run['seed']} logged no {curve.key}"
        assert low <= sum(tail) / len(tail) <= high, (method, run["seed"], curve.key, tail)


@pytest.mark.docs
@pytest.mark.parametrize("method", [m.key for m in CPU_METHODS])
def test_every_walkthrough_shows_its_lab_run(method):
    page = (REPO / "annotated_trainers" / f"{method}.md").read_text()
    assert f"[[lab-figure: {method}]]" in page
