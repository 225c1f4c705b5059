"""Read a dataset file into annotation items, and render a request for a dry run.

Any file ``mmboundary.data.loaders.load_annotated`` reads can be annotated: the authors' formats
(their records are echoed to the output, so the result loads as the same dataset) and our own
``Sample`` JSON/JSONL (the output is ``Sample`` JSON with ``reference`` set). An existing chain in
the input is ignored and replaced.
"""

from __future__ import annotations

import os
from collections import defaultdict
from typing import Any

from mmboundary.annotate.client import ImagePayload
from mmboundary.annotate.records import AnnotationItem
from mmboundary.data.formats import ID_FIELDS, Problem, get_id
from mmboundary.data.loaders import LoadResult, load_annotated, read_records


def load_items(path: str | os.PathLike[str], dataset: str | None = None,
               images_dir: str | os.PathLike[str] | None = None, limit: int | None = None
               ) -> tuple[list[AnnotationItem], LoadResult]:
    """The samples of ``path`` as items (first ``limit`` only), each with its raw input record
    unless the file is our own Sample format. Records the loader rejects are in the result's
    ``errors`` and are not annotated."""
    loaded = load_annotated(path, dataset=dataset, images_dir=images_dir)
    samples = loaded.samples[:limit] if limit is not None else loaded.samples
    if loaded.dataset == "sample":
        return [AnnotationItem(sample=s) for s in samples], loaded
    raw: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for entry in read_records(path, []):
        if isinstance(entry.record, dict):
            try:
                record_id = get_id(entry.record, ID_FIELDS[loaded.dataset], entry.key)
            except ValueError:
                continue  # the loader reported this record as broken
            raw[str(record_id)].append(entry.record)
    items = []
    for sample in samples:
        source_id = str(sample.meta.get("source_id", sample.id))
        candidates = raw.get(source_id) or [None]
        record = candidates.pop(0) if len(candidates) > 1 else candidates[0]
        items.append(AnnotationItem(sample=sample, record=record))
    return items, loaded


def describe_messages(messages: list[dict[str, Any]], image: ImagePayload | str) -> str:
    """The messages as text, the image elided (a dry run prints this)."""
    shown = image.describe() if isinstance(image, ImagePayload) else image
    lines = []
    for message in messages:
        lines.append(f"[{message['role']}]")
        content = message["content"]
        if isinstance(content, str):
            lines.append(content)
            continue
        for part in content:
            lines.append(shown if part.get("type") == "image" else part.get("text", ""))
    return "\n".join(lines)


def problem_summary(problems: list[Problem], limit: int = 5) -> list[str]:
    """The first ``limit`` errors as lines (for the CLI)."""
    errors = [p for p in problems if p.severity == "error"]
    lines = [str(p) for p in errors[:limit]]
    if len(errors) > limit:
        lines.append(f"... and {len(errors) - limit} more")
    return lines
