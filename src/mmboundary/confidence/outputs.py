"""Estimate outputs on disk: read, calibrate (fit or apply) with an atomic rewrite, merge shards.

An output is a JSONL of ``Response`` lines keyed by ``sample_id`` (read with
``mmboundary.data.io.read_responses``); a line whose ``meta["error"]``
is set records a failed sample. ``finalize_output`` fills every scored step's
``normalized_scores``, ``confidence`` and ``level`` and is idempotent (rerun after a kill: same
file).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmboundary.confidence.normalize import ConfidenceCalibrator
from mmboundary.data.io import read_responses, write_jsonl_atomic
from mmboundary.data.schema import Response


def failed(response: Response | Mapping[str, Any]) -> bool:
    """Whether an output line records a failure (``meta["error"]`` set)."""
    meta = response.meta if isinstance(response, Response) else response.get("meta", {})
    return "error" in (meta or {})


def apply_calibrator(responses: Sequence[Response], calibrator: ConfidenceCalibrator, *,
                     whole: bool = True) -> None:
    """Fill every step's ``normalized_scores``, ``confidence`` and ``level`` in place.
    ``whole``: each response is a whole chain whose last step is its answer step (the
    calibrator's ``answer_step``); False scores every step as a plain step (partial chains)."""
    steps = [step for r in responses for step in r.steps]
    chains = [len(r.steps) for r in responses] if whole else None
    for step, result in zip(steps, calibrator.transform([s.raw_scores for s in steps], chains),
                            strict=True):
        step.normalized_scores = result.normalized
        step.confidence, step.level = result.confidence, result.level


@dataclass
class EstimateSummary:
    """Counts of a run: ``total`` samples in this shard, ``skipped`` (already in the output),
    ``written`` now, ``failed`` lines in the whole output (``failures`` by reason), ``steps``
    scored, ``levels`` (level -> steps) when finalised, and the calibrator's path."""

    out: str
    total: int
    skipped: int
    written: int
    responses: int = 0
    failed: int = 0
    failures: dict[str, int] = field(default_factory=dict)
    steps: int = 0
    levels: dict[int, int] = field(default_factory=dict)
    calibrator: str | None = None
    finalized: bool = False


def calibrator_path_for(out: str | Path) -> Path:
    """Where a run's fitted calibrator is written: ``<out stem>.calibrator.json`` beside it."""
    out = Path(out)
    return out.with_name(f"{out.stem}.calibrator.json")


def finalize_output(out: str | Path, calibrator: ConfidenceCalibrator | None = None, *,
                    template: ConfidenceCalibrator | None = None,
                    calibrator_path: str | Path | None = None,
                    label_steps: Callable[[Sequence[Response]], list[list[float | None]]]
                    | None = None) -> ConfidenceCalibrator:
    """Fill normalised scores, confidences and levels in ``out`` (one atomic rewrite).

    With no ``calibrator``, one is fitted on the raw scores of every scored step in ``out``
    (a copy of ``template`` gives its settings, default ``ConfidenceCalibrator()``; ``template``
    itself stays unfitted) and saved as JSON to
    ``calibrator_path`` (default ``calibrator_path_for(out)``). ``label_steps(responses)``: each
    step's correctness (1/0/None) against the samples' references, which a template with the
    level rule ``accuracy`` needs (``judging.StepRules.step_labels``; the CLI wires it).
    Idempotent: rerunning it after an interruption gives the same file.
    """
    out = Path(out)
    responses = read_responses(out)
    ok = [r for r in responses if not failed(r)]
    if calibrator is None:
        raw = [step.raw_scores for r in ok for step in r.steps]
        template = template or ConfidenceCalibrator()
        if template.needs_labels and label_steps is None:
            raise ValueError(f"{out}: the level rule {template.levels.rule!r} / fusion "
                             f"{template.fusion.method!r} needs the steps' correctness "
                             "(label_steps; `mmboundary estimate` judges them against --data's "
                             "reference chains)")
        labels = None if label_steps is None else [y for chain in label_steps(ok) for y in chain]
        try:
            calibrator = template.clone().fit(raw, labels, [len(r.steps) for r in ok])
        except ValueError as err:
            raise ValueError(f"{out}: cannot fit the calibrator on {len(raw)} scored steps of "
                             f"{len(ok)} responses: {err}") from err
        calibrator.save(calibrator_path or calibrator_path_for(out))
    apply_calibrator(ok, calibrator)
    write_jsonl_atomic(out, responses)
    return calibrator


def summarize_output(summary: EstimateSummary, out: Path) -> EstimateSummary:
    """Fill ``summary``'s counts (responses, failures by reason, steps, levels) from ``out``."""
    responses = read_responses(out)
    summary.responses = len(responses)
    for r in responses:
        if failed(r):
            reason = r.meta.get("error_reason", "error")
            summary.failures[reason] = summary.failures.get(reason, 0) + 1
        summary.steps += sum(1 for s in r.steps if s.raw_scores)
        for s in r.steps:
            if s.level is not None:
                summary.levels[s.level] = summary.levels.get(s.level, 0) + 1
    summary.failed = sum(summary.failures.values())
    summary.levels = dict(sorted(summary.levels.items()))
    return summary


def merge_outputs(inputs: Sequence[str | Path], out: str | Path,
                  calibrator: ConfidenceCalibrator | None = None, *,
                  template: ConfidenceCalibrator | None = None,
                  label_steps: Callable[[Sequence[Response]], list[list[float | None]]]
                  | None = None) -> EstimateSummary:
    """Merge shard outputs (first line per sample id wins), then finalise the merged file
    (``finalize_output``; ``label_steps`` for the accuracy level rule)."""
    from mmboundary.data.io import merge_jsonl

    n = merge_jsonl(inputs, out, id_key="sample_id")
    finalize_output(out, calibrator, template=template, label_steps=label_steps)
    summary = EstimateSummary(out=str(out), total=n, skipped=0, written=n, finalized=True,
                              calibrator=None if calibrator is not None
                              else str(calibrator_path_for(out)))
    return summarize_output(summary, Path(out))
