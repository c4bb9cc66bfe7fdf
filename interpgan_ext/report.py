"""`interpgan report`: one self-contained HTML page per run (images embedded as data URIs), with the sample grid,
filter and group pictures, swap examples, metric tables (from `interpgan eval`) and training curves (inline SVG)."""
import base64
import glob
import html
import json
import math
import os
from typing import Optional

from .edit import swap_concept
from .runs import Run, partition_of
from .viz import stacked_bar_chart, swap_figure, visualize_run

CURVES = ["loss_D", "loss_G_gan", "L_cd", "L_interp", "L_gmm", "energy", "smallest group", "images_per_s"]
STEP_PARTS = ["D", "GMM", "Langevin", "W", "G"]  # the trainer's timed parts of a step


def curve(rows, key: str) -> list:
    """[(step, value)] of a training curve over log rows. "smallest group" is the fewest filters in a group of
    the partition (from each row's group_sizes): a partition with near-empty groups shows as a dip."""
    if key == "smallest group":
        return [(r["step"], float(min(r["group_sizes"]))) for r in rows if r.get("group_sizes")]
    return [(r["step"], float(r[key])) for r in rows if key in r]


def time_split(rows) -> Optional[dict]:
    """Mean milliseconds per training step of each part, over a run's log rows; None when the log has no timings."""
    timed = [r["time"] for r in rows if isinstance(r.get("time"), dict)]
    if not timed:
        return None
    return {p: 1e3 * sum(t.get(p, 0.0) for t in timed) / len(timed) for p in STEP_PARTS}


def embed_image(data: bytes) -> str:
    """A data URI for PNG bytes: kept as PNG when small (charts stay crisp), else re-encoded as JPEG, which
    keeps a report of many photo-like grids a few MB instead of tens."""
    if len(data) <= 64_000:
        return "data:image/png;base64," + base64.b64encode(data).decode()
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.open(io.BytesIO(data)).convert("RGB").save(buf, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _img(path: str, title: str = "") -> str:
    with open(path, "rb") as fh:
        uri = embed_image(fh.read())
    cap = f"<figcaption>{html.escape(title)}</figcaption>" if title else ""
    return f'<figure><img src="{uri}" alt="{html.escape(title)}">{cap}</figure>'


def svg_chart(series: dict, title: str, width: int = 300, height: int = 150) -> str:
    """A small line chart as inline SVG: `series` maps a name to [(x, y), ...]; one colour per series."""
    pts = [(x, y) for s in series.values() for x, y in s if math.isfinite(y)]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    L, R, T, B = 46, 8, 18, 18
    sx = lambda x: L + (x - x0) / (x1 - x0) * (width - L - R)  # noqa: E731
    sy = lambda y: height - B - (y - y0) / (y1 - y0) * (height - T - B)  # noqa: E731
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" class="chart">',
             f'<text x="{L}" y="12" font-size="11">{html.escape(title)}</text>',
             f'<line x1="{L}" y1="{height - B}" x2="{width - R}" y2="{height - B}" stroke="#999"/>',
             f'<line x1="{L}" y1="{T}" x2="{L}" y2="{height - B}" stroke="#999"/>',
             f'<text x="2" y="{T + 8}" font-size="9">{y1:.3g}</text>',
             f'<text x="2" y="{height - B}" font-size="9">{y0:.3g}</text>',
             f'<text x="{L}" y="{height - 4}" font-size="9">step {x0:g}</text>',
             f'<text x="{width - R - 50}" y="{height - 4}" font-size="9">{x1:g}</text>']
    for i, (name, s) in enumerate(series.items()):
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s if math.isfinite(y))
        c = colours[i % len(colours)]
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.2" points="{path}"/>')
        parts.append(f'<text x="{width - R - 90}" y="{T + 10 + 11 * i}" font-size="9" fill="{c}">{html.escape(name)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _table(rows, header) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _cell(v) -> str:
    """A table cell's text. A metric the run has no data for (IoU without part labels, FID without an
    extractor) is NaN: n/a."""
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else "n/a"
    return str(v)


def _fmt(v):
    return html.escape(_cell(v))


def summary_rows(metrics: dict, baseline: Optional[dict] = None):
    """(metric, interpretable, baseline) rows shared by the report and `interpgan eval`'s table."""
    def get(m, *keys):
        for k in keys:
            if m is None or k not in m:
                return float("nan")
            m = m[k]
        return m

    rows = [("mean group-part IoU", get(metrics, "dissection", "mean_group_iou"), get(baseline, "dissection", "mean_group_iou")),
            ("distinct parts matched (IoU >= 0.1)", get(metrics, "dissection", "parts_matched"), get(baseline, "dissection", "parts_matched")),
            ("group purity", get(metrics, "dissection", "group_purity"), get(baseline, "dissection", "group_purity")),
            ("mean filter-part IoU", get(metrics, "dissection", "mean_filter_iou"), get(baseline, "dissection", "mean_filter_iou")),
            ("locality, matched groups vs same-size collage (lower is better)", get(metrics, "mean_matched_locality"),
             get(baseline, "mean_collage_locality")),
            ("locality, every GMM group (lower is better)", get(metrics, "mean_locality"), get(baseline, "mean_locality")),
            ("FID", get(metrics, "realism", "fid"), get(baseline, "realism", "fid")),
            ("KID", get(metrics, "realism", "kid"), get(baseline, "realism", "kid"))]
    return rows


def format_table(names, rows, markdown: bool = False) -> str:
    """A plain-text (or Markdown) table: one column per name, one line per (metric, value, ...) row."""
    if markdown:
        lines = ["| metric | " + " | ".join(names) + " |", "| --- |" + " --- |" * len(names)]
        return "\n".join(lines + ["| " + " | ".join([r[0], *map(_cell, r[1:1 + len(names)])]) + " |" for r in rows])
    width = max(len(r[0]) for r in [("metric",), *rows])
    col = max([14, *map(len, names), *(len(_cell(v)) for r in rows for v in r[1:1 + len(names)])])
    lines = [f"{'metric':<{width}}  " + "  ".join(f"{n:>{col}}" for n in names)]
    return "\n".join(lines + [f"{r[0]:<{width}}  " + "  ".join(f"{_cell(v):>{col}}" for v in r[1:1 + len(names)])
                              for r in rows])


def runs_table(named_metrics, markdown: bool = False):
    """(table, warnings) comparing the metrics.json of several runs side by side (seeds, variants): the eval
    metrics, the step, the partition's group sizes and the segmenter. IoU and the domain FID depend on the part
    segmenter, so a warning says when the runs were measured with different ones."""
    names = [n for n, _ in named_metrics]
    cols = [m for _, m in named_metrics]
    per_run = [summary_rows(m) for m in cols]
    rows = [(label, *(rows_of_run[i][1] for rows_of_run in per_run)) for i, (label, *_) in enumerate(per_run[0])]
    sizes = [m.get("group_sizes") or [] for m in cols]
    seg = [m.get("segmenter") or {} for m in cols]
    rows += [("smallest group (filters)", *(min(s) if s else float("nan") for s in sizes)),
             ("group sizes", *(",".join(map(str, s)) for s in sizes)),
             ("step", *(m.get("step", "?") for m in cols)),
             ("segmenter mIoU", *(s.get("miou", float("nan")) for s in seg))]
    warnings = []
    # metrics.json from before the fingerprint was recorded: the held-out mIoU tells segmenters apart instead
    key = "fingerprint" if all("fingerprint" in s for s in seg) else "miou"
    if len({s.get(key) for s in seg if s}) > 1:
        warnings.append("the runs were measured with different part segmenters: IoU and the domain FID/KID compare "
                        "only between runs measured with the same one (copy one run's segmenter_<size>px.pt into "
                        "the others and run `interpgan eval` again)")
    return format_table(names, rows, markdown), warnings


def _run_section(run: Run, metrics: Optional[dict], fig_dir: str, n_pairs: int = 6) -> str:
    out = [f"<h2>{html.escape(run.name)}: {'interpretable' if run.interpretable else 'baseline (lambda0 = 0)'}, "
           f"step {run.step}</h2>"]
    samples = sorted(glob.glob(os.path.join(run.path, "samples", "*.png")))
    if samples:
        out.append(_img(samples[-1], f"G_ema samples, {os.path.basename(samples[-1])}"))
    paths = visualize_run(run, fig_dir, metrics=metrics)
    out.append('<div class="row">' + "".join(_img(p, os.path.basename(p)[:-4].replace("_", " ")) for p in paths) + "</div>")
    q = partition_of(run)
    za, zb = run.latents(n_pairs, seed=11), run.latents(n_pairs, seed=12)
    locality = {e["group"]: e for e in (metrics or {}).get("locality", [])}
    swaps = []
    for c in range(run.n_groups):
        if not (q == c).any():
            continue
        res = swap_concept(run.G, run.layer, za, zb, groups=[c], q=q)
        e = locality.get(c, {})
        title = f"swap group {c}" + (f" ({e['part']}, locality {e['ratio']:.3g})" if e.get("part") else "")
        swaps.append(_img(swap_figure(res, os.path.join(fig_dir, f"swap_group{c}.png")), title))
    out.append("<h3>Concept swaps</h3><div class=\"row\">" + "".join(swaps) + "</div>")
    if metrics and metrics.get("locality"):
        out.append("<h3>Groups</h3>" + _table(
            [(e["group"], e["size"], e.get("part"), e.get("iou", float("nan")), e["ratio"], e["n"]) for e in metrics["locality"]],
            ["group", "filters", "best part", "IoU", "locality MSE_out/MSE_in", "edits"]))
    return "\n".join(out)


def write_report(run: Run, baseline: Optional[Run] = None, out_dir: Optional[str] = None) -> str:
    """Write `out_dir`/report.html (default: RUN/report/) and its PNGs; returns the HTML path."""
    out_dir = out_dir or os.path.join(run.path, "report")
    os.makedirs(out_dir, exist_ok=True)
    metrics = _load_metrics(run.path)
    base_metrics = (metrics or {}).get("baseline") or (_load_metrics(baseline.path) if baseline else None)
    body = [f"<h1>interpgan report: {html.escape(run.name)}</h1>"]
    if metrics:
        header = ["metric", run.name] + ([baseline.name if baseline else "baseline"] if base_metrics else [])
        rows = [r if base_metrics else r[:2] for r in summary_rows(metrics, base_metrics)]
        body.append("<h2>Metrics</h2>" + _table(rows, header))
        if metrics.get("segmenter"):
            s = metrics["segmenter"]
            body.append(f"<p>Part labels of generated images come from a U-Net trained on SynthFaces: held-out pixel "
                        f"accuracy {s['pixel_accuracy']:.3f}, mIoU {s['miou']:.3f}.</p>")
        if metrics.get("realism"):
            body.append(f"<p>FID/KID feature extractor: {html.escape(metrics['realism']['extractor'])}.</p>")
        if base_metrics and base_metrics.get("collage_locality"):
            body.append("<h3>Locality: interpretable group swap vs. same-size feature collage in the baseline</h3>" + _table(
                [(e["part"], e["size"], e["interp_ratio"], e["ratio"]) for e in base_metrics["collage_locality"]],
                ["part", "channels", "interpretable", "baseline collage"]))
    else:
        body.append("<p>No metrics.json: run <code>interpgan eval RUN</code> first for the metric tables.</p>")
    comparison = _load_json(run.path, "compare.json")
    if comparison:
        from .analysis.compare import comparison_rows

        body.append("<h2>Interpretability by other methods (interpgan compare)</h2>" + _table(
            comparison_rows(comparison), ["metric", "interpretable", "baseline"]))
    logs = {run.name: run.log()}
    if baseline:
        logs[baseline.name] = baseline.log()
    charts = []
    for key in CURVES:
        series = {name: curve(rows, key) for name, rows in logs.items()}
        series = {k: v for k, v in series.items() if v}
        if series:
            charts.append(svg_chart(series, key))
    body.append("<h2>Training curves</h2><div class=\"row\">" + "".join(charts) + "</div>")
    splits = {name: time_split(rows) for name, rows in logs.items()}
    splits = {name: split for name, split in splits.items() if split}
    if splits:
        chart = stacked_bar_chart([[split[p] for p in STEP_PARTS] for split in splits.values()], list(splits),
                                  STEP_PARTS, os.path.join(out_dir, "time_split.png"), unit="ms",
                                  title="ms per training step, by part (mean over the logged steps)")
        body.append("<h2>Where a training step's time goes</h2>" + _img(chart) + "<p>To measure it apart from a "
                    "run, with profiler traces: <code>python python/bench_train.py</code>.</p>")
    body.append(_run_section(run, metrics, os.path.join(out_dir, run.name)))
    if baseline:
        body.append(_run_section(baseline, base_metrics, os.path.join(out_dir, baseline.name)))
    page = ("<!doctype html><html><head><meta charset=\"utf-8\"><title>interpgan report</title><style>"
            "body{font-family:sans-serif;margin:20px;max-width:1400px} table{border-collapse:collapse;margin:8px 0}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right} figure{display:inline-block;margin:6px}"
            "figcaption{font-size:12px;color:#444} .row{display:flex;flex-wrap:wrap;align-items:flex-start}"
            "img{image-rendering:pixelated}</style></head><body>" + "\n".join(body) + "</body></html>")
    path = os.path.join(out_dir, "report.html")
    with open(path, "w") as fh:
        fh.write(page)
    return path


def _load_metrics(run_path: str) -> Optional[dict]:
    return _load_json(run_path, "metrics.json")


def _load_json(run_path: str, name: str) -> Optional[dict]:
    p = os.path.join(run_path, name)
    if not os.path.exists(p):
        return None
    with open(p) as fh:
        return json.load(fh)
