"""The drift guard: every TRL/transformers source a page cites still hashes as recorded.

When this fails after a TRL upgrade, the message names the citations and the pages that explain
them. Re-read those pages against the new source, fix what is no longer true, then record the
new hashes with `python tools/trl_manifest.py --update` (the upgrade procedure is in
CONTRIBUTING.md).
"""

import json

import pytest

from tools import trl_manifest

pytestmark = pytest.mark.docs


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(trl_manifest.MANIFEST.read_text())


def test_trl_drift_every_cited_source_is_unchanged(manifest):
    problems = trl_manifest.drift(manifest, trl_manifest.citations())
    assert not problems, "TRL drift, re-read these pages:\n" + "\n".join(problems)


def test_trl_drift_names_the_pages_to_reread(manifest):
    """A changed hash, a new citation and a stale entry each give one line naming the pages."""
    config, excerpt = "trl.KTOConfig", next(c for c in manifest["symbols"] if " > " in c)
    cited = {config: ["annotated_trainers/kto.md"], excerpt: ["annotated_trainers/x.md"]}
    cited["trl.DPOTrainer.__init__"] = ["annotated_trainers/new.md"]
    tampered = {"symbols": {config: dict(manifest["symbols"][config], sha256="0" * 64)}}
    tampered["symbols"][excerpt] = manifest["symbols"][excerpt]
    tampered["symbols"]["trl.gone.Thing"] = {"sha256": "1" * 64}
    problems = trl_manifest.drift(tampered, cited)
    assert len(problems) == 3, problems
    changed, new, stale = problems
    assert changed.startswith("trl.KTOConfig: source changed (trl/trainer/kto_config.py")
    assert "re-read annotated_trainers/kto.md" in changed
    assert new.startswith("trl.DPOTrainer.__init__: cited by annotated_trainers/new.md but not")
    assert stale.startswith("trl.gone.Thing: in trl_manifest.json but cited nowhere")
    assert all(trl_manifest.UPDATE in line for line in problems)


def test_trl_drift_a_vanished_symbol_names_its_page(manifest):
    cited = {"trl.DPOTrainer.no_such_method": ["annotated_trainers/dpo.md"]}
    recorded = {"symbols": {"trl.DPOTrainer.no_such_method": {"sha256": "0" * 64}}}
    (problem,) = trl_manifest.drift(recorded, cited)
    assert "no longer resolves" in problem and "fix annotated_trainers/dpo.md" in problem


def test_trl_drift_only_library_citations_count(tmp_path):
    """Our own package changes with this repo: citing it is not drift."""
    (tmp_path / "annotated_trainers").mkdir()
    (tmp_path / "annotated_trainers" / "x.md").write_text(
        "[[trl-source: annotated_trl.data.scan_rows]]\n"
        "    [[trl-source: trl.trainer.dpo_trainer.DPOTrainer.compute_loss]]\n"
        "::: annotated_trl.output.check_output_dir\n"
        "::: transformers.TrainingArguments\n",
        encoding="utf-8",
    )
    assert trl_manifest.citations(tmp_path) == {
        "transformers.TrainingArguments": ["annotated_trainers/x.md"],
        "trl.trainer.dpo_trainer.DPOTrainer.compute_loss": ["annotated_trainers/x.md"],
    }
