"""Annotate a dataset with reference chains: concurrent, cached, resumable, with a cost summary.

``annotate_items(items, backend, out_path, ...)`` runs every item through the two passes
(``records.annotate_item``) on a thread pool of ``config.concurrency`` workers, appends one JSONL
line per sample (flushed + fsynced), skips the ids already in ``out_path`` (``failed`` ones are
tried again and their line replaced), and writes ``{out_path}.summary.json``. Cost:

    cost_usd = prompt_tokens * price_input_per_m / 1e6 + completion_tokens * price_output_per_m / 1e6

over the replies actually fetched (cache hits cost nothing); ``None`` when a price is unknown.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mmboundary.annotate.client import ChatBackend
from mmboundary.annotate.prompts import PromptSet
from mmboundary.annotate.records import (
    AnnotateConfig,
    AnnotationItem,
    Outcome,
    annotate_item,
    annotation_of,
    output_form,
    record_id_key,
)
from mmboundary.data.io import (
    JsonlWriter,
    check_own_jsonl,
    read_jsonl,
    write_json_atomic,
    write_jsonl_atomic,
)

log = logging.getLogger(__name__)
CONFIG_FAILURES = frozenset({"auth", "not_found", "unavailable"})
"""Failure kinds every later request would share (bad key, wrong model or URL, server down or
unreachable after the retries): ``abort_after_auth_failures`` of them in a row stop the run."""


class AnnotationAborted(RuntimeError):
    """The run stopped early (e.g. a bad API key); ``summary`` says what was done."""

    def __init__(self, message: str, summary: AnnotateSummary) -> None:
        super().__init__(message)
        self.summary = summary


@dataclass
class AnnotateSummary:
    """Counts, tokens and cost of one run (``cost_usd`` None when prices are unknown)."""

    items: int = 0
    skipped_done: int = 0
    written: int = 0
    ok: int = 0
    flagged: int = 0
    failed: int = 0
    not_attempted: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    requests_sent: int | None = None
    retries: int | None = None
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    cached_completion_tokens: int = 0
    cost_usd: float | None = None
    elapsed_s: float = 0.0
    aborted: str | None = None

    def add(self, outcome: Outcome) -> None:
        status = outcome.result["annotation"]["status"]
        self.written += 1
        setattr(self, status, getattr(self, status) + 1)
        counts = Counter(self.reasons)
        counts.update(reason.split(":")[0].split(" (")[0] for reason in
                      outcome.result["review_reasons"])
        self.reasons = dict(counts)
        for reply in outcome.replies:
            if reply.cached:
                self.cache_hits += 1
                self.cached_prompt_tokens += reply.usage.prompt_tokens
                self.cached_completion_tokens += reply.usage.completion_tokens
            else:
                self.prompt_tokens += reply.usage.prompt_tokens
                self.completion_tokens += reply.usage.completion_tokens

    def price(self, config: AnnotateConfig) -> None:
        if config.price_input_per_m is not None and config.price_output_per_m is not None:
            self.cost_usd = (self.prompt_tokens * config.price_input_per_m
                             + self.completion_tokens * config.price_output_per_m) / 1e6

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _failed_ids(out_path: Path, id_key: str) -> set[str]:
    if not out_path.exists():
        return set()
    return {str(r[id_key]) for r in read_jsonl(out_path)
            if annotation_of(r).get("status") == "failed"}


def _compact(out_path: Path, id_key: str) -> None:
    """Keep the LAST line of each id (a retried record replaces its failed line), order kept;
    one atomic rewrite (a kill leaves the old file, and the next run removes the temporary)."""
    latest: dict[str, dict[str, Any]] = {}
    for record in read_jsonl(out_path):
        latest[str(record[id_key])] = record
    write_jsonl_atomic(out_path, latest.values())


def summary_path(out_path: str | Path) -> Path:
    return Path(f"{out_path}.summary.json")


def annotate_items(
    items: Sequence[AnnotationItem],
    backend: ChatBackend,
    out_path: str | Path,
    prompts: PromptSet | None = None,
    config: AnnotateConfig | None = None,
    on_record: Callable[[dict[str, Any]], None] | None = None,
    on_start: Callable[[int, int], None] | None = None,
) -> AnnotateSummary:
    """Annotate ``items`` into ``out_path`` (JSONL); returns the summary (also written to
    ``{out_path}.summary.json``). ``on_start(skipped, todo)`` is called once the output file was
    read; ``on_record(record)`` after each line is written. Raises ``AnnotationAborted`` after
    ``config.abort_after_auth_failures`` consecutive failures of a ``CONFIG_FAILURES`` kind
    (401/403, 404, unreachable)."""
    config = config or AnnotateConfig()
    prompts = prompts or PromptSet.load()
    out_path = Path(out_path)
    started = time.monotonic()
    summary = AnnotateSummary(items=len(items))
    form = output_form(list(items))
    id_key = record_id_key(form)
    check_own_jsonl(out_path, id_key)  # a foreign file is refused before it is read
    retry_ids = _failed_ids(out_path, id_key) if config.retry_failed else set()
    with JsonlWriter(out_path, resume=True, id_key=id_key) as writer:
        writer.done_ids -= retry_ids
        todo = [item for item in items if item.sample.id not in writer.done_ids]
        summary.skipped_done = len(items) - len(todo)
        if on_start is not None:
            on_start(summary.skipped_done, len(todo))
        _run_pool(todo, backend, prompts, config, form, writer, summary, on_record)
    if retry_ids:
        _compact(out_path, id_key)
    summary.price(config)
    for name in ("attempts", "retries"):
        inner = getattr(backend, "backend", backend)
        if hasattr(inner, name):
            setattr(summary, "requests_sent" if name == "attempts" else name, getattr(inner, name))
    summary.elapsed_s = round(time.monotonic() - started, 3)
    write_json_atomic(summary_path(out_path), summary.to_dict())
    if summary.aborted:
        raise AnnotationAborted(summary.aborted, summary)
    return summary


def _run_pool(todo: list[AnnotationItem], backend: ChatBackend, prompts: PromptSet,
              config: AnnotateConfig, form: str, writer: JsonlWriter, summary: AnnotateSummary,
              on_record: Callable[[dict[str, Any]], None] | None) -> None:
    """Workers annotate; this thread writes, counts, and stops the run on repeated auth failures."""
    stop = threading.Event()
    lock = threading.Lock()
    consecutive = [0]  # refused requests in a row, counted by the workers so they stop at once

    def work(item: AnnotationItem) -> Outcome | None:
        if stop.is_set():
            return None
        outcome = annotate_item(item, backend, prompts, config, form)
        with lock:
            refused = outcome.error_kind in CONFIG_FAILURES
            consecutive[0] = consecutive[0] + 1 if refused else 0
            if consecutive[0] >= config.abort_after_auth_failures and not stop.is_set():
                stop.set()
                summary.aborted = (
                    f"stopped after {consecutive[0]} consecutive requests refused by the server "
                    f"or failing to reach it (last: {outcome.result['annotation']['error']}); "
                    "fix the key, model, base URL or server and rerun: finished records are "
                    "kept, failed ones are retried")
                log.error("%s", summary.aborted)
        return outcome

    with ThreadPoolExecutor(max_workers=max(1, config.concurrency)) as pool:
        pending: set[Future[Outcome | None]] = {pool.submit(work, item) for item in todo}
        try:
            _drain(pending, stop, writer, summary, on_record)
        except BaseException:  # Ctrl-C: finish the requests in flight, start no new ones
            stop.set()
            for future in pending:
                future.cancel()
            raise


def _drain(pending: set[Future[Outcome | None]], stop: threading.Event, writer: JsonlWriter,
           summary: AnnotateSummary, on_record: Callable[[dict[str, Any]], None] | None) -> None:
    """Write each outcome as it completes; after a stop, cancel what has not started."""
    while pending:
        done, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in done:
            outcome = future.result()
            if outcome is None:
                summary.not_attempted += 1
                continue
            writer.write(outcome.record)
            summary.add(outcome)
            if on_record is not None:
                on_record(outcome.record)
        if stop.is_set():
            summary.not_attempted += sum(f.cancel() for f in pending)
            pending = {f for f in pending if not f.cancelled()}
