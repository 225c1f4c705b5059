"""Rewrite a ShapesWorld split (``mmboundary world make``) in the authors' A-OKVQA annotated format.

The walk-through (``examples/walkthrough.sh``) rehearses the README's GPU commands on real-format
data: A-OKVQA-like records (``question_id``, ``image_id``, ``choices``, ``correct_choice_idx``,
``direct_answers``, ``rationales``, ``keys`` and ``keys_filtered`` as
``{"Image_level": [...], "Reasoning_level": [...]}``), read back by
``mmboundary.data.loaders.load_annotated`` exactly as the authors' ``aokvqa_val_mmb.json`` is.
Images keep their ``world make`` names (``images/<id>.png``): give ``--images DIR/images`` and
the loader resolves ``image_id`` as ``{id}.png``.

Multiple-choice samples keep their choices; open samples get the answer plus up to three
distractors of the same question kind (A-OKVQA records always carry four choices), drawn with a
generator seeded by the sample id. ``direct_answers`` are the sample's gold answers repeated to
ten (A-OKVQA has ten annotator answers).

    python examples/shapes_to_aokvqa.py world/train.json world/aokvqa_train_mmb.json
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path
from typing import Any

from mmboundary.data.schema import Sample
from mmboundary.shapesworld.scenes import COLORS, read_split

POOLS: dict[str, list[str]] = {
    "count": [str(k) for k in range(6)],
    "color": list(COLORS),
    "exist": ["yes", "no"],
}


def _pool(sample: Sample) -> list[str]:
    kind = sample.meta.get("kind")
    if kind == "position":
        return ["left", "right"] if "left" in sample.question else ["above", "below"]
    if kind not in POOLS:
        raise ValueError(f"sample {sample.id}: field meta.kind = {kind!r}; expected one of "
                         f"{['position', *POOLS]}")
    return POOLS[kind]


def choices_of(sample: Sample) -> tuple[list[str], int]:
    """The sample's choices and the index of the correct one (see the module docstring)."""
    if sample.choices is not None and sample.correct_choice_idx is not None:
        return list(sample.choices), sample.correct_choice_idx
    if not sample.answers:
        raise ValueError(f"sample {sample.id}: field answers is empty; expected the gold answer")
    answer = sample.answers[0]
    rng = random.Random(f"aokvqa/{sample.id}")
    others = [c for c in _pool(sample) if c != answer]
    picked = [*rng.sample(others, min(3, len(others))), answer]
    rng.shuffle(picked)
    return picked, picked.index(answer)


def to_aokvqa_record(sample: Sample) -> dict[str, Any]:
    """One A-OKVQA-format record (the fields of the authors' ``aokvqa_val_mmb.json``)."""
    if sample.reference is None:
        raise ValueError(f"sample {sample.id}: field reference is missing; expected a chain")
    choices, idx = choices_of(sample)
    gold = sample.answers or [choices[idx]]
    chain = sample.reference.to_annotated()
    return {
        "split": sample.meta.get("split", "train"), "image_id": sample.image_id or sample.id,
        "question_id": sample.id, "question": sample.question, "choices": choices,
        "correct_choice_idx": idx, "direct_answers": [gold[i % len(gold)] for i in range(10)],
        "difficult_direct_answer": False,
        "rationales": [" ".join(sample.reference.image_level + sample.reference.reasoning_level)],
        "keys": chain, "keys_filtered": chain,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split", type=Path, help="A `mmboundary world make` split JSON.")
    parser.add_argument("out", type=Path, help="A-OKVQA-format JSON list to write.")
    args = parser.parse_args(argv)
    records = [to_aokvqa_record(s) for s in read_split(args.split)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(records, indent=1))
    print(f"wrote {len(records)} A-OKVQA-format records to {args.out}")


if __name__ == "__main__":
    main()
