"""`mmboundary build-sft` and `mmboundary statements show|parse`: confidence expression."""

from __future__ import annotations

from pathlib import Path

import typer

statements_app = typer.Typer(help="The confidence-statement bank: show it, parse text with it.",
                             no_args_is_help=True)


def _mode(mode: str) -> str:
    if mode not in ("statement", "numeric"):
        raise typer.BadParameter(f"--mode must be 'statement' or 'numeric', got {mode!r}")
    return mode


def build_sft_command(
    estimates: Path = typer.Option(..., "--estimates", exists=True, dir_okay=False,
                                   help="Estimate output JSONL (one Response per line, steps "
                                        "carrying levels) from `mmboundary estimate`."),
    data: Path = typer.Option(..., "--data", exists=True, dir_okay=False,
                              help="The samples file the estimates were made from."),
    out: Path = typer.Option(..., "--out", file_okay=False,
                             help="Output folder: hf/ (TRL dataset), records.jsonl, summary.json."),
    images: Path | None = typer.Option(None, "--images", file_okay=False,
                                       help="Images folder (default: the data file's folder); "
                                            "must exist."),
    mode: str = typer.Option("statement", "--mode", callback=_mode,
                             help="statement: bank statements (MMBoundary); numeric: "
                                  "'(confidence 0.7)' (ablation w/o S-S mapping)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the statement sampling."),
    random_levels: bool = typer.Option(False, "--random-levels",
                                       help="Each step states a uniformly random level (seeded "
                                            "by --seed and the sample id) instead of its own: "
                                            "the set `train sft --content-only-dataset` trains "
                                            "on its content only."),
    bank: Path | None = typer.Option(None, "--bank", exists=True, dir_okay=False,
                                     help="A statement bank JSON (default: the shipped one)."),
    llamafactory: Path | None = typer.Option(None, "--llamafactory", file_okay=False,
                                             help="Also export to LLaMA-Factory (sharegpt JSON, "
                                                  "dataset_info.json, images, training YAML)."),
    lf_model: str = typer.Option("Qwen/Qwen2-VL-7B-Instruct", "--lf-model",
                                 help="model_name_or_path written into the LLaMA-Factory YAML."),
    lf_template: str = typer.Option("qwen2_vl", "--lf-template",
                                    help="LLaMA-Factory template (qwen2_vl, llava_next, ...)."),
) -> None:
    """Build the stage-1 SFT set: each step of the vanilla model's own responses followed by the
    statement of its confidence level.

    A response whose sample is not in --data, or whose image is missing or not decodable, is an
    error line and is skipped; the others are built. Exit code 1 when no record could be built,
    2 when an input cannot be used."""
    from rich import print as rprint

    from mmboundary.cli.common import require_dir
    from mmboundary.text.statements import StatementBank
    from mmboundary.training.sft_data import build_sft_records, save_sft_dataset

    require_dir(images, "--images")
    images_dir = images if images is not None else data.parent
    samples, responses = _screened_inputs(estimates, data, images_dir)
    if random_levels:
        from mmboundary.training.sft_data import random_levels as draw_levels

        responses = draw_levels(responses, seed)
    records, summary = build_sft_records(
        responses, samples, images_dir=images_dir, mode=mode, seed=seed,  # type: ignore[arg-type]
        bank=StatementBank.load(bank) if bank else None)
    if not records:
        from mmboundary.data.failures import NothingSucceededError

        raise NothingSucceededError(f"{estimates}: no SFT record could be built "
                                    f"({summary.skipped_failed} failed and "
                                    f"{summary.skipped_empty} step-less responses)")
    out_dir = save_sft_dataset(records, summary, out)
    rprint(f"[green]{summary.records} records[/green] ({summary.steps} steps; levels "
           f"{summary.levels}; skipped {summary.skipped_failed} failed, {summary.skipped_empty} "
           f"empty) -> {out_dir}")
    if llamafactory is not None:
        from mmboundary.training.llamafactory import export_llamafactory

        yaml_path = export_llamafactory(records, llamafactory, model=lf_model, template=lf_template)
        rprint(f"LLaMA-Factory export: {yaml_path.parent} (train with "
               f"`llamafactory-cli train {yaml_path}`)")


def _screened_inputs(estimates: Path, data: Path, images_dir: Path) -> tuple[list, list]:
    """The samples of ``data`` and the responses of ``estimates``, each response whose sample is
    unknown or whose image is missing / not decodable turned into a failure line (reported on
    stderr, then skipped by ``build_sft_records`` as failed)."""
    from mmboundary.cli.common import load_samples, report_failures
    from mmboundary.data.failures import FailureTally, RecordFailure
    from mmboundary.data.images import BadImageError, check_image, resolve_image
    from mmboundary.data.io import read_responses

    samples = load_samples(data, None, images_dir)
    by_id = {s.id: s for s in samples}
    failures: list[RecordFailure] = []
    responses = read_responses(estimates, on_bad_record=failures.append)
    if not responses and not failures:
        from mmboundary.data.failures import InputError

        raise InputError(f"--estimates {estimates}: the file holds no responses")
    screened = []
    for r in responses:
        failure = None
        sample = by_id.get(r.sample_id)
        if "error" in r.meta:
            pass
        elif sample is None:
            failure = RecordFailure(r.sample_id, "sample_id", "unknown_sample",
                                    f"no sample with this id in {data}")
        else:
            try:
                check_image(resolve_image(sample, images_dir), sample.id)
            except FileNotFoundError as err:
                failure = RecordFailure(r.sample_id, "image", "missing_image", str(err))
            except BadImageError as err:
                failure = RecordFailure(r.sample_id, "image", "bad_image", str(err))
        if failure is not None:
            failures.append(failure)
            r = r.model_copy(update={"meta": {**r.meta, **failure.to_meta()}})
        screened.append(r)
    report_failures(failures)
    if failures:
        reasons = FailureTally(failures=failures).by_reason
        typer.echo(f"{len(failures)} response(s) skipped: {reasons}", err=True)
    return samples, screened


@statements_app.command("show")
def show(level: int | None = typer.Option(None, "--level", min=1, max=5,
                                          help="Only this level (1..5)."),
         bank: Path | None = typer.Option(None, "--bank", exists=True, dir_okay=False,
                                          help="A statement bank JSON (default: shipped).")) -> None:
    """Print the statements of each level and the confidence it stands for."""
    from rich.console import Console
    from rich.table import Table

    from mmboundary.text.statements import LEVELS, StatementBank, default_bank, level_to_value

    the_bank = StatementBank.load(bank) if bank else default_bank()
    table = Table("level", "value", "statement")
    for k in LEVELS if level is None else (level,):
        for statement in the_bank.levels[k]:
            table.add_row(str(k), f"{level_to_value(k):.1f}", statement)
    Console().print(table)


@statements_app.command("parse")
def parse(text: str = typer.Argument(..., help="A response (one or more sentences)."),
          mode: str = typer.Option("statement", "--mode", callback=_mode,
                                   help="statement or numeric (see build-sft)."),
          threshold: float = typer.Option(0.5, "--threshold",
                                          help="Minimum cosine to the nearest bank statement."),
          rule: str = typer.Option("nearest", "--rule",
                                   help="Level rule: nearest (paper), centroid or knn.")) -> None:
    """Split TEXT into steps and show each step's statement and expressed confidence."""
    from rich.console import Console
    from rich.table import Table

    from mmboundary.text import StatementParser

    parser = StatementParser(threshold=threshold, mode=mode, rule=rule)  # type: ignore[arg-type]
    table = Table("step", "content", "statement", "confidence")
    for step in parser.parse(text):
        value = "-" if step.expressed_confidence is None else f"{step.expressed_confidence:.2f}"
        table.add_row(str(step.index), text[step.start:step.content_end], step.statement or "-",
                      value)
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("build-sft")(build_sft_command)
    app.add_typer(statements_app, name="statements")
