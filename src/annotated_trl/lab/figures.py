"""The lab's figures: small SVG charts written from `results.json`, one file per panel.

Plain SVG, no plotting library: lines, ticks and text drawn in `currentColor`, so an inlined
chart takes the page's colours in the light and the dark theme; the accent colours come from
classes the site's stylesheet sets (`lab-mean`, `lab-band`, ...). Same results, same bytes: a
test regenerates a method's figures and compares them with the committed files.
"""

import json
import math
from pathlib import Path

from annotated_trl.lab.experiments import BROKEN, BY_METHOD, ORDER, Broken, Curve
from annotated_trl.methods import BY_KEY

WIDTH, HEIGHT = 320, 180
LEFT, RIGHT, TOP, BOTTOM = 44, 10, 8, 22  # plot margins: room for tick labels


def _nice_ticks(low: float, high: float, count: int = 4) -> list[float]:
    """Round tick values covering [low, high]: steps of 1, 2 or 5 times a power of ten."""
    if high <= low:
        high = low + 1
    raw = (high - low) / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.floor(low / step) * step
    return [first + i * step for i in range(int(math.ceil((high - first) / step)) + 1)]


def _label(value: float) -> str:
    if abs(value) < 1e-9:
        return "0"
    # Whole numbers as they are (step 1000, not "1e+03"); the rest to 3 significant digits.
    return f"{value:.0f}" if value == round(value) and abs(value) < 1e6 else f"{value:.3g}"


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _moving_average(values: list[float], window: int) -> list[float]:
    """Centred moving average; the window shrinks at the ends."""
    half = window // 2
    return [
        sum(values[max(0, i - half) : i + half + 1]) / len(values[max(0, i - half) : i + half + 1])
        for i in range(len(values))
    ]


def series(runs: list[dict], key: str) -> list[list[tuple[float, float]]]:
    """(step, value) of `key` in each run's log."""
    return [[(row["step"], row[key]) for row in run["log"] if key in row] for run in runs]


def panel(curve: Curve, runs: list[dict], broken: list[dict] = ()) -> str:
    """One chart: each seed thin, their mean bold (smoothed), the healthy band shaded; a broken
    run, when given, on top in its own colour."""
    lines = [line for line in series(runs, curve.key) if line]
    broken_lines = [line for line in series(broken, curve.key) if line]
    steps = [x for line in lines + broken_lines for x, _ in line]
    values = [y for line in lines + broken_lines for _, y in line]
    band = curve.healthy
    y_low, y_high = min(values), max(values)
    ticks = _nice_ticks(y_low, y_high)
    y_low, y_high = ticks[0], ticks[-1]
    x_high = max(steps)

    def x(step):
        return LEFT + (WIDTH - LEFT - RIGHT) * step / x_high

    def y(value):
        return TOP + (HEIGHT - TOP - BOTTOM) * (y_high - value) / (y_high - y_low)

    def path(points):
        return " ".join(f"{x(s):.1f},{y(v):.1f}" for s, v in points)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'class="lab-chart" role="img"><title>{curve.label}</title>'
    ]
    if band:
        top, bottom = y(min(band[1], y_high)), y(max(band[0], y_low))
        if bottom > top:
            parts.append(
                f'<rect class="lab-band" x="{LEFT}" y="{top:.1f}" width="{WIDTH - LEFT - RIGHT}" '
                f'height="{bottom - top:.1f}" fill="currentColor" opacity="0.12"/>'
            )
    for tick in ticks:
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
            f'stroke="currentColor" opacity="0.15"/>'
            f'<text x="{LEFT - 4}" y="{y(tick) + 3:.1f}" text-anchor="end" font-size="10" '
            f'fill="currentColor">{_label(tick)}</text>'
        )
    for tick in _nice_ticks(0, x_high):
        if tick <= x_high:
            parts.append(
                f'<text x="{x(tick):.1f}" y="{HEIGHT - 6}" text-anchor="middle" font-size="10" '
                f'fill="currentColor">{_label(tick)}</text>'
            )
    for line in lines:
        parts.append(
            f'<polyline class="lab-seed" points="{path(line)}" fill="none" '
            f'stroke="currentColor" stroke-width="1" opacity="0.35"/>'
        )
    if len({len(line) for line in lines}) == 1:  # the seeds logged the same steps: average them
        mean = [
            sum(vs) / len(vs) for vs in zip(*[[v for _, v in line] for line in lines], strict=True)
        ]
        smooth = _moving_average(mean, max(1, len(mean) // 15))
        points = list(zip([s for s, _ in lines[0]], smooth, strict=True))
        parts.append(
            f'<polyline class="lab-mean" points="{path(points)}" fill="none" '
            f'stroke="currentColor" stroke-width="2"/>'
        )
    for line in broken_lines:
        parts.append(
            f'<polyline class="lab-broken" points="{path(line)}" fill="none" '
            f'stroke="currentColor" stroke-width="1.5" stroke-dasharray="4 2"/>'
        )
    parts.append("</svg>\n")
    return "".join(parts)


def by_experiment(results: dict) -> dict[str, list[dict]]:
    """Every experiment's runs (its seeds), healthy and broken."""
    runs: dict[str, list[dict]] = {}
    for run in results["runs"]:
        runs.setdefault(run["experiment"], []).append(run)
    return runs


def by_method(results: dict) -> dict[str, list[dict]]:
    """The healthy experiments' runs, in the site's order."""
    runs = by_experiment(results)
    return {m: runs[m] for m in ORDER if m in runs}


def task_score(run: dict, problems: str = "all") -> tuple[float | None, float]:
    """(start, end) of the run's score: a policy's greedy solve rate on the task's `problems`
    ("all" 300, the 172 "seen" in training, the 128 "unseen"); for a reward model or PRM, its
    trainer's held-out accuracy at the end (no start: an untrained head's accuracy is a coin's)."""
    if f"{problems}_end" in run["scores"]:
        return run["scores"][f"{problems}_start"], run["scores"][f"{problems}_end"]
    accuracies = [row["eval_accuracy"] for row in run["log"] if "eval_accuracy" in row]
    return None, accuracies[-1] if accuracies else None  # None: a task of its own (tools)


def comparison(results: dict) -> str:
    """Every policy's solve rate on the whole task: where it started (hollow) and ended
    (filled), the mean over seeds, each seed's end as a small dot. One row per method."""
    rows = {
        m: [task_score(r) for r in runs]
        for m, runs in by_method(results).items()
        if BY_METHOD[m].model_kind == "policy"
    }
    label_width, row_height, width = 92, 22, 360
    height = TOP + row_height * len(rows) + BOTTOM
    ticks = _nice_ticks(0, max(end for pairs in rows.values() for _, end in pairs))

    def x(value):
        return label_width + (width - label_width - RIGHT) * value / ticks[-1]

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'class="lab-chart" role="img"><title>Solve rate on the whole task, start and end</title>'
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{TOP}" y2="{height - BOTTOM}" '
            f'stroke="currentColor" opacity="0.15"/>'
            f'<text x="{x(tick):.1f}" y="{height - 6}" text-anchor="middle" font-size="10" '
            f'fill="currentColor">{_label(tick)}</text>'
        )
    for i, (method, pairs) in enumerate(rows.items()):
        y = TOP + row_height * (i + 0.5)
        start, end = _mean([s for s, _ in pairs]), _mean([e for _, e in pairs])
        name = BY_KEY[method].name
        parts.append(
            f'<text x="{label_width - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11" '
            f'fill="currentColor">{name}</text>'
            f'<line x1="{x(start):.1f}" x2="{x(end):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="currentColor" stroke-width="2" opacity="0.5"/>'
        )
        for _, seed_end in pairs:
            parts.append(
                f'<circle class="lab-seed" cx="{x(seed_end):.1f}" cy="{y:.1f}" r="2" '
                f'fill="currentColor" opacity="0.4"/>'
            )
        parts.append(
            f'<circle cx="{x(start):.1f}" cy="{y:.1f}" r="4.5" fill="none" '
            f'stroke="currentColor" stroke-width="1.5"/>'
            f'<circle class="lab-mean" cx="{x(end):.1f}" cy="{y:.1f}" r="4.5" '
            f'fill="currentColor"/>'
        )
    parts.append("</svg>\n")
    return "".join(parts)


def slug(key: str) -> str:
    """A file name for a metric key: `rewards/margins` -> `rewards-margins`."""
    return key.replace("/", "-")


def write_method_figures(results: dict, method: str, out: Path) -> list[Path]:
    """`out/<method>-<metric>.svg` for each curve of the method's experiment."""
    runs = by_experiment(results)[method]
    written = []
    for curve in BY_METHOD[method].curves:
        path = out / f"{method}-{slug(curve.key)}.svg"
        path.write_text(panel(curve, runs))
        written.append(path)
    return written


def write_broken_figure(results: dict, broken: Broken, out: Path) -> Path | None:
    """`out/<broken key>.svg`: the symptom's metric, healthy seeds against the broken run; None
    when the broken run stopped before logging anything."""
    runs = by_experiment(results)
    if "error" in runs[broken.key][0]:
        return None
    path = out / f"{broken.key}.svg"
    path.write_text(panel(broken.curve, runs[broken.base], runs[broken.key]))
    return path


def write_all(results_path: Path, out: Path) -> list[Path]:
    """Every method's panels, the broken runs' and the comparison chart, from one results file."""
    results = json.loads(results_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    present = by_experiment(results)
    written = [p for m in by_method(results) for p in write_method_figures(results, m, out)]
    written += [write_broken_figure(results, b, out) for b in BROKEN if b.key in present]
    (out / "comparison.svg").write_text(comparison(results))
    return [*filter(None, written), out / "comparison.svg"]
