"""Pieces shared by the CLI commands: loading a samples file, checking folders, reporting failures.

Failure reporting follows ``mmboundary.data.failures``: each failed record is one ``error:`` line
on stderr (record id, field, reason) and the run goes on; a command raises ``InputError`` (exit 2)
or ``NothingSucceededError`` (exit 1), which the root group (``cli/__init__.py``) prints as one
line.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

if TYPE_CHECKING:
    from mmboundary.data.failures import RecordFailure

DATA_HELP = "Annotated samples file (.json / .jsonl)."
DATASET_HELP = ("Format of --data: aokvqa, culturalvqa, scienceqa, sample (Sample JSON) or "
                "shapes (a ShapesWorld split JSON, images beside it; no --images); default: "
                "detected from the fields.")
IMAGES_HELP = "Folder holding the images (must exist; images are never looked up elsewhere)."
DEVICE_HELP = "auto, cpu or cuda[:i]."
DTYPE_HELP = "auto, float32, bfloat16 or float16."
EXIT_HELP = ("Exit code 0 when at least one record succeeded (each failed record is an error "
             "line naming its id, field and reason), 1 when every record failed, 2 when the "
             "input cannot be used (unreadable, empty, not an output of ours, missing folder).")
MAX_SHOWN = 20


def require_dir(path: Path | None, option: str) -> None:
    """``InputError`` (exit 2) when a folder option names no existing folder: never a fallback."""
    from mmboundary.data.failures import InputError

    if path is not None and not path.is_dir():
        what = "is a file, not a folder" if path.exists() else "does not exist"
        raise InputError(f"{option} {path}: {what}")


def load_samples(data: Path, dataset: str | None, images: Path | None = None) -> list[Any]:
    """The samples of ``--data`` (``--dataset shapes``: a ShapesWorld split; else
    ``load_annotated``). Records that could not be loaded are counted on stderr with the first
    reason; the rest are returned. ``InputError`` (exit 2) when the file cannot be read or holds
    no loadable sample, or ``images`` is not a folder."""
    from mmboundary.data.failures import InputError

    require_dir(images, "--images")
    if dataset == "shapes":
        from mmboundary.shapesworld.scenes import read_split

        if images is not None:  # never silently ignored
            raise InputError("--images is not used with --dataset shapes (a split's images are "
                             "its images/ folder, beside the JSON); drop --images, or read the "
                             "file as --dataset sample --images DIR")

        try:
            samples = read_split(data)
        except (ValueError, TypeError) as err:
            raise InputError(f"--data {data}: not a ShapesWorld split: {err}") from None
        if not samples:
            raise InputError(f"--data {data}: no samples in the file")
        return samples
    from mmboundary.data.loaders import load_annotated

    result = load_annotated(data, dataset=dataset, images_dir=images)
    if result.errors:
        typer.echo(f"{data}: {len(result.errors)} record(s) could not be loaded; first: "
                   f"{result.errors[0]}", err=True)
    if not result.samples:
        raise InputError(f"--data {data}: no sample could be loaded from its {result.records} "
                         f"record(s)" + (f"; first error: {result.errors[0]}"
                                         if result.errors else ""))
    return result.samples


def image_loader(dataset: str | None, images: Path | None) -> Any:
    """``sample -> PIL.Image`` for ``--dataset`` / ``--images``; raises (MissingImageError,
    OSError) with the reason, so the caller can fail that record alone."""
    if dataset == "shapes":
        from mmboundary.shapesworld.scenes import load_image as load_shapes_image

        return load_shapes_image
    from mmboundary.data.images import load_image, resolve_image

    return lambda sample: load_image(resolve_image(sample, images), sample.id)


def report_failure(failure: RecordFailure) -> None:
    """One ``error:`` line on stderr for a failed record (credentials masked)."""
    from mmboundary.data.redact import redact_text

    typer.echo(f"error: {redact_text(str(failure))}", err=True)


def report_failures(failures: list[RecordFailure], limit: int = MAX_SHOWN) -> None:
    """The first ``limit`` failures, one line each, then how many more."""
    for failure in failures[:limit]:
        report_failure(failure)
    if len(failures) > limit:
        typer.echo(f"error: ... and {len(failures) - limit} more failed record(s)", err=True)


def read_predictions(path: Path, samples: list[Any]) -> list[Any]:
    """The responses of ``--predictions`` for ``evaluate``, screened record by record.

    A line that is not a Response (bad JSON, ``"steps": null``), a response for a sample not in
    ``--data`` or a second one for a sample is an error line and left out (a response with a NaN
    or out-of-range confidence is failed by ``evaluate_predictions`` itself, named in
    ``EvalResult.failures``).
    ``InputError`` (exit 2) when no response can be read at all.
    """
    from mmboundary.data.failures import InputError, RecordFailure
    from mmboundary.data.io import read_responses

    failures: list[RecordFailure] = []
    responses = read_responses(path, on_bad_record=failures.append)
    if not responses:
        first = f"; first problem: {failures[0]}" if failures else ""
        raise InputError(f"--predictions {path}: no response could be read{first}")
    known = {s.id for s in samples}
    seen: set[str] = set()
    out = []
    for r in responses:
        if r.sample_id not in known:
            failures.append(RecordFailure(r.sample_id, "sample_id", "unknown_sample",
                                          "no sample with this id in --data; left out"))
            continue
        if r.sample_id in seen:
            failures.append(RecordFailure(r.sample_id, "sample_id", "duplicate",
                                          "a second response for this sample; the first is used"))
            continue
        seen.add(r.sample_id)
        out.append(r)
    report_failures(failures)
    if failures:
        from mmboundary.data.failures import FailureTally

        tally = FailureTally(sum("error" not in r.meta for r in out), failures)
        typer.echo(f"--predictions {path}: {tally.summary()}", err=True)
    return out


def is_main_process() -> bool:
    """True unless this is a non-zero rank of a multi-process launch (``RANK`` set by accelerate /
    torchrun): the CLI prints a run's outcome once, not once per process."""
    import os

    return os.environ.get("RANK", "0") == "0"
