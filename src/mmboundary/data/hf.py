"""Samples <-> Hugging Face ``datasets.Dataset`` (for TRL trainers and ``push_to_hub``).

One row per sample. Columns: ``id, dataset, question, choices, correct_choice_idx, answers,
direct_answers, image_id, image_path, has_reference, reference_image_level,
reference_reasoning_level, meta`` (``meta`` as a JSON string, since its keys vary by dataset), plus
an ``image`` column of the ``datasets.Image`` feature when any sample has an image file.
``datasets`` is imported inside the functions (it is slow to import).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmboundary.data.schema import ReferenceChain, Sample

if TYPE_CHECKING:
    from datasets import Dataset


def _features(with_image: bool) -> Any:
    from datasets import Features, Image, List, Value

    strings = List(Value("string"))
    columns = {
        "id": Value("string"), "dataset": Value("string"), "question": Value("string"),
        "choices": strings, "correct_choice_idx": Value("int64"), "answers": strings,
        "direct_answers": strings, "image_id": Value("string"), "image_path": Value("string"),
        "has_reference": Value("bool"), "reference_image_level": strings,
        "reference_reasoning_level": strings, "meta": Value("string"),
    }
    if with_image:
        columns["image"] = Image()
    return Features(columns)


def _row(sample: Sample) -> dict[str, Any]:
    ref = sample.reference
    return {
        "id": sample.id, "dataset": sample.dataset, "question": sample.question,
        "choices": sample.choices, "correct_choice_idx": sample.correct_choice_idx,
        "answers": sample.answers, "direct_answers": sample.direct_answers,
        "image_id": sample.image_id, "image_path": sample.image,
        "has_reference": ref is not None,
        "reference_image_level": ref.image_level if ref is not None else [],
        "reference_reasoning_level": ref.reasoning_level if ref is not None else [],
        "meta": json.dumps(sample.meta, ensure_ascii=False),
    }


def to_hf_dataset(samples: Iterable[Sample]) -> Dataset:
    """A ``datasets.Dataset`` with one row per sample; an ``Image`` column (decoded lazily to PIL)
    when any sample has ``image`` set. Image files must exist (checked here, not substituted)."""
    from datasets import Dataset

    samples = list(samples)
    for sample in samples:
        if sample.image is not None and not Path(sample.image).is_file():
            raise FileNotFoundError(f"record {sample.id!r}: image file {sample.image} not found")
    with_image = any(s.image is not None for s in samples)
    rows = [_row(s) for s in samples]
    columns: dict[str, list[Any]] = {name: [r[name] for r in rows] for name in _features(False)}
    if with_image:
        columns["image"] = [s.image for s in samples]
    return Dataset.from_dict(columns, features=_features(with_image))


def _image_back(row: dict[str, Any], images_dir: str | os.PathLike[str] | None) -> str | None:
    """The image path of a row: its ``image_path`` if the file exists, else the Image column's
    own path or bytes (written to ``images_dir/{id}.png``)."""
    path = row.get("image_path")
    if path is not None and Path(path).is_file():
        return path
    image = row.get("image")
    if not image:
        return path
    if image.get("path") and Path(image["path"]).is_file():
        return image["path"]
    if image.get("bytes") is None:
        return path
    if images_dir is None:
        raise ValueError(f"record {row['id']!r}: the dataset holds the image as bytes; pass "
                         f"images_dir= to write it to a file")
    out = Path(images_dir) / f"{row['id']}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(image["bytes"])
    return str(out)


def from_hf_dataset(dataset: Dataset, images_dir: str | os.PathLike[str] | None = None
                    ) -> list[Sample]:
    """Back from ``to_hf_dataset``'s columns to ``Sample`` objects (images as file paths)."""
    from datasets import Image

    if "image" in dataset.column_names:
        dataset = dataset.cast_column("image", Image(decode=False))
    samples = []
    for row in dataset:
        reference = None
        if row.get("has_reference"):
            reference = ReferenceChain(image_level=row["reference_image_level"] or [],
                                       reasoning_level=row["reference_reasoning_level"] or [])
        samples.append(Sample(
            id=row["id"], dataset=row["dataset"], question=row["question"],
            choices=row["choices"], correct_choice_idx=row["correct_choice_idx"],
            answers=row["answers"] or [], direct_answers=row["direct_answers"] or [],
            image_id=row["image_id"], image=_image_back(row, images_dir), reference=reference,
            meta=json.loads(row["meta"]) if row.get("meta") else {},
        ))
    return samples
