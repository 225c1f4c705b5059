"""Load annotated reference-chain files (A-OKVQA, CulturalVQA, ScienceQA, our own Sample JSON).

``load_annotated(path)`` reads a JSON list, a JSON dict keyed by id, or JSON Lines, detects the
format from the field names (or takes ``dataset=``), converts every record to a ``Sample`` and
returns them with the problems found. A broken record is an error ``Problem`` naming the file, the
record index and id, the field and what was expected; the other records still load. A file cut off
mid-way (a truncated JSON list, a torn JSONL line) loads every record before the break and reports
the break with its line and column. Tolerated quirks (a chain without ``Image_level``, "So the
answer is" without a comma, quoted answers, no answer step, repeated ids) are notices.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmboundary.data.failures import InputError
from mmboundary.data.formats import (
    CONVERTERS,
    ID_FIELDS,
    Problem,
    RecordContext,
    RecordError,
    detect_dataset,
    get_id,
    normalize_dataset_name,
)
from mmboundary.data.images import MissingImageError, resolve_image
from mmboundary.data.io import iter_jsonl_lines
from mmboundary.data.schema import Sample

__all__ = ["DataLoadError", "LoadResult", "Problem", "load_annotated", "read_records"]

_WS = re.compile(r"\s*")
JSONL_SUFFIXES = (".jsonl", ".ndjson")


class DataLoadError(InputError):
    """The file as a whole cannot be loaded (empty, not JSON, no record is an object, unknown
    format, or errors when asked to raise): an ``InputError``, exit code 2 in the CLI."""


@dataclass
class LoadResult:
    """What ``load_annotated`` read: the samples and every problem (errors and notices)."""

    path: str
    dataset: str
    samples: list[Sample] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    records: int = 0

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def notices(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "notice"]

    def raise_for_errors(self) -> None:
        """Raise ``DataLoadError`` listing the errors (the first 20), if there are any."""
        errors = self.errors
        if errors:
            shown = "\n".join(f"  {p}" for p in errors[:20])
            more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
            raise DataLoadError(f"{self.path}: {len(errors)} error(s):\n{shown}{more}")


@dataclass
class _Entry:
    index: int
    key: str | None
    record: Any


def _position(err: json.JSONDecodeError) -> str:
    return f"line {err.lineno} column {err.colno} (char {err.pos}): {err.msg}"


def _scan_container(text: str) -> tuple[str, list[tuple[str | None, Any]], int,
                                        json.JSONDecodeError | None]:
    """Decode a top-level JSON list or object element by element, so that everything before a
    syntax error (a truncated file) is kept. Returns (opener, items, end position, error)."""
    decoder = json.JSONDecoder()
    pos = _WS.match(text, 0).end()
    opener = text[pos:pos + 1]
    if opener not in ("[", "{"):
        err = json.JSONDecodeError("expected a JSON list '[' or object '{'", text, pos)
        return opener, [], pos, err
    closer = "]" if opener == "[" else "}"
    items: list[tuple[str | None, Any]] = []
    pos = _WS.match(text, pos + 1).end()
    if text.startswith(closer, pos):
        return opener, items, pos + 1, None
    try:
        while True:
            key = None
            if opener == "{":
                key, pos = decoder.raw_decode(text, pos)
                if not isinstance(key, str):
                    raise json.JSONDecodeError("Expecting property name", text, pos)
                pos = _WS.match(text, pos).end()
                if not text.startswith(":", pos):
                    raise json.JSONDecodeError("Expecting ':' delimiter", text, pos)
                pos = _WS.match(text, pos + 1).end()
            value, pos = decoder.raw_decode(text, pos)
            items.append((key, value))
            pos = _WS.match(text, pos).end()
            if text.startswith(",", pos):
                pos = _WS.match(text, pos + 1).end()
            elif text.startswith(closer, pos):
                return opener, items, pos + 1, None
            else:
                raise json.JSONDecodeError(f"Expecting ',' or '{closer}'", text, pos)
    except json.JSONDecodeError as err:
        return opener, items, pos, err


def _read_jsonl(path: Path, problems: list[Problem]) -> list[_Entry]:
    entries = []
    for number, item in iter_jsonl_lines(path):
        if isinstance(item, dict):
            entries.append(_Entry(number - 1, None, item))
        else:
            kind = "torn_line" if item.torn else "invalid_line"
            what = "torn last line (interrupted write?)" if item.torn else "invalid JSON line"
            problems.append(Problem(str(path), number - 1, None, "<line>",
                                    f"{what} at line {number}: {item.message}", "error", kind))
    return entries


def read_records(path: str | os.PathLike[str], problems: list[Problem]) -> list[_Entry]:
    """The raw records of a JSON list / dict-by-id / single record / JSONL file, in file order.

    Syntax errors become error problems; the records before them are still returned.
    """
    path = Path(path)
    if path.suffix.lower() in JSONL_SUFFIXES:
        return _read_jsonl(path, problems)
    text = path.read_text(encoding="utf-8")
    opener, items, end, err = _scan_container(text)
    if err is None and opener == "{" and text[end:].strip():
        return _read_jsonl(path, problems)  # JSON Lines in a .json file
    if err is None and text[end:].strip():
        err = json.JSONDecodeError("Extra data", text, _WS.match(text, end).end())
    if opener == "{" and any(k == "question" and isinstance(v, str) for k, v in items):
        items = [(None, dict(items))] if err is None else []  # one record, not a dict of them
    if err is not None:
        problems.append(Problem(str(path), len(items), None, "<json>",
                                f"invalid JSON at {_position(err)}; the {len(items)} record(s) "
                                f"before it were loaded", "error", "invalid_json"))
    return [_Entry(i, key, value) for i, (key, value) in enumerate(items)]


def _check_has_records(path: Path, entries: list[_Entry], problems: list[Problem]) -> None:
    """``DataLoadError`` with the real reason when no record of the file is a JSON object."""
    if any(isinstance(e.record, dict) for e in entries):
        return
    syntax = [p for p in problems if p.kind in ("invalid_json", "invalid_line", "torn_line")]
    if not path.read_bytes().strip():
        raise DataLoadError(f"{path}: the file is empty: no records")
    if not entries and syntax:
        raise DataLoadError(f"{path}: not a JSON or JSON Lines file of records: "
                            f"{syntax[0].message}")
    if not entries:
        raise DataLoadError(f"{path}: the file holds no records")
    raise DataLoadError(f"{path}: no record is a JSON object (record {entries[0].index}: "
                        f"{type(entries[0].record).__name__})")


def _detect(entries: list[_Entry], path: Path) -> str:
    votes = Counter(detect_dataset(e.record) for e in entries[:50] if isinstance(e.record, dict))
    votes.pop(None, None)
    if not votes:
        fields = sorted({k for e in entries[:5] if isinstance(e.record, dict) for k in e.record})
        raise DataLoadError(f"{path}: cannot tell the dataset from the fields {fields}; pass "
                            f"dataset= (aokvqa, culturalvqa, scienceqa or sample)")
    return votes.most_common(1)[0][0]


def _convert(entry: _Entry, dataset: str, reference: str, path: Path,
             problems: list[Problem]) -> Sample | None:
    ctx = RecordContext(str(path), entry.index, None, problems)
    record = entry.record
    if not isinstance(record, dict):
        ctx.error(RecordError("<record>", f"expected a JSON object, got {type(record).__name__}",
                              "invalid_record"))
        return None
    try:
        ctx.record_id = get_id(record, ID_FIELDS[dataset], entry.key)
        if ctx.record_id is None:
            ctx.record_id = f"{dataset}-{entry.index}"
            ctx.notice(ID_FIELDS[dataset][0], f"no id; using {ctx.record_id!r}", "missing_id")
        return CONVERTERS[dataset](record, ctx, reference)
    except RecordError as err:
        ctx.error(err)
        return None


def _dedupe_ids(samples: list[tuple[int, Sample]], path: Path, problems: list[Problem]) -> None:
    """Give a repeated id a ``#2``, ``#3`` suffix (file order), keeping ``meta["source_id"]``."""
    first_index: dict[str, int] = {}
    taken = {s.id for _, s in samples}
    for index, sample in samples:
        if sample.id not in first_index:
            first_index[sample.id] = index
            continue
        n, new_id = 2, f"{sample.id}#2"
        while new_id in taken:
            n, new_id = n + 1, f"{sample.id}#{n + 1}"
        problems.append(Problem(str(path), index, sample.id, "id",
                                f"id already used by record {first_index[sample.id]}; renamed "
                                f"{new_id!r}", "notice", "duplicate_id"))
        sample.meta["source_id"] = sample.id
        sample.id = new_id
        taken.add(new_id)


def _attach_images(samples: list[tuple[int, Sample]], images_dir: str | os.PathLike[str] | None,
                   require_images: bool, path: Path, problems: list[Problem]) -> set[str]:
    """Set ``Sample.image`` to the resolved file; returns the ids of samples to drop (a missing
    image with ``require_images``). A missing image is never substituted."""
    dropped: set[str] = set()
    for index, sample in samples:
        wanted = sample.image is not None or (images_dir is not None and sample.image_id is not None)
        if not (wanted or require_images):
            continue
        # a relative path in our own Sample JSON is relative to the images folder, else the file's
        base = images_dir if images_dir is not None or sample.image is None else path.parent
        try:
            sample.image = str(resolve_image(sample, base))
        except MissingImageError as err:
            severity = "error" if require_images else "notice"
            problems.append(Problem(str(path), index, sample.id, "image", str(err), severity,
                                    "missing_image"))
            sample.image = None
            if require_images:
                dropped.add(sample.id)
    return dropped


def load_annotated(
    path: str | os.PathLike[str],
    dataset: str | None = None,
    images_dir: str | os.PathLike[str] | None = None,
    reference: str = "keys_filtered",
    require_images: bool = False,
) -> LoadResult:
    """Load an annotated file into ``Sample`` objects, collecting problems instead of stopping.

    Args:
        path: a .json (list, dict keyed by id, or one record) or .jsonl file.
        dataset: "aokvqa", "culturalvqa", "scienceqa" or "sample"; None = detect from the fields.
        images_dir: folder to resolve images in (COCO ``val2017/`` layout or ``{id}.jpg``); a
            missing image is a notice (an error with ``require_images``), never replaced.
        reference: which chain is the reference: "keys_filtered" (the authors' filtered chain,
            default) or "keys" (the raw generated chain).
        require_images: drop (as errors) records whose image cannot be found.
    """
    path = Path(path)
    if reference not in ("keys_filtered", "keys"):
        raise ValueError(f"reference must be 'keys_filtered' or 'keys', got {reference!r}")
    if not path.is_file():
        raise FileNotFoundError(f"annotated file not found: {path}")
    problems: list[Problem] = []
    entries = read_records(path, problems)
    _check_has_records(path, entries, problems)
    if dataset is not None:
        name = normalize_dataset_name(dataset)
    else:
        name = _detect(entries, path)
    converted = [(e.index, s) for e in entries
                 if (s := _convert(e, name, reference, path, problems)) is not None]
    _dedupe_ids(converted, path, problems)
    dropped = _attach_images(converted, images_dir, require_images, path, problems)
    samples = [s for _, s in converted if s.id not in dropped]
    return LoadResult(str(path), name, samples, problems, records=len(entries))
