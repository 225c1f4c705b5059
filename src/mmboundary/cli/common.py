"""Pieces shared by the CLI commands that read a samples file (generate, estimate, evaluate)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

DATA_HELP = "Annotated samples file (.json / .jsonl)."
DATASET_HELP = ("Format of --data: aokvqa, culturalvqa, scienceqa, sample (Sample JSON) or "
                "shapes (a ShapesWorld split JSON); default: detected from the fields.")
IMAGES_HELP = "Folder holding the images."
DEVICE_HELP = "auto, cpu or cuda[:i]."
DTYPE_HELP = "auto, float32, bfloat16 or float16."


def load_samples(data: Path, dataset: str | None, images: Path | None = None) -> list[Any]:
    """The samples of ``--data`` (``--dataset shapes``: a ShapesWorld split; else
    ``load_annotated``). Records that could not be loaded are counted on stderr with the first
    reason; the rest are returned."""
    if dataset == "shapes":
        from mmboundary.data.shapes import read_split

        return read_split(data)
    from mmboundary.data.loaders import load_annotated

    result = load_annotated(data, dataset=dataset, images_dir=images)
    if result.errors:
        typer.echo(f"{data}: {len(result.errors)} record(s) could not be loaded; first: "
                   f"{result.errors[0]}", err=True)
    return result.samples
