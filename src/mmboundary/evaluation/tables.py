"""Tables from evaluation results: the numbers as text, runs grouped by (system, dataset), the
main tables, the per-step-type table, the per-run tables, the unavailable-metrics lines, and their
Markdown and CSV forms. :mod:`mmboundary.evaluation.report` puts them on the page.

A (system, dataset) pair with one run shows ``value [95% bootstrap interval over questions]``; a
pair with several runs (seeds) shows ``mean ± sd`` over the runs
(:func:`mmboundary.evaluation.intervals.mean_sd`), and each run stays in the per-run tables.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mmboundary.evaluation.evaluate import EvalResult
from mmboundary.evaluation.intervals import mean_sd
from mmboundary.evaluation.published import DATASETS, METRICS, TABLE1
from mmboundary.evaluation.summary import METRICS as METRIC_INFO
from mmboundary.evaluation.summary import STEP_KINDS

LABELS = {"accuracy": "Acc", "precision": "Precision", "recall": "Recall", "f1": "F1",
          "ece": "ECE", "brier": "Brier", "auroc": "AUROC", "aurc": "AURC",
          "coverage": "Coverage", "mece": "MECE", "step_brier": "Step Brier",
          "step_auroc": "Step AUROC", "step_aurc": "Step AURC", "step_coverage": "Step coverage",
          "step_accuracy": "Step acc", "aligned_steps": "Aligned steps"}
#: (title, what the table shows, metric names); every table's rows are (system, dataset) pairs.
TABLES = (
    ("Paper metrics (Table 1)", "ECE of the answer step's stated confidence, MECE over aligned "
     "steps, answer accuracy, chain F1", ("ece", "mece", "accuracy", "f1")),
    ("Answer level", "The answer step's stated confidence vs answer correctness: AUROC (higher "
     "is better), Brier and AURC (lower is better); Coverage = share of judged answers that state "
     "a confidence", ("auroc", "brier", "aurc", "coverage")),
    ("Step level", "Aligned steps' stated confidence vs step correctness: Step acc = share of "
     "aligned steps judged correct; AUROC, Brier, AURC as above; Step coverage = share of aligned "
     "steps that state a confidence",
     ("step_accuracy", "step_auroc", "step_brier", "step_aurc", "step_coverage")),
)
BREAKDOWN = ("aligned_steps", "step_accuracy", "mece", "step_auroc")


@dataclass
class Run:
    """One metrics file; ``label`` tells it apart from other runs of its (system, dataset)."""

    result: EvalResult
    label: str = ""


@dataclass
class Table:
    """A titled table: ``caption`` says what it shows and how to read its cells."""

    title: str
    caption: str
    header: list[str]
    rows: list[list[str]]


Groups = dict[tuple[str, str], list[Run]]


# --- numbers as text -----------------------------------------------------------------------------

def fmt_value(value: float | None, count: bool = False) -> str:
    """Three decimals as in the paper (".316"); a count as an integer; ``n/a`` when undefined."""
    if value is None:
        return "n/a"
    if count:
        return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"
    text = f"{value:.3f}"
    return text.replace("0.", ".", 1) if text.lstrip("-").startswith("0.") else text


def fmt_interval(value: float | None, interval: Sequence[float] | None = None,
                 count: bool = False) -> str:
    """``.123 [.101, .140]``; the bare value when there is no interval."""
    if value is None or not interval:
        return fmt_value(value, count)
    return f"{fmt_value(value, count)} [{fmt_value(interval[0])}, {fmt_value(interval[1])}]"


def fmt_mean_sd(stats: tuple[float, float, int] | None, n_runs: int, count: bool = False) -> str:
    """``.123 ± .010`` over the runs; ``(n=k)`` added when only k of the runs define the metric."""
    if stats is None:
        return "n/a"
    mean, sd, n = stats
    extra = "" if n == n_runs else f" (n={n})"
    return f"{fmt_value(mean, count)} \u00b1 {fmt_value(sd, count)}{extra}"


def _value(run: Run, key: str, kind: str | None) -> float | None:
    if kind is None:
        return run.result.metrics.get(key)
    return run.result.breakdown.get(kind, {}).get(key)


def _cell(runs: list[Run], key: str, kind: str | None = None) -> str:
    count = key == "aligned_steps"
    if len(runs) == 1:
        interval = runs[0].result.intervals.get(key) if kind is None else None
        return fmt_interval(_value(runs[0], key, kind), interval, count)
    return fmt_mean_sd(mean_sd([_value(r, key, kind) for r in runs]), len(runs), count)


# --- tables -----------------------------------------------------------------------------------

def group_runs(results: Sequence[EvalResult], paths: Sequence[Path] | None = None) -> Groups:
    """(system, dataset) -> its runs in input order; runs of one pair are labelled by the parts of
    their paths that differ (``seed-0``, ``seed-1``), else ``run 1``, ``run 2``."""
    groups: dict[tuple[str, str], list[int]] = {}
    for i, r in enumerate(results):
        groups.setdefault((r.system, r.dataset), []).append(i)
    out: Groups = {}
    for key, ix in groups.items():
        labels = [""] if len(ix) == 1 else _run_labels([paths[i] for i in ix] if paths else [])
        if len(labels) != len(ix):
            labels = [f"run {j + 1}" for j in range(len(ix))]
        out[key] = [Run(results[i], label) for i, label in zip(ix, labels, strict=True)]
    return out


def _run_labels(paths: list[Path]) -> list[str]:
    parts = [p.resolve().with_suffix("").parts for p in paths]
    pre = 0
    while all(len(x) > pre + 1 for x in parts) and len({x[pre] for x in parts}) == 1:
        pre += 1
    suf = 0
    while all(len(x) > pre + suf + 1 for x in parts) and len({x[-1 - suf] for x in parts}) == 1:
        suf += 1
    labels = ["/".join(x[pre:len(x) - suf]) for x in parts]
    return labels if len(set(labels)) == len(labels) else []


def _notes(groups: Groups, bins: bool = True, intervals: bool = True) -> str:
    """How to read the cells (and, with ``bins``, the ECE/MECE bin count), for captions."""
    results = [run.result for runs in groups.values() for run in runs]

    def values(name: str, default: int) -> str:
        return "/".join(str(v) for v in sorted({int(r.counts.get(name, default)) for r in results}))

    parts = []
    if bins:
        n_bins = values("n_bins", results[0].config.n_bins)
        parts.append(f"ECE and MECE over {n_bins} equal-width confidence bins.")
    if intervals and any(len(runs) == 1 for runs in groups.values()):
        boots = values("bootstrap", results[0].config.bootstrap)
        parts.append(f"One run: value [95% bootstrap interval over questions, {boots} replicates].")
    if any(len(runs) > 1 for runs in groups.values()):
        parts.append("Several runs (Runs = number of metrics files): mean \u00b1 sd over the runs, "
                     "(n=k) when only k of them define the metric.")
    return " ".join(parts)


def _cut_note(groups: Groups) -> str:
    """Systems with responses the token budget cut before they ended (their answers are missing
    or incomplete): raise the budget rather than read their accuracy."""
    cut: dict[str, list[int]] = {}  # system -> [cut, responses], over its runs and datasets
    for (system, _), runs in groups.items():
        counts = cut.setdefault(system, [0, 0])
        for run in runs:
            counts[0] += int(run.result.counts.get("cut_at_limit", 0))
            counts[1] += int(run.result.counts.get("responses", 0))
    named = [f"{system} {n}/{total}" for system, (n, total) in cut.items() if n]
    if not named:
        return ""
    return " Responses cut by the token budget before they ended: " + ", ".join(named) + "."


def _key_columns(groups: Groups) -> list[str]:
    multi = any(len(runs) > 1 for runs in groups.values())
    return ["System", "Dataset", "Runs"] if multi else ["System", "Dataset"]


def _key_cells(key: tuple[str, str], runs: list[Run], groups: Groups) -> list[str]:
    return [key[0], key[1], str(len(runs))][:len(_key_columns(groups))]


def main_tables(groups: Groups) -> list[Table]:
    """The three tables of ``TABLES``: one row per (system, dataset)."""
    return [Table(title, f"{what}. {_notes(groups, bins='ece' in keys)}"
                         f"{_cut_note(groups) if i == 0 else ''}",
                  _key_columns(groups) + [LABELS[k] for k in keys],
                  [_key_cells(key, runs, groups) + [_cell(runs, k) for k in keys]
                   for key, runs in groups.items()])
            for i, (title, what, keys) in enumerate(TABLES)]


def breakdown_table(groups: Groups) -> Table | None:
    """Step metrics per step type (perception = aligned to an image-level reference step)."""
    if not any(run.result.breakdown for runs in groups.values() for run in runs):
        return None
    columns = _key_columns(groups) + ["Step type"]
    rows = [_key_cells(key, runs, groups) + [kind] + [_cell(runs, k, kind) for k in BREAKDOWN]
            for key, runs in groups.items() for kind in STEP_KINDS]
    return Table("Per step type", "Perception = aligned to an image-level reference step, "
                 f"reasoning = to a reasoning-level one; no intervals. "
                 f"{_notes(groups, intervals=False)}",
                 columns + [LABELS[k] for k in BREAKDOWN], rows)


def per_run_tables(groups: Groups) -> list[Table]:
    """The main tables again, one row per run, for the pairs with several runs."""
    multi = {key: runs for key, runs in groups.items() if len(runs) > 1}
    if not multi:
        return []
    return [Table(f"{title}, per run", "Each run: value [95% bootstrap interval over "
                  "questions].", ["System", "Dataset", "Run"] + [LABELS[k] for k in keys],
                  [[*key, run.label] + [_cell([Run(run.result)], k) for k in keys]
                   for key, runs in multi.items() for run in runs])
            for title, _, keys in TABLES]


def unavailable_lines(groups: Groups) -> list[str]:
    """One line per (system, dataset) with metrics that are n/a, grouped by reason."""
    several = len({dataset for _, dataset in groups}) > 1
    lines = []
    for (system, dataset), runs in groups.items():
        by_reason: dict[str, dict[str, int]] = {}
        for run in runs:
            for key, reason in run.result.unavailable.items():
                counts = by_reason.setdefault(reason, {})
                counts[key] = counts.get(key, 0) + 1
        parts = [", ".join(LABELS.get(k, k) + ("" if c == len(runs) else
                                               f" (in {c} of {len(runs)} runs)")
                           for k, c in keys.items()) + f" n/a \u2014 {reason}"
                 for reason, keys in by_reason.items()]
        if parts:
            lines.append(f"{system} ({dataset}): " if several else f"{system}: ")
            lines[-1] += "; ".join(parts)
    return lines


def published_table() -> tuple[list[str], list[list[str]]]:
    header = ["System"] + [f"{d} {m}" for d in DATASETS for m in METRICS]
    rows = [[system] + [fmt_value(v) for d in DATASETS for v in per[d]]
            for system, per in TABLE1.items()]
    return header, rows


# --- Markdown and CSV ----------------------------------------------------------------------------

def to_markdown(header: list[str], rows: list[list[str]]) -> str:
    def esc(cell: str) -> str:
        return cell.replace("|", "\\|")

    lines = ["| " + " | ".join(map(esc, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def tables_markdown(tables: Sequence[Table], unavailable: Sequence[str]) -> str:
    """Each table under its bold title and caption, then the unavailable-metrics lines."""
    text = "\n".join(f"**{t.title}.** {t.caption}\n\n{to_markdown(t.header, t.rows)}"
                     for t in tables)
    if unavailable:
        text += "\n**Unavailable metrics.**\n\n" + "".join(f"- {line}\n" for line in unavailable)
    return text


def csv_rows(groups: Groups) -> list[list[Any]]:
    """Long format: one row per run (value, lo, hi), plus a ``mean±sd`` row (value = mean, sd,
    n) for each pair with several runs; every metric of ``summary.METRICS`` and the breakdown."""
    def num(v: float | None) -> Any:
        return "" if v is None else round(float(v), 6)

    header: list[Any] = ["system", "dataset", "run", "n_runs", "n_bins", "bootstrap"]
    header += [f"{m}{s}" for m in METRIC_INFO for s in ("", "_lo", "_hi", "_sd", "_n")]
    header += [f"{kind}_{k}" for kind in STEP_KINDS for k in BREAKDOWN]
    rows = [header]
    for (system, dataset), runs in groups.items():
        for run in runs:
            r = run.result
            row: list[Any] = [system, dataset, run.label, len(runs), r.counts.get("n_bins", ""),
                              r.counts.get("bootstrap", "")]
            for m in METRIC_INFO:
                ci = r.intervals.get(m) or [None, None]
                row += [num(r.metrics.get(m)), num(ci[0]), num(ci[1]), "", ""]
            rows.append(row + [num(_value(run, k, kind)) for kind in STEP_KINDS for k in BREAKDOWN])
        if len(runs) > 1:
            row = [system, dataset, "mean\u00b1sd", len(runs), "", ""]
            for m in METRIC_INFO:
                stats = mean_sd([run.result.metrics.get(m) for run in runs])
                row += ["", "", "", "", 0] if stats is None else \
                    [num(stats[0]), "", "", num(stats[1]), stats[2]]
            rows.append(row + [num(s[0]) if (s := mean_sd([_value(x, k, kind) for x in runs]))
                               else "" for kind in STEP_KINDS for k in BREAKDOWN])
    return rows
