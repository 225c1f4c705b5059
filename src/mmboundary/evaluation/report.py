"""Reports from evaluation results: a Table-1-style table (Markdown, CSV), reliability diagrams
(PNG) and one self-contained HTML page (table, embedded plots, the paper's published numbers in a
separately labelled block).

Input: metrics JSON files written by ``mmboundary evaluate`` (``EvalResult.to_dict()``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmboundary.evaluation.evaluate import EvalResult
from mmboundary.evaluation.published import DATASETS, METRICS, SOURCE, TABLE1

TABLE_METRICS = (("ECE", "ece"), ("MECE", "mece"), ("Acc", "accuracy"), ("F1", "f1"))
PUBLISHED_TITLE = "Published numbers (He et al., ACL 2025, Table 1; not re-runs)"


def _fmt(value: float | None) -> str:
    """Three decimals as in the paper (".316"); ``n/a`` for an unavailable metric."""
    if value is None:
        return "n/a"
    text = f"{value:.3f}"
    return text[1:] if text.startswith("0.") else text


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", text).strip("-").lower() or "system"


def results_table(results: Sequence[EvalResult]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: one row per system, ECE / MECE / Acc / F1 per dataset (input order)."""
    datasets = list(dict.fromkeys(r.dataset for r in results))
    systems = list(dict.fromkeys(r.system for r in results))
    cell = {(r.system, r.dataset): r for r in results}
    header = ["System"] + [f"{d} {name}" for d in datasets for name, _ in TABLE_METRICS]
    rows = []
    for system in systems:
        row = [system]
        for d in datasets:
            r = cell.get((system, d))
            row += [_fmt(r.metrics.get(key)) if r else "" for _, key in TABLE_METRICS]
        rows.append(row)
    return header, rows


def published_table() -> tuple[list[str], list[list[str]]]:
    header = ["System"] + [f"{d} {m}" for d in DATASETS for m in METRICS]
    rows = [[system] + [_fmt(v) for d in DATASETS for v in per[d]] for system, per in TABLE1.items()]
    return header, rows


def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def reliability_png(result: EvalResult) -> bytes:
    """Two reliability diagrams (answer level, step level) of one result as PNG bytes: bars =
    accuracy per confidence bin, dots = mean confidence, the diagonal = perfect calibration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.8), dpi=100)
    for ax, (level, label, key) in zip(axes, [("response", "answer step", "ece"),
                                              ("step", "aligned steps", "mece")], strict=True):
        bins = result.reliability.get(level)
        ax.plot([0, 1], [0, 1], "--", color="gray", linewidth=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="expressed confidence", ylabel="accuracy")
        if not bins:
            ax.text(0.5, 0.5, "no expressed confidences", ha="center", va="center")
            ax.set_title(f"{label}: {key.upper()} n/a")
            continue
        widths = [max(u - lo, 0.02) for lo, u in zip(bins["lower"], bins["upper"], strict=True)]
        ax.bar(bins["lower"], bins["accuracy"], width=widths, align="edge", alpha=0.7,
               edgecolor="black", label="accuracy")
        ax.plot(bins["confidence"], bins["accuracy"], "o", color="C3", label="mean confidence")
        ax.set_title(f"{label}: {key.upper()} {_fmt(result.metrics.get(key))} "
                     f"(n={sum(bins['count'])})")
        ax.legend(loc="lower right", fontsize=8)
    fig.suptitle(f"{result.system} on {result.dataset}", fontsize=11)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    return buffer.getvalue()


_CSS = ("body{font-family:sans-serif;margin:2em;max-width:1200px}table{border-collapse:collapse;"
        "margin:1em 0}td,th{border:1px solid #999;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}th{background:#eee}"
        ".published{border:2px dashed #b60;padding:0.5em 1em;background:#fff8ee;overflow-x:auto}"
        "img{max-width:100%}pre{background:#f4f4f4;padding:1em;overflow:auto}")


def render_html(results: Sequence[EvalResult], title: str, pngs: dict[str, bytes],
                notes: dict[str, Any] | None = None, published: bool = True,
                figures: dict[str, bytes] | None = None) -> str:
    """One self-contained page: results table, unavailable metrics, extra ``figures`` (title ->
    PNG, e.g. training curves), reliability diagrams, published block, notes."""
    header, rows = results_table(results)
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
             f"</title><style>{_CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>",
             "<h2>Results (computed here)</h2>", _html_table(header, rows)]
    missing = [f"<li>{html.escape(r.system)} / {html.escape(r.dataset)}: {html.escape(k)}: "
               f"{html.escape(v)}</li>" for r in results for k, v in r.unavailable.items()]
    if missing:
        parts.append(f"<h3>Unavailable metrics</h3><ul>{''.join(missing)}</ul>")
    for caption, data in (figures or {}).items():
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f"<h2>{html.escape(caption)}</h2><figure><img alt='{html.escape(caption)}' "
                     f"src='data:image/png;base64,{encoded}'></figure>")
    parts.append("<h2>Reliability diagrams</h2>")
    for name, data in pngs.items():
        encoded = base64.b64encode(data).decode("ascii")
        parts.append(f"<figure><img alt='reliability diagram {html.escape(name)}' "
                     f"src='data:image/png;base64,{encoded}'></figure>")
    if published:
        p_header, p_rows = published_table()
        parts.append(f"<div class='published'><h2>{html.escape(PUBLISHED_TITLE)}</h2>"
                     f"<p>{html.escape(SOURCE)}. Shown for reference only: not produced by this "
                     f"code.</p>{_html_table(p_header, p_rows)}</div>")
    if notes:
        parts.append("<h2>Notes</h2><pre>" + html.escape(json.dumps(notes, indent=2, default=str))
                     + "</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(metrics_files: Sequence[str | Path], out_dir: str | Path,
                 title: str = "MMBoundary evaluation", notes: dict[str, Any] | None = None,
                 published: bool = True, figures: dict[str, bytes] | None = None
                 ) -> dict[str, Path]:
    """Write ``table.md``, ``table.csv``, ``reliability_<system>_<dataset>.png`` and
    ``report.html`` (with any extra ``figures``, title -> PNG bytes) into ``out_dir``; return their
    paths (``dir``, ``markdown``, ``csv``, ``html``)."""
    if not metrics_files:
        raise ValueError("no metrics files given")
    results = [EvalResult.load(path) for path in metrics_files]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    header, rows = results_table(results)
    markdown = to_markdown(header, rows)
    if published:
        markdown += f"\n**{PUBLISHED_TITLE}**\n\n" + to_markdown(*published_table())
    (out / "table.md").write_text(markdown)
    with (out / "table.csv").open("w", newline="") as handle:
        csv.writer(handle).writerows([header, *rows])
    pngs: dict[str, bytes] = {}
    for r in results:
        name = f"reliability_{_slug(r.system)}_{_slug(r.dataset)}"
        pngs[name] = reliability_png(r)
        (out / f"{name}.png").write_bytes(pngs[name])
    (out / "report.html").write_text(render_html(results, title, pngs, notes, published, figures))
    return {"dir": out, "markdown": out / "table.md", "csv": out / "table.csv",
            "html": out / "report.html"}
