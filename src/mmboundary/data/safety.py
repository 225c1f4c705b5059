"""Output-file safety: a command writes only to files it wrote, and cleans up after a kill.

- ``check_own_jsonl(path, id_key)``: whether a JSONL output path may be (re)written: missing,
  empty, or every complete line a JSON object carrying ``id_key`` (the field every line of ours
  has: ``sample_id`` for responses, ``id`` for samples). Anything else is ``ForeignFileError``,
  and the file is never modified. Old outputs of ours pass: no header or marker is needed.
- ``check_own_json(path, keys)``: the same for a JSON output (an object holding ``keys``).
- ``remove_stale_temps(path)``: the temporary files that atomic writes of ``path`` left when
  their process was killed (``.<name>.<pid>-<random>.tmp``, the process gone) are removed.
"""

from __future__ import annotations

import glob
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmboundary.data.failures import InputError

logger = logging.getLogger(__name__)


class ForeignFileError(InputError):
    """An output path holding a file this tool did not write: refused, never modified."""


def parse_json_object(text: str) -> dict[str, Any] | str:
    """The line's object, or a message saying why it is not one."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        return f"{err.msg} at column {err.colno}"
    if not isinstance(value, dict):
        return f"expected a JSON object, got {type(value).__name__}"
    return value


def check_own_jsonl(path: str | os.PathLike[str], id_key: str) -> None:
    """Raise ``ForeignFileError`` unless ``path`` may be written by a ``JsonlWriter``.

    Ours = missing, empty (0 bytes), or every complete (newline-ended, non-blank) line a JSON
    object with ``id_key``; a last line without a newline must then start like one of ours
    (``{``) -- or, when it is the only line, hold ``"<id_key>":`` -- and if it parses, be a
    record with ``id_key``. A file of blank lines only is not ours. Reads only; never changes
    the file.
    """
    path = Path(path)
    if not path.exists():
        return
    data = path.read_bytes()
    *complete, tail = data.split(b"\n")
    records = 0
    for number, raw in enumerate(complete, start=1):
        if not raw.strip():
            continue
        problem = _not_ours(raw, id_key)
        if problem is not None:
            raise ForeignFileError(_foreign_message(path, number, problem))
        records += 1
    problem = None
    if tail.strip():
        parsed = parse_json_object(tail.decode("utf-8", errors="replace"))
        key = f'"{id_key}":'.encode()
        if isinstance(parsed, dict):
            problem = None if id_key in parsed else f"a JSON object without {id_key!r}"
        elif not tail.lstrip().startswith(b"{") or (records == 0 and key not in tail):
            problem = "not the start of a record of ours"
    elif data and not records:
        problem = "blank, with no record"
    if problem is not None:
        raise ForeignFileError(_foreign_message(path, len(complete) + 1, problem))


def _not_ours(raw: bytes, id_key: str) -> str | None:
    parsed = parse_json_object(raw.decode("utf-8", errors="replace"))
    if isinstance(parsed, str):
        return parsed
    return None if id_key in parsed else f"a JSON object without {id_key!r}"


def _foreign_message(path: Path, line: int, problem: str) -> str:
    return (f"{path}: not an output of ours (line {line}: {problem}); refusing to write to it "
            "and leaving it unchanged -- choose another output path, or remove the file")


def check_own_json(path: str | os.PathLike[str], keys: Sequence[str]) -> None:
    """Raise ``ForeignFileError`` unless ``path`` is missing, empty, or a JSON object holding every
    one of ``keys`` (e.g. a metrics file of ours: ``("system", "metrics")``). Reads only."""
    path = Path(path)
    if not path.exists() or not path.read_bytes().strip():
        return
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as err:
        raise ForeignFileError(f"{path}: not an output of ours (not JSON: {err}); refusing to "
                               "replace it -- choose another output path, or remove the "
                               "file") from None
    missing = [k for k in keys if not isinstance(value, dict) or k not in value]
    if missing:
        raise ForeignFileError(f"{path}: not an output of ours (no {missing} field); refusing "
                               "to replace it -- choose another output path, or remove the file")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except (OverflowError, ValueError, OSError):
        return False
    return True


def remove_stale_temps(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporary files an atomic write of ``path`` left behind when its process was
    killed (``.<name>.<pid>-<random>.tmp`` whose process is gone; older unnamed ones too).
    Temporaries of a live process are kept. Returns the removed paths."""
    path = Path(path)
    prefix = f".{path.name}."
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(prefix)}*.tmp"):
        middle = tmp.name[len(prefix):-len(".tmp")]
        if not middle or "." in middle:
            continue  # another file's temporary (".a.b.<pid>-x.tmp" for "a.b")
        pid_text = middle.split("-", 1)[0]
        if pid_text.isdigit() and "-" in middle and _pid_alive(int(pid_text)):
            continue
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
        logger.warning("removed %s, left by an interrupted write", tmp)
    return removed
