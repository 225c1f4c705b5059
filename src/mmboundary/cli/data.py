"""`mmboundary data stats|convert`: inspect and convert the annotated reference-chain files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

NOTICE_LABELS = {
    "missing_image_level": "records without Image_level",
    "missing_reasoning_level": "records without Reasoning_level",
    "answer_no_comma": "answer steps reading 'So the answer is' (no comma)",
    "quoted_answer": "quoted answers (quotes removed)",
    "no_answer_step": "records whose chain states no 'So, the answer is X'",
    "answer_not_last": "answer step not the last reasoning step",
    "no_gold": "records without a gold answer",
    "duplicate_id": "repeated ids (renamed id#2, id#3; meta.source_id keeps the original)",
    "missing_image": "images not found",
    "no_image": "records without an image (text-only)",
    "reference_fallback": "records using the other chain (requested one missing)",
    "no_reference": "records without a reference chain",
    "empty_step": "empty steps dropped",
    "missing_id": "records without an id (index used)",
    "unknown_chain_key": "unknown chain levels ignored",
}

DatasetOpt = typer.Option(None, "--dataset", "-d",
                          help="aokvqa, culturalvqa, scienceqa or sample; default: detect from "
                               "the field names.")
ImagesOpt = typer.Option(None, "--images", "-i", help="Images folder (COCO val2017/ layout or "
                         "{id}.jpg); missing images are reported by record, never substituted.")
ReferenceOpt = typer.Option("keys_filtered", "--reference",
                            help="Which chain is the reference: keys_filtered (default) or keys.")


def _steps_table(stats: dict[str, Any]) -> Table:
    table = Table(title="Reference steps per sample")
    for column in ("level", "mean", "min", "max", "total"):
        table.add_column(column, justify="right" if column != "level" else "left")
    for level, s in stats["steps"].items():
        mean = f"{s['mean']:.3f}" if s["mean"] is not None else "-"
        table.add_row(level, mean, str(s["min"]), str(s["max"]), str(s["total"]))
    return table


def _counts_table(stats: dict[str, Any]) -> Table:
    table = Table(title=f"{Path(stats['file']).name} ({stats['dataset']})")
    table.add_column("what")
    table.add_column("count", justify="right")
    forms = stats["answer_forms"]
    vs_gold = stats["reference_vs_gold_choice"]
    rows = [
        ("records read", stats["records"]), ("samples loaded", stats["loaded"]),
        ("with a reference chain", stats["with_reference"]),
        ("multiple choice", stats["question_types"]["multiple_choice"]),
        ("open", stats["question_types"]["open"]),
        ("answer 'So, the answer is' (comma)", forms["comma"]),
        ("answer 'So the answer is' (no comma)", forms["no_comma"]),
        ("answer quoted", forms["quoted"]), ("no answer step", forms["missing"]),
        ("gold answer present", stats["gold_answer"]["present"]),
        *([("reference answer = gold choice", vs_gold["equal"]),
           ("reference answer != gold choice", vs_gold["different"])]
          if stats["question_types"]["multiple_choice"] else []),
        ("images resolved", stats["images"]["resolved"]),
        ("errors", len(stats["errors"])),
        ("notices", sum(n["count"] for n in stats["notices"].values())),
    ]
    for label, value in rows:
        table.add_row(label, str(value))
    return table


def _print_problems(console: Console, stats: dict[str, Any], show_ids: int) -> None:
    for line in stats["errors"][:50]:
        console.print(f"[red]{line}[/red]", highlight=False)
    if len(stats["errors"]) > 50:
        console.print(f"[red]... and {len(stats['errors']) - 50} more errors[/red]")
    for kind, entry in stats["notices"].items():
        ids = [str(i) for i in entry["ids"]]
        shown = ", ".join(ids[:show_ids]) + (f", ... (+{len(ids) - show_ids})"
                                             if len(ids) > show_ids else "")
        label = NOTICE_LABELS.get(kind, kind)
        console.print(f"[yellow]notice[/yellow]: {entry['count']} {label}: {shown}",
                      highlight=False, soft_wrap=True)


def stats_command(
    file: Path = typer.Argument(..., help="Annotated file (.json list / dict by id, or .jsonl)."),
    dataset: str | None = DatasetOpt,
    images: Path | None = ImagesOpt,
    reference: str = ReferenceOpt,
    as_json: bool = typer.Option(False, "--json", help="Print the statistics as JSON."),
    show_ids: int = typer.Option(20, "--show-ids", help="How many record ids to list per notice."),
) -> None:
    """Count records, steps per level, answer forms and problems in an annotated file.

    Exit code 0 when at least one record loaded, 1 when every record failed to load (each is
    listed), 2 when the file cannot be read (empty, not JSON, unknown format)."""
    from mmboundary.cli.common import require_dir
    from mmboundary.data.loaders import DataLoadError, load_annotated
    from mmboundary.data.stats import dataset_stats

    require_dir(images, "--images")
    try:
        result = load_annotated(file, dataset=dataset, images_dir=images, reference=reference)
    except (DataLoadError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    stats = dataset_stats(result)
    if as_json:
        typer.echo(json.dumps(stats, indent=2, ensure_ascii=False))
    else:
        console = Console(width=max(Console().width, 100))
        console.print(_counts_table(stats))
        console.print(_steps_table(stats))
        _print_problems(console, stats, show_ids)
    if not result.samples:
        from mmboundary.data.failures import NothingSucceededError

        raise NothingSucceededError(f"{file}: none of its {result.records} record(s) loaded as "
                                    f"{result.dataset} ({len(result.errors)} error(s))")


def convert_command(
    file: Path = typer.Argument(..., help="Annotated file to convert."),
    out: Path = typer.Argument(..., help="Output JSONL: one Sample (model_dump) per line."),
    dataset: str | None = DatasetOpt,
    images: Path | None = ImagesOpt,
    reference: str = ReferenceOpt,
    require_images: bool = typer.Option(False, "--require-images",
                                        help="Drop (as errors) records whose image is missing."),
    allow_errors: bool = typer.Option(False, "--allow-errors",
                                      help="Write the records that loaded even if others failed."),
) -> None:
    """Convert an annotated file to our Sample JSONL (what every later stage reads). OUT must be
    a new file or a Sample JSONL of ours (anything else is refused and left unchanged)."""
    from mmboundary.cli.common import require_dir
    from mmboundary.data.io import check_own_jsonl, write_jsonl_atomic
    from mmboundary.data.loaders import DataLoadError, load_annotated

    require_dir(images, "--images")
    check_own_jsonl(out, "id")
    try:
        result = load_annotated(file, dataset=dataset, images_dir=images, reference=reference,
                                require_images=require_images)
    except (DataLoadError, FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(2) from None
    console = Console(stderr=True)
    for problem in result.errors[:50]:
        console.print(f"[red]{problem}[/red]", highlight=False)
    if result.errors and not allow_errors:
        console.print(f"{len(result.errors)} error(s); nothing written (use --allow-errors to "
                      f"write the {len(result.samples)} records that loaded)")
        raise typer.Exit(1)
    written = write_jsonl_atomic(out, result.samples)
    console.print(f"wrote {written} samples ({result.dataset}) to {out}; "
                  f"{len(result.errors)} errors, {len(result.notices)} notices")


def register(app: typer.Typer) -> None:
    """Add the `data` group (stats, convert) to the root app."""
    data_app = typer.Typer(help="Inspect and convert annotated reference-chain files.",
                           no_args_is_help=True)
    data_app.command("stats")(stats_command)
    data_app.command("convert")(convert_command)
    app.add_typer(data_app, name="data")
