"""`mmboundary evaluate` (metrics of one system's responses) and `mmboundary report` (table,
reliability diagrams, HTML page from several metrics files)."""

from __future__ import annotations

from pathlib import Path

import typer

from mmboundary.cli.common import EXIT_HELP, load_samples, read_predictions


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
    judge: str = typer.Option("auto", "--judge", help="Step judge for datasets judged by meaning: "
                              "auto (= assertions, the offline default), assertions, similarity, "
                              "nli (--judge-model), llm (--judge-base-url / --judge-model); "
                              "exact-match datasets (ShapesWorld) always use exact."),
    judge_model: str | None = typer.Option(None, "--judge-model", help="NLI cross-encoder folder "
                                           "or LLM model name for --judge nli/llm."),
    judge_base_url: str | None = typer.Option(None, "--judge-base-url", help="OpenAI-compatible "
                                              "API base URL for --judge llm."),
    tau: float | None = typer.Option(None, "--tau", help="Similarity judge threshold "
                                     "(default: judging.simple.DEFAULT_STEP_TAU = 0.5)."),
    answer_tau: float | None = typer.Option(None, "--answer-tau", help="Open-answer threshold "
                                            "(default: matching.DEFAULT_ANSWER_TAU)."),
    bootstrap: int = typer.Option(1000, "--bootstrap", help="Bootstrap replicates (over "
                                  "questions) of the 95% intervals; 0 = none."),
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
    from mmboundary.data.failures import NothingSucceededError  # error handling (#16)
    from mmboundary.data.io import write_json_atomic
    from mmboundary.data.redact import redact_text
    from mmboundary.data.safety import check_own_json
    from mmboundary.evaluation.evaluate import (
        EvalConfig,
        evaluate_predictions,
        general_output_responses,
    )
    from mmboundary.judging.rules import RuleConfig
    from mmboundary.models.similarity import load_similarity

    if (predictions is None) == (not general_output):
        raise typer.BadParameter("give exactly one of --predictions FILE or --general-output")
    samples = load_samples(data, dataset)
    check_own_json(out, ("system", "metrics"))  # error handling (#16): never replace a foreign file
    responses = general_output_responses(samples) if general_output else \
        read_predictions(predictions, samples)  # bad lines: one error line each (#16)
    thresholds = {k: v for k, v in (("tau", tau), ("answer_tau", answer_tau)) if v is not None}
    rules = RuleConfig(judge=judge, judge_options=judge_options(judge, judge_model,
                                                                judge_base_url),
                       answer_mode=answer_mode, **thresholds)  # type: ignore[arg-type]
    config = EvalConfig(rules=rules, n_bins=n_bins, parse=parse, bootstrap=bootstrap,
                        similarity_model=similarity or "all-MiniLM-L6-v2")
    source = predictions or "--general-output"
    if all("error" in r.meta for r in responses):  # error handling (#16): nothing to score
        raise NothingSucceededError(f"{source}: no usable response "
                                    f"({len(responses)} failed or unreadable)")
    typer.echo(f"evaluating {len(responses)} responses on {len(samples)} samples ...", err=True)
    result = evaluate_predictions(samples, responses, load_similarity(similarity), system=system,
                                  dataset=dataset, config=config)
    for failure in result.failures:  # records the evaluation failed (a NaN confidence ...)
        typer.echo(f"error: {redact_text(failure)}", err=True)
    if not result.counts.get("evaluated"):  # error handling (#16): nothing to score is a failure
        raise NothingSucceededError(f"{source}: no usable response ({result.counts['failed']} "
                                    f"failed, {result.counts['missing']} missing)")
    write_json_atomic(out, result.to_dict())
    for name, value in result.metrics.items():
        ci = result.intervals.get(name)
        shown = (f"{value:.4f}" + (f"  [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")
                 if value is not None else f"n/a ({result.unavailable.get(name)})")
        typer.echo(f"{name:14s} {shown}")
    typer.echo(f"counts: {result.counts}")
    typer.echo(f"wrote {out}")


def judge_options(judge: str, model: str | None, base_url: str | None) -> dict[str, str]:
    """The CLI's judge flags as the judge's constructor options (nli: model path; llm: model
    and base URL); a flag the judge does not take is an error, never ignored."""
    options = {}
    if model is not None:
        if judge not in ("nli", "llm"):
            raise typer.BadParameter(f"--judge-model is for --judge nli or llm, not {judge!r}")
        options["model"] = model
    if base_url is not None:
        if judge != "llm":
            raise typer.BadParameter(f"--judge-base-url is for --judge llm, not {judge!r}")
        options["base_url"] = base_url
    return options


def report_command(
    metrics: list[Path] = typer.Argument(..., help="Metrics JSON files from `mmboundary evaluate`, "
                                         "or folders holding them. A (system, dataset) pair "
                                         "found more than once (e.g. runs/x/seed-*/metrics) is "
                                         "shown as mean ± sd over its runs."),
    out: Path = typer.Option(..., "--out", help="Folder for table.md, table.csv, PNGs, report.html."),
    title: str = typer.Option("MMBoundary evaluation", "--title", help="Report title."),
    published: bool = typer.Option(True, "--published/--no-published", help="Add the paper's "
                                   "Table 1 numbers in a separately labelled block."),
    data: Path | None = typer.Option(None, "--data", help="The dataset file the results were "
                                     "computed on (as given to `mmboundary evaluate`): adds the "
                                     "questions and image thumbnails to the step viewer."),
    dataset: str | None = typer.Option(None, "--dataset", help="Format of --data, as for "
                                       "`mmboundary evaluate` (default: detected)."),
    images: Path | None = typer.Option(None, "--images", help="Folder holding the images of "
                                       "--data (for the step viewer's thumbnails)."),
    update_readme: Path | None = typer.Option(None, "--update-readme", help="Replace the text "
                                              "between '<!-- mmboundary:results:start -->' and "
                                              "'<!-- mmboundary:results:end -->' in this file "
                                              "with the tables and this command; an error if "
                                              "the markers are missing."),
    readme_block: str = typer.Option("results", "--readme-block", help="With --update-readme: "
                                     "the block NAME between '<!-- mmboundary:NAME:start -->' "
                                     "and '<!-- mmboundary:NAME:end -->' (several tables in one "
                                     "README); with --published the paper's rows go in too."),
) -> None:
    """Tables with 95% intervals (Markdown, CSV), reliability diagrams, a step viewer and one
    HTML page; optionally the tables in a README."""
    import shlex

    from mmboundary.data.failures import InputError
    from mmboundary.evaluation.report import write_report

    if data is None and (dataset is not None or images is not None):
        raise InputError("--dataset and --images describe --data; give --data FILE as well")
    samples = load_samples(data, dataset, images) if data is not None else None
    command = ["mmboundary", "report", *map(str, metrics), "--out", str(out)]
    for flag, value in (("--title", None if title == "MMBoundary evaluation" else title),
                        ("--data", data), ("--dataset", dataset), ("--images", images),
                        ("--update-readme", update_readme),
                        ("--readme-block", None if readme_block == "results" else readme_block)):
        command += [flag, str(value)] if value is not None else []
    command += [] if published else ["--no-published"]
    paths = write_report(metrics, out, title=title, published=published, samples=samples,
                         readme=update_readme, command=shlex.join(command),
                         readme_name=readme_block)
    typer.echo(Path(paths["markdown"]).read_text())
    typer.echo(f"wrote {paths['html']}" + (f"; updated {paths['readme']}"
                                           if "readme" in paths else ""))


def register(app: typer.Typer) -> None:
    app.command("evaluate", epilog=EXIT_HELP)(evaluate_command)
    app.command("report")(report_command)
