"""`mmboundary evaluate` (metrics of one system's responses) and `mmboundary report` (table,
reliability diagrams, HTML page from several metrics files)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmboundary.cli.common import load_samples


def evaluate_command(
    data: Path = typer.Option(..., "--data", help="Annotated dataset file (the authors' JSON, "
                              "a .jsonl of samples, or a ShapesWorld split with --dataset shapes)."),
    predictions: Path | None = typer.Option(None, "--predictions", help="Responses JSONL (one "
                                            "Response per line). Omit with --general-output."),
    general_output: bool = typer.Option(False, "--general-output", help="Evaluate the "
                                        "CulturalVQA file's own 'general_output' answers instead "
                                        "of a predictions file."),
    out: Path = typer.Option(..., "--out", help="Metrics JSON to write (with per-sample details)."),
    system: str = typer.Option("system", "--system", help="System name shown in reports."),
    dataset: str | None = typer.Option(None, "--dataset", help="aokvqa, culturalvqa, scienceqa, "
                                       "shapes (default: detected from the data)."),
    tau: float | None = typer.Option(None, "--tau", help="Step correctness threshold on "
                                     "similarity (default: matching.DEFAULT_STEP_TAU)."),
    answer_tau: float | None = typer.Option(None, "--answer-tau", help="Open-answer threshold "
                                            "(default: matching.DEFAULT_ANSWER_TAU)."),
    answer_mode: str = typer.Option("auto", "--answer-mode", help="auto, choice, vqa, "
                                    "similarity or exact: how answers are judged (auto also "
                                    "follows each sample's own answer_mode)."),
    parse: str = typer.Option("auto", "--parse", help="How responses without steps are parsed: "
                              "auto, statement, numeric or none (no confidences)."),
    n_bins: int = typer.Option(10, "--n-bins", help="Equal-width bins for ECE and MECE."),
    similarity: str | None = typer.Option(None, "--similarity", help="Local similarity model "
                                          "folder (default: offline all-MiniLM-L6-v2)."),
) -> None:
    """Score one system's responses: Acc, chain F1, ECE, MECE, Brier, AUROC."""
    from mmboundary.data.io import read_responses, write_json_atomic
    from mmboundary.evaluation.evaluate import (
        EvalConfig,
        evaluate_predictions,
        general_output_responses,
    )
    from mmboundary.models.similarity import load_similarity
    from mmboundary.text import matching

    if (predictions is None) == (not general_output):
        raise typer.BadParameter("give exactly one of --predictions FILE or --general-output")
    samples = load_samples(data, dataset)
    responses = general_output_responses(samples) if general_output else read_responses(predictions)
    config = EvalConfig(tau=matching.DEFAULT_STEP_TAU if tau is None else tau,
                        answer_tau=matching.DEFAULT_ANSWER_TAU if answer_tau is None else answer_tau,
                        n_bins=n_bins, answer_mode=answer_mode, parse=parse,
                        similarity_model=similarity or "all-MiniLM-L6-v2")
    typer.echo(f"evaluating {len(responses)} responses on {len(samples)} samples ...", err=True)
    result = evaluate_predictions(samples, responses, load_similarity(similarity), system=system,
                                  dataset=dataset, config=config)
    write_json_atomic(out, result.to_dict())
    for name, value in result.metrics.items():
        shown = f"{value:.4f}" if value is not None else f"n/a ({result.unavailable.get(name)})"
        typer.echo(f"{name:12s} {shown}")
    typer.echo(f"counts: {result.counts}")
    typer.echo(f"wrote {out}")


def report_command(
    metrics: list[Path] = typer.Argument(..., help="Metrics JSON files from `mmboundary evaluate`."),
    out: Path = typer.Option(..., "--out", help="Folder for table.md, table.csv, PNGs, report.html."),
    title: str = typer.Option("MMBoundary evaluation", "--title", help="Report title."),
    published: bool = typer.Option(True, "--published/--no-published", help="Add the paper's "
                                   "Table 1 numbers in a separately labelled block."),
) -> None:
    """Table-1-style table (Markdown, CSV), reliability diagrams and one HTML page."""
    from mmboundary.evaluation.report import write_report

    paths = write_report(metrics, out, title=title, published=published)
    typer.echo(Path(paths["markdown"]).read_text())
    typer.echo(f"wrote {paths['html']}")


def register(app: typer.Typer) -> None:
    app.command("evaluate")(evaluate_command)
    app.command("report")(report_command)
