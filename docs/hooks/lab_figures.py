"""Put the lab's measured runs on the pages.

`[[lab-figure: grpo]]` becomes the method's charts, inlined from the committed SVG files in
docs/lab/figures/ (so they take the theme's colours), with a caption that says what was run.
`[[lab-figures]]` becomes every CPU method's charts under its family's heading, in the method
table's order. `[[lab-comparison]]` becomes the chart of every policy's solve rate and the table
of every run. `[[lab-gpu]]` becomes the table of `annotated-trl lab-gpu`'s results, once
docs/lab/gpu/results.json is committed.
The SVGs are written by `annotated-trl lab-figures` from docs/lab/results.json, never here:
the build only reads files. A method or figure that is missing is a warning (the strict build
fails).
"""

import json
import re
from pathlib import Path
from statistics import mean, stdev

from mkdocs.plugins import get_plugin_logger

from annotated_trl.lab.experiments import BROKEN, BY_METHOD
from annotated_trl.lab.figures import by_experiment, by_method, slug, task_score
from annotated_trl.lab.gpu import markdown_name, summary_table
from annotated_trl.methods import BY_KEY, CPU_METHODS

log = get_plugin_logger("lab_figures")

LAB = Path(__file__).resolve().parent.parent / "lab"
FIGURE_RE = re.compile(r"^\[\[lab-figure:\s*(?P<method>\w+)\s*\]\][ \t]*$", re.M)
ALL_FIGURES_RE = re.compile(r"^\[\[lab-figures\]\][ \t]*$", re.M)
COMPARISON_RE = re.compile(r"^\[\[lab-comparison\]\][ \t]*$", re.M)
BROKEN_RE = re.compile(r"^\[\[lab-broken\]\][ \t]*$", re.M)
PROVENANCE_RE = re.compile(r"^\[\[lab-provenance\]\][ \t]*$", re.M)
GPU_RE = re.compile(r"^\[\[lab-gpu\]\][ \t]*$", re.M)
GPU_RESULTS = LAB / "gpu" / "results.json"  # `annotated-trl lab-gpu`'s, once committed


def _svg(name: str) -> str:
    return (LAB / "figures" / f"{name}.svg").read_text().strip()


def _lab_link(page) -> str:
    depth = page.file.src_uri.count("/")
    return "../" * depth + "lab/index.md"


def method_figure(method: str, results: dict, page) -> str:
    runs = by_method(results)[method]
    experiment = BY_METHOD[method]
    panels = []
    bands = []
    for curve in experiment.curves:
        panels.append(
            f'<div class="lab-panel"><p class="lab-title">{curve.label} '
            f"<code>{curve.key}</code></p>{_svg(f'{method}-{slug(curve.key)}')}</div>"
        )
        if curve.healthy:
            bands.append(f"{curve.label}: {curve.why}")
    band_text = f" Shaded: where a healthy run ends ({'; '.join(bands)})." if bands else ""
    scores = [task_score(run) for run in runs]
    score = (
        f"Task score (greedy, all 300 problems): {_start_and_end(scores)}."
        if scores[0][0] is not None
        else f"Held-out {_start_and_end(scores)}."
        if scores[0][1] is not None
        else "Scored by the curves above (a task of its own)."
    )
    caption = (
        f"{markdown_name(method)} in the [lab]({_lab_link(page)}): "
        f"{len(runs)} seeds of "
        f"{runs[0]['steps']} steps on the toy arithmetic task. Thin lines: each seed; bold: "
        f"their mean, smoothed.{band_text} {score} "
        f"Reproduce: `annotated-trl lab --methods {method}`."
    )
    return (
        f'<figure class="lab-figure" markdown>\n<div class="lab-panels">{"".join(panels)}</div>\n'
        f"<figcaption markdown>{caption}</figcaption>\n</figure>"
    )


def _spread(values: list[float], digits: int = 2) -> str:
    if len(values) < 2:
        return f"{values[0]:.{digits}f}"
    return f"{mean(values):.{digits}f} ± {stdev(values):.{digits}f}"


def _start_and_end(scores: list[tuple[float | None, float]]) -> str:
    starts, ends = [s for s, _ in scores], [e for _, e in scores]
    if starts[0] is None:
        return f"accuracy {_spread(ends)}"
    return f"{mean(starts):.2f} → **{_spread(ends)}**"


def comparison_table(results: dict) -> str:
    """One row per method: where it starts, its scores (mean ± sd over seeds), its cost."""
    rows = [
        "| Method | Starts from | Seen problems, start → end | Unseen problems | Steps | "
        "Seconds per run | Peak RSS, MiB | Passes / tokens per step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for method, runs in by_method(results).items():
        uses = BY_METHOD[method].uses
        start = {"sft": "SFT policy", "sft_tools": "SFT on tool demonstrations"}.get(
            uses.get("--model_name_or_path"), "random"
        )
        if "--teacher_model_name_or_path" in uses:
            start += "; the SFT policy teaches"
        if "--reward_model_path" in uses:
            start += "; the reward model judges"
        seen = "—"  # a task of its own (GRPO with tools): no arithmetic score
        if task_score(runs[0], "seen")[1] is not None:
            seen = _start_and_end([task_score(run, "seen") for run in runs])
        unseen = "—"
        if "unseen_end" in runs[0]["scores"]:
            unseen = _start_and_end([task_score(run, "unseen") for run in runs])
        per_step = runs[0]["per_step"]
        rows.append(
            f"| [{markdown_name(method)}](../annotated_trainers/{method}.md) | {start} | "
            f"{seen} | {unseen} | {runs[0]['steps']} | {_spread([r['wall_s'] for r in runs], 0)} | "
            f"{_spread([r['peak_rss_mib'] for r in runs], 0)} | "
            f"{per_step['passes']:g} / {per_step['tokens']:,.0f} |"
        )
    return "\n".join(rows)


def broken_gallery(results: dict) -> str:
    """Each deliberate mistake: its chart (or the line it stopped with), symptom, cause, fix."""
    runs = by_experiment(results)
    parts = []
    for broken in BROKEN:
        if broken.key not in runs:
            continue
        run = runs[broken.key][0]
        base = BY_KEY[broken.base].name
        changed = " ".join(broken.flags) or "start from the untrained policy"
        if "error" in run:
            stopped = "It stopped at once, before any model or data loaded"
            shown = f"{stopped}:\n\n```text\n{run['error']}\n```"
        else:
            shown = (
                f'<figure class="lab-figure"><div class="lab-panels"><div class="lab-panel">'
                f'<p class="lab-title">{broken.curve.label} <code>{broken.curve.key}</code></p>'
                f"{_svg(broken.key)}</div></div></figure>\n\n"
                f"Dashed: the broken run (seed {run['seed']}); solid: the healthy {base} runs."
            )
        parts.append(
            f"### {base}: {broken.symptom.split(';')[0]} {{ #{broken.key} }}\n\n"
            f"The healthy {base} run with `{changed}`. {shown}\n\n"
            f"| Symptom | Cause | Fix |\n|---|---|---|\n"
            f"| {broken.symptom} | {broken.cause} | {broken.fix} |"
        )
    return "\n\n".join(parts)


def provenance(results: dict) -> str:
    p = results["provenance"]
    versions = ", ".join(f"{name} {version}" for name, version in p["versions"].items())
    return (
        f"Measured {p['date']} on {p['machine']}; Python {p['python']}, {versions}. "
        f"The whole lab, {len(results['runs'])} runs at seeds "
        f"{', '.join(map(str, p['seeds']))} (the broken runs at the first), took "
        f"**{p['wall_s'] / 60:.1f} minutes**: `{p['command']}`."
    ) + "".join(
        f" Updated {u['date']}: {', '.join(u['experiments'])}, in {u['wall_s'] / 60:.1f} minutes "
        f"at a load average of {u['load_at_start']} (`{u['command']}`, then "
        "`annotated-trl lab-merge`)."
        for u in p.get("updates", [])
    )


def gpu_results() -> str:
    """The GPU lab's table, or what stands in its place until a GPU run is committed."""
    if not GPU_RESULTS.is_file():
        return (
            "**No GPU result is on this site yet.** The machines this site is built on have no "
            "GPU, and the GPU machine lent to it now and then reaches nothing outside itself, so "
            "it cannot fetch the recipes' models. The test suite runs everything around the GPU "
            "for real on the CPU: a recipe launched by `accelerate launch` and recorded, the "
            "preflight, the commands and the refusals (`tests/test_lab_gpu.py`)."
        )
    results = json.loads(GPU_RESULTS.read_text())
    p = results["provenance"]
    return (
        f"Measured {p['date']} on {p['machine']}, {p['steps']} steps a run: `{p['command']}`."
        f"\n\n{summary_table(results)}"
    )


_results: dict = {}  # results.json, read once per build


def on_pre_build(config):
    _results.clear()


def on_page_markdown(markdown, page, config, files):
    if "[[lab-" not in markdown:
        return markdown
    if not _results:
        _results.update(json.loads((LAB / "results.json").read_text()))
    results = _results
    present = by_method(results)

    def figure(m):
        method = m["method"]
        if method not in present:
            log.warning(f"{page.file.src_uri}: [[lab-figure: {method}]]: no runs in results.json")
            return f'!!! failure "No lab runs for {method}"'
        try:
            return method_figure(method, results, page)
        except FileNotFoundError as e:
            log.warning(f"{page.file.src_uri}: [[lab-figure: {method}]]: {e}")
            return f'!!! failure "Missing lab figure for {method}"'

    def comparison(_):
        caption = (
            "Share of the task's 300 problems answered right (greedy): hollow, where the run "
            "started; filled, where it ended (mean of the seeds); small dots, each seed's end."
        )
        figure = (
            f'<figure class="lab-figure">{_svg("comparison")}'
            f"<figcaption>{caption}</figcaption></figure>"
        )
        return figure + "\n\n" + comparison_table(results)

    def every_figure(_):
        families: dict[str, list[str]] = {}
        for method in CPU_METHODS:
            families.setdefault(method.family, []).append(f"[[lab-figure: {method.key}]]")
        text = "\n\n".join(f"### {f}\n\n" + "\n\n".join(m) for f, m in families.items())
        return FIGURE_RE.sub(figure, text)

    markdown = ALL_FIGURES_RE.sub(every_figure, markdown)
    markdown = FIGURE_RE.sub(figure, markdown)
    markdown = BROKEN_RE.sub(lambda _: broken_gallery(results), markdown)
    markdown = PROVENANCE_RE.sub(lambda _: provenance(results), markdown)
    markdown = GPU_RE.sub(lambda _: gpu_results(), markdown)
    return COMPARISON_RE.sub(comparison, markdown)
