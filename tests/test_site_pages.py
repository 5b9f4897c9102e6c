"""The cross-cutting pages say only what the code says: chooser, formats, comparison, memory,
distributed training, troubleshooting, and the CI workflows.

The list of methods is read from STATUS.md's table (its rows), never written out here.
"""

import ast
import dataclasses
import importlib
import json
import re
from pathlib import Path

import pytest
import yaml
from support.processes import REPO

from annotated_trl import memory
from annotated_trl.cli import main as cli_main
from annotated_trl.data import FORMATS, METHOD_FORMATS, DatasetError, check_rows, detect_format
from annotated_trl.methods import METHODS as TABLE
from tools import generated_blocks, status

pytestmark = pytest.mark.docs

DOCS = REPO / "docs"


def status_methods() -> dict[str, str]:
    """{key: name} for every method row of STATUS.md's table."""
    names = []
    for line in (REPO / "STATUS.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] not in ("Method", "") and not set(cells[0]) <= {"-"}:
            names.append(cells[0])
    by_name = {name: key for key, (name, _) in status.METHODS.items()}
    unknown = [n for n in names if n not in by_name]
    assert not unknown, f"STATUS.md rows with no key in tools/status.py: {unknown}"
    return {by_name[n]: n for n in names}


METHODS = status_methods()


def test_status_lists_every_method_of_the_table():
    assert list(METHODS) == [m.key for m in TABLE]


def page(name: str) -> str:
    return (DOCS / name).read_text(encoding="utf-8")


def json_blocks(markdown: str) -> list[dict]:
    return [json.loads(b) for b in re.findall(r"^```json\n(.*?)\n```", markdown, re.M | re.S)]


# --- Which trainer? -----------------------------------------------------------------------------

CHOOSER = page("which-trainer.md")


def chooser_sections() -> dict[str, str]:
    """Data-answer sections ("## Title { #anchor }") by anchor."""
    parts = re.split(r"^## .*\{ #([\w-]+) \}$", CHOOSER, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_chooser_every_answer_links_to_its_section():
    question = CHOOSER.split("## 2.")[0]
    linked = set(re.findall(r"\]\(#([\w-]+)\)", question))
    assert linked == set(chooser_sections())
    assert len(linked) == 7  # demonstrations ... step labels, as the issue lists them


@pytest.mark.parametrize("key", list(METHODS))
def test_chooser_reaches_method_and_its_check_command(key):
    script = f"annotated_examples/{key}_training.py"
    owners = [
        anchor
        for anchor, text in chooser_sections().items()
        if f"](annotated_trainers/{key}.md)" in text
        and f"annotated-trl validate --method {key} " in text
        and f"](annotated_examples/{key}_training.py)" in text
        and f"python {script} --config annotated_examples/recipes/{key}.yaml" in text
    ]
    assert owners, f"{key}: no data section links its walkthrough and its validate command"
    assert f"](reference_guides/{key}.md)" in CHOOSER
    assert (REPO / "annotated_examples" / "recipes" / f"{key}.yaml").exists()


@pytest.mark.parametrize("key", list(METHODS))
def test_chooser_command_accepts_the_methods_own_data(key, tiny, capsys):
    """`annotated-trl validate --method <key> <data>` exits 0 on data of a format it accepts."""
    fmt = METHOD_FORMATS[key][0]
    assert cli_main(["validate", "--method", key, str(tiny.data / fmt)]) == 0
    assert capsys.readouterr().out.startswith("OK:")


# --- Dataset formats ----------------------------------------------------------------------------

FORMATS_PAGE = page("dataset-formats.md")


def format_sections() -> dict[str, str]:
    parts = re.split(r"^## .*\{#(\w+)\}$", FORMATS_PAGE, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_formats_page_has_every_format():
    assert set(format_sections()) == set(FORMATS)


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_formats_accepted_by_matches_the_checker(fmt):
    line = re.search(r"\*\*Accepted by:\*\*(.*?)\n\n", format_sections()[fmt], re.S).group(1)
    listed = set(re.findall(r"annotated_trainers/(\w+)\.md", line))
    assert listed == {m for m, formats in METHOD_FORMATS.items() if fmt in formats}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_formats_example_rows_are_real_and_pass_the_checker(fmt, tiny):
    rows = json_blocks(format_sections()[fmt])
    assert rows, f"{fmt}: no example row"
    fixture_first_rows = []
    for variant in (fmt, f"conversational_{fmt}"):
        path = tiny.data / variant / "train.jsonl"
        if path.exists():
            fixture_first_rows.append(json.loads(path.read_text().splitlines()[0]))
    for row in rows:
        assert row in fixture_first_rows, f"{fmt}: example is not the toy data's first row: {row}"
        assert detect_format(row) == fmt
        for method, formats in METHOD_FORMATS.items():
            if fmt in formats:
                assert check_rows([("example", row)], "page", method) == fmt
            else:
                with pytest.raises(DatasetError):
                    check_rows([("example", row)], "page", method)


# --- Compare methods ----------------------------------------------------------------------------


def compare_rows() -> dict[str, list[str]]:
    rows = {}
    for line in page("compare.md").splitlines():
        m = re.match(r"\| \[([^\]]+)\]\(annotated_trainers/(\w+)\.md\) \|", line)
        if m:
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            assert m.group(2) not in rows, f"{m.group(2)} twice"
            rows[m.group(2)] = [m.group(1), *cells[1:]]
    return rows


def test_compare_table_covers_exactly_the_status_methods():
    rows = compare_rows()
    assert set(rows) == set(METHODS)  # (compare_rows refuses a method listed twice)
    assert {k: r[0] for k, r in rows.items()} == METHODS


def holds(key: str) -> str:
    m = memory.METHOD_MODELS[key]
    parts = [("reference", m.reference), ("reward model", m.reward)]
    parts += [("value model (trained)", m.value), ("teacher", m.teacher)]
    return ", ".join(name for name, held in parts if held) or "—"


@pytest.mark.parametrize("key", list(METHODS))
def test_compare_row_matches_the_code(key):
    _, data, held, generates, compute, _ = compare_rows()[key]
    assert set(re.findall(r"dataset-formats\.md#(\w+)", data)) == set(METHOD_FORMATS[key])
    assert held == holds(key)
    assert generates == ("yes" if memory.METHOD_MODELS[key].generates else "no")
    assert compute == f"{memory.relative_compute(key):.1f}×"


def config_class(key: str):
    """The method's config class: in trl, trl.experimental.<key>, or our port."""
    name = status.METHODS[key][1].replace("Trainer", "Config")
    for module in ("trl", f"trl.experimental.{key}", f"annotated_trl.trainers.{key}"):
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    raise AssertionError(f"no {name} for {key}")


def field_default(cls, name: str):
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert name in fields, f"{cls.__name__} has no field {name!r}"
    f = fields[name]
    return f.default_factory() if f.default is dataclasses.MISSING else f.default


@pytest.mark.parametrize("key", list(METHODS))
def test_compare_hyper_parameters_are_the_config_defaults(key):
    params = re.findall(r"`(\w+)=([^`]+)`", compare_rows()[key][-1])
    assert len(params) >= 2
    cls = config_class(key)
    for name, value in params:
        assert field_default(cls, name) == ast.literal_eval(value), f"{cls.__name__}.{name}"


# --- Memory -------------------------------------------------------------------------------------


@pytest.mark.parametrize("function", ["models_table", "markdown_table", "fits_table"])
def test_memory_page_tables_are_the_functions_output(function):
    text = page("memory.md")
    start = rf"<!-- generated: annotated_trl\.memory\.{function}\(\) -->"
    block = re.search(start + r"\n(.*?)\n<!-- end generated -->", text, re.S)
    assert block, f"no generated block for {function}"
    assert block.group(1) == getattr(memory, function)()


@pytest.mark.parametrize(
    "name",
    [p.name for p in sorted((REPO / "docs").glob("*.md")) if "<!-- generated:" in p.read_text()],
)
def test_every_generated_block_is_its_functions_output(name):
    text = page(name)
    assert generated_blocks.regenerate(text) == text, "run `python -m tools.generated_blocks`"


def test_generated_blocks_tool_rewrites_a_stale_block_and_keeps_the_rest():
    """tools/generated_blocks.py: what the tests above compare is what the tool writes."""
    text = page("memory.md")
    stale = text.replace("| Qwen2.5-7B |", "| Qwen2.5-7B (stale) |", 1)
    assert stale != text
    assert generated_blocks.regenerate(stale) == generated_blocks.regenerate(text) == text


def test_memory_page_prose_numbers_are_the_functions_output():
    text = page("memory.md")
    seven_b, small = memory.REFERENCE_MODELS["Qwen2.5-7B"], memory.REFERENCE_MODELS["Qwen2.5-1.5B"]
    kto_lora = memory.estimate(seven_b, "kto", lora_rank=16).gib()
    kto_full = memory.estimate(small, "kto").gib()
    assert f"LoRA\non a 7B model is estimated at {kto_lora:.1f} GiB" in text
    assert f"a 1.5B model at {kto_full:.1f} GiB" in text
    big = memory.REFERENCE_MODELS["Llama-3.1-70B"]
    frozen_base = memory.estimate(
        big, "sft", lora_rank=16, precision="bfloat16"
    ).weights - 4 * big.lora_params(16, ("q_proj", "v_proj"))
    assert frozen_base == 2 * big.params
    assert f"about {frozen_base / memory.GIB:.0f} GiB of weights" in text
    assert "::: annotated_trl.memory.estimate" in text


# --- Distributed training -----------------------------------------------------------------------


def test_distributed_page_describes_every_shipped_config():
    text = page("distributed.md")
    shipped = {p.name for p in (REPO / "accelerate_configs").glob("*.yaml")}
    described = set(re.findall(r"^\| `([\w]+\.yaml)` \|", text, re.M))
    assert described == shipped


def test_distributed_launch_line_names_real_files_for_every_method():
    text = page("distributed.md")
    (config, script, recipe) = re.findall(
        r"--config_file (accelerate_configs/\S+) \\\n\s+"
        r"(annotated_examples/\S+\.py) --config (\S+)",
        text,
    )[0]
    assert "${METHOD}" in script and "${METHOD}" in recipe
    for key in METHODS:
        for path in (config, script, recipe):
            assert (REPO / path.replace("${METHOD}", key)).exists(), (key, path)


def test_distributed_page_config_names_exist():
    from trl import GRPOConfig, RLOOConfig

    assert field_default(GRPOConfig, "ds3_gather_for_generation") is True
    assert field_default(RLOOConfig, "ds3_gather_for_generation") is True
    assert field_default(GRPOConfig, "vllm_mode") == "colocate"
    assert field_default(GRPOConfig, "vllm_gpu_memory_utilization") == 0.3
    for name in ("vllm_server_base_url", "vllm_server_host", "vllm_server_port", "use_vllm"):
        field_default(GRPOConfig, name)


# --- Troubleshooting ----------------------------------------------------------------------------

TROUBLESHOOTING_FIELDS = {
    "dpo": ["precompute_ref_log_probs", "beta", "loss_type"],
    "kto": ["precompute_ref_log_probs"],
    "grpo": ["mask_truncated_completions", "log_completions", "num_iterations", "beta"],
    "rloo": ["log_completions", "beta"],
    "cpo": ["cpo_alpha"],
    "online_dpo": ["missing_eos_penalty", "max_new_tokens"],
    "nash_md": ["missing_eos_penalty"],
    "xpo": ["missing_eos_penalty"],
    "ppo": ["missing_eos_penalty", "kl_coef", "num_ppo_epochs"],
}


@pytest.mark.parametrize("key", list(TROUBLESHOOTING_FIELDS))
def test_troubleshooting_config_names_exist(key):
    text = page("troubleshooting.md")
    for name in TROUBLESHOOTING_FIELDS[key]:
        assert f"`{name}" in text
        field_default(config_class(key), name)
    assert field_default(config_class("dpo"), "learning_rate") == 1e-6  # "defaults to 1e-6"


def test_troubleshooting_sections_link_methods():
    sections = re.split(r"^## ", page("troubleshooting.md"), flags=re.M)[1:]
    assert len(sections) == 6  # five symptoms, then what the doctor checks
    for section in sections:
        assert re.search(r"annotated_trainers/\w+\.md", section), section.splitlines()[0]


# --- GitHub Actions -----------------------------------------------------------------------------


def readme_test_command() -> str:
    readme = (REPO / "README.md").read_text()
    m = re.search(r"^(make test)\b", readme, re.M)
    assert m, "README.md no longer shows `make test`"
    return m.group(1)


def workflow(name: str) -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / name).read_text())


def run_lines(flow: dict) -> list[str]:
    return [
        line.strip()
        for job in flow["jobs"].values()
        for step in job["steps"]
        for line in step.get("run", "").splitlines()
    ]


def test_test_workflow_runs_the_readme_command():
    flow = workflow("test.yml")
    assert readme_test_command() in run_lines(flow)
    assert "push" in flow[True] and "pull_request" in flow[True]  # YAML reads `on:` as True


def test_docs_workflow_builds_strictly_and_deploys_to_pages():
    flow = workflow("docs.yml")
    uses = [s.get("uses", "") for job in flow["jobs"].values() for s in job["steps"]]
    assert any(u.startswith("actions/upload-pages-artifact@") for u in uses)
    assert any(u.startswith("actions/deploy-pages@") for u in uses)
    assert any("mkdocs build --strict" in line for line in run_lines(flow))
    assert flow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}


# --- Logged metrics -----------------------------------------------------------------------------


def trainer_sources() -> str:
    """The source of every trainer whose metrics the glossary names: TRL's, transformers', ours."""
    import transformers
    import trl

    trl_root = Path(trl.__file__).parent
    files = [*(trl_root / "trainer").glob("*.py"), *(trl_root / "experimental").rglob("*.py")]
    files += (REPO / "src" / "annotated_trl" / "trainers").glob("*.py")
    files.append(Path(transformers.__file__).parent / "trainer.py")
    return "\n".join(f.read_text(encoding="utf-8") for f in files)


def test_metrics_glossary_names_real_metrics():
    """Every metric in the glossary's first columns is a string some trainer logs."""
    source = trainer_sources()
    names = set()
    for line in page("metrics.md").splitlines():
        if line.startswith("| `"):
            first_cell = line.split("|")[1]
            names |= set(re.findall(r"`([\w/]+)`", first_cell))
    assert len(names) > 40
    # As a string literal, or after an f-string prefix: f"{prefix}nll_loss".
    missing = sorted(n for n in names if not re.search(rf"[\"'}}]{re.escape(n)}[\"']", source))
    assert not missing, f"not found in any trainer's source: {missing}"
