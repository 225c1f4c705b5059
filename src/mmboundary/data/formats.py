"""One converter per annotated-file format: a raw record -> ``Sample``, with problems reported.

Field mapping (see docs/DATA.md for the full table):

- A-OKVQA: ``question_id`` -> id, ``choices``/``correct_choice_idx`` kept, ``answers`` = [correct
  choice], ``direct_answers`` = the 10 annotator answers, ``image_id`` = the COCO id.
- CulturalVQA: ``id`` -> id (and image id), gold answer = the answer stated by the last reference
  step (the file has no gold field), ``general_output`` kept in ``meta``; ``image_info`` (a stray
  Python repr, not an image) dropped.
- ScienceQA: ``id``/``pid``/dict key -> id, ``choices`` + ``answer`` (index, letter or choice
  text) -> ``correct_choice_idx``; ``hint``, ``lecture``, ``solution`` ... kept in ``meta``.
- ``sample``: our own ``Sample.model_dump(mode="json")`` lines (ShapesWorld, annotate output).

A broken field raises ``RecordError`` (the loader turns it into an error ``Problem``); tolerated
quirks are notices recorded through ``RecordContext.notice``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from mmboundary.data.schema import ReferenceChain, Sample, extract_answer

Severity = Literal["error", "notice"]
DATASETS = ("aokvqa", "culturalvqa", "scienceqa", "sample")
_ALIASES = {"okvqa": "aokvqa", "aok": "aokvqa", "cvqa": "culturalvqa", "cultural": "culturalvqa",
            "sqa": "scienceqa", "ours": "sample", "samples": "sample", "mmboundary": "sample"}
_QUOTE_RE = re.compile(r"answer\s+is\s*:?\s*['\"`\u2018\u2019\u201c\u201d]", re.IGNORECASE)
_COMMA_RE = re.compile(r"\bso\s*,", re.IGNORECASE)
_LEVEL_KEYS = {"imagelevel": "image_level", "reasoninglevel": "reasoning_level"}


@dataclass
class Problem:
    """Something wrong with one record (or the file): ``severity`` "error" = the record was not
    loaded; "notice" = a tolerated quirk. ``index`` is the 0-based record position (JSONL: line - 1).
    """

    file: str
    index: int | None
    record_id: str | None
    field: str
    message: str
    severity: Severity = "error"
    kind: str = "invalid_field"

    def __str__(self) -> str:
        where = f"record {self.index}" if self.index is not None else "file"
        rid = f" (id {self.record_id!r})" if self.record_id is not None else ""
        return f"{self.severity}: {self.file}: {where}{rid}: field {self.field!r}: {self.message}"


class RecordError(ValueError):
    """A field that breaks the format: the record cannot be loaded."""

    def __init__(self, field: str, message: str, kind: str = "invalid_field") -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
        self.kind = kind


@dataclass
class RecordContext:
    """Where a record came from, and the list its notices go to."""

    file: str
    index: int | None
    record_id: str | None
    problems: list[Problem] = field(default_factory=list)

    def notice(self, field_name: str, message: str, kind: str) -> None:
        self.problems.append(Problem(self.file, self.index, self.record_id, field_name, message,
                                     "notice", kind))

    def error(self, err: RecordError) -> None:
        self.problems.append(Problem(self.file, self.index, self.record_id, err.field,
                                     err.message, "error", err.kind))


def normalize_dataset_name(name: str) -> str:
    """``"A-OKVQA"`` -> ``"aokvqa"``; raises ValueError for an unknown name."""
    key = re.sub(r"[^a-z0-9]", "", name.lower())
    key = _ALIASES.get(key, key)
    if key not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    return key


def detect_dataset(record: dict[str, Any]) -> str | None:
    """Guess a record's format from its field names (None when nothing fits)."""
    keys = set(record)
    if {"id", "dataset", "question"} <= keys and not keys & {"keys", "keys_filtered"}:
        return "sample"
    if "question_id" in keys and keys & {"correct_choice_idx", "direct_answers"}:
        return "aokvqa"
    if keys & {"general_output", "image_info"}:
        return "culturalvqa"
    if keys & {"lecture", "solution", "hint"} or {"choices", "answer"} <= keys:
        return "scienceqa"
    if {"choices", "correct_choice_idx"} <= keys:
        return "aokvqa"
    if "question" in keys and keys & {"keys", "keys_filtered"}:
        return "culturalvqa"
    return None


def _describe(value: Any) -> str:
    text = repr(value)
    return f"{type(value).__name__} {text[:60]}{'...' if len(text) > 60 else ''}"


def get_str(record: dict[str, Any], name: str, required: bool = True) -> str | None:
    """A non-empty string field (None when absent and not required)."""
    if name not in record or record[name] is None:
        if required:
            raise RecordError(name, "missing; expected a non-empty string", "missing_field")
        return None
    value = record[name]
    if not isinstance(value, str):
        raise RecordError(name, f"expected a string, got {_describe(value)}")
    if required and not value.strip():
        raise RecordError(name, "expected a non-empty string, got an empty one")
    return value.strip()


def get_str_list(record: dict[str, Any], name: str, required: bool = False) -> list[str] | None:
    """A list-of-strings field (None when absent and not required)."""
    if name not in record or record[name] is None:
        if required:
            raise RecordError(name, "missing; expected a list of strings", "missing_field")
        return None
    value = record[name]
    if not isinstance(value, list):
        raise RecordError(name, f"expected a list of strings, got {_describe(value)}")
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise RecordError(f"{name}[{i}]", f"expected a string, got {_describe(item)}")
    return list(value)


def get_id(record: dict[str, Any], names: tuple[str, ...], key: str | None) -> str | None:
    """The first of ``names`` present as a string or integer, else the dict key, else None."""
    for name in names:
        value = record.get(name)
        if isinstance(value, str) and value.strip():
            return value.strip()
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        if value is not None:
            raise RecordError(name, f"expected a string or integer id, got {_describe(value)}")
    return key


def parse_chain(value: Any, name: str, ctx: RecordContext) -> ReferenceChain:
    """``{"Image_level": [...], "Reasoning_level": [...]}`` -> ReferenceChain (keys matched
    case- and separator-insensitively; a missing level is a notice, a wrong type an error)."""
    if not isinstance(value, dict):
        raise RecordError(name, f"expected an object with Image_level and Reasoning_level lists, "
                                f"got {_describe(value)}")
    levels: dict[str, list[str]] = {}
    for key in value:
        level = _LEVEL_KEYS.get(re.sub(r"[^a-z]", "", str(key).lower()))
        if level is None:
            ctx.notice(f"{name}.{key}", "unknown chain level ignored", "unknown_chain_key")
            continue
        items = get_str_list(value, key, required=True) or []
        kept = [s.strip() for s in items if s.strip()]
        if len(kept) < len(items):
            ctx.notice(f"{name}.{key}", f"{len(items) - len(kept)} empty step(s) dropped",
                       "empty_step")
        levels[level] = kept
    for level, label in (("image_level", "Image_level"), ("reasoning_level", "Reasoning_level")):
        if level not in levels:
            ctx.notice(f"{name}.{label}", f"no {label} in {name}: treated as no steps",
                       f"missing_{level}")
    return ReferenceChain(**levels)


@dataclass(frozen=True)
class AnswerForm:
    """How a chain states its answer: ``form`` is "comma" ("So, the answer is"), "no_comma"
    ("So the answer is") or "missing"; ``quoted``: the answer is in quotes; ``last``: it is the
    last reasoning step."""

    form: Literal["comma", "no_comma", "missing"]
    quoted: bool = False
    last: bool = True


def answer_form(chain: ReferenceChain | None) -> AnswerForm:
    """Classify the answer step the way ``ReferenceChain.answer`` finds it (last one stating X)."""
    steps = chain.reasoning_level if chain is not None else []
    for position in range(len(steps) - 1, -1, -1):
        step = steps[position]
        if extract_answer(step) is not None:
            form = "comma" if _COMMA_RE.search(step) else "no_comma"
            return AnswerForm(form, bool(_QUOTE_RE.search(step)), position == len(steps) - 1)
    return AnswerForm("missing")


def _answer_notices(chain: ReferenceChain, name: str, ctx: RecordContext) -> None:
    form = answer_form(chain)
    field_name = f"{name}.Reasoning_level"
    if form.form == "missing":
        last = chain.reasoning_level[-1] if chain.reasoning_level else "(no reasoning steps)"
        ctx.notice(field_name, f"no step states 'So, the answer is X'; last step: {last[:80]!r}",
                   "no_answer_step")
        return
    if form.form == "no_comma":
        ctx.notice(field_name, "answer step reads 'So the answer is' (no comma)", "answer_no_comma")
    if form.quoted:
        ctx.notice(field_name, f"quoted answer {chain.answer!r} (quotes removed)", "quoted_answer")
    if not form.last:
        ctx.notice(field_name, "the answer step is not the last reasoning step", "answer_not_last")


def reference_chain(record: dict[str, Any], reference: str, ctx: RecordContext
                    ) -> ReferenceChain | None:
    """The chain under ``reference`` ("keys_filtered" or "keys"), falling back to the other one
    with a notice; None (with a notice) when the record has neither."""
    other = "keys" if reference == "keys_filtered" else "keys_filtered"
    name = reference
    if record.get(reference) is None:
        if record.get(other) is None:
            ctx.notice(reference, "no reference chain (neither keys_filtered nor keys)",
                       "no_reference")
            return None
        ctx.notice(reference, f"missing; using {other} instead", "reference_fallback")
        name = other
    chain = parse_chain(record[name], name, ctx)
    _answer_notices(chain, name, ctx)
    return chain


Converter = Callable[[dict[str, Any], RecordContext, str], Sample]


def convert_aokvqa(record: dict[str, Any], ctx: RecordContext, reference: str) -> Sample:
    """A-OKVQA: answers = [correct choice], direct_answers = the 10 annotator answers."""
    question = get_str(record, "question")
    choices = get_str_list(record, "choices", required=True) or []
    idx = record.get("correct_choice_idx")
    answers: list[str] = []
    if idx is None:
        ctx.notice("correct_choice_idx", "missing (test split?): no gold choice", "no_gold")
    elif isinstance(idx, bool) or not isinstance(idx, int) or not 0 <= idx < len(choices):
        raise RecordError("correct_choice_idx",
                          f"expected an integer in [0, {len(choices)}), got {_describe(idx)}")
    else:
        answers = [choices[idx]]
    image_id = get_id(record, ("image_id",), None)
    meta = {k: record[k] for k in ("split", "difficult_direct_answer", "rationales")
            if k in record}
    return Sample(id=ctx.record_id or "", dataset="aokvqa", question=question or "",
                  choices=choices, correct_choice_idx=idx, answers=answers,
                  direct_answers=get_str_list(record, "direct_answers") or [],
                  image_id=image_id, reference=reference_chain(record, reference, ctx), meta=meta)


def _stated_answer(text: str | None) -> str | None:
    if not text:
        return None
    part = text.rsplit("Answer:", 1)[-1]
    return extract_answer(part.strip().splitlines()[0] if part.strip() else part)


def convert_culturalvqa(record: dict[str, Any], ctx: RecordContext, reference: str) -> Sample:
    """CulturalVQA: gold answer = the answer stated by the last reference step (or a given
    ``answer``/``answers`` field); ``general_output`` and its stated answer kept in meta."""
    question = get_str(record, "question")
    chain = reference_chain(record, reference, ctx)
    single = get_str(record, "answer", required=False)
    given = get_str_list(record, "answers") or ([single] if single else [])
    answers = given or ([chain.answer] if chain is not None and chain.answer else [])
    if not answers:
        ctx.notice("answers", "no gold answer (no answer field, no answer step)", "no_gold")
    general = get_str(record, "general_output", required=False)
    meta: dict[str, Any] = {"answer_source": "field" if given else "reference"}
    if general is not None:
        meta.update(general_output=general, general_output_answer=_stated_answer(general))
    return Sample(id=ctx.record_id or "", dataset="culturalvqa", question=question or "",
                  answers=answers, image_id=ctx.record_id, reference=chain, meta=meta)


def _choice_index(value: Any, choices: list[str]) -> int:
    """ScienceQA's answer as an index: an int, a digit string, a letter A.. or the choice text."""
    if isinstance(value, int) and not isinstance(value, bool):
        idx = value
    elif isinstance(value, str) and value.strip().isdigit():
        idx = int(value.strip())
    elif isinstance(value, str) and value.strip() in choices:
        idx = choices.index(value.strip())
    elif isinstance(value, str) and len(value.strip()) == 1 and value.strip().isalpha():
        idx = ord(value.strip().upper()) - ord("A")
    else:
        idx = -1
    if not 0 <= idx < len(choices):
        raise RecordError("answer", f"expected a choice index in [0, {len(choices)}), a letter or "
                                    f"a choice text, got {_describe(value)}")
    return idx


_SCIENCEQA_META = ("hint", "lecture", "solution", "subject", "topic", "category", "skill",
                   "grade", "task", "split")


def convert_scienceqa(record: dict[str, Any], ctx: RecordContext, reference: str) -> Sample:
    """ScienceQA: ``answer`` (index) -> correct_choice_idx; hint/lecture/solution in meta;
    ``image`` (a file name, or null for text-only questions) -> image_id = the record id."""
    question = get_str(record, "question")
    choices = get_str_list(record, "choices", required=True) or []
    if "answer" not in record:
        raise RecordError("answer", "missing; expected the index of the correct choice",
                          "missing_field")
    idx = _choice_index(record["answer"], choices)
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise RecordError("image", f"expected a file name or null, got {_describe(image)}")
    meta = {k: record[k] for k in _SCIENCEQA_META if record.get(k) not in (None, "")}
    if image:
        meta["image_file"] = image
    else:
        ctx.notice("image", "no image (text-only question)", "no_image")
    return Sample(id=ctx.record_id or "", dataset="scienceqa", question=question or "",
                  choices=choices, correct_choice_idx=idx, answers=[choices[idx]],
                  image_id=ctx.record_id if image else None,
                  reference=reference_chain(record, reference, ctx), meta=meta)


def convert_sample(record: dict[str, Any], ctx: RecordContext, reference: str) -> Sample:
    """Our own Sample JSON (``model_dump(mode="json")``), validated by pydantic."""
    try:
        sample = Sample.model_validate(record)
    except ValidationError as err:
        first = err.errors()[0]
        loc = ".".join(str(part) for part in first["loc"]) or "<record>"
        detail = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise RecordError(loc, f"not a valid Sample: {detail}") from None
    if sample.reference is not None:
        _answer_notices(sample.reference, "reference", ctx)
    return sample


CONVERTERS: dict[str, Converter] = {
    "aokvqa": convert_aokvqa, "culturalvqa": convert_culturalvqa,
    "scienceqa": convert_scienceqa, "sample": convert_sample,
}
ID_FIELDS: dict[str, tuple[str, ...]] = {
    "aokvqa": ("question_id", "id"), "culturalvqa": ("id", "question_id"),
    "scienceqa": ("id", "pid", "question_id"), "sample": ("id",),
}
