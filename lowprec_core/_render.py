"""Reports rendered for people (Markdown, self-contained HTML) from the report models (reports.py)."""

from __future__ import annotations

from html import escape

import numpy as np

from ._calibration.stats import Statistics
from ._layer_error import SQNR_CAP_DB
from ._reports import BenchmarkReport, InspectReport, QuantizeReport, SearchResult, ValidationReport


def quantize_markdown(report: QuantizeReport) -> str:
    plan = report.plan
    left_float = plan.left_float()
    lines = [
        "## Quantization",
        f"- INT8 size: {report.int8_bytes / 1e6:.2f} MB ({report.int8_bytes / report.fp32_bytes:.0%} of FP32)",
        f"- Nodes quantized: {len(plan.layers())}; left in float: {len(left_float)}; activations fused: {len(plan.fused)}"
        + "".join(f"; embedding table `{table.initializer}` in 8 bits" for table in plan.all_tables()),
        f"- Calibration samples: {report.calibration_samples}; wall time {report.seconds:.1f} s",
        f"- Preset `{plan.config.preset}`, target `{plan.config.target}`",
    ]
    if left_float:
        lines += ["", "| node left in float | why |", "|---|---|"]
        lines += [f"| `{name}` | {why} |" for name, why in sorted(left_float.items())]
    if report.calibration_warnings:
        lines += ["", "### Calibration warnings", ""]
        lines += [f"- {f'`{w.tensor}`: ' if w.tensor else ''}{w.message}" for w in report.calibration_warnings]
    if report.accuracy is not None:
        lines += ["", accuracy_markdown(report.accuracy)]
    if report.tuning is not None:
        tuning = report.tuning
        scored = any(c.within_budget is not None for c in tuning.candidates)  # with an accuracy budget
        lines += ["", f"### Latency search ({tuning.runtime}, {tuning.threads} thread(s), {tuning.samples} requests of batch {tuning.batch}, {tuning.seconds:.1f} s)",
                  "", tuning.reason, "", "| min_reduction | integer_ops | layers quantized | weightless ops on integers | speedup b=1 | output NMSE | "
                  + ("accuracy budget | " if scored else "") + "kept |", "|---|---|---|---|---|---|" + ("---|" if scored else "") + "---|"]
        budget = {None: "", True: "met", False: "missed"}
        lines += [f"| {'every layer float' if c.min_reduction is None else c.min_reduction}"
                  f"{f' less {len(c.float_layers)} layer(s) slower in integer' if c.float_layers else ''}"
                  f"{f', float layers at {c.float_precision}' if c.float_precision != 'default' else ''} | {c.integer_ops} | {c.layers} | {c.integer_op_nodes} | {c.speedup:.2f}x | {c.nmse:.3g} | "
                  + (f"{budget[c.within_budget]} | " if scored else "") + f"{'yes' if c.chosen else ''} |" for c in tuning.candidates]
        if tuning.untried:
            lines += ["", "Left untried, past the search's time bound: " + "; ".join(tuning.untried) + "."]
        slower = {name: cost for name, cost in tuning.layer_costs.items() if cost > 0}
        if tuning.layer_costs:
            lines += ["", f"Profiled layer by layer: {len(slower)} of the default's {len(tuning.layer_costs)} layers run slower in integer than "
                      f"in float ({sum(slower.values()):.0f} us a run)" + (": " + ", ".join(f"`{n}` +{c:.0f} us" for n, c in
                                                                                        sorted(slower.items(), key=lambda x: -x[1])[:8]) if slower else ".")]
    if report.layers is not None and report.layers.layers:
        lines += ["", inspect_markdown(report.layers)]
    return "\n".join(lines) + "\n"


def accuracy_markdown(search: SearchResult) -> str:
    verdict = "met" if search.met else "NOT met"
    lines = [
        f"### Accuracy-aware search: budget {verdict}",
        f"{search.reason}. {len(search.float_layers)} layers float; {search.full_passes} full validation passes "
        f"(plus the FP32 reference), {search.subset_evaluations} ranking-subset evaluations, {search.seconds:.1f} s evaluating.",
        "",
        "| # | kind | reverted | float layers | " + " | ".join(f"{m} drop" for m in search.iterations[0].metrics) + " | speedup b=1 |",
        "|---|---|---|---|" + "---|" * len(search.iterations[0].metrics) + "---|",
    ]
    for it in search.iterations:
        drops = " | ".join(f"{r.drop:.4g} / {r.max_drop:.4g}" for r in it.metrics.values())
        speed = f"{it.speedup:.2f}x" if it.speedup is not None else ""
        lines.append(f"| {it.index} | {it.kind} | {', '.join(f'`{x}`' for x in it.reverted)} | {len(it.float_layers)} | {drops} | {speed} |")
    if search.float_layers:
        lines += ["", "| layer kept in float | why |", "|---|---|"]
        lines += [f"| `{layer}` | {why} |" for layer, why in search.float_layers.items()]
    return "\n".join(lines) + "\n"


def inspect_markdown(report: InspectReport, top: int = 5) -> str:
    lines = [f"## Worst layers (own SQNR, {report.samples} samples)", "",
             "| layer | own dB | output dB | weight dB | action |", "|---|---|---|---|---|"]
    for r in report.layers[:top]:
        weight = "–" if r.weight_sqnr_db is None else f"{r.weight_sqnr_db:.1f}"
        lines.append(f"| `{r.layer}` | {r.own_sqnr_db:.1f} | {r.output_sqnr_db:.1f} | {weight} | {r.action} |")
    return "\n".join(lines) + "\n"


def validation_markdown(report: ValidationReport) -> str:
    verdict = "PASSED" if report.passed else "FAILED"
    text = (
        f"## Validation: {verdict}\n"
        f"| metric | FP32 | INT8 | drop | max drop | samples |\n|---|---|---|---|---|---|\n"
        f"| {report.metric} | {report.reference_score:.4f} | {report.candidate_score:.4f} | "
        f"{report.drop:.4f} | {report.max_drop:.4f} | {report.samples} |\n"
    )
    if report.default_score is not None:
        text += f"\n{_default_line(report)}\n"
    return text


def _default_line(report: ValidationReport) -> str:
    """The FP32 model at the runtime's own default precision, as validate scored it."""
    where = "OpenVINO" if report.runtime == "openvino" else report.runtime
    return (f"FP32 at {where}'s own default precision ({report.default_precision}), what serving the FP32 model unasked gives: "
            f"{report.metric} {report.default_score:.4f}")


def benchmark_markdown(report: BenchmarkReport) -> str:
    where = "OpenVINO" if report.runtime == "openvino" else "ONNX Runtime"
    lines = [
        f"## Benchmark ({where} {report.onnxruntime}, {', '.join(report.providers) or 'CPU'})",
        f"CPU: {report.cpu or 'unknown'}; integer dot-product extensions: {', '.join(report.isa) or 'none found'}",
        f"Size: FP32 {report.fp32_bytes / 1e6:.2f} MB, INT8 {report.int8_bytes / 1e6:.2f} MB ({report.size_ratio:.0%}); "
        f"session load FP32 {report.fp32_load_ms:.0f} ms, INT8 {report.int8_load_ms:.0f} ms; peak RSS {report.peak_rss_mb:.0f} MB",
        "",
        "| batch | threads | FP32 p50 / p90 / p99 ms | INT8 p50 / p90 / p99 ms | INT8 samples/s | speedup | runs | CV |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.batch} | {r.threads} | {r.fp32_median_ms:.3f} / {r.fp32_p90_ms:.3f} / {r.fp32_p99_ms:.3f} | "
        f"{r.int8_median_ms:.3f} / {r.int8_p90_ms:.3f} / {r.int8_p99_ms:.3f} | {r.int8_per_s:.0f} | "
        f"{r.speedup:.2f}x{' (noisy)' if r.noisy else ''} | {r.repeats} | {r.cv:.2f} |"
        for r in report.results
    ]
    if report.fp32_default_precision is not None:
        lines += ["", f"FP32 at {where}'s own default precision ({report.fp32_default_precision}), what serving the FP32 "
                      "model unasked gives:", "", "| batch | threads | FP32 default p50 ms | INT8 speedup over it |", "|---|---|---|---|"]
        lines += [f"| {r.batch} | {r.threads} | {r.fp32_default_median_ms:.3f} | {r.speedup_vs_default:.2f}x |"
                  for r in report.results if r.fp32_default_median_ms is not None]
    return "\n".join(lines) + "\n"


def markdown(report: QuantizeReport | ValidationReport | BenchmarkReport | InspectReport | SearchResult) -> str:
    """Any of lowprec's reports as Markdown (a pipeline step's summary, a terminal)."""
    for kind, render in _MARKDOWN.items():
        if isinstance(report, kind):
            return render(report)
    raise TypeError(f"no Markdown for {type(report).__name__}; expected one of: {', '.join(k.__name__ for k in _MARKDOWN)}")


_MARKDOWN = {
    QuantizeReport: quantize_markdown,
    ValidationReport: validation_markdown,
    BenchmarkReport: benchmark_markdown,
    InspectReport: inspect_markdown,
    SearchResult: accuracy_markdown,
}


# --- HTML: one self-contained file, inline SVG, no scripts, no network --------------------------

SQNR_CHART_CEILING = 80.0  # dB; a layer's own error this far below its signal draws no bar

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;margin:2rem auto;max-width:980px;color:#1d2733;padding:0 1rem}
h1{font-size:1.6rem;margin-bottom:.2rem}h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d6dde5;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.6rem 0;font-size:13px}td,th{border:1px solid #d6dde5;padding:3px 8px;text-align:left}
th{background:#f2f5f8}.num{text-align:right;font-variant-numeric:tabular-nums}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #d6dde5;border-radius:6px;padding:.6rem 1rem;min-width:150px}
.card b{display:block;font-size:1.4rem}.bad{color:#b3261e}.good{color:#1b7f3b}.warn{background:#fff6e0}
svg{display:block;margin:.5rem 0}code{font-size:12px}
"""


def _svg_bars(rows: list[tuple[str, float]], *, unit: str, width: int = 900, worst_low: bool = True, below: float | None = None) -> str:
    """Horizontal bars, one row per (label, value). With `below`, a bar is as long as the value is
    under it (SQNR: the longer, the worse), still labelled with the value."""
    if not rows:
        return ""
    lengths = [max(below - v, 0.0) if below is not None else v for _, v in rows]
    top = max(lengths) or 1.0
    height = 22 * len(rows) + 10
    parts = [f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">']
    for i, ((label, value), size) in enumerate(zip(rows, lengths)):
        y = 5 + 22 * i
        length = max(2.0, (width - 420) * size / top)
        color = "#c0392b" if worst_low and i < 5 else "#4a78b5"
        parts.append(f'<text x="0" y="{y + 14}" font-size="12">{escape(label[-52:])}</text>')
        parts.append(f'<rect x="360" y="{y}" width="{length:.1f}" height="16" fill="{color}"><title>{escape(label)}: {value:.2f} {unit}</title></rect>')
        shown = "no measurable error added" if unit == "dB" and value >= SQNR_CAP_DB else f"{value:.1f} {unit}"
        parts.append(f'<text x="{364 + length:.1f}" y="{y + 13}" font-size="11">{shown}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _svg_histogram(counts: np.ndarray, low: float, high: float, marks: tuple[float, float] | None, *, width: int = 440, height: int = 120) -> str:
    """Counts over [low, high] on a log scale; `marks`: the quantized range, as two red lines."""
    counts = np.asarray(counts, dtype=np.float64)
    scaled = np.log1p(counts) / max(np.log1p(counts).max(), 1e-9)
    step = width / len(counts)
    parts = [f'<svg role="img" width="{width}" height="{height + 16}" viewBox="0 0 {width} {height + 16}" xmlns="http://www.w3.org/2000/svg">',
             f'<rect x="0" y="0" width="{width}" height="{height}" fill="#f7f9fb"/>']
    for i, value in enumerate(scaled):
        if value > 0:
            parts.append(f'<rect x="{i * step:.2f}" y="{height * (1 - value):.1f}" width="{max(step, 0.6):.2f}" height="{height * value:.1f}" fill="#4a78b5"/>')
    if marks is not None and high > low:
        for edge in marks:
            x = (min(max(edge, low), high) - low) / (high - low) * width
            parts.append(f'<line x1="{x:.1f}" y1="0" x2="{x:.1f}" y2="{height}" stroke="#c0392b" stroke-width="1.5"/>')
    parts.append(f'<text x="0" y="{height + 13}" font-size="11">{low:.3g}</text>')
    parts.append(f'<text x="{width}" y="{height + 13}" font-size="11" text-anchor="end">{high:.3g}</text></svg>')
    return "".join(parts)


def _svg_line(points: list[float], budget: float, *, width: int = 600, height: int = 160) -> str:
    """A drop-per-iteration line with the budget as a dashed line."""
    top = max(max(points), budget) * 1.1 or 1.0
    xs = [20 + (width - 40) * i / max(len(points) - 1, 1) for i in range(len(points))]
    ys = [height - 10 - (height - 20) * p / top for p in points]
    path = " ".join(f"{x:.1f},{y:.1f}" for x, y in zip(xs, ys))
    yb = height - 10 - (height - 20) * budget / top
    dots = "".join(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="#4a78b5"><title>iteration {i}: {p:.4g}</title></circle>'
                   for i, (x, y, p) in enumerate(zip(xs, ys, points)))
    return (f'<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
            f'<line x1="20" y1="{yb:.1f}" x2="{width - 20}" y2="{yb:.1f}" stroke="#c0392b" stroke-dasharray="5,4"/>'
            f'<text x="{width - 20}" y="{yb - 4:.1f}" font-size="11" text-anchor="end">budget {budget:.4g}</text>'
            f'<polyline points="{path}" fill="none" stroke="#4a78b5" stroke-width="2"/>{dots}</svg>')


def _last_full_pass(search: SearchResult | None):
    full = [it for it in (search.iterations if search is not None else []) if it.kind == "full"]
    return full[-1] if full else None


def quantize_html(
    report: QuantizeReport,
    *,
    validation: ValidationReport | None = None,
    benchmark: BenchmarkReport | None = None,
    layers: InspectReport | None = None,
    stats: Statistics | None = None,
    title: str = "lowprec INT8 report",
) -> str:
    """One page: accuracy, speed and size first, then where the error comes from.

    Without a validation or benchmark report, an accuracy-aware search's last full pass gives
    the accuracy and speedup cards; without an inspect report, the quantize report's own."""
    layers = layers if layers is not None else report.layers
    body = [f"<h1>{escape(title)}</h1>", f"<p><code>{escape(report.source)}</code> → <code>{escape(report.output)}</code></p>"]
    cards = [("size", f"{report.int8_bytes / 1e6:.2f} MB", f"{report.int8_bytes / report.fp32_bytes:.0%} of FP32", "")]
    if validation is not None:
        css = "good" if validation.passed else "bad"
        cards.append((f"{validation.metric}", f"{validation.candidate_score:.4f}", f"FP32 {validation.reference_score:.4f}, drop {validation.drop:.4f} "
                      f"(max {validation.max_drop:.4f}) {'PASS' if validation.passed else 'FAIL'}", css))
        if validation.default_score is not None:
            cards.append((f"{validation.metric}, FP32 at {validation.default_precision}", f"{validation.default_score:.4f}",
                          "the runtime's own default precision: what serving FP32 unasked gives", ""))
    final = _last_full_pass(report.accuracy)
    if validation is None and final is not None:
        for name, m in final.metrics.items():
            cards.append((name, f"{m.int8:.4f}", f"FP32 {m.fp32:.4f}, drop {m.drop:.4f} (max {m.max_drop:.4f})",
                          "good" if m.drop <= m.max_drop else "bad"))
    if (benchmark is None or not benchmark.results) and final is not None and final.speedup is not None:
        cards.append(("speedup b=1", f"{final.speedup:.2f}x", "accuracy-aware search's speed check",
                      "good" if final.speedup >= 1 else "bad"))
    if benchmark is not None and benchmark.results:
        for r in benchmark.results:
            cards.append((f"speedup b={r.batch}, {r.threads} thr", f"{r.speedup:.2f}x" + (" (noisy)" if r.noisy else ""),
                          f"{r.fp32_median_ms:.2f} → {r.int8_median_ms:.2f} ms",
                          "good" if r.speedup >= 1 else "bad"))
    body.append('<div class="cards">' + "".join(
        f'<div class="card {css}"><span>{escape(name)}</span><b>{escape(value)}</b><small>{escape(note)}</small></div>' for name, value, note, css in cards
    ) + "</div>")
    plan = report.plan
    tables = "".join(f"embedding table <code>{escape(table.initializer)}</code> in 8 bits; " for table in plan.all_tables())
    body.append(f"<p>{len(plan.layers())} layers quantized, {len(plan.left_float())} left in float; {tables}preset <code>{plan.config.preset}</code>, "
                f"target <code>{plan.config.target}</code>; {report.calibration_samples} calibration samples; {report.seconds:.1f} s.</p>")

    body.append("<h2>Calibration warnings</h2>")
    if report.calibration_warnings:
        body.append("<ul>" + "".join(f'<li class="warn">{f"<code>{escape(w.tensor)}</code>: " if w.tensor else ""}{escape(w.message)}</li>'
                                      for w in report.calibration_warnings) + "</ul>")
    else:
        body.append("<p>None: every quantized tensor saw finite values with a range not set by a handful of outliers.</p>")

    if layers is not None and layers.layers:
        body.append("<h2>Where the error comes from</h2>")
        body.append(f"<p>The error each quantized layer adds itself, over {layers.samples} samples: bars grow as its own SQNR "
                    f"falls below {SQNR_CHART_CEILING:.0f} dB (longer is worse; labels are the SQNR). The five worst are red.</p>")
        body.append(_svg_bars([(r.layer, r.own_sqnr_db) for r in layers.layers[:25]], unit="dB", below=SQNR_CHART_CEILING))
        body.append("<table><tr><th>#</th><th>layer</th><th>own SQNR dB</th><th>output SQNR dB</th><th>weight SQNR dB</th><th>input SQNR dB</th><th>suggested action</th></tr>")
        show = lambda v: "–" if v is None else f"{v:.1f}"  # noqa: E731
        for i, r in enumerate(layers.layers[:10], 1):
            body.append(f'<tr><td>{i}</td><td><code>{escape(r.layer)}</code></td><td class="num">{show(r.own_sqnr_db)}</td><td class="num">{show(r.output_sqnr_db)}</td>'
                        f'<td class="num">{show(r.weight_sqnr_db)}</td><td class="num">{show(r.input_sqnr_db)}</td><td>{escape(r.action)}</td></tr>')
        body.append("</table>")
        if stats is not None:
            grids = {a.tensor: a for a in plan.activations}
            shown = [r for r in layers.layers if r.output in stats.tensors][:3]
            if shown:
                body.append("<h2>Ranges of the worst layers' outputs</h2><p>Calibration histogram (log counts); red lines: the quantized range.</p>")
            for r in shown:
                entry = stats.tensors[r.output]
                grid = grids.get(r.output)
                marks = None
                if grid is not None:
                    info = np.iinfo(np.dtype(grid.dtype))
                    marks = ((info.min - grid.zero_point) * grid.scale, (info.max - grid.zero_point) * grid.scale)
                if entry.histogram is not None:
                    body.append(f"<h3><code>{escape(r.output)}</code></h3>"
                                + _svg_histogram(entry.histogram, -entry.radius, entry.radius, marks))

    if benchmark is not None and benchmark.results:
        body.append(f"<h2>Latency (ONNX Runtime {escape(benchmark.onnxruntime)})</h2>")
        rows = []
        for r in benchmark.results:
            rows += [(f"FP32 b={r.batch} p50", r.fp32_median_ms), (f"INT8 b={r.batch} p50", r.int8_median_ms),
                     (f"FP32 b={r.batch} p90", r.fp32_p90_ms), (f"INT8 b={r.batch} p90", r.int8_p90_ms)]
        body.append(_svg_bars(rows, unit="ms", worst_low=False))

    if report.accuracy is not None and report.accuracy.iterations:
        search = report.accuracy
        name = next(iter(search.iterations[0].metrics))
        body.append("<h2>Accuracy-aware search</h2>")
        body.append(f"<p>{escape(search.reason)}; {len(search.float_layers)} layers float after {search.full_passes} full passes.</p>")
        body.append(_svg_line([it.metrics[name].drop for it in search.iterations], search.iterations[0].metrics[name].max_drop))
        body.append("<table><tr><th>layer kept in float</th><th>why</th></tr>" + "".join(
            f"<tr><td><code>{escape(layer)}</code></td><td>{escape(why)}</td></tr>" for layer, why in search.float_layers.items()) + "</table>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
            f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n")
