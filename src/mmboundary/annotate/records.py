"""One sample through the two annotation passes, into one output record with review flags.

Two output forms, both read by ``mmboundary.data.loaders.load_annotated``:

- ``annotated`` (the input was a raw record, e.g. the authors' A-OKVQA / CulturalVQA / ScienceQA
  format): the input record's fields + ``sample_id`` + ``keys`` (pass 1, the raw chain) +
  ``keys_filtered`` (pass 2, the reference), both in the authors' ``{"Image_level": [...],
  "Reasoning_level": [...]}`` form, + ``needs_review`` / ``review_reasons`` + ``annotation``
  (status, model, replies, error).
- ``sample`` (the input was our own ``Sample``): a valid ``Sample`` JSON whose ``reference`` is the
  filtered chain (None when there is none) and whose ``meta`` holds ``keys``, ``needs_review``,
  ``review_reasons`` and ``annotation`` (``Sample`` forbids other top-level fields).

Review reasons (a record is flagged when any applies; thresholds are **ours**, configurable):
``answer disagreement`` (the last step's answer, normalised, matches no gold answer), ``no answer
step``, ``too few steps``, ``unparseable reply``, ``reply truncated``, ``no gold answer``,
``request failed``, ``image missing``, ``image unreadable``. ``annotation.status`` is ``ok``,
``flagged`` or ``failed`` (no usable reply: request failed, image missing or unreadable; a rerun
tries ``failed`` records again).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmboundary.annotate.client import ChatBackend, ChatError, ChatReply, ChatRequest, ImagePayload
from mmboundary.annotate.prompts import (
    ChainParseError,
    PromptSet,
    answer_agrees,
    chain_answer,
    filter_messages,
    generate_messages,
    gold_answers,
    parse_chain_reply,
)
from mmboundary.data.images import BadImageError, check_image
from mmboundary.data.redact import redact_text
from mmboundary.data.schema import ReferenceChain, Sample


@dataclass
class AnnotateConfig:
    """Every knob of an annotation run, with its default.

    ``min_image_steps`` / ``min_reasoning_steps`` (answer step included) are **ours**: fewer steps
    flag the record. ``abort_after_auth_failures``: that many consecutive requests failing for a
    reason every other record would share (401/403 key, 404 model or URL, server unreachable or
    unavailable after the retries) stop the run. Prices are USD per 1M tokens; ``None``
    reports tokens only.
    """

    temperature: float = 0.0
    max_tokens: int = 1024
    json_mode: bool = False
    concurrency: int = 4
    min_image_steps: int = 1
    min_reasoning_steps: int = 2
    image_max_side: int | None = None
    abort_after_auth_failures: int = 3
    retry_failed: bool = True
    price_input_per_m: float | None = None
    price_output_per_m: float | None = None

    def params(self) -> dict[str, Any]:
        """Sampling parameters sent with every request (and part of the cache key)."""
        params: dict[str, Any] = {"temperature": self.temperature, "max_tokens": self.max_tokens}
        if self.json_mode:
            params["response_format"] = {"type": "json_object"}
        return params


@dataclass
class AnnotationItem:
    """A sample to annotate: ``record`` is the input record echoed to the output (None: the
    sample's own JSON); ``image`` a path or PIL image (None: ``sample.image``)."""

    sample: Sample
    record: dict[str, Any] | None = None
    image: Any = None


@dataclass
class Outcome:
    """What annotating one item produced: the flags, chains and notes (``result``), the replies
    (for usage), the error kind, and the output ``record`` (set by ``annotate_item``)."""

    result: dict[str, Any]
    replies: list[ChatReply] = field(default_factory=list)
    error_kind: str | None = None
    record: dict[str, Any] = field(default_factory=dict)


def empty_chain() -> dict[str, list[str]]:
    return {"Image_level": [], "Reasoning_level": []}


def output_form(items: list[AnnotationItem]) -> str:
    """``sample`` when every item is a bare Sample (no input record), else ``annotated``."""
    return "sample" if all(item.record is None for item in items) else "annotated"


def record_id_key(form: str) -> str:
    """The output field that holds the sample id (what resumption keys on)."""
    return "id" if form == "sample" else "sample_id"


def annotation_of(record: dict[str, Any]) -> dict[str, Any]:
    """The ``annotation`` block of an output record of either form."""
    return record.get("annotation") or record.get("meta", {}).get("annotation") or {}


def output_record(item: AnnotationItem, result: dict[str, Any], form: str) -> dict[str, Any]:
    """The line written for ``item`` (see the module docstring for the two forms)."""
    flags = {"needs_review": result["needs_review"], "review_reasons": result["review_reasons"]}
    if form == "sample":
        filtered = result["keys_filtered"]
        reference = None
        if filtered["Image_level"] or filtered["Reasoning_level"]:
            reference = ReferenceChain(image_level=filtered["Image_level"],
                                       reasoning_level=filtered["Reasoning_level"])
        sample = item.sample.model_copy(update={
            "reference": reference,
            "meta": {**item.sample.meta, "keys": result["keys"], **flags,
                     "annotation": result["annotation"]}})
        return sample.model_dump(mode="json")
    base = dict(item.record) if item.record is not None else item.sample.model_dump(
        mode="json", exclude={"reference"})
    for key in ("keys", "keys_filtered", "needs_review", "review_reasons", "annotation"):
        base.pop(key, None)
    return {**base, "sample_id": item.sample.id, "keys": result["keys"],
            "keys_filtered": result["keys_filtered"], **flags,
            "annotation": result["annotation"]}


def chain_review_reasons(chain: ReferenceChain, sample: Sample, config: AnnotateConfig) -> list[str]:
    """Why a parsed chain needs a human look (empty: it does not)."""
    reasons = []
    golds = gold_answers(sample)
    stated = chain_answer(chain)
    if stated is None:
        last = chain.reasoning_level[-1] if chain.reasoning_level else ""
        reasons.append(f"no answer step: the last step {last!r} does not say 'So, the answer is X'")
    elif not golds:
        reasons.append(f"no gold answer: the chain's answer {stated!r} cannot be checked")
    elif not answer_agrees(stated, golds):
        reasons.append(f"answer disagreement: the chain says {stated!r}, gold is {golds[0]!r}")
    if len(chain.image_level) < config.min_image_steps:
        reasons.append(f"too few steps: {len(chain.image_level)} Image_level "
                       f"(expected >= {config.min_image_steps})")
    if len(chain.reasoning_level) < config.min_reasoning_steps:
        reasons.append(f"too few steps: {len(chain.reasoning_level)} Reasoning_level "
                       f"(expected >= {config.min_reasoning_steps}, answer step included)")
    return reasons


def _image(item: AnnotationItem, config: AnnotateConfig) -> ImagePayload:
    source = item.image if item.image is not None else item.sample.image
    if source is None:
        raise FileNotFoundError(f"record {item.sample.id!r}: no image (field 'image' is empty)")
    if isinstance(source, (str, Path)) and not Path(source).is_file():
        raise FileNotFoundError(f"record {item.sample.id!r}: image {source} does not exist")
    if isinstance(source, (str, Path)):
        check_image(source, item.sample.id)  # BadImageError: never send a broken file
    return ImagePayload.from_source(source, config.image_max_side)


class _Pass:
    """Runs one pass and records its reply, usage and problems on the outcome."""

    def __init__(self, outcome: Outcome, backend: ChatBackend, image: ImagePayload,
                 config: AnnotateConfig, reasons: list[str]) -> None:
        self.outcome, self.backend, self.image = outcome, backend, image
        self.config, self.reasons = config, reasons

    def __call__(self, name: str, messages: list[dict[str, Any]]) -> ReferenceChain | None:
        request = ChatRequest(messages, self.image, self.config.params())
        reply = self.backend.complete(request)  # ChatError propagates: the record fails
        self.outcome.replies.append(reply)
        self.outcome.result["annotation"]["replies"][name] = reply.text
        if reply.finish_reason == "length":
            self.reasons.append(f"reply truncated: the {name} reply hit max_tokens "
                                f"({self.config.max_tokens})")
        try:
            return parse_chain_reply(reply.text)
        except ChainParseError as err:
            self.reasons.append(f"unparseable reply ({name} pass): {err}")
            return None


def annotate_item(item: AnnotationItem, backend: ChatBackend, prompts: PromptSet,
                  config: AnnotateConfig, form: str = "annotated") -> Outcome:
    """Pass 1 (generate) then pass 2 (filter/correct); never raises for one record's problem."""
    outcome = _annotate(item, backend, prompts, config)
    outcome.record = output_record(item, outcome.result, form)
    return outcome


def _annotate(item: AnnotationItem, backend: ChatBackend, prompts: PromptSet,
              config: AnnotateConfig) -> Outcome:
    sample = item.sample
    annotation: dict[str, Any] = {"status": "ok", "backend": backend.kind, "model": backend.model,
                                  "gold_answer": sample.gold_answer, "replies": {}, "error": None}
    result = {"keys": empty_chain(), "keys_filtered": empty_chain(), "needs_review": False,
              "review_reasons": [], "annotation": annotation}
    outcome = Outcome(result)
    reasons: list[str] = result["review_reasons"]
    try:
        image = _image(item, config)
    except BadImageError as err:
        return _failed(outcome, "image", f"image unreadable: {err}")
    except (OSError, ValueError) as err:
        return _failed(outcome, "image", f"image missing: {err}")
    run_pass = _Pass(outcome, backend, image, config, reasons)
    try:
        draft = run_pass("generate", generate_messages(sample, prompts))
        if draft is not None:
            result["keys"] = draft.to_annotated()
            final = run_pass("filter", filter_messages(sample, draft, prompts))
            if final is not None:
                result["keys_filtered"] = final.to_annotated()
                annotation["stated_answer"] = chain_answer(final)
                reasons.extend(chain_review_reasons(final, sample, config))
    except ChatError as err:
        return _failed(outcome, err.kind, f"request failed: {err}")
    if reasons:
        result["needs_review"] = True
        annotation["status"] = "flagged"
    return outcome


def _failed(outcome: Outcome, kind: str, message: str) -> Outcome:
    message = redact_text(message)  # the output must never hold a credential
    outcome.result["needs_review"] = True
    outcome.result["review_reasons"].append(message)
    outcome.result["annotation"].update(status="failed", error=message, error_kind=kind)
    outcome.error_kind = kind
    return outcome
