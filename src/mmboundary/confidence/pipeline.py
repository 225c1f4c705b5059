"""Step-level internal confidence for responses: model pass -> steps -> estimators -> calibrator.

``estimate_steps`` handles one sample; ``estimate_batch`` a batch (ONE batched VLM pass, ONE
similarity call for every TokenSAR variant of every step, CLIP images embedded once);
``estimate_dataset`` runs a whole file into a resumable JSONL (one ``Response`` per line, keyed by
``sample_id``; a failing sample is a line whose ``meta["error"]`` says why) and then fits (or
applies) a ``ConfidenceCalibrator`` in a final atomic rewrite (``outputs.finalize_output``;
shards are joined by ``outputs.merge_outputs``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from mmboundary.confidence.estimators import ESTIMATORS, StepInput, estimate
from mmboundary.confidence.normalize import ConfidenceCalibrator
from mmboundary.confidence.outputs import (
    EstimateSummary,
    apply_calibrator,
    calibrator_path_for,
    finalize_output,
    summarize_output,
)
from mmboundary.data.failures import RecordFailure, RecordFailureError, failure_from_meta
from mmboundary.data.schema import Response, Sample, Step, TokenStats


@dataclass
class EstimateConfig:
    """Options of step-level estimation; every default is documented.

    estimators: which of "lnlp", "mte", "tokensar", "clips" to compute (all four, paper).
    include_question: TokenSAR's s = question + step instead of the step alone **(ours: off)**.
    instruction: the prompt instruction (None = ``models.prompts`` default for the sample kind).
    max_new_tokens / do_sample / temperature / top_p / seed: generation when no response is given
    (greedy by default). batch_size: samples per VLM pass. keep_token_stats: store each
    response's per-token statistics in the output (needed to re-score without the model).
    parse_statements: detect each step's trailing confidence statement so only its content is
    scored (``text.statements``); off = plain sentences (``text.steps.split_steps``), right for
    a vanilla model's responses, which carry no statements, and cheaper (no embedding calls).
    """

    estimators: tuple[str, ...] = ESTIMATORS
    include_question: bool = False
    instruction: str | None = None
    max_new_tokens: int = 128
    do_sample: bool = False
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = 0
    batch_size: int = 8
    keep_token_stats: bool = True
    parse_statements: bool = True


class SampleError(RecordFailureError):
    """A sample that cannot be scored: ``reason`` is a short code, ``field`` the field at fault,
    the message says why (``failure`` is the ``RecordFailure`` its output line records)."""

    def __init__(self, sample_id: str, reason: str, message: str, field: str = "response") -> None:
        super().__init__(RecordFailure(sample_id, field, reason, message))
        self.sample_id, self.reason, self.field = sample_id, reason, field


@dataclass
class _Item:
    sample: Sample
    response: str | None = None
    image: Any = None
    image_key: str | None = None
    prompt: str = ""
    text: str = ""
    stats: TokenStats | None = None
    steps: list[Step] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def default_image_loader(images_dir: str | Path | None = None) -> Callable[[Sample], tuple[Any, str]]:
    """(PIL image, cache key) of a sample via ``data.images.resolve_image`` (never substituted)."""
    from mmboundary.data.images import load_image, resolve_image

    def load(sample: Sample) -> tuple[Any, str]:
        path = resolve_image(sample, images_dir)
        return load_image(path, sample.id), str(path)

    return load


def _fail(item: _Item, reason: str, message: str, field: str = "response") -> SampleError:
    return SampleError(item.sample.id, reason, message, field)


def _prepare(vlm: Any, item: _Item, loader: Callable, config: EstimateConfig) -> None:
    """Per-sample checks before anything reaches the model: response text, image (found and
    decodable), and the input's length against the model's context."""
    from mmboundary.data.images import BadImageError
    from mmboundary.models.responses import check_input_length
    from mmboundary.models.vlm import InputTooLongError

    if item.response is not None and not item.response.strip():
        raise _fail(item, "empty_response", "the given response text is empty")
    try:
        item.image, item.image_key = loader(item.sample)
    except FileNotFoundError as err:
        raise _fail(item, "missing_image", str(err), "image") from None
    except BadImageError as err:
        raise _fail(item, "bad_image", str(err), "image") from None
    item.prompt = vlm.prompt_text(item.sample, config.instruction)
    if item.stats is not None:
        return  # reused statistics: the model is not run on this sample
    try:
        check_input_length(vlm, item.prompt, item.image, response=item.response,
                           max_new_tokens=config.max_new_tokens if item.response is None else 0)
    except InputTooLongError as err:
        raise _fail(item, "too_long", str(err), err.field) from None


def _run_model(vlm: Any, items: list[_Item], config: EstimateConfig) -> None:
    """ONE batched pass: teacher-forced scoring of given responses, else generation."""
    given = [it for it in items if it.response is not None and it.stats is None]
    todo = [it for it in items if it.response is None]
    if given:
        stats = vlm.score([it.prompt for it in given], [it.image for it in given],
                          [it.response for it in given], batch_size=config.batch_size)
        for it, st in zip(given, stats, strict=True):
            it.text, it.stats = it.response, st
    if todo:
        gens = vlm.generate([it.prompt for it in todo], [it.image for it in todo],
                            max_new_tokens=config.max_new_tokens, do_sample=config.do_sample,
                            temperature=config.temperature, top_p=config.top_p, seed=config.seed,
                            batch_size=config.batch_size)
        for it, gen in zip(todo, gens, strict=True):
            it.text, it.stats, it.meta["finished"] = gen.text, gen.token_stats, gen.finished


def _check_stats(item: _Item) -> None:
    if not item.text.strip():
        raise _fail(item, "empty_response", "the model generated no text")
    stats = item.stats
    assert stats is not None
    values = [*stats.logprobs, *stats.entropies]
    if not all(math.isfinite(v) for v in values):
        raise _fail(item, "non_finite", "token statistics contain NaN/inf (log-probs or "
                    "entropies); check the model's dtype", "token_stats")


def _step_inputs(item: _Item) -> list[tuple[Step, StepInput]]:
    from mmboundary.text.steps import align_steps_to_tokens

    assert item.stats is not None
    align_steps_to_tokens(item.steps, item.stats.offsets)
    lp, ent = np.asarray(item.stats.logprobs), np.asarray(item.stats.entropies)
    out = []
    for step in item.steps:
        if step.token_start is None or step.token_end is None or step.token_end <= step.token_start:
            continue
        span = slice(step.token_start, step.token_end)
        spans = [(a - step.start, b - step.start) for a, b in item.stats.offsets[span]]
        out.append((step, StepInput(step.content, lp[span], ent[span], spans, item.image,
                                    item.sample.question, item.image_key)))
    if not out:
        raise _fail(item, "no_steps", f"no step of the response has content tokens: "
                    f"{item.text[:80]!r}")
    return out


def _estimate_items(vlm: Any, items: list[_Item], *, similarity: Any, clip: Any, parser: Any,
                    config: EstimateConfig) -> None:
    """Everything for a batch that passed preparation; raises on any failure."""
    _run_model(vlm, items, config)
    for it in items:
        _check_stats(it)
    if not config.parse_statements:
        from mmboundary.text.steps import split_steps

        all_steps = [split_steps(it.text) for it in items]
    else:
        if parser is None:
            from mmboundary.text import default_parser

            parser = default_parser()
        all_steps = parser.parse_many([it.text for it in items])
    for it, steps in zip(items, all_steps, strict=True):
        it.steps = steps
    pairs = [(it, *p) for it in items for p in _step_inputs(it)]
    scores = estimate([p[2] for p in pairs], config.estimators, similarity=similarity,
                      clip=clip, include_question=config.include_question)
    for i, (it, step, _) in enumerate(pairs):
        step.raw_scores = {name: float(values[i]) for name, values in scores.items()}
        if not all(math.isfinite(v) for v in step.raw_scores.values()):
            raise _fail(it, "non_finite", f"step {step.index} has raw scores {step.raw_scores}",
                        f"steps[{step.index}].raw_scores")


def _response(vlm: Any, item: _Item, config: EstimateConfig, error: SampleError | None) -> Response:
    meta = dict(item.meta)
    if item.image_key is not None:
        meta["image"] = item.image_key
    if error is not None:
        meta.update(error.failure.to_meta())
        return Response(sample_id=item.sample.id, text=item.text, model=vlm.name, meta=meta)
    return Response(sample_id=item.sample.id, text=item.text, model=vlm.name, steps=item.steps,
                    token_stats=item.stats if config.keep_token_stats else None, meta=meta)


def _check_models(config: EstimateConfig, similarity: Any, clip: Any) -> None:
    if "tokensar" in config.estimators and similarity is None:
        raise ValueError("estimator 'tokensar' needs a similarity model (similarity=None); "
                         "pass one or drop it from estimators")
    if "clips" in config.estimators and clip is None:
        raise ValueError("estimator 'clips' needs a CLIP scorer (clip=None); pass one or drop it "
                         "from estimators")


def _as_sample_error(item: _Item, err: Exception) -> SampleError:
    if isinstance(err, SampleError):
        return err
    return SampleError(item.sample.id, "error", f"{type(err).__name__}: {err}", "<model pass>")


def estimate_batch(vlm: Any, samples: Sequence[Sample],
                   responses: Sequence[str | Response | None] | None = None, *, similarity: Any, clip: Any,
                   parser: Any = None, image_loader: Callable[[Sample], tuple[Any, str]] | None = None,
                   config: EstimateConfig | None = None) -> list[Response]:
    """Raw step scores for a batch of samples, one ``Response`` each, in order.

    ``responses[i]``: None = generate; a string = score that text in ONE teacher-forced pass; a
    ``Response`` with ``token_stats`` (e.g. a ``mmboundary generate`` line) = reuse its
    statistics (no VLM pass; the image is still loaded for CLIPS).

    A failing sample (missing image, empty response, NaN statistics, no scorable step, any error
    in its pass) gives a ``Response`` whose ``meta["error"]`` / ``meta["error_reason"]`` say why;
    the others are unaffected (a batch that fails as a whole is redone sample by sample).
    """
    config = config or EstimateConfig()
    _check_models(config, similarity, clip)
    loader = image_loader or default_image_loader()
    responses = list(responses) if responses is not None else [None] * len(samples)
    items = [_Item(sample=s, response=r.text, stats=r.token_stats) if isinstance(r, Response)
             else _Item(sample=s, response=r) for s, r in zip(samples, responses, strict=True)]
    for it in items:
        it.text = it.response or ""
    errors: dict[int, SampleError] = {}
    for i, it in enumerate(items):
        try:
            _prepare(vlm, it, loader, config)
        except SampleError as err:
            errors[i] = err
    ready = [i for i in range(len(items)) if i not in errors]
    try:
        if ready:
            _estimate_items(vlm, [items[i] for i in ready], similarity=similarity, clip=clip,
                            parser=parser, config=config)
    except Exception as err:  # noqa: BLE001 - record the failing sample and go on
        if len(ready) == 1:
            errors[ready[0]] = _as_sample_error(items[ready[0]], err)
        else:
            redo = {i: estimate_batch(vlm, [samples[i]], [responses[i]],
                                      similarity=similarity, clip=clip, parser=parser,
                                      image_loader=loader, config=config)[0] for i in ready}
            return [redo[i] if i in redo else _response(vlm, it, config, errors[i])
                    for i, it in enumerate(items)]
    return [_response(vlm, it, config, errors.get(i)) for i, it in enumerate(items)]


def estimate_steps(vlm: Any, sample: Sample, response: str | Response | None = None, *,
                   similarity: Any, clip: Any, calibrator: ConfidenceCalibrator | None = None, parser: Any = None,
                   image_loader: Callable[[Sample], tuple[Any, str]] | None = None,
                   config: EstimateConfig | None = None) -> Response:
    """One sample's ``Response`` with each step's ``raw_scores`` {"lnlp", "mte", "tokensar",
    "clips"} and, with a fitted ``calibrator``, ``normalized_scores``, ``confidence``, ``level``.

    Generates the response when ``response`` is None, else scores the given text
    (``VLM.score``). Raises ``SampleError`` (with its reason) when the sample cannot be scored.
    """
    result = estimate_batch(vlm, [sample], [response], similarity=similarity, clip=clip,
                            parser=parser, image_loader=image_loader, config=config)[0]
    failure = failure_from_meta(sample.id, result.meta)
    if failure is not None:
        raise SampleError(sample.id, failure.reason, failure.message, failure.field)
    if calibrator is not None:
        apply_calibrator([result], calibrator)
    return result




# ---------------------------------------------------------------------------------------------
# Whole files: resumable JSONL, then the calibrator and an atomic final rewrite.
# ---------------------------------------------------------------------------------------------


def _failure_line(vlm: Any, sample_id: str, failure: RecordFailure) -> Response:
    return Response(sample_id=sample_id, text="", model=vlm.name, meta=failure.to_meta())


def _run_batch(vlm: Any, batch: list[Sample], texts: list[Any] | None, *,
               on_failure: Callable[[RecordFailure], None] | None, **kwargs: Any) -> list[Response]:
    """One ``Response`` per sample of ``batch`` (a failure line for a sample without a usable
    response text: ``texts[i]`` None or a ``RecordFailure``)."""
    failures: dict[str, RecordFailure] = {}
    for i, s in enumerate(batch):
        text = None if texts is None else texts[i]
        if texts is not None and text is None:
            failures[s.id] = RecordFailure(s.id, "response", "missing_response",
                                           "no response text given for it")
        elif isinstance(text, RecordFailure):
            failures[s.id] = text
    have = [i for i, s in enumerate(batch) if s.id not in failures]
    results = estimate_batch(vlm, [batch[i] for i in have],
                             None if texts is None else [texts[i] for i in have],
                             **kwargs) if have else []
    by_id = {r.sample_id: r for r in results}
    out = [by_id[s.id] if s.id in by_id else _failure_line(vlm, s.id, failures[s.id])
           for s in batch]
    for r in out:
        failure = failure_from_meta(r.sample_id, r.meta)
        if failure is not None and on_failure is not None:
            on_failure(failure)
    return out


def estimate_dataset(vlm: Any, samples: Sequence[Sample], out: str | Path, *,
                     similarity: Any, clip: Any,
                     responses: Mapping[str, str | Response | RecordFailure] | None = None,
                     calibrator: ConfidenceCalibrator | None = None,
                     template: ConfidenceCalibrator | None = None, parser: Any = None,
                     image_loader: Callable[[Sample], tuple[Any, str]] | None = None,
                     config: EstimateConfig | None = None, num_shards: int = 1,
                     shard_index: int = 0, limit: int | None = None, progress: bool = True,
                     finalize: bool | None = None,
                     on_failure: Callable[[RecordFailure], None] | None = None,
                     label_steps: Callable[[Sequence[Response]], list[list[float | None]]]
                     | None = None) -> EstimateSummary:
    """Score ``samples`` into the JSONL ``out`` (one ``Response`` line per sample, by id).

    Resumable: samples already in ``out`` are skipped (a torn last line from a kill is cut; a
    file that is not an output of ours is refused, ``ForeignFileError``, and left unchanged);
    each line is flushed and fsynced. ``responses`` maps sample id -> text to score instead of
    generating (a sample without one is recorded as ``missing_response``; a ``RecordFailure``
    value is recorded as it is). ``limit`` keeps the first samples, then
    ``num_shards``/``shard_index`` keeps this shard's (stable hash of the id).
    A failing sample is a line with ``meta["error"]`` (``on_failure`` is called with it) and the
    run goes on. ``finalize`` (default: unsharded runs, or whenever ``calibrator`` is given) fits
    or applies the calibrator (``finalize_output``) -- skipped, with ``finalized`` False, when no
    line of ``out`` succeeded; sharded runs are finalised by ``merge_outputs``. ``label_steps``:
    the steps' correctness for a template with the ``accuracy`` level rule (``finalize_output``).
    """
    from tqdm.auto import tqdm

    from mmboundary.data.io import JsonlWriter, shard

    config = config or EstimateConfig()
    _check_models(config, similarity, clip)
    out = Path(out)
    chosen = shard(list(samples)[:limit], num_shards, shard_index, key=lambda s: s.id)
    summary = EstimateSummary(out=str(out), total=len(chosen), skipped=0, written=0)
    models = dict(similarity=similarity, clip=clip, parser=parser, image_loader=image_loader,
                  config=config)
    with JsonlWriter(out, id_key="sample_id", failed=lambda r: "error" in (r.get("meta") or {})
                     ) as writer:
        todo = [s for s in chosen if s.id not in writer.done_ids]
        summary.skipped = len(chosen) - len(todo)
        bar = tqdm(total=len(todo), desc="estimate", unit="sample", disable=not progress)
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start:start + config.batch_size]
            texts = None if responses is None else [responses.get(s.id) for s in batch]
            for record in _run_batch(vlm, batch, texts, on_failure=on_failure, **models):
                summary.written += int(writer.write(record))
            bar.update(len(batch))
        bar.close()
        any_ok = writer.ok_lines > 0
    wanted = finalize if finalize is not None else (num_shards == 1 or calibrator is not None)
    if wanted and any_ok:
        finalize_output(out, calibrator, template=template, label_steps=label_steps)
        summary.finalized = True
        summary.calibrator = None if calibrator is not None else str(calibrator_path_for(out))
    return summarize_output(summary, out)
