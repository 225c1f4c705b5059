"""Crash-safe JSON Lines and JSON files: the storage every long run writes through.

- ``read_jsonl(path)`` yields one dict per line. A torn last line (the process was killed mid-write,
  e.g. ``kill -9``) is reported and skipped; a bad line elsewhere is an error naming file and line.
- ``JsonlWriter(path, resume=True)`` appends one JSON object per line, flushes and fsyncs each one,
  and knows which ids are already on disk (``done_ids``), so a rerun continues without duplicates.
  It only ever writes to a file of ours: an existing file must be empty or hold our records (every
  complete line a JSON object with the id field), else ``ForeignFileError`` and the file is left
  untouched. Only after that check is a torn last line (a kill mid-write) cut off.
- ``write_json_atomic(path, obj)`` writes a temporary file in the same folder, then ``os.replace``.
  A temporary file left by a killed run (``.<name>.<pid>-*.tmp``, its process gone) is removed by
  the next write to, or writer on, the same path (``remove_stale_temps``).
- ``shard(items, num_shards, shard_index)`` is a deterministic split; ``merge_jsonl`` joins shard
  outputs, keeping the first line of each id.
- ``read_responses(path, on_bad_record=...)`` reads a responses JSONL (generate / estimate /
  predictions output) as ``Response`` objects: the one reader of that format. With
  ``on_bad_record`` a broken line is a ``RecordFailure`` (file, line, record id, field) and
  reading goes on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mmboundary.data.failures import InputError, RecordFailure, validation_failure
from mmboundary.data.safety import (
    ForeignFileError,
    check_own_jsonl,
    parse_json_object,
    remove_stale_temps,
)
from mmboundary.data.schema import Response

__all__ = ["ForeignFileError", "JsonlDecodeError", "JsonlIssue", "JsonlWriter", "check_own_jsonl",
           "iter_jsonl_lines", "merge_jsonl", "read_jsonl", "read_responses", "remove_stale_temps",
           "shard", "write_json_atomic", "write_jsonl_atomic"]

logger = logging.getLogger(__name__)
T = TypeVar("T")


class JsonlDecodeError(InputError):
    """A line of a JSONL file that is not a JSON object (file, 1-based line, reason)."""

    def __init__(self, issue: JsonlIssue) -> None:
        super().__init__(str(issue))
        self.issue = issue


@dataclass(frozen=True)
class JsonlIssue:
    """A bad line: ``torn`` = the file's last line, without a newline (an interrupted write)."""

    path: str
    line: int
    message: str
    torn: bool

    def __str__(self) -> str:
        what = "torn last line (interrupted write?)" if self.torn else "invalid line"
        return f"{self.path}:{self.line}: {what}: {self.message}"


def _to_jsonable(obj: Any) -> Any:
    return obj.model_dump(mode="json") if isinstance(obj, BaseModel) else obj


def _dumps_line(obj: Any) -> str:
    return json.dumps(_to_jsonable(obj), ensure_ascii=False, separators=(",", ":")) + "\n"


def iter_jsonl_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any] | JsonlIssue]]:
    """Yield ``(line_number, object)`` for each good non-blank line and ``(line_number, issue)``
    for each bad one (1-based line numbers); never raises on content."""
    path = Path(path)
    data = path.read_bytes()
    lines = data.split(b"\n")
    ends_with_newline = data.endswith(b"\n")
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        parsed = parse_json_object(raw.decode("utf-8", errors="replace"))
        if isinstance(parsed, dict):
            yield number, parsed
        else:
            torn = number == len(lines) and not ends_with_newline
            yield number, JsonlIssue(str(path), number, parsed, torn)


def read_jsonl(
    path: str | os.PathLike[str],
    on_bad_line: Callable[[JsonlIssue], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Yield the JSON object on each non-blank line of ``path``.

    A bad line is passed to ``on_bad_line`` when given (reading goes on). Without it, a torn last
    line (no final newline) is logged as a warning and skipped, and any other bad line raises
    ``JsonlDecodeError`` naming the file and line number.
    """
    for _, item in iter_jsonl_lines(path):
        if isinstance(item, dict):
            yield item
        elif on_bad_line is not None:
            on_bad_line(item)
        elif item.torn:
            logger.warning("%s; skipped", item)
        else:
            raise JsonlDecodeError(item)


def read_responses(
    path: str | os.PathLike[str],
    on_bad_record: Callable[[RecordFailure], None] | None = None,
) -> list[Response]:
    """Every line of a responses JSONL file as a ``Response``, in file order.

    Failure lines (``meta["error"]`` set) are kept: callers filter them. A torn last line is
    skipped with a warning (as in ``read_jsonl``). A bad line (not JSON, or not a ``Response``,
    e.g. ``"steps": null``) is passed to ``on_bad_record`` as a ``RecordFailure`` naming the file,
    the line, the record id and the field, and reading goes on; without ``on_bad_record`` it
    raises (``JsonlDecodeError``, or ``ValueError`` for a line that is not a ``Response``).
    """
    out: list[Response] = []
    for number, item in iter_jsonl_lines(path):
        where = f"{path}:{number}"
        if isinstance(item, JsonlIssue):
            if item.torn:
                logger.warning("%s; skipped", item)
            elif on_bad_record is None:
                raise JsonlDecodeError(item)
            else:
                on_bad_record(RecordFailure(None, "<line>", "invalid_json", item.message, where))
            continue
        try:
            out.append(Response.model_validate(item))
        except ValidationError as err:
            failure = validation_failure(err, item, where)
            if on_bad_record is None:
                raise ValueError(f"{where}: line is not a Response: "
                                 f"{dataclasses.replace(failure, where=None)}") from None
            on_bad_record(failure)
    return out


def _repair_tail(path: Path) -> JsonlIssue | None:
    """Cut a torn last line off ``path`` (or add the missing newline after a whole one)."""
    with path.open("rb") as handle:
        data = handle.read()
    if not data or data.endswith(b"\n"):
        return None
    cut = data.rfind(b"\n") + 1
    tail = data[cut:]
    parsed = parse_json_object(tail.decode("utf-8", errors="replace"))
    with path.open("r+b") as handle:
        if isinstance(parsed, dict):
            handle.seek(0, os.SEEK_END)
            handle.write(b"\n")
            issue = None
        else:
            handle.truncate(cut)
            issue = JsonlIssue(str(path), data.count(b"\n") + 1, parsed, torn=True)
        handle.flush()
        os.fsync(handle.fileno())
    return issue


class JsonlWriter:
    """Append-only, resumable JSONL output keyed by ``id_key``.

    Refuses (``ForeignFileError``) an existing file that is not ours (``check_own_jsonl``), with
    or without ``resume``. ``failed(record)``, when given, tells failure lines apart: the writer
    then counts ``ok_lines`` and ``failed_lines`` (already on disk and written).

    >>> import tempfile, pathlib
    >>> out = pathlib.Path(tempfile.mkdtemp()) / "out.jsonl"
    >>> with JsonlWriter(out) as w:
    ...     w.write({"id": "a", "x": 1})
    True
    >>> with JsonlWriter(out) as w:   # a rerun: "a" is done, writing it again is skipped
    ...     sorted(w.done_ids), w.write({"id": "a", "x": 2}), w.write({"id": "b", "x": 3})
    (['a'], False, True)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        resume: bool = True,
        id_key: str = "id",
        fsync: bool = True,
        failed: Callable[[dict[str, Any]], bool] | None = None,
    ) -> None:
        self.path = Path(path)
        self.id_key = id_key
        self.fsync = fsync
        self.done_ids: set[str] = set()
        self.repaired: JsonlIssue | None = None
        self._failed = failed
        self.ok_lines = self.failed_lines = 0  # counted when ``failed`` tells the lines apart
        self.path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(self.path)
        check_own_jsonl(self.path, id_key)  # before anything is changed
        if resume and self.path.exists():
            self.repaired = _repair_tail(self.path)
            if self.repaired is not None:
                logger.warning("%s; cut off before resuming", self.repaired)
            for record in read_jsonl(self.path):
                self.done_ids.add(self._id_of(record))
                self._count(record)
            self._handle = self.path.open("a", encoding="utf-8")
        else:
            self._handle = self.path.open("w", encoding="utf-8")

    def _count(self, record: dict[str, Any]) -> None:
        if self._failed is not None:
            if self._failed(record):
                self.failed_lines += 1
            else:
                self.ok_lines += 1

    def _id_of(self, record: dict[str, Any]) -> str:
        if self.id_key not in record:
            raise KeyError(f"{self.path}: record has no {self.id_key!r} field: {str(record)[:120]}")
        return str(record[self.id_key])

    def __contains__(self, record_id: object) -> bool:
        return str(record_id) in self.done_ids

    def write(self, obj: dict[str, Any] | BaseModel) -> bool:
        """Append ``obj`` as one line (flushed, fsynced). Returns False (writes nothing) when its
        id is already in the file."""
        record = _to_jsonable(obj)
        record_id = self._id_of(record)
        if record_id in self.done_ids:
            return False
        self._handle.write(_dumps_line(record))
        self._handle.flush()
        if self.fsync:
            os.fsync(self._handle.fileno())
        self.done_ids.add(record_id)
        self._count(record)
        return True

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path``, fsync it, then ``os.replace``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temps(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}-", suffix=".tmp",
                               dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON to ``path`` so readers see the old file or the new one, never half.

    A temporary file in the same folder is written, fsynced and moved over ``path`` (os.replace).
    """
    text = json.dumps(_to_jsonable(obj), ensure_ascii=False, indent=indent) + "\n"
    _write_text_atomic(Path(path), text)


def write_jsonl_atomic(path: str | os.PathLike[str], records: Iterable[Any],
                       own_key: str | None = None) -> int:
    """Write ``records`` (dicts or pydantic models) as a complete JSONL file, atomically.

    For finished outputs; use ``JsonlWriter`` for long runs that must survive a kill.
    ``own_key``: refuse (``ForeignFileError``) to replace an existing file that is not ours by
    ``check_own_jsonl(path, own_key)``. Returns the number of lines written.
    """
    if own_key is not None:
        check_own_jsonl(path, own_key)
    lines = [_dumps_line(record) for record in records]
    _write_text_atomic(Path(path), "".join(lines))
    return len(lines)


def _stable_bucket(key: str, num_shards: int) -> int:
    return int.from_bytes(hashlib.sha1(key.encode("utf-8")).digest()[:8], "big") % num_shards


def shard(
    items: Sequence[T],
    num_shards: int,
    shard_index: int,
    key: Callable[[T], str] | None = None,
) -> list[T]:
    """The items of shard ``shard_index`` out of ``num_shards``, in their original order.

    Without ``key``: round robin by position (item i goes to shard i mod n; sizes differ by at
    most one). With ``key``: by a stable hash of ``key(item)`` (SHA-1, not Python's salted
    ``hash``), so an item stays in its shard when the list is reordered or grows.
    """
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise ValueError(f"shard_index must be in [0, {num_shards}), got {shard_index}")
    if key is None:
        return list(items)[shard_index::num_shards]
    return [item for item in items if _stable_bucket(key(item), num_shards) == shard_index]


def merge_jsonl(
    inputs: Iterable[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    id_key: str = "id",
) -> int:
    """Concatenate JSONL files into ``out`` (written atomically), keeping the first line of each id.

    Torn last lines of the inputs are skipped with a warning. An existing ``out`` that is not ours
    (``check_own_jsonl``) is refused. Returns the number of lines written.
    """
    check_own_jsonl(out, id_key)
    seen: set[str] = set()
    lines: list[str] = []
    for path in inputs:
        for record in read_jsonl(path):
            if id_key not in record:
                raise KeyError(f"{path}: record has no {id_key!r} field: {str(record)[:120]}")
            record_id = str(record[id_key])
            if record_id not in seen:
                seen.add(record_id)
                lines.append(_dumps_line(record))
    _write_text_atomic(Path(out), "".join(lines))
    return len(lines)
