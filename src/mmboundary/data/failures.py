"""Per-record failures and exit codes: one bad record never stops a run or costs other records.

Every long command (``generate``, ``estimate``, ``build-sft``, ``annotate``, ``evaluate``) follows
one model:

- a record that cannot be processed is a ``RecordFailure``: the record id, the field at fault, a
  short reason code (``missing_image``, ``bad_image``, ``too_long``, ``invalid_record``, ...) and a
  sentence. It becomes one error line (in the output, ``meta["error"]`` / ``error_reason`` /
  ``error_field``; on stderr, ``str(failure)``) and the run goes on;
- the summary counts failures by reason (``FailureTally``);
- the exit code (``EXIT_*``) is non-zero only when the input itself cannot be used (2:
  unreadable, empty, not ours, a missing folder; ``InputError``) or when nothing succeeded (1:
  every record failed; ``NothingSucceededError``).

See docs/RELIABILITY.md.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pydantic import ValidationError

    from mmboundary.data.schema import Response

EXIT_OK = 0
"""At least one record succeeded (failed records, if any, are error lines)."""
EXIT_NOTHING_SUCCEEDED = 1
"""The input was readable but every record failed (or a step needing them had none)."""
EXIT_BAD_INPUT = 2
"""The input as a whole cannot be used: unreadable, empty, not ours, a missing folder, a bad
option, or a server refusing every request (``annotate --abort-after``)."""


class InputError(ValueError):
    """The input as a whole cannot be used (exit code 2); the message is one sentence."""


class NothingSucceededError(RuntimeError):
    """Every record failed, so there is no result to give (exit code 1)."""


@dataclass(frozen=True)
class RecordFailure:
    """Why one record could not be processed.

    ``record_id``: the record's id (None when the line was too broken to have one; ``where`` then
    names it). ``field``: the field at fault (``image``, ``question``, ``steps[2].confidence``).
    ``reason``: a short code the summary counts by. ``where``: ``file:line`` when known.
    """

    record_id: str | None
    field: str
    reason: str
    message: str
    where: str | None = None

    def __str__(self) -> str:
        place = f"{self.where}: " if self.where else ""
        rid = f"record {self.record_id!r}" if self.record_id is not None else "record"
        return f"{place}{rid}: field {self.field!r}: {self.reason}: {self.message}"

    def to_meta(self) -> dict[str, str]:
        """The fields an output line of a failed record carries in its ``meta``."""
        return {"error": str(self), "error_reason": self.reason, "error_field": self.field}


def failure_from_meta(record_id: str, meta: dict[str, Any]) -> RecordFailure | None:
    """The failure an output line records in its ``meta`` (None when it records none)."""
    if "error" not in (meta or {}):
        return None
    field_name = str(meta.get("error_field", "<record>"))
    reason = str(meta.get("error_reason", "error"))
    prefix = str(RecordFailure(record_id, field_name, reason, ""))
    return RecordFailure(record_id, field_name, reason, str(meta["error"]).removeprefix(prefix))


class RecordFailureError(ValueError):
    """Raised by a per-record check; the runner records ``failure`` and goes on."""

    def __init__(self, failure: RecordFailure) -> None:
        super().__init__(str(failure))
        self.failure = failure


@dataclass
class FailureTally:
    """Successes and failures of a run, failures counted by reason."""

    succeeded: int = 0
    failures: list[RecordFailure] = field(default_factory=list)

    def add(self, failure: RecordFailure) -> None:
        self.failures.append(failure)

    @property
    def by_reason(self) -> dict[str, int]:
        return dict(Counter(f.reason for f in self.failures).most_common())

    def summary(self) -> str:
        """``"18 succeeded, 2 failed (bad_image: 1, too_long: 1)"``."""
        reasons = ", ".join(f"{k}: {v}" for k, v in self.by_reason.items())
        return (f"{self.succeeded} succeeded, {len(self.failures)} failed"
                + (f" ({reasons})" if reasons else ""))

    def exit_code(self) -> int:
        """``EXIT_NOTHING_SUCCEEDED`` when records failed and none succeeded, else ``EXIT_OK``."""
        return EXIT_NOTHING_SUCCEEDED if self.failures and not self.succeeded else EXIT_OK


def validation_failure(err: ValidationError, record: Any, where: str | None = None,
                       id_key: str = "sample_id") -> RecordFailure:
    """One line for a pydantic error: the record id, the first bad field and what was wrong
    (``steps: null`` -> field ``steps``: "Input should be a valid list (got None)")."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first.get("loc", ())) or "<record>"
    got = first.get("input")
    shown = repr(got) if not isinstance(got, (dict, list)) else type(got).__name__
    extra = f" (and {err.error_count() - 1} more)" if err.error_count() > 1 else ""
    rid = record.get(id_key) if isinstance(record, dict) else None
    return RecordFailure(None if rid is None else str(rid), loc, "invalid_record",
                         f"{first.get('msg', 'invalid')} (got {shown[:60]}){extra}", where)


def _bad_number(value: float | None, name: str, unit: bool) -> str | None:
    if value is None:
        return None
    if not math.isfinite(value):
        return f"{name} is {value!r}; expected a finite number"
    if unit and not 0.0 <= value <= 1.0:
        return f"{name} is {value!r}; expected a confidence in [0, 1]"
    return None


def response_number_failure(response: Response) -> RecordFailure | None:
    """The first non-finite or out-of-range number in a response's steps (confidences must lie in
    [0, 1]; raw and normalised scores must be finite), as a failure naming the field; else None."""
    for i, step in enumerate(response.steps):
        checks = [(step.expressed_confidence, "expressed_confidence", True),
                  (step.confidence, "confidence", True)]
        checks += [(v, f"raw_scores.{k}", False) for k, v in step.raw_scores.items()]
        checks += [(v, f"normalized_scores.{k}", False) for k, v in step.normalized_scores.items()]
        for value, name, unit in checks:
            problem = _bad_number(value, name, unit)
            if problem is not None:
                return RecordFailure(response.sample_id, f"steps[{i}].{name}", "bad_number",
                                     problem)
    return None
