"""Stage-1 training data: the vanilla model's own responses with a statement after every step.

METHOD.md section 5. Input: the estimate output (one ``Response`` per line, its steps carrying a
``level`` in 1..5) and the samples it answered. For each response:

- prompt = image + ``question_prompt(sample)`` (question, lettered choices, instruction), as one
  user turn in the HF chat format; the model's own chat template renders it at training time;
- target = the response text with, after each step's content, the level's statement sampled
  uniformly from the bank (seeded; ``mode="numeric"``: "(confidence 0.7)" with the level's value,
  the "w/o S-S mapping" ablation) -- ``insert_confidence``.

Outputs (``save_sft_dataset``): ``<out>/hf`` = a ``datasets`` dataset in TRL's conversational format
with images (``{"id", "messages", "images": [PIL]}``), ``<out>/records.jsonl`` (the same with image
paths, for reading and for the LLaMA-Factory export) and ``<out>/summary.json``.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from mmboundary.data.schema import Response, Sample
from mmboundary.text.statements import Mode, StatementBank, default_bank, insert_confidence

_FINAL = ".!?\u2026"


@dataclass
class SFTRecord:
    """One training example: the chat messages and the image file(s) of the user turn."""

    id: str
    messages: list[dict[str, Any]]
    images: list[str]
    levels: list[int] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class SFTDataSummary:
    """What ``build_sft_records`` kept and skipped."""

    records: int = 0
    steps: int = 0
    levels: dict[int, int] = field(default_factory=dict)
    skipped_failed: int = 0
    skipped_empty: int = 0
    mode: str = "statement"
    seed: int = 0


def step_with_confidence(response: Response, step_index: int, level: int, rng: random.Random,
                         mode: Mode, bank: StatementBank) -> str:
    """The step's content (any statement it already had removed, punctuation kept) + a new one."""
    step = response.steps[step_index]
    text = response.text[step.start:step.end]
    if step.content_end is not None and step.content_end < step.end:
        tail = text.rstrip()
        punct = tail[len(tail.rstrip(_FINAL)):] or "."
        text = response.text[step.start:step.content_end].rstrip(" ,;:") + punct
    return insert_confidence(text, level, rng, mode=mode, bank=bank)


def response_with_confidence(response: Response, rng: random.Random, *, mode: Mode = "statement",
                             bank: StatementBank | None = None) -> tuple[str, list[int]]:
    """The response text with each step followed by the statement of its ``level``.

    The text between steps (spaces, newlines, list markers) is kept as it is. Raises
    ``ValueError`` naming the sample and step when a step has no level (run ``estimate`` first).
    """
    bank = bank or default_bank()
    order = sorted(range(len(response.steps)), key=lambda i: response.steps[i].start)
    pieces, levels, cursor = [], [], 0
    for i in order:
        step = response.steps[i]
        if step.level is None:
            raise ValueError(f"response {response.sample_id!r}: step {step.index} "
                             f"({step.text[:40]!r}) has no 'level'; expected the estimate output "
                             "(mmboundary estimate), whose steps carry levels 1..5")
        pieces.append(response.text[cursor:step.start])
        pieces.append(step_with_confidence(response, i, step.level, rng, mode, bank))
        levels.append(step.level)
        cursor = step.end
    pieces.append(response.text[cursor:])
    return "".join(pieces).strip(), levels


def sft_messages(prompt: str, target: str) -> list[dict[str, Any]]:
    """TRL conversational messages: the user turn (image first, then the prompt) and the target."""
    return [
        {"role": "user", "content": [{"type": "image", "text": None},
                                     {"type": "text", "text": prompt}]},
        {"role": "assistant", "content": [{"type": "text", "text": target}]},
    ]


def build_sft_records(responses: Sequence[Response], samples: Sequence[Sample], *,
                      images_dir: str | Path | None = None, mode: Mode = "statement",
                      seed: int = 0, bank: StatementBank | None = None,
                      instruction: str | None = None) -> tuple[list[SFTRecord], SFTDataSummary]:
    """One ``SFTRecord`` per usable response (failed or step-less responses are skipped and
    counted). Statements are drawn with ``random.Random(f"{seed}:{sample_id}")``, so a record does
    not depend on the order or the subset of the input."""
    from mmboundary.data.images import resolve_image
    from mmboundary.models.prompts import question_prompt

    by_id = {s.id: s for s in samples}
    summary = SFTDataSummary(mode=mode, seed=seed)
    records: list[SFTRecord] = []
    levels: Counter[int] = Counter()
    for response in responses:
        if "error" in (response.meta or {}):
            summary.skipped_failed += 1
            continue
        if not response.steps:
            summary.skipped_empty += 1
            continue
        sample = by_id.get(response.sample_id)
        if sample is None:
            raise KeyError(f"estimate record {response.sample_id!r} has no sample in the data file "
                           f"({len(by_id)} samples); pass the file the estimates were made from")
        rng = random.Random(f"{seed}:{response.sample_id}")
        target, step_levels = response_with_confidence(response, rng, mode=mode, bank=bank)
        image = resolve_image(sample, images_dir)
        prompt = question_prompt(sample, instruction)
        records.append(SFTRecord(sample.id, sft_messages(prompt, target), [str(image)],
                                 step_levels))
        levels.update(step_levels)
    summary.records, summary.steps = len(records), sum(levels.values())
    summary.levels = dict(sorted(levels.items()))
    return records, summary


def records_to_dataset(records: Sequence[SFTRecord]) -> Any:
    """A ``datasets.Dataset`` with columns ``id``, ``messages`` and ``images`` (PIL, loaded)."""
    from datasets import Dataset, Features, Image, List, Value

    from mmboundary.data.images import load_image

    text = Value("string")
    features = Features({
        "id": text,
        "messages": List({"role": text, "content": List({"type": text, "text": text})}),
        "images": List(Image()),
    })
    rows = [{"id": r.id, "messages": r.messages, "images": [load_image(p) for p in r.images]}
            for r in records]
    return Dataset.from_list(rows, features=features)


def save_sft_dataset(records: Sequence[SFTRecord], summary: SFTDataSummary,
                     out_dir: str | Path) -> Path:
    """Write ``hf/`` (save_to_disk), ``records.jsonl`` and ``summary.json`` under ``out_dir``."""
    from mmboundary.data.io import write_json_atomic, write_jsonl_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if not records:
        raise ValueError("no SFT records to save: every response failed or had no steps")
    records_to_dataset(records).save_to_disk(str(out / "hf"))
    write_jsonl_atomic(out / "records.jsonl", [r.to_json() for r in records])
    write_json_atomic(out / "summary.json", asdict(summary))
    return out


def load_sft_dataset(path: str | Path) -> Any:
    """The HF dataset written by ``save_sft_dataset`` (``path`` = the out dir or its ``hf/``)."""
    from datasets import load_from_disk

    path = Path(path)
    hf = path / "hf" if (path / "hf").is_dir() else path
    if not (hf / "dataset_info.json").is_file():
        raise FileNotFoundError(f"no SFT dataset at {path}: expected the output folder of "
                                "`mmboundary build-sft` (with hf/ inside)")
    return load_from_disk(str(hf))


def to_prompt_completion(example: dict[str, Any]) -> dict[str, Any]:
    """Messages -> TRL prompt/completion (the last assistant turn is the completion), so that
    ``completion_only_loss`` puts the loss on the assistant turn only."""
    messages = example["messages"]
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError(f"SFT record {example.get('id')!r}: the last message must be the "
                         f"assistant's, got {[m['role'] for m in messages]}")
    return {"prompt": messages[:-1], "completion": messages[-1:]}


def random_levels(responses: Sequence[Response], seed: int = 0) -> list[Response]:
    """Copies of ``responses`` whose every step's level is drawn uniformly from 1-5 (ours, the
    content-only copies of the warm-up: ``SFTConfig.content_only_dataset``). Each response's
    draws come from ``random.Random(f"{seed}:random-levels:{sample_id}")``: the same for a
    response wherever it sits in the file."""
    out = []
    for response in responses:
        rng = random.Random(f"{seed}:random-levels:{response.sample_id}")
        copy = response.model_copy(deep=True)
        for step in copy.steps:
            step.level = rng.randint(1, 5)
        out.append(copy)
    return out


def build_sft(estimates: str | Path, data: str | Path, out_dir: str | Path, *,
              images_dir: str | Path | None = None, mode: Mode = "statement", seed: int = 0,
              bank: StatementBank | None = None, instruction: str | None = None,
              levels: Literal["given", "random"] = "given"
              ) -> tuple[Path, SFTDataSummary, list[SFTRecord]]:
    """Read estimate output + samples, build and save the SFT set (see the module docstring).

    ``images_dir`` defaults to the data file's folder (relative ``image`` paths resolve there).
    ``levels="random"``: each step states a uniformly random level instead of its own
    (``random_levels``), for the set trained on its content only.
    """
    from mmboundary.data.io import read_responses
    from mmboundary.data.loaders import load_annotated

    data = Path(data)
    images_dir = images_dir if images_dir is not None else data.parent
    loaded = load_annotated(data, images_dir=images_dir)
    if not loaded.samples:
        raise ValueError(f"{data}: no samples loaded ({len(loaded.problems)} problems, first: "
                         f"{loaded.problems[:1]})")
    responses = read_responses(estimates)
    if levels == "random":
        responses = random_levels(responses, seed)
    elif levels != "given":
        raise ValueError(f"build_sft: levels must be 'given' or 'random', got {levels!r}")
    records, summary = build_sft_records(responses, loaded.samples,
                                         images_dir=images_dir, mode=mode, seed=seed, bank=bank,
                                         instruction=instruction)
    return save_sft_dataset(records, summary, out_dir), summary, records
